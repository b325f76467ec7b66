# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Pending snapshots (TrueNAS's "Hold Pending Snapshots"): a snapshot task's pruning keeps what a replication task
it feeds has not sent to its target yet.

Three steps, each on what the one before wrote down, never on a guess:

* **Record** (:func:`record_replicated`, at the end of every run of a replication task, in the task's state file
  ``STATE_DIR/repl-NAME.json`` under ``replicated``): per source dataset, the newest snapshot the target is known
  to have: the last snapshot of a run's sends when the run verified them (same guid on both sides), else the
  run's planned base (the newest snapshot with the same guid on both sides when the run listed them). A run that
  failed before it could plan (an unreachable target) changes nothing, so the record is the last known truth.
  The record also says where the task replicates (direction, target) and which snapshots it selects (naming
  schemas or name regex).
* **Match** (:func:`load_feeds`): a snapshot task feeds a replication task when that task's record, in the same
  state directory, names one of the snapshot task's datasets and selects the snapshot task's names (the same
  rule as TrueNAS: source dataset and naming schema, not a declared link). Only push tasks count: a pull task
  runs on the target host and records there. A record whose task was removed (its config file is gone) or
  disabled (``enabled: false`` in it) feeds nothing. A task that never finished a run has no record and holds
  nothing: its first run is a full stream of what the source has then.
* **Hold** (:func:`pending_holds`): on each such dataset, the snapshot task keeps every snapshot of its schema
  that the replication task selects, from the recorded one (the next incremental base) on. With several
  replication tasks (fan-out) each holds its own, so the slowest target decides. Lifetimes apply again as soon
  as a target has the snapshots: nothing is kept longer than the slowest target needs.

Bounded, and seen: a replication task whose oldest pending snapshot has waited longer than the snapshot task's
``pending_lag_critical`` is ``critical`` in the snapshot task's result, state, log and metrics, and in
``zfs_replication_info``'s status of that replication task (:func:`status_reasons`), so a dead target is seen
before it fills the source pool. ``hold_pending_snapshots: false`` on the snapshot task restores plain lifetimes.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ._naming import NamingSchema, NamingSchemaError
from ._planner import Selection

RECORD_VERSION = 1
DEFAULT_PENDING_LAG_CRITICAL = 49 * 3600  # the same as zfs_replication_info's lag_critical


# ----------------------------------------------------------------------------------------------------------------
# Record: what a replication run leaves for the snapshot tasks that feed it
# ----------------------------------------------------------------------------------------------------------------


def _target_label(params: Mapping[str, Any]) -> str:
    target = str(params.get("target_dataset") or "")
    ssh = params.get("ssh") if isinstance(params.get("ssh"), Mapping) else None
    if params.get("transport", "ssh") == "local" or not ssh:
        return target
    port = ssh.get("port") or 22
    return f"{ssh.get('host')}{'' if port == 22 else f':{port}'}:{target}"


def _schemas(params: Mapping[str, Any]) -> list[str]:
    out = [str(s) for key in ("naming_schema", "also_include_naming_schema") for s in (params.get(key) or [])]
    for item in params.get("periodic_snapshot_tasks") or []:
        if isinstance(item, Mapping) and item.get("naming_schema"):
            out.append(str(item["naming_schema"]))
    return out


def record_replicated(previous: Any, params: Mapping[str, Any], details: Any, now: datetime) -> dict[str, Any]:
    """The ``replicated`` record of a replication task after a run: ``previous`` updated with the run's ``details``
    (the state file's ``details``: ``datasets`` by target, each with ``source``, ``base``, ``snapshots_sent`` and
    ``error``). Datasets the run did not reach keep their earlier entry."""
    old = previous if isinstance(previous, Mapping) else {}
    datasets: dict[str, Any] = dict(old.get("datasets") or {}) if isinstance(old.get("datasets"), Mapping) else {}
    runs = details.get("datasets") if isinstance(details, Mapping) else None
    stamp = now.astimezone(timezone.utc).isoformat(timespec="seconds")
    for target, item in (runs or {}).items() if isinstance(runs, Mapping) else ():
        if not isinstance(item, Mapping) or not item.get("source"):
            continue
        sent = item.get("snapshots_sent") or []
        # Sent and verified (the run checks every sent snapshot's guid on the target), else the guid-checked base.
        newest = sent[-1] if sent and not item.get("error") else item.get("base")
        if not newest:
            continue
        datasets[str(item["source"])] = {"snapshot": str(newest), "target": str(target), "recorded": stamp}
    regex = params.get("name_regex")
    return {
        "version": RECORD_VERSION,
        "direction": str(params.get("direction") or "push"),
        "target": _target_label(params),
        "naming_schemas": _schemas(params),
        "name_regex": str(regex) if regex else None,
        "datasets": datasets,
    }


# ----------------------------------------------------------------------------------------------------------------
# Match: which replication tasks a snapshot task feeds
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Feed:
    """A replication task as its record describes it: where it sends and how far each source dataset got."""

    task: str
    target: str
    selection: Selection
    datasets: dict[str, str]  # source dataset -> newest snapshot the target has (short name)

    def selects(self, name: str) -> bool:
        return self.selection.matches(name)


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def feed_from_state(state: Any) -> Feed | None:
    """The Feed a replication task's state describes; None when it holds nothing (no record, pull, removed, disabled)."""
    if not isinstance(state, Mapping) or state.get("kind") != "replication":
        return None
    record = state.get("replicated")
    if not isinstance(record, Mapping) or record.get("direction") != "push" or not record.get("datasets"):
        return None
    config = state.get("config")
    if isinstance(config, str) and config:
        data = _read_json(Path(config))
        if data is None and not os.path.exists(config):
            return None  # the task was removed (declared is actual): its last record holds nothing
        params = data.get("params") if isinstance(data, Mapping) else None
        if isinstance(params, Mapping) and params.get("enabled") is False:
            return None
    try:
        schemas = [NamingSchema(s) for s in record.get("naming_schemas") or []]
        regex = re.compile(record["name_regex"]) if record.get("name_regex") else None
    except (NamingSchemaError, re.error, TypeError):
        return None
    datasets = {str(k): str(v["snapshot"]) for k, v in record["datasets"].items() if isinstance(v, Mapping) and v.get("snapshot")}
    return Feed(str(state.get("task")), str(record.get("target") or ""), Selection(naming_schemas=schemas, name_regex=regex), datasets)


def load_feeds(state_dir: str | os.PathLike[str] | None) -> list[Feed]:
    """Every push replication task that recorded a run in ``state_dir`` (``repl-*.json``), by name."""
    if not state_dir:
        return []
    feeds = [feed_from_state(_read_json(p)) for p in sorted(Path(state_dir).glob("repl-*.json"))]
    return [f for f in feeds if f is not None]


# ----------------------------------------------------------------------------------------------------------------
# Hold: what the snapshot task's pruning keeps
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class PendingHolds:
    """``keep``: full snapshot name -> why it is kept; ``feeds``: one status per replication task fed."""

    keep: dict[str, str] = field(default_factory=dict)
    feeds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def critical(self) -> list[dict[str, Any]]:
        return [f for f in self.feeds if f["health"] == "critical"]


def _instant(when: datetime | None, tz: Any) -> datetime | None:
    if when is None:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=tz)


def pending_holds(snapshots: Mapping[str, Sequence[Any]], schema: NamingSchema, feeds: Sequence[Feed], now: datetime, tz: Any,
                  lag_critical: int = DEFAULT_PENDING_LAG_CRITICAL) -> PendingHolds:
    """What the snapshot task (``schema``) keeps on its datasets (``snapshots``: dataset -> its snapshots, oldest
    first) for ``feeds``. Pure: records, a listing and a clock in; names to keep and a status per feed out.

    On a dataset a feed recorded, every snapshot of ``schema`` that the feed selects is kept from the recorded one
    on (by createtxg; when the recorded snapshot is gone from the source, by the time in the names). A feed is
    ``critical`` when its oldest pending snapshot (after the recorded one) is older than ``lag_critical`` seconds.
    """
    now = _instant(now, tz) or now
    out = PendingHolds()
    for feed in feeds:
        mine = [ds for ds in snapshots if ds in feed.datasets]
        if not mine:
            continue
        held, pending, oldest, notes = 0, 0, None, []
        for ds in mine:
            last = feed.datasets[ds]
            ours = [s for s in snapshots[ds] if schema.parse(s.name) is not None and feed.selects(s.name)]
            base = next((s for s in snapshots[ds] if s.name == last), None)
            if base is not None:
                needed = [s for s in ours if s.createtxg >= base.createtxg]
            else:
                since = _instant(schema.parse(last), tz)
                if since is None:
                    notes.append(f"{ds}@{last} (recorded) is gone and its name has no time of this schema: nothing held on {ds}")
                    continue
                needed = [s for s in ours if (_instant(schema.parse(s.name), tz) or since) >= since]
            for s in needed:
                full = f"{s.dataset}@{s.name}"
                if s.name == last:
                    why = f"incremental base of replication task {feed.task} (the newest snapshot {feed.target} has)"
                else:
                    why = f"pending replication: task {feed.task} has not sent it to {feed.target} yet (it has @{last})"
                    when = _instant(schema.parse(s.name), tz)
                    pending += 1
                    if when is not None and (oldest is None or when < oldest[0]):
                        oldest = (when, full)
                if full not in out.keep:
                    out.keep[full] = why
                held += 1
        behind = max(0, int((now - oldest[0]).total_seconds())) if oldest else 0
        out.feeds.append({
            "replication": feed.task,
            "target": feed.target,
            "datasets": len(mine),
            "held": held,
            "pending": pending,
            "oldest_pending": oldest[1] if oldest else None,
            "behind": behind,
            "lag_critical": lag_critical,
            "health": "critical" if oldest and behind > lag_critical else "ok",
            "notes": notes,
        })
    return out


def describe(feed: Mapping[str, Any]) -> str:
    """One log line for a feed's status."""
    text = (f"replication task {feed['replication']} to {feed['target']}: {feed['pending']} snapshot(s) pending, "
            f"{feed['held']} kept for it")
    if feed["oldest_pending"]:
        text += f", oldest pending {feed['oldest_pending']} waits {feed['behind']}s"
    if feed["health"] == "critical":
        text += (f": CRITICAL, behind more than pending_lag_critical ({feed['lag_critical']}s): the target is down or too slow, and "
                 "the source keeps its snapshots until it catches up (or set hold_pending_snapshots: false)")
    return text


# ----------------------------------------------------------------------------------------------------------------
# Seen: metrics and status
# ----------------------------------------------------------------------------------------------------------------


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def metric_lines(state: Mapping[str, Any], labels: str) -> list[str]:
    """Prometheus lines for a snapshot task's state: per replication task it feeds, the snapshots held for it, how
    long its oldest pending snapshot waits, and whether that is critical. ``labels`` are the task's own labels."""
    details = state.get("details") if isinstance(state.get("details"), Mapping) else {}
    feeds = details.get("pending") if isinstance(details, Mapping) else None
    if not isinstance(feeds, list) or not feeds:
        return []
    rows = (
        ("zfs_replication_pending_held_snapshots", "Snapshots the snapshot task keeps past pruning for a replication task it feeds.", "held"),
        ("zfs_replication_pending_snapshots", "Snapshots a replication task fed by the snapshot task has not sent yet.", "pending"),
        ("zfs_replication_pending_behind_seconds", "Age of the oldest snapshot a replication task has not sent yet.", "behind"),
        ("zfs_replication_pending_critical", "1 when that age is above the snapshot task's pending_lag_critical.", None),
    )
    lines: list[str] = []
    for name, text, key in rows:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
        for feed in feeds:
            if not isinstance(feed, Mapping):
                continue
            value = (1 if feed.get("health") == "critical" else 0) if key is None else int(feed.get(key) or 0)
            lines.append(f'{name}{{{labels},replication="{_label(feed.get("replication"))}",target="{_label(feed.get("target"))}"}} {value}')
    return lines


def status_reasons(state_dir: str | os.PathLike[str] | None, replication_task: str) -> list[tuple[str, str]]:
    """(health, reason) for a replication task from the snapshot tasks that feed it (``snap-*.json`` in ``state_dir``):
    critical when one of them found its oldest pending snapshot waiting longer than its pending_lag_critical."""
    out: list[tuple[str, str]] = []
    if not state_dir:
        return out
    for path in sorted(Path(state_dir).glob("snap-*.json")):
        state = _read_json(path)
        details = state.get("details") if isinstance(state, Mapping) else None
        for feed in (details.get("pending") or []) if isinstance(details, Mapping) else []:
            if isinstance(feed, Mapping) and feed.get("replication") == replication_task and feed.get("health") == "critical":
                out.append(("critical", f"{feed.get('target')}: oldest pending snapshot {feed.get('oldest_pending')} waits "
                                        f"{feed.get('behind')}s > {feed.get('lag_critical')}s (pending_lag_critical of snapshot task "
                                        f"{state.get('task')}, which keeps {feed.get('held')} snapshot(s) for it)"))
    return out


__all__ = ["DEFAULT_PENDING_LAG_CRITICAL", "Feed", "PendingHolds", "describe", "feed_from_state", "load_feeds", "metric_lines",
           "pending_holds", "record_replicated", "status_reasons"]
