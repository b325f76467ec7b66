# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""restrict_schedule on a real systemd: a replication that runs after its every-minute snapshot task, with a run window
opening a few minutes after the apply. Started by the snapshot task's service before the window, it records `waiting`
and sends nothing; its own timer fires at the window's begin and it replicates what waited.

Uses its own engine, config, state and log directories, and removes its units at the end, so the scheduler tests
that share the container see a host without them.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from container import PIPELINING, ROLE_PLAYBOOK, Container, remove_role_install, role_dirs

from helpers import destroy_retrying, snapshots_with_guids, zfs

DIRS = role_dirs('window')
# Only ends a wait for a run that never comes (see test_scheduler.py's FIRE_DEADLINE): the window opens at a minute
# boundary; the margin is for slow machines and costs nothing when the run comes on time.
FIRE_DEADLINE = 180.0


def state(container: Container, task_id: str) -> dict[str, Any] | None:
    proc = container.exec('cat', f"{DIRS['scheduler_state_dir']}/{task_id}.json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else None


def wait_for(container: Container, task_id: str, predicate, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = state(container, task_id)
        if last and predicate(last):
            return last
        time.sleep(1)
    journal = container.exec('journalctl', '--no-pager', '-n', '60', '-u', f'zfs-replication-{task_id}.service', check=False).stdout
    pytest.fail(f'{task_id}: state not reached within {timeout:.0f} s; last state: {last}\njournal:\n{journal}', pytrace=False)


def test_a_replication_outside_its_window_waits_and_its_timer_runs_it_at_the_window_start(
        sandbox, container: Container, container_inventory: str, ansible_playbook) -> None:
    src, dst = f'{sandbox.src_pool}/window', f'{sandbox.dst_pool}/window'
    zfs('create', src)
    zfs('create', dst)
    # The window opens four minutes from now (the apply and a first snapshot run or two come before it), in UTC.
    begin = (datetime.now(timezone.utc) + timedelta(minutes=4)).replace(second=0, microsecond=0)
    window = {'begin': begin.strftime('%H:%M'), 'end': (begin + timedelta(minutes=30)).strftime('%H:%M')}
    decl = {**DIRS,
            'scheduler_snapshot_tasks': [{'name': 'wsnap', 'dataset': src, 'naming_schema': 'w-%Y-%m-%d_%H-%M', 'timezone': 'UTC',
                                          'schedule': {'minute': '*', 'hour': '*'}, 'lifetime_value': 1, 'lifetime_unit': 'hour'}],
            'scheduler_replication_tasks': [{'name': 'wrepl', 'source_datasets': [src], 'target_dataset': f'{dst}/data',
                                             'transport': 'local', 'periodic_snapshot_tasks': ['wsnap'], 'timezone': 'UTC',
                                             'restrict_schedule': window}]}
    try:
        ansible_playbook(ROLE_PLAYBOOK, extravars=decl, inventory_text=container_inventory, env=PIPELINING)
        timer = container.exec('cat', '/etc/systemd/system/zfs-replication-repl-wrepl.timer').stdout
        assert f"OnCalendar=*-*-* {window['begin']}:00 UTC" in timer.splitlines()
        assert 'zfs-replication-repl-wrepl.timer' in container.exec('systemctl', 'list-timers', '--all', '--no-pager').stdout

        # The snapshot task's run starts the replication (Wants=), outside the window: it waits.
        waiting = wait_for(container, 'repl-wrepl', lambda s: s.get('result') == 'waiting', FIRE_DEADLINE)
        source_then = snapshots_with_guids(src)
        target_then = zfs('list', '-H', '-o', 'name', '-r', '-t', 'all', dst).split()
        if state(container, 'repl-wrepl') == waiting:  # no run started meanwhile (a run marks the state first)
            assert target_then == [dst], 'a waiting run sent something'
        assert waiting['next_window'] == begin.isoformat(timespec='seconds')
        assert waiting['reason'] == (f"outside restrict_schedule window {window['begin']}-{window['end']} (UTC); next window starts at "
                                     f"{begin.isoformat(timespec='minutes')}")
        journal = container.exec('journalctl', '--no-pager', '-u', 'zfs-replication-repl-wrepl.service').stdout
        assert 'replication task wrepl: waiting: outside restrict_schedule window' in journal
        assert state(container, 'snap-wsnap')['result'] == 'ok' and source_then

        # At the window's start the task's timer (and the snapshot run of that minute) runs it: what waited goes.
        done = wait_for(container, 'repl-wrepl', lambda s: s.get('result') == 'ok',
                        max(5.0, begin.timestamp() - time.time()) + FIRE_DEADLINE)
        assert done['last_start'] >= begin.isoformat(timespec='seconds')
        target = snapshots_with_guids(f'{dst}/data')
        assert {k: v for k, v in target.items() if k in source_then} == source_then
        result = container.exec('systemctl', 'show', 'zfs-replication-repl-wrepl.service', '--property=Result').stdout.strip()
        assert result == 'Result=success'
    finally:
        remove_role_install(ansible_playbook, container, container_inventory, DIRS)
        for ds in (src, dst):
            destroy_retrying(ds)
