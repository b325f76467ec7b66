# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
name: merge_defaults
short_description: Merge saved defaults into each declared task, recursively
version_added: 0.1.0
description:
  - Returns each task of the input list merged over O(defaults), the way the P(zfs.replication.scheduler#role) role
    and M(zfs.replication.zfs_replication_info) merge them.
  - Recursive for dicts (a task's C(ssh.host) keeps the defaults' C(ssh.user), key and known_hosts); lists and other
    values of the task replace the default whole; a null in the task, at any depth, keeps the default.
  - Fails naming the task (C(NAME[i])) when a task, or O(defaults), is not a mapping.
author:
  - zfs.replication contributors
options:
  _input:
    description: The declared tasks.
    type: list
    elements: dict
    required: true
  defaults:
    description: The options merged into every task (a saved configuration).
    type: dict
    default: {}
  name:
    description: What the tasks are called in error messages.
    type: str
    default: tasks
"""

EXAMPLES = r"""
- name: The declared replication tasks with the group's saved configuration
  ansible.builtin.set_fact:
    replication_tasks: >-
      {{ zfs_replication_replication_tasks
         | zfs.replication.merge_defaults(zfs_replication_replication_task_defaults | default({}),
                                          name='zfs_replication_replication_tasks') }}
"""

RETURN = r"""
_value:
  description: The merged tasks, in the order given.
  type: list
  elements: dict
"""

from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.zfs.replication.plugins.module_utils._defaults import DefaultsError, merge_all


def merge_defaults(tasks: Any, defaults: Any = None, name: str = "tasks") -> list[dict[str, Any]]:
    """Each task merged over ``defaults`` (plugins/module_utils/_defaults.py)."""
    try:
        return merge_all(defaults, tasks, name, f"the defaults of {name}")
    except DefaultsError as exc:
        raise AnsibleFilterError(str(exc)) from None


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"merge_defaults": merge_defaults}
