# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import re

import pytest

from ansible_collections.zfs.replication.plugins.module_utils._naming import NamingSchema
from ansible_collections.zfs.replication.plugins.module_utils._planner import PlanError, PlanTask, Selection, plan
from ansible_collections.zfs.replication.plugins.module_utils._zfs import Dataset, Listing, Snapshot

AUTO = Selection(naming_schemas=[NamingSchema("auto-%Y-%m-%d_%H-%M")])


def snap(ds: str, name: str, guid: str, txg: int) -> Snapshot:
    return Snapshot(ds, name, guid, txg)


def listing(root: str, spec: dict[str, list[tuple[str, str, int]]], props: dict[str, dict[str, str]] | None = None) -> Listing:
    datasets = {}
    for name, snaps in spec.items():
        datasets[name] = Dataset(name, "filesystem", props=(props or {}).get(name, {}), snapshots=[snap(name, n, g, t) for n, g, t in snaps])
    return Listing(root, datasets)


def task(**kw) -> PlanTask:
    kw.setdefault("sources", ["tank/data"])
    kw.setdefault("target", "backup/data")
    kw.setdefault("selection", AUTO)
    return PlanTask(**kw)


S1 = ("auto-2026-11-01_00-00", "g1", 10)
S2 = ("auto-2026-11-02_00-00", "g2", 20)
M = ("manual", "gm", 25)
S3 = ("auto-2026-11-03_00-00", "g3", 30)


def test_first_run_is_full_of_oldest_then_one_incremental_stream():
    src = listing("tank/data", {"tank/data": [S1, S2, S3]})
    p = plan(task(), src, None)
    (d,) = p.datasets
    assert d.action == "full"
    assert [(s.mode, s.base, s.snapshot, s.snapshots) for s in d.sends] == [
        ("full", None, S1[0], [S1[0]]),
        ("I", S1[0], S3[0], [S2[0], S3[0]]),
    ]
    assert p.set_readonly == ["backup/data"]


def test_unselected_snapshot_in_between_gives_i_chain():
    src = listing("tank/data", {"tank/data": [S1, S2, M, S3]})
    tgt = listing("backup/data", {"backup/data": [S1]}, {"backup/data": {"readonly": "on"}})
    (d,) = plan(task(), src, tgt).datasets
    assert d.action == "incremental" and d.base == S1[0]
    assert [(s.mode, s.base, s.snapshot) for s in d.sends] == [("i", S1[0], S2[0]), ("i", S2[0], S3[0])]
    assert d.pending == [S2[0], S3[0]]


def test_base_is_chosen_by_guid_not_by_name():
    # The target has a snapshot named like S2 but with another guid: only S1 is common.
    src = listing("tank/data", {"tank/data": [S1, S2]})
    tgt = listing("backup/data", {"backup/data": [S1, (S2[0], "other", 21)]}, {"backup/data": {"readonly": "on"}})
    (d,) = plan(task(), src, tgt).datasets
    assert d.action == "refused"
    assert "diverged" in d.message and S2[0] in d.message
    assert d.sends == []


def test_in_sync_plans_nothing():
    src = listing("tank/data", {"tank/data": [S1, S2]})
    tgt = listing("backup/data", {"backup/data": [S1, S2]}, {"backup/data": {"readonly": "on"}})
    p = plan(task(), src, tgt)
    assert [d.action for d in p.datasets] == ["in_sync"]
    assert not p.has_work


def test_readonly_set_on_existing_target_is_work_once():
    src = listing("tank/data", {"tank/data": [S1]})
    tgt = listing("backup/data", {"backup/data": [S1]}, {"backup/data": {"readonly": "off"}})
    p = plan(task(), src, tgt)
    assert p.set_readonly == ["backup/data"] and p.has_work
    assert not plan(task(readonly="ignore"), src, tgt).has_work


def test_readonly_require_refuses_writable_target():
    src = listing("tank/data", {"tank/data": [S1, S2]})
    tgt = listing("backup/data", {"backup/data": [S1]}, {"backup/data": {"readonly": "off"}})
    (d,) = plan(task(readonly="require"), src, tgt).datasets
    assert d.action == "refused" and "readonly=require" in d.message and d.sends == []


def test_unrelated_target_is_refused():
    src = listing("tank/data", {"tank/data": [S1]})
    tgt = listing("backup/data", {"backup/data": [("auto-2026-10-01_00-00", "gx", 5)]})
    (d,) = plan(task(), src, tgt).datasets
    assert d.action == "refused" and "unrelated" in d.message and "allow_from_scratch" in d.message


def test_existing_target_without_snapshots_is_refused():
    src = listing("tank/data", {"tank/data": [S1]})
    tgt = listing("backup/data", {"backup/data": []})
    (d,) = plan(task(), src, tgt).datasets
    assert d.action == "refused" and "no snapshots" in d.message


def test_target_pruned_older_snapshots_is_fine():
    # The source pruned S1; the target still has it. Base is S2, S3 pending.
    src = listing("tank/data", {"tank/data": [S2, S3]})
    tgt = listing("backup/data", {"backup/data": [S1, S2]}, {"backup/data": {"readonly": "on"}})
    (d,) = plan(task(), src, tgt).datasets
    assert (d.action, d.base, [s.mode for s in d.sends]) == ("incremental", S2[0], ["I"])


def test_base_may_be_an_unselected_snapshot():
    src = listing("tank/data", {"tank/data": [S1, M, S3]})
    tgt = listing("backup/data", {"backup/data": [S1, M]}, {"backup/data": {"readonly": "on"}})
    (d,) = plan(task(), src, tgt).datasets
    assert d.base == "manual" and [(s.mode, s.base, s.snapshot) for s in d.sends] == [("I", "manual", S3[0])]


def test_recursive_exclude_and_child_mapping():
    src = listing(
        "tank/data",
        {"tank/data": [S1], "tank/data/a": [S1], "tank/data/scratch": [S1], "tank/data/scratch/deep": [S1]},
    )
    p = plan(task(recursive=True, exclude=["tank/data/scratch"]), src, None)
    assert [(d.source, d.target) for d in p.datasets] == [("tank/data", "backup/data"), ("tank/data/a", "backup/data/a")]


def test_several_sources_land_below_target_and_root_is_created():
    src = listing("tank/a", {"tank/a": [S1], "pool2/b": [S1]})
    p = plan(task(sources=["tank/a", "pool2/b"]), src, None)
    assert [d.target for d in p.datasets] == ["backup/data/a", "backup/data/b"]
    assert p.create_target_root


def test_child_of_refused_new_dataset_is_skipped():
    src = listing("tank/data", {"tank/data": [("other", "x", 1)], "tank/data/a": [S1]})
    p = plan(task(recursive=True), src, None)
    assert [(d.source, d.action) for d in p.datasets] == [("tank/data", "no_snapshots"), ("tank/data/a", "refused")]


def test_zvol_target_for_filesystem_is_refused():
    src = listing("tank/data", {"tank/data": [S1]})
    tgt = Listing("backup/data", {"backup/data": Dataset("backup/data", "volume", snapshots=[snap("backup/data", *S1)])})
    (d,) = plan(task(), src, tgt).datasets
    assert d.action == "refused" and "volume" in d.message


def test_missing_source_root_raises():
    with pytest.raises(PlanError, match="source_datasets: tank/data does not exist"):
        plan(task(), Listing("tank/data", {}), None)


def test_name_regex_selection():
    sel = Selection(name_regex=re.compile(r"manual"))
    src = listing("tank/data", {"tank/data": [S1, M]})
    (d,) = plan(task(selection=sel), src, None).datasets
    assert [s.snapshot for s in d.sends] == ["manual"]
