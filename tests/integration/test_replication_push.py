# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""zfs_replication through real ansible-playbook runs, real zfs-fuse pools and a real sshd.

Every test checks the real state on both sides (snapshot names and guids with `zfs get -p`,
file checksums in mounted replicas), not only what the module reported.
"""
from __future__ import annotations

import contextlib
import json
import secrets
from pathlib import Path

import pytest

from ansible_collections.zfs.replication.plugins.module_utils._replication_task import ReplicationTask, suggest_name
from helpers import snapshots_with_guids, tree_checksums, zfs

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


def own_checksums(dataset: str) -> dict[str, str]:
    """Checksums of the files of one dataset (not of child datasets mounted below it)."""
    sums = tree_checksums(mountpoint(dataset))
    return {k: v for k, v in sums.items() if not k.startswith("child/")}


def mounted_checksums(dataset: str) -> dict[str, str]:
    """Checksums of a dataset's own files; mounts it first (replicas are received unmounted)."""
    if zfs("get", "-H", "-o", "value", "mounted", dataset).strip() != "yes":
        zfs("mount", dataset)
    return own_checksums(dataset)


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


def test_full_then_incremental_over_ssh(sandbox, pair, ansible_playbook):
    src, dst = pair
    write_files(mountpoint(src), "one")
    write_files(mountpoint(f"{src}/child"), "kid")
    zfs("snapshot", "-r", f"{src}@auto-2026-11-28_10-00")
    zfs("snapshot", "-r", f"{src}@manual-keep-out")  # not selected by the schema
    write_files(mountpoint(src), "two")
    zfs("snapshot", "-r", f"{src}@auto-2026-11-28_11-00")
    params = {
        "source_datasets": [src],
        "target_dataset": dst,
        "recursive": True,
        "naming_schema": [SCHEMA],
        "ssh": ssh_args(sandbox, cipher="fast"),
    }

    first = replicate(ansible_playbook, params).task("replicate")
    assert first["changed"] is True
    assert first["snapshots_sent"] == 4
    assert first["bytes"] > 600_000  # pv counted the real streams (two 600 kB file sets)
    assert first["datasets"][dst]["snapshots_sent"] == ["auto-2026-11-28_10-00", "auto-2026-11-28_11-00"]
    assert first["capabilities"]["target"]["version"] is None  # zfs-fuse: legacy command line

    # Real state: same snapshot names and guids on both sides, schema-selected only.
    want = {k: v for k, v in snapshots_with_guids(src).items() if "manual" not in k}
    assert snapshots_with_guids(dst) == want
    assert len(want) == 4
    assert zfs("get", "-H", "-o", "value", "readonly", dst).strip() == "on"
    assert mounted_checksums(dst) == own_checksums(src)
    assert mounted_checksums(f"{dst}/child") == own_checksums(f"{src}/child")
    zfs("unmount", f"{dst}/child")
    zfs("unmount", dst)

    # Second run: nothing new -> changed=false, nothing sent.
    again = replicate(ansible_playbook, params).task("replicate")
    assert again["changed"] is False and again["snapshots_sent"] == 0
    assert {d["action"] for d in again["plan"]} == {"in_sync"}

    # New data, new snapshot: one incremental -I stream per dataset from the guid-checked base.
    write_files(mountpoint(src), "three")
    zfs("snapshot", "-r", f"{src}@auto-2026-11-28_12-00")
    inc = replicate(ansible_playbook, params).task("replicate")
    assert inc["changed"] is True and inc["snapshots_sent"] == 2
    root_plan = next(d for d in inc["plan"] if d["source"] == src)
    assert root_plan["action"] == "incremental" and root_plan["base"] == "auto-2026-11-28_11-00"
    assert [(s["mode"], s["base"], s["snapshot"]) for s in root_plan["sends"]] == [("I", "auto-2026-11-28_11-00", "auto-2026-11-28_12-00")]
    want = {k: v for k, v in snapshots_with_guids(src).items() if "manual" not in k}
    assert snapshots_with_guids(dst) == want
    assert mounted_checksums(dst) == own_checksums(src)
    zfs("unmount", dst)


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


def test_local_transport(sandbox, pair, ansible_playbook):
    src, dst = pair
    write_files(mountpoint(src), "loc")
    zfs("snapshot", f"{src}@auto-2026-11-28_10-00")
    res = replicate(ansible_playbook, {"source_datasets": [src], "target_dataset": dst, "naming_schema": [SCHEMA], "transport": "local"}).task("replicate")
    assert res["changed"] is True and res["snapshots_sent"] == 1
    assert snapshots_with_guids(dst) == snapshots_with_guids(src)
    assert mounted_checksums(dst) == own_checksums(src)
    zfs("unmount", dst)


def test_diverged_target_is_refused_with_data_intact(sandbox, pair, ansible_playbook):
    src, dst = pair
    write_files(mountpoint(src), "d")
    zfs("snapshot", f"{src}@auto-2026-11-28_10-00")
    params = {"source_datasets": [src], "target_dataset": dst, "naming_schema": [SCHEMA], "ssh": ssh_args(sandbox), "readonly": "ignore"}
    replicate(ansible_playbook, params)
    # Someone writes on the target and snapshots it; the source moves on too.
    zfs("mount", dst)
    write_files(mountpoint(dst), "rogue")
    zfs("snapshot", f"{dst}@auto-2026-11-28_10-30")
    rogue = mounted_checksums(dst)
    zfs("unmount", dst)
    zfs("snapshot", f"{src}@auto-2026-11-28_11-00")
    before = state(sandbox.dst_pool)

    res = replicate(ansible_playbook, params, expect_rc=2).task("replicate")
    assert res["failed"] is True and res["changed"] is False
    assert "diverged" in res["msg"] and "auto-2026-11-28_10-30" in res["msg"]
    assert state(sandbox.dst_pool) == before
    assert mounted_checksums(dst) == rogue
    zfs("unmount", dst)


# zvols: zfs-fuse cannot create them ("Function not implemented"); the zvol cases run in the
# OpenZFS tier (tests/openzfs) and the planner's refusal is covered by unit tests.
BAD_INPUT = [
    ("missing source", {"source_datasets": ["{src}-nope"]}, "source_datasets: {src}-nope does not exist"),
    ("target inside source", {"transport": "local", "target_dataset": "{src}/child/copy"}, "target_dataset {src}/child/copy is inside source"),
    ("schema without fields", {"naming_schema": ["auto-%Y-%m"]}, "naming_schema[0]"),
    ("space in name", {"source_datasets": ["{src}/my data"]}, "source_datasets[0]"),
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


def test_base_is_held_on_both_sides_moves_forward_and_is_released(sandbox, pair, ansible_playbook):
    src, dst = pair
    write_files(mountpoint(src), "h")
    zfs("snapshot", f"{src}@auto-2026-11-28_10-00")
    params = {"name": "held", "source_datasets": [src], "target_dataset": dst, "naming_schema": [SCHEMA], "ssh": ssh_args(sandbox)}
    replicate(ansible_playbook, params)
    assert holds_of(f"{src}@auto-2026-11-28_10-00") == 1 and holds_of(f"{dst}@auto-2026-11-28_10-00") == 1
    # The held base cannot be destroyed by another tool.
    with pytest.raises(AssertionError, match="busy|hold"):
        zfs("destroy", f"{src}@auto-2026-11-28_10-00")

    zfs("snapshot", f"{src}@auto-2026-11-28_11-00")
    replicate(ansible_playbook, params)
    assert holds_of(f"{src}@auto-2026-11-28_10-00") == 0 and holds_of(f"{dst}@auto-2026-11-28_10-00") == 0
    assert holds_of(f"{src}@auto-2026-11-28_11-00") == 1 and holds_of(f"{dst}@auto-2026-11-28_11-00") == 1

    # Retention on the target may now destroy the old base, never the held new one.
    zfs("destroy", f"{src}@auto-2026-11-28_10-00")
    res = replicate(ansible_playbook, dict(params, retention_policy="source")).task("replicate")
    assert res["datasets"][dst]["destroyed"] == ["auto-2026-11-28_10-00"]
    assert list(snapshots_with_guids(dst)) == ["@auto-2026-11-28_11-00"]

    # Removing the task releases its holds on both sides.
    gone = replicate(ansible_playbook, dict(params, state="absent")).task("replicate")
    assert gone["changed"] is True
    assert gone["released"] == {"source": [f"{src}@auto-2026-11-28_11-00"], "target": [f"{dst}@auto-2026-11-28_11-00"]}
    assert holds_of(f"{src}@auto-2026-11-28_11-00") == 0 and holds_of(f"{dst}@auto-2026-11-28_11-00") == 0


def test_create_snapshot_when_sources_have_none_and_mount(sandbox, pair, ansible_playbook):
    src, dst = pair
    write_files(mountpoint(src), "new")
    write_files(mountpoint(f"{src}/child"), "kid", count=1)
    zfs("snapshot", "-r", f"{src}@manual-only")  # not selected: as if the source had no snapshot for the task
    params = {"name": "mk", "source_datasets": [src], "target_dataset": dst, "recursive": True, "naming_schema": [SCHEMA],
              "transport": "local", "create_snapshot": True, "mount": True, "readonly": "ignore"}
    before = state(sandbox.src_pool, sandbox.dst_pool)
    planned = replicate(ansible_playbook, params, check=True).task("replicate")
    assert any(line.startswith(f"create_snapshot: would take {src}@auto-") for line in planned["log"]), planned["log"]
    assert state(sandbox.src_pool, sandbox.dst_pool) == before

    res = replicate(ansible_playbook, params).task("replicate")
    taken = [k for k in snapshots_with_guids(src) if k.startswith("@auto-")]
    assert len(taken) == 1  # one recursive snapshot, named by the schema
    assert f"/child{taken[0]}" in snapshots_with_guids(src)
    assert res["snapshots_sent"] == 2
    assert snapshots_with_guids(dst) == {k: v for k, v in snapshots_with_guids(src).items() if "manual" not in k}
    # mount: the replicas are mounted after the run, with the source's files.
    assert zfs("get", "-H", "-o", "value", "mounted", dst).strip() == "yes"
    assert own_checksums(dst) == own_checksums(src)
    # A second run finds the snapshot: nothing taken, nothing sent.
    again = replicate(ansible_playbook, params).task("replicate")
    assert again["changed"] is False and not any("create_snapshot" in line for line in again["log"])
    zfs("unmount", f"{dst}/child")
    zfs("unmount", dst)


CAPABILITY_CASES = [
    ("encryption", {"encryption": True, "encryption_key": "6f" * 32}, "encryption: true needs native encryption on the target"),
    ("raw", {"raw": True}, "raw: true needs raw send"),
    ("large_block", {"large_block": True}, "large_block: true needs zfs send -L"),
    ("compressed", {"compressed": True}, "compressed: true needs zfs send -c"),
]


@pytest.mark.parametrize("case,override,message", CAPABILITY_CASES, ids=[c[0] for c in CAPABILITY_CASES])
def test_feature_the_host_lacks_is_a_clear_error(sandbox, pair, ansible_playbook, case, override, message):
    """zfs-fuse has no encryption, raw send or -L/-c: a task that requires them is refused up front, nothing changed."""
    src, dst = pair
    zfs("snapshot", f"{src}@auto-2026-11-28_10-00")
    before = state(sandbox.src_pool, sandbox.dst_pool)
    res = replicate(ansible_playbook, dict({"source_datasets": [src], "target_dataset": dst, "naming_schema": [SCHEMA],
                                            "ssh": ssh_args(sandbox)}, **override), expect_rc=2).task("replicate")
    assert message in res["msg"], res["msg"]
    assert "6f6f6f6f" not in json.dumps(res)
    assert state(sandbox.src_pool, sandbox.dst_pool) == before
