# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Live progress on a real systemd: a replication held back by speed_limit runs as the role's unit, started by
playbooks/run_now.yml; while it runs, two reads of the state file's running.transfers and of the metrics see the
byte count move, zfs-replication-status and zfs_replication_info show the stream, and the journal gets a progress
line every progress_interval; run_now follows the unit to its end and prints the run's log with those lines.

Uses its own engine, config, state, log and metrics directories and removes them at the end.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

from container import PIPELINING, ROLE_PLAYBOOK, Container, remove_role_install, role_dirs

from helpers import destroy_retrying, snapshots_with_guids, zfs

REPO = Path(__file__).resolve().parents[2]
DIRS = role_dirs('prog')
METRICS = '/var/lib/zr-prog-metrics'
SNAPSHOT = 'prg-2026-12-01_00-00'
SIZE = 3_000_000
LIMIT = 150_000  # bytes per second: the stream takes about 20 s
UNIT = 'zfs-replication-repl-progrepl.service'


def read_json(container: Container, path: str) -> dict:
    proc = container.exec('cat', path, check=False)
    try:
        return json.loads(proc.stdout) if proc.returncode == 0 else {}
    except json.JSONDecodeError:
        return {}


def transferred(prom: str) -> int | None:
    match = re.search(r'^zfs_replication_transfer_bytes\{[^}]*\} (\d+)$', prom, re.M)
    return int(match.group(1)) if match else None


def test_a_slow_stream_shows_its_progress_everywhere_a_user_looks(
        sandbox, container: Container, container_inventory: str, ansible_playbook) -> None:
    src, dst = f'{sandbox.src_pool}/progt', f'{sandbox.dst_pool}/progt'
    zfs('create', src)
    zfs('create', dst)
    Path(sandbox.mountpoints[sandbox.src_pool], 'progt', 'data.bin').write_bytes(os.urandom(SIZE))
    zfs('snapshot', f'{src}@{SNAPSHOT}')
    repl = {'name': 'progrepl', 'source_datasets': [src], 'target_dataset': f'{dst}/data', 'transport': 'local',
            'naming_schema': ['prg-%Y-%m-%d_%H-%M'], 'speed_limit': LIMIT, 'progress_interval': 1,
            'schedule': {'minute': '0', 'hour': '3'}}  # started by hand below
    state_file = f"{DIRS['scheduler_state_dir']}/repl-progrepl.json"
    try:
        ansible_playbook(ROLE_PLAYBOOK, extravars={**DIRS, 'scheduler_metrics_dir': METRICS, 'scheduler_replication_tasks': [repl]},
                         inventory_text=container_inventory, env=PIPELINING)
        # Run Now: the playbook starts the unit and follows it; this thread reads while it does.
        run_now: dict = {}
        declaration = {**DIRS, 'scheduler_metrics_dir': METRICS, 'zfs_replication_replication_tasks': [repl], 'task': 'progrepl',
                       'follow_delay': 2}
        follower = threading.Thread(target=lambda: run_now.update(result=ansible_playbook(
            f"- name: run now\n  ansible.builtin.import_playbook: {REPO / 'playbooks' / 'run_now.yml'}\n",
            extravars=declaration, inventory_text=container_inventory, env=PIPELINING)))
        follower.start()

        # Two reads while the stream runs: the state file's count and the metrics' gauge have both moved.
        reads: list[tuple[dict, str, str]] = []
        deadline = time.monotonic() + 120
        while len(reads) < 2 and time.monotonic() < deadline:
            transfers = (read_json(container, state_file).get('running') or {}).get('transfers') or []
            if transfers and (not reads or transfers[0]['bytes'] > reads[-1][0]['bytes']):
                prom = container.exec('cat', f'{METRICS}/zfs_replication_repl_progrepl.prom').stdout
                status = container.exec(DIRS['scheduler_status_command']).stdout
                reads.append((transfers[0], prom, status))
            time.sleep(0.5)
        journal = container.exec('journalctl', '--no-pager', '-o', 'cat', '-u', UNIT).stdout
        assert len(reads) == 2, f'no moving progress in {state_file}\n{journal}'
        (first, prom1, status1), (second, prom2, _status2) = reads
        assert first['dataset'] == f'{dst}/data' and first['snapshot'] == SNAPSHOT
        assert 0 < first['bytes'] < second['bytes'] < SIZE * 2
        assert transferred(prom1) is not None and transferred(prom2) is not None and transferred(prom1) < transferred(prom2), (prom1, prom2)
        assert re.search(r'^zfs_replication_running\{[^}]*\} 1$', prom2, re.M), prom2
        assert re.search(r'^progrepl +replication .* running since ', status1, re.M), status1
        assert f'    {dst}/data@{SNAPSHOT}: ' in status1, status1

        # zfs_replication_info reads the same record while the run goes on.
        info = ansible_playbook(json.dumps([{'hosts': 'zrsystemd', 'gather_facts': False, 'tasks': [
            {'name': 'status', 'zfs.replication.zfs_replication_info': {'tasks': [repl], 'state_dir': DIRS['scheduler_state_dir']},
             'register': 'info'}]}]), inventory_text=container_inventory, env=PIPELINING).task('status', 'zrsystemd')
        last = info['tasks'][0]['last_run']
        if last['running']:  # the stream may have ended while Ansible started
            assert last['transfers'][0]['dataset'] == f'{dst}/data' and last['transfers'][0]['bytes'] > 0, last

        # run_now returns when the run has ended: it followed the unit (more than one look) and printed the log.
        follower.join(timeout=300)
        assert not follower.is_alive() and 'result' in run_now, 'run_now.yml did not return'
        followed = run_now['result'].task('Follow the run', 'zrsystemd')
        assert followed.get('attempts', 1) >= 2 and followed['stdout_lines'][0] == 'inactive', followed
        printed = run_now['result'].task("Print the last run's log", 'zrsystemd')['msg']
        assert any(f'progress {dst}/data@{SNAPSHOT}: ' in line for line in printed), printed

        # The run has ended: the journal has its progress lines, the running section and the gauge are gone.
        state = read_json(container, state_file)
        journal = container.exec('journalctl', '--no-pager', '-o', 'cat', '-u', UNIT).stdout
        assert state.get('result') == 'ok' and 'running' not in state, (state, journal)
        lines = [ln for ln in journal.splitlines() if f'progress {dst}/data@{SNAPSHOT}: ' in ln]
        assert len(lines) >= 3, journal
        assert snapshots_with_guids(f'{dst}/data') == snapshots_with_guids(src)
        prom = container.exec('cat', f'{METRICS}/zfs_replication_repl_progrepl.prom').stdout
        assert transferred(prom) is None and re.search(r'^zfs_replication_running\{[^}]*\} 0$', prom, re.M), prom
    finally:
        remove_role_install(ansible_playbook, container, container_inventory, DIRS)
        container.exec('rm', '-rf', METRICS, check=False)
        for ds in (src, dst):
            destroy_retrying(ds, tags=['zfs.replication:progrepl'])
