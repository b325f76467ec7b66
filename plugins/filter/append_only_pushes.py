# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
name: append_only_pushes
short_description: The append-only pushes of the inventory that reach this host
version_added: 0.1.0
description:
  - Reads the declarations of the inventory's hosts (as M(zfs.replication.zfs_replication) tasks, merged with their
    defaults) and returns the push tasks with C(target_access=append_only) whose C(ssh.host) and C(ssh.port) are this
    host's O(address) and O(port), as C(SOURCEHOST/TASK) names. The playbooks install the append-only receiver on a
    host only where this is not empty.
  - A declaration that is invalid is left out (its own host fails on it, naming the field).
author:
  - zfs.replication contributors
options:
  _input:
    description: The inventory's declarations, as for P(zfs.replication.target_pruning_tasks#filter).
    type: list
    elements: dict
    required: true
  address:
    description: The address the other hosts reach this host at.
    type: str
    required: true
  port:
    description: The SSH port they reach it at.
    type: int
    default: 22
"""

EXAMPLES = r"""
- name: Does an append-only push reach this host?
  ansible.builtin.set_fact:
    receives_append_only: "{{ declarations | zfs.replication.append_only_pushes(address=ansible_host) | length > 0 }}"
"""

RETURN = r"""
_value:
  description: C(SOURCEHOST/TASK) of each append-only push to this host.
  type: list
  elements: str
"""

from typing import Any

from ansible_collections.zfs.replication.plugins.filter.target_pruning_tasks import incoming_append_only


def append_only_pushes(declarations: Any, address: str, port: Any = 22) -> list[str]:
    return [f"{source}/{task.name}" for source, task in incoming_append_only(declarations, address, port)]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"append_only_pushes": append_only_pushes}
