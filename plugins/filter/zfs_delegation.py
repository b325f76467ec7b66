# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
name: zfs_delegation
short_description: The zfs allow permissions a replication user still lacks on a dataset
version_added: 0.1.0
description:
  - Given the output of C(zfs allow DATASET) and a delegation (a user, a side of a replication task), returns the
    permissions that side needs (see the user guide, "Non-root replication") which the user does not hold yet for the
    dataset and its descendants. An empty list means nothing to do.
  - Used by the scheduler role's C(delegate) entry point.
author:
  - zfs.replication contributors
options:
  _input:
    description: The standard output of C(zfs allow DATASET).
    type: str
    required: true
  delegation:
    description:
      - C(user), C(side) (C(source) or C(target)), optional C(encryption) (bool, an encrypted target) and
        C(properties) (property names the source sends, each its own permission).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Permissions zfsrepl still needs on backup/fileserver
  ansible.builtin.debug:
    msg: "{{ allow_output.stdout | zfs.replication.zfs_delegation({'user': 'zfsrepl', 'side': 'target'}) }}"
"""

RETURN = r"""
_value:
  description: The missing permission names, in the order the user guide lists them.
  type: list
  elements: str
"""

from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.zfs.replication.plugins.module_utils._allow import delegated, delegation_wanted


def zfs_delegation(allow_output: Any, delegation: Any) -> list[str]:
    if not isinstance(allow_output, str):
        raise AnsibleFilterError("zfs_delegation: give the output of `zfs allow DATASET` (a string)")
    if not isinstance(delegation, Mapping) or not delegation.get("user"):
        raise AnsibleFilterError("zfs_delegation: the delegation needs user (the replication user's name)")
    try:
        wanted = delegation_wanted(str(delegation.get("side", "")), bool(delegation.get("encryption", False)),
                                   list(delegation.get("properties") or []))
    except ValueError as exc:
        raise AnsibleFilterError(f"zfs_delegation: {exc}") from exc
    have = delegated(allow_output, str(delegation["user"]))
    return [p for p in wanted if p not in have]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"zfs_delegation": zfs_delegation}
