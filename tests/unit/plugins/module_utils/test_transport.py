# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import shlex

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.zfs.replication.plugins.module_utils._transport import LocalHost, SSHConnection, SSHHost, TransportError, quote_remote


def host(**kw) -> SSHHost:
    kw.setdefault("host", "127.0.0.1")
    return SSHHost(SSHConnection(**kw), control_dir="/tmp/zr-test-ctl")


def test_ssh_argv_is_strict_by_default():
    h = host(port=2222, user="root", private_key_file="/k/id", known_hosts_file="/k/kh")
    argv = h.command(["zfs", "recv", "-u", "backup/data"])
    assert argv[0] == "ssh"
    assert argv[-3:] == ["127.0.0.1", "--", "zfs recv -u backup/data"]
    opts = argv[1:-3]
    pairs = {opts[i + 1] for i in range(len(opts) - 1) if opts[i] == "-o"}
    assert {"BatchMode=yes", "StrictHostKeyChecking=yes", "UserKnownHostsFile=/k/kh", "IdentitiesOnly=yes", "ControlMaster=auto"} <= pairs
    assert "ControlPath=/tmp/zr-test-ctl/%C" in pairs
    assert opts[opts.index("-p") + 1] == "2222" and opts[opts.index("-i") + 1] == "/k/id" and opts[opts.index("-l") + 1] == "root"
    assert "-c" not in opts


def test_accept_new_and_ciphers():
    opts = host(host_key_checking="accept_new", cipher="fast").ssh_options()
    assert "StrictHostKeyChecking=accept-new" in opts
    assert opts[opts.index("-c") + 1] == "aes128-gcm@openssh.com"
    opts = host(cipher="chacha20-poly1305@openssh.com").ssh_options()
    assert opts[opts.index("-c") + 1] == "chacha20-poly1305@openssh.com"


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("host", "-oProxyCommand=x", "ssh.host"),
        ("host", "a b", "ssh.host"),
        ("host", "h;rm", "ssh.host"),
        ("port", 0, "ssh.port"),
        ("user", "-l", "ssh.user"),
        ("cipher", "aes;x", "ssh.cipher"),
        ("host_key_checking", "no", "ssh.host_key_checking"),
        ("known_hosts_file", "/x\nProxyCommand x", "ssh.known_hosts_file .* without control characters"),
        ("known_hosts_file", "\r", "ssh.known_hosts_file .* without control characters"),
        ("private_key_file", "/k\tx", "ssh.private_key_file .* without control characters"),
        ("private_key_file", "", "ssh.private_key_file"),
    ],
)
def test_bad_connection_fields_are_named(field, value, match):
    kw = {"host": "127.0.0.1", field: value}
    with pytest.raises(ValueError, match=match):
        SSHConnection(**kw).validate()


@given(st.lists(st.text(min_size=0, max_size=20), min_size=1, max_size=6))
def test_remote_quoting_round_trips_any_argv(argv):
    # The remote shell splits the quoted string back into exactly the argv we meant.
    argv = [a.replace("\x00", "") for a in argv]
    assert shlex.split(quote_remote(argv)) == argv


def test_stream_hands_lines_over_as_they_come_and_drains_the_rest():
    seen = []

    def first_two(lines):
        it = iter(lines)
        seen.extend([next(it), next(it)])
        return len(seen)

    # 200k lines: the command would block on a full pipe if the rest were not drained
    rc, result, stderr = LocalHost().stream(["sh", "-c", "seq 1 200000; echo done >&2"], first_two)
    assert (rc, result, seen, stderr) == (0, 2, ["1\n", "2\n"], "done\n")


def test_stream_reports_a_failed_command_instead_of_what_consume_made_of_its_output():
    def strict(lines):
        for line in lines:
            raise ValueError(f"unexpected {line!r}")
        return "empty"

    rc, result, stderr = LocalHost().stream(["sh", "-c", "echo partial; echo 'cannot open: dataset does not exist' >&2; exit 1"], strict)
    assert (rc, result) == (1, None) and "does not exist" in stderr
    with pytest.raises(ValueError, match="unexpected 'ok"):
        LocalHost().stream(["sh", "-c", "echo ok"], strict)
    assert LocalHost().stream(["true"], strict) == (0, "empty", "")


def test_stream_names_a_program_that_cannot_start():
    with pytest.raises(TransportError, match="cannot run /nonexistent/zfs"):
        LocalHost().stream(["/nonexistent/zfs", "list"], list)
