# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""After the sends: every snapshot a run reports sent is on the target with the source's guid, read in a few zfs calls
for the whole run (no call per dataset).

What is read depends on what the run did. A run that only added snapshots to existing targets (incremental streams,
nothing destroyed or rolled back, no retention due) reads just the snapshots it sent (:func:`list_received`: one
``zfs get`` per ~60 KB of names), and the rest of the tree is as listed before the run. Any other run lists the whole
target tree again: retention decides on what is there now, and a destroy or a rollback changed more than it added.
"""
from __future__ import annotations

from dataclasses import replace

from ._planner import DatasetPlan, Plan
from ._results import DatasetResult
from ._transport import Host
from ._zfs import Listing, Snapshot, by_length, property_lines

RECEIVED_PROPS = ("guid", "createtxg", "creation")


def verify(the_plan: Plan, source: Listing, after: Listing | None, errors: list[str], results: dict[str, DatasetResult]) -> None:
    """Every snapshot reported sent is on the target with the source's guid."""
    for dplan in the_plan.datasets:
        res = results[dplan.target]
        src = source.get(dplan.source)
        if not res.snapshots_sent or src is None:
            continue
        tgt = after.get(dplan.target) if after is not None else None
        src_guids = {s.name: s.guid for s in src.snapshots}
        tgt_guids = {s.name: s.guid for s in tgt.snapshots} if tgt is not None else {}
        bad = [n for n in res.snapshots_sent if tgt_guids.get(n) != src_guids.get(n)]
        if bad:
            msg = f"verification: {dplan.target} lacks or has a different guid for {', '.join(bad)} after the transfer"
            res.error = msg
            errors.append(msg)


def adds_to_existing(d: DatasetPlan, before: Listing | None) -> bool:
    """D's transfer only adds snapshots to a target that existed (in BEFORE): every stream an incremental (no recv -F,
    no send -R, no resumed token), nothing destroyed before it, no rollback. Retention's destroys after the run
    (``destroy_after``) are not the transfer's: :func:`only_adds` checks them."""
    if d.destroy_before or d.rollback or d.force_destroys:
        return False
    if d.sends and (before is None or before.get(d.target) is None):
        return False
    return all(s.mode in ("I", "i") and not s.force and not s.replicate and not s.token for s in d.sends)


def only_adds(the_plan: Plan, before: Listing) -> bool:
    """The run's work only adds snapshots to targets that existed (in BEFORE), as :func:`adds_to_existing` says of each
    dataset, destroys nothing after the transfers (retention) and creates no container."""
    return not the_plan.create_target_root and all(adds_to_existing(d, before) and not d.destroy_after for d in the_plan.datasets)


def list_received(host: Host, before: Listing, work: list[DatasetPlan]) -> Listing:
    """The target tree after a run that :func:`only_adds`: BEFORE with, on each dataset of WORK, the snapshots of its
    plan that are on the target now (guid, createtxg, creation; a failed stream's missing ones are left out). Their
    userrefs are not read (0): only verification and the run's result read this listing, retention never does."""
    wanted = [f"{d.target}@{n}" for d in work for n in d.pending]
    got: dict[str, dict[str, str]] = {}
    for chunk in by_length(wanted):
        got.update(property_lines(host.run(["zfs", "get", "-H", "-p", "-o", "name,property,value", ",".join(RECEIVED_PROPS), *chunk],
                                           check=False).stdout))
    datasets = dict(before.datasets)
    for d in work:
        known = datasets.get(d.target)
        if known is None:
            continue
        new = []
        for n in d.pending:
            props = got.get(f"{d.target}@{n}", {})
            if props.get("guid") and props.get("createtxg", "").isdigit():
                new.append(Snapshot(d.target, n, props["guid"], int(props["createtxg"]), 0, {"creation": props.get("creation", "-")}))
        if new:
            have = {s.name for s in known.snapshots}
            snaps = known.snapshots + [s for s in new if s.name not in have]
            datasets[d.target] = replace(known, snapshots=sorted(snaps, key=lambda s: s.createtxg))
    return Listing(before.root, datasets)
