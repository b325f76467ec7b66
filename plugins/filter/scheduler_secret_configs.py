# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
name: scheduler_secret_configs
short_description: The runner configs of the declared tasks that hold secrets, by task id
version_added: 0.1.0
description:
  - Takes the same arguments as P(zfs.replication.scheduler_tasks#filter) and returns, for each task that has a secret
    (an C(encryption_key)), the whole JSON config the runner reads, key included.
  - With P(zfs.replication.scheduler_tasks#filter) and O(zfs.replication.scheduler_tasks#filter:secrets=false), the plan
    can be printed without the keys. Set the result of this filter in a task with C(no_log), and write the configs from
    it with C(no_log) and C(diff=false), as the P(zfs.replication.scheduler#role) role does.
author:
  - zfs.replication contributors
options:
  _input:
    description: The declared snapshot tasks, as for P(zfs.replication.scheduler_tasks#filter).
    type: list
    elements: dict
    required: true
  replication_tasks:
    description: The declared replication tasks.
    type: list
    elements: dict
    default: []
  snapshot_defaults:
    description: As for P(zfs.replication.scheduler_tasks#filter) (merged recursively into every snapshot task).
    type: dict
    default: {}
  replication_defaults:
    description: As for P(zfs.replication.scheduler_tasks#filter) (merged recursively into every replication task).
    type: dict
    default: {}
  run_now:
    description: As for P(zfs.replication.scheduler_tasks#filter); does not change the configs.
    type: list
    elements: str
    default: []
  launcher:
    description: As for P(zfs.replication.scheduler_tasks#filter).
    type: path
    default: /usr/local/sbin/zfs-replication-run
  config_dir:
    description: As for P(zfs.replication.scheduler_tasks#filter).
    type: path
    default: /etc/zfs-replication/tasks
  state_dir:
    description: As for P(zfs.replication.scheduler_tasks#filter).
    type: path
    default: /var/lib/zfs-replication
  log_dir:
    description: As for P(zfs.replication.scheduler_tasks#filter).
    type: path
    default: /var/log/zfs-replication
  metrics_dir:
    description: As for P(zfs.replication.scheduler_tasks#filter).
    type: str
    default: ""
  zfs_units:
    description: As for P(zfs.replication.scheduler_tasks#filter).
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Plan the tasks, keys left out (this output may be shown)
  ansible.builtin.set_fact:
    planned: "{{ snapshot_tasks | zfs.replication.scheduler_tasks(replication_tasks=replication_tasks, secrets=false) }}"

- name: Keep the configs that hold keys apart
  ansible.builtin.set_fact:
    secret_configs: "{{ snapshot_tasks | zfs.replication.scheduler_secret_configs(replication_tasks=replication_tasks) }}"
  no_log: true
"""

RETURN = r"""
_value:
  description: The config of each task that has a secret, keyed by the task's id (C(repl-NAME)); empty when none has.
  type: dict
"""

from typing import Any

from ansible_collections.zfs.replication.plugins.filter.scheduler_tasks import scheduler_tasks


def scheduler_secret_configs(snapshot_tasks: Any, **kwargs: Any) -> dict[str, dict[str, Any]]:
    """The whole config of each task that has a secret, by task id (same arguments as scheduler_tasks)."""
    kwargs.pop("secrets", None)
    return {e["id"]: e["config"] for e in scheduler_tasks(snapshot_tasks, secrets=True, **kwargs) if e["secret"]}


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"scheduler_secret_configs": scheduler_secret_configs}
