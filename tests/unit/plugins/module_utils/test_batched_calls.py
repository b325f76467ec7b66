# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""zfs calls a catch-up makes once per run rather than per dataset: the local properties older targets need copied
(LocalProps), the move of the task's hold on both sides (Holds.move), with the order that keeps a held common
snapshot on each side when one side refuses, and the read of what arrived for verification (_verify.list_received).
Pure logic over a host that answers from a table and records each argv; the real outcomes run on zfs-fuse
(tests/reliability/test_received_properties_legacy.py, the fault suite) and OpenZFS (tests/openzfs)."""
from __future__ import annotations

import subprocess
import threading
from collections.abc import Sequence
from types import SimpleNamespace

import pytest

from ansible_collections.zfs.replication.plugins.module_utils._holds import Holds, recursive_roots
from ansible_collections.zfs.replication.plugins.module_utils._planner import DatasetPlan, Plan, PlanTask, Send
from ansible_collections.zfs.replication.plugins.module_utils._received_props import LocalProps
from ansible_collections.zfs.replication.plugins.module_utils._replication import Prepared, Runner
from ansible_collections.zfs.replication.plugins.module_utils._replication_task import ReplicationTask
from ansible_collections.zfs.replication.plugins.module_utils._results import DatasetResult, snapshot_names
from ansible_collections.zfs.replication.plugins.module_utils._transport import Host, TransportError
from ansible_collections.zfs.replication.plugins.module_utils._verify import list_received, only_adds, verify
from ansible_collections.zfs.replication.plugins.module_utils._zfs import ARGV_BYTES, Dataset, Listing, Snapshot


class Recorder(Host):
    """A host whose zfs answers from LOCAL ({dataset: {prop: value}}); REFUSE: verbs that fail."""

    def __init__(self, label: str, local: dict[str, dict[str, str]] | None = None, refuse: Sequence[str] = ()) -> None:
        self.label = label
        self.local = local or {}
        self.refuse = set(refuse)
        self.calls: list[list[str]] = []
        self.lock = threading.Lock()

    def run(self, argv: Sequence[str], check: bool = True, input_text: str | None = None) -> subprocess.CompletedProcess:
        argv = list(argv)
        with self.lock:
            self.calls.append(argv)
        if argv[1] in self.refuse:
            rc, out, err = 1, "", f"cannot {argv[1]}: permission denied"
        elif argv[1] == "get":
            names = argv[argv.index("all") + 1:]
            missing = [n for n in names if n not in self.local]
            out = "".join(f"{n}\t{p}\t{v}\n" for n in names if n in self.local for p, v in self.local[n].items())
            rc, err = (1, "".join(f"cannot open '{n}': dataset does not exist\n" for n in missing)) if missing else (0, "")
        else:
            rc, out, err = 0, "", ""
        if check and rc:
            raise TransportError(err, argv, rc, err)
        return subprocess.CompletedProcess(argv, rc, out, err)


def test_local_properties_of_many_datasets_cost_one_call_per_side_per_batch():
    names = [f"p/a/d{i:03d}" for i in range(450)]
    src = Recorder("src", {n: ({"compression": "lz4"} if i % 2 else {}) for i, n in enumerate(names)})
    local = LocalProps()
    local.prefetch("source", src, names)
    assert len(src.calls) == 3  # 200 + 200 + 50
    assert all(len(c) - c.index("all") - 1 <= LocalProps.BATCH for c in src.calls)
    assert local.get("source", src, "p/a/d001") == {"compression": "lz4"}
    assert local.get("source", src, "p/a/d002") == {}  # listed without local properties: known, no call of its own
    assert len(src.calls) == 3


def test_a_failed_batch_keeps_what_it_printed_and_the_rest_is_read_one_by_one():
    src = Recorder("src", {"p/a": {"atime": "off"}, "p/a/b": {}})
    local = LocalProps()
    local.prefetch("source", src, ["p/a", "p/a/b", "p/a/gone"])
    assert local.get("source", src, "p/a") == {"atime": "off"}  # printed by the failed batch: kept
    assert len(src.calls) == 1
    assert local.get("source", src, "p/a/b") == {}  # not printed (no local properties, or failed): read again
    assert src.calls[-1][-1] == "p/a/b" and len(src.calls) == 2
    with pytest.raises(TransportError, match="does not exist"):  # a single read that fails is the transfer's error
        local.get("source", src, "p/a/gone")


def plans(n: int) -> list[DatasetPlan]:
    return [DatasetPlan(f"p/a/d{i}", f"q/a/d{i}", "incremental", base="s1", sends=[Send(f"p/a/d{i}", f"q/a/d{i}", "I", "s2", "s1", ["s2"])])
            for i in range(n)]


def test_the_hold_moves_on_both_sides_in_one_hold_and_one_release_each():
    src, dst = Recorder("src"), Recorder("dst")
    Holds("zfs.replication:t", src, dst, lambda _line: None).move(plans(3), None, None)
    for host, root in ((src, "p/a"), (dst, "q/a")):
        assert [c[1] for c in host.calls] == ["hold", "release"]
        assert host.calls[0][3:] == [f"{root}/d{i}@s2" for i in range(3)]
        assert host.calls[1][3:] == [f"{root}/d{i}@s1" for i in range(3)]


def test_the_hold_of_a_large_fleet_moves_in_calls_that_fit_one_ssh_command_line():
    src, dst = Recorder("src"), Recorder("dst")
    many = [DatasetPlan(f"p/a/{'long-name-' * 12}{i:05d}", f"q/a/{'long-name-' * 12}{i:05d}", "incremental", base="s1",
                        sends=[Send("x", "y", "I", "s2", "s1", ["s2"])]) for i in range(3000)]
    Holds("zfs.replication:t", src, dst, lambda _line: None).move(many, None, None)
    for host, root in ((src, "p/a"), (dst, "q/a")):
        holds = [c[3:] for c in host.calls if c[1] == "hold"]
        releases = [c[3:] for c in host.calls if c[1] == "release"]
        assert 1 < len(holds) <= 8 and 1 < len(releases) <= 8  # ~400 KB of names per verb: a few calls, not 3000
        assert all(sum(len(n) + 1 for n in names) <= ARGV_BYTES for names in holds + releases)
        assert [n for names in holds for n in names] == [f"{d.source if root == 'p/a' else d.target}@s2" for d in many]
        assert host.calls.index(next(c for c in host.calls if c[1] == "release")) > max(
            i for i, c in enumerate(host.calls) if c[1] == "hold")  # every hold before the first release


@pytest.mark.parametrize("refusing", ["src", "dst"])
def test_a_side_that_cannot_take_the_new_hold_leaves_both_old_bases_held(refusing):
    src = Recorder("src", refuse=["hold"] if refusing == "src" else [])
    dst = Recorder("dst", refuse=["hold"] if refusing == "dst" else [])
    with pytest.raises(TransportError, match="zfs hold"):
        Holds("zfs.replication:t", src, dst, lambda _line: None).move(plans(2), None, None)
    for host in (src, dst):
        assert "release" not in [c[1] for c in host.calls], host.calls
        assert host.calls[0][1] == "hold"


def held_tree(root: str, snaps: dict[str, dict[str, int]]) -> Listing:
    """A listing of ROOT's tree: {dataset below ROOT ('' for ROOT): {snapshot name: userrefs}}."""
    return Listing(root, {(f"{root}/{d}" if d else root): Dataset(f"{root}/{d}" if d else root, "filesystem", snapshots=[
        Snapshot(f"{root}/{d}" if d else root, n, f"g-{d}-{n}", i + 1, refs) for i, (n, refs) in enumerate(names.items())])
        for d, names in snaps.items()})


KIDS = ["", "a", "a/deep", "b", "c"]


def test_a_catch_up_of_a_tree_moves_the_hold_in_one_recursive_hold_and_release_per_side():
    """Every dataset moves from s1 to s2: the tops carry -r and stand for the lot (one txg sync per side and verb)."""
    moved = [DatasetPlan(f"p/a/{d}".rstrip("/"), f"q/a/{d}".rstrip("/"), "incremental", base="s1",
                         sends=[Send("x", "y", "I", "s2", "s1", ["s2"])]) for d in KIDS]
    src, dst = Recorder("src"), Recorder("dst")
    source = held_tree("p/a", {d: {"s1": 1, "s2": 0} for d in KIDS})
    target = held_tree("q/a", {d: {"s1": 1} for d in KIDS})  # s2 arrived after the listing
    Holds("zfs.replication:t", src, dst, lambda _line: None).move(moved, source, target)
    for host, root in ((src, "p/a"), (dst, "q/a")):
        assert host.calls == [["zfs", "hold", "-r", "zfs.replication:t", f"{root}@s2"],
                              ["zfs", "release", "-r", "zfs.replication:t", f"{root}@s1"]]


@pytest.mark.parametrize("why", ["left out", "failed"])
def test_a_subtree_with_a_snapshot_of_that_name_not_to_change_is_named_dataset_by_dataset(why):
    """p/a/b has s2 too but is not to be held: excluded by the task, or its transfer failed (then its s1 keeps our
    hold, and the release must not reach it either). p/a/a still stands for p/a/a/deep."""
    listing = held_tree("p/a", {d: {"s1": 1, "s2": 0} for d in KIDS})
    wanted = [f"p/a/{d}".rstrip("/") + "@s2" for d in KIDS if d != "b"]
    roots, rest = recursive_roots(wanted, listing, "hold")
    assert roots == {"p/a/a@s2": ["p/a/a@s2", "p/a/a/deep@s2"]}
    assert sorted(rest) == sorted(set(wanted) - {"p/a/a@s2", "p/a/a/deep@s2"})
    if why == "failed":
        olds = [w.replace("@s2", "@s1") for w in wanted]
        roots, rest = recursive_roots(olds, listing, "release", keep=wanted)
        assert roots == {"p/a/a@s1": ["p/a/a@s1", "p/a/a/deep@s1"]} and "p/a/b@s1" not in rest


def test_other_holds_on_the_snapshots_to_hold_do_not_keep_the_subtree_from_one_call():
    """Another tool's holds (or zfs-fuse's leaked .send holds) on s2: our tag is a different one, -r still fits."""
    listing = held_tree("p/a", {d: {"s1": 1, "s2": 1} for d in KIDS})
    wanted = [f"p/a/{d}".rstrip("/") + "@s2" for d in KIDS]
    assert recursive_roots(wanted, listing, "hold") == ({"p/a@s2": wanted}, [])


def test_a_release_never_reaches_a_snapshot_this_run_just_held():
    """p/a/c's new base is called s1, the name the rest of the tree releases: p/a stands for nothing, p/a/a still does."""
    listing = held_tree("p/a", {d: {"s1": 1} for d in KIDS})
    olds = [f"p/a/{d}".rstrip("/") + "@s1" for d in KIDS if d != "c"]
    roots, rest = recursive_roots(olds, listing, "release", keep=["p/a/c@s1"])
    assert roots == {"p/a/a@s1": ["p/a/a@s1", "p/a/a/deep@s1"]}
    assert sorted(rest) == ["p/a/b@s1", "p/a@s1"]


def test_a_release_of_snapshots_not_carrying_a_hold_or_not_listed_is_named():
    listing = held_tree("p/a", {"": {"s1": 1}, "a": {"s1": 0}, "a/deep": {"s1": 1}})
    assert recursive_roots(["p/a@s1", "p/a/a@s1", "p/a/a/deep@s1"], listing, "release")[0] == {}
    assert recursive_roots(["p/a@s1", "p/a/new@s1"], held_tree("p/a", {"": {"s1": 1}}), "release")[0] == {}
    # Holding: a dataset received by this run (not listed) carries no hold yet, and goes under its parent's -r.
    assert recursive_roots(["p/a@s1", "p/a/new@s1"], held_tree("p/a", {"": {"s1": 0}}), "hold")[0] == {"p/a@s1": ["p/a@s1", "p/a/new@s1"]}
    assert recursive_roots(["p/a@s1", "p/a/new@s1"], None, "hold") == ({}, ["p/a@s1", "p/a/new@s1"])  # nothing known


def test_names_that_only_share_a_prefix_are_not_below_each_other():
    listing = held_tree("p", {"": {}, "a": {"s": 0}, "a-b": {"s": 0}, "a.b": {"s": 0}, "a/c": {"s": 0}, "ab": {"s": 0}})
    roots, rest = recursive_roots(["p/a@s", "p/a-b@s", "p/a.b@s", "p/a/c@s", "p/ab@s"], listing, "hold")
    assert roots == {"p/a@s": ["p/a@s", "p/a/c@s"]} and sorted(rest) == ["p/a-b@s", "p/a.b@s", "p/ab@s"]


def test_a_refused_recursive_call_names_each_snapshot_it_stood_for():
    class RefusingRecursive(Recorder):
        def run(self, argv: Sequence[str], check: bool = True, input_text: str | None = None) -> subprocess.CompletedProcess:
            if "-r" in argv:
                self.calls.append(list(argv))
                return subprocess.CompletedProcess(argv, 1, "", "cannot hold: tag already exists on this dataset")
            return super().run(argv, check, input_text)

    host = RefusingRecursive("src")
    listing = held_tree("p/a", {d: {"s2": 0} for d in KIDS})
    snaps = [f"p/a/{d}".rstrip("/") + "@s2" for d in KIDS]
    Holds("zfs.replication:t", host, host, lambda _line: None, (host,)).batch(host, "hold", snaps, True, listing)
    assert host.calls[0] == ["zfs", "hold", "-r", "zfs.replication:t", "p/a@s2"]
    assert host.calls[1][:3] == ["zfs", "holds", "-H"] and sorted(host.calls[1][3:]) == sorted(snaps)  # none carries it yet
    assert sorted(host.calls[2][3:]) == sorted(snaps) and len(host.calls) == 3


class HeldPool(Host):
    """A pool's user holds ({snapshot: {tag, ...}}, every snapshot of its datasets) behind zfs hold, release and holds
    as the zfs command line does them: each snapshot named (with -r: its subtree's snapshots of that name) changes or
    fails on its own, the call fails if any did; a recursive hold of a subtree where one snapshot already carries the
    tag changes none of it. ``zfs holds -H`` answers as OpenZFS does, or, LEGACY, fails as zfs-fuse's does (the
    engine does not ask there: Capabilities.holds_list)."""

    def __init__(self, holds: dict[str, set[str]], legacy: bool) -> None:
        self.label = "src"
        self.holds = holds
        self.legacy = legacy
        self.calls: list[list[str]] = []

    def subtree(self, snap: str) -> list[str]:
        ds, _at, name = snap.partition("@")
        return [s for s in self.holds if s.partition("@")[2] == name and (s.partition("@")[0] + "/").startswith(ds + "/")]

    def run(self, argv: Sequence[str], check: bool = True, input_text: str | None = None) -> subprocess.CompletedProcess:
        argv = list(argv)
        self.calls.append(argv)
        verb, args = argv[1], argv[2:]
        if verb == "holds":
            if self.legacy:
                return subprocess.CompletedProcess(argv, 255, "internal error: /usr/lib/zfs/pyzfs.py not found\n", "")
            assert args[0] == "-H", argv
            rows = "".join(f"{s}\t{t}\tSat Dec  5 10:00 2026\n" for s in args[1:] if s in self.holds for t in sorted(self.holds[s]))
            return subprocess.CompletedProcess(argv, 0, rows, "")
        recursive = args[0] == "-r"
        tag, snaps = args[int(recursive)], args[int(recursive) + 1:]
        errors = []
        for snap in snaps:
            each = self.subtree(snap) if recursive else [s for s in [snap] if s in self.holds]
            carrying = [s for s in each if tag in self.holds[s]]
            if verb == "hold" and each and not carrying:
                self.holds.update({s: self.holds[s] | {tag} for s in each})
                continue
            if verb == "release":  # what carries the tag is released; the call fails for what does not
                self.holds.update({s: self.holds[s] - {tag} for s in carrying})
                if each and len(carrying) == len(each):
                    continue
            why = "dataset does not exist" if not each else "tag already exists on this dataset" if verb == "hold" else "no such tag on this dataset"
            errors.append(f"cannot {verb} '{snap}': {why}")
        return subprocess.CompletedProcess(argv, 1 if errors else 0, "", "\n".join(errors))


TREE = ["p/a", "p/a/a", "p/a/a/deep", "p/a/with space", "p/a/c"]


@pytest.mark.parametrize("legacy", [False, True], ids=["openzfs", "zfs-fuse"])
def test_another_tasks_holds_on_the_snapshots_to_release_cost_a_few_calls_not_one_per_dataset(legacy):
    """Two tasks replicate the tree to two targets: the other task still holds s1, which the listing shows as a
    userrefs of 1 like ours on s2. The release of both fails as a whole; one zfs holds finds what still carries ours,
    and the other task's holds stay. A command line that cannot say whose holds they are (zfs-fuse) gets the release
    of each snapshot on its own, as before."""
    ours, other = "zfs.replication:t", "zfs.replication:other"
    pool = HeldPool({f"{d}@{n}": ({other} if n == "s1" else {ours} if n == "s2" else set()) for d in TREE
                     for n in ("s1", "s2", "s3")}, legacy)
    listing = Listing("p/a", {d: Dataset(d, "filesystem", snapshots=[
        Snapshot(d, n, f"g-{d}-{n}", i + 1, 1 if n != "s3" else 0) for i, n in enumerate(("s1", "s2", "s3"))]) for d in TREE})
    moved = [DatasetPlan(d, "q" + d[1:], "incremental", base="s2", sends=[Send("x", "y", "I", "s3", "s2", ["s3"])]) for d in TREE]
    dst = Recorder("dst")
    Holds(ours, pool, dst, lambda _line: None, () if legacy else (pool,)).move(moved, listing, None)
    assert pool.holds == {f"{d}@{n}": ({other} if n == "s1" else set() if n == "s2" else {ours}) for d in TREE for n in ("s1", "s2", "s3")}
    verbs = [c[1] for c in pool.calls]
    if legacy:
        assert "holds" not in verbs and len(verbs) > 2 * len(TREE), pool.calls
        assert all(pool.calls.count(c) == 1 for c in pool.calls), pool.calls  # no call that just failed made again
    else:
        assert verbs[:3] == ["hold", "release", "holds"] and len(verbs) <= 4, pool.calls


@pytest.mark.parametrize("legacy", [False, True], ids=["openzfs", "zfs-fuse"])
def test_a_base_listed_without_any_hold_is_not_released(legacy):
    """The task's holds were released by hand (or hold_base was turned on only now): the listing shows the bases with
    no hold. The new bases are held in one recursive call; nothing is released, so no failed release and no call per
    snapshot where zfs cannot say whose holds they are."""
    ours = "zfs.replication:t"
    pool = HeldPool({f"{d}@{n}": set() for d in TREE for n in ("s1", "s2")}, legacy)
    listing = Listing("p/a", {d: Dataset(d, "filesystem", snapshots=[Snapshot(d, "s1", f"g-{d}", 1, 0)]) for d in TREE})
    moved = [DatasetPlan(d, "q" + d[1:], "incremental", base="s1", sends=[Send("x", "y", "I", "s2", "s1", ["s2"])]) for d in TREE]
    Holds(ours, pool, Recorder("dst"), lambda _line: None, () if legacy else (pool,)).move(moved, listing, None)
    assert pool.holds == {f"{d}@{n}": ({ours} if n == "s2" else set()) for d in TREE for n in ("s1", "s2")}
    assert pool.calls == [["zfs", "hold", "-r", ours, "p/a@s2"]]


def test_where_zfs_cannot_say_whose_holds_a_failed_named_release_is_not_made_again_before_going_one_by_one():
    """zfs-fuse, snapshots named (no listing for -r): the failed call goes straight to one call per snapshot."""
    ours, other = "zfs.replication:t", "zfs.replication:other"
    pool = HeldPool({f"{d}@{n}": ({other} if n == "s1" else {ours} if n == "s2" else set()) for d in TREE
                     for n in ("s1", "s2", "s3")}, legacy=True)
    Holds(ours, pool, pool, lambda _line: None).batch(pool, "release", [f"{d}@{n}" for d in TREE for n in ("s1", "s2")], False)
    assert pool.holds == {f"{d}@{n}": ({other} if n == "s1" else set()) for d in TREE for n in ("s1", "s2", "s3")}
    assert len(pool.calls) == 1 + 2 * len(TREE) and all(len(c) == 4 for c in pool.calls[1:]), pool.calls


def test_a_hold_that_some_snapshots_already_carry_takes_the_rest_without_an_error():
    """A run killed between hold and release left ours on part of the new base: the recursive hold refuses, the rest
    is held in one more call."""
    ours = "zfs.replication:t"
    pool = HeldPool({f"{d}@s2": ({ours} if d == "p/a/c" else set()) for d in TREE}, legacy=False)
    listing = Listing("p/a", {d: Dataset(d, "filesystem", snapshots=[Snapshot(d, "s2", f"g-{d}", 1, 1 if d == "p/a/c" else 0)])
                              for d in TREE})
    Holds(ours, pool, pool, lambda _line: None, (pool,)).batch(pool, "hold", [f"{d}@s2" for d in TREE], True, listing)
    assert pool.holds == {f"{d}@s2": {ours} for d in TREE}
    assert [c[1] for c in pool.calls] == ["hold", "holds", "hold"]
    assert sorted(pool.calls[2][3:]) == sorted(f"{d}@s2" for d in TREE if d != "p/a/c")


def test_a_snapshot_that_cannot_take_the_hold_is_an_error_that_names_it():
    ours = "zfs.replication:t"
    pool = HeldPool({"p/a@s2": set()}, legacy=False)
    with pytest.raises(TransportError, match="p/a/gone@s2"):
        Holds(ours, pool, pool, lambda _line: None, (pool,)).batch(pool, "hold", ["p/a@s2", "p/a/gone@s2"], True, None)
    assert pool.holds == {"p/a@s2": {ours}}


class Snapshots(Host):
    """A target whose zfs get answers guid, createtxg and creation of the snapshots in HAVE ({full name: (guid, txg)})."""

    def __init__(self, have: dict[str, tuple[str, int]]) -> None:
        self.label = "dst"
        self.have = have
        self.calls: list[list[str]] = []

    def run(self, argv: Sequence[str], check: bool = True, input_text: str | None = None) -> subprocess.CompletedProcess:
        argv = list(argv)
        self.calls.append(argv)
        assert argv[:7] == ["zfs", "get", "-H", "-p", "-o", "name,property,value", "guid,createtxg,creation"], argv
        names = argv[7:]
        out = "".join(f"{n}\tguid\t{self.have[n][0]}\n{n}\tcreatetxg\t{self.have[n][1]}\n{n}\tcreation\t{1767225600 + self.have[n][1]}\n"
                      for n in names if n in self.have)
        missing = [n for n in names if n not in self.have]
        return subprocess.CompletedProcess(argv, 1 if missing else 0, out, "".join(f"cannot open '{n}': dataset does not exist\n" for n in missing))


def tree(root: str, n: int, snaps: list[tuple[str, str, int]]) -> Listing:
    names = [root] + [f"{root}/child-with-a-long-name-to-fill-the-command-line-{i:04d}" for i in range(1, n)]
    return Listing(root, {name: Dataset(name, "filesystem", snapshots=[Snapshot(name, s, g, t, 1, {"creation": "1"}) for s, g, t in snaps])
                          for name in names})


def test_a_catch_up_reads_only_the_snapshots_it_sent_in_few_calls_and_a_missing_one_fails_verification():
    source = tree("p/a", 1500, [("s1", "g1", 10), ("s2", "g2", 20), ("s3", "g3", 30)])
    before = tree("q/a", 1500, [("s1", "g1", 5)])
    work = [DatasetPlan(src, tgt, "incremental", base="s1", sends=[Send(src, tgt, "I", "s3", "s1", ["s2", "s3"])])
            for src, tgt in zip(source.datasets, before.datasets)]
    short = work[7].target  # its stream failed after s2 had landed
    have = {f"{d.target}@{n}": (g, t) for d in work for n, g, t in (("s2", "g2", 6), ("s3", "g3", 7))
            if not (d.target == short and n == "s3")}
    host = Snapshots(have)
    assert only_adds(Plan(work), before)
    after = list_received(host, before, work)
    assert 1 < len(host.calls) <= 1 + 1500 * 2 * 80 // ARGV_BYTES  # batched by length, not one call per dataset
    assert all(sum(len(a) + 1 for a in c[7:]) <= ARGV_BYTES for c in host.calls)
    assert sorted(n for c in host.calls for n in c[7:]) == sorted(f"{d.target}@{n}" for d in work for n in ("s2", "s3"))
    names = snapshot_names(after)
    assert names[work[0].target] == ["s1", "s2", "s3"] and names[short] == ["s1", "s2"]
    assert [s.guid for s in after.datasets[work[0].target].snapshots] == ["g1", "g2", "g3"]
    assert snapshot_names(before)[work[0].target] == ["s1"]  # the listing planned on is left as it was
    results = {d.target: DatasetResult(d.source, d.target, "incremental", "s1", snapshots_sent=["s2", "s3"]) for d in work}
    errors: list[str] = []
    verify(Plan(work), source, after, errors, results)
    assert errors == [f"verification: {short} lacks or has a different guid for s3 after the transfer"]


def incremental(**kw) -> DatasetPlan:
    send = Send("p/a", "q/a", kw.pop("mode", "I"), "s2", "s1", ["s2"], force=kw.pop("force", False), replicate=kw.pop("replicate", False),
                token=kw.pop("token", None))
    return DatasetPlan("p/a", "q/a", "incremental", base="s1", sends=[send], **kw)


@pytest.mark.parametrize("the_plan, target_listed, adds_only", [
    (Plan([incremental()]), True, True),
    (Plan([incremental(mode="i")]), True, True),
    (Plan([incremental()]), False, False),  # a target created by this run
    (Plan([incremental(mode="full")]), True, False),
    (Plan([incremental(force=True)]), True, False),
    (Plan([incremental(replicate=True)]), True, False),
    (Plan([incremental(token="1-abc")]), True, False),
    (Plan([incremental(destroy_before=["s0"])]), True, False),
    (Plan([incremental(destroy_after=[("s0", "expired")])]), True, False),  # retention reads the whole tree as it is now
    (Plan([incremental(rollback=True)]), True, False),
    (Plan([incremental()], create_target_root=True), True, False),
])
def test_the_whole_target_tree_is_listed_again_unless_the_run_only_added_snapshots(the_plan, target_listed, adds_only):
    before = Listing("q/a", {"q/a": Dataset("q/a", "filesystem")} if target_listed else {})
    assert only_adds(the_plan, before) is adds_only


@pytest.mark.parametrize("check_mode", [True, False])
def test_removing_the_task_releases_its_holds_in_one_holds_and_one_release_call(check_mode):
    """Every held snapshot of the tree is asked about at once; only those carrying our tag are released (the other
    task's hold on s1 and another tool's on p/a/c@s2 stay)."""
    ours, other = "zfs.replication:t", "other-tool"
    holds = {f"{d}@s1": {"zfs.replication:other"} for d in TREE} | {f"{d}@s2": {ours} for d in TREE}
    holds["p/a/c@s2"] = {ours, other}
    pool = HeldPool({k: set(v) for k, v in holds.items()}, legacy=False)
    listing = Listing("p/a", {d: Dataset(d, "filesystem", snapshots=[Snapshot(d, n, f"g-{d}-{n}", i + 1, len(holds[f"{d}@{n}"]))
                                                                     for i, n in enumerate(("s1", "s2"))]) for d in TREE})
    released = Holds(ours, pool, pool, lambda _line: None, (pool,)).release_all(pool, listing, check_mode)
    assert sorted(released) == sorted(f"{d}@s2" for d in TREE)
    if check_mode:
        assert pool.holds == holds and [c[1] for c in pool.calls] == ["holds"]
    else:
        assert pool.holds == {k: v - {ours} for k, v in holds.items()} and [c[1] for c in pool.calls] == ["holds", "release"]


class Settling(Snapshots):
    """Snapshots, and a zfs hold/release that waits up to WAIT seconds for the read of what arrived to have begun: the
    hold can only see the read begun when the run makes both at once."""

    def __init__(self, have: dict[str, tuple[str, int]], wait: float) -> None:
        super().__init__(have)
        self.wait = wait
        self.reading = threading.Event()
        self.hold_saw_read: list[bool] = []

    def run(self, argv: Sequence[str], check: bool = True, input_text: str | None = None) -> subprocess.CompletedProcess:
        if argv[1] in ("hold", "release"):
            self.hold_saw_read.append(self.reading.wait(timeout=self.wait))
            return subprocess.CompletedProcess(list(argv), 0, "", "")
        self.reading.set()
        return super().run(argv, check, input_text)


@pytest.mark.parametrize("adds_only", [True, False])
def test_a_catch_up_reads_what_arrived_while_its_holds_move(adds_only):
    """The two steps after a catch-up's sends run at once (neither changes what the other reads); any other run lists
    the whole tree after the holds have moved (retention reads it). Verification passes on what was read."""
    task = ReplicationTask.from_params({"name": "t", "source_datasets": ["p/a"], "target_dataset": "q/a", "transport": "local",
                                        "naming_schema": ["auto-%Y-%m-%d_%H-%M"]})
    runner = Runner(task)
    host = Settling({"q/a@s2": ("g2", 20)}, wait=30 if adds_only else 0)  # the source's and the target's calls
    runner.src = runner.dst = host
    source = Listing("p/a", {"p/a": Dataset("p/a", "filesystem", snapshots=[Snapshot("p/a", "s1", "g1", 10, 1), Snapshot("p/a", "s2", "g2", 20, 0)])})
    before = Listing("q/a", {"q/a": Dataset("q/a", "filesystem", snapshots=[Snapshot("q/a", "s1", "g1", 5, 1)])})
    dplan = DatasetPlan("p/a", "q/a", "incremental", base="s1", sends=[Send("p/a", "q/a", "I", "s2", "s1", ["s2"])],
                        rollback=not adds_only)
    the_plan = Plan([dplan])
    results = {"q/a": DatasetResult("p/a", "q/a", "incremental", "s1", snapshots_sent=["s2"])}

    # The transfers, done (every plan succeeded), and no retention due.
    sent = SimpleNamespace(run_all=lambda work, _results, _errors: work, changes=SimpleNamespace(retain=lambda *_a: {}))
    after_tree = Listing("q/a", {"q/a": Dataset("q/a", "filesystem", snapshots=[Snapshot("q/a", "s2", "g2", 20, 1)])})
    listed: list[str] = []
    runner.list_after = lambda _plan, _transfer: listed.append("tree") or after_tree  # type: ignore[method-assign]
    errors: list[str] = []
    executed = runner.execute(the_plan, PlanTask.__new__(PlanTask), Prepared(source, before, set()), sent, results, errors, False)  # type: ignore[arg-type]
    assert errors == [] and results["q/a"].error is None
    assert snapshot_names(executed.after)["q/a"] == (["s1", "s2"] if adds_only else ["s2"])
    assert host.hold_saw_read == [adds_only] * 4  # hold on both sides, then release on both
    assert listed == ([] if adds_only else ["tree"])
