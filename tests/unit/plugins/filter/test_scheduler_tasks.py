# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The role's planning filter: units, OnCalendar, dependencies, validation messages."""
from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.zfs.replication.plugins.filter.scheduler_secret_configs import scheduler_secret_configs
from ansible_collections.zfs.replication.plugins.filter.scheduler_tasks import scheduler_tasks

SNAP = {'name': 'hourly', 'dataset': 'tank/data', 'recursive': True, 'schedule': 'hourly', 'naming_schema': 'auto-%Y-%m-%d_%H-%M'}
REPL = {'name': 'offsite', 'source_datasets': ['tank/data'], 'target_dataset': 'backup/data', 'transport': 'local',
        'naming_schema': ['manual-%Y%m%d-%H%M'], 'schedule': {'minute': '*/15', 'hour': '8-18'}, 'timezone': 'Europe/Berlin'}


def by_id(entries: list[dict]) -> dict[str, dict]:
    return {e['id']: e for e in entries}


def test_units_configs_and_oncalendar() -> None:
    entries = by_id(scheduler_tasks([SNAP], replication_tasks=[REPL], zfs_units=['zfs.target']))
    snap, repl = entries['snap-hourly'], entries['repl-offsite']
    assert (snap['service'], snap['timer']) == ('zfs-replication-snap-hourly.service', 'zfs-replication-snap-hourly.timer')
    assert snap['oncalendar'] == ['*-*-* *:00:00']
    assert repl['oncalendar'] == ['*-*-* 08..18:00,15,30,45:00 Europe/Berlin']
    assert snap['config'] == {'version': 1, 'kind': 'snapshot', 'name': 'hourly', 'depends_on': [], 'schedule': 'hourly',
                              'timezone': None,
                              'params': {'name': 'hourly', 'dataset': 'tank/data', 'recursive': True, 'schedule': 'hourly',
                                         'naming_schema': 'auto-%Y-%m-%d_%H-%M'}}
    # replication params are the module's options (schedule and timezone included); the role's own keys are not
    assert set(repl['config']['params']) == {'name', 'source_datasets', 'target_dataset', 'transport', 'naming_schema',
                                             'schedule', 'timezone'}
    assert repl['config']['schedule'] == REPL['schedule'] and repl['config']['timezone'] == 'Europe/Berlin'
    assert repl['config_path'] == '/etc/zfs-replication/tasks/repl-offsite.json'
    assert repl['exec_start'] == ('/usr/local/sbin/zfs-replication-run run --config /etc/zfs-replication/tasks/repl-offsite.json '
                                  '--state-dir /var/lib/zfs-replication --log-dir /var/log/zfs-replication')
    assert snap['wants'] == ['zfs.target'] and snap['after'] == ['zfs.target']
    assert (snap['enabled'], snap['run_now']) == (True, False)


def test_secrets_stay_out_of_the_plan_and_in_the_config() -> None:
    key = '0123456789abcdef' * 4
    vault = dict(REPL, name='vault', encryption=True, encryption_key=key)
    whole = by_id(scheduler_tasks([SNAP], replication_tasks=[vault, REPL]))
    assert whole['repl-vault']['config']['params']['encryption_key'] == key  # default: configs whole, as before

    shown = by_id(scheduler_tasks([SNAP], replication_tasks=[vault, REPL], secrets=False))
    assert key not in repr(shown)
    assert [i for i, e in shown.items() if e['secret']] == ['repl-vault']
    assert shown['repl-vault']['config']['params']['encryption'] is True
    assert shown['repl-offsite'] == whole['repl-offsite'] and shown['snap-hourly'] == whole['snap-hourly']

    configs = scheduler_secret_configs([SNAP], replication_tasks=[vault, REPL], secrets=False)
    assert configs == {'repl-vault': whole['repl-vault']['config']}

    # a key from the saved configuration (defaults) counts as well
    from_defaults = scheduler_tasks([], replication_tasks=[dict(vault, encryption_key=None)], replication_defaults={'encryption_key': key},
                                    secrets=False)
    assert from_defaults[0]['secret'] is True and key not in repr(from_defaults)
    assert scheduler_secret_configs([], replication_tasks=[dict(vault, encryption_key=None)],
                                    replication_defaults={'encryption_key': key})['repl-vault']['params']['encryption_key'] == key


def test_no_schedule_means_no_timer() -> None:
    repl = dict(REPL, schedule=None)
    [entry] = scheduler_tasks([], replication_tasks=[repl])
    assert entry['timer'] is None and entry['oncalendar'] == []


def test_run_automatically_after_snapshot_task() -> None:
    repl = {k: v for k, v in REPL.items() if k not in ('schedule', 'naming_schema')}
    elsewhere = {'naming_schema': 'remote-%Y-%m-%d_%H-%M', 'lifetime_value': 1, 'lifetime_unit': 'day'}
    repl['periodic_snapshot_tasks'] = ['hourly', elsewhere]
    entries = by_id(scheduler_tasks([SNAP], replication_tasks=[dict(repl, run_now=True, enabled=True)]))
    snap, rep = entries['snap-hourly'], entries['repl-offsite']
    assert snap['wants'] == ['zfs-replication-repl-offsite.service']
    assert rep['after'] == ['zfs-replication-snap-hourly.service']
    assert rep['config']['depends_on'] == ['hourly']
    # the engine gets the snapshot task's options (naming schema, lifetimes) for selection and retention
    assert rep['config']['params']['periodic_snapshot_tasks'] == [snap['config']['params'], elsewhere]
    assert 'naming_schema' not in rep['config']['params']
    assert not {'run_now', 'enabled'} & set(rep['config']['params'])


def test_disabled_or_scheduled_replication_is_not_triggered_by_snapshots() -> None:
    for change in ({'enabled': False}, {'schedule': 'daily'}):
        repl = dict(REPL, periodic_snapshot_tasks=['hourly'], **change)
        entries = by_id(scheduler_tasks([SNAP], replication_tasks=[repl]))
        assert entries['snap-hourly']['wants'] == []
        assert entries['repl-offsite']['after'] == ['zfs-replication-snap-hourly.service']


def test_ssh_transport_waits_for_the_network() -> None:
    repl = dict(REPL, transport='ssh', ssh={'host': 'backup.example.net', 'known_hosts_file': '/etc/kh'})
    [entry] = scheduler_tasks([], replication_tasks=[repl], zfs_units=['zfs.target'])
    assert entry['wants'] == ['zfs.target', 'network-online.target']


def test_defaults_are_merged_and_tasks_win() -> None:
    entries = by_id(scheduler_tasks([{'name': 'a', 'dataset': 'tank/a'}], snapshot_defaults={'schedule': 'daily', 'recursive': True},
                                    replication_tasks=[dict(REPL, readonly='ignore')],
                                    replication_defaults={'readonly': 'require', 'properties': False}))
    assert entries['snap-a']['config']['params']['recursive'] is True
    assert entries['snap-a']['oncalendar'] == ['*-*-* 00:00:00']
    assert entries['snap-a']['config']['params']['naming_schema'] == 'auto-%Y-%m-%d_%H-%M'  # TrueNAS default
    params = entries['repl-offsite']['config']['params']
    assert (params['readonly'], params['properties']) == ('ignore', False)


def test_replication_name_is_suggested() -> None:
    repl = {k: v for k, v in REPL.items() if k != 'name'}
    [entry] = scheduler_tasks([], replication_tasks=[repl])
    assert entry['name'] == 'tank-data-to-backup-data'
    assert entry['service'] == 'zfs-replication-repl-tank-data-to-backup-data.service'


def test_run_now_by_name() -> None:
    entries = by_id(scheduler_tasks([SNAP], replication_tasks=[REPL], run_now=['offsite']))
    assert entries['repl-offsite']['run_now'] is True and entries['snap-hourly']['run_now'] is False


def test_exec_start_is_escaped_for_systemd() -> None:
    [entry] = scheduler_tasks([SNAP], state_dir='/srv/state 100%', log_dir='/var/log/$x')
    assert '"/srv/state 100%%"' in entry['exec_start']
    assert '/var/log/$$x' in entry['exec_start']


@pytest.mark.parametrize('snaps, repls, kw, message', [
    ([dict(SNAP, name='a b')], [], {}, "snapshot task 'a b': name 'a b'"),
    ([{'dataset': 'tank'}], [], {}, 'snapshot_tasks\\[0\\]: name None'),
    ([SNAP, SNAP], [], {}, 'two snapshot tasks are named hourly'),
    ([dict(SNAP, dataset=None)], [], {}, 'dataset is required'),
    ([dict(SNAP, schedule='fortnightly')], [], {}, "snapshot task 'hourly': schedule 'fortnightly' is not a preset"),
    ([dict(SNAP, schedule={'minute': '61'})], [], {}, 'schedule.minute'),
    ([dict(SNAP, naming_schema='auto-%Y')], [], {}, 'naming_schema'),
    ([dict(SNAP, timezone='Mars/Olympus')], [], {}, 'Mars/Olympus'),
    ([], [dict(REPL, periodic_snapshot_tasks=['nope'])], {}, "names 'nope', which is not a declared snapshot task"),
    ([], [dict(REPL, periodic_snapshot_tasks=[3])], {}, 'must be a snapshot task name or a dict'),
    ([], [dict(REPL, state='absent')], {}, 'state is not a task option here'),
    ([], [dict(REPL, source_datasets=[])], {}, "replication task 'offsite': source_datasets"),
    ([], [REPL, REPL], {}, 'two replication tasks are named offsite'),
    ([], [dict(REPL, schedule={'begin': '25:00'})], {}, 'schedule.begin'),
    ([], [REPL], {'run_now': ['ghost']}, 'run_now names ghost'),
    ([], [REPL], {'state_dir': 'relative'}, 'must be an absolute path'),
    (['x'], [], {}, 'is not a dict'),
])
def test_invalid_declarations_fail_with_a_clear_message(snaps: list, repls: list, kw: dict, message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        scheduler_tasks(snaps, replication_tasks=repls, **kw)
