# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
name: status_rows
short_description: One host's rows of the status table
version_added: 0.1.0
description:
  - The rows of P(zfs.replication.status_table#filter) for one host, replication tasks first (their health, lag, pending
    snapshots and last run from M(zfs.replication.zfs_replication_info)), then snapshot tasks (last run from their state
    files, read with C(ansible.builtin.slurp)).
author:
  - zfs.replication contributors
options:
  _input:
    description: The C(tasks) that M(zfs.replication.zfs_replication_info) returned.
    type: list
    elements: dict
    required: true
  snapshot_states:
    description:
      - The results of an C(ansible.builtin.slurp) loop over the planned snapshot tasks (each C(item) with its C(name));
        a missing state file (the task never ran) gives an empty row.
    type: list
    elements: dict
    default: []
  host:
    description: The host named in each row.
    type: str
"""

EXAMPLES = r"""
- name: Make this host's rows
  ansible.builtin.set_fact:
    rows: "{{ info.tasks | default([]) | zfs.replication.status_rows(snapshot_states=states.results, host=inventory_hostname) }}"
"""

RETURN = r"""
_value:
  description: One row per task; each a dict with C(host), C(task), C(kind), C(health), C(lag), C(pending), C(result), C(last_end), C(reason).
  type: list
  elements: dict
"""

import base64
import json
from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.zfs.replication.plugins.module_utils._info import replication_rows, snapshot_row


def _state(result: Mapping[str, Any]) -> dict[str, Any]:
    """A snapshot task's runner state from an ansible.builtin.slurp result (empty when the file is missing)."""
    content = result.get("content")
    if not content:
        return {}
    try:
        state = json.loads(base64.b64decode(content))
    except ValueError:
        return {"result": "failed", "error": "the state file is not JSON"}
    return state if isinstance(state, dict) else {}


def status_rows(info_tasks: Any, snapshot_states: Any = None, host: Any = None) -> list[dict[str, Any]]:
    """This host's rows: the replication tasks of zfs_replication_info, then the snapshot tasks (slurped states)."""
    rows = replication_rows(list(info_tasks or []), host)
    for result in snapshot_states or []:
        item = result.get("item") if isinstance(result, Mapping) else None
        if not isinstance(item, Mapping):
            raise AnsibleFilterError("status_rows: snapshot_states must be the results of a slurp loop over the planned snapshot tasks")
        rows.append(snapshot_row(str(item.get("name")), _state(result), host, item.get("derived_from")))
    return rows


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"status_rows": status_rows}
