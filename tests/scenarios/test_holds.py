# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The task's hold (hold_base) as a tree of datasets moves it, on each backend: a subtree whose snapshots of one name
are exactly those to hold (or release) takes one `zfs hold -r` (`zfs release -r`) on its top, and a recursive call
never reaches a dataset the task leaves out. Every check reads the pools (userrefs of each snapshot on both sides) and
the zfs calls the run made (a logging wrapper first in PATH)."""
from __future__ import annotations

import shlex

from scenario_helpers import held, params, parent, shims

TAG = "zfs.replication:scenario"


def run_logging_calls(backend, task: dict):
    """The engine run once with a logging zfs first in PATH: (the run, {verb: its zfs hold/release/holds calls})."""
    bindir, log, path = shims(backend, ["zfs"])
    try:
        run = backend.engine(task, env={"PATH": path})
        calls = backend.sh(f"cat {shlex.quote(log)}").splitlines()
        return run, {verb: [line for line in calls if line.startswith(f"zfs {verb} ")] for verb in ("hold", "release", "holds")}
    finally:
        backend.sh(f"rm -rf {shlex.quote(bindir)}")


def test_a_catch_up_moves_the_hold_with_one_recursive_call_per_side_and_verb(backend):
    """Another tool's hold on one of the new snapshots does not matter (a tag of its own): one call per side and verb
    still, and that hold stays."""
    src, dst = backend.pair("hrec")
    kids = ["a", "a/deep", "b", "c"]
    for kid in kids:
        backend.zfs("create", f"{src}/{kid}")
    backend.zfs("snapshot", "-r", f"{src}@auto-2026-11-28_10-00")
    first = backend.engine(params(src, dst, recursive=True))
    assert first.ok, str(first)
    tree = [src, *(f"{src}/{k}" for k in kids)]
    assert held(backend, src) == {f"{d}@auto-2026-11-28_10-00": 1 for d in tree}

    for hour in ("11", "12"):
        backend.zfs("snapshot", "-r", f"{src}@auto-2026-11-28_{hour}-00")
    other = f"{src}/a/deep@auto-2026-11-28_12-00"
    backend.zfs("hold", "other-tool", other)
    try:
        run, calls = run_logging_calls(backend, params(src, dst, recursive=True))
    finally:
        src_held = held(backend, src)
        backend.zfs("release", "other-tool", other)
    assert run.ok, str(run)
    assert run.result["snapshots_sent"] == 10
    # Each side's five snapshots are held and released in one call on the tree's top.
    assert sorted(calls["hold"]) == sorted([f"zfs hold -r {TAG} {src}@auto-2026-11-28_12-00", f"zfs hold -r {TAG} {dst}@auto-2026-11-28_12-00"])
    assert sorted(calls["release"]) == sorted([f"zfs release -r {TAG} {src}@auto-2026-11-28_10-00",
                                               f"zfs release -r {TAG} {dst}@auto-2026-11-28_10-00"])
    assert src_held == {f"{d}@auto-2026-11-28_12-00": 2 if d == f"{src}/a/deep" else 1 for d in tree}
    for side in (src, dst):
        assert held(backend, side) == {f"{side}{d[len(src):]}@auto-2026-11-28_12-00": 1 for d in tree}, side


def test_a_recursive_hold_never_reaches_a_dataset_the_task_leaves_out(backend):
    """src/skip is excluded and src/own carries a hold of its own tool on the snapshot our hold moves to: the hold and
    its release cover the rest of the tree, and neither touches those two."""
    src, dst = backend.pair("hexc")
    for kid in ("a", "a/deep", "skip", "own"):
        backend.zfs("create", f"{src}/{kid}")
    task = params(src, dst, recursive=True, exclude=[f"{src}/skip"])
    backend.zfs("snapshot", "-r", f"{src}@auto-2026-11-28_10-00")
    assert backend.engine(task).ok
    backend.zfs("snapshot", "-r", f"{src}@auto-2026-11-28_11-00")
    backend.zfs("hold", "other-tool", f"{src}/own@auto-2026-11-28_11-00")
    backend.zfs("hold", "other-tool", f"{src}/skip@auto-2026-11-28_10-00")
    try:
        run = backend.engine(task)
        assert run.ok, str(run)
        included = [src, f"{src}/a", f"{src}/a/deep", f"{src}/own"]
        expect = {f"{d}@auto-2026-11-28_11-00": 1 for d in included}
        expect[f"{src}/own@auto-2026-11-28_11-00"] = 2  # ours and the other tool's
        expect[f"{src}/skip@auto-2026-11-28_10-00"] = 1  # the other tool's only; src/skip@11-00 is held by nobody
        assert held(backend, src) == expect
        assert held(backend, dst) == {f"{dst}{d[len(src):]}@auto-2026-11-28_11-00": 1 for d in included}
        # The other tool's holds are its own to release: ours came off src/own@10-00 and never went on src/skip.
        backend.zfs("release", "other-tool", f"{src}/own@auto-2026-11-28_11-00")
        backend.zfs("release", "other-tool", f"{src}/skip@auto-2026-11-28_10-00")
        assert held(backend, f"{src}/skip") == {}
    finally:
        for snap in (f"{src}/own@auto-2026-11-28_11-00", f"{src}/skip@auto-2026-11-28_10-00"):
            backend.sh(f"zfs release other-tool {shlex.quote(snap)} 2>/dev/null || true")


def test_a_second_task_from_the_same_source_keeps_its_holds_and_the_first_moves_its_own_in_a_few_calls(backend):
    """One source, two targets (two tasks, two tags). The snapshots the second task holds show in the listing as
    userrefs like the first's own base, so the first's release names them too and fails as a whole: one zfs holds
    then tells which still carry its tag. A few calls per side on OpenZFS, not one per dataset, and on each backend
    the second task's holds stay."""
    src, dst = backend.pair("hfan")
    second = f"{parent(dst)}/second"
    kids = ["a", "a/deep", "b", "c"]
    for kid in kids:
        backend.zfs("create", f"{src}/{kid}")
    tree = [src, *(f"{src}/{k}" for k in kids)]
    first, other = params(src, dst, recursive=True), params(src, second, recursive=True, name="fanout")
    backend.zfs("snapshot", "-r", f"{src}@auto-2026-11-28_10-00")
    assert backend.engine(first).ok and backend.engine(other).ok
    backend.zfs("snapshot", "-r", f"{src}@auto-2026-11-28_11-00")
    assert backend.engine(first).ok  # the first task's hold moves to 11-00; the second's stays on 10-00
    assert held(backend, src) == {f"{d}@auto-2026-11-28_{h}-00": 1 for d in tree for h in ("10", "11")}

    backend.zfs("snapshot", "-r", f"{src}@auto-2026-11-28_12-00")
    run, calls = run_logging_calls(backend, first)
    assert run.ok, str(run)
    assert run.result["snapshots_sent"] == 5
    assert held(backend, src) == {f"{d}@auto-2026-11-28_{h}-00": 1 for d in tree for h in ("10", "12")}
    assert held(backend, dst) == {f"{dst}{d[len(src):]}@auto-2026-11-28_12-00": 1 for d in tree}
    assert held(backend, second) == {f"{second}{d[len(src):]}@auto-2026-11-28_10-00": 1 for d in tree}
    # Each side: one recursive hold and one recursive release. The source's release fails as a whole (10-00 is not
    # ours); on OpenZFS one zfs holds of the snapshots it named tells what still carries our tag, and at most one more
    # release follows. zfs-fuse has no working zfs holds (not asked): there each snapshot is released on its own.
    assert sorted(calls["hold"]) == sorted([f"zfs hold -r {TAG} {src}@auto-2026-11-28_12-00", f"zfs hold -r {TAG} {dst}@auto-2026-11-28_12-00"])
    if "holds_list" in backend.caps:
        assert len(calls["release"]) <= 3, calls["release"]
        assert len(calls["holds"]) == 1 and calls["holds"][0].startswith(f"zfs holds -H {src}"), calls
    else:
        assert calls["holds"] == [] and len(calls["release"]) > 2 * len(tree), calls


def test_a_base_whose_hold_was_released_by_hand_is_not_released_again(backend):
    """The task's holds released by hand (as a person or the task's own removal would): the next catch-up holds its
    new base with one recursive call per side and makes no release at all, on both backends (before, a release of the
    unheld base failed, and on zfs-fuse went on one snapshot at a time)."""
    src, dst = backend.pair("hman")
    kids = ["a", "a/deep", "b"]
    for kid in kids:
        backend.zfs("create", f"{src}/{kid}")
    tree = [src, *(f"{src}/{k}" for k in kids)]
    task = params(src, dst, recursive=True)
    backend.zfs("snapshot", "-r", f"{src}@auto-2026-11-28_10-00")
    assert backend.engine(task).ok
    for side in (src, dst):
        backend.zfs("release", "-r", TAG, f"{side}@auto-2026-11-28_10-00")
        assert held(backend, side) == {}
    backend.zfs("snapshot", "-r", f"{src}@auto-2026-11-28_11-00")
    run, calls = run_logging_calls(backend, task)
    assert run.ok, str(run)
    assert run.result["snapshots_sent"] == len(tree)
    for side in (src, dst):
        assert held(backend, side) == {f"{side}{d[len(src):]}@auto-2026-11-28_11-00": 1 for d in tree}
    assert sorted(calls["hold"]) == sorted([f"zfs hold -r {TAG} {src}@auto-2026-11-28_11-00", f"zfs hold -r {TAG} {dst}@auto-2026-11-28_11-00"])
    assert calls["release"] == [] and calls["holds"] == [], calls
