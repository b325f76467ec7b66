# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""zfs_replication's own paths through real ansible-playbook runs, real zfs-fuse pools and a real sshd: check mode
and its diff, bad input refused by the module with the field named, state: absent releasing the task's holds.

What the engine does with good input is tested on each ZFS backend in tests/scenarios. Every test checks the real
state on both sides (snapshots and guids with `zfs get -p`, holds), not only what the module reported.
"""
from __future__ import annotations

import contextlib
import json
import secrets
from pathlib import Path

import pytest

from ansible_collections.zfs.replication.plugins.module_utils._replication_task import ReplicationTask, suggest_name
from helpers import zfs

pytestmark = pytest.mark.integration

SCHEMA = "auto-%Y-%m-%d_%H-%M"


def write_files(mountpoint: str, seed: str, count: int = 3, size: int = 200_000) -> None:
    root = Path(mountpoint)
    (root / "dir").mkdir(exist_ok=True)
    for i in range(count):
        (root / "dir" / f"{seed}-{i}.bin").write_bytes(secrets.token_bytes(size))
    (root / f"{seed}.txt").write_text(f"hello {seed}\n")


def mountpoint(dataset: str) -> str:
    return zfs("get", "-H", "-o", "value", "mountpoint", dataset).strip()


def state(*roots: str) -> dict[str, object]:
    """Datasets and snapshots (with guids) below roots: what "nothing changed" compares."""
    out = {}
    for root in roots:
        listing = zfs("get", "-H", "-p", "-r", "-o", "name,value", "guid", root)
        out[root] = sorted(listing.splitlines())
    return out


@pytest.fixture
def pair(sandbox):
    """A fresh source dataset tree and a target path for one test."""
    tag = secrets.token_hex(3)
    src = f"{sandbox.src_pool}/data{tag}"
    zfs("create", src)
    zfs("create", f"{src}/child")
    dst_parent = f"{sandbox.dst_pool}/backup{tag}"
    zfs("create", dst_parent)
    yield src, f"{dst_parent}/data"
    # The tasks hold their bases (zfs.replication:<task name>): release them, then destroy.
    tags = [f"zfs.replication:{name}" for name in ("held", suggest_name(ReplicationTask(name="", source_datasets=[src], target_dataset=f"{dst_parent}/data")))]
    for ds in (src, dst_parent):
        for line in zfs("get", "-H", "-p", "-r", "-o", "name,value", "userrefs", ds).splitlines():
            name, refs = line.split("\t")
            if "@" in name and refs.isdigit() and int(refs) > 0:
                for tag in tags:
                    with contextlib.suppress(AssertionError):
                        zfs("release", tag, name)
        with contextlib.suppress(AssertionError):
            zfs("destroy", "-r", ds)


def ssh_args(sandbox, **overrides) -> dict:
    args = {
        "host": "127.0.0.1",
        "port": sandbox.sshd.port,
        "user": "root",
        "private_key_file": str(sandbox.sshd.private_key),
        "known_hosts_file": str(sandbox.sshd.known_hosts),
    }
    args.update(overrides)
    return args


def playbook(params: dict, name: str = "replicate") -> str:
    task = {"name": name, "zfs.replication.zfs_replication": params, "register": "out"}
    return json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": [task]}])


def replicate(ansible_playbook, params: dict, **kw):
    return ansible_playbook(playbook(params), **kw)


def test_check_mode_changes_nothing_and_returns_plan(sandbox, pair, ansible_playbook):
    src, dst = pair
    write_files(mountpoint(src), "c")
    zfs("snapshot", "-r", f"{src}@auto-2026-11-28_10-00")
    zfs("snapshot", "-r", f"{src}@auto-2026-11-28_10-05")
    params = {"source_datasets": [src], "target_dataset": dst, "naming_schema": [SCHEMA], "ssh": ssh_args(sandbox)}
    before = state(sandbox.src_pool, sandbox.dst_pool)
    res = replicate(ansible_playbook, params, check=True, diff=True).task("replicate")
    assert res["changed"] is True
    assert [(s["mode"], s["snapshot"]) for s in res["plan"][0]["sends"]] == [("full", "auto-2026-11-28_10-00"), ("I", "auto-2026-11-28_10-05")]
    assert res["snapshots_sent"] == 0
    assert f"{dst}@auto-2026-11-28_10-05" in res["diff"]["after"]
    assert state(sandbox.src_pool, sandbox.dst_pool) == before


# zvols: zfs-fuse cannot create them ("Function not implemented"); the zvol cases run in the
# OpenZFS tier (tests/openzfs) and the planner's refusal is covered by unit tests.
BAD_INPUT = [
    ("missing source", {"source_datasets": ["{src}-nope"]}, "source_datasets: {src}-nope does not exist"),
    ("target inside source", {"transport": "local", "target_dataset": "{src}/child/copy"}, "target_dataset {src}/child/copy is inside source"),
    ("schema without fields", {"naming_schema": ["auto-%Y-%m"]}, "naming_schema[0]"),
    ("character ZFS refuses", {"source_datasets": ["{src}/my+data"]}, "source_datasets[0]"),
    ("shell metacharacters", {"target_dataset": "{dst_pool}/x;touch /tmp/zr-pwned"}, "target_dataset"),
    ("command substitution", {"source_datasets": ["{src}/$(touch /tmp/zr-pwned)"]}, "source_datasets[0]"),
    ("unreachable host", {"ssh": {"port": "{closed_port}"}}, "cannot reach"),
    ("unknown host key", {"ssh": {"known_hosts_file": "{empty_kh}"}}, "ssh.known_hosts_file"),
    ("hostile host", {"ssh": {"host": "-oProxyCommand=touch /tmp/zr-pwned"}}, "ssh.host"),
]


@pytest.mark.parametrize("case,override,message", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_a_clear_error_and_changes_nothing(sandbox, pair, ansible_playbook, tmp_path, case, override, message):
    src, dst = pair
    zfs("snapshot", "-r", f"{src}@auto-2026-11-28_10-00")
    empty_kh = tmp_path / "known_hosts"
    empty_kh.write_text("")
    from sandbox import free_port

    fmt = {"src": src, "dst_pool": sandbox.dst_pool, "closed_port": free_port(), "empty_kh": empty_kh}

    def expand(value):
        if isinstance(value, str):
            return value.format(**fmt)
        if isinstance(value, list):
            return [expand(v) for v in value]
        return value

    params = {"source_datasets": [src], "target_dataset": dst, "naming_schema": [SCHEMA], "ssh": ssh_args(sandbox)}
    for key, value in override.items():
        if key == "ssh":
            params["ssh"].update({k: expand(v) for k, v in value.items()})
            if "port" in value:
                params["ssh"]["port"] = int(params["ssh"]["port"])
        else:
            params[key] = expand(value)
    before = state(sandbox.src_pool, sandbox.dst_pool)
    res = replicate(ansible_playbook, params, expect_rc=2).task("replicate")
    assert res["failed"] is True
    assert expand(message) in res["msg"], res["msg"]
    assert state(sandbox.src_pool, sandbox.dst_pool) == before
    assert not Path("/tmp/zr-pwned").exists()


def holds_of(snapshot: str) -> int:
    return int(zfs("get", "-H", "-p", "-o", "value", "userrefs", snapshot).strip())


def test_removing_the_task_releases_its_holds_on_both_sides(sandbox, pair, ansible_playbook):
    """state: absent (the module's own path, no replication run). The holds a run puts on the base and how they move
    forward are tested on each backend in tests/scenarios (test_transport.py, test_properties_retention.py)."""
    src, dst = pair
    zfs("snapshot", f"{src}@auto-2026-11-28_10-00")
    params = {"name": "held", "source_datasets": [src], "target_dataset": dst, "naming_schema": [SCHEMA], "ssh": ssh_args(sandbox)}
    replicate(ansible_playbook, params)
    assert holds_of(f"{src}@auto-2026-11-28_10-00") == 1 and holds_of(f"{dst}@auto-2026-11-28_10-00") == 1

    gone = replicate(ansible_playbook, dict(params, state="absent")).task("replicate")
    assert gone["changed"] is True
    assert gone["released"] == {"source": [f"{src}@auto-2026-11-28_10-00"], "target": [f"{dst}@auto-2026-11-28_10-00"]}
    assert holds_of(f"{src}@auto-2026-11-28_10-00") == 0 and holds_of(f"{dst}@auto-2026-11-28_10-00") == 0
    again = replicate(ansible_playbook, dict(params, state="absent")).task("replicate")
    assert again["changed"] is False and again["released"] == {"source": [], "target": []}
