# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The scheduler role validates every task option: its argument spec must follow the modules' options.

A module that gains an option the role does not declare would make the role reject that option (nested role
options refuse unknown keys); one whose type or choices changed would let the role accept what the engine refuses.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import module_options

ROOT = Path(__file__).resolve().parents[3]
ROLE_SPEC = ROOT / 'roles' / 'scheduler' / 'meta' / 'argument_specs.yml'
# module -> (role option holding its tasks, module options the role does not take, options the role redefines)
# Where a task's lock, log, state and metrics live is set once for the role (scheduler_state_dir, ...), not per task.
TASK_RUN = {'state_dir', 'log_dir', 'metrics_dir', 'lock_wait'}
MODULES = {
    'zfs_replication': ('scheduler_replication_tasks', {'state', 'snapshots'} | TASK_RUN, {'periodic_snapshot_tasks', 'enabled'}),
    'zfs_snapshot_task': ('scheduler_snapshot_tasks', set(TASK_RUN), {'enabled', 'schedule', 'name'}),
}
ROLE_ONLY = {'run_now', 'enabled', 'name'}


def role_task_options(option: str) -> dict[str, Any]:
    spec = yaml.safe_load(ROLE_SPEC.read_text())
    return spec['argument_specs']['main']['options'][option]['options']


def _compare(module_opts: dict[str, Any], role_opts: dict[str, Any], where: str, problems: list[str]) -> None:
    for name, mod in module_opts.items():
        role = role_opts.get(name)
        if role is None:
            problems.append(f'{where}{name}: missing from the role spec')
            continue
        for key in ('type', 'elements', 'choices', 'required'):
            if mod.get(key) != role.get(key) and not (key == 'type' and mod.get(key) is None and role.get(key) == 'str'):
                problems.append(f'{where}{name}.{key}: module {mod.get(key)!r}, role {role.get(key)!r}')
        if mod.get('suboptions'):
            _compare(mod['suboptions'], role.get('options') or {}, f'{where}{name}.', problems)


@pytest.mark.parametrize('module', sorted(MODULES))
def test_role_spec_follows_the_module(module: str) -> None:
    option, not_taken, redefined = MODULES[module]
    mod = {k: v for k, v in module_options(module).items() if k not in not_taken | redefined}
    role = role_task_options(option)
    problems: list[str] = []
    _compare(mod, role, '', problems)
    extra = sorted(set(role) - set(module_options(module)) - ROLE_ONLY)
    if extra:
        problems.append(f'role options the module does not have: {extra}')
    assert not problems, '\n'.join(problems)


def test_secrets_are_no_log() -> None:
    assert role_task_options('scheduler_replication_tasks')['encryption_key'].get('no_log') is True
