# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
name: target_pruning_tasks
short_description: The pruning tasks a host runs for the append-only pushes it receives
version_added: 0.1.0
description:
  - A push task with C(target_access=append_only) may not destroy anything on its target, so the target host applies its
    C(retention_policy=custom) itself. This filter reads the declarations of the inventory's hosts, finds their
    append-only push tasks whose C(ssh.host) and C(ssh.port) are this host's O(address) and O(port), and returns for
    each one snapshot task per naming schema that only prunes (C(take_snapshots=false)) the push's C(target_dataset)
    tree, with the push's lifetimes (the longest of them all for every snapshot), schedule and time zone.
  - Held snapshots and the newest snapshot of each dataset are kept, as by every snapshot task.
  - The declarations are planned with the same validation as on their own host (P(zfs.replication.scheduler#role)).
    One that is invalid is left out here; its own host fails on it, naming the field, and one host's mistake does not
    stop the others. A target then has no pruning task for that host's pushes until it is fixed, which keeps
    snapshots longer, never shorter.
author:
  - zfs.replication contributors
options:
  _input:
    description:
      - The inventory's declarations, one dict per host with C(source) (the host's name), C(snapshot_tasks),
        C(replication_tasks), C(snapshot_defaults) and C(replication_defaults) (its C(zfs_replication_*) variables).
    type: list
    elements: dict
    required: true
  address:
    description: The address the other hosts reach this host at (C(zfs_replication_ssh_address), default C(ansible_host)).
    type: str
    required: true
  port:
    description: The SSH port they reach it at (C(zfs_replication_ssh_port)).
    type: int
    default: 22
"""

EXAMPLES = r"""
- name: The pruning tasks of the append-only pushes this host receives
  ansible.builtin.set_fact:
    pruning_tasks: >-
      {{ declarations | zfs.replication.target_pruning_tasks(address=zfs_replication_ssh_address | default(ansible_host),
                                                             port=zfs_replication_ssh_port | default(22)) }}
"""

RETURN = r"""
_value:
  description: C(zfs_snapshot_task) options (with C(name)), named C(SOURCEHOST-TASK-prune).
  type: list
  elements: dict
"""

from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.zfs.replication.plugins.filter.scheduler_tasks import scheduler_tasks
from ansible_collections.zfs.replication.plugins.module_utils._replication_task import ReplicationTask, TaskError
from ansible_collections.zfs.replication.plugins.module_utils._target_pruning import derive


def incoming_append_only(declarations: Any, address: str, port: Any = 22) -> list[tuple[str, ReplicationTask]]:
    """(source host, validated task) of every append-only push in DECLARATIONS that reaches ADDRESS:PORT."""
    out: list[tuple[str, ReplicationTask]] = []
    for decl in declarations or []:
        if not isinstance(decl, Mapping):
            raise AnsibleFilterError("the inventory's declarations: each must be a dict (playbooks/tasks/declared.yml builds them)")
        source = str(decl.get("source"))
        try:
            entries = scheduler_tasks(decl.get("snapshot_tasks") or [], replication_tasks=decl.get("replication_tasks") or [],
                                      snapshot_defaults=decl.get("snapshot_defaults") or {},
                                      replication_defaults=decl.get("replication_defaults") or {}, secrets=False)
        except AnsibleFilterError:
            continue  # its own host fails on it; leaving it out here only keeps snapshots longer
        for entry in entries:
            params = entry["config"]["params"]
            ssh = params.get("ssh") or {}
            if (entry["kind"] != "replication" or params.get("target_access") != "append_only"
                    or str(ssh.get("host")) != str(address) or int(ssh.get("port") or 22) != int(port)):
                continue
            try:
                out.append((source, ReplicationTask.from_params(params)))
            except TaskError as exc:  # pragma: no cover - scheduler_tasks validated it already
                raise AnsibleFilterError(f"replication task {entry['name']!r} of host {source}: {exc}") from None
    return out


def target_pruning_tasks(declarations: Any, address: str, port: Any = 22) -> list[dict[str, Any]]:
    return [params for source, task in incoming_append_only(declarations, address, port) for params in derive(task, source)]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"target_pruning_tasks": target_pruning_tasks}
