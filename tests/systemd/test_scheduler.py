# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The zfs.replication.scheduler role on a real systemd: units, timers firing, runs, state, removal.

The tests run in file order and share one declaration applied once (the `applied` fixture); the last test
re-applies a smaller declaration. Minute timers fire while the earlier tests run, so the wait is short.
"""

from __future__ import annotations

import json
import re
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from container import PIPELINING, ROLE_PLAYBOOK, Container

from ansible_collections.zfs.replication.plugins.module_utils._schedule import Schedule
from helpers import snapshots_with_guids, zfs

UNIT_DIR = '/etc/systemd/system'
SCHEMA = 'test-%Y-%m-%d_%H-%M'
_memo: dict[str, Any] = {}


def unit(task_id: str, suffix: str = 'service') -> str:
    return f'zfs-replication-{task_id}.{suffix}'


def declaration(src: str, dst: str) -> dict[str, Any]:
    now = datetime.now(timezone.utc)
    # A window that excludes the next few hours: runs started now are skipped.
    begin = (now + timedelta(hours=3)).strftime('%H:00')
    end = (now + timedelta(hours=4)).strftime('%H:00')
    every_minute = {'minute': '*', 'hour': '*'}
    snapshot_tasks: list[dict[str, Any]] = [
        {'name': 'daily', 'dataset': f'{src}/data', 'schedule': 'daily', 'lifetime_value': 2, 'lifetime_unit': 'week'},
    ]
    replication_tasks: list[dict[str, Any]] = [
        {'name': 'every-minute', 'source_datasets': [f'{src}/data'], 'target_dataset': f'{dst}/every-minute',
         'transport': 'local', 'naming_schema': [SCHEMA], 'schedule': every_minute},
        {'name': 'broken', 'source_datasets': [f'{src}/missing'], 'target_dataset': f'{dst}/broken',
         'transport': 'local', 'naming_schema': [SCHEMA], 'schedule': every_minute},
        {'name': 'windowed', 'source_datasets': [f'{src}/data'], 'target_dataset': f'{dst}/windowed',
         'transport': 'local', 'naming_schema': [SCHEMA], 'timezone': 'UTC',
         'schedule': {'minute': '0', 'hour': '*', 'begin': begin, 'end': end}},
        {'name': 'weekly-berlin', 'source_datasets': [f'{src}/data'], 'target_dataset': f'{dst}/weekly',
         'transport': 'local', 'naming_schema': [SCHEMA], 'schedule': 'weekly', 'timezone': 'Europe/Berlin'},
        {'name': 'on-demand', 'source_datasets': [f'{src}/data'], 'target_dataset': f'{dst}/on-demand',
         'transport': 'local', 'naming_schema': [SCHEMA]},
        {'name': 'disabled', 'source_datasets': [f'{src}/data'], 'target_dataset': f'{dst}/disabled',
         'transport': 'local', 'naming_schema': [SCHEMA], 'schedule': 'hourly', 'enabled': False},
    ]
    # TrueNAS's "run automatically": the replication has no schedule and runs after each snapshot run.
    snapshot_tasks.append({'name': 'minutely', 'dataset': f'{src}/chain', 'naming_schema': 'chain-%Y-%m-%d_%H-%M',
                           'schedule': every_minute, 'lifetime_value': 1, 'lifetime_unit': 'hour'})
    replication_tasks.append({'name': 'chain', 'source_datasets': [f'{src}/chain'], 'target_dataset': f'{dst}/chain',
                              'transport': 'local', 'periodic_snapshot_tasks': ['minutely']})
    return {'scheduler_snapshot_tasks': snapshot_tasks, 'scheduler_replication_tasks': replication_tasks}


def changed_count(result: Any, host: str = 'zrsystemd') -> int:
    return int(result.stats[host]['changed'])


def changed_tasks(result: Any, host: str = 'zrsystemd') -> list[str]:
    return [t['task']['name'] for t in result.tasks_run if t['hosts'].get(host, {}).get('changed')]


@pytest.fixture
def applied(sandbox, container: Container, container_inventory: str, ansible_playbook) -> dict[str, Any]:
    """The role applied once for the whole module (memoized: the playbook runner fixture is per test)."""
    if 'first' not in _memo:
        src, dst = sandbox.src_pool, sandbox.dst_pool
        for ds in ('data', 'chain'):
            zfs('create', f'{src}/{ds}')
        Path(sandbox.mountpoints[src], 'data', 'file.txt').write_text('first\n')
        zfs('snapshot', f'{src}/data@test-2026-01-01_00-00')
        decl = declaration(src, dst)
        # check mode on a fresh host: reports what it would do, fails nowhere, changes nothing
        check = ansible_playbook(ROLE_PLAYBOOK, extravars=decl, inventory_text=container_inventory, check=True, env=PIPELINING)
        fresh = container.exec('sh', '-c', 'ls -d /usr/local/sbin/zfs-replication-run /etc/zfs-replication '
                                           '/usr/local/lib/zfs-replication /etc/systemd/system/zfs-replication-* 2>/dev/null',
                               check=False).stdout
        _memo.update(fresh_check=check, fresh_listing=fresh)
        t0 = time.monotonic()
        result = ansible_playbook(ROLE_PLAYBOOK, extravars=decl, inventory_text=container_inventory, env=PIPELINING)
        _memo.update(first=result, decl=decl, applied_at=time.time(), apply_seconds=time.monotonic() - t0)
        print(f'first apply: {_memo["apply_seconds"]:.1f} s, {changed_count(result)} changed', file=sys.stderr)
    return _memo


def show(container: Container, name: str, *props: str) -> dict[str, str]:
    out = container.exec('systemctl', 'show', name, *[f'--property={p}' for p in props]).stdout
    return dict(line.split('=', 1) for line in out.splitlines() if '=' in line)


def settled(container: Container, name: str, *props: str, timeout: float = 60.0) -> dict[str, str]:
    """show() once the unit is between runs: a run writes its state file before its process exits, and a minute
    timer may start the next run, so a unit read right after its state file can still be (or again be) activating."""
    deadline = time.monotonic() + timeout
    while True:
        values = show(container, name, 'ActiveState', *props)
        if values['ActiveState'] not in ('activating', 'deactivating', 'reloading') or time.monotonic() > deadline:
            return values
        time.sleep(0.5)


def read_json(container: Container, path: str) -> dict[str, Any] | None:
    proc = container.exec('cat', path, check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else None


# The timers fire on systemd's real clock, which a test cannot freeze: these deadlines only end a wait for a run that
# never comes (then the test fails with the journal). A timer fires at the first minute boundary after the apply
# (<= 60 s) and its run then takes some seconds; the margin is for machines twice as slow, and costs nothing when
# the run comes early.
FIRE_DEADLINE = 180.0


def first_fire_deadline(applied: dict[str, Any]) -> float:
    return max(5.0, applied['applied_at'] + 60 + FIRE_DEADLINE - time.time())


def wait_for_state(container: Container, task_id: str, predicate, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = read_json(container, f'/var/lib/zfs-replication/{task_id}.json')
        if state and predicate(state):
            return state
        time.sleep(1)
    journal = container.exec('journalctl', '--no-pager', '-n', '60', '-u', unit(task_id), check=False).stdout
    pytest.fail(f'{task_id}: state not reached within {timeout:.0f} s; last state: {state}\njournal:\n{journal}', pytrace=False)


def installed_units(container: Container) -> list[str]:
    out = container.exec('sh', '-c', f'cd {UNIT_DIR} && ls -1 zfs-replication-* 2>/dev/null || true').stdout
    return sorted(out.split())


def journal(container: Container, task_id: str) -> str:
    return container.exec('journalctl', '--no-pager', '-o', 'cat', '-u', unit(task_id)).stdout


# ------------------------------------------------------------------------------------------------------------------


def test_role_installs_units_for_the_declared_tasks(applied: dict[str, Any], container: Container) -> None:
    assert changed_count(applied['first']) > 0
    expected = {unit('snap-daily'), unit('snap-daily', 'timer')}
    for name in ('every-minute', 'broken', 'windowed', 'weekly-berlin', 'disabled'):
        expected |= {unit(f'repl-{name}'), unit(f'repl-{name}', 'timer')}
    expected.add(unit('repl-on-demand'))  # no schedule: a service, no timer
    expected |= {unit('snap-minutely'), unit('snap-minutely', 'timer'), unit('repl-chain')}
    assert set(installed_units(container)) == expected
    # the engine runs without ansible-core on the host
    assert container.exec('python3', '-c', 'import ansible', check=False).returncode != 0
    assert container.exec('zfs-replication-run', '--help').returncode == 0


def test_check_mode_on_a_fresh_host_changes_nothing(applied: dict[str, Any]) -> None:
    assert changed_count(applied['fresh_check']) > 0
    assert applied['fresh_listing'] == ''


def test_every_unit_verifies_clean(applied: dict[str, Any], container: Container) -> None:
    units = [f'{UNIT_DIR}/{u}' for u in installed_units(container)]
    proc = container.exec('systemd-analyze', 'verify', *units, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == '', f'systemd-analyze verify printed:\n{proc.stderr}'
    text = container.exec('cat', f'{UNIT_DIR}/{unit("repl-every-minute")}').stdout
    assert text.startswith('#'), 'templates begin with the ansible_managed comment'
    assert 'Type=oneshot' in text
    timer = container.exec('cat', f'{UNIT_DIR}/{unit("repl-every-minute", "timer")}').stdout
    assert 'Persistent=true' in timer and 'OnCalendar=*-*-* *:*:00' in timer


def test_configs_are_root_only(applied: dict[str, Any], container: Container) -> None:
    out = container.exec('stat', '-c', '%a %U %n', '/etc/zfs-replication/tasks',
                         '/etc/zfs-replication/tasks/repl-every-minute.json').stdout.split('\n')
    assert out[0] == '700 root /etc/zfs-replication/tasks'
    assert out[1] == '600 root /etc/zfs-replication/tasks/repl-every-minute.json'
    cfg = read_json(container, '/etc/zfs-replication/tasks/repl-every-minute.json')
    assert cfg is not None and cfg['kind'] == 'replication' and cfg['params']['transport'] == 'local'


def _next_elapse(container: Container, timer: str) -> datetime:
    # While a timer's service runs (a minute timer may be firing right now), systemd shows no next elapse until the
    # service has finished and the timer is rearmed: ask again until it answers.
    for _attempt in range(40):
        value = show(container, timer, 'NextElapseUSecRealtime')['NextElapseUSecRealtime']
        if value:
            break
        time.sleep(0.5)
    assert value, f'{timer}: systemd never gave a next elapse'
    # e.g. "Sun 2026-11-29 23:00:00 UTC" (the container's zone is UTC)
    return datetime.strptime(value.rsplit(' ', 1)[0], '%a %Y-%m-%d %H:%M:%S').replace(tzinfo=timezone.utc)


def test_timers_are_listed_with_the_schedules_next_elapse(applied: dict[str, Any], container: Container) -> None:
    listing = container.exec('systemctl', 'list-timers', '--all', '--no-pager', '--no-legend').stdout
    decl = applied['decl']
    tasks = [('repl', t) for t in decl['scheduler_replication_tasks']] + [('snap', t) for t in decl['scheduler_snapshot_tasks']]
    checked = 0
    for prefix, task in tasks:
        if 'schedule' not in task or task.get('enabled') is False:
            continue
        timer = unit(f'{prefix}-{task["name"]}', 'timer')
        assert timer in listing
        before = datetime.now(timezone.utc) - timedelta(seconds=2)
        actual = _next_elapse(container, timer)
        schedule = Schedule.from_spec(task['schedule'], timezone=task.get('timezone'))
        first = schedule.next_slot(before)
        # a minute timer may elapse between our clock reading and systemd's answer
        assert actual in (first, schedule.next_slot(first)), f'{timer}: systemd says {actual}, schedule says {first}'
        props = show(container, timer, 'ActiveState', 'UnitFileState')
        assert props == {'ActiveState': 'active', 'UnitFileState': 'enabled'}
        checked += 1
    assert checked >= 5
    # the disabled task keeps its units and config; its timer is stopped and disabled
    assert show(container, unit('repl-disabled', 'timer'), 'ActiveState', 'UnitFileState') == \
        {'ActiveState': 'inactive', 'UnitFileState': 'disabled'}
    assert read_json(container, '/etc/zfs-replication/tasks/repl-disabled.json') is not None


def test_second_run_changes_nothing(applied: dict[str, Any], container_inventory: str, ansible_playbook) -> None:
    result = ansible_playbook(ROLE_PLAYBOOK, extravars=applied['decl'], inventory_text=container_inventory, env=PIPELINING)
    assert changed_count(result) == 0, changed_tasks(result)


def test_check_mode_changes_nothing(applied: dict[str, Any], container: Container, container_inventory: str,
                                    ansible_playbook) -> None:
    stamp = container.exec('sh', '-c', f'stat -c "%n %Y" {UNIT_DIR}/zfs-replication-* /etc/zfs-replication/tasks/*').stdout
    result = ansible_playbook(ROLE_PLAYBOOK, extravars=applied['decl'], inventory_text=container_inventory, check=True, env=PIPELINING)
    assert changed_count(result) == 0, changed_tasks(result)
    # a check run of a smaller declaration reports the removals but does not make them
    smaller = dict(applied['decl'], scheduler_replication_tasks=applied['decl']['scheduler_replication_tasks'][:1])
    result = ansible_playbook(ROLE_PLAYBOOK, extravars=smaller, inventory_text=container_inventory, check=True, env=PIPELINING)
    assert changed_count(result) > 0
    assert container.exec('sh', '-c', f'stat -c "%n %Y" {UNIT_DIR}/zfs-replication-* /etc/zfs-replication/tasks/*').stdout == stamp


def test_minute_timer_fires_and_replicates(applied: dict[str, Any], sandbox, container: Container) -> None:
    src, dst = f'{sandbox.src_pool}/data', f'{sandbox.dst_pool}/every-minute'
    # The timer fires at the first minute boundary after the apply (AccuracySec=1s).
    state = wait_for_state(container, 'repl-every-minute', lambda s: s.get('result') == 'ok',
                           timeout=first_fire_deadline(applied))
    # by now the timer may have fired more than once: the later runs found nothing new
    assert state['snapshots_sent'] in (0, 1) and state['error'] is None
    assert state['last_start'] <= state['last_end'] == state['last_success']
    assert snapshots_with_guids(dst) == snapshots_with_guids(src)
    assert show(container, unit('repl-every-minute'), 'Result')['Result'] == 'success'
    lines = journal(container, 'repl-every-minute')
    assert 'replication task every-minute: start' in lines and 'replication task every-minute: ok' in lines
    assert 'task every-minute: 1 snapshot(s) sent' in lines  # the first run sent the one snapshot
    log = container.exec('cat', '/var/log/zfs-replication/repl-every-minute.log').stdout
    assert re.search(r'repl-every-minute\[\d+\]: replication task every-minute: ok', log)

    # The next run sends only what is new (started by hand, the same unit and ExecStart the timer uses).
    Path(sandbox.mountpoints[sandbox.src_pool], 'data', 'file.txt').write_text('second\n')
    zfs('snapshot', f'{src}@test-2026-01-02_00-00')
    container.exec('systemctl', 'start', unit('repl-every-minute'))
    state = read_json(container, '/var/lib/zfs-replication/repl-every-minute.json')
    assert state is not None and state['result'] == 'ok'
    assert snapshots_with_guids(dst) == snapshots_with_guids(src)
    assert len(snapshots_with_guids(dst)) == 2
    # only the new snapshot, from the common base
    assert re.search(rf'plan {src} -> {dst}: incremental \(base test-2026-01-01_00-00\)', journal(container, 'repl-every-minute'))
    status = json.loads(container.exec('zfs-replication-run', 'status', 'repl-every-minute').stdout)
    assert status['repl-every-minute']['result'] == 'ok'


def test_failing_task_marks_the_unit_failed(applied: dict[str, Any], container: Container) -> None:
    state = wait_for_state(container, 'repl-broken', lambda s: s.get('result') == 'failed',
                           timeout=first_fire_deadline(applied))
    assert 'does not exist' in state['error']
    props = settled(container, unit('repl-broken'), 'Result', 'ExecMainStatus')
    assert props == {'Result': 'exit-code', 'ExecMainStatus': '1', 'ActiveState': 'failed'}
    assert 'replication task broken: FAILED' in journal(container, 'repl-broken')
    # the timer keeps running: a failed run does not stop the schedule
    assert show(container, unit('repl-broken', 'timer'), 'ActiveState')['ActiveState'] == 'active'


def test_run_outside_the_window_is_skipped(applied: dict[str, Any], sandbox, container: Container) -> None:
    container.exec('systemctl', 'start', unit('repl-windowed'))
    state = read_json(container, '/var/lib/zfs-replication/repl-windowed.json')
    assert state is not None and state['result'] == 'skipped'
    assert state['reason'].startswith("outside the schedule's window")
    assert show(container, unit('repl-windowed'), 'Result')['Result'] == 'success'
    assert 'skipped: outside the schedule' in journal(container, 'repl-windowed')
    assert f'{sandbox.dst_pool}/windowed' not in zfs('list', '-H', '-o', 'name', '-r', sandbox.dst_pool)


def test_snapshot_task_fires_and_its_replication_follows(applied: dict[str, Any], sandbox, container: Container) -> None:
    snap = wait_for_state(container, 'snap-minutely', lambda s: s.get('result') == 'ok',
                          timeout=first_fire_deadline(applied))
    repl = wait_for_state(container, 'repl-chain', lambda s: s.get('result') == 'ok' and s['last_start'] >= snap['last_end'],
                          timeout=FIRE_DEADLINE)
    assert repl['last_start'] >= snap['last_end'], 'the replication starts after the snapshot run has finished'
    src, dst = f'{sandbox.src_pool}/chain', f'{sandbox.dst_pool}/chain'
    taken = snapshots_with_guids(src)
    assert taken and all(re.fullmatch(r'@chain-\d{4}-\d\d-\d\d_\d\d-\d\d', n) for n in taken)
    assert snapshots_with_guids(dst) == taken
    assert show(container, unit('snap-minutely'), 'Result')['Result'] == 'success'
    assert show(container, unit('repl-chain'), 'Result')['Result'] == 'success'


def test_undeclared_tasks_are_removed_and_run_now_runs(applied: dict[str, Any], sandbox, container: Container,
                                                       container_inventory: str, ansible_playbook) -> None:
    decl = json.loads(json.dumps(applied['decl']))
    gone = ('broken', 'weekly-berlin')
    decl['scheduler_replication_tasks'] = [t for t in decl['scheduler_replication_tasks'] if t['name'] not in gone]
    for task in decl['scheduler_replication_tasks']:
        if task['name'] == 'on-demand':
            task['run_now'] = True
    result = ansible_playbook(ROLE_PLAYBOOK, extravars=decl, inventory_text=container_inventory, env=PIPELINING)
    assert changed_count(result) > 0
    units = installed_units(container)
    listing = container.exec('systemctl', 'list-units', '--all', '--no-pager', '--no-legend', '--plain', 'zfs-replication-*').stdout
    timers = container.exec('systemctl', 'list-timers', '--all', '--no-pager', '--no-legend').stdout
    for name in gone:
        for suffix in ('service', 'timer'):
            assert unit(f'repl-{name}', suffix) not in units
            assert unit(f'repl-{name}', suffix) not in listing
        assert unit(f'repl-{name}', 'timer') not in timers
        assert read_json(container, f'/etc/zfs-replication/tasks/repl-{name}.json') is None
        assert container.exec('test', '-e', f'/var/lib/zfs-replication/repl-{name}.json', check=False).returncode == 1
    assert container.exec('test', '-e', '/var/log/zfs-replication/repl-broken.log', check=False).returncode == 0  # logs kept
    assert unit('repl-every-minute', 'timer') in timers
    # run_now ran the on-demand task once, and the play waited for it
    state = read_json(container, '/var/lib/zfs-replication/repl-on-demand.json')
    assert state is not None and state['result'] == 'ok'
    assert snapshots_with_guids(f'{sandbox.dst_pool}/on-demand') == snapshots_with_guids(f'{sandbox.src_pool}/data')
    assert changed_tasks(result) == ['zfs.replication.scheduler : Stop and disable timers that are no longer declared',
                                     'zfs.replication.scheduler : Remove units that are no longer declared',
                                     'zfs.replication.scheduler : Remove configs and state of tasks that are no longer declared',
                                     'zfs.replication.scheduler : Run tasks now']


def holds(dataset: str) -> list[str]:
    """Snapshots under DATASET with holds (userrefs > 0). zfs-fuse's `zfs holds` is broken (no pyzfs); nothing
    but the replication tasks holds snapshots in these pools."""
    out = zfs('get', '-H', '-p', '-r', '-o', 'name,value', 'userrefs', dataset)
    return sorted(name for name, value in (line.split('\t') for line in out.splitlines()) if '@' in name and value not in ('0', '-'))


def test_removing_everything_leaves_no_units_and_no_holds(applied: dict[str, Any], sandbox, container: Container,
                                                          container_inventory: str, ansible_playbook) -> None:
    held = holds(f'{sandbox.src_pool}/data') + holds(sandbox.dst_pool)
    assert held, 'the replications that ran hold their base snapshots on both sides'
    empty = {'scheduler_snapshot_tasks': [], 'scheduler_replication_tasks': []}
    result = ansible_playbook(ROLE_PLAYBOOK, extravars=empty, inventory_text=container_inventory, env=PIPELINING)
    # the replication tasks' holds on their base snapshots go with them
    assert holds(f'{sandbox.src_pool}/data') + holds(sandbox.dst_pool) == []
    released = 'zfs.replication.scheduler : Release the holds of replication tasks that are no longer declared'
    assert released in changed_tasks(result)
    assert installed_units(container) == []
    assert container.exec('sh', '-c', 'ls /etc/zfs-replication/tasks /var/lib/zfs-replication').stdout.split() == \
        ['/etc/zfs-replication/tasks:', '/var/lib/zfs-replication:']
    assert 'zfs-replication' not in container.exec('systemctl', 'list-timers', '--all', '--no-pager').stdout
