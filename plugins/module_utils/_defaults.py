# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Saved configurations: the defaults merged into each declared task, one way everywhere.

The scheduler role, the playbooks (``playbooks/tasks/declared.yml``) and ``zfs_replication_info``'s
``task_defaults`` all merge through ``merge_defaults``:

* recursively: a task's ``ssh: {host: b}`` keeps the defaults' ``ssh.user``, key and known_hosts;
* the task's own values win; lists and scalars replace the default whole (a task's ``exclude`` is its list,
  never the defaults' list plus its own);
* a ``None`` (YAML ``null`` or an option left empty) in the task, at any depth, means "not set": the default
  applies. The defaults are never changed (each task gets its own copy).

The copy is rebuilt as plain dicts and lists, never ``copy.deepcopy``: inside a filter, ansible-core hands over
lazy-templating containers that hold the templar, and deep-copying one deep-copies the templar with its filter and
test plugin loaders (on ansible-core 2.21 each such copy prints "Instantiating filter PluginLoader with aliases is
deprecated"). Reading the containers item by item renders them and leaves no templar in the result.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class DefaultsError(ValueError):
    """A task or the defaults is not a mapping of options."""


def _plain(value: Any) -> Any:
    """A copy of ``value`` made of plain dicts and lists (scalars are immutable and kept as they are)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: _plain(v) for k, v in base.items()}
    for key, value in over.items():
        if value is None:
            continue
        current = out.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            out[key] = _merge(current, value)
        elif isinstance(value, Mapping):
            out[key] = _merge({}, value)
        else:
            out[key] = _plain(value)
    return out


def merge_defaults(defaults: Any, task: Any, where: str = "task", defaults_name: str = "defaults") -> dict[str, Any]:
    """``task`` merged over ``defaults`` (see the module docstring). Raises DefaultsError naming ``where``."""
    if defaults is None:
        defaults = {}
    if not isinstance(defaults, Mapping):
        raise DefaultsError(f"{defaults_name} is a {type(defaults).__name__}: give a mapping of task options (or leave it empty)")
    if not isinstance(task, Mapping):
        raise DefaultsError(f"{where} is not a dict: declare each task as a mapping of options")
    return _merge(defaults, task)


def merge_all(defaults: Any, tasks: Any, what: str = "tasks", defaults_name: str = "defaults") -> list[dict[str, Any]]:
    """``merge_defaults`` over each task of the list ``tasks`` (None: no tasks); errors name ``what[i]``."""
    if tasks is None:
        return []
    if isinstance(tasks, (str, bytes, Mapping)) or not hasattr(tasks, "__iter__"):
        raise DefaultsError(f"{what} is a {type(tasks).__name__}: give a list of tasks")
    return [merge_defaults(defaults, t, f"{what}[{i}]", defaults_name) for i, t in enumerate(tasks)]
