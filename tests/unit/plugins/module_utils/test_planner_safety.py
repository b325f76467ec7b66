# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The planner's destructive steps: decided on guids, listed in the plan, recv -F only where a plan needs it."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from ansible_collections.zfs.replication.plugins.module_utils._naming import NamingSchema
from ansible_collections.zfs.replication.plugins.module_utils._planner import (
    PlanTask,
    Selection,
    TargetRetention,
    plan,
    projected_target,
    target_retention,
)
from ansible_collections.zfs.replication.plugins.module_utils._zfs import Dataset, Listing, Snapshot

SCHEMA = NamingSchema("auto-%Y-%m-%d_%H-%M")
AUTO = Selection(naming_schemas=[SCHEMA])
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
N1, N2, N3 = "auto-2026-11-01_00-00", "auto-2026-11-02_00-00", "auto-2026-11-03_00-00"


def ds(name: str, snaps: list[tuple[str, str, int]], props: dict[str, str] | None = None, userrefs: dict[str, int] | None = None) -> Dataset:
    refs = userrefs or {}
    return Dataset(name, "filesystem", props=dict(props or {}), snapshots=[Snapshot(name, n, g, t, refs.get(n, 0)) for n, g, t in snaps])


def listing(*datasets: Dataset) -> Listing:
    return Listing(datasets[0].name, {d.name: d for d in datasets})


def task(policy: str = "none", days: int | None = None, **kw) -> PlanTask:
    expires = None
    if days is not None:
        def expires(name: str, _now: datetime) -> datetime | None:
            when = SCHEMA.parse(name)
            return None if when is None else when.replace(tzinfo=timezone.utc) + timedelta(days=days)
    kw.setdefault("sources", ["tank/data"])
    kw.setdefault("target", "backup/data")
    kw.setdefault("selection", AUTO)
    return PlanTask(retention=TargetRetention(policy, expires, NOW), **kw)


RO = {"readonly": "on"}


def test_rollback_of_a_retaken_slot_keeps_the_new_snapshot_under_source_retention():
    # The source was rolled back to N1, N2 re-taken (same name, new guid) and N3 taken. The target has the old N2.
    src = listing(ds("tank/data", [(N1, "g1", 10), (N2, "g2-new", 30), (N3, "g3", 40)]))
    tgt = listing(ds("backup/data", [(N1, "g1", 5), (N2, "g2-old", 6)], RO))
    (d,) = plan(task("source", allow_rollback=True), src, tgt).datasets
    assert d.action == "incremental" and d.base == N1
    assert d.destroy_before == [N2] and d.destroy_guids == {N2: "g2-old"}
    assert d.rollback is True
    assert [(s.mode, s.base, s.snapshot, s.force) for s in d.sends] == [("I", N1, N3, False)]
    # The N2 that arrives has the source's guid: retention keeps it, and nothing is destroyed twice.
    assert d.destroy_after == []


def test_from_scratch_over_an_unrelated_target_with_the_same_names_keeps_what_it_receives():
    src = listing(ds("tank/data", [(N1, "g1", 10), (N2, "g2", 20)]))
    tgt = listing(ds("backup/data", [(N1, "x1", 5), (N2, "x2", 6)], RO))
    (d,) = plan(task("source", allow_from_scratch=True), src, tgt).datasets
    assert d.action == "full" and d.destroy_before == [N1, N2]
    assert d.destroy_guids == {N1: "x1", N2: "x2"}
    assert d.sends[0].force is True and d.sends[0].mode == "full"
    assert d.destroy_after == []
    assert set(d.destroy_before).isdisjoint(n for n, _why in d.destroy_after)


def test_base_with_another_name_on_the_target_is_protected_by_guid():
    # The common snapshot was renamed on the target; it is the only common one and long expired by name.
    old = "auto-2026-01-01_00-00"
    src = listing(ds("tank/data", [(N1, "g1", 10)]))
    tgt = listing(ds("backup/data", [(old, "g1", 5)], RO))
    (d,) = plan(task("custom", days=7, hold_base=False), src, tgt).datasets
    assert d.action == "in_sync" and d.base == N1
    assert d.destroy_after == []


def test_expired_target_snapshots_still_go_and_the_newest_common_stays():
    src = listing(ds("tank/data", [(N1, "g1", 10), (N2, "g2", 20), (N3, "g3", 30)]))
    tgt = listing(ds("backup/data", [(N1, "g1", 5), (N2, "g2", 6), (N3, "g3", 7)], RO))
    (d,) = plan(task("custom", days=7, hold_base=False), src, tgt).datasets
    # All three expired by the 1 December run; the newest common (N3) stays.
    assert [n for n, _why in d.destroy_after] == [N1, N2]


def test_source_retention_destroys_what_left_the_source_but_not_what_has_its_guid():
    src = listing(ds("tank/data", [(N2, "g2", 20), (N3, "g3", 30)]))
    tgt = listing(ds("backup/data", [(N1, "g1", 5), (N2, "g2", 6)], RO))
    (d,) = plan(task("source"), src, tgt).datasets
    assert d.action == "incremental" and [s.snapshot for s in d.sends] == [N3]
    assert d.destroy_after == [(N1, "no longer on the source (retention_policy=source)")]


def test_a_target_that_shares_no_guid_is_never_pruned():
    src = ds("tank/data", [(N1, "g1", 10)])
    after = [Snapshot("backup/data", N1, "other", 5)]
    assert target_retention(task("source"), src, after) == []
    assert target_retention(task("custom", days=1), src, after) == []


def test_held_snapshots_stay_but_our_moved_hold_does_not_keep_the_old_base():
    src = ds("tank/data", [(N1, "g1", 10), (N2, "g2", 20), (N3, "g3", 30)])
    snaps = [Snapshot("backup/data", N1, "g1", 5, 1), Snapshot("backup/data", N2, "g2", 6, 1), Snapshot("backup/data", N3, "g3", 7)]
    t = task("custom", days=7)
    assert target_retention(t, src, snaps) == []  # both held (by anyone)
    assert [n for n, _why in target_retention(t, src, snaps, released="g2")] == [N2]


def test_allow_rollback_adds_no_recv_force_and_rolls_back_only_when_the_target_changed():
    src = listing(ds("tank/data", [(N1, "g1", 10), (N2, "g2", 20)]))
    clean = listing(ds("backup/data", [(N1, "g1", 5)], {**RO, "written": "0"}))
    (d,) = plan(task(allow_rollback=True), src, clean).datasets
    assert d.rollback is False and not any(s.force for s in d.sends)
    written = listing(ds("backup/data", [(N1, "g1", 5)], {**RO, "written": "12288"}))
    (d,) = plan(task(allow_rollback=True), src, written).datasets
    assert d.rollback is True and not any(s.force for s in d.sends) and d.destroy_before == []
    unknown = listing(ds("backup/data", [(N1, "g1", 5)], RO))  # older command lines have no `written`
    (d,) = plan(task(allow_rollback=True), src, unknown).datasets
    assert d.rollback is True and not any(s.force for s in d.sends)
    # Without allow_rollback nothing is rolled back, whatever `written` says.
    (d,) = plan(task(), src, written).datasets
    assert d.rollback is False and not any(s.force for s in d.sends)


def test_replicate_from_scratch_lists_the_target_tree_recv_force_replaces():
    src = listing(ds("tank/data", [(N1, "g1", 10)]), ds("tank/data/a", [(N1, "ga", 10)]))
    tgt = listing(ds("backup/data", [(N1, "x1", 5)], RO), ds("backup/data/a", []), ds("backup/data/old", [(N1, "xo", 5)]))
    (d,) = plan(task(allow_from_scratch=True, replicate=True, recursive=True), src, tgt).datasets
    assert d.sends[0].force is True and d.sends[0].replicate is True
    assert d.force_destroys == ["backup/data/a", "backup/data/old"]


def test_replicate_incremental_with_allow_rollback_never_uses_force():
    src = listing(ds("tank/data", [(N1, "g1", 10), (N2, "g2", 20)]), ds("tank/data/a", [(N1, "ga1", 10), (N2, "ga2", 20)]))
    tgt = listing(ds("backup/data", [(N1, "g1", 5)], {**RO, "written": "0"}), ds("backup/data/gone", [(N1, "xo", 5)]))
    (d,) = plan(task(allow_rollback=True, replicate=True, recursive=True), src, tgt).datasets
    assert [(s.mode, s.replicate, s.force) for s in d.sends] == [("I", True, False)]
    assert d.force_destroys == [] and d.rollback is False


def test_projected_target_is_before_minus_destroyed_plus_sent_with_source_guids():
    src = listing(ds("tank/data", [(N1, "g1", 10), (N2, "g2-new", 30), (N3, "g3", 40)]))
    tgt = listing(ds("backup/data", [(N1, "g1", 5), (N2, "g2-old", 6)], RO))
    (d,) = plan(task(allow_rollback=True), src, tgt).datasets
    after = projected_target(d, src.datasets["tank/data"], tgt.datasets["backup/data"])
    assert [(s.name, s.guid) for s in after] == [(N1, "g1"), (N2, "g2-new"), (N3, "g3")]
    assert [s.createtxg for s in after] == sorted(s.createtxg for s in after)
