# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What only OpenZFS 2.x can show: resumable receives, holds against pruning, raw and new encryption,
stream flags, size estimates, zvols. The module runs ON the guest (Ansible over ssh), pool zra -> zrb.

Every assertion reads the real state in the guest (guids, receive_resume_token, holds, keystatus, checksums).
"""

from __future__ import annotations

import json
import re

SCHEMA = 'auto-%Y-%m-%d_%H-%M'
HEX_KEY = '6f' * 32


def playbook(tasks: list[dict]) -> str:
    return json.dumps([{'hosts': 'zrvm', 'gather_facts': False, 'tasks': tasks}])


def replicate(ansible_playbook, inventory: str, params: dict, expect_rc: int = 0) -> dict:
    task = {'name': 'replicate', 'zfs.replication.zfs_replication': params, 'register': 'out'}
    return ansible_playbook(playbook([task]), inventory_text=inventory, expect_rc=expect_rc).task('replicate', 'zrvm')


def pair(guest, guest_cleanup, name: str) -> tuple[str, str]:
    tag = guest.tag()
    src, parent = f'zra/{name}{tag}', f'zrb/{name}{tag}'
    guest.sh(f'zfs create {src} && zfs create {parent}')
    guest_cleanup += [src, parent]
    return src, f'{parent}/data'


def token(guest, dataset: str) -> str:
    return guest.zfs('get', '-H', '-o', 'value', 'receive_resume_token', dataset).strip()


def holds(guest, snapshot: str) -> list[str]:
    return [line.split('\t')[1] for line in guest.zfs('holds', '-H', snapshot).splitlines() if line]


def test_interrupted_full_transfer_resumes_to_identical_data(guest, guest_cleanup, guest_inventory, ansible_playbook):
    src, dst = pair(guest, guest_cleanup, 'resume')
    guest.write_files(src, 'big', count=3, size=1_000_000)
    guest.zfs('snapshot', f'{src}@auto-2026-11-28_10-00')
    # A transfer cut after 1 MB of ~3 MB: the receive keeps what arrived and leaves a resume token.
    guest.sh(f'zfs send {src}@auto-2026-11-28_10-00 | head -c 1000000 | zfs recv -s -u {dst} || true')
    assert token(guest, dst) not in ('-', '')

    res = replicate(ansible_playbook, guest_inventory, {
        'source_datasets': [src], 'target_dataset': dst, 'naming_schema': [SCHEMA], 'transport': 'local'})
    assert res['changed'] is True
    assert any(line.startswith(f'resume {dst}') for line in res['log']), res['log']
    assert any('zfs send -t' in line for line in res['log']), res['log']
    assert res['datasets'][dst]['resumed'] is True
    assert token(guest, dst) == '-'
    assert guest.snapshots_with_guids(dst) == guest.snapshots_with_guids(src)
    assert guest.checksums(dst) == guest.checksums(src)
    guest.zfs('unmount', dst)


def test_stale_resume_token_is_aborted_and_the_run_replans(guest, guest_cleanup, guest_inventory, ansible_playbook):
    src, dst = pair(guest, guest_cleanup, 'stale')
    params = {'source_datasets': [src], 'target_dataset': dst, 'naming_schema': [SCHEMA], 'transport': 'local'}
    guest.write_files(src, 'a')
    guest.zfs('snapshot', f'{src}@auto-2026-11-28_10-00')
    replicate(ansible_playbook, guest_inventory, params)
    guest.write_files(src, 'b', count=2, size=1_000_000)
    guest.zfs('snapshot', f'{src}@auto-2026-11-28_11-00')
    guest.sh(f'zfs send -i @auto-2026-11-28_10-00 {src}@auto-2026-11-28_11-00 | head -c 500000 | zfs recv -s -u {dst} || true')
    assert token(guest, dst) not in ('-', '')
    # The snapshot the token points to disappears on the source: the token can never be resumed.
    guest.zfs('destroy', f'{src}@auto-2026-11-28_11-00')
    guest.write_files(src, 'c')
    guest.zfs('snapshot', f'{src}@auto-2026-11-28_12-00')

    res = replicate(ansible_playbook, guest_inventory, params)
    assert any('is stale' in line for line in res['log']), res['log']
    assert token(guest, dst) == '-'
    plan = res['plan'][0]
    assert (plan['action'], plan['base']) == ('incremental', 'auto-2026-11-28_10-00')
    assert guest.snapshots_with_guids(dst) == guest.snapshots_with_guids(src)
    assert guest.checksums(dst) == guest.checksums(src)
    guest.zfs('unmount', dst)


def test_base_hold_moves_and_pruning_cannot_break_the_chain(guest, guest_cleanup, guest_inventory, ansible_playbook):
    src, dst = pair(guest, guest_cleanup, 'hold')
    tag = 'zfs.replication:chain'
    params = {'name': 'chain', 'source_datasets': [src], 'target_dataset': dst, 'naming_schema': [SCHEMA], 'transport': 'local',
              'retention_policy': 'custom', 'lifetime_value': 1, 'lifetime_unit': 'hour'}
    guest.write_files(src, 'a')
    guest.zfs('snapshot', f'{src}@auto-2026-11-28_01-00')
    first = replicate(ansible_playbook, guest_inventory, params)
    assert holds(guest, f'{src}@auto-2026-11-28_01-00') == [tag]
    assert holds(guest, f'{dst}@auto-2026-11-28_01-00') == [tag]
    # Stream flags on OpenZFS at both ends. The stream ends within its first progress interval (30 s): no zfs send -nP
    # was run for its size (the next run's stream lasts longer, and is estimated).
    pipe = next(line for line in first['log'] if line.startswith('  $ zfs send'))
    assert ' -L ' in pipe and ' -e ' in pipe and ' -c ' in pipe and 'zfs recv -u -s' in pipe, pipe
    assert first['datasets'][dst]['estimated_bytes'] is None
    assert not any('estimated size' in line for line in first['log']), first['log']

    guest.write_files(src, 'b')
    guest.zfs('snapshot', f'{src}@auto-2026-11-28_02-00')
    # Held back to ~60 kB/s with a progress line every second: the first line asks zfs send -nP for the stream's size.
    second = replicate(ansible_playbook, guest_inventory, dict(params, speed_limit=60_000, progress_interval=1))
    ds = second['datasets'][dst]
    assert ds['bytes'] > 120_000 and 0.5 * ds['bytes'] <= ds['estimated_bytes'] <= 2 * ds['bytes'], ds
    assert any(line.endswith('bytes (zfs send -nP)') for line in second['log']), second['log']
    assert any(re.search(r'progress .*@auto-2026-11-28_02-00: .* of .* \(\d+%\)', line) for line in second['log']), second['log']
    assert holds(guest, f'{src}@auto-2026-11-28_02-00') == [tag] and holds(guest, f'{dst}@auto-2026-11-28_02-00') == [tag]
    assert holds(guest, f'{src}@auto-2026-11-28_01-00') == []
    # Target retention (lifetime 1 hour, every name is hours old) destroys the released old base, never the new one.
    assert second['datasets'][dst]['destroyed'] == ['auto-2026-11-28_01-00']
    assert list(guest.snapshots_with_guids(dst)) == ['@auto-2026-11-28_02-00']

    # A snapshot task prunes the source with the same 1-hour lifetime: the held base survives it.
    prune = {'name': 'prune', 'zfs.replication.zfs_snapshot_task': {
        'dataset': src, 'naming_schema': SCHEMA, 'schedule': 'hourly', 'lifetime_value': 1, 'lifetime_unit': 'hour',
        'timezone': 'UTC'}, 'register': 'out'}
    ansible_playbook(playbook([prune]), inventory_text=guest_inventory).task('prune', 'zrvm')
    left = guest.snapshots_with_guids(src)
    assert '@auto-2026-11-28_01-00' not in left  # expired and no longer held: pruned
    assert '@auto-2026-11-28_02-00' in left  # expired too, but the replication's base is held
    # And the chain still works: the next run is incremental from the held base.
    third = replicate(ansible_playbook, guest_inventory, params)
    assert third['plan'][0]['base'] == 'auto-2026-11-28_02-00'
    assert third['plan'][0]['action'] == 'incremental'
    on_src, on_dst = guest.snapshots_with_guids(src), guest.snapshots_with_guids(dst)
    newest = third['plan'][0]['pending'][-1]
    # Retention (1 hour) keeps only the new newest common snapshot on the target, with the source's guid.
    assert on_dst == {f'@{newest}': on_src[f'@{newest}']}


def test_raw_replica_of_encrypted_source_stays_locked(guest, guest_cleanup, guest_inventory, ansible_playbook):
    tag = guest.tag()
    keyfile = f'/root/zr-raw-{tag}.key'
    guest.sh(f'umask 077; printf %s {HEX_KEY} > {keyfile}')
    src, parent = f'zra/raw{tag}', f'zrb/raw{tag}'
    guest.sh(f'zfs create -o encryption=on -o keyformat=hex -o keylocation=file://{keyfile} {src} && zfs create {parent}')
    guest_cleanup += [src, parent]
    dst = f'{parent}/data'
    guest.write_files(src, 'secret')
    guest.zfs('snapshot', f'{src}@auto-2026-11-28_10-00')
    res = replicate(ansible_playbook, guest_inventory, {
        'source_datasets': [src], 'target_dataset': dst, 'naming_schema': [SCHEMA], 'transport': 'local'})
    pipe = next(line for line in res['log'] if line.startswith('  $ zfs send'))
    assert ' -w ' in pipe, pipe
    assert guest.zfs('get', '-H', '-o', 'value', 'keystatus', dst).strip() == 'unavailable'
    assert guest.zfs('get', '-H', '-o', 'value', 'encryption', dst).strip() == 'aes-256-gcm'
    assert guest.snapshots_with_guids(dst) == guest.snapshots_with_guids(src)
    guest.run('zfs', 'load-key', '-L', f'file://{keyfile}', dst)
    assert guest.checksums(dst) == guest.checksums(src)
    guest.sh(f'zfs unmount {dst}; zfs unload-key {dst}; rm -f {keyfile}')


def test_encrypted_destination_with_a_hex_key_kept_by_the_task(guest, guest_cleanup, guest_inventory, ansible_playbook):
    src, dst = pair(guest, guest_cleanup, 'enchex')
    params = {'source_datasets': [src], 'target_dataset': dst, 'naming_schema': [SCHEMA], 'transport': 'local',
              'encryption': True, 'encryption_key_format': 'hex', 'encryption_key': HEX_KEY}
    guest.write_files(src, 'plain')
    guest.zfs('snapshot', f'{src}@auto-2026-11-28_10-00')
    task = {'name': 'replicate', 'zfs.replication.zfs_replication': params, 'register': 'out'}
    run = ansible_playbook(playbook([task]), inventory_text=guest_inventory)
    assert HEX_KEY not in run.stdout and HEX_KEY not in run.stderr
    props = guest.zfs('get', '-H', '-o', 'property,value', 'encryption,keyformat,keylocation,encryptionroot', dst)
    assert dict(line.split('\t') for line in props.splitlines()) == {
        'encryption': 'aes-256-gcm', 'keyformat': 'hex', 'keylocation': 'prompt', 'encryptionroot': dst}
    assert guest.snapshots_with_guids(dst) == guest.snapshots_with_guids(src)
    assert guest.checksums(dst) == guest.checksums(src)
    # The target is locked again (a reboot); the next run loads the key itself, from the task.
    guest.sh(f'zfs unmount {dst}; zfs unload-key {dst}')
    guest.write_files(src, 'more')
    guest.zfs('snapshot', f'{src}@auto-2026-11-28_11-00')
    res = replicate(ansible_playbook, guest_inventory, params)
    assert f'load-key {dst} on local' in res['log']
    assert guest.snapshots_with_guids(dst) == guest.snapshots_with_guids(src)
    assert guest.checksums(dst) == guest.checksums(src)
    # No key file was left behind on the target.
    assert guest.sh('ls /tmp | grep -c "^tmp\\." || true').strip() == '0'
    guest.zfs('unmount', dst)


def test_encrypted_destination_with_a_passphrase_at_a_key_location(guest, guest_cleanup, guest_inventory, ansible_playbook):
    src, dst = pair(guest, guest_cleanup, 'encpass')
    location = f'/root/zr-keys/{guest.tag()}.key'
    passphrase = 'correct horse battery staple'
    guest.write_files(src, 'plain', count=1)
    guest.zfs('snapshot', f'{src}@auto-2026-11-28_10-00')
    replicate(ansible_playbook, guest_inventory, {
        'source_datasets': [src], 'target_dataset': dst, 'naming_schema': [SCHEMA], 'transport': 'local',
        'encryption': True, 'encryption_key_format': 'passphrase', 'encryption_key': passphrase,
        'encryption_key_location': location})
    props = guest.zfs('get', '-H', '-o', 'property,value', 'keyformat,keylocation', dst)
    assert dict(line.split('\t') for line in props.splitlines()) == {'keyformat': 'passphrase', 'keylocation': f'file://{location}'}
    assert guest.sh(f'stat -c %a {location}; cat {location}').split('\n', 1) == ['600', passphrase]
    assert guest.checksums(dst) == guest.checksums(src)
    guest.sh(f'zfs unmount {dst}; rm -f {location}')


def test_zvols_replicate_and_cannot_hold_a_target(guest, guest_cleanup, guest_inventory, ansible_playbook):
    tag = guest.tag()
    vol, parent = f'zra/vol{tag}', f'zrb/vol{tag}'
    guest.sh(f'zfs create -V 4M {vol} && zfs create {parent} && zfs create -V 4M {parent}/avol && udevadm settle')
    guest_cleanup += [vol, parent]
    guest.sh(f'head -c 1000000 /dev/urandom | dd of=/dev/zvol/{vol} bs=64k conv=fsync status=none')
    guest.zfs('snapshot', f'{vol}@auto-2026-11-28_10-00')
    res = replicate(ansible_playbook, guest_inventory, {
        'source_datasets': [vol], 'target_dataset': f'{parent}/vcopy', 'naming_schema': [SCHEMA], 'transport': 'local'})
    assert res['snapshots_sent'] == 1
    assert guest.zfs('get', '-H', '-o', 'value', 'type', f'{parent}/vcopy').strip() == 'volume'
    assert guest.snapshots_with_guids(f'{parent}/vcopy') == guest.snapshots_with_guids(vol)
    sums = guest.sh(f'udevadm settle; sha256sum /dev/zvol/{vol} /dev/zvol/{parent}/vcopy | cut -d" " -f1').split()
    assert sums[0] == sums[1]

    before = guest.zfs('get', '-H', '-p', '-r', '-o', 'name,value', 'guid', parent)
    fs_src = f'zra/fs{tag}'
    guest.zfs('create', fs_src)
    guest_cleanup.append(fs_src)
    guest.zfs('snapshot', f'{fs_src}@auto-2026-11-28_10-00')
    bad = {'source_datasets': [fs_src], 'naming_schema': [SCHEMA], 'transport': 'local'}
    as_target = replicate(ansible_playbook, guest_inventory, dict(bad, target_dataset=f'{parent}/avol'), expect_rc=2)
    assert 'is a volume' in as_target['msg'], as_target['msg']
    as_parent = replicate(ansible_playbook, guest_inventory, dict(bad, target_dataset=f'{parent}/avol/data'), expect_rc=2)
    assert 'is a zvol' in as_parent['msg'], as_parent['msg']
    assert guest.zfs('get', '-H', '-p', '-r', '-o', 'name,value', 'guid', parent) == before
