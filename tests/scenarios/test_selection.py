# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What is sent, and where to, on each backend: every selection mode, one -I stream versus an -i chain, recursive with
exclude and several sources, create_snapshot and mount; and the consent a target that is not a clean replica needs
(diverged, unrelated, an extra snapshot, written since the base). Every check reads the pools: snapshot names and guids
on both sides, datasets, file checksums of the replicas."""
from __future__ import annotations

import pytest

from scenario_helpers import child_checksums, exists, guids, message, params, parent, sends, snaps, state

DAILY = "daily-%Y%m%d-%H%M"


@pytest.mark.backends("zfs-fuse", reason="the planner's selection by name, schema and schedule: the same on every ZFS "
                                         "(OpenZFS's listing parse runs in every other scenario)")
def test_selection_modes(backend):
    src, dst = backend.pair("sel")
    order = ["auto-2026-11-28_00-00", "auto-2026-11-28_01-00", "daily-20261128-0130", "auto-2026-11-28_02-00",
             "auto-2026-11-28_03-00", "manual-x", "auto-2026-11-28_04-00", "auto-2026-11-28_05-00"]
    at_snapshot = {}
    for i, name in enumerate(order):
        backend.write(src, f"s{i}", size=10_000)
        backend.zfs("snapshot", f"{src}@{name}")
        at_snapshot[name] = backend.checksums(src)
    auto = [n for n in order if n.startswith("auto-")]
    cases = {
        "naming_schema": ({}, auto),
        "also_include": ({"also_include_naming_schema": [DAILY]}, [n for n in order if n != "manual-x"]),
        "periodic_snapshot_tasks": ({"naming_schema": [], "periodic_snapshot_tasks": [{"naming_schema": DAILY}]}, ["daily-20261128-0130"]),
        "name_regex": ({"naming_schema": [], "name_regex": "manual-.*|daily-.*"}, ["daily-20261128-0130", "manual-x"]),
        "only_matching_schedule": ({"only_matching_schedule": True, "schedule": {"minute": "0", "hour": "*/2"}},
                                   ["auto-2026-11-28_00-00", "auto-2026-11-28_02-00", "auto-2026-11-28_04-00"]),
        "run-once snapshots": ({"snapshots": ["auto-2026-11-28_01-00", "auto-2026-11-28_03-00"]}, ["auto-2026-11-28_01-00", "auto-2026-11-28_03-00"]),
    }
    src_guids = guids(backend, src)
    runs = {}
    for i, (case, (opts, want)) in enumerate(cases.items()):
        target = f"{dst}{i}"
        run = runs[case] = backend.engine(params(src, target, timezone="UTC", **opts))
        assert run.ok, f"{case}: {run}"
        assert run.dataset(target)["snapshots_sent"] == want, case
        assert snaps(backend, target) == want, case
        assert guids(backend, target) == {n: src_guids[n] for n in want}, case
        # Each replica holds exactly the files of the newest snapshot it selected.
        assert backend.checksums(target) == at_snapshot[want[-1]], case
    # only_matching_schedule skips the odd hours: -i hops from selected to selected.
    assert sends(runs["only_matching_schedule"], src) == [
        ("full", None, "auto-2026-11-28_00-00"),
        ("i", "auto-2026-11-28_00-00", "auto-2026-11-28_02-00"),
        ("i", "auto-2026-11-28_02-00", "auto-2026-11-28_04-00"),
    ]
    assert sends(runs["run-once snapshots"], src) == [("full", None, "auto-2026-11-28_01-00"), ("i", "auto-2026-11-28_01-00", "auto-2026-11-28_03-00")]


@pytest.mark.backends("zfs-fuse", reason="the planner's stream choice; zfs send -I/-i mean the same on both command lines")
def test_one_I_stream_when_all_are_selected_and_an_i_chain_when_one_is_skipped(backend):
    src, dst = backend.pair("chain")
    for h in range(4):
        backend.write(src, f"a{h}", size=10_000)
        backend.zfs("snapshot", f"{src}@auto-2026-11-28_0{h}-00")
    p = params(src, dst)
    first = backend.engine(p)
    assert first.ok, str(first)
    assert sends(first, src) == [("full", None, "auto-2026-11-28_00-00"), ("I", "auto-2026-11-28_00-00", "auto-2026-11-28_03-00")]
    assert first.result["plan"][0]["sends"][1]["snapshots"] == ["auto-2026-11-28_01-00", "auto-2026-11-28_02-00", "auto-2026-11-28_03-00"]
    assert guids(backend, dst) == guids(backend, src)

    for name in ("auto-2026-11-28_04-00", "hourly-skip-me", "auto-2026-11-28_05-00"):
        backend.write(src, name, size=10_000)
        backend.zfs("snapshot", f"{src}@{name}")
    second = backend.engine(p)
    assert second.ok, str(second)
    assert sends(second, src) == [("i", "auto-2026-11-28_03-00", "auto-2026-11-28_04-00"), ("i", "auto-2026-11-28_04-00", "auto-2026-11-28_05-00")]
    assert snaps(backend, dst) == [f"auto-2026-11-28_0{h}-00" for h in range(6)]
    assert guids(backend, dst) == {k: v for k, v in guids(backend, src).items() if k.startswith("auto-")}
    assert backend.checksums(dst) == backend.checksums(src)


@pytest.mark.backends("zfs-fuse", reason="the planner's tree walk; OpenZFS recursive trees run in the replicate and received-property scenarios")
def test_recursive_with_exclude_and_several_sources(backend):
    src, dst = backend.pair("rec")
    other, _unused = backend.pair("oth")
    for child in ("skip", "skip/deep", "child", "child/grand"):
        backend.zfs("create", f"{src}/{child}")
    for ds in (src, f"{src}/child", f"{src}/child/grand", f"{src}/skip", other):
        backend.write(ds, ds.rsplit("/", 1)[-1], size=20_000)
    backend.zfs("snapshot", "-r", f"{src}@auto-2026-11-28_10-00")
    backend.zfs("snapshot", f"{other}@auto-2026-11-28_10-00")
    assert not exists(backend, dst)

    run = backend.engine(params(src, dst, source_datasets=[src, other], recursive=True, exclude=[f"{src}/skip"]))

    assert run.ok, str(run)
    leaf, oleaf = src.rsplit("/", 1)[1], other.rsplit("/", 1)[1]
    # The container is created; each source lands in target/<leaf>; the excluded subtree is absent.
    assert sorted(backend.datasets_under(dst)) == sorted([dst, f"{dst}/{leaf}", f"{dst}/{leaf}/child", f"{dst}/{leaf}/child/grand", f"{dst}/{oleaf}"])
    assert snaps(backend, dst) == []
    for s, t in ((src, f"{dst}/{leaf}"), (f"{src}/child", f"{dst}/{leaf}/child"), (f"{src}/child/grand", f"{dst}/{leaf}/child/grand"),
                 (other, f"{dst}/{oleaf}")):
        assert guids(backend, t) == guids(backend, s), t
    assert backend.checksums(f"{dst}/{leaf}") == backend.checksums(src)
    assert backend.checksums(f"{dst}/{oleaf}") == backend.checksums(other)
    with backend.mounted(f"{dst}/{leaf}"):
        assert child_checksums(backend, f"{dst}/{leaf}/child") == backend.checksums(f"{src}/child")
        with backend.mounted(f"{dst}/{leaf}/child"):
            assert child_checksums(backend, f"{dst}/{leaf}/child/grand") == backend.checksums(f"{src}/child/grand")
    assert backend.prop(f"{dst}/{leaf}", "readonly") == "on" and backend.prop(f"{dst}/{oleaf}", "readonly") == "on"
    assert not exists(backend, f"{dst}/{leaf}/skip")


@pytest.mark.backends("zfs-fuse", reason="zfs snapshot and zfs mount behave alike; OpenZFS mounting is in tests/openzfs/test_received_properties.py")
def test_create_snapshot_when_the_sources_have_none_and_mount(backend):
    src, dst = backend.pair("mk")
    backend.zfs("create", f"{src}/child")
    backend.write(src, "new")
    backend.write(f"{src}/child", "kid", size=20_000)
    backend.zfs("snapshot", "-r", f"{src}@manual-only")  # not selected: as if the source had no snapshot for the task
    p = params(src, dst, name="mk", recursive=True, create_snapshot=True, mount=True, readonly="ignore")
    before = state(backend, src, parent(dst))

    planned = backend.engine(p, check_mode=True)

    assert planned.ok, str(planned)
    assert any(line.startswith(f"create_snapshot: would take {src}@auto-") for line in planned.result["log"]), planned
    assert state(backend, src, parent(dst)) == before

    run = backend.engine(p)

    assert run.ok, str(run)
    taken = [k for k in backend.snapshots_with_guids(src) if k.startswith("@auto-")]
    assert len(taken) == 1  # one recursive snapshot, named by the schema
    assert f"/child{taken[0]}" in backend.snapshots_with_guids(src)
    assert run.result["snapshots_sent"] == 2
    assert backend.snapshots_with_guids(dst) == {k: v for k, v in backend.snapshots_with_guids(src).items() if "manual" not in k}
    # mount: the replicas are mounted after the run, with the source's files.
    assert backend.prop(dst, "mounted") == "yes" and backend.prop(f"{dst}/child", "mounted") == "yes"
    assert backend.checksums(dst) == backend.checksums(src)
    assert backend.checksums(f"{dst}/child") == backend.checksums(f"{src}/child")
    # A second run finds the snapshot: nothing taken, nothing sent.
    again = backend.engine(p)
    assert again.ok, str(again)
    assert again.result["changed"] is False and not any("create_snapshot" in line for line in again.result["log"])


# --------------------------------------------------------------------------------------------------------------------
# Consent: a target that is not a clean replica
# --------------------------------------------------------------------------------------------------------------------

def test_a_diverged_target_is_refused_with_its_data_intact(backend):
    src, dst = backend.pair("div")
    backend.write(src, "d")
    backend.zfs("snapshot", f"{src}@auto-2026-11-28_10-00")
    p = params(src, dst, readonly="ignore")
    assert backend.engine(p).ok
    # Someone writes on the target and snapshots it; the source moves on too.
    backend.write(dst, "rogue")
    backend.zfs("snapshot", f"{dst}@auto-2026-11-28_10-30")
    rogue = backend.checksums(dst)
    backend.zfs("snapshot", f"{src}@auto-2026-11-28_11-00")
    before = state(backend, parent(dst))

    run = backend.engine(p)

    assert run.failed, str(run)
    assert "diverged" in message(run) and "auto-2026-11-28_10-30" in message(run), run
    assert state(backend, parent(dst)) == before
    assert backend.checksums(dst) == rogue


def test_an_unrelated_target_needs_allow_from_scratch(backend):
    src, dst = backend.pair("scr")
    for name in ("auto-2026-11-28_10-00", "auto-2026-11-28_11-00"):
        backend.write(src, name)
        backend.zfs("snapshot", f"{src}@{name}")
    backend.zfs("create", dst)  # an unrelated dataset with its own snapshot of the schema
    backend.write(dst, "unrelated")
    backend.zfs("snapshot", f"{dst}@auto-2026-01-01_00-00")
    theirs = backend.checksums(dst)
    p = params(src, dst, readonly="ignore")
    before = state(backend, src, parent(dst))

    refused = backend.engine(p)

    assert refused.failed, str(refused)
    assert "allow_from_scratch" in message(refused) and "unrelated" in message(refused), refused
    assert state(backend, src, parent(dst)) == before
    assert backend.checksums(dst) == theirs

    # zfs-fuse's zfs recv -F over a mounted target fails now and then ("cannot receive new filesystem stream: I/O error").
    backend.zfs("unmount", dst)
    ok = backend.engine({**p, "allow_from_scratch": True})
    assert ok.ok, str(ok)
    assert ok.result["snapshots_sent"] == 2
    assert guids(backend, dst) == guids(backend, src)
    assert backend.checksums(dst) == backend.checksums(src)


def test_an_extra_snapshot_on_the_target_needs_allow_rollback(backend):
    src, dst = backend.pair("xtra")
    backend.write(src, "b1")
    backend.zfs("snapshot", f"{src}@auto-2026-11-28_10-00")
    p = params(src, dst)
    assert backend.engine(p).ok
    backend.zfs("snapshot", f"{dst}@auto-2026-11-28_10-30")  # someone's snapshot on the target
    backend.write(src, "b2")
    backend.zfs("snapshot", f"{src}@auto-2026-11-28_11-00")
    before = state(backend, src, parent(dst))

    refused = backend.engine(p)

    assert refused.failed, str(refused)
    assert "allow_rollback" in message(refused) and "auto-2026-11-28_10-30" in message(refused), refused
    assert state(backend, src, parent(dst)) == before

    ok = backend.engine({**p, "allow_rollback": True})
    assert ok.ok, str(ok)
    assert "auto-2026-11-28_10-30" in ok.dataset(dst)["destroyed"]
    assert guids(backend, dst) == guids(backend, src)
    assert backend.checksums(dst) == backend.checksums(src)


def test_a_target_written_since_the_base_is_refused_without_allow_rollback(backend):
    """Refused untouched, and not retried (a logical failure). With allow_rollback the written target is rolled back as
    a planned step: test_safety_destroys.py::test_allow_rollback_rolls_back_a_written_target_as_a_planned_step."""
    src, dst = backend.pair("wrt")
    backend.write(src, "m1")
    backend.zfs("snapshot", f"{src}@auto-2026-11-28_10-00")
    p = params(src, dst, readonly="ignore", retries=2, retry_delay=0.1)
    assert backend.engine(p).ok
    backend.write(dst, "written-on-target")
    modified = backend.checksums(dst)
    assert "written-on-target.bin" in modified
    backend.write(src, "m2")
    backend.zfs("snapshot", f"{src}@auto-2026-11-28_11-00")
    before = state(backend, src, parent(dst))

    refused = backend.engine(p)

    assert refused.failed, str(refused)
    assert "allow_rollback" in message(refused), refused
    assert refused.result["snapshots_sent"] == 0
    assert refused.dataset(dst)["attempts"] == 1  # a logical failure is not retried
    assert state(backend, src, parent(dst)) == before
    assert backend.checksums(dst) == modified
