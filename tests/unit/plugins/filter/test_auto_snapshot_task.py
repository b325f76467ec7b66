# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""auto_snapshot_task: the snapshot task the planning filter derives from a push replication task (what the role,
site.yml and status.yml all install, run and show), and the declarations it refuses."""
from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.zfs.replication.plugins.filter.scheduler_tasks import scheduler_tasks
from ansible_collections.zfs.replication.plugins.module_utils._replication_task import ReplicationTask, TaskError
from ansible_collections.zfs.replication.plugins.module_utils._snapshot_task import SnapshotTask

SCHEMA = 'auto-%Y-%m-%d_%H-%M'
REPL = {'name': 'offsite', 'source_datasets': ['tank/data'], 'target_dataset': 'backup/data', 'transport': 'local',
        'recursive': True, 'exclude': ['tank/data/scratch'], 'naming_schema': [SCHEMA, 'manual-%Y%m%d-%H%M'],
        'schedule': {'minute': '*/15', 'hour': '8-18'}, 'timezone': 'Europe/Berlin', 'auto_snapshot_task': True}


def by_id(entries: list[dict]) -> dict[str, dict]:
    return {e['id']: e for e in entries}


def plan(*replication_tasks: dict, snapshot_tasks: list[dict] | None = None, **kwargs) -> dict[str, dict]:
    return by_id(scheduler_tasks(snapshot_tasks or [], replication_tasks=list(replication_tasks), **kwargs))


def refused(*replication_tasks: dict, snapshot_tasks: list[dict] | None = None) -> str:
    with pytest.raises(AnsibleFilterError) as exc:
        plan(*replication_tasks, snapshot_tasks=snapshot_tasks)
    return str(exc.value)


def test_the_derived_task_carries_the_replication_fields_over() -> None:
    entries = plan(REPL, zfs_units=['zfs.target'])
    assert list(entries) == ['snap-offsite-auto', 'repl-offsite']  # snapshot tasks first
    snap, repl = entries['snap-offsite-auto'], entries['repl-offsite']
    assert snap['kind'] == 'snapshot' and snap['derived_from'] == 'offsite' and repl['derived_from'] is None
    # the source with recursive and exclude, the FIRST naming schema, the schedule and zone, TrueNAS's 2 weeks
    # (retention_policy is not custom)
    assert snap['config']['params'] == {
        'name': 'offsite-auto', 'dataset': 'tank/data', 'recursive': True, 'exclude': ['tank/data/scratch'],
        'naming_schema': SCHEMA, 'schedule': REPL['schedule'], 'timezone': 'Europe/Berlin',
        'lifetime_value': 2, 'lifetime_unit': 'week'}
    # its own timer on the replication's schedule, its own config path like a declared snapshot task
    assert snap['oncalendar'] == repl['oncalendar'] == ['*-*-* 08..18:00,15,30,45:00 Europe/Berlin']
    assert (snap['service'], snap['timer']) == ('zfs-replication-snap-offsite-auto.service', 'zfs-replication-snap-offsite-auto.timer')
    assert snap['config_path'] == '/etc/zfs-replication/tasks/snap-offsite-auto.json'
    assert snap['config']['schedule'] == REPL['schedule'] and snap['config']['timezone'] == 'Europe/Berlin'
    assert (snap['enabled'], snap['run_now'], snap['secret']) == (True, False, False)
    # the replication is fed by it: resolved in periodic_snapshot_tasks (pending holds match its schema), runs after it,
    # and the snapshot service starts it
    assert repl['config']['params']['periodic_snapshot_tasks'] == [snap['config']['params']]
    assert repl['config']['params']['auto_snapshot_task'] is True
    assert repl['config']['depends_on'] == ['offsite-auto']
    assert repl['after'] == ['zfs.target', 'zfs-replication-snap-offsite-auto.service']
    assert snap['wants'] == ['zfs.target', 'zfs-replication-repl-offsite.service'] and snap['after'] == ['zfs.target']
    # what the engine accepts: the snapshot task as the runner builds it, the replication with its link
    assert SnapshotTask.from_params(snap['config']['params']).lifetime.unit == 'week'
    assert ReplicationTask.from_params(repl['config']['params']).auto_snapshot_task is True


def test_custom_retention_gives_the_targets_lifetimes() -> None:
    custom = dict(REPL, retention_policy='custom', lifetime_value=3, lifetime_unit='day',
                  lifetimes=[{'schedule': 'daily', 'lifetime_value': 1, 'lifetime_unit': 'month'},
                             {'schedule': 'weekly', 'lifetime_value': 3, 'lifetime_unit': 'days'}])
    params = plan(custom)['snap-offsite-auto']['config']['params']
    assert (params['lifetime_value'], params['lifetime_unit']) == (3, 'day')
    # the rules' lifetimes too (the snapshot task keeps the longest): the source never prunes what the target keeps
    assert params['other_lifetimes'] == [{'lifetime_value': 1, 'lifetime_unit': 'month'}]
    only_rules = dict(custom, lifetime_value=None, lifetime_unit=None)
    params = plan(only_rules)['snap-offsite-auto']['config']['params']
    assert (params['lifetime_value'], params['lifetime_unit'], params['other_lifetimes']) == (
        1, 'month', [{'lifetime_value': 3, 'lifetime_unit': 'day'}])
    for policy in ('source', 'none'):
        params = plan(dict(REPL, retention_policy=policy))['snap-offsite-auto']['config']['params']
        assert (params['lifetime_value'], params['lifetime_unit']) == (2, 'week') and 'other_lifetimes' not in params


def test_several_sources_get_one_task_each_and_defaults_count() -> None:
    several = {'source_datasets': ['tank/data', 'tank/vm/disks'], 'target_dataset': 'backup/fs', 'transport': 'local',
               'exclude': ['tank/data/scratch'], 'auto_snapshot_task': True, 'enabled': False, 'logging_level': 'debug'}
    defaults = {'recursive': True, 'naming_schema': [SCHEMA], 'schedule': 'hourly'}
    entries = plan(several, replication_defaults=defaults)
    name = 'tank-data-tank-vm-disks-to-backup-fs'  # suggested, as TrueNAS does
    assert list(entries) == [f'snap-{name}-auto-data', f'snap-{name}-auto-disks', f'repl-{name}']
    data, disks, repl = entries.values()
    assert data['config']['params']['exclude'] == ['tank/data/scratch'] and 'exclude' not in disks['config']['params']
    assert disks['config']['params']['dataset'] == 'tank/vm/disks' and disks['config']['params']['schedule'] == 'hourly'
    assert data['config']['params']['logging_level'] == 'debug'
    # a disabled replication task: its snapshot tasks are disabled too and start nothing
    assert [e['enabled'] for e in entries.values()] == [False, False, False]
    assert data['wants'] == [] and repl['config']['depends_on'] == [f'{name}-auto-data', f'{name}-auto-disks']


def test_option_off_or_absent_derives_nothing() -> None:
    assert list(plan(dict(REPL, auto_snapshot_task=False))) == ['repl-offsite']
    off = dict(REPL)
    del off['auto_snapshot_task']
    assert list(plan(off)) == ['repl-offsite']


def test_its_snapshot_task_can_feed_another_replication_task() -> None:
    """Fan-out: a second target of the same source names the derived task instead of deriving its own."""
    second = {'name': 'second', 'source_datasets': ['tank/data'], 'target_dataset': 'backup2/data', 'transport': 'local',
              'periodic_snapshot_tasks': ['offsite-auto']}
    entries = plan(second, REPL)  # declared before the task it names: order does not matter
    assert entries['repl-second']['config']['depends_on'] == ['offsite-auto']
    assert entries['repl-second']['config']['params']['periodic_snapshot_tasks'][0]['naming_schema'] == SCHEMA
    # it explicitly names its own derived task: not listed twice
    named = plan(dict(REPL, periodic_snapshot_tasks=['offsite-auto']))['repl-offsite']
    assert named['config']['depends_on'] == ['offsite-auto']


@pytest.mark.parametrize(('change', 'message'), [
    ({'direction': 'pull', 'transport': 'ssh', 'ssh': {'host': 'nas.example.net'}},
     "replication task 'offsite': auto_snapshot_task snapshots the sources on the host that runs the task: it needs direction push"),
    ({'schedule': None}, "replication task 'offsite': auto_snapshot_task runs its snapshot task on the replication's schedule: give schedule"),
    ({'naming_schema': [], 'also_include_naming_schema': [SCHEMA]},
     "replication task 'offsite': auto_snapshot_task names its snapshots with the first naming_schema: give one"),
    ({'name_regex': 'auto-.*', 'naming_schema': []},
     "replication task 'offsite': auto_snapshot_task names its snapshots with the first naming_schema: give one"),
    ({'name': 'x' * 96}, 'longer than 100 characters: give the replication task a shorter name'),
])
def test_what_it_cannot_derive_from_is_refused(change: dict, message: str) -> None:
    assert message in refused(dict(REPL, **change))


def test_the_engine_refuses_the_same() -> None:
    """The module and the timer's runner validate the option with the same messages."""
    with pytest.raises(TaskError, match='auto_snapshot_task .* needs direction push'):
        ReplicationTask.from_params(dict(REPL, direction='pull', transport='ssh', ssh={'host': 'nas.example.net'}))
    with pytest.raises(TaskError, match='give schedule'):
        ReplicationTask.from_params(dict(REPL, schedule=None))
    with pytest.raises(TaskError, match='first naming_schema: give one'):
        ReplicationTask.from_params(dict(REPL, naming_schema=[], periodic_snapshot_tasks=[{'naming_schema': SCHEMA}]))
    assert ReplicationTask.from_params(dict(REPL, create_snapshot=True)).create_snapshot  # create_snapshot unchanged beside it


@pytest.mark.parametrize('declared', [
    {'dataset': 'tank/data'},  # the same dataset
    {'dataset': 'tank', 'recursive': True},  # a recursive parent
    {'dataset': 'tank/data/web'},  # a child the derived recursive task would snapshot too
])
def test_a_declared_snapshot_task_taking_the_same_snapshots_is_named(declared: dict) -> None:
    hourly = dict(declared, name='hourly', naming_schema=SCHEMA, schedule='hourly')
    message = refused(REPL, snapshot_tasks=[hourly])
    assert message == (f"replication task 'offsite': auto_snapshot_task would snapshot {declared['dataset'] if 'web' in declared['dataset'] else 'tank/data'} "
                       f"with naming schema '{SCHEMA}', which the declared snapshot task 'hourly' already does: name 'hourly' in "
                       "periodic_snapshot_tasks instead of setting auto_snapshot_task, or give this task another naming_schema")


@pytest.mark.parametrize('declared', [
    {'dataset': 'tank/data', 'naming_schema': 'hourly-%Y-%m-%d_%H-%M'},  # another schema
    {'dataset': 'tank', 'recursive': True, 'exclude': ['tank/data'], 'naming_schema': SCHEMA},  # excluded there
    {'dataset': 'tank/data/scratch', 'naming_schema': SCHEMA},  # excluded by the replication
    {'dataset': 'tank/other', 'naming_schema': SCHEMA},  # elsewhere
])
def test_snapshot_tasks_that_take_other_snapshots_are_fine(declared: dict) -> None:
    entries = plan(REPL, snapshot_tasks=[dict(declared, name='other', schedule='hourly')])
    assert list(entries) == ['snap-other', 'snap-offsite-auto', 'repl-offsite']


def test_two_replication_tasks_deriving_the_same_snapshots_are_refused() -> None:
    second = dict(REPL, name='second', target_dataset='backup2/data')
    assert refused(REPL, second) == (
        f"replication task 'second': auto_snapshot_task would snapshot tank/data with naming schema '{SCHEMA}', which the "
        "snapshot task 'offsite-auto' of replication task 'offsite' (auto_snapshot_task) already does: set auto_snapshot_task "
        "on one of the two replication tasks and name 'offsite-auto' in the other's periodic_snapshot_tasks, or give this "
        "task another naming_schema")


def test_a_declared_task_with_the_derived_name_is_refused() -> None:
    clash = {'name': 'offsite-auto', 'dataset': 'tank/other', 'schedule': 'hourly'}
    assert refused(REPL, snapshot_tasks=[clash]) == (
        "replication task 'offsite': auto_snapshot_task: its snapshot task would be named 'offsite-auto', like the declared "
        "snapshot task 'offsite-auto': rename one of them")


def test_a_bad_derived_lifetime_names_the_field() -> None:
    """What the snapshot engine refuses is found while planning, named after the replication task."""
    message = refused(dict(REPL, retention_policy='custom', lifetime_value=0, lifetime_unit='day'))
    assert message.startswith("replication task 'offsite': lifetime_value 0 is invalid")
