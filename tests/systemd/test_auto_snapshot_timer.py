# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""auto_snapshot_task on a real systemd: the role installs the snapshot task derived from an every-minute
replication task as a timer of its own; that timer fires, takes a snapshot named by the replication's schema, the
replication's timer sends it (same guids both sides), and an apply without the option removes the derived task's
units while the replication task keeps its own.

Uses its own engine, config, state and log directories, and removes its units at the end, so the scheduler tests
that share the container see a host without them.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from container import PIPELINING, ROLE_PLAYBOOK, Container, remove_role_install, role_dirs

from helpers import dataset_exists, destroy_retrying, snapshots_with_guids, zfs

DIRS = role_dirs('auto')
SCHEMA = 'aut-%Y-%m-%d_%H-%M'
# Only ends a wait for a timer that never fires (see test_scheduler.py's FIRE_DEADLINE): every-minute timers fire
# within about a minute; the margin is for slow machines and costs nothing when they fire on time.
FIRE_DEADLINE = 180.0
UNIT_DIR = Path('/etc/systemd/system')


def wait_until(condition, what: str, container: Container, units: list[str], timeout: float = FIRE_DEADLINE):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(2)
    journal = container.exec('journalctl', '--no-pager', '-n', '80', *[f'-u{u}' for u in units], check=False).stdout
    raise AssertionError(f'{what}: not within {timeout:.0f} s\njournal:\n{journal}')


def test_the_derived_snapshot_task_has_its_own_timer_that_fires_and_goes_with_the_option(
        sandbox, container: Container, container_inventory: str, ansible_playbook) -> None:
    src, dst = f'{sandbox.src_pool}/autot', f'{sandbox.dst_pool}/autot'
    zfs('create', src)
    zfs('create', dst)
    repl = {'name': 'autorepl', 'source_datasets': [src], 'target_dataset': f'{dst}/data', 'transport': 'local',
            'naming_schema': [SCHEMA], 'timezone': 'UTC', 'schedule': {'minute': '*', 'hour': '*'},
            'auto_snapshot_task': True, 'retention_policy': 'custom', 'lifetime_value': 1, 'lifetime_unit': 'hour'}
    snap_unit, repl_unit = 'zfs-replication-snap-autorepl-auto', 'zfs-replication-repl-autorepl'
    try:
        ansible_playbook(ROLE_PLAYBOOK, extravars={**DIRS, 'scheduler_replication_tasks': [repl]},
                         inventory_text=container_inventory, env=PIPELINING)
        timer = container.exec('cat', f'{UNIT_DIR}/{snap_unit}.timer').stdout
        assert 'OnCalendar=*-*-* *:*:00 UTC' in timer.splitlines(), timer
        timers = container.exec('systemctl', 'list-timers', '--all', '--no-pager').stdout
        assert f'{snap_unit}.timer' in timers and f'{repl_unit}.timer' in timers, timers

        # The derived task's timer fires and takes a snapshot named by the replication's schema; the replication's
        # timer sends it.
        def taken():
            names = [k[1:] for k in snapshots_with_guids(src) if k.startswith('@')]
            return [n for n in names if re.fullmatch(r'aut-\d{4}-\d\d-\d\d_\d\d-\d\d', n)]
        first = wait_until(taken, 'a snapshot taken by the derived task', container, [snap_unit, repl_unit])[0]

        def sent():
            target = snapshots_with_guids(f'{dst}/data') if dataset_exists(f'{dst}/data') else {}
            return target.get(f'@{first}') == snapshots_with_guids(src)[f'@{first}']
        wait_until(sent, f'{first} replicated with its guid', container, [snap_unit, repl_unit])
        journal = container.exec('journalctl', '--no-pager', '-u', f'{snap_unit}.service').stdout
        assert 'snapshot task autorepl-auto: ' in journal and '1 taken' in journal, journal

        # Without the option: the derived task's units go; the replication task keeps its own.
        ansible_playbook(ROLE_PLAYBOOK, extravars={**DIRS, 'scheduler_replication_tasks': [{**repl, 'auto_snapshot_task': False}]},
                         inventory_text=container_inventory, env=PIPELINING)
        left = container.exec('ls', str(UNIT_DIR)).stdout.split()
        assert not [u for u in left if u.startswith(snap_unit)], left
        assert f'{repl_unit}.timer' in left and f'{repl_unit}.service' in left
        assert f'{snap_unit}.timer' not in container.exec('systemctl', 'list-timers', '--all', '--no-pager').stdout
    finally:
        remove_role_install(ansible_playbook, container, container_inventory, DIRS)
        for ds in (src, dst):
            destroy_retrying(ds, tags=['zfs.replication:autorepl'])
