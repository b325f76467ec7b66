# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""encryption_key_generate on OpenZFS (zfs-fuse has no native encryption): the first run creates the target encrypted
with a key it generates and keeps root-only on the host that runs the task; the key unlocks the replica, is never
made again, never shows in results, logs, state or metrics, and a lost key stops the run before anything changes.

The module runs ON the guest (Ansible over ssh), pool zra -> zrb (transport local: the guest is the sending host and
keeps the key). Each task gets its own state, log and metrics directories in the guest, so the files a run leaves
can be searched whole. The key store's own logic (modes under any umask, races, damaged files) is
tests/unit/plugins/module_utils/test_keys.py.
"""

from __future__ import annotations

import json
import re

SCHEMA = 'auto-%Y-%m-%d_%H-%M'


def playbook(tasks: list[dict]) -> str:
    return json.dumps([{'hosts': 'zrvm', 'gather_facts': False, 'tasks': tasks}])


def props(guest, dataset: str, names: str) -> dict[str, str]:
    out = guest.zfs('get', '-H', '-o', 'property,value', names, dataset)
    return dict(line.split('\t') for line in out.splitlines())


def stat(guest, *paths: str) -> list[str]:
    """'mode owner inode mtime sha256' of each path (sha256 '-' for directories)."""
    script = ' '.join(f'"{p}"' for p in paths)
    return guest.sh(f'for p in {script}; do s=$(stat -c "%a %U %i %Y" "$p"); '
                    f'if [ -f "$p" ]; then h=$(sha256sum "$p" | cut -d" " -f1); else h=-; fi; echo "$s $h"; done').splitlines()


def test_generated_key_encrypts_the_target_is_kept_root_only_reused_and_never_replaced(
        guest, guest_cleanup, guest_inventory, ansible_playbook):
    tag = guest.tag()
    src, parent = f'zra/genkey{tag}', f'zrb/genkey{tag}'
    guest.sh(f'zfs create {src} && zfs create {parent}')
    guest_cleanup += [src, parent]
    dst = f'{parent}/data'
    base = f'/root/zr-genkey-{tag}'
    state, logs, metrics = f'{base}/state', f'{base}/log', f'{base}/metrics'
    name = f'genkey{tag}'
    keyfile = f'{state}/keys/repl-{name}.key'
    params = {'name': name, 'source_datasets': [src], 'target_dataset': dst, 'naming_schema': [SCHEMA], 'transport': 'local',
              'encryption': True, 'encryption_key_format': 'hex', 'encryption_key_generate': True,
              'state_dir': state, 'log_dir': logs, 'metrics_dir': metrics}
    info_args = {'tasks': [{k: v for k, v in params.items() if k not in ('state_dir', 'log_dir', 'metrics_dir')}], 'state_dir': state}
    guest.write_files(src, 'plain')
    guest.zfs('snapshot', f'{src}@auto-2026-11-28_10-00')

    # Check mode first: the plan, and no key written. Then the first real run, and the status.
    first = ansible_playbook(playbook([
        {'name': 'plan', 'zfs.replication.zfs_replication': params, 'check_mode': True, 'register': 'plan'},
        {'name': 'no key yet', 'ansible.builtin.stat': {'path': keyfile}, 'register': 'nokey'},
        {'name': 'replicate', 'zfs.replication.zfs_replication': params, 'register': 'out'},
        {'name': 'status', 'zfs.replication.zfs_replication_info': info_args, 'register': 'info'},
    ]), inventory_text=guest_inventory)
    plan, res, info = (first.task(n, 'zrvm') for n in ('plan', 'replicate', 'status'))
    assert plan['changed'] is True and plan['plan'][0]['action'] == 'full'
    assert any('would be generated' in line and keyfile in line for line in plan['log']), plan['log']
    assert first.task('no key yet', 'zrvm')['stat']['exists'] is False

    # The target: a new encryption root with a hex key, loaded; the replica is the source's data.
    assert props(guest, dst, 'encryption,keyformat,keylocation,encryptionroot,keystatus') == {
        'encryption': 'aes-256-gcm', 'keyformat': 'hex', 'keylocation': 'prompt', 'encryptionroot': dst, 'keystatus': 'available'}
    assert guest.snapshots_with_guids(dst) == guest.snapshots_with_guids(src)
    assert guest.checksums(dst) == guest.checksums(src)

    # The key: 64 hex digits, root's alone (file 0600, directory 0700), where the result and the status say.
    key = guest.run('cat', keyfile).strip()
    assert re.fullmatch(r'[0-9a-f]{64}', key)
    (dir_stat, key_stat) = stat(guest, f'{state}/keys', keyfile)
    assert dir_stat.split()[:2] == ['700', 'root'] and key_stat.split()[:2] == ['600', 'root']
    assert res['encryption_key_file'] == keyfile
    assert info['tasks'][0]['encryption_key_file'] == {'path': keyfile, 'exists': True}
    assert info['tasks'][0]['health'] == 'ok', info['tasks'][0]['reasons']

    # Nowhere else: not in any output, result, the task's state, log or metrics, nor a file left in /tmp.
    assert key not in first.stdout and key not in first.stderr
    assert key not in json.dumps([plan, res, info])
    assert guest.sh(f'grep -rlF -D skip {key} {state} {logs} {metrics} /tmp || true').split() == [keyfile]
    assert guest.sh(f'ls {state} {logs} {metrics}').count(name) >= 3  # they were written, and searched

    # Second run: incremental, the same key file (same inode, mtime and checksum), and the key loaded was that one.
    guest.write_files(src, 'more')
    guest.zfs('snapshot', f'{src}@auto-2026-11-28_11-00')
    second = ansible_playbook(playbook([{'name': 'replicate', 'zfs.replication.zfs_replication': params, 'register': 'out'}]),
                              inventory_text=guest_inventory)
    res2 = second.task('replicate', 'zrvm')
    assert res2['plan'][0]['action'] == 'incremental' and res2['snapshots_sent'] == 1
    assert not any('generated' in line for line in res2['log']), res2['log']
    assert stat(guest, f'{state}/keys', keyfile) == [dir_stat, key_stat]
    assert guest.sh(f'ls -A {state}/keys') == f'repl-{name}.key\n'
    assert guest.snapshots_with_guids(dst) == guest.snapshots_with_guids(src)
    assert key not in second.stdout and key not in second.stderr

    # Locked (a reboot), then unlocked by hand with the stored key: the files are the source's.
    guest.sh(f'zfs unmount {dst}; zfs unload-key {dst}')
    assert props(guest, dst, 'keystatus') == {'keystatus': 'unavailable'}
    guest.run('zfs', 'load-key', '-L', f'file://{keyfile}', dst)
    assert guest.checksums(dst) == guest.checksums(src)

    # The key file lost: the run fails saying where the key was expected, makes no new key, and leaves the target
    # as it was (still locked, the same snapshots); the status is critical and says the same.
    guest.sh(f'zfs unmount {dst}; zfs unload-key {dst}; rm {keyfile}')
    guest.write_files(src, 'after-loss')
    guest.zfs('snapshot', f'{src}@auto-2026-11-28_12-00')
    target_before = guest.zfs('get', '-H', '-p', '-r', '-o', 'name,property,value', 'guid,keystatus,encryptionroot', parent)
    lost = ansible_playbook(playbook([
        {'name': 'replicate', 'zfs.replication.zfs_replication': params, 'register': 'out', 'ignore_errors': True},
        {'name': 'status', 'zfs.replication.zfs_replication_info': info_args, 'register': 'info'},
    ]), inventory_text=guest_inventory)
    failed, info = lost.task('replicate', 'zrvm'), lost.task('status', 'zrvm')
    assert failed.get('failed') is True and failed['changed'] is False
    assert keyfile in failed['msg'] and dst in failed['msg'] and 'Nothing was changed' in failed['msg'], failed['msg']
    assert guest.zfs('get', '-H', '-p', '-r', '-o', 'name,property,value', 'guid,keystatus,encryptionroot', parent) == target_before
    assert '@auto-2026-11-28_12-00' not in guest.snapshots_with_guids(dst)
    assert guest.sh(f'ls -A {state}/keys') == ''  # no new key
    task_status = info['tasks'][0]
    assert task_status['encryption_key_file'] == {'path': keyfile, 'exists': False}
    assert task_status['health'] == 'critical' and keyfile in task_status['reasons'][0], task_status['reasons']

    # Restored from the export, the next run goes on incrementally with it.
    guest.sh(f'umask 077; printf "%s\\n" {key} > {keyfile}')
    back = ansible_playbook(playbook([{'name': 'replicate', 'zfs.replication.zfs_replication': params, 'register': 'out'}]),
                            inventory_text=guest_inventory).task('replicate', 'zrvm')
    assert back['plan'][0]['action'] == 'incremental' and f'load-key {dst} on local' in back['log']
    assert guest.snapshots_with_guids(dst) == guest.snapshots_with_guids(src)
    assert guest.checksums(dst) == guest.checksums(src)
    guest.sh(f'zfs unmount {dst}; rm -rf {base}')
