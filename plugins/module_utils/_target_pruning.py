# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pruning tasks a target host runs for the append-only pushes it receives (``target_access: append_only``).

Such a push's source may not destroy anything on the target, so its ``retention_policy: custom`` is applied by the
target host itself: the playbooks (``playbooks/tasks/declared.yml``) find the append-only push tasks of other
inventory hosts whose ``ssh.host``/``ssh.port`` is this host and declare here, for each, one snapshot task per naming
schema that only prunes (``take_snapshots: false``):

* ``dataset``: the push's ``target_dataset``, ``recursive`` (the replica tree holds only what the push sent);
* ``naming_schema``: each of the push's schemas (``naming_schema``, ``also_include_naming_schema`` and those of its
  ``periodic_snapshot_tasks``), so snapshots of other schemas, other tasks and other tools are never candidates;
* lifetime: ``lifetime_value``/``lifetime_unit``, with the ``lifetimes`` rules as ``other_lifetimes``. A snapshot is
  then kept for the longest of them all, whatever schedule its name matches: never shorter than the push's own rules
  would keep it (the target cannot tell which rule the source meant, so it errs on keeping);
* held snapshots and the newest snapshot of each dataset are kept, as by every snapshot task: the push holds its
  base (``hold_base``), and the newest received snapshot is the newest common one as far as the target can know;
* ``schedule`` and ``timezone``: the push's (``hourly`` when it has none), so pruning follows the receives;
* name ``SOURCEHOST-TASK-prune`` (``-N`` per schema after the first), so two sources' tasks of the same name differ.

Pure functions of the validated task: nothing here touches a host.
"""
from __future__ import annotations

import re
from typing import Any

from ._replication_task import ReplicationTask

SUFFIX = "prune"
DEFAULT_SCHEDULE = "hourly"
MAX_TASK_NAME = 100


def pruning_task_name(source_host: str, task: str, index: int) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{source_host}-{task}").strip("-.") or "replication"
    suffix = f"-{SUFFIX}" + (f"-{index + 1}" if index else "")
    return base[:MAX_TASK_NAME - len(suffix)] + suffix


def derive(task: ReplicationTask, source_host: str) -> list[dict[str, Any]]:
    """The ``zfs_snapshot_task`` options (``name`` included) of the pruning tasks of one append-only push ``task``
    (validated) declared on ``source_host``; none when it has no custom retention."""
    if task.target_access != "append_only" or task.retention_policy != "custom":
        return []
    base, rules = task.lifetime_rules()
    lifetimes = ([base] if base is not None else []) + [lt for _sched, lt in rules]
    unique = []
    for lt in lifetimes:
        if lt not in unique:
            unique.append(lt)
    out = []
    schemas = []
    for schema in task.schemas():
        if schema.schema not in schemas:
            schemas.append(schema.schema)
    for i, schema in enumerate(schemas):
        params: dict[str, Any] = {
            "name": pruning_task_name(source_host, task.name, i),
            "dataset": task.target_dataset,
            "recursive": True,
            "naming_schema": schema,
            "take_snapshots": False,
            "schedule": task.schedule or DEFAULT_SCHEDULE,
            "lifetime_value": unique[0].value,
            "lifetime_unit": unique[0].unit,
        }
        if len(unique) > 1:
            params["other_lifetimes"] = [{"lifetime_value": lt.value, "lifetime_unit": lt.unit} for lt in unique[1:]]
        if task.timezone:
            params["timezone"] = task.timezone
        out.append(params)
    return out
