# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The append-only receiver's decision (pure: what it would run for a command, or why it refuses). The real
receiver behind a real sshd is exercised in tests/scenarios/test_append_only.py on both backends."""
from __future__ import annotations

import shlex

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.zfs.replication.plugins.module_utils._receiver import DECOMPRESSORS, PIPELINE, Receiver, Refused
from ansible_collections.zfs.replication.plugins.module_utils._replication_task import COMPRESSORS, ReplicationTask, TaskError
from ansible_collections.zfs.replication.plugins.module_utils._transport import AppendOnlyHost, SSHConnection

ROOT = "backup/host1"
TAG = "zfs.replication:push1"
R = Receiver([ROOT], [TAG])

ALLOWED = [
    "zfs version",
    f"zfs list -H -p -r -t filesystem,volume,snapshot -o name,guid,createtxg,userrefs -s createtxg {ROOT}",
    f"zfs list -H -p -r -t filesystem,volume,snapshot -o name,guid {ROOT}/data",
    "zfs get -H -p -o value type backup",  # the root's parent: read only
    f"zfs get -H -p -o name,value guid {ROOT}/data@a {ROOT}/data@b",
    f"zfs get -H -p -o value receive_resume_token {ROOT}/data",
    f"zfs holds -H {ROOT}/data@a",
    f"zfs hold {TAG} {ROOT}/data@a {ROOT}/data/child@a",
    f"zfs release {TAG} {ROOT}/data@a",
    f"zfs hold -r {TAG} {ROOT}/data@a",  # a subtree's snapshots of one name in one call (_holds.recursive_roots)
    f"zfs release -r {TAG} {ROOT}/data@a",
    f"zfs recv -A {ROOT}/data",
    f"zfs create {ROOT}/data",
    f"zfs set readonly=on {ROOT}/data",
    f"zfs set canmount=noauto {ROOT}/data/c1 {ROOT}/data/c2",
    f"sudo -n zfs list -H -o name {ROOT}",
    "zfs-replication-which pv zstd mbuffer",
]

REFUSED = [
    "",
    "sh -c 'zfs destroy -r backup'",
    f"zfs destroy -r {ROOT}",
    f"zfs destroy {ROOT}/data@a",
    f"zfs rollback -r {ROOT}/data@a",
    f"zfs recv -u -s -x mountpoint -o canmount=noauto {ROOT}/data",  # a receive only as a pipeline (-x mountpoint added)
    f"zfs recv -u '{ROOT}/with space'",
    "zfs list -H -o name -r backup",  # the root's parent recursively: the rest of the pool
    "zfs get -H -d 1 -o name,value type backup",
    f"zfs recv -u -F {ROOT}/data",
    f"zfs recv -F -u {ROOT}/data",
    f"zfs recv {ROOT}/data",  # no -u: would mount
    f"zfs recv -u -o mountpoint=/ {ROOT}/data",
    f"zfs recv -u -o canmount=on {ROOT}/data",
    f"zfs recv -u -o sharenfs=on {ROOT}/data",
    "zfs recv -u backup/other",
    f"zfs recv -u {ROOT}/../other",
    f"zfs recv -u {ROOT}/./x",
    f"zfs recv -u {ROOT}x",  # a sibling whose name starts like the root
    "zfs recv -u other/backup/host1",
    f"zfs set mountpoint=/ {ROOT}",
    f"zfs set readonly=off {ROOT}",
    f"zfs set sharenfs=on {ROOT}",
    f"zfs rename {ROOT}/data {ROOT}/old",
    f"zfs mount {ROOT}/data",
    f"zfs unmount {ROOT}/data",
    f"zfs inherit mountpoint {ROOT}",
    f"zfs promote {ROOT}/data",
    f"zfs snapshot {ROOT}/data@x",
    f"zfs send {ROOT}/data@a",
    f"zfs allow everyone destroy {ROOT}",
    f"zfs release zfs.replication:other {ROOT}/data@a",  # another task's tag
    "zfs hold zfs.replication:push1 backup/other@a",
    "zfs hold -r zfs.replication:push1 backup@a",  # recursive from above the root: reaches outside it
    "zfs list",  # every pool
    "zfs list -H -o name backup/other",
    f"zfs list -H -o name {ROOT}; zfs destroy -r {ROOT}",
    f"zfs list -H -o name {ROOT} && zfs destroy -r {ROOT}",
    f"zfs list -H -o name $(zfs destroy -r {ROOT})",
    "zfs list -H -o name `reboot`",
    f"zfs list -H -o name {ROOT}\nzfs destroy -r {ROOT}",
    f"zfs list -H -o 'name;reboot' {ROOT}",
    f"zfs list -H -o name '{ROOT}",  # unbalanced quote
    f"zfs get -H all {ROOT}@a#b",
    "cat /etc/shadow",
    "zfs-replication-which sh",
    "/usr/sbin/zfs destroy backup",
    f"zfs create -o mountpoint=/etc {ROOT}/x",
    f"zfs create -p {ROOT}/x",
    "zfs create backup/other",
    "scp -t /root/.ssh/authorized_keys",
]


@pytest.mark.parametrize("command", ALLOWED)
def test_what_a_push_needs_is_allowed(command):
    kind, argvs = R.parse(command)
    assert argvs and argvs[0] == shlex.split(command)[1:] if kind == "which" else argvs == [shlex.split(command)]


@pytest.mark.parametrize("command", REFUSED)
def test_everything_else_is_refused(command):
    with pytest.raises(Refused):
        R.parse(command)


@pytest.mark.parametrize("recv", [
    ["zfs", "recv", "-u", "-s", "-x", "mountpoint", "-o", "canmount=noauto", "-o", "setuid=off", "-o", "devices=off",
     "-o", "compression=zstd", f"{ROOT}/data"],
    ["sudo", "-n", "zfs", "receive", "-u", f"{ROOT}/with space"],
])
def test_a_receive_is_allowed_as_a_pipeline(recv):
    import json

    assert R.parse(shlex.join([PIPELINE, json.dumps([recv])])) == ("pipeline", [recv])


def test_pipeline_from_the_engine_round_trips():
    host = AppendOnlyHost(SSHConnection(host="127.0.0.1"), control_dir="/tmp/zr-test-ctl")
    stages = [["mbuffer", "-q", "-s", "128k", "-m", "64M"], ["zstd", "-q", "-d", "-c"], ["pv", "-n", "-b", "-f", "-i", "5", "-L", "1000"],
              ["zfs", "recv", "-u", "-s", "-o", "canmount=noauto", f"{ROOT}/with space"]]
    argv = host.pipeline_command(stages)
    assert argv is not None and argv[-2] == "--"
    assert R.parse(argv[-1]) == ("pipeline", stages)


@pytest.mark.parametrize("stages", [
    [["sh", "-c", "zfs destroy -r backup"], ["zfs", "recv", "-u", f"{ROOT}/d"]],
    [["zstd", "-d", "-c", "-o", "/etc/passwd"], ["zfs", "recv", "-u", f"{ROOT}/d"]],
    [["pv", "-n", "-o", "/etc/passwd"], ["zfs", "recv", "-u", f"{ROOT}/d"]],
    [["zfs", "recv", "-u", f"{ROOT}/d"], ["zfs", "destroy", f"{ROOT}/d"]],
    [["zfs", "recv", "-u", "-F", f"{ROOT}/d"]],
    [["zfs", "recv", "-u", "-o", "origin=tank/data@a", f"{ROOT}/d"]],
    [["zfs", "recv", "-u", "-o", "keylocation=file:///etc/shadow", f"{ROOT}/d"]],
    [["zfs", "recv", "-A", f"{ROOT}/d"]],
    [["zfs", "list", ROOT]],
    "not a list",
    [],
])
def test_a_pipeline_is_filters_then_one_receive(stages):
    import json

    with pytest.raises(Refused):
        R.parse(shlex.join([PIPELINE, json.dumps(stages)]))


def test_decompressors_are_the_engines():
    assert sorted(DECOMPRESSORS) == sorted(d for _c, d in COMPRESSORS.values())


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([
    "zfs", " ", " ", " ", "recv", "receive", "-u", "-s", "-F", "-A", "-o", "-x", "mountpoint", "=", "/", "none", "canmount", "on",
    ROOT, "backup", "..", ".", "@a", "#b", "'", '"', "\\", ";", "|", "&", "$(", ")", "`", "\n", "\t", "destroy", "rollback",
    "hold", "release", TAG, "zfs.replication:x", "set", "create", "list", "get", "-r", "-H", "sudo", "-n", "sh", "-c",
]), max_size=14).map("".join))
def test_whatever_is_accepted_stays_inside_the_root(command):
    try:
        kind, argvs = R.parse(command)
    except Refused:
        return
    assert kind in ("zfs", "which", "pipeline")
    for argv in argvs:
        words = argv[2:] if argv[:2] == ["sudo", "-n"] else argv
        if words[:1] != ["zfs"]:
            continue
        assert words[1] in ("version", "list", "get", "holds", "recv", "receive", "hold", "release", "create", "set")
        assert "-F" not in words
        if words[1] in ("recv", "receive"):
            assert kind == "pipeline" or words[2:3] == ["-A"]
        if words[1] in ("recv", "receive", "hold", "release", "create", "set"):
            target = words[-1].split("@")[0]
            assert target == ROOT or target.startswith(ROOT + "/")


def params(**kw):
    base = {"name": "push1", "source_datasets": ["tank/data"], "target_dataset": f"{ROOT}/data", "transport": "ssh",
            "ssh": {"host": "127.0.0.1"}, "naming_schema": ["auto-%Y-%m-%d_%H-%M"], "target_access": "append_only"}
    return {**base, **kw}


@pytest.mark.parametrize("extra, field", [
    ({"direction": "pull"}, "pull task"),
    ({"transport": "ssh+netcat"}, "transport ssh"),
    ({"allow_rollback": True}, "allow_rollback"),
    ({"allow_from_scratch": True}, "allow_from_scratch"),
    ({"mount": True}, "mount"),
    ({"encryption": True, "encryption_key_generate": True}, "encryption"),
    ({"retention_policy": "source"}, "retention_policy source"),
    ({"target_access": "readonly"}, "target_access 'readonly'"),
])
def test_append_only_refuses_what_it_cannot_do(extra, field):
    with pytest.raises(TaskError, match=field):
        ReplicationTask.from_params(params(**extra))


def test_append_only_leaves_retention_to_the_target():
    from datetime import datetime, timezone

    task = ReplicationTask.from_params(params(retention_policy="custom", lifetime_value=2, lifetime_unit="week"))
    now = datetime(2026, 12, 4, tzinfo=timezone.utc)
    assert task.plan_task(now).retention.policy == "none"
    assert task.retention(now, on_target=True).policy == "custom"
