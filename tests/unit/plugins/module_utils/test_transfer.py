# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Transfer.run_all: datasets in parallel, bounded, each after its parent unless both only add to existing targets (the
scheduling logic alone)."""
from __future__ import annotations

import contextlib
import dataclasses
import threading

import pytest

from ansible_collections.zfs.replication.plugins.module_utils._first_full import FirstFulls
from ansible_collections.zfs.replication.plugins.module_utils._holds import Holds, hold_tag
from ansible_collections.zfs.replication.plugins.module_utils._planner import DatasetPlan, Send
from ansible_collections.zfs.replication.plugins.module_utils._received_props import LocalProps
from ansible_collections.zfs.replication.plugins.module_utils._replication import DatasetResult
from ansible_collections.zfs.replication.plugins.module_utils._replication_task import ReplicationTask, TaskError
from ansible_collections.zfs.replication.plugins.module_utils._streams import Streams
from ansible_collections.zfs.replication.plugins.module_utils._target_changes import TargetChanges
from ansible_collections.zfs.replication.plugins.module_utils._target_keys import TargetKeys
from ansible_collections.zfs.replication.plugins.module_utils._transfer import Transfer
from ansible_collections.zfs.replication.plugins.module_utils._transport import LocalHost
from ansible_collections.zfs.replication.plugins.module_utils._zfs import LEGACY, Dataset, Listing, Snapshot, parse_version_output


def quiet(_line: str) -> None:
    pass


class TimedTransfer(Transfer):
    """execute_dataset fails for the names in `fail` and records, in one sequence, when each dataset started and
    ended (counted events, not clock readings). The first `meet` datasets to start wait for each other at a
    barrier: they can only all get through if the runner really runs that many at once."""

    def __init__(self, parallel: int | None, fail: set[str] = frozenset(), meet: int = 0, target: Listing | None = None, **extra):
        task = ReplicationTask.from_params(
            dict({"name": "t", "source_datasets": ["p/a"], "target_dataset": "q/a", "transport": "local",
                  "naming_schema": ["auto-%Y-%m-%d_%H-%M"], "parallel_transfers": parallel}, **extra)
        )
        host = LocalHost()
        super().__init__(task, Streams(task, host, host, None, None, None, target), TargetKeys(task, host, [task.target_dataset], quiet),
                         FirstFulls(None, task.name, quiet), TargetChanges(host, None, Holds(hold_tag(task.name), host, host, quiet), quiet),
                         quiet, lambda _s: None)
        self.fail = fail
        self.events: list[tuple[str, str]] = []
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()
        self.meet = meet
        self.barrier = threading.Barrier(meet) if meet else None
        self.met = 0
        self.barrier_includes_root = False  # the root runs alone first unless it need not be waited for

    def execute_dataset(self, dplan, res, errors):  # type: ignore[no-untyped-def,override]
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.events.append(("start", dplan.source))
            at_barrier = self.barrier is not None and (dplan.source != "p/a" or self.barrier_includes_root) and self.met < self.meet
            self.met += at_barrier
        if at_barrier:
            # A runner that runs fewer than `meet` at once leaves the barrier short: it breaks after the
            # timeout (a bound on a hang, not a measurement) and `most` tells by how many.
            with contextlib.suppress(threading.BrokenBarrierError):
                self.barrier.wait(timeout=30)
        with self.lock:
            self.running -= 1
            self.events.append(("end", dplan.source))
        res.bytes = 4096  # what pv counted: a small stream
        if dplan.source in self.fail:
            res.error = f"{dplan.source}: failed"
            errors.append(res.error)
            return False
        return True

    def started(self) -> list[str]:
        return [ds for kind, ds in self.events if kind == "start"]

    def when(self, kind: str, ds: str) -> int:
        return self.events.index((kind, ds))


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
    r = TimedTransfer(parallel=4, meet=4)
    plans, results = work(TREE)
    errors: list[str] = []
    done = r.run_all(plans, results, errors)
    assert [d.source for d in done] == list(TREE) and errors == []
    for child in TREE:
        parent = child.rsplit("/", 1)[0]
        if parent in TREE:
            assert r.when("start", child) > r.when("end", parent), f"{child} started before {parent} finished"
    assert r.most == 4 and not r.barrier.broken  # eight siblings, four at a time, never more


def existing(tree) -> Listing:
    """The target listing of a tree whose every target exists with the base s1 (a catch-up's)."""
    return Listing("q/a", {"q" + src[1:]: Dataset("q" + src[1:], "filesystem", snapshots=[Snapshot("q" + src[1:], "s1", "g", 1)])
                           for src in tree})


@pytest.mark.parametrize("retention", [False, True], ids=["kept", "pruned-after"])
def test_a_catch_up_into_existing_targets_starts_as_wide_as_allowed_without_waiting_for_parents(retention):
    """Every dataset only adds to its existing target: the root and its children start together (four meet at a
    barrier that the root is part of), and a grandchild need not wait for its parent either. Target retention due
    after the run (destroy_after) is not the transfer's and changes nothing here."""
    r = TimedTransfer(parallel=4, meet=4, target=existing(TREE))
    r.barrier_includes_root = True
    plans, results = work(TREE)
    if retention:
        plans = [dataclasses.replace(d, destroy_after=[("s0", "expired")]) for d in plans]
    errors: list[str] = []
    assert [d.source for d in r.run_all(plans, results, errors)] == list(TREE) and errors == []
    assert r.started()[:4] == ["p/a", "p/a/c0", "p/a/c1", "p/a/c2"] and r.when("start", "p/a/c2") < r.when("end", "p/a")
    assert r.most == 4 and not r.barrier.broken


@pytest.mark.parametrize("change", ["rollback", "full", "missing"])
def test_a_child_waits_for_a_parent_that_does_more_than_add_to_its_existing_target(change):
    """A parent rolled back, sent in full, or whose target this run did not list: its children wait for it, as does
    the grandchild below them (the whole line above a dataset must only add for it to go first)."""
    plans, results = work(TREE)
    root = plans[0]
    if change == "rollback":
        plans[0] = dataclasses.replace(root, rollback=True)
    elif change == "full":
        plans[0] = dataclasses.replace(root, sends=[Send("p/a", "q/a", "full", "s2", None, ["s2"], force=True)])
    listed = existing([src for src in TREE if change != "missing" or src != "p/a"])
    r = TimedTransfer(parallel=4, target=listed)
    assert [d.source for d in r.run_all(plans, results, [])] == list(TREE)
    for child in TREE:
        if child != "p/a":
            assert r.when("start", child) > r.when("end", "p/a"), f"{child} started before p/a finished ({change})"


def test_one_at_a_time_runs_in_plan_order():
    r = TimedTransfer(parallel=1)
    plans, results = work(TREE)
    r.run_all(plans, results, [])
    assert r.started() == list(TREE) and r.most == 1
    assert r.events == [(kind, ds) for ds in TREE for kind in ("start", "end")]  # each ends before the next starts


def test_a_failed_first_transfer_skips_everything_below_it_and_a_failed_incremental_skips_nothing():
    tree = {"p/a": "incremental", "p/a/new": "full", "p/a/new/x": "full", "p/a/new/x/y": "full", "p/a/old": "incremental",
            "p/a/old/z": "incremental", "p/a/ok": "incremental"}
    r = TimedTransfer(parallel=3, fail={"p/a/new", "p/a/old"})
    plans, results = work(tree)
    errors: list[str] = []
    done = r.run_all(plans, results, errors)
    assert [d.source for d in done] == ["p/a", "p/a/old/z", "p/a/ok"]
    assert set(r.started()) == {"p/a", "p/a/new", "p/a/old", "p/a/old/z", "p/a/ok"}  # the lost subtree never ran
    assert results["q/a/new/x"].error == "p/a/new/x: skipped because a parent failed"
    assert results["q/a/new/x/y"].error == "p/a/new/x/y: skipped because a parent failed"
    assert sorted(errors) == sorted(["p/a/new: failed", "p/a/old: failed", "p/a/new/x: skipped because a parent failed",
                                     "p/a/new/x/y: skipped because a parent failed"])


def test_an_unexpected_error_in_a_transfer_is_the_runs_error():
    class Boom(TimedTransfer):
        def execute_dataset(self, dplan, res, errors):  # type: ignore[no-untyped-def,override]
            if dplan.source == "p/a/c3":
                raise RuntimeError("unexpected")
            return super().execute_dataset(dplan, res, errors)

    plans, results = work(TREE)
    with pytest.raises(RuntimeError, match="unexpected"):
        Boom(parallel=4).run_all(plans, results, [])


def test_netcat_goes_one_at_a_time_and_the_bound_is_validated():
    r = TimedTransfer(parallel=4)
    assert r.admission().workers == 4
    r.task.transport = "ssh+netcat"
    assert r.admission().workers == 1
    for bad in (0, 9):
        with pytest.raises(TaskError, match=f"parallel_transfers {bad}: use 1 .* to 8"):
            TimedTransfer(parallel=bad)


def test_unset_runs_eight_at_once_once_streams_prove_small():
    """Auto: the root's stream ends small, then eight siblings meet at a barrier: only a runner that admits eight
    at once lets them through."""
    r = TimedTransfer(parallel=None, meet=8)
    lines: list[str] = []
    r.log = lines.append
    plans, results = work(TREE)
    done = r.run_all(plans, results, [])
    assert [d.source for d in done] == list(TREE)
    assert r.most == 8 and not r.barrier.broken
    assert lines == ["  streams are small (under 64 MiB each): up to 8 datasets at once"]


@pytest.mark.parametrize("legacy_side", ["source", "target"])
def test_unset_does_not_widen_when_a_side_runs_a_legacy_zfs(legacy_side):
    """zfs-fuse does all of its host's zfs work in one daemon, already busy at four receives: auto stays at four."""
    r = TimedTransfer(parallel=None)
    modern = parse_version_output("zfs-2.3.2-1\nzfs-kmod-2.3.2-1\n")
    assert r.admission().workers == 8  # sides unknown (not probed): as on OpenZFS

    def sides(src, dst):  # type: ignore[no-untyped-def]
        r.streams = dataclasses.replace(r.streams, src_caps=src, dst_caps=dst)
        return r.admission().workers

    assert sides(*((LEGACY, modern) if legacy_side == "source" else (modern, LEGACY))) == 4
    assert sides(modern, modern) == 8
    r.task.parallel_transfers = 6
    assert sides(LEGACY, LEGACY) == 6  # a number set is the user's: kept


def test_a_number_set_is_never_exceeded_even_when_transfers_are_short():
    r = TimedTransfer(parallel=4, meet=4)
    plans, results = work(TREE)
    r.run_all(plans, results, [])
    assert r.most == 4 and not r.barrier.broken  # the root ended at once, and still four, never more


def test_a_legacy_targets_batch_read_of_local_properties_runs_beside_the_first_transfers():
    """zfs-fuse (no recv -o/-x): the source's local properties are copied after each receive. Their batch read (one zfs
    get per side) runs while the first transfers do; a copy waits for it. The read below finishes only once a transfer
    has started: a runner that read first, then transferred, would fail it."""
    transferring = threading.Event()
    seen: list[bool] = []

    class SlowProps(LocalProps):
        def prefetch(self, side, host, names):  # type: ignore[no-untyped-def]
            seen.append(transferring.wait(timeout=30))
            with self._lock:
                self._known.update({(side, n): {"from": side} for n in names})

    class Copying(TimedTransfer):
        def execute_dataset(self, dplan, res, errors):  # type: ignore[no-untyped-def,override]
            transferring.set()
            ok = super().execute_dataset(dplan, res, errors)
            copied[dplan.source] = self.local_props.get("source", self.streams.src, dplan.source)
            return ok

    copied: dict[str, dict[str, str]] = {}
    r = Copying(parallel=None)
    r.streams = dataclasses.replace(r.streams, src_caps=LEGACY, dst_caps=LEGACY)
    r.local_props = SlowProps()
    plans, results = work(TREE)
    done = r.run_all(plans, results, [])
    assert [d.source for d in done] == list(TREE)
    assert seen == [True, True]  # both sides' reads ran while a transfer did
    assert copied == {src: {"from": "source"} for src in TREE}  # every copy got the batch's values, none read its own


def test_an_unexpected_error_in_the_batch_read_is_the_runs_error():
    class Broken(LocalProps):
        def prefetch(self, side, host, names):  # type: ignore[no-untyped-def]
            raise RuntimeError("unexpected")

    r = TimedTransfer(parallel=None)
    r.streams = dataclasses.replace(r.streams, src_caps=LEGACY, dst_caps=LEGACY)
    r.local_props = Broken()
    plans, results = work(TREE)
    with pytest.raises(RuntimeError, match="unexpected"):
        r.run_all(plans, results, [])
