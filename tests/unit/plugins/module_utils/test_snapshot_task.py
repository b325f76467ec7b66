# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Snapshot task: validation, the pure plan (slots, windows, allow_empty, pruning) and the exact zfs argv."""
from __future__ import annotations

import subprocess
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from ansible_collections.zfs.replication.plugins.module_utils import _snapshot_task as st
from ansible_collections.zfs.replication.plugins.module_utils import _zfs as z
from ansible_collections.zfs.replication.plugins.module_utils._replication_task import TaskError
from ansible_collections.zfs.replication.plugins.module_utils._transport import Host

LEGACY = z.LEGACY
OPENZFS = z.parse_version_output("zfs-2.3.2-1\nzfs-kmod-2.3.2-1\n")
NOW = datetime(2026, 11, 28, 10, 17, 42, tzinfo=timezone.utc)

# Recorded from zfs-fuse 0.7 (written after a 128 KiB file was added to zspdev/d/a):
#   zfs get -H -p -r -o name,property,value type,guid,createtxg,userrefs,readonly,used,referenced zspdev/d/a
FUSE_GET_WITH_SPACE = """zspdev/d/a\ttype\tfilesystem
zspdev/d/a\tguid\t8307378366530431670
zspdev/d/a\tcreatetxg\t8
zspdev/d/a\tuserrefs\t-
zspdev/d/a\treadonly\toff
zspdev/d/a\tused\t335872
zspdev/d/a\treferenced\t245760
zspdev/d/a@auto-2026-11-28_10-00\ttype\tsnapshot
zspdev/d/a@auto-2026-11-28_10-00\tguid\t11833460785771099020
zspdev/d/a@auto-2026-11-28_10-00\tcreatetxg\t45
zspdev/d/a@auto-2026-11-28_10-00\tuserrefs\t0
zspdev/d/a@auto-2026-11-28_10-00\treadonly\t-
zspdev/d/a@auto-2026-11-28_10-00\tused\t90112
zspdev/d/a@auto-2026-11-28_10-00\treferenced\t114688
zspdev/d/a@auto-2026-11-28_11-00\ttype\tsnapshot
zspdev/d/a@auto-2026-11-28_11-00\tguid\t16376614517555637634
zspdev/d/a@auto-2026-11-28_11-00\tcreatetxg\t63
zspdev/d/a@auto-2026-11-28_11-00\tuserrefs\t0
zspdev/d/a@auto-2026-11-28_11-00\treadonly\t-
zspdev/d/a@auto-2026-11-28_11-00\tused\t0
zspdev/d/a@auto-2026-11-28_11-00\treferenced\t245760
"""


def task(**params: Any) -> st.SnapshotTask:
    base: dict[str, Any] = {"dataset": "tank/data", "schedule": "hourly", "timezone": "UTC", "lifetime_value": 1, "lifetime_unit": "day"}
    base.update(params)
    return st.SnapshotTask.from_params(base)


def listing(tree: dict[str, list[Any]], ds_props: dict[str, dict[str, str]] | None = None) -> z.Listing:
    """tree: {dataset: [name | (name, userrefs) | (name, userrefs, props)]}, createtxg ascending in list order."""
    datasets = {}
    txg = 100
    for name, snaps in tree.items():
        ds = z.Dataset(name, "filesystem", props=dict((ds_props or {}).get(name, {})))
        for item in snaps:
            entry = (item,) if isinstance(item, str) else tuple(item)
            short, refs, props = entry + (0, {})[len(entry) - 1 :]  # defaults for what the entry leaves out
            txg += 1
            ds.snapshots.append(z.Snapshot(name, short, f"g{txg}", txg, refs, dict(props)))
        datasets[name] = ds
    return z.Listing(next(iter(tree)), datasets)


# --------------------------------------------------------------------------------------------------------------
# Validation: every bad input names its field
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"dataset": "tank/da$ta"}, "dataset 'tank/da$ta' is not a valid dataset name: it contains '$'"),
        ({"dataset": None}, "dataset: a dataset name is required"),
        ({"naming_schema": "auto-%Y-%m-%d"}, "lacks %H %M"),
        ({"naming_schema": "auto/%Y-%m-%d_%H-%M"}, "contains '/'"),
        ({"naming_schema": "auto@%Y-%m-%d_%H-%M"}, "contains '@'"),
        ({"lifetime_value": 0}, "lifetime_value 0 is invalid"),
        ({"lifetime_value": -3}, "lifetime_value -3 is invalid"),
        ({"lifetime_unit": "fortnight"}, "lifetime_unit 'fortnight' is not a unit"),
        ({"other_lifetimes": [{"lifetime_value": 0, "lifetime_unit": "day"}]}, "other_lifetimes[0]: lifetime_value 0"),
        ({"recursive": True, "exclude": ["tank/other"]}, "exclude[0] tank/other is not inside dataset tank/data"),
        ({"recursive": True, "exclude": ["tank/data"]}, "exclude[0] tank/data is not inside dataset tank/data"),
        ({"exclude": ["tank/data/x"]}, "exclude needs recursive: true"),
        ({"schedule": {"minute": "61"}}, "schedule.minute '61' is out of range 0-59"),
        ({"schedule": {"hour": "*/0"}}, "schedule.hour"),
        ({"schedule": {"dom": "x"}}, "schedule.dom 'x' is not a number or a name"),
        ({"schedule": "sometimes"}, "schedule 'sometimes' is not a preset"),
        ({"schedule": {"minute": "0", "begin": "25:00"}}, "schedule.begin '25:00' is not a time of day"),
        ({"timezone": "Mars/Olympus"}, "timezone 'Mars/Olympus' is not a known IANA time zone"),
        ({"keep_snapshots": ["tank/data"]}, "keep_snapshots[0] 'tank/data' is not a full snapshot name"),
        ({"allow_empty": "maybe"}, "allow_empty 'maybe' must be true or false"),
        ({"colour": "blue"}, "unknown option colour"),
    ],
)
def test_bad_input_is_a_task_error_naming_the_field(params: dict[str, Any], message: str) -> None:
    with pytest.raises(TaskError) as err:
        task(**params)
    assert message in str(err.value)


def test_defaults_are_truenas_like() -> None:
    t = st.SnapshotTask.from_params({"dataset": "tank/data"})
    assert t.schema.schema == "auto-%Y-%m-%d_%H-%M"
    assert t.schedule.as_dict()["minute"] == "0" and t.schedule.as_dict()["hour"] == "0"  # daily
    assert str(t.lifetime) == "2 weeks"
    assert t.allow_empty and t.enabled and not t.recursive
    # None (an unset module option) means the default too
    assert st.SnapshotTask.from_params({"dataset": "tank/data", "naming_schema": None, "exclude": None}).schema.schema == "auto-%Y-%m-%d_%H-%M"


# --------------------------------------------------------------------------------------------------------------
# Slots and windows
# --------------------------------------------------------------------------------------------------------------


def test_takes_the_current_slot_named_after_the_slot_time() -> None:
    plan = st.plan_snapshot_task(task(), listing({"tank/data": []}), NOW)
    assert plan.snapshot_name == "auto-2026-11-28_10-00"
    assert plan.take_names == ["tank/data@auto-2026-11-28_10-00"]
    assert plan.take[0][1] == "slot 2026-11-28T10:00+00:00 has no snapshot yet"


def test_second_run_in_the_same_slot_takes_nothing() -> None:
    plan = st.plan_snapshot_task(task(), listing({"tank/data": ["auto-2026-11-28_10-00"]}), NOW + timedelta(minutes=40))
    assert plan.take == [] and not plan.has_work
    assert plan.skip == [("tank/data", "already has @auto-2026-11-28_10-00 for slot 2026-11-28T10:00+00:00")]


def test_slot_match_is_by_parsed_time_so_a_zone_suffix_schema_matches_the_same_instant() -> None:
    t = task(naming_schema="auto-%Y%m%d-%H%M%z", timezone="Europe/Berlin")
    now = datetime(2026, 7, 1, 10, 5, tzinfo=timezone.utc)  # 12:05 in Berlin (CEST, +02:00)
    # the same instant written with another offset still counts as this slot's snapshot
    plan = st.plan_snapshot_task(t, listing({"tank/data": ["auto-20260701-1000:0000"]}), now)
    assert plan.snapshot_name == "auto-20260701-1200:0200"
    assert plan.take == []


def test_outside_the_window_nothing_is_taken_but_pruning_still_runs() -> None:
    t = task(schedule={"minute": "0", "hour": "*", "begin": "08:00", "end": "09:00"})
    plan = st.plan_snapshot_task(t, listing({"tank/data": ["auto-2026-11-20_08-00", "auto-2026-11-27_09-00"]}), NOW)
    assert plan.slot is None and plan.take == []
    assert plan.reason == "now (10:17) is outside the schedule's window 08:00-09:00: no snapshot taken"
    assert [n for n, _unused in plan.retention.destroy] == ["tank/data@auto-2026-11-20_08-00"]


def test_slot_across_spring_forward_in_local_time() -> None:
    t = task(schedule={"minute": "30", "hour": "2"}, timezone="Europe/Berlin")
    # 2026-03-29 02:30 does not exist in Berlin: the run at 03:10 local belongs to the 28th's slot
    now = datetime(2026, 3, 29, 1, 10, tzinfo=timezone.utc)
    plan = st.plan_snapshot_task(t, listing({"tank/data": []}), now)
    assert plan.snapshot_name == "auto-2026-03-28_02-30"


def test_slot_across_fall_back_fires_once() -> None:
    t = task(schedule={"minute": "30", "hour": "2"}, timezone="Europe/Berlin")
    # 2026-10-25: 02:30 happens twice; the first (00:30 UTC) is the slot, the second run finds it taken
    first = datetime(2026, 10, 25, 0, 40, tzinfo=timezone.utc)
    second = datetime(2026, 10, 25, 1, 40, tzinfo=timezone.utc)
    assert st.plan_snapshot_task(t, listing({"tank/data": []}), first).snapshot_name == "auto-2026-10-25_02-30"
    plan = st.plan_snapshot_task(t, listing({"tank/data": ["auto-2026-10-25_02-30"]}), second)
    assert plan.take == []


def test_month_end_schedule() -> None:
    t = task(schedule={"minute": "0", "hour": "0", "dom": "31"})
    plan = st.plan_snapshot_task(t, listing({"tank/data": []}), datetime(2026, 12, 15, tzinfo=timezone.utc))
    assert plan.snapshot_name == "auto-2026-10-31_00-00"  # November has no 31st


def test_disabled_task_plans_nothing() -> None:
    plan = st.plan_snapshot_task(task(enabled=False), listing({"tank/data": ["auto-2020-01-01_00-00", "auto-2020-01-02_00-00"]}), NOW)
    assert not plan.has_work and plan.reason and "enabled: false" in plan.reason


def test_too_long_names_are_refused() -> None:
    long_ds = "tank/" + "d" * 240
    with pytest.raises(TaskError, match="longer than 255"):
        st.plan_snapshot_task(task(dataset=long_ds), listing({long_ds: []}), NOW)


# --------------------------------------------------------------------------------------------------------------
# Recursion and excludes
# --------------------------------------------------------------------------------------------------------------


TREE = {"tank/data": [], "tank/data/a": [], "tank/data/b": [], "tank/data/b/c": [], "tank/data/bb": []}


def test_excludes_remove_whole_subtrees_only() -> None:
    t = task(recursive=True, exclude=["tank/data/b"])
    plan = st.plan_snapshot_task(t, listing(TREE), NOW)
    assert [ds for ds, _unused in plan.take] == ["tank/data", "tank/data/a", "tank/data/bb"]


def test_not_recursive_is_the_dataset_alone() -> None:
    plan = st.plan_snapshot_task(task(), listing(TREE), NOW)
    assert [ds for ds, _unused in plan.take] == ["tank/data"]


def test_a_new_child_gets_the_slot_snapshot_the_others_already_have() -> None:
    tree = {"tank/data": ["auto-2026-11-28_10-00"], "tank/data/new": []}
    plan = st.plan_snapshot_task(task(recursive=True), listing(tree), NOW)
    assert plan.take_names == ["tank/data/new@auto-2026-11-28_10-00"]


# --------------------------------------------------------------------------------------------------------------
# allow_empty
# --------------------------------------------------------------------------------------------------------------


def fuse_dataset(ds_ref: int, snaps: list[tuple[str, int, int]]) -> z.Listing:
    return listing(
        {"tank/data": [(n, 0, {"used": str(u), "referenced": str(r)}) for n, u, r in snaps]},
        {"tank/data": {"used": "1", "referenced": str(ds_ref)}},
    )


@pytest.mark.parametrize(
    ("ds_ref", "snaps", "changed", "why"),
    [
        (1000, [("auto-2026-11-28_09-00", 0, 1000)], False, "nothing written since @auto-2026-11-28_09-00 (referenced unchanged, used=0)"),
        (2000, [("auto-2026-11-28_09-00", 0, 1000)], True, "referenced changed since @auto-2026-11-28_09-00 (1000 -> 2000 bytes)"),
        (1000, [("auto-2026-11-28_09-00", 4096, 1000)], True, "@auto-2026-11-28_09-00 holds 4096 bytes freed since"),
        # a later manual snapshot holds what changed after ours
        (1000, [("auto-2026-11-28_09-00", 0, 1000), ("manual", 8192, 1000)], True, "changed between @auto-2026-11-28_09-00 and @manual"),
        # the newest of OUR schema is the base, even if an older one of ours held freed blocks
        (1000, [("auto-2026-11-28_08-00", 512, 900), ("auto-2026-11-28_09-00", 0, 1000)], False, "nothing written"),
    ],
)
def test_allow_empty_false_on_zfs_fuse_uses_referenced_and_used(ds_ref: int, snaps: list[tuple[str, int, int]], changed: bool, why: str) -> None:
    plan = st.plan_snapshot_task(task(allow_empty=False), fuse_dataset(ds_ref, snaps), NOW)
    if changed:
        assert plan.take_names == ["tank/data@auto-2026-11-28_10-00"]
        assert why in plan.take[0][1]
    else:
        assert plan.take == []
        assert why in plan.skip[0][1] and plan.skip[0][1].endswith("allow_empty is false")


@pytest.mark.parametrize(
    ("ds_written", "later_written", "changed"),
    [("0", [], False), ("4096", [], True), ("0", ["0"], False), ("0", ["12288"], True)],
)
def test_allow_empty_false_on_openzfs_uses_written(ds_written: str, later_written: list[str], changed: bool) -> None:
    snaps: list[Any] = [("auto-2026-11-28_09-00", 0, {"written": "777"})]  # what came before ours does not count
    snaps += [(f"manual{i}", 0, {"written": w}) for i, w in enumerate(later_written)]
    lst = listing({"tank/data": snaps}, {"tank/data": {"written": ds_written}})
    plan = st.plan_snapshot_task(task(allow_empty=False), lst, NOW)
    assert bool(plan.take) is changed


def test_allow_empty_false_always_takes_the_first_snapshot_of_the_schema() -> None:
    plan = st.plan_snapshot_task(task(allow_empty=False), listing({"tank/data": ["manual"]}), NOW)
    assert plan.take_names == ["tank/data@auto-2026-11-28_10-00"]


def test_unknown_space_properties_mean_take_it() -> None:
    plan = st.plan_snapshot_task(task(allow_empty=False), listing({"tank/data": ["auto-2026-11-28_09-00"]}), NOW)
    assert plan.take and "cannot tell" in plan.take[0][1]


def test_recorded_fuse_listing_carries_space_properties_of_snapshots() -> None:
    lst = z.parse_get_output("zspdev/d/a", FUSE_GET_WITH_SPACE)
    ds = lst.datasets["zspdev/d/a"]
    assert ds.snapshots[1].props == {"used": "0", "referenced": "245760"}
    assert st.changes_since(ds, ds.snapshots[1]) == (False, "nothing written since @auto-2026-11-28_11-00 (referenced unchanged, used=0)")
    assert st.changes_since(ds, ds.snapshots[0])[0] is True
    assert z.listing_argv(LEGACY, ["zspdev/d"], st.empty_check_props(LEGACY))[-2] == "type,guid,createtxg,userrefs,readonly,used,referenced"
    assert "written" in z.listing_argv(OPENZFS, ["tank"], st.empty_check_props(OPENZFS))[-2]


# --------------------------------------------------------------------------------------------------------------
# Pruning
# --------------------------------------------------------------------------------------------------------------


def test_pruning_keeps_held_kept_manual_other_schema_and_newest() -> None:
    tree = {
        "tank/data": [
            "auto-2026-11-01_00-00",  # expired
            ("auto-2026-11-02_00-00", 1),  # held
            "auto-2026-11-03_00-00",  # replication base
            "manual-before-upgrade",
            "hourly-2026-11-01_00-00",
            "auto-2026-11-28_09-00",  # not expired
        ],
        "tank/data/old": ["auto-2026-11-01_00-00"],  # expired but the newest there (and nothing taken: not recursive)
    }
    t = task(keep_snapshots=["tank/data@auto-2026-11-03_00-00"])
    plan = st.plan_snapshot_task(t, listing(tree), NOW)
    assert [n for n, _unused in plan.retention.destroy] == ["tank/data@auto-2026-11-01_00-00"]
    kept = dict(plan.retention.keep)
    assert kept["tank/data@auto-2026-11-02_00-00"] == "held (1 user hold)"
    assert kept["tank/data@auto-2026-11-03_00-00"] == "kept for replication (incremental base or pending)"
    assert kept["tank/data@auto-2026-11-28_09-00"].startswith("expires 2026-11-29T09:00")
    # the snapshot this run takes is the newest; it counts when deciding what to keep
    assert kept["tank/data@auto-2026-11-28_10-00"].startswith("newest snapshot")
    assert not any("manual" in n or "hourly" in n or "old" in n for n in kept)


def test_the_longest_lifetime_among_tasks_sharing_the_schema_wins() -> None:
    tree = {"tank/data": ["auto-2026-11-20_00-00", "auto-2026-11-28_09-00"]}
    plan = st.plan_snapshot_task(task(other_lifetimes=[{"lifetime_value": 2, "lifetime_unit": "week"}]), listing(tree), NOW)
    assert plan.retention.destroy == []
    plan = st.plan_snapshot_task(task(), listing(tree), NOW)
    assert [n for n, _unused in plan.retention.destroy] == ["tank/data@auto-2026-11-20_00-00"]


def test_excluded_datasets_are_never_pruned() -> None:
    tree = {"tank/data": ["auto-2026-11-01_00-00", "auto-2026-11-28_09-00"], "tank/data/x": ["auto-2026-11-01_00-00", "auto-2026-11-28_09-00"]}
    plan = st.plan_snapshot_task(task(recursive=True, exclude=["tank/data/x"]), listing(tree), NOW)
    assert [n for n, _unused in plan.retention.destroy] == ["tank/data@auto-2026-11-01_00-00"]


def test_planned_after_and_plan_dict() -> None:
    tree = {"tank/data": ["auto-2026-11-01_00-00", "manual"]}
    plan = st.plan_snapshot_task(task(), listing(tree), NOW)
    before = st.snapshot_lists(listing(tree), plan.datasets)
    assert st.planned_after(before, plan) == {"tank/data": ["manual", "auto-2026-11-28_10-00"]}
    d = plan.as_dict()
    assert d["take"] == [{"snapshot": "tank/data@auto-2026-11-28_10-00", "reason": "slot 2026-11-28T10:00+00:00 has no snapshot yet"}]
    assert d["destroy"][0]["snapshot"] == "tank/data@auto-2026-11-01_00-00"


# --------------------------------------------------------------------------------------------------------------
# zfs argv
# --------------------------------------------------------------------------------------------------------------


def test_common_parent() -> None:
    assert st.common_parent(["tank/data/a", "tank/data/bb"]) == "tank/data"
    assert st.common_parent(["tank/data/a/x", "tank/data/a"]) == "tank/data/a"
    assert st.common_parent(["tank/data/b", "tank/data/bb"]) == "tank/data"


@pytest.mark.parametrize("caps", [LEGACY, OPENZFS], ids=["legacy", "openzfs"])
def test_whole_tree_is_one_recursive_snapshot(caps: z.Capabilities) -> None:
    argvs, extras, atomic = st.snapshot_argvs(caps, listing(TREE), "tank/data", list(TREE), "s")
    assert argvs == [["zfs", "snapshot", "-r", "tank/data@s"]] and extras == [] and atomic


@pytest.mark.parametrize("caps", [LEGACY, OPENZFS], ids=["legacy", "openzfs"])
def test_one_dataset_is_one_plain_snapshot(caps: z.Capabilities) -> None:
    assert st.snapshot_argvs(caps, listing(TREE), "tank/data", ["tank/data"], "s") == ([["zfs", "snapshot", "tank/data@s"]], [], True)


def test_excludes_on_openzfs_are_one_call_listing_every_dataset() -> None:
    wanted = ["tank/data", "tank/data/a", "tank/data/bb"]
    argvs, extras, atomic = st.snapshot_argvs(OPENZFS, listing(TREE), "tank/data", wanted, "s")
    assert argvs == [["zfs", "snapshot", "tank/data@s", "tank/data/a@s", "tank/data/bb@s"]] and extras == [] and atomic


def test_excludes_on_legacy_are_recursive_then_destroy_the_left_out() -> None:
    wanted = ["tank/data", "tank/data/a", "tank/data/bb"]
    argvs, extras, atomic = st.snapshot_argvs(LEGACY, listing(TREE), "tank/data", wanted, "s")
    assert argvs == [["zfs", "snapshot", "-r", "tank/data@s"]]
    assert extras == ["tank/data/b", "tank/data/b/c"] and atomic


def test_legacy_recursive_root_is_the_deepest_common_parent() -> None:
    argvs, extras, _unused = st.snapshot_argvs(LEGACY, listing(TREE), "tank/data", ["tank/data/b", "tank/data/b/c"], "s")
    assert argvs == [["zfs", "snapshot", "-r", "tank/data/b@s"]] and extras == []


def test_legacy_falls_back_to_one_call_each_when_a_left_out_dataset_has_the_name() -> None:
    tree = dict(TREE, **{"tank/data/b": ["s"]})
    argvs, extras, atomic = st.snapshot_argvs(LEGACY, listing(tree), "tank/data", ["tank/data", "tank/data/a"], "s")
    assert argvs == [["zfs", "snapshot", "tank/data@s"], ["zfs", "snapshot", "tank/data/a@s"]] and not atomic


def test_destroys_are_batched_per_dataset_on_openzfs_and_single_on_legacy() -> None:
    names = ["tank/data@a", "tank/data@b", "tank/data/x@a"]
    assert st.destroy_argvs(OPENZFS, names) == [["zfs", "destroy", "tank/data@a,b"], ["zfs", "destroy", "tank/data/x@a"]]
    assert st.destroy_argvs(LEGACY, names) == [["zfs", "destroy", n] for n in names]
    many = [f"tank/data@s{i}" for i in range(st.DESTROY_BATCH + 1)]
    assert len(st.destroy_argvs(OPENZFS, many)) == 2


# --------------------------------------------------------------------------------------------------------------
# A whole run against a scripted zfs (exact calls, observed changes)
# --------------------------------------------------------------------------------------------------------------


class ScriptedHost(Host):
    """Answers `zfs version` (legacy: unrecognized), the listings from a queue, and records mutations."""

    def __init__(self, listings: list[str], fail: set[str] | None = None) -> None:
        self.listings = list(listings)
        self.calls: list[list[str]] = []
        self.fail = fail or set()

    def run(self, argv, check=True, input_text=None):  # type: ignore[no-untyped-def,override]
        argv = list(argv)
        self.calls.append(argv)
        if argv[:2] == ["zfs", "version"]:
            return subprocess.CompletedProcess(argv, 2, "", "unrecognized command 'version'\n")
        if argv[:2] == ["zfs", "get"]:
            return subprocess.CompletedProcess(argv, 0, self.listings.pop(0), "")
        if " ".join(argv) in self.fail:
            return subprocess.CompletedProcess(argv, 1, "", "cannot destroy: dataset is busy\n")
        return subprocess.CompletedProcess(argv, 0, "", "")

    def stream(self, argv, consume):  # type: ignore[no-untyped-def,override]
        proc = self.run(argv, check=False)
        if proc.returncode != 0:
            return proc.returncode, None, proc.stderr
        return 0, consume(proc.stdout.splitlines(keepends=True)), proc.stderr


def fuse_get(tree: dict[str, list[str]]) -> str:
    lines = []
    txg = 10
    for ds, snaps in tree.items():
        lines += [f"{ds}\ttype\tfilesystem", f"{ds}\tguid\t1{txg}", f"{ds}\tcreatetxg\t{txg}", f"{ds}\tuserrefs\t-", f"{ds}\treadonly\toff"]
        for s in snaps:
            txg += 1
            lines += [f"{ds}@{s}\ttype\tsnapshot", f"{ds}@{s}\tguid\t2{txg}", f"{ds}@{s}\tcreatetxg\t{txg}", f"{ds}@{s}\tuserrefs\t0"]
    return "\n".join(lines) + "\n"


def test_run_on_legacy_zfs_exact_calls_and_observed_result() -> None:
    before = {"tank/data": ["auto-2026-11-01_00-00", "manual"], "tank/data/a": [], "tank/data/x": []}
    after = {"tank/data": ["manual", "auto-2026-11-28_10-00"], "tank/data/a": ["auto-2026-11-28_10-00"], "tank/data/x": []}
    host = ScriptedHost([fuse_get(before), fuse_get(after)])
    lines: list[str] = []
    t = task(recursive=True, exclude=["tank/data/x"])
    result = st._Run(t, host, lines.append).run(check_mode=False, now=NOW)
    assert [c for c in host.calls if c[1] not in ("version", "get")] == [
        ["zfs", "snapshot", "-r", "tank/data@auto-2026-11-28_10-00"],
        ["zfs", "destroy", "tank/data/x@auto-2026-11-28_10-00"],
        ["zfs", "destroy", "tank/data@auto-2026-11-01_00-00"],
    ]
    assert len([c for c in host.calls if c[1] == "get"]) == 2
    assert result.changed and not result.failed
    assert result.taken == ["tank/data@auto-2026-11-28_10-00", "tank/data/a@auto-2026-11-28_10-00"]
    assert result.destroyed == ["tank/data@auto-2026-11-01_00-00"]
    assert result.after == {"tank/data": ["manual", "auto-2026-11-28_10-00"], "tank/data/a": ["auto-2026-11-28_10-00"]}
    assert result.log is not None and lines == result.log
    d = result.as_dict()
    assert d["slot"] == "2026-11-28T10:00:00+00:00" and d["capabilities"]["version"] is None


def test_check_mode_runs_only_the_probe_and_the_listing() -> None:
    host = ScriptedHost([fuse_get({"tank/data": ["auto-2026-11-01_00-00"]})])
    result = st._Run(task(), host, None).run(check_mode=True, now=NOW)
    assert [c[1] for c in host.calls] == ["version", "get"]
    assert result.changed and result.taken == ["tank/data@auto-2026-11-28_10-00"] and result.destroyed == ["tank/data@auto-2026-11-01_00-00"]
    assert result.after == {"tank/data": ["auto-2026-11-28_10-00"]}


def test_nothing_to_do_is_unchanged_with_no_mutation() -> None:
    host = ScriptedHost([fuse_get({"tank/data": ["auto-2026-11-28_10-00"]})])
    result = st._Run(task(), host, None).run(check_mode=False, now=NOW)
    assert not result.changed and result.taken == [] and [c[1] for c in host.calls] == ["version", "get"]


def test_a_failed_destroy_is_an_error_and_the_rest_still_counts() -> None:
    before = {"tank/data": ["auto-2026-11-01_00-00", "auto-2026-11-28_10-00"]}
    host = ScriptedHost([fuse_get(before), fuse_get(before)], fail={"zfs destroy tank/data@auto-2026-11-01_00-00"})
    result = st._Run(task(), host, None).run(check_mode=False, now=NOW)
    assert result.failed and "dataset is busy" in result.errors[0]
    assert not result.changed and result.destroyed == []


def test_missing_dataset_is_a_task_error() -> None:
    class Missing(ScriptedHost):
        def run(self, argv, check=True, input_text=None):  # type: ignore[no-untyped-def,override]
            if list(argv[:2]) == ["zfs", "get"]:
                return subprocess.CompletedProcess(argv, 1, "", "cannot open 'tank/nope': dataset does not exist\n")
            return super().run(argv, check, input_text)

    with pytest.raises(TaskError, match="dataset tank/data does not exist"):
        st._Run(task(), Missing([]), None).run(check_mode=False, now=NOW)
