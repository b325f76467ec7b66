# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pure planner: (task, source listing, target listing) -> plan. No I/O here.

The incremental base of a dataset is the newest source snapshot whose guid is also on the
target; names alone never decide. A target that has snapshots the source does not have
after that base (diverged), or that shares no snapshot with the source (unrelated), is
refused with an error that says how to proceed; nothing is destroyed without consent.

Every destruction a run may cause is in the plan: snapshots destroyed before sending
(``destroy_before``, consented with allow_rollback / allow_from_scratch), a rollback to the base
(``rollback``), what a ``zfs recv -F`` replaces (``force_destroys``; -F only on a full stream into
an existing target, which allow_from_scratch consents to), and target retention
(``destroy_after``). Retention is decided on guids, on the target as it is once the sends are
done (:func:`target_retention`); the plan shows it for the projected target, and the run decides
it again on the target it listed after sending.

A first transfer (no common snapshot) does not send what target retention would destroy right after
(:func:`first_run_skips`, like TrueNAS): the full stream starts at the oldest snapshot the target keeps,
and the skipped ones are in the plan (``skipped``) with the reason. The newest selected snapshot is
never skipped: it becomes the next run's incremental base.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Callable, Protocol

from ._zfs import Dataset, Listing, Snapshot, is_within


class _Schema(Protocol):
    def parse(self, name: str) -> datetime | None:
        ...


class _Schedule(Protocol):
    def matches(self, when: datetime) -> bool:
        ...


@dataclass
class Selection:
    """Which source snapshots a task replicates.

    A snapshot is selected when its name parses under one of ``naming_schemas`` (and, with
    ``schedule``, its parsed time is a slot of that schedule: only_matching_schedule), or fully
    matches ``name_regex``. ``names`` (a run-once list) narrows that further to those names.
    """

    naming_schemas: Sequence[_Schema] = ()
    name_regex: re.Pattern | None = None
    schedule: _Schedule | None = None
    names: frozenset[str] | None = None
    # Answers by name: a recursive tree repeats the same few names in every dataset, and parsing a
    # name against each schema is the planner's main cost on a large fleet.
    _matches: dict[str, bool] = field(default_factory=dict, init=False, repr=False, compare=False)
    _times: dict[str, datetime | None] = field(default_factory=dict, init=False, repr=False, compare=False)

    def matches(self, name: str) -> bool:
        known = self._matches.get(name)
        if known is None:
            known = self._matches[name] = self._match(name)
        return known

    def _match(self, name: str) -> bool:
        if self.names is not None and name not in self.names:
            return False
        if self.name_regex is not None and self.name_regex.fullmatch(name):
            return True
        for schema in self.naming_schemas:
            when = schema.parse(name)
            if when is not None and (self.schedule is None or self.schedule.matches(when)):
                return True
        return False

    def time_of(self, name: str) -> datetime | None:
        """The time in the name by the first schema that parses it (for lifetimes)."""
        if name in self._times:
            return self._times[name]
        when = next((w for w in (schema.parse(name) for schema in self.naming_schemas) if w is not None), None)
        self._times[name] = when
        return when


@dataclass
class TargetRetention:
    """Which target snapshots a run may destroy (retention_policy source/custom/none).

    ``lifetime`` is a callable giving the expiry of a snapshot from its name time (custom);
    ``now`` is the run's time, aware.
    """

    policy: str = "none"  # none | source | custom
    expires: Callable[[str, datetime], datetime | None] | None = None
    now: datetime | None = None


@dataclass
class PlanTask:
    """What the planner needs to know of a replication task."""

    sources: list[str]
    target: str
    selection: Selection
    recursive: bool = False
    exclude: list[str] = field(default_factory=list)
    readonly: str = "set"  # set | require | ignore
    allow_from_scratch: bool = False
    allow_rollback: bool = False
    replicate: bool = False  # full filesystem: one send -R stream for the whole tree
    hold_base: bool = False  # the run holds the newest common snapshot and releases the previous one
    retention: TargetRetention = field(default_factory=TargetRetention)


@dataclass
class Send:
    """One zfs send | zfs recv stream."""

    source: str
    target: str
    mode: str  # full | I | i
    snapshot: str  # short name of the newest snapshot in this stream
    base: str | None = None  # short name of the incremental base
    snapshots: list[str] = field(default_factory=list)  # every snapshot this stream creates on the target
    force: bool = False  # zfs recv -F: only a full stream into an existing target (allow_from_scratch)
    replicate: bool = False  # zfs send -R
    token: str | None = None  # resume an interrupted receive (zfs send -t)
    key_file: str | None = None  # encryption: where the new target's key is, on the target
    key_is_temp: bool = False

    def describe(self) -> str:
        if self.token:
            return f"resume {self.target} (zfs send -t)"
        flags = (" -R" if self.replicate else "") + (" (recv -F)" if self.force else "")
        if self.mode == "full":
            return f"full{flags} {self.source}@{self.snapshot} -> {self.target}"
        return (
            f"incremental -{self.mode}{flags} {self.source}@{self.base} -> @{self.snapshot} "
            f"({len(self.snapshots)} snapshots) -> {self.target}"
        )


@dataclass
class DatasetPlan:
    source: str
    target: str
    action: str  # full | incremental | in_sync | no_snapshots | refused
    base: str | None = None
    sends: list[Send] = field(default_factory=list)
    message: str = ""
    destroy_before: list[str] = field(default_factory=list)  # target snapshots destroyed before sending (consented)
    destroy_after: list[tuple[str, str]] = field(default_factory=list)  # retention: (snapshot, reason)
    # allow_rollback: the target is rolled back to the base before the incremental (zfs rollback, never recv -F).
    rollback: bool = False
    # What the one zfs recv -F of a from-scratch full stream replaces besides destroy_before (target descendants).
    force_destroys: list[str] = field(default_factory=list)
    # guids of the target snapshots in destroy_before, as listed: the run checks them again right before destroying.
    destroy_guids: dict[str, str] = field(default_factory=dict)
    # A first transfer: selected source snapshots not sent because target retention would destroy them at once.
    skipped: list[tuple[str, str]] = field(default_factory=list)

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
        return (
            bool(self.sends)
            or self.create_target_root
            or bool(self.set_readonly)
            or any(d.destroy_before or d.destroy_after or d.rollback for d in self.datasets)
        )

    def as_list(self) -> list[dict]:
        out = []
        for d in self.datasets:
            item = asdict(d)
            item["sends"] = [
                dict({k: v for k, v in asdict(s).items() if k not in ("key_file", "key_is_temp", "token")}, description=s.describe())
                for s in d.sends
            ]
            item.pop("destroy_guids", None)
            item["pending"] = d.pending
            out.append(item)
        return out


class PlanError(Exception):
    """The task cannot be planned at all (bad sources/target combination)."""


def target_root(sources: Sequence[str], target: str, source_root: str) -> str:
    """Where a source root lands: the target itself for one source, target/<last component> for several."""
    if len(sources) == 1:
        return target
    return f"{target}/{source_root.rsplit('/', 1)[-1]}"


def target_for(task: PlanTask, source_root: str) -> str:
    return target_root(task.sources, task.target, source_root)


def source_datasets(task: PlanTask, source_root: str, listing: Listing) -> list[Dataset]:
    """The source root and, when recursive, its descendants minus excluded subtrees (parents first)."""
    root = listing.get(source_root)
    if root is None:
        raise PlanError(f"source_datasets: {source_root} does not exist on the source host")
    if not task.recursive or task.replicate:
        return [root]
    return [
        ds
        for name, ds in listing.datasets.items()
        if is_within(name, source_root) and not any(is_within(name, ex) for ex in task.exclude)
    ]


def _selected(ds: Dataset, selection: Selection) -> list[Snapshot]:
    return [s for s in ds.snapshots if selection.matches(s.name)]


def _chain(
    source: str, target: str, snaps: list[Snapshot], selected: list[Snapshot], base: Snapshot | None, replicate: bool = False
) -> list[Send]:
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
        sends.append(Send(source, target, "full", first.name, None, [first.name], replicate=replicate))
        prev = first
        after = [s for s in after if s.createtxg > first.createtxg]
        if not todo:
            return sends
    selected_names = {s.name for s in todo}
    newest = todo[-1]
    span = [s for s in after if s.createtxg <= newest.createtxg]
    if replicate or all(s.name in selected_names for s in span):
        # -R -I sends every snapshot in the span; the plan says so.
        names = [s.name for s in span] if replicate else [s.name for s in todo]
        sends.append(Send(source, target, "I", newest.name, prev.name, names, replicate=replicate))
        return sends
    for s in todo:
        sends.append(Send(source, target, "i", s.name, prev.name, [s.name]))
        prev = s
    return sends


def first_run_skips(task: PlanTask, selected: Sequence[Snapshot]) -> list[tuple[str, str]]:
    """Selected snapshots a first transfer leaves out, with reasons: those target retention would destroy right after.

    Only ``retention_policy: custom`` expires snapshots on a target that shares nothing with the source yet
    (``source`` keeps whatever the source has). The newest selected snapshot is never skipped: it becomes the
    incremental base of the next run (retention never destroys it either). A snapshot no lifetime applies to
    is kept, as retention keeps it. ``replicate`` (zfs send -R) sends every snapshot of the tree, so nothing is skipped.
    """
    ret = task.retention
    if ret.policy != "custom" or ret.expires is None or ret.now is None or task.replicate or len(selected) < 2:
        return []
    out: list[tuple[str, str]] = []
    for s in selected[:-1]:
        if not _schema_match(task, s.name):
            continue
        expires = ret.expires(s.name, ret.now)
        if expires is not None and expires < ret.now:
            out.append((s.name, f"expired {expires.isoformat(timespec='minutes')} under the target's retention (retention_policy=custom): "
                                "not sent, it would be destroyed right after"))
    return out


def _first_transfer(src: Dataset, target_name: str, selected: list[Snapshot], task: PlanTask) -> tuple[list[Send], list[tuple[str, str]]]:
    """The streams of a first transfer, without what retention would destroy at once, and what was left out."""
    skipped = first_run_skips(task, selected)
    gone = {name for name, _why in skipped}
    kept = [s for s in selected if s.name not in gone]
    return _chain(src.name, target_name, src.snapshots, kept, None, task.replicate), skipped


def plan_dataset(src: Dataset, target_name: str, tgt: Dataset | None, task: PlanTask) -> DatasetPlan:
    selection = task.selection
    selected = _selected(src, selection)
    if not selected and (tgt is None or not tgt.snapshots):
        return DatasetPlan(src.name, target_name, "no_snapshots", message=f"{src.name}: no snapshot matches the task's selection")
    if tgt is None:
        sends, skipped = _first_transfer(src, target_name, selected, task)
        return DatasetPlan(src.name, target_name, "full", None, sends, skipped=skipped)
    if tgt.type != src.type:
        return DatasetPlan(
            src.name, target_name, "refused",
            message=f"target {target_name} is a {tgt.type} but source {src.name} is a {src.type}: choose another target_dataset",
        )
    on_target = tgt.by_guid()
    base = next((s for s in reversed(src.snapshots) if s.guid in on_target), None)
    if base is None:
        if task.allow_from_scratch:
            sends, skipped = _first_transfer(src, target_name, selected, task)
            if sends:
                sends[0].force = True  # a full stream into an existing dataset needs -F: what it replaces is listed
            return DatasetPlan(
                src.name, target_name, "full", None, sends,
                message=f"allow_from_scratch: target {target_name} shares no snapshot with the source and is replaced",
                destroy_before=[t.name for t in tgt.snapshots],
                destroy_guids={t.name: t.guid for t in tgt.snapshots},
                skipped=skipped,
            )
        if not tgt.snapshots:
            why = f"target {target_name} exists and has no snapshots, so it shares no history with {src.name}"
        else:
            why = (
                f"target {target_name} has {len(tgt.snapshots)} snapshot(s) but none with the same guid as a snapshot of "
                f"{src.name}: it is unrelated"
            )
        return DatasetPlan(
            src.name, target_name, "refused",
            message=(
                f"{why}. Nothing was changed. Point target_dataset at a new dataset, or set allow_from_scratch: true "
                "to destroy the target's snapshots and data and replicate from scratch"
            ),
        )
    tbase = on_target[base.guid]
    newer = [t for t in tgt.snapshots if t.createtxg > tbase.createtxg]
    destroy_before: list[str] = []
    if newer:
        names = ", ".join(t.name for t in newer[:5]) + (" ..." if len(newer) > 5 else "")
        if not task.allow_rollback:
            return DatasetPlan(
                src.name, target_name, "refused", base.name,
                message=(
                    f"target {target_name} has diverged: it has snapshot(s) newer than the common snapshot {base.name} "
                    f"that the source does not have ({names}). Nothing was changed. Destroy them on the target if they "
                    "are not needed, or set allow_rollback: true to roll the target back to the common snapshot"
                ),
            )
        destroy_before = [t.name for t in newer]
    guids = {t.name: t.guid for t in newer}
    sends = _chain(src.name, target_name, src.snapshots, selected, base, task.replicate)
    if not sends and destroy_before:
        # Nothing to send but the target must be rolled back to the base: roll back only.
        return DatasetPlan(src.name, target_name, "rollback", base.name, [], destroy_before=destroy_before, rollback=True,
                           destroy_guids=guids, message=f"allow_rollback: target {target_name} is rolled back to {base.name}")
    if not sends:
        return DatasetPlan(src.name, target_name, "in_sync", base.name)
    # allow_rollback: changes made on the target after the base would make the receive fail ("has been modified").
    # Roll back to the base first, as a step of its own, when the target diverged or was written to since the base
    # (`written`; unknown on older command lines, so the rollback is planned there whenever allow_rollback is set).
    # Never recv -F on an incremental: at the end of a receive it destroys, unlisted, every target snapshot newer
    # than the base (even ones taken during a long transfer) and, with -R, datasets the source no longer has.
    written = tgt.props.get("written")
    modified = written is None or written in ("", "-") or (written.isdigit() and int(written) > 0)
    rollback = task.allow_rollback and (bool(destroy_before) or modified)
    message = f"allow_rollback: target {target_name} is rolled back to {base.name} first" if rollback else ""
    return DatasetPlan(src.name, target_name, "incremental", base.name, sends, message=message, destroy_before=destroy_before,
                       rollback=rollback, destroy_guids=guids)


def target_retention(task: PlanTask, src: Dataset, snapshots: Sequence[Snapshot], released: str | None = None) -> list[tuple[str, str]]:
    """Target snapshots to destroy under retention_policy, with reasons, decided on guids.

    ``snapshots`` is the target dataset as it is (after the sends, in a run) or as the plan leaves it (check mode).
    Only snapshots the task's schemas (or name_regex) name are candidates. Never destroyed: the newest snapshot
    whose guid is on both sides (the next run's base, whatever its name on either side), held snapshots (but for
    one hold on ``released``, the guid whose hold of ours this run moves away), and, for ``source``, a snapshot
    whose guid is on the source. A target that shares no guid with the source is never pruned.
    """
    ret = task.retention
    if ret.policy == "none":
        return []
    src_guids = {s.guid for s in src.snapshots}
    common = [t for t in snapshots if t.guid in src_guids]
    if not common:
        return []
    newest_common = max(common, key=lambda t: t.createtxg).guid
    out: list[tuple[str, str]] = []
    for t in snapshots:
        refs = t.userrefs - (1 if released is not None and t.guid == released and t.userrefs > 0 else 0)
        if t.guid == newest_common or refs > 0 or not _schema_match(task, t.name):
            continue
        if ret.policy == "source":
            if t.guid not in src_guids:
                out.append((t.name, "no longer on the source (retention_policy=source)"))
        elif ret.policy == "custom" and ret.expires is not None and ret.now is not None:
            expires = ret.expires(t.name, ret.now)
            if expires is not None and expires < ret.now:
                out.append((t.name, f"expired {expires.isoformat(timespec='minutes')} (retention_policy=custom)"))
    return out


def projected_target(dplan: DatasetPlan, src: Dataset, tgt: Dataset | None) -> list[Snapshot]:
    """The target's snapshots once ``dplan`` has run: what it destroys first is gone (all of them for a
    from-scratch full stream), and what it sends is there with the source's guids, newest last."""
    if tgt is None or (dplan.action == "full" and dplan.base is None):
        kept: list[Snapshot] = []
    else:
        gone = set(dplan.destroy_before)
        kept = [t for t in tgt.snapshots if t.name not in gone]
    top = max((t.createtxg for t in kept), default=0)
    by_name = src.by_name()
    sent = [by_name[n] for n in dplan.pending if n in by_name]
    return kept + [Snapshot(dplan.target, s.name, s.guid, top + i + 1) for i, s in enumerate(sent)]


def plan_target_retention(dplan: DatasetPlan, src: Dataset, tgt: Dataset | None, task: PlanTask) -> list[tuple[str, str]]:
    """What target retention will destroy once ``dplan`` has run (the plan's preview; the run decides again)."""
    if task.retention.policy == "none" or tgt is None or dplan.action not in ("incremental", "in_sync", "full"):
        return []
    released = None
    if task.hold_base and dplan.pending and dplan.base:
        base = src.by_name().get(dplan.base)
        released = base.guid if base is not None else None
    return target_retention(task, src, projected_target(dplan, src, tgt), released)


def _schema_match(task: PlanTask, name: str) -> bool:
    """Retention looks at every snapshot the task's schemas name, even off-schedule or outside a run-once list."""
    return task.selection.time_of(name) is not None or bool(task.selection.name_regex and task.selection.name_regex.fullmatch(name))


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
            dplan = plan_dataset(src, tname, tgt, task)
            if task.replicate and target is not None and any(s.force for s in dplan.sends):
                # zfs recv -R -F replaces the whole tree: every target descendant and its snapshots may go.
                dplan.force_destroys = [n for n in target.datasets if n != tname and is_within(n, tname)]
            if dplan.action in ("refused", "no_snapshots") and tgt is None:
                refused.append(src.name)
            dplan.destroy_after = plan_target_retention(dplan, src, tgt, task)
            datasets.append(dplan)
        # readonly is set on each root on the target; descendants inherit it.
        root_plan = next(d for d in datasets if d.source == root)
        wants_readonly = task.readonly in ("set", "require")
        already = troot_ds is not None and troot_ds.props.get("readonly") == "on"
        if wants_readonly and not already and root_plan.action in ("full", "incremental", "in_sync", "rollback"):
            readonly.append(troot)
    return Plan(datasets=datasets, create_target_root=create_root, set_readonly=readonly)
