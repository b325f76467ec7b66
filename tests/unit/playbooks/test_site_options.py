# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/site.yml names every option of the modules it runs (no templated args): the lists stay equal to the
modules' documented options, so an option added to a module reaches the declared tasks."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from helpers import module_options

ROOT = Path(__file__).resolve().parents[3]
NOT_PASSED = {'zfs_replication': {'state', 'snapshots'}, 'zfs_snapshot_task': {'state'}}


def site_task(module: str) -> dict:
    plays = yaml.safe_load((ROOT / 'playbooks' / 'site.yml').read_text())
    for play in plays:
        for task in play.get('tasks') or []:
            if f'zfs.replication.{module}' in task:
                return task
    raise AssertionError(f'playbooks/site.yml runs no zfs.replication.{module}')


@pytest.mark.parametrize('module', sorted(NOT_PASSED))
def test_site_names_every_option_of_the_module(module: str) -> None:
    task = site_task(module)
    assert 'args' not in task, 'a templated args mapping: name the options instead'
    named = set(task[f'zfs.replication.{module}'])
    documented = set(module_options(module)) - NOT_PASSED[module]
    assert sorted(documented - named) == [], 'options of the module that site.yml does not pass'
    assert sorted(named - set(module_options(module))) == [], 'options site.yml passes that the module does not have'


def test_the_key_never_rides_in_a_loop_item() -> None:
    task = site_task('zfs_replication')
    assert 'zr_secret_configs' in task['zfs.replication.zfs_replication']['encryption_key']
    assert 'secrets=false' in (ROOT / 'playbooks' / 'tasks' / 'declared.yml').read_text()
