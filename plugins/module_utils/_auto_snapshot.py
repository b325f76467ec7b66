# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The periodic snapshot task a push replication task gets with ``auto_snapshot_task: true``.

TrueNAS's replication wizard creates a periodic snapshot task for local sources that have none, and links the
replication task to it. Here the same is declarative: the scheduler role, ``playbooks/site.yml`` and the status
playbook all plan their tasks with the ``scheduler_tasks`` filter, which calls :func:`derive` for every replication
task that has the option, so they agree on one derived task per source dataset:

* ``dataset``: the source; ``recursive`` and ``exclude`` (the excludes inside that source) as the replication's;
* ``naming_schema``: the replication's first ``naming_schema``;
* ``schedule`` and ``timezone``: the replication's, so each run of the snapshot task is followed by a replication run;
* lifetime: with ``retention_policy: custom`` the target's (``lifetime_value``/``lifetime_unit``; the ``lifetimes``
  rules become ``other_lifetimes``, so the source keeps each snapshot as long as the longest of them), otherwise
  2 weeks, the lifetime TrueNAS gives the snapshot tasks its wizard creates;
* ``hold_pending_snapshots`` stays on (the default): pruning keeps what the replication has not sent yet;
* name ``NAME-auto`` for a task with one source, ``NAME-auto-LEAF`` (the source's last path component) for each of
  several, NAME being the replication task's name.

Pure functions of the validated task: nothing here touches a host.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ._lifetime import Lifetime
from ._replication_task import ReplicationTask
from ._zfs import is_within

SUFFIX = "auto"
# TrueNAS's wizard gives the snapshot tasks it creates a fixed lifetime of 2 weeks.
TRUENAS_LIFETIME = Lifetime(2, "week")


def snapshot_task_name(replication: str, source: str, several: bool) -> str:
    """``NAME-auto``, or ``NAME-auto-LEAF`` when the replication task has several sources."""
    if not several:
        return f"{replication}-{SUFFIX}"
    leaf = re.sub(r"[^A-Za-z0-9_.-]+", "-", source.rsplit("/", 1)[-1]).strip("-.") or "source"
    return f"{replication}-{SUFFIX}-{leaf}"


def _lifetimes(task: ReplicationTask) -> list[Lifetime]:
    """The derived task's lifetimes, the first one its ``lifetime_value``/``lifetime_unit``."""
    if task.retention_policy != "custom":
        return [TRUENAS_LIFETIME]
    base, rules = task.lifetime_rules()
    out: list[Lifetime] = [base] if base is not None else []
    for _schedule, lifetime in rules:
        if lifetime not in out:
            out.append(lifetime)
    return out or [TRUENAS_LIFETIME]


def derive(task: ReplicationTask, logging_level: Any = None) -> list[dict[str, Any]]:
    """The snapshot tasks (``zfs_snapshot_task`` options, ``name`` included) derived from ``task``, one per source
    dataset, in the order of ``source_datasets``. ``task`` is validated and has ``auto_snapshot_task`` set."""
    lifetimes = _lifetimes(task)
    several = len(task.source_datasets) > 1
    out = []
    for source in task.source_datasets:
        params: dict[str, Any] = {
            "name": snapshot_task_name(task.name, source, several),
            "dataset": source,
            "recursive": task.recursive,
        }
        exclude = [ex for ex in task.exclude if is_within(ex, source) and ex != source]
        if exclude:
            params["exclude"] = exclude
        params["naming_schema"] = task.naming_schema[0]
        params["schedule"] = task.schedule
        if task.timezone:
            params["timezone"] = task.timezone
        params["lifetime_value"] = lifetimes[0].value
        params["lifetime_unit"] = lifetimes[0].unit
        if len(lifetimes) > 1:
            params["other_lifetimes"] = [{"lifetime_value": lt.value, "lifetime_unit": lt.unit} for lt in lifetimes[1:]]
        if logging_level is not None:
            params["logging_level"] = logging_level
        out.append(params)
    return out


def _covers(task: Mapping[str, Any], dataset: str) -> bool:
    """Whether snapshot task ``task`` (its options) snapshots ``dataset``."""
    root = str(task.get("dataset") or "")
    if dataset == root:
        return True
    if not task.get("recursive") or not is_within(dataset, root):
        return False
    return not any(is_within(dataset, str(ex)) for ex in task.get("exclude") or [])


def shared_dataset(a: Mapping[str, Any], b: Mapping[str, Any]) -> str | None:
    """A dataset both snapshot tasks snapshot with the same naming schema (they would take and prune the same
    snapshots), or None."""
    if a.get("naming_schema") != b.get("naming_schema"):
        return None
    if _covers(a, str(b.get("dataset") or "")):
        return str(b.get("dataset"))
    if _covers(b, str(a.get("dataset") or "")):
        return str(a.get("dataset"))
    return None
