# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
name: status_table
short_description: The status table of declared tasks, as a list of lines
version_added: 0.1.0
description:
  - Turns status rows (from P(zfs.replication.status_rows#filter), one list per host, flattened) into aligned lines,
    a header and then one line per row. Print the list with C(ansible.builtin.debug) and C(var), which shows one line
    per item.
  - LAG is printed as C(42m), C(5h07m) (under two days) or C(3d04h).
author:
  - zfs.replication contributors
options:
  _input:
    description: The rows; each a dict with C(host), C(task), C(kind), C(health), C(lag), C(pending), C(result), C(last_end), C(reason).
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: Make the table of every host's rows
  ansible.builtin.set_fact:
    table: "{{ ansible_play_hosts | map('extract', hostvars) | map(attribute='rows', default=[]) | flatten(levels=1)
               | zfs.replication.status_table }}"
"""

RETURN = r"""
_value:
  description: The header line, then one line per row; no line ends in spaces.
  type: list
  elements: str
"""

from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.zfs.replication.plugins.module_utils._info import status_table as table_lines


def status_table(rows: Any) -> list[str]:
    """Aligned lines of the rows (module_utils/_info.py status_table)."""
    if not isinstance(rows, list) or not all(isinstance(r, Mapping) for r in rows):
        raise AnsibleFilterError("status_table: give a list of rows (dicts from zfs.replication.status_rows)")
    return table_lines([dict(r) for r in rows])


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"status_table": status_table}
