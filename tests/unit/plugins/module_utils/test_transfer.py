# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Runner.transfer: datasets in parallel, bounded, each after its parent (the scheduling logic alone)."""
from __future__ import annotations

import threading
import time

import pytest

from ansible_collections.zfs.replication.plugins.module_utils._planner import DatasetPlan, Send
from ansible_collections.zfs.replication.plugins.module_utils._replication import DatasetResult, Runner
from ansible_collections.zfs.replication.plugins.module_utils._replication_task import ReplicationTask, TaskError


class TimedRunner(Runner):
    """execute_dataset takes `pause` seconds, fails for the names in `fail`, and records when it ran."""

    def __init__(self, parallel: int, fail: set[str] = frozenset(), pause: float = 0.05, **extra):
        task = ReplicationTask.from_params(
            dict({"name": "t", "source_datasets": ["p/a"], "target_dataset": "q/a", "transport": "local",
                  "naming_schema": ["auto-%Y-%m-%d_%H-%M"], "parallel_transfers": parallel}, **extra)
        )
        super().__init__(task)
        self.fail, self.pause = fail, pause
        self.spans: dict[str, tuple[float, float]] = {}
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def execute_dataset(self, dplan, res, errors):  # type: ignore[no-untyped-def,override]
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        start = time.monotonic()
        time.sleep(self.pause)
        with self.lock:
            self.running -= 1
        self.spans[dplan.source] = (start, time.monotonic())
        if dplan.source in self.fail:
            res.error = f"{dplan.source}: failed"
            errors.append(res.error)
            return False
        return True


def work(tree: dict[str, str]) -> tuple[list[DatasetPlan], dict[str, DatasetResult]]:
    """Plans (parents first, as the planner lists them) for {source: action}."""
    plans = []
    for src, action in tree.items():
        tgt = "q" + src[1:]
        mode = "full" if action == "full" else "I"
        plans.append(DatasetPlan(src, tgt, action, None if mode == "full" else "s1", [Send(src, tgt, mode, "s2", None if mode == "full" else "s1", ["s2"])]))
    return plans, {d.target: DatasetResult(d.source, d.target, d.action, d.base) for d in plans}


TREE = {"p/a": "incremental", **{f"p/a/c{i}": "incremental" for i in range(8)}, "p/a/c0/g": "incremental"}


def test_children_start_after_their_parent_and_siblings_overlap_up_to_the_bound():
    r = TimedRunner(parallel=4)
    plans, results = work(TREE)
    errors: list[str] = []
    done = r.transfer(plans, results, errors)
    assert [d.source for d in done] == list(TREE) and errors == []
    for child in TREE:
        parent = child.rsplit("/", 1)[0]
        if parent in r.spans:
            assert r.spans[child][0] >= r.spans[parent][1], f"{child} started before {parent} finished"
    assert r.most == 4  # eight siblings, four at a time


def test_one_at_a_time_runs_in_plan_order():
    r = TimedRunner(parallel=1, pause=0.01)
    plans, results = work(TREE)
    r.transfer(plans, results, [])
    starts = sorted(r.spans, key=lambda s: r.spans[s][0])
    assert starts == list(TREE) and r.most == 1


def test_a_failed_first_transfer_skips_everything_below_it_and_a_failed_incremental_skips_nothing():
    tree = {"p/a": "incremental", "p/a/new": "full", "p/a/new/x": "full", "p/a/new/x/y": "full", "p/a/old": "incremental",
            "p/a/old/z": "incremental", "p/a/ok": "incremental"}
    r = TimedRunner(parallel=3, fail={"p/a/new", "p/a/old"}, pause=0.01)
    plans, results = work(tree)
    errors: list[str] = []
    done = r.transfer(plans, results, errors)
    assert [d.source for d in done] == ["p/a", "p/a/old/z", "p/a/ok"]
    assert set(r.spans) == {"p/a", "p/a/new", "p/a/old", "p/a/old/z", "p/a/ok"}  # the lost subtree never ran
    assert results["q/a/new/x"].error == "p/a/new/x: skipped because a parent failed"
    assert results["q/a/new/x/y"].error == "p/a/new/x/y: skipped because a parent failed"
    assert sorted(errors) == sorted(["p/a/new: failed", "p/a/old: failed", "p/a/new/x: skipped because a parent failed",
                                     "p/a/new/x/y: skipped because a parent failed"])


def test_an_unexpected_error_in_a_transfer_is_the_runs_error():
    class Boom(TimedRunner):
        def execute_dataset(self, dplan, res, errors):  # type: ignore[no-untyped-def,override]
            if dplan.source == "p/a/c3":
                raise RuntimeError("unexpected")
            return super().execute_dataset(dplan, res, errors)

    plans, results = work(TREE)
    with pytest.raises(RuntimeError, match="unexpected"):
        Boom(parallel=4, pause=0.01).transfer(plans, results, [])


def test_netcat_goes_one_at_a_time_and_the_bound_is_validated():
    r = TimedRunner(parallel=4, pause=0.0)
    assert r.workers == 4
    r.task.transport = "ssh+netcat"
    assert r.workers == 1
    for bad in (0, 9):
        with pytest.raises(TaskError, match=f"parallel_transfers {bad}: use 1 .* to 8"):
            TimedRunner(parallel=bad)
