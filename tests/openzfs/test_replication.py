# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""zfs_replication through real ansible-playbook runs with OpenZFS 2.x (ZR_OPENZFS) on the receiving (and sending) side.

(a) the host's zfs-fuse pool -> a pool in the guest over ssh (the module runs on the controller);
(b) OpenZFS -> OpenZFS inside the guest: the module runs ON the guest (Ansible over ssh), transport local.
Every check reads the real state in the guest: snapshot guids with `zfs get -H -p`, file checksums of the
mounted replica. Data stays small: the guest is emulated (TCG) and slow.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from pathlib import Path

import pytest
import vm

from helpers import snapshots_with_guids, tree_checksums, zfs

SCHEMA = 'auto-%Y-%m-%d_%H-%M'


def playbook(params: dict, hosts: str = 'localhost', name: str = 'replicate') -> str:
    task = {'name': name, 'zfs.replication.zfs_replication': params, 'register': 'out'}
    return json.dumps([{'hosts': hosts, 'gather_facts': False, 'tasks': [task]}])


def write_host_files(mountpoint: str, seed: str, count: int = 2, size: int = 64_000) -> None:
    root = Path(mountpoint)
    (root / 'dir').mkdir(exist_ok=True)
    for i in range(count):
        (root / 'dir' / f'{seed}-{i}.bin').write_bytes(secrets.token_bytes(size))
    (root / f'{seed}.txt').write_text(f'hello {seed}\n')


def host_mountpoint(dataset: str) -> str:
    return zfs('get', '-H', '-o', 'value', 'mountpoint', dataset).strip()


def host_own_checksums(dataset: str) -> dict[str, str]:
    return {k: v for k, v in tree_checksums(host_mountpoint(dataset)).items() if not k.startswith('child/')}


@pytest.fixture
def fuse_source(sandbox):
    """A dataset tree (with a child) on the host's zfs-fuse source pool."""
    src = f'{sandbox.src_pool}/toozfs{secrets.token_hex(3)}'
    zfs('create', src)
    zfs('create', f'{src}/child')
    yield src
    with contextlib.suppress(AssertionError):
        zfs('destroy', '-r', src)


def test_push_from_zfs_fuse_to_openzfs_over_ssh(fuse_source, guest, guest_cleanup, openzfs_vm, ansible_playbook):
    src = fuse_source
    parent = f'zrb/fromfuse{guest.tag()}'
    guest.zfs('create', parent)
    guest_cleanup.append(parent)
    dst = f'{parent}/data'
    write_host_files(host_mountpoint(src), 'one')
    write_host_files(host_mountpoint(f'{src}/child'), 'kid', count=1)
    zfs('snapshot', '-r', f'{src}@auto-2026-11-28_10-00')
    zfs('snapshot', '-r', f'{src}@manual-not-selected')
    params = {
        'source_datasets': [src], 'target_dataset': dst, 'recursive': True, 'naming_schema': [SCHEMA],
        'ssh': {'host': openzfs_vm.host, 'port': openzfs_vm.port, 'user': 'root',
                'private_key_file': openzfs_vm.private_key, 'known_hosts_file': openzfs_vm.known_hosts,
                'cipher': 'fast'},
    }

    # Full: both datasets, schema-selected snapshots only, same guids in the guest.
    first = ansible_playbook(playbook(params)).task('replicate')
    assert first['changed'] is True and first['snapshots_sent'] == 2, first
    assert first['capabilities']['source']['version'] is None  # zfs-fuse
    assert first['capabilities']['target']['version'].startswith(vm.OPENZFS_RELEASE + '.')
    want = {k: v for k, v in snapshots_with_guids(src).items() if 'manual' not in k}
    assert len(want) == 2
    assert guest.snapshots_with_guids(dst) == want
    assert guest.zfs('get', '-H', '-o', 'value', 'readonly', dst).strip() == 'on'
    assert guest.checksums(dst) == host_own_checksums(src)
    assert guest.checksums(f'{dst}/child') == host_own_checksums(f'{src}/child')
    guest.zfs('unmount', f'{dst}/child')
    guest.zfs('unmount', dst)

    # Incremental: one -I stream per dataset from the guid-checked base.
    write_host_files(host_mountpoint(src), 'two', count=1)
    zfs('snapshot', '-r', f'{src}@auto-2026-11-28_11-00')
    inc = ansible_playbook(playbook(params)).task('replicate')
    assert inc['changed'] is True and inc['snapshots_sent'] == 2, inc
    root_plan = next(d for d in inc['plan'] if d['source'] == src)
    assert root_plan['action'] == 'incremental' and root_plan['base'] == 'auto-2026-11-28_10-00'
    want = {k: v for k, v in snapshots_with_guids(src).items() if 'manual' not in k}
    assert len(want) == 4
    assert guest.snapshots_with_guids(dst) == want
    assert guest.checksums(dst) == host_own_checksums(src)
    guest.zfs('unmount', dst)

    # Nothing new: changed=false, nothing sent, nothing changed in the guest.
    before = guest.zfs('get', '-H', '-p', '-r', '-o', 'name,value', 'guid', parent)
    again = ansible_playbook(playbook(params)).task('replicate')
    assert again['changed'] is False and again['snapshots_sent'] == 0, again
    assert {d['action'] for d in again['plan']} == {'in_sync'}
    assert guest.zfs('get', '-H', '-p', '-r', '-o', 'name,value', 'guid', parent) == before


def test_openzfs_to_openzfs_local_on_the_guest(guest, guest_cleanup, guest_inventory, ansible_playbook):
    """The module runs ON the guest (the controller reaches it over ssh), pool zra -> pool zrb, transport local."""
    tag = guest.tag()
    src, parent = f'zra/local{tag}', f'zrb/local{tag}'
    dst = f'{parent}/data'
    guest.sh(f'zfs create {src} && zfs create {src}/child && zfs create {parent}')
    guest_cleanup += [src, parent]
    guest.write_files(src, 'one')
    guest.write_files(f'{src}/child', 'kid', count=1)
    guest.zfs('snapshot', '-r', f'{src}@auto-2026-11-28_10-00')
    guest.write_files(src, 'two', count=1)
    guest.zfs('snapshot', '-r', f'{src}@auto-2026-11-28_11-00')
    params = {'source_datasets': [src], 'target_dataset': dst, 'recursive': True, 'naming_schema': [SCHEMA],
              'transport': 'local'}

    first = ansible_playbook(playbook(params, hosts='zrvm'), inventory_text=guest_inventory).task('replicate', 'zrvm')
    assert first['changed'] is True and first['snapshots_sent'] == 4, first
    for side in ('source', 'target'):
        assert first['capabilities'][side]['version'].startswith(vm.OPENZFS_RELEASE + '.')
    want = guest.snapshots_with_guids(src)
    assert len(want) == 4
    assert guest.snapshots_with_guids(dst) == want
    assert guest.checksums(dst) == guest.checksums(src)
    assert guest.checksums(f'{dst}/child') == guest.checksums(f'{src}/child')
    guest.sh(f'zfs unmount {dst}/child && zfs unmount {dst}')

    before = guest.zfs('get', '-H', '-p', '-r', '-o', 'name,value', 'guid', parent)
    again = ansible_playbook(playbook(params, hosts='zrvm'), inventory_text=guest_inventory).task('replicate', 'zrvm')
    assert again['changed'] is False and again['snapshots_sent'] == 0, again
    assert {d['action'] for d in again['plan']} == {'in_sync'}
    assert guest.zfs('get', '-H', '-p', '-r', '-o', 'name,value', 'guid', parent) == before
