# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The ssh+netcat scripts: what each side runs, and that the token check holds with the real sh and dd."""
from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

import pytest

from ansible_collections.zfs.replication.plugins.module_utils import _netcat as netcat
from ansible_collections.zfs.replication.plugins.module_utils._executor import Stage
from ansible_collections.zfs.replication.plugins.module_utils._transport import LocalHost, SSHConnection, SSHHost

HOST = LocalHost()


def stream(tmp_path, listen_host=HOST):
    recv = [Stage(listen_host, ["zstd", "-d"], "zstd -d"), Stage(listen_host, ["zfs", "recv", "-u", "p/t"], "zfs recv")]
    send = [Stage(HOST, ["zfs", "send", "p/s@a"], "zfs send"), Stage(HOST, ["zstd", "-c"], "zstd")]
    return netcat.build(listen_host, HOST, "10.0.0.2", "10.0.0.2", 47111, send, recv)


def test_listener_binds_the_address_and_checks_before_recv(tmp_path):
    s = stream(tmp_path)
    script = s.listener.argv[2]
    assert "nc -l 10.0.0.2 47111 </dev/null" in script
    assert f"dd bs=1 count={netcat.TOKEN_LEN}" in script
    # the receive stages come after the check, inside its group
    assert script.index("dd bs=1") < script.index("zstd -d") < script.index("zfs recv -u p/t")
    assert [p.name for p in s.listener.parts] == ["nc -l", "netcat token check", "zstd -d", "zfs recv"]
    assert "kill -TERM 0" in script and "IFS= read -r zr_token" in script


def test_sender_writes_the_token_with_the_builtin_before_its_last_stage():
    s = stream(None)
    script = s.sender.argv[2]
    assert "printf '%s' \"$zr_token\" && zstd -c" in script
    assert script.rstrip().endswith("exit $zr_rc")
    assert "nc -N 10.0.0.2 47111" in script
    assert [p.name for p in s.sender.parts] == ["zfs send", "zstd", "nc"]


def test_remote_listener_is_one_ssh_command():
    remote = SSHHost(SSHConnection(host="backup.example.com"), control_dir="/tmp/zr-none")
    s = stream(None, remote)
    assert s.listener.local_argv[0] == "ssh" and s.listener.local_argv[-1] == s.listener.argv[2]


@pytest.mark.parametrize("direction,listen,connect,expect", [
    ("push", None, None, ("nas", "nas")),
    ("push", None, "10.0.0.9", ("10.0.0.9", "10.0.0.9")),
    ("push", "10.0.0.1", "203.0.113.5", ("10.0.0.1", "203.0.113.5")),
    ("pull", "10.0.0.3", None, ("10.0.0.3", "10.0.0.3")),
])
def test_addresses_never_default_to_a_wildcard(direction, listen, connect, expect):
    assert netcat.addresses(direction, "nas", listen, connect) == expect


def test_pull_needs_a_listen_address():
    with pytest.raises(ValueError, match="netcat.listen_address is required"):
        netcat.addresses("pull", "nas", None, None)


def test_pick_port_names_the_fix():
    assert netcat.pick_port({5000, 5001}, 5000, 5002, "h") == 5002
    with pytest.raises(ValueError, match="no free port in 5000-5001 on h: widen netcat.port_min/port_max"):
        netcat.pick_port({5000, 5001}, 5000, 5001, "h")


def check_only(tmp_path, token: str, wire: bytes) -> tuple[subprocess.CompletedProcess, bytes]:
    """Run the listener's check with `cat FILE` in place of nc: what reaches the receive stage, and the exit."""
    out = tmp_path / "received"
    recv = [Stage(HOST, ["sh", "-c", f"cat > {out}"], "zfs recv")]
    script = netcat.listener_script("127.0.0.1", 1, recv)
    wire_file = tmp_path / "wire"
    wire_file.write_bytes(wire)
    script = script.replace("nc -l 127.0.0.1 1 </dev/null", f"cat {wire_file}")
    # stdin stays open while the script runs: it is the lifeline (closing it ends the script's group)
    with subprocess.Popen(["sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          start_new_session=True) as p:
        assert p.stdin is not None and p.stderr is not None
        p.stdin.write((token + "\n").encode())
        p.stdin.flush()
        rc = p.wait(timeout=20)
        proc = subprocess.CompletedProcess(p.args, rc, b"", p.stderr.read())
    return proc, out.read_bytes() if out.exists() else b""


def group_members(pgid: int) -> list[str]:
    """The command lines of the live (not zombie) processes in process group PGID, read from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(") ", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip())
    return members


def wait_until(condition, what: str, deadline: float = 60.0):
    """Poll CONDITION until it returns something true and return that. The deadline is generous on purpose: it only
    ends a wait for something that never happens (then the test fails naming WHAT); it measures nothing."""
    end = time.monotonic() + deadline
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"{what}: still not the case after {deadline:.0f} s")
        time.sleep(0.05)


def test_closing_stdin_ends_the_whole_group(tmp_path):
    token = netcat.new_token()
    recv = [Stage(HOST, ["sleep", "300"], "zfs recv")]
    # `sleep 301` stands in for `nc -l`: a listener that waits for a connection that never comes
    script = netcat.listener_script("127.0.0.1", 1, recv).replace("nc -l 127.0.0.1 1 </dev/null", "sleep 301")
    with subprocess.Popen(["sh", "-c", script], stdin=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True) as p:
        assert p.stdin is not None
        p.stdin.write((token + "\n").encode())
        p.stdin.flush()
        # the script read its token and reached its listener: only then is closing stdin the lifeline under test
        wait_until(lambda: any(m.endswith("sleep 301") for m in group_members(p.pid)), "the stand-in listener started")
        assert p.poll() is None
        p.stdin.close()
        assert p.wait(timeout=60) == 143
        # the group's last members may take a moment to be reaped
        wait_until(lambda: not group_members(p.pid), "the listener's whole group ended")


def test_the_right_token_passes_exactly_the_rest_of_the_stream(tmp_path):
    token = netcat.new_token()
    proc, got = check_only(tmp_path, token, token.encode() + b"STREAM\x00DATA")
    assert proc.returncode == 0, proc.stderr
    assert got == b"STREAM\x00DATA"


@pytest.mark.parametrize("wire", [b"", b"short", b"\x00" * 4096, b"0" * 32 + b"data"])
def test_a_wrong_or_missing_token_never_reaches_recv(tmp_path, wire):
    proc, got = check_only(tmp_path, netcat.new_token(), wire)
    assert proc.returncode != 0
    assert b"did not start with this run's stream token" in proc.stderr
    assert not (tmp_path / "received").exists() and got == b""


def test_no_token_on_stdin_starts_nothing(tmp_path):
    proc, got = check_only(tmp_path, "", b"x")
    assert proc.returncode == 97 and b"stream token" in proc.stderr
    assert not (tmp_path / "received").exists()
