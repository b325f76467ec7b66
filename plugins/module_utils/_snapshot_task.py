# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A periodic snapshot task (TrueNAS's "Periodic Snapshot Tasks"), validated, and one run of it.

A run: probe the host, list the task's tree once, plan (pure: :func:`plan_snapshot_task`), then
take the current slot's snapshot and prune what outlived its lifetime. The module and the timer
entry point both call :func:`run_snapshot_task`.

Rules:

* **Slots, not clocks.** The snapshot a run takes is named after the current schedule slot
  (``Schedule.previous_slot(now)``), so a second run in the same slot finds it and does nothing.
  A run outside the schedule's begin/end window takes none.
* **Atomic.** Every dataset of a run is snapshotted in one zfs call: ``zfs snapshot -r`` for a
  whole tree, ``zfs snapshot a@x b@x ...`` on OpenZFS when some are left out. Old command lines
  (zfs-fuse) take one name per call, so there ``-r`` on the common parent is followed by the
  destruction of the snapshots of the datasets left out (the included ones stay one atomic set).
* **Empty snapshots** (``allow_empty: false``): see :func:`changes_since` for how a change is detected.
* **Pruning** is :func:`._retention.plan_retention`: only this schema's snapshots, never held
  ones or those in ``keep_snapshots``, the newest per dataset always kept. With
  ``hold_pending_snapshots`` (the default) it also keeps what a replication task fed by this task
  has not sent to its target yet, as that task's runs recorded it (:mod:`._pending`).
* **Constant cost.** probe, one listing before and one after, the snapshot call, and destroys
  batched per dataset (OpenZFS ``zfs destroy ds@a,b,c``; zfs-fuse has no comma syntax and needs one
  call per snapshot).
"""
from __future__ import annotations

import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from ._lifetime import Lifetime, LifetimeError
from ._naming import NamingSchema, NamingSchemaError
from ._pending import DEFAULT_PENDING_LAG_CRITICAL, PendingHolds, describe, load_feeds, pending_holds
from ._replication_task import TaskError
from ._retention import RetentionPlan, plan_retention
from ._retention import Snapshot as RetentionSnapshot
from ._schedule import Schedule, ScheduleError
from ._transport import Host, LocalHost, TransportError
from ._tz import TimezoneError, zone
from ._zfs import (
    MAX_NAME,
    Capabilities,
    Dataset,
    DatasetMissing,
    Listing,
    Snapshot,
    ZfsError,
    is_within,
    list_tree,
    probe,
    validate_dataset,
    validate_snapname,
)

DEFAULT_NAMING_SCHEMA = "auto-%Y-%m-%d_%H-%M"
DEFAULT_SCHEDULE = "daily"
DEFAULT_LIFETIME_VALUE = 2
DEFAULT_LIFETIME_UNIT = "week"
# OpenZFS: how many snapshot names one `zfs destroy ds@a,b,c` call gets (keeps argv short).
DESTROY_BATCH = 200
KNOWN_PARAMS = frozenset(
    (
        "name",  # optional label for log lines (the role passes the task's name)
        "dataset",
        "recursive",
        "exclude",
        "naming_schema",
        "schedule",
        "lifetime_value",
        "lifetime_unit",
        "other_lifetimes",
        "keep_snapshots",
        "allow_empty",
        "take_snapshots",
        "timezone",
        "enabled",
        "hold_pending_snapshots",
        "pending_lag_critical",
        "state_dir",  # where the replication tasks this task feeds record their runs (the runner passes its own)
    )
)


# ----------------------------------------------------------------------------------------------------------------
# The task
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotTask:
    dataset: str
    schema: NamingSchema
    schedule: Schedule
    lifetime: Lifetime
    recursive: bool = False
    exclude: tuple[str, ...] = ()
    other_lifetimes: tuple[Lifetime, ...] = ()
    keep_snapshots: frozenset[str] = frozenset()
    allow_empty: bool = True
    take_snapshots: bool = True  # false: prune only (the pruning task of an append-only target, _target_pruning)
    timezone: str | None = None
    enabled: bool = True
    name: str | None = None
    hold_pending_snapshots: bool = True
    pending_lag_critical: int = DEFAULT_PENDING_LAG_CRITICAL
    state_dir: str | None = None

    @property
    def label(self) -> str:
        return self.name or f"{self.dataset} {self.schema.schema}"

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> SnapshotTask:
        """Build and validate a task from module parameters or a timer's config file.

        Raises TaskError naming the field and the fix; None means "the default"."""
        if not isinstance(params, Mapping):
            raise TaskError("snapshot task parameters must be a mapping of the module's options")
        unknown = sorted(str(k) for k in params if k not in KNOWN_PARAMS)
        if unknown:
            raise TaskError(f"unknown option {', '.join(unknown)}: use {', '.join(sorted(KNOWN_PARAMS - {'name', 'state_dir'}))}")
        p = {k: v for k, v in params.items() if v is not None}

        dataset = p.get("dataset")
        _valid(dataset, "dataset")
        if not isinstance(dataset, str):  # for mypy: _valid raised otherwise
            raise TaskError("dataset: a dataset name is required, like pool/data")
        recursive = _bool(p, "recursive", False)
        exclude = _str_list(p, "exclude")
        if exclude and not recursive:
            raise TaskError("exclude needs recursive: true (excluded datasets are children of a recursive dataset)")
        for i, ex in enumerate(exclude):
            _valid(ex, f"exclude[{i}]")
            if not is_within(ex, dataset) or ex == dataset:
                raise TaskError(f"exclude[{i}] {ex} is not inside dataset {dataset}: list child datasets of {dataset} only")

        tz_name = p.get("timezone")
        if tz_name is not None:
            try:
                zone(tz_name, "timezone")
            except TimezoneError as exc:
                raise TaskError(str(exc)) from None
        try:
            schema = NamingSchema(p.get("naming_schema", DEFAULT_NAMING_SCHEMA))
        except NamingSchemaError as exc:
            raise TaskError(str(exc)) from None
        try:
            schedule = Schedule.from_spec(p.get("schedule", DEFAULT_SCHEDULE), timezone=tz_name)
        except ScheduleError as exc:
            raise TaskError(str(exc)) from None
        lifetime = _lifetime(p.get("lifetime_value", DEFAULT_LIFETIME_VALUE), p.get("lifetime_unit", DEFAULT_LIFETIME_UNIT), "")
        others = []
        raw_others = p.get("other_lifetimes") or []
        if not isinstance(raw_others, (list, tuple)):
            raise TaskError("other_lifetimes must be a list of {lifetime_value, lifetime_unit}")
        for i, item in enumerate(raw_others):
            if not isinstance(item, Mapping):
                raise TaskError(f"other_lifetimes[{i}] must be a mapping with lifetime_value and lifetime_unit")
            others.append(_lifetime(item.get("lifetime_value"), item.get("lifetime_unit"), f"other_lifetimes[{i}]: "))
        keep = _str_list(p, "keep_snapshots")
        for i, full in enumerate(keep):
            ds, at, snap = full.partition("@")
            if not at:
                raise TaskError(f"keep_snapshots[{i}] {full!r} is not a full snapshot name: use dataset@snapshot")
            _valid(ds, f"keep_snapshots[{i}]")
            try:
                validate_snapname(snap, f"keep_snapshots[{i}]")
            except ValueError as exc:
                raise TaskError(str(exc)) from None
            if len(full) > MAX_NAME:
                raise TaskError(f"keep_snapshots[{i}] {full!r} is longer than {MAX_NAME} characters, which ZFS refuses")
        name = p.get("name")
        if name is not None and not isinstance(name, str):
            raise TaskError(f"name {name!r} must be a string")
        critical = p.get("pending_lag_critical", DEFAULT_PENDING_LAG_CRITICAL)
        if isinstance(critical, bool) or not isinstance(critical, int) or critical < 1:
            raise TaskError(f"pending_lag_critical {critical!r}: give the seconds a snapshot may wait for replication before its "
                            f"target is critical (a whole number, at least 1; default {DEFAULT_PENDING_LAG_CRITICAL})")
        state_dir = p.get("state_dir")
        if state_dir is not None and not isinstance(state_dir, str):
            raise TaskError(f"state_dir {state_dir!r} must be a path")
        return cls(
            dataset=dataset,
            schema=schema,
            schedule=schedule,
            lifetime=lifetime,
            recursive=recursive,
            exclude=tuple(exclude),
            other_lifetimes=tuple(others),
            keep_snapshots=frozenset(keep),
            allow_empty=_bool(p, "allow_empty", True),
            take_snapshots=_bool(p, "take_snapshots", True),
            timezone=tz_name,
            enabled=_bool(p, "enabled", True),
            name=name or None,
            hold_pending_snapshots=_bool(p, "hold_pending_snapshots", True),
            pending_lag_critical=critical,
            state_dir=state_dir,
        )


def _valid(name: object, field_name: str) -> None:
    try:
        validate_dataset(name, field_name)  # type: ignore[arg-type]
    except ValueError as exc:
        raise TaskError(str(exc)) from None


def _bool(p: Mapping[str, Any], key: str, default: bool) -> bool:
    value = p.get(key, default)
    if not isinstance(value, bool):
        raise TaskError(f"{key} {value!r} must be true or false")
    return value


def _str_list(p: Mapping[str, Any], key: str) -> list[str]:
    value = p.get(key) or []
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise TaskError(f"{key} must be a list of strings")
    return list(value)


def _lifetime(value: object, unit: object, prefix: str) -> Lifetime:
    try:
        return Lifetime(value, unit)  # type: ignore[arg-type]
    except LifetimeError as exc:
        raise TaskError(f"{prefix}{exc}") from None


# ----------------------------------------------------------------------------------------------------------------
# Planning (pure)
# ----------------------------------------------------------------------------------------------------------------


def empty_check_props(caps: Capabilities) -> tuple[str, ...]:
    """The listing properties :func:`changes_since` reads on a host with ``caps``."""
    return ("written",) if caps.version else ("used", "referenced")


def included_datasets(listing: Listing, task: SnapshotTask) -> list[str]:
    """The task's datasets present in ``listing``, parents first: the dataset, and with ``recursive``
    its descendants except the excluded subtrees."""
    if not task.recursive:
        return [task.dataset] if task.dataset in listing.datasets else []
    return [
        name
        for name in listing.datasets
        if is_within(name, task.dataset) and not any(is_within(name, ex) for ex in task.exclude)
    ]


def same_time(parsed: datetime, slot: datetime) -> bool:
    """True when a name's parsed time is the slot: wall time for names without %z, instant with it."""
    if parsed.tzinfo is None:
        return parsed == slot.replace(tzinfo=None)
    return parsed.timestamp() == slot.timestamp()


def _int_prop(obj: Dataset | Snapshot, prop: str) -> int | None:
    try:
        return int(obj.props[prop])
    except (KeyError, ValueError):
        return None


def changes_since(dataset: Dataset, base: Snapshot) -> tuple[bool, str]:
    """Whether ``dataset`` changed since its snapshot ``base``, and how that was decided.

    * OpenZFS (``written`` listed): the dataset's ``written`` (bytes written since its newest snapshot)
      plus the ``written`` of every snapshot after ``base`` (each: since the one before it). Exact,
      up to the transaction group still open (writes of the last seconds are not counted yet).
    * Older command lines (zfs-fuse: no ``written``): changed when the dataset's ``referenced``
      differs from ``base``'s, or ``base`` or a later snapshot has ``used`` > 0 (blocks they hold
      were freed from the dataset: overwritten or deleted). Measured on zfs-fuse: new files, appends,
      deletions and in-place overwrites are seen once their transaction group is written (up to
      ~30 s there). Not seen: a same-size in-place overwrite of blocks that ``base`` shares with an
      identical older snapshot (e.g. one taken by another task with no change in between), since
      no snapshot then holds a block alone. That case takes no snapshot until the next change.
    * Neither property listed: changed (take the snapshot; an extra one is the safe mistake).
    """
    later = [s for s in dataset.snapshots if s.createtxg >= base.createtxg and s is not base]
    written = _int_prop(dataset, "written")
    if written is not None:
        counts = [written] + [_int_prop(s, "written") for s in later]
        if any(c is None for c in counts):
            return True, f"written is unknown for a snapshot after @{base.name}: taking it"
        total = sum(c for c in counts if c is not None)
        if total:
            return True, f"{total} bytes written since @{base.name}"
        return False, f"nothing written since @{base.name} (written=0)"
    ds_ref, base_ref, base_used = _int_prop(dataset, "referenced"), _int_prop(base, "referenced"), _int_prop(base, "used")
    if ds_ref is None or base_ref is None or base_used is None:
        return True, f"cannot tell whether anything was written since @{base.name}: taking it"
    if ds_ref != base_ref:
        return True, f"referenced changed since @{base.name} ({base_ref} -> {ds_ref} bytes)"
    if base_used:
        return True, f"@{base.name} holds {base_used} bytes freed since (overwritten or deleted)"
    for s in later:
        used, ref = _int_prop(s, "used"), _int_prop(s, "referenced")
        if used is None or ref is None or used or ref != base_ref:
            return True, f"changed between @{base.name} and @{s.name}"
    return False, f"nothing written since @{base.name} (referenced unchanged, used=0)"


@dataclass
class SnapshotPlan:
    """What a run does: the slot, the snapshots to take (dataset, reason), the datasets it skips
    (dataset, reason), and the retention plan (destroy/keep with reasons)."""

    slot: datetime | None
    snapshot_name: str | None
    datasets: list[str]
    take: list[tuple[str, str]] = field(default_factory=list)
    skip: list[tuple[str, str]] = field(default_factory=list)
    retention: RetentionPlan = field(default_factory=RetentionPlan)
    reason: str | None = None  # why nothing is taken at all (disabled, outside the window)
    pending: list[dict[str, Any]] = field(default_factory=list)  # per replication task fed: what it still needs

    @property
    def take_names(self) -> list[str]:
        return [f"{ds}@{self.snapshot_name}" for ds, _why in self.take]

    @property
    def has_work(self) -> bool:
        return bool(self.take or self.retention.destroy)

    def as_dict(self) -> dict[str, Any]:
        return {
            "slot": self.slot.isoformat() if self.slot else None,
            "snapshot_name": self.snapshot_name,
            "datasets": list(self.datasets),
            "reason": self.reason,
            "take": [{"snapshot": f"{ds}@{self.snapshot_name}", "reason": why} for ds, why in self.take],
            "skip": [{"dataset": ds, "reason": why} for ds, why in self.skip],
            "destroy": [{"snapshot": name, "reason": why} for name, why in self.retention.destroy],
            "keep": [{"snapshot": name, "reason": why} for name, why in self.retention.keep],
            "pending": [dict(f) for f in self.pending],
        }


def plan_snapshot_task(task: SnapshotTask, listing: Listing, now: datetime, pending: PendingHolds | None = None) -> SnapshotPlan:
    """Decide what one run at ``now`` takes and destroys. Pure: a listing and a clock in, a plan out.

    ``pending`` (from :func:`._pending.pending_holds`) names snapshots that replication tasks fed by this one
    still need: they are kept whatever their lifetime. ``now`` naive is wall time in the task's zone. Raises
    TaskError when a snapshot name would be too long.
    """
    datasets = included_datasets(listing, task)
    if not task.enabled:
        return SnapshotPlan(None, None, datasets, reason="the task is disabled (enabled: false): nothing taken or destroyed")
    slot: datetime | None = None
    name: str | None = None
    plan = SnapshotPlan(None, None, datasets)
    if not task.take_snapshots:
        plan.reason = "take_snapshots is false: this task only prunes"
    elif not task.schedule.in_window(now):
        local = now.astimezone(task.schedule.tz) if now.tzinfo else now
        plan.reason = (
            f"now ({local.strftime('%H:%M')}) is outside the schedule's window "
            f"{task.schedule.begin}-{task.schedule.end}: no snapshot taken"
        )
    else:
        slot = task.schedule.previous_slot(now)
        name = task.schema.format(slot)
        plan.slot, plan.snapshot_name = slot, name
    planned: list[RetentionSnapshot] = []
    for ds_name in datasets:
        ds = listing.datasets[ds_name]
        ours = [(s, when) for s in ds.snapshots for when in [task.schema.parse(s.name)] if when is not None]
        for s, _when in ours:
            planned.append(RetentionSnapshot(s.dataset, s.name, s.createtxg, s.guid, s.userrefs))
        if slot is None or name is None:
            continue
        if len(ds_name) + 1 + len(name) > MAX_NAME:
            raise TaskError(f"naming_schema: snapshot name {ds_name}@{name} would be longer than {MAX_NAME} characters: use a shorter schema")
        present = next((s for s, when in ours if same_time(when, slot)), None)
        if present is not None or name in ds.by_name():
            plan.skip.append((ds_name, f"already has @{present.name if present else name} for slot {_iso(slot)}"))
            continue
        if not task.allow_empty and ours:
            base = max(ours, key=lambda e: e[0].createtxg)[0]
            changed, why = changes_since(ds, base)
            if not changed:
                plan.skip.append((ds_name, f"{why}; allow_empty is false"))
                continue
            plan.take.append((ds_name, f"slot {_iso(slot)}: {why}"))
        else:
            plan.take.append((ds_name, f"slot {_iso(slot)} has no snapshot yet"))
        top = max((s.createtxg for s in ds.snapshots), default=0)
        planned.append(RetentionSnapshot(ds_name, name, top + 1, "", 0))
    plan.retention = plan_retention(
        planned,
        task.schema,
        task.lifetime,
        task.other_lifetimes,
        task.keep_snapshots,
        now,
        tz=task.schedule.tz,
    )
    if pending is not None:
        plan.pending = pending.feeds
        held = [(full, why) for full, why in plan.retention.destroy if full in pending.keep]
        if held:
            plan.retention.destroy = [(full, why) for full, why in plan.retention.destroy if full not in pending.keep]
            plan.retention.keep += [(full, f"{pending.keep[full]}; {why}") for full, why in held]
    return plan


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="minutes")


def common_parent(datasets: Sequence[str]) -> str:
    """The deepest dataset that contains every one of ``datasets`` (same pool)."""
    parts = [d.split("/") for d in datasets]
    common: list[str] = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return "/".join(common)


def snapshot_argvs(caps: Capabilities, listing: Listing, task_root: str, datasets: Sequence[str], name: str) -> tuple[list[list[str]], list[str], bool]:
    """The zfs calls that snapshot ``datasets`` as ``@name``: (argvs, datasets whose new snapshot to
    destroy afterwards, atomic).

    One call whenever possible: ``-r`` when the datasets are a whole subtree, OpenZFS's list form
    otherwise. On old command lines (one name per call) ``-r`` on the common parent, then the
    left-out datasets' new snapshots are destroyed. If a left-out dataset there already has ``@name``,
    ``-r`` would fail, and each dataset is snapshotted on its own (not atomic; logged).
    """
    if not datasets:
        return [], [], True
    wanted = set(datasets)
    root = common_parent(datasets)
    subtree = [d for d in listing.datasets if is_within(d, root)]
    if len(datasets) == 1:
        return [["zfs", "snapshot", f"{datasets[0]}@{name}"]], [], True
    if set(subtree) == wanted:
        return [["zfs", "snapshot", "-r", f"{root}@{name}"]], [], True
    if caps.version:
        return [["zfs", "snapshot", *(f"{d}@{name}" for d in datasets)]], [], True
    if any(name in listing.datasets[d].by_name() for d in subtree):
        return [["zfs", "snapshot", f"{d}@{name}"] for d in datasets], [], False
    return [["zfs", "snapshot", "-r", f"{root}@{name}"]], [d for d in subtree if d not in wanted], True


def destroy_argvs(caps: Capabilities, snapshots: Sequence[str]) -> list[list[str]]:
    """``zfs destroy`` calls for full snapshot names: OpenZFS batches per dataset (``ds@a,b,c``);
    old command lines have no comma syntax (zfs-fuse: "invalid dataset name"), so one call each."""
    if not caps.version:
        return [["zfs", "destroy", full] for full in snapshots]
    by_dataset: dict[str, list[str]] = {}
    for full in snapshots:
        ds, _sep, short = full.partition("@")
        by_dataset.setdefault(ds, []).append(short)
    argvs = []
    for ds, shorts in by_dataset.items():
        for i in range(0, len(shorts), DESTROY_BATCH):
            argvs.append(["zfs", "destroy", f"{ds}@{','.join(shorts[i:i + DESTROY_BATCH])}"])
    return argvs


def snapshot_lists(listing: Listing | None, datasets: Sequence[str]) -> dict[str, list[str]]:
    """{dataset: [snapshot names, oldest first]} for ``datasets`` (what diff mode shows)."""
    if listing is None:
        return {}
    return {d: [s.name for s in listing.datasets[d].snapshots] for d in datasets if d in listing.datasets}


def planned_after(before: dict[str, list[str]], plan: SnapshotPlan) -> dict[str, list[str]]:
    gone = {name for name, _why in plan.retention.destroy}
    after = {ds: [n for n in names if f"{ds}@{n}" not in gone] for ds, names in before.items()}
    for ds, _why in plan.take:
        after.setdefault(ds, []).append(plan.snapshot_name or "")
    return after


# ----------------------------------------------------------------------------------------------------------------
# One run
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class SnapshotTaskResult:
    task: str
    dataset: str
    naming_schema: str
    plan: SnapshotPlan
    check_mode: bool
    taken: list[str] = field(default_factory=list)
    destroyed: list[str] = field(default_factory=list)
    changed: bool = False
    errors: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    capabilities: Capabilities | None = None
    before: dict[str, list[str]] = field(default_factory=dict)
    after: dict[str, list[str]] = field(default_factory=dict)
    duration: float = 0.0

    @property
    def failed(self) -> bool:
        return bool(self.errors)

    @property
    def kept(self) -> list[dict[str, str]]:
        gone = set(self.destroyed)
        return [{"snapshot": n, "reason": why} for n, why in self.plan.retention.keep if n not in gone]

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "changed": self.changed,
            "dataset": self.dataset,
            "naming_schema": self.naming_schema,
            "slot": self.plan.slot.isoformat() if self.plan.slot else None,
            "snapshot_name": self.plan.snapshot_name,
            "taken": list(self.taken),
            "destroyed": list(self.destroyed),
            "kept": self.kept,
            "pending": [dict(f) for f in self.plan.pending],
            "skipped_datasets": [{"dataset": ds, "reason": why} for ds, why in self.plan.skip],
            "plan": self.plan.as_dict(),
            "duration": round(self.duration, 3),
            "errors": list(self.errors),
            "log": list(self.log),
            "capabilities": self.capabilities.as_dict() if self.capabilities else None,
        }


class _Run:
    def __init__(self, task: SnapshotTask, host: Host, log: Callable[[str], None] | None) -> None:
        self.task = task
        self.host = host
        self.lines: list[str] = []
        self._log_cb = log
        self.errors: list[str] = []

    def log(self, line: str) -> None:
        self.lines.append(line)
        if self._log_cb:
            self._log_cb(line)

    def zfs(self, argv: list[str]) -> bool:
        """Run one mutating zfs call; log it; record a failure in errors and return False."""
        self.log("  $ " + shlex.join(argv))  # quoted: a name with a space reads as one argument
        try:
            proc = self.host.run(argv, check=False)
        except TransportError as exc:
            self.errors.append(str(exc))
            self.log(f"  FAILED: {exc}")
            return False
        if proc.returncode != 0:
            msg = f"{shlex.join(argv)} failed (exit {proc.returncode}): {proc.stderr.strip()}"
            self.errors.append(msg)
            self.log(f"  FAILED: {msg}")
            return False
        return True

    def list(self, caps: Capabilities, extra: Sequence[str] = ()) -> Listing:
        try:
            return list_tree(self.host, caps, self.task.dataset, extra_props=extra)
        except DatasetMissing:
            raise TaskError(f"dataset {self.task.dataset} does not exist on {self.host.label}: create it first, or fix the name") from None
        except (ZfsError, TransportError) as exc:
            raise TaskError(str(exc)) from None

    def pending(self, listing: Listing, now: datetime) -> PendingHolds | None:
        """What the replication tasks fed by this task still need, from their recorded runs (None: plain lifetimes)."""
        task = self.task
        if not task.enabled or not task.hold_pending_snapshots:
            return None
        feeds = load_feeds(task.state_dir)
        snaps = {ds: listing.datasets[ds].snapshots for ds in included_datasets(listing, task)}
        holds = pending_holds(snaps, task.schema, feeds, now, task.schedule.tz, task.pending_lag_critical)
        for feed in holds.feeds:
            self.log(describe(feed))
            for note in feed["notes"]:
                self.log(f"note: {note}")
        return holds

    def run(self, check_mode: bool, now: datetime) -> SnapshotTaskResult:
        start = time.monotonic()
        task = self.task
        try:
            caps = probe(self.host)
        except (ZfsError, TransportError) as exc:
            raise TaskError(str(exc)) from None
        extra = () if task.allow_empty else empty_check_props(caps)
        before = self.list(caps, extra)
        plan = plan_snapshot_task(task, before, now, self.pending(before, now))
        self.log(
            f"snapshot task {task.label}: {caps.family}; {len(plan.datasets)} dataset(s)"
            + (f"; slot {_iso(plan.slot)} -> @{plan.snapshot_name}" if plan.slot else "")
            + (" (check mode: nothing changes)" if check_mode else "")
        )
        for ex in task.exclude:
            if ex not in before.datasets:
                self.log(f"note: exclude {ex} does not exist (yet)")
        if plan.reason:
            self.log(plan.reason)
        for ds, why in plan.take:
            self.log(f"take {ds}@{plan.snapshot_name}: {why}")
        for ds, why in plan.skip:
            self.log(f"skip {ds}: {why}")
        for full, why in plan.retention.destroy:
            self.log(f"destroy {full}: {why}")
        if plan.retention.keep:
            self.log(f"keep {len(plan.retention.keep)} snapshot(s) of naming schema {task.schema.schema!r} (reasons in 'kept')")
        before_lists = snapshot_lists(before, plan.datasets)
        result = SnapshotTaskResult(
            task=task.label,
            dataset=task.dataset,
            naming_schema=task.schema.schema,
            plan=plan,
            check_mode=check_mode,
            capabilities=caps,
            before=before_lists,
            log=self.lines,
            errors=self.errors,
        )
        if check_mode or not plan.has_work:
            result.taken = plan.take_names if check_mode else []
            result.destroyed = [n for n, _why in plan.retention.destroy] if check_mode else []
            result.changed = check_mode and plan.has_work
            result.after = planned_after(before_lists, plan) if check_mode else before_lists
        else:
            self.execute(caps, before, plan, result)
        result.duration = time.monotonic() - start
        self.log(
            f"snapshot task {task.label}: {'check mode, ' if check_mode else ''}{len(result.taken)} taken, "
            f"{len(result.destroyed)} destroyed, {result.duration:.2f}s, "
            + ("FAILED: " + "; ".join(self.errors) if self.errors else "ok")
        )
        return result

    def execute(self, caps: Capabilities, before: Listing, plan: SnapshotPlan, result: SnapshotTaskResult) -> None:
        took_ok = True
        name = plan.snapshot_name or ""
        wanted = [ds for ds, _why in plan.take]
        argvs_run: list[list[str]] = []
        if wanted:
            argvs, extras, atomic = snapshot_argvs(caps, before, self.task.dataset, wanted, name)
            if not atomic:
                self.log(f"a dataset left out already has @{name}: snapshotting each dataset on its own (not atomic)")
            for argv in argvs:
                argvs_run.append(argv)
                took_ok = self.zfs(argv) and took_ok
            if took_ok and extras:
                self.log(f"destroy @{name} of the {len(extras)} dataset(s) left out (this zfs takes one name per snapshot call)")
                for argv in destroy_argvs(caps, [f"{d}@{name}" for d in extras]):
                    self.zfs(argv)
        if took_ok:
            for argv in destroy_argvs(caps, [n for n, _why in plan.retention.destroy]):
                self.zfs(argv)
        elif plan.retention.destroy:
            self.log("taking the snapshot failed: pruning skipped this run")
        after = self.list(caps)
        recursive_roots = [argv[-1].partition("@")[0] for argv in argvs_run if "-r" in argv]
        # A dataset created below a -r root between the listing and the snapshot got @name too.
        stray = [
            ds.name
            for ds in after.datasets.values()
            if ds.name not in before.datasets
            and ds.name not in wanted
            and any(is_within(ds.name, root) for root in recursive_roots)
            and name in ds.by_name()
        ]
        if stray:
            self.log(f"destroy @{name} of {', '.join(stray)}: new dataset(s) the recursive snapshot reached, not part of this run")
            results = [self.zfs(argv) for argv in destroy_argvs(caps, [f"{d}@{name}" for d in stray])]  # run every one
            if all(results):
                for d in stray:
                    after.datasets[d].snapshots = [s for s in after.datasets[d].snapshots if s.name != name]
        before_all = {s.full for ds in before.datasets.values() for s in ds.snapshots}
        after_all = {s.full for ds in after.datasets.values() for s in ds.snapshots}
        result.taken = [n for n in plan.take_names if n in after_all and n not in before_all]
        result.destroyed = [n for n, _why in plan.retention.destroy if n in before_all and n not in after_all]
        result.after = snapshot_lists(after, included_datasets(after, self.task))
        result.changed = before_all != after_all
        missing = [n for n in plan.take_names if n not in after_all]
        if missing and not self.errors:
            self.errors.append(f"after the run {', '.join(missing)} do not exist")


def run_snapshot_task(
    params: dict[str, Any],
    check_mode: bool = False,
    log: Callable[[str], None] | None = None,
    now: datetime | None = None,
) -> SnapshotTaskResult:
    """Validate ``params`` (the module's options) and run the task once on this host.

    Raises TaskError for bad input, a missing dataset, or a host whose zfs cannot be probed or
    listed (nothing changed then). Failures while taking or destroying are in the result's errors.
    ``now`` defaults to the current time; a naive ``now`` is wall time in the task's time zone.
    """
    task = SnapshotTask.from_params(params)
    now = now or datetime.now(timezone.utc)
    return _Run(task, LocalHost(), log).run(check_mode=check_mode, now=now)


__all__ = [
    "SnapshotPlan",
    "SnapshotTask",
    "SnapshotTaskResult",
    "TaskError",
    "changes_since",
    "destroy_argvs",
    "plan_snapshot_task",
    "run_snapshot_task",
    "snapshot_argvs",
]
