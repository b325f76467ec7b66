# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pure planner: (task, source listing, target listing) -> plan. No I/O here.

The incremental base of a dataset is the newest source snapshot whose guid is also on the
target; names alone never decide. A target that has snapshots the source does not have
after that base (diverged), or that shares no snapshot with the source (unrelated), is
refused with an error that says how to proceed; nothing is destroyed without consent.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Protocol, Sequence

from ._zfs import Dataset, Listing, Snapshot, is_within


class _Matcher(Protocol):
    def matches(self, name: str) -> bool: ...


@dataclass
class Selection:
    """Which source snapshots a task replicates: any naming schema, or a name regex."""

    naming_schemas: Sequence[_Matcher] = ()
    name_regex: re.Pattern | None = None

    def matches(self, name: str) -> bool:
        if self.name_regex is not None and self.name_regex.fullmatch(name):
            return True
        return any(s.matches(name) for s in self.naming_schemas)


@dataclass
class PlanTask:
    """What the planner needs to know of a replication task."""

    sources: list[str]
    target: str
    selection: Selection
    recursive: bool = False
    exclude: list[str] = field(default_factory=list)
    readonly: str = "set"  # set | require | ignore


@dataclass
class Send:
    """One zfs send | zfs recv stream."""

    source: str
    target: str
    mode: str  # full | I | i
    snapshot: str  # short name of the newest snapshot in this stream
    base: str | None = None  # short name of the incremental base
    snapshots: list[str] = field(default_factory=list)  # every snapshot this stream creates on the target

    def describe(self) -> str:
        if self.mode == "full":
            return f"full {self.source}@{self.snapshot} -> {self.target}"
        return f"incremental -{self.mode} {self.source}@{self.base} -> @{self.snapshot} ({len(self.snapshots)} snapshots) -> {self.target}"


@dataclass
class DatasetPlan:
    source: str
    target: str
    action: str  # full | incremental | in_sync | no_snapshots | refused
    base: str | None = None
    sends: list[Send] = field(default_factory=list)
    message: str = ""

    @property
    def pending(self) -> list[str]:
        return [n for s in self.sends for n in s.snapshots]


@dataclass
class Plan:
    datasets: list[DatasetPlan]
    create_target_root: bool = False  # several sources: the container dataset is created
    set_readonly: list[str] = field(default_factory=list)  # target datasets to set readonly=on

    @property
    def errors(self) -> list[str]:
        return [d.message for d in self.datasets if d.action == "refused"]

    @property
    def sends(self) -> list[Send]:
        return [s for d in self.datasets for s in d.sends]

    @property
    def has_work(self) -> bool:
        return bool(self.sends) or self.create_target_root or bool(self.set_readonly)

    def as_list(self) -> list[dict]:
        out = []
        for d in self.datasets:
            item = asdict(d)
            item["sends"] = [dict(asdict(s), description=s.describe()) for s in d.sends]
            item["pending"] = d.pending
            out.append(item)
        return out


class PlanError(Exception):
    """The task cannot be planned at all (bad sources/target combination)."""


def target_for(task: PlanTask, source_root: str) -> str:
    """Where a source root lands: the target itself for one source, target/<last component> for several."""
    if len(task.sources) == 1:
        return task.target
    return f"{task.target}/{source_root.rsplit('/', 1)[-1]}"


def source_datasets(task: PlanTask, source_root: str, listing: Listing) -> list[Dataset]:
    """The source root and, when recursive, its descendants minus excluded subtrees (parents first)."""
    root = listing.get(source_root)
    if root is None:
        raise PlanError(f"source_datasets: {source_root} does not exist on the source host")
    if not task.recursive:
        return [root]
    return [
        ds
        for name, ds in listing.datasets.items()
        if is_within(name, source_root) and not any(is_within(name, ex) for ex in task.exclude)
    ]


def _selected(ds: Dataset, selection: Selection) -> list[Snapshot]:
    return [s for s in ds.snapshots if selection.matches(s.name)]


def _chain(source: str, target: str, snaps: list[Snapshot], selected: list[Snapshot], base: Snapshot | None) -> list[Send]:
    """Streams that bring the target from ``base`` (or nothing) to the newest selected snapshot.

    One -I stream covers every snapshot between base and newest; that is right only when all
    of them are selected. When the selection skips some, -i hops from selected to selected.
    """
    sends: list[Send] = []
    after = [s for s in snaps if base is None or s.createtxg > base.createtxg]
    todo = [s for s in selected if base is None or s.createtxg > base.createtxg]
    if not todo:
        return sends
    prev = base
    if prev is None:
        first = todo.pop(0)
        sends.append(Send(source, target, "full", first.name, None, [first.name]))
        prev = first
        after = [s for s in after if s.createtxg > first.createtxg]
        if not todo:
            return sends
    selected_names = {s.name for s in todo}
    newest = todo[-1]
    span = [s for s in after if s.createtxg <= newest.createtxg]
    if all(s.name in selected_names for s in span):
        sends.append(Send(source, target, "I", newest.name, prev.name, [s.name for s in todo]))
        return sends
    for s in todo:
        sends.append(Send(source, target, "i", s.name, prev.name, [s.name]))
        prev = s
    return sends


def plan_dataset(src: Dataset, target_name: str, tgt: Dataset | None, selection: Selection) -> DatasetPlan:
    selected = _selected(src, selection)
    if tgt is None:
        if not selected:
            return DatasetPlan(src.name, target_name, "no_snapshots", message=f"{src.name}: no snapshot matches the task's naming schema")
        return DatasetPlan(src.name, target_name, "full", None, _chain(src.name, target_name, src.snapshots, selected, None))
    if tgt.type != src.type:
        return DatasetPlan(
            src.name, target_name, "refused",
            message=f"target {target_name} is a {tgt.type} but source {src.name} is a {src.type}: choose another target_dataset",
        )
    if not tgt.snapshots:
        return DatasetPlan(
            src.name, target_name, "refused",
            message=(
                f"target {target_name} exists and has no snapshots, so it shares no history with {src.name}: "
                "replicating would overwrite it. Point target_dataset at a new dataset, or destroy the target yourself "
                "(allow_from_scratch is required to let the task replace it)"
            ),
        )
    on_target = tgt.by_guid()
    base = next((s for s in reversed(src.snapshots) if s.guid in on_target), None)
    if base is None:
        return DatasetPlan(
            src.name, target_name, "refused",
            message=(
                f"target {target_name} has {len(tgt.snapshots)} snapshot(s) but none with the same guid as a snapshot of "
                f"{src.name}: it is unrelated. Nothing was changed. Point target_dataset elsewhere, or allow the task to "
                "replicate from scratch (allow_from_scratch), which destroys the target's snapshots"
            ),
        )
    tbase = on_target[base.guid]
    newer = [t for t in tgt.snapshots if t.createtxg > tbase.createtxg]
    if newer:
        names = ", ".join(t.name for t in newer[:5]) + (" ..." if len(newer) > 5 else "")
        return DatasetPlan(
            src.name, target_name, "refused", base.name,
            message=(
                f"target {target_name} has diverged: it has snapshot(s) newer than the common snapshot {base.name} "
                f"that the source does not have ({names}). Nothing was changed. Destroy or rename them on the target "
                "if they are not needed, then run again"
            ),
        )
    sends = _chain(src.name, target_name, src.snapshots, selected, base)
    if not sends:
        return DatasetPlan(src.name, target_name, "in_sync", base.name)
    return DatasetPlan(src.name, target_name, "incremental", base.name, sends)


def plan(task: PlanTask, source: Listing, target: Listing | None) -> Plan:
    """Plan every dataset of ``task``. ``target`` is None when the target root does not exist."""
    datasets: list[DatasetPlan] = []
    create_root = len(task.sources) > 1 and (target is None or target.get(task.target) is None)
    readonly: list[str] = []
    for root in task.sources:
        troot = target_for(task, root)
        troot_ds = target.get(troot) if target is not None else None
        members = source_datasets(task, root, source)
        if task.readonly == "require" and troot_ds is not None and troot_ds.props.get("readonly") != "on":
            message = (
                f"target {troot} is not read-only and readonly=require: set readonly=on on it "
                "(zfs set readonly=on) or use readonly=set to let the task set it"
            )
            datasets += [DatasetPlan(s.name, troot + s.name[len(root):], "refused", message=message) for s in members]
            continue
        refused: list[str] = []  # source datasets whose subtree cannot be received
        for src in members:
            tname = troot + src.name[len(root):]
            if any(is_within(src.name, r) for r in refused):
                datasets.append(DatasetPlan(src.name, tname, "refused", message=f"{src.name}: skipped because a parent was refused"))
                continue
            tgt = target.get(tname) if target is not None else None
            dplan = plan_dataset(src, tname, tgt, task.selection)
            if dplan.action in ("refused", "no_snapshots") and tgt is None:
                refused.append(src.name)
            datasets.append(dplan)
        # readonly is set on each root on the target; descendants inherit it.
        root_plan = next(d for d in datasets if d.source == root)
        wants_readonly = task.readonly in ("set", "require")
        if wants_readonly and root_plan.action in ("full", "incremental", "in_sync"):
            if troot_ds is None or troot_ds.props.get("readonly") != "on":
                readonly.append(troot)
    return Plan(datasets=datasets, create_target_root=create_root, set_readonly=readonly)
