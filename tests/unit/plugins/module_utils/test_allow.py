# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Non-root replication, the pure parts: which `zfs allow` permissions each zfs command we run needs, the advice a
refusal gets, and how a host with sudo wraps its zfs commands (and nothing else). The real refusals and grants on
OpenZFS are tests/openzfs/test_non_root.py."""
from __future__ import annotations

import os
import subprocess

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.zfs.replication.plugins.filter.zfs_delegation import zfs_delegation
from ansible_collections.zfs.replication.plugins.module_utils._allow import DELEGATION, delegated, hint, needed
from ansible_collections.zfs.replication.plugins.module_utils._executor import Stage, StageResult, _explain, run_pipeline, shell_pipeline
from ansible_collections.zfs.replication.plugins.module_utils._replication_task import ReplicationTask, TaskError
from ansible_collections.zfs.replication.plugins.module_utils._transport import LocalHost, SSHConnection, SSHHost
from ansible_collections.zfs.replication.plugins.module_utils._zfs import ZfsError, probe


@pytest.mark.parametrize("argv, perms, dataset", [
    (["zfs", "send", "-L", "-e", "-c", "-I", "tank/a@s1", "tank/a@s2"], ["send"], "tank/a"),
    (["zfs", "send", "-t", "1-abc"], ["send"], None),
    (["zfs", "send", "-L", "tank/a@s1"], ["send"], "tank/a"),  # send -L is a flag, not an option with a value
    (["zfs", "recv", "-u", "-d", "backup"], ["receive", "create", "mount"], "backup"),
    (["zfs", "recv", "-u", "-s", "-o", "canmount=noauto", "-o", "readonly=on", "-x", "mountpoint", "backup/a"],
     ["receive", "create", "mount", "canmount", "readonly"], "backup/a"),
    (["zfs", "recv", "-u", "-o", "com.example:tag=x", "backup/a"], ["receive", "create", "mount", "userprop"], "backup/a"),
    (["zfs", "recv", "-A", "backup/a"], ["receive"], "backup/a"),
    (["zfs", "snapshot", "-r", "tank/a@auto-1"], ["snapshot", "mount"], "tank/a"),
    (["zfs", "destroy", "backup/a@s1,s2,s3"], ["destroy", "mount"], "backup/a"),
    (["zfs", "rollback", "backup/a@s2"], ["rollback", "mount"], "backup/a"),
    (["zfs", "hold", "zfs.replication:t", "tank/a@s1", "tank/b@s1"], ["hold"], "tank/b"),
    (["zfs", "release", "zfs.replication:t", "tank/a@s1"], ["release"], "tank/a"),
    (["zfs", "set", "readonly=on", "backup/a", "backup/b"], ["readonly"], "backup/b"),
    (["zfs", "load-key", "-L", "prompt", "backup/a"], ["load-key"], "backup/a"),
    (["sudo", "-n", "zfs", "create", "backup/a"], ["create", "mount"], "backup/a"),
    (["zfs", "list", "-H", "-p", "-r", "tank"], [], None),
    (["zfs", "get", "-H", "guid", "tank/a@s1"], [], None),
    (["sh", "-c", "zfs destroy tank"], [], None),
])
def test_the_permissions_each_command_needs(argv, perms, dataset):
    assert needed(argv) == (perms, dataset if perms else None)


def test_a_refused_receive_names_the_zfs_allow_line_that_grants_it():
    advice = hint(["zfs", "recv", "-u", "-o", "canmount=noauto", "backup/a"],
                  "cannot receive new filesystem stream: permission denied\n", "zrrecv", "zrrecv@10.0.0.2:22", sudo=False)
    assert advice == ("zrrecv on zrrecv@10.0.0.2:22 lacks a zfs permission this needs: grant it with "
                      "'zfs allow -u zrrecv receive,create,mount,canmount backup/a' (or on a parent, which covers its "
                      "descendants), or run zfs through sudo (sudo/local_sudo)")


def test_sudo_without_a_rule_names_the_sudoers_line():
    advice = hint(["zfs", "send", "tank/a@s1"], "sudo: a password is required\n", "zrsend", "db1:22", sudo=True)
    assert "'zrsend ALL=(root) NOPASSWD: /usr/sbin/zfs'" in advice and "db1:22" in advice


@pytest.mark.parametrize("stderr", ["cannot open 'backup/a': dataset does not exist\n", "", "Connection reset\n"])
def test_other_failures_get_no_advice(stderr):
    assert hint(["zfs", "recv", "-u", "backup/a"], stderr, "u", "h", sudo=True) == ""


def test_a_host_with_sudo_runs_zfs_through_sudo_n_and_nothing_else():
    remote = SSHHost(SSHConnection(host="127.0.0.1", user="zrrecv"), control_dir="/tmp/zr-test-ctl", sudo=True)
    assert remote.command(["zfs", "recv", "-u", "backup/my data"])[-1] == "sudo -n zfs recv -u 'backup/my data'"
    assert remote.command(["pv", "-n"])[-1] == "pv -n"
    assert LocalHost(sudo=True).command(["zfs", "list", "-H"]) == ["sudo", "-n", "zfs", "list", "-H"]
    assert LocalHost().command(["zfs", "list", "-H"]) == ["zfs", "list", "-H"]
    script = shell_pipeline([Stage(remote, ["zstd", "-d"], "zstd"), Stage(remote, ["zfs", "recv", "-u", "backup/a"], "zfs recv")])
    assert "{ zstd -d;" in script and "{ sudo -n zfs recv -u backup/a;" in script


def test_the_pipeline_error_carries_the_advice():
    stage = StageResult("zfs recv", "zrrecv@127.0.0.1:22", ["zfs", "recv", "-u", "backup/a"], 1,
                        "cannot receive: permission denied", advice="grant it with 'zfs allow -u zrrecv receive backup/a'")
    assert _explain(stage) == ("zfs recv on zrrecv@127.0.0.1:22 failed (exit 1): cannot receive: permission denied; "
                               "grant it with 'zfs allow -u zrrecv receive backup/a' [argv: zfs recv -u backup/a]")


def test_sudo_with_transport_local_is_a_clear_error():
    with pytest.raises(TaskError, match="sudo is for the remote host's zfs commands.*use local_sudo"):
        ReplicationTask.from_params({"name": "t", "source_datasets": ["tank/a"], "target_dataset": "backup/a",
                                     "naming_schema": ["auto-%Y-%m-%d_%H-%M"], "transport": "local", "sudo": True})
    task = ReplicationTask.from_params({"name": "t", "source_datasets": ["tank/a"], "target_dataset": "backup/a",
                                        "naming_schema": ["auto-%Y-%m-%d_%H-%M"], "transport": "local", "local_sudo": True})
    assert task.local_sudo is True and task.sudo is False


def test_received_properties_it_may_not_set_are_named_too():
    stderr = ("cannot receive compression property on backup/a: permission denied\n"
              "cannot receive com.example:tag property on backup/a: permission denied\n")
    advice = hint(["zfs", "recv", "-u", "backup/a"], stderr, "zrrecv", "h:22", sudo=False)
    assert "'zfs allow -u zrrecv receive,create,mount,compression,userprop backup/a'" in advice


# Recorded on OpenZFS 2.3.2: `zfs allow zrb/rec` after `zfs allow -u zrrecv receive,create,mount zrb/rec` and
# `zfs allow -u zrsend -l send zrb/rec`.
ALLOW_OUTPUT = ("---- Permissions on zrb/rec ------------------------------------------\n"
                "Local permissions:\n"
                "\tuser zrsend send\n"
                "Local+Descendent permissions:\n"
                "\tuser zrrecv create,mount,receive\n")
# Recorded on OpenZFS 2.3.2 as zrrecv: a receive without permissions (exit 1), a receive allowed but not the
# stream's compression property (exit 0), a snapshot and a destroy without permissions, sudo without a rule.
RECV_REFUSED = "cannot receive new filesystem stream: permission denied\n"
PROPERTY_REFUSED = "cannot receive compression property on zrb/rec/data2: permission denied\n"
SNAPSHOT_REFUSED = "cannot create snapshots : permission denied\n"
DESTROY_REFUSED = "cannot destroy snapshots: permission denied\n"
SUDO_REFUSED = "sudo: a password is required\n"


@pytest.mark.parametrize("argv, stderr, line", [
    (["zfs", "recv", "-u", "-s", "zrb/rec/data"], RECV_REFUSED, "'zfs allow -u zrrecv receive,create,mount zrb/rec/data'"),
    (["zfs", "recv", "-u", "zrb/rec/data2"], PROPERTY_REFUSED, "'zfs allow -u zrrecv receive,create,mount,compression zrb/rec/data2'"),
    (["zfs", "snapshot", "zrb/rec/data2@x"], SNAPSHOT_REFUSED, "'zfs allow -u zrrecv snapshot,mount zrb/rec/data2'"),
    (["zfs", "destroy", "zrb/rec/data2@b"], DESTROY_REFUSED, "'zfs allow -u zrrecv destroy,mount zrb/rec/data2'"),
])
def test_recorded_refusals_get_their_zfs_allow_line(argv, stderr, line):
    assert line in hint(argv, stderr, "zrrecv", "zrrecv@127.0.0.1:22", sudo=False)
    assert "NOPASSWD" in hint(argv, SUDO_REFUSED, "zrrecv", "zrrecv@127.0.0.1:22", sudo=True)


class RefusingHost(LocalHost):
    """A host whose every command ends like the recorded zfs (exit 1, or exit 0 for the property refusal)."""

    def __init__(self, stderr: str, rc: int = 1, sudo: bool = False):
        super().__init__(sudo=sudo)
        self.stderr, self.rc = stderr, rc

    def run(self, argv, check=True, input_text=None):
        return subprocess.CompletedProcess(self.command(argv), self.rc, "", self.stderr)


def test_the_probe_names_the_sudoers_rule_and_a_missing_sudo():
    with pytest.raises(ZfsError, match=r"cannot probe zfs: sudo: a password is required; sudo on local would not run "
                                       r"zfs for .* NOPASSWD: /usr/sbin/zfs"):
        probe(RefusingHost(SUDO_REFUSED, sudo=True))
    with pytest.raises(ZfsError, match="sudo is not installed"):
        probe(RefusingHost("sh: 1: sudo: not found\n", rc=127, sudo=True))


def test_a_receive_that_succeeds_without_a_property_says_so(tmp_path, monkeypatch):
    """zfs recv exits 0 when it may not set a property: the pipeline succeeds and its stage carries the advice."""
    fake_zfs = tmp_path / "zfs"
    fake_zfs.write_text(f"#!/bin/sh\ncat >/dev/null\nprintf '%s' '{PROPERTY_REFUSED.strip()}' >&2\nexit 0\n")
    fake_zfs.chmod(0o755)
    host = LocalHost()
    stages = [Stage(host, ["printf", "data"], "printf"), Stage(host, ["zfs", "recv", "-u", "zrb/rec/data2"], "zfs recv")]
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    result = run_pipeline(stages)
    recv = result.stages[1]
    assert recv.rc == 0 and "'zfs allow -u" in recv.advice and "receive,create,mount,compression zrb/rec/data2'" in recv.advice


def test_what_is_delegated_counts_for_descendants_only_when_it_is():
    assert delegated(ALLOW_OUTPUT, "zrrecv") == {"create", "mount", "receive"}
    assert delegated(ALLOW_OUTPUT, "zrsend") == set()  # local only: not for the datasets a receive creates
    assert delegated("", "zrrecv") == set()


def test_the_role_filter_lists_only_what_is_missing():
    assert zfs_delegation(ALLOW_OUTPUT, {"user": "zrrecv", "side": "target"}) == [
        "hold", "release", "destroy", "rollback", "canmount", "setuid", "devices", "mountpoint", "readonly", "userprop"]
    assert zfs_delegation(ALLOW_OUTPUT, {"user": "zrrecv", "side": "target", "encryption": True,
                                         "properties": ["compression", "com.example:x"]})[-5:] == [
        "encryption", "keyformat", "keylocation", "load-key", "compression"]  # com.example:x is userprop, listed
    assert zfs_delegation(ALLOW_OUTPUT, {"user": "zrsend", "side": "source"}) == list(DELEGATION["source"])
    with pytest.raises(AnsibleFilterError, match="side 'sink': use source .* or target"):
        zfs_delegation(ALLOW_OUTPUT, {"user": "zrsend", "side": "sink"})
    with pytest.raises(AnsibleFilterError, match="needs user"):
        zfs_delegation(ALLOW_OUTPUT, {"side": "target"})
