# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Read-only status of replication tasks: what each side has, what is pending, how old the replica is.

One probe and one recursive listing per side per task; nothing is changed. The last run's result comes
from the runner's state file (``STATE_DIR/repl-NAME.json``).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ._defaults import DefaultsError, merge_defaults
from ._keys import key_path, keyed_targets
from ._lag import CREATION, creation_time, iso, lag_seconds, newest_snapshot, parse_iso, task_recovery_point
from ._pending import status_reasons
from ._planner import PlanError, PlanTask, Selection, first_run_skips, source_datasets, target_for
from ._progress import human_bytes, human_seconds
from ._replication import Runner
from ._replication_task import ReplicationTask, TaskError
from ._runner import DEFAULT_STATE_DIR, KIND_PREFIX, read_state, state_path
from ._transport import ConnectionFailed, TransportError
from ._zfs import Dataset, DatasetMissing, Listing, ZfsError, list_tree, probe

# Options the status never needs: the target's encryption is a matter of the sends. Dropped before the task is read,
# so a status check neither needs the key nor handles it.
SEND_ONLY_OPTIONS = ("encryption", "encryption_key_format", "encryption_key", "encryption_key_location", "encryption_key_generate")
# Options whose values are secrets (the module masks them in every output).
SECRET_OPTIONS = ("encryption_key",)

DEFAULT_LAG_WARNING = 25 * 3600
DEFAULT_LAG_CRITICAL = 49 * 3600
HEALTH_ORDER = ("ok", "warning", "critical")


def dataset_info(src: Dataset, target_name: str, tgt: Dataset | None, selection: Selection, now: datetime,
                 task: PlanTask | None = None) -> dict[str, Any]:
    """Status of one source dataset and its replica (the target listed with its snapshots' ``creation``).

    The lag is _lag's: from the newest snapshot on the target, dated by its ``creation``, to ``now``. Before the
    first transfer, pending leaves out what that transfer would skip (``first_run_skips``: expired under the
    target's retention), as the run itself does.
    """
    selected = [s for s in src.snapshots if selection.matches(s.name)]
    target_snaps = tgt.snapshots if tgt is not None else []
    src_by_guid = src.by_guid()
    common = next((s for s in reversed(target_snaps) if s.guid in src_by_guid), None)
    base = src_by_guid[common.guid] if common is not None else None
    skipped = {name for name, _why in first_run_skips(task, selected)} if base is None and task is not None else set()
    pending = [s.name for s in selected if (base is None or s.createtxg > base.createtxg) and s.name not in skipped]
    newest = newest_snapshot(target_snaps)
    point = creation_time(newest) if newest is not None else None
    return {
        "source": src.name,
        "target": target_name,
        "target_exists": tgt is not None,
        "source_newest": selected[-1].name if selected else None,
        "source_snapshots": len(selected),
        "target_newest": newest.name if newest is not None else None,
        "target_snapshots": len(target_snaps),
        "common": common.name if common is not None else None,
        "common_guid": common.guid if common is not None else None,
        "common_time": iso(creation_time(common)) if common is not None else None,
        "pending": len(pending),
        "pending_snapshots": pending,
        "recovery_point": iso(point),
        "lag": lag_seconds(point, now),
    }


def verdict(datasets: list[dict[str, Any]], last: dict[str, Any], lag_warning: int, lag_critical: int) -> tuple[str, list[str]]:
    """ok / warning / critical and the reasons, worst first."""
    reasons: list[tuple[str, str]] = []
    for d in datasets:
        if d["lag"] is None:
            if d["source_snapshots"]:
                reasons.append(("critical", f"{d['target']}: nothing replicated yet ({d['source_snapshots']} snapshots pending)"))
            else:
                reasons.append(("warning", f"{d['source']}: no snapshot matches the task's selection"))
        elif d["lag"] >= lag_critical:
            reasons.append(("critical", f"{d['target']}: lag {d['lag']}s >= {lag_critical}s"))
        elif d["lag"] >= lag_warning:
            reasons.append(("warning", f"{d['target']}: lag {d['lag']}s >= {lag_warning}s"))
    if last.get("result") == "failed":
        reasons.append(("warning", f"last run failed: {last.get('error') or 'see the log'}"))
    if not reasons:
        return "ok", []
    reasons.sort(key=lambda r: -HEALTH_ORDER.index(r[0]))
    return reasons[0][0], [r[1] for r in reasons]


def last_run(state_dir: str, task_name: str) -> dict[str, Any]:
    """The runner's record of the last run (empty values when the task never ran under a timer)."""
    state = read_state(state_path(state_dir, f"{KIND_PREFIX['replication']}-{task_name}"))
    keys = ("result", "last_start", "last_end", "last_success", "error", "snapshots_sent", "bytes", "duration", "reason",
            "next_window")
    out = {k: state.get(k) for k in keys}
    running = state.get("running")
    out["running"] = bool(running)
    out["transfers"] = list(running.get("transfers") or []) if isinstance(running, dict) else []
    return out


def _task_head(task: ReplicationTask, runner: Runner) -> dict[str, Any]:
    return {"name": task.name, "direction": task.direction, "transport": task.transport, "source": runner.src.label,
            "target": runner.dst.label}


def unreachable_info(task: ReplicationTask, runner: Runner, side: str, exc: Exception, state_dir: str) -> dict[str, Any]:
    """The status of a task whose source or target host cannot be reached: critical, with the error and the last
    successful run; what is on the unreachable side (datasets, pending, lag) is unknown, so it is not guessed."""
    label = runner.src.label if side == "source" else runner.dst.label
    last = last_run(state_dir, task.name)
    since = f" (last successful run: {last['last_success']})" if last.get("last_success") else " (never replicated)"
    held = [why for _health, why in status_reasons(state_dir, task.name)]
    return {
        **_task_head(task, runner),
        "reachable": False,
        "datasets": [],
        "pending": None,
        "recovery_point": None,
        "lag": None,
        "checked_at": iso(datetime.now(timezone.utc)),
        "last_run": last,
        "health": "critical",
        "reasons": [f"{side} {label} unreachable: {exc}{since}"] + held,
    }


def key_file_info(params: dict[str, Any], name: str, state_dir: str) -> dict[str, Any] | None:
    """Where a task with encryption_key_generate keeps its key on this host, and whether the file is there (never the key)."""
    if not (params.get("encryption") and params.get("encryption_key_generate")):
        return None
    path = key_path(state_dir, name)
    return {"path": str(path), "exists": path.is_file()}


def task_info(params: dict[str, Any], state_dir: str = DEFAULT_STATE_DIR, lag_warning: int = DEFAULT_LAG_WARNING,
              lag_critical: int = DEFAULT_LAG_CRITICAL, now: datetime | None = None) -> dict[str, Any]:
    """Status of one replication task (``params`` as for zfs_replication). Raises TaskError."""
    now = now or datetime.now(timezone.utc)
    task = ReplicationTask.from_params({k: v for k, v in params.items() if k not in SEND_ONLY_OPTIONS})
    runner = Runner(task)
    target: Listing | None = None
    side = "source"
    try:
        src_caps = probe(runner.src)
        try:
            source = list_tree(runner.src, src_caps, task.source_datasets)
        except DatasetMissing as exc:
            raise TaskError(f"source_datasets: {', '.join(exc.names)} does not exist on {runner.src.label}") from exc
        side = "target"
        dst_caps = src_caps if runner.dst is runner.src else probe(runner.dst)
        try:
            target = list_tree(runner.dst, dst_caps, task.target_dataset, extra_props=(CREATION,))
        except DatasetMissing:
            target = None
    except ConnectionFailed as exc:
        # A host that cannot be reached is the status a dead target (or source) has: critical, said in the
        # reasons, never a failed status call that hides the other tasks.
        return {**unreachable_info(task, runner, side, exc, state_dir), "encryption_key_file": key_file_info(params, task.name, state_dir)}
    except (ZfsError, TransportError) as exc:
        raise TaskError(str(exc)) from exc
    finally:
        runner.close()
    ptask = task.plan_task(now)
    datasets = []
    for root in task.source_datasets:
        troot = target_for(ptask, root)
        try:
            members = source_datasets(ptask, root, source)
        except PlanError as exc:
            raise TaskError(str(exc)) from exc
        for src in members:
            tname = troot + src.name[len(root):]
            tgt = target.get(tname) if target is not None else None
            datasets.append(dataset_info(src, tname, tgt, ptask.selection, now, ptask))
    last = last_run(state_dir, task.name)
    health, reasons = verdict(datasets, last, lag_warning, lag_critical)
    held = status_reasons(state_dir, task.name)  # a snapshot task feeding this one keeps snapshots for a target far behind
    if held:
        health, reasons = "critical", [why for _health, why in held] + reasons
    key_file = key_file_info(params, task.name, state_dir)
    keyed = keyed_targets(target, task.target_dataset) if key_file is not None and not key_file["exists"] else []
    if keyed:  # the next run fails, and nobody can read the replica without the key
        lost = f"the generated key of {', '.join(keyed)} is missing from {key_path(state_dir, task.name)} on this host: restore it from your export"
        health, reasons = "critical", [lost] + reasons
    point = task_recovery_point(parse_iso(d["recovery_point"]) for d in datasets) if datasets else None
    return {
        **_task_head(task, runner),
        "reachable": True,
        "datasets": datasets,
        "pending": sum(d["pending"] for d in datasets),
        "recovery_point": iso(point),
        "lag": lag_seconds(point, now),
        "checked_at": iso(now),
        "last_run": last,
        "health": health,
        "reasons": reasons,
        "encryption_key_file": key_file,
    }


def secret_values(*values: Any) -> set[str]:
    """The values of SECRET_OPTIONS anywhere in VALUES (dicts and lists of task options), to be masked."""
    found: set[str] = set()
    for value in values:
        if isinstance(value, dict):
            found.update(str(v) for k, v in value.items() if k in SECRET_OPTIONS and v not in (None, ""))
            found.update(secret_values(*value.values()))
        elif isinstance(value, (list, tuple)):
            found.update(secret_values(*value))
    return found


def tasks_info(tasks: list[dict[str, Any]], defaults: dict[str, Any] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """task_info for each task, each merged over ``defaults`` as the scheduler role and the playbooks merge them."""
    out = []
    for i, raw in enumerate(tasks):
        try:
            params = merge_defaults(defaults, raw, f"tasks[{i}]", "task_defaults")
        except DefaultsError as exc:
            raise TaskError(str(exc)) from exc
        try:
            out.append(task_info(params, **kwargs))
        except TaskError as exc:
            raise TaskError(f"tasks[{i}] ({raw.get('name') or 'unnamed'}): {exc}") from exc
    return out


# ----------------------------------------------------------------------------------------------------------------
# The status table (playbooks/status.yml, the info module's ``table``): rows, then lines of aligned columns
# ----------------------------------------------------------------------------------------------------------------

TABLE_COLUMNS = (("host", "HOST"), ("task", "TASK"), ("kind", "KIND"), ("health", "HEALTH"), ("lag", "LAG"),
                 ("pending", "PENDING"), ("result", "LAST"), ("last_end", "LAST RUN (UTC)"), ("reason", "NOTE"))


def format_age(seconds: Any) -> str:
    """A lag for people: ``-``, ``42m``, ``5h07m`` (under two days), ``3d04h``."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 3600:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def replication_rows(tasks: list[dict[str, Any]], host: str | None = None) -> list[dict[str, Any]]:
    """One table row per task of ``tasks_info``'s result."""
    return [{"host": host, "task": t["name"], "kind": "replication", "health": t["health"], "lag": t["lag"], "pending": t["pending"],
             "result": (t.get("last_run") or {}).get("result"), "last_end": (t.get("last_run") or {}).get("last_end"),
             "reason": _running_note(t.get("last_run") or {}) or (t["reasons"][0] if t.get("reasons") else _waiting_note(t.get("last_run") or {}))}
            for t in tasks]


def _running_note(last: dict[str, Any]) -> str:
    """The NOTE of a task whose run is sending: each stream's progress as its last update had it."""
    parts = []
    for t in last.get("transfers") or []:
        done = human_bytes(t.get("bytes") or 0)
        size = f" of {human_bytes(t['expected_bytes'])} ({t['percent']:.0f}%)" if t.get("expected_bytes") and t.get("percent") is not None else ""
        eta = f", ETA {human_seconds(t['eta_seconds'])}" if t.get("eta_seconds") is not None else ""
        parts.append(f"{t.get('dataset')}@{t.get('snapshot')} {done}{size}{eta}")
    return ("running: " + "; ".join(parts)) if parts else ""


def _waiting_note(last: dict[str, Any]) -> str:
    """The NOTE of a task whose last run waits for its restrict_schedule window."""
    if last.get("result") != "waiting":
        return ""
    return f"waiting for its run window (opens {last['next_window']})" if last.get("next_window") else "waiting for its run window"


def snapshot_row(name: str, state: dict[str, Any], host: str | None = None, derived_from: str | None = None) -> dict[str, Any]:
    """The table row of a snapshot task from its runner state (empty when it never ran); DERIVED_FROM names the
    replication task whose auto_snapshot_task it is."""
    note = f"auto_snapshot_task of {derived_from}" if derived_from else ""
    return {"host": host, "task": name, "kind": "snapshot", "health": "warning" if state.get("result") == "failed" else "ok",
            "lag": None, "pending": None, "result": state.get("result"), "last_end": state.get("last_end"),
            "reason": state.get("error") or note}


def status_table(rows: list[dict[str, Any]]) -> list[str]:
    """The table's lines: a header and one line per row, columns as wide as their widest cell (HOST only when some
    row names a host); no line ends in spaces."""
    columns = [(key, title) for key, title in TABLE_COLUMNS if key != "host" or any(r.get("host") for r in rows)]

    def cell(row: dict[str, Any], key: str) -> str:
        value = row.get(key)
        if key == "lag":
            return format_age(value)
        if key == "result":
            return str(value or "never")
        if value is None or value == "":
            return "-" if key not in ("reason",) else ""
        return str(value)

    table = [[title for _key, title in columns]] + [[cell(r, key) for key, _title in columns] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    return [" ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in table]
