# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""zfs_snapshot_task through real ansible-playbook runs on real zfs-fuse pools.

Every test checks the real snapshot lists (`zfs get -H -p -r`), not only what the module reported.
Old snapshots for pruning are made by hand with names from the past; the module's clock is the
real one, so expected names are computed from the slot the module reports.
"""
from __future__ import annotations

import json
import secrets
from datetime import datetime, timezone
from pathlib import Path

import pytest

from helpers import CommandError, snapshots_with_guids, zfs

pytestmark = pytest.mark.integration

SCHEMA = "auto-%Y-%m-%d_%H-%M"
HOLD_TAG = "zr-test-hold"


def snaps(dataset: str) -> dict[str, list[str]]:
    """{dataset: [snapshot names]} for DATASET and its descendants (every dataset listed)."""
    out = zfs("get", "-H", "-p", "-r", "-o", "name,value", "createtxg", dataset)
    result: dict[str, list[tuple[int, str]]] = {}
    for line in out.splitlines():
        name, txg = line.split("\t")
        ds, _sep, snap = name.partition("@")
        result.setdefault(ds, [])
        if snap:
            result[ds].append((int(txg), snap))
    return {ds: [n for _unused, n in sorted(items)] for ds, items in result.items()}


def sync_pool(pool: str) -> None:
    """Force zfs-fuse to write its open transaction group (a snapshot is a sync task), so space
    accounting (referenced, used) shows what was just written. zfs-fuse has no `zpool sync`."""
    name = f"{pool}@zr-sync-{secrets.token_hex(3)}"
    zfs("snapshot", name)
    zfs("destroy", name)


@pytest.fixture
def tree(sandbox):
    """A fresh tree on the source pool: root, root/a, root/b, root/b/c."""
    root = f"{sandbox.src_pool}/snap{secrets.token_hex(3)}"
    for ds in (root, f"{root}/a", f"{root}/b", f"{root}/b/c"):
        zfs("create", ds)
    yield root
    # zfs-fuse's `zfs holds` needs pyzfs, which it lacks: release the one tag the tests use by userrefs.
    for line in zfs("get", "-H", "-p", "-r", "-o", "name,value", "userrefs", root).splitlines():
        name, refs = line.split("\t")
        if "@" in name and refs.isdigit() and int(refs) > 0:
            zfs("release", HOLD_TAG, name)
    for _attempt in range(5):  # zfs-fuse: "dataset is busy" right after an unmount, sometimes
        try:
            zfs("destroy", "-r", root)
            break
        except CommandError:
            continue


def playbook(*tasks: dict) -> str:
    return json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": list(tasks)}])


def snapshot_task(params: dict, name: str = "snapshot", **extra: object) -> dict:
    return {"name": name, "zfs.replication.zfs_snapshot_task": params, **extra}


def run(ansible_playbook, params: dict, **kw):
    return ansible_playbook(playbook(snapshot_task(params)), **kw).task("snapshot")


def slot_name(result: dict) -> str:
    """The schema's name for the hourly UTC slot the module reports (e.g. 2026-11-28T10:00:00+00:00 -> auto-2026-11-28_10-00)."""
    slot = result["slot"]
    assert slot.endswith(":00:00+00:00"), slot
    return f"auto-{slot[:10]}_{slot[11:13]}-00"


def test_take_prune_idempotent_and_what_survives(tree, ansible_playbook):
    root = tree
    old = ["auto-2020-01-01_00-00", "auto-2020-01-02_00-00", "auto-2020-01-03_00-00", "auto-2020-01-04_00-00"]
    for n in old:
        zfs("snapshot", "-r", f"{root}@{n}")
    zfs("snapshot", f"{root}@before-upgrade")  # manual
    zfs("snapshot", f"{root}@hourly-2020-01-01_00-00")  # another schema, long expired by any lifetime
    zfs("hold", HOLD_TAG, f"{root}@auto-2020-01-02_00-00")
    params = {
        "dataset": root,
        "recursive": True,
        "exclude": [f"{root}/b"],
        "naming_schema": SCHEMA,
        "schedule": "hourly",
        "timezone": "UTC",
        "lifetime_value": 1,
        "lifetime_unit": "day",
        "keep_snapshots": [f"{root}@auto-2020-01-03_00-00"],
    }

    first = run(ansible_playbook, params)
    new = first["snapshot_name"]
    assert first["changed"] is True
    slot = first["slot"]  # e.g. 2026-11-28T10:00:00+00:00: the hour this run belongs to
    assert slot.endswith(":00:00+00:00") and new == f"auto-{slot[:10]}_{slot[11:13]}-00"
    assert sorted(first["taken"]) == sorted([f"{root}@{new}", f"{root}/a@{new}"])

    # Real state: the included datasets got the slot's snapshot, the excluded subtree did not and
    # kept its old snapshots; on the included ones, expired snapshots of the schema are gone except
    # the held one and the one in keep_snapshots; manual and other-schema snapshots are untouched.
    state = snaps(root)
    assert state[root] == ["auto-2020-01-02_00-00", "auto-2020-01-03_00-00", "before-upgrade", "hourly-2020-01-01_00-00", new]
    assert state[f"{root}/a"] == [new]
    assert state[f"{root}/b"] == old and state[f"{root}/b/c"] == old
    assert sorted(first["destroyed"]) == sorted(
        [f"{root}@auto-2020-01-01_00-00", f"{root}@auto-2020-01-04_00-00", *(f"{root}/a@{n}" for n in old)]
    )
    kept = {k["snapshot"]: k["reason"] for k in first["kept"]}
    assert kept[f"{root}@auto-2020-01-02_00-00"] == "held (1 user hold)"
    assert kept[f"{root}@auto-2020-01-03_00-00"] == "kept for replication (incremental base or pending)"
    assert kept[f"{root}@{new}"].startswith("newest snapshot")

    # Same slot again: nothing to do, nothing changes. The module's clock is the real one: if the hour turned
    # between the runs, that run took the new hour's snapshot (checked too), and the run after it is the same-slot run.
    guids = snapshots_with_guids(root)
    again = run(ansible_playbook, params)
    if again["slot"] != slot:
        turned = slot_name(again)
        assert again["slot"] > slot and again["snapshot_name"] == turned
        assert again["changed"] is True and sorted(again["taken"]) == sorted([f"{root}@{turned}", f"{root}/a@{turned}"])
        assert again["destroyed"] == [] and snaps(root)[f"{root}/a"] == [new, turned]
        slot, guids = again["slot"], snapshots_with_guids(root)
        again = run(ansible_playbook, params)
        assert again["slot"] == slot, "the hour turned twice during two short runs"
    assert again["changed"] is False and again["taken"] == [] and again["destroyed"] == []
    assert {s["dataset"] for s in again["skipped_datasets"]} == {root, f"{root}/a"}
    assert snapshots_with_guids(root) == guids


def test_check_mode_returns_the_plan_and_changes_nothing(tree, ansible_playbook):
    root = tree
    zfs("snapshot", "-r", f"{root}@auto-2020-01-01_00-00")
    zfs("snapshot", "-r", f"{root}@auto-2020-01-02_00-00")
    params = {"dataset": root, "recursive": True, "schedule": "hourly", "timezone": "UTC", "lifetime_value": 1, "lifetime_unit": "week"}
    before = snapshots_with_guids(root)

    res = run(ansible_playbook, params, check=True, diff=True)
    assert snapshots_with_guids(root) == before
    new = res["snapshot_name"]
    assert res["changed"] is True
    assert {t["snapshot"] for t in res["plan"]["take"]} == {f"{ds}@{new}" for ds in (root, f"{root}/a", f"{root}/b", f"{root}/b/c")}
    destroy = {d["snapshot"]: d["reason"] for d in res["plan"]["destroy"]}
    assert set(destroy) == {f"{ds}@auto-2020-01-0{i}_00-00" for ds in (root, f"{root}/a", f"{root}/b", f"{root}/b/c") for i in (1, 2)}
    assert destroy[f"{root}@auto-2020-01-01_00-00"] == "expired 2020-01-08T00:00+00:00 (lifetime 1 week from 2020-01-01T00:00+00:00)"
    assert f"{root}@auto-2020-01-01_00-00\n" in res["diff"]["before"]
    assert f"{root}@auto-2020-01-01_00-00" not in res["diff"]["after"] and f"{root}/b/c@{new}\n" in res["diff"]["after"]

    # A real run then does exactly the plan, for the slot it runs in: the check's slot, or the next hour's if the
    # hour turned in between (the same datasets, that slot's name).
    real = run(ansible_playbook, params, diff=True)
    assert real["slot"] >= res["slot"] and real["snapshot_name"] == slot_name(real)
    planned = [t["snapshot"].replace(f"@{new}", f"@{real['snapshot_name']}") for t in res["plan"]["take"]]
    assert sorted(real["taken"]) == sorted(planned)
    assert sorted(real["destroyed"]) == sorted(destroy)
    assert all(names == [real["snapshot_name"]] for names in snaps(root).values())


def test_allow_empty_false_skips_datasets_without_writes(sandbox, tree, ansible_playbook, zfs_caps):
    root = tree
    base = "auto-2020-01-01_00-00"  # an earlier slot's snapshot of the schema, by hand
    zfs("snapshot", "-r", f"{root}@{base}")
    sync_pool(sandbox.src_pool)
    params = {
        "dataset": root,
        "recursive": True,
        "exclude": [f"{root}/b"],
        "schedule": "hourly",
        "timezone": "UTC",
        "lifetime_value": 10,
        "lifetime_unit": "year",
        "allow_empty": False,
    }

    idle = run(ansible_playbook, params)
    assert idle["changed"] is False and idle["taken"] == []
    reasons = {s["dataset"]: s["reason"] for s in idle["skipped_datasets"]}
    # OpenZFS reads the written property; zfs-fuse, which lacks it, compares referenced and used
    how = "written=0" if "written" in zfs_caps else "referenced unchanged, used=0"
    assert reasons[f"{root}/a"] == f"nothing written since @{base} ({how}); allow_empty is false"
    assert snaps(root)[f"{root}/a"] == [base]

    mount = zfs("get", "-H", "-o", "value", "mountpoint", f"{root}/a").strip()
    Path(mount, "data.bin").write_bytes(secrets.token_bytes(300_000))
    sync_pool(sandbox.src_pool)
    busy = run(ansible_playbook, params)
    new = busy["snapshot_name"]
    assert busy["changed"] is True and busy["taken"] == [f"{root}/a@{new}"]
    state = snaps(root)
    assert state[f"{root}/a"] == [base, new]
    assert state[root] == [base] and state[f"{root}/b"] == [base]  # idle root and excluded b: nothing new

    # allow_empty true (the default) snapshots the idle ones too.
    full = run(ansible_playbook, {**params, "allow_empty": True})
    assert full["changed"] is True and f"{root}@{full['snapshot_name']}" in full["taken"]
    assert snaps(root)[root] == [base, full["snapshot_name"]]


def test_outside_the_window_takes_nothing(tree, ansible_playbook):
    root = tree
    hour = (datetime.now(timezone.utc).hour + 12) % 24  # a window of two minutes, twelve hours away
    params = {"dataset": root, "schedule": {"minute": "0", "hour": "*", "begin": f"{hour:02d}:00", "end": f"{hour:02d}:01"}, "timezone": "UTC"}
    res = run(ansible_playbook, params)
    assert res["changed"] is False and res["taken"] == [] and res["slot"] is None
    assert "outside the schedule's window" in res["plan"]["reason"]
    assert snaps(root)[root] == []


BAD_INPUTS = [
    ("missing dataset", {"dataset": "{pool}/does-not-exist"}, "dataset {pool}/does-not-exist does not exist"),
    ("schema without minutes", {"naming_schema": "auto-%Y-%m-%d_%H"}, "lacks %M"),
    ("schema with a slash", {"naming_schema": "auto/%Y-%m-%d_%H-%M"}, "contains '/'"),
    ("zero lifetime", {"lifetime_value": 0}, "lifetime_value 0 is invalid"),
    ("unknown unit", {"lifetime_unit": "fortnight"}, "lifetime_unit must be one of"),
    ("exclude outside", {"recursive": True, "exclude": ["{pool}/elsewhere"]}, "exclude[0] {pool}/elsewhere is not inside dataset {root}"),
    ("bad cron field", {"schedule": {"minute": "75"}}, "schedule.minute '75' is out of range 0-59"),
]


def test_bad_input_is_refused_and_nothing_changes(sandbox, tree, ansible_playbook):
    root = tree
    zfs("snapshot", "-r", f"{root}@auto-2020-01-01_00-00")
    before = snapshots_with_guids(root)
    pool = sandbox.src_pool

    def expand(text: str) -> str:
        return text.replace("{pool}", pool).replace("{root}", root)

    tasks = []
    for label, override, _unused in BAD_INPUTS:
        params = {"dataset": root, "schedule": "hourly", "timezone": "UTC", "lifetime_value": 1, "lifetime_unit": "day"}
        params.update(json.loads(expand(json.dumps(override))))
        tasks.append(snapshot_task(params, name=label, ignore_errors=True))
    result = ansible_playbook(playbook(*tasks))
    for label, _unused, message in BAD_INPUTS:
        res = result.task(label)
        assert res.get("failed") is True, (label, res)
        assert expand(message) in res["msg"], (label, res["msg"])
        assert res.get("changed") is False
    assert snapshots_with_guids(root) == before
