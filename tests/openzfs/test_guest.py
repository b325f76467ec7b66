# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The guest really is the OpenZFS release it was built for (ZR_OPENZFS, default 2.3), and the engine's probe and listing parser read it right over SSH."""

from __future__ import annotations

import re

import pytest
import vm

from ansible_collections.zfs.replication.plugins.module_utils import _zfs
from ansible_collections.zfs.replication.plugins.module_utils._transport import SSHConnection, SSHHost


@pytest.fixture(scope='module')
def ssh_host(openzfs_vm):
    """The engine's own SSH host object pointed at the guest: host key checked, our key only."""
    host = SSHHost(SSHConnection(host=openzfs_vm.host, port=openzfs_vm.port, user=openzfs_vm.user,
                                 private_key_file=openzfs_vm.private_key, known_hosts_file=openzfs_vm.known_hosts))
    yield host
    host.close()


def test_guest_runs_the_openzfs_release_it_was_built_for(guest):
    lines = guest.zfs('version').splitlines()
    assert re.fullmatch(rf'zfs-{re.escape(vm.OPENZFS_RELEASE)}\.\d+-\S+', lines[0]), lines
    assert re.fullmatch(rf'zfs-kmod-{re.escape(vm.OPENZFS_RELEASE)}\.\d+-\S+', lines[1]), lines  # the DKMS module is loaded, same release
    assert guest.run('uname', '-r').strip() == guest.vm.state['kernel']
    health = guest.zpool('list', '-H', '-o', 'name,health').split('\n')
    assert {'zra\tONLINE', 'zrb\tONLINE'} <= set(health)


def test_probe_reports_modern_capabilities(ssh_host, guest):
    caps = _zfs.probe(ssh_host)
    assert caps.version is not None and caps.version.startswith(vm.OPENZFS_RELEASE + '.'), caps
    assert caps.version in guest.zfs('version').splitlines()[0]
    assert caps.list_parsable and caps.resumable and caps.raw_send
    assert caps.bookmarks and caps.encryption and caps.send_dry_run and caps.recv_props
    assert caps.family == f'OpenZFS {caps.version}'


def test_listing_parser_reads_real_list_p_output(ssh_host, guest, guest_cleanup):
    """One `zfs list -H -p` call over a tree of filesystems, a zvol and snapshots: exact guids and createtxg."""
    root = f'zra/ls{guest.tag()}'
    guest_cleanup.append(root)
    guest.sh(f'zfs create {root} && zfs create {root}/a && zfs create {root}/a/b && '
             f'zfs create -s -V 8M -o volblocksize=16k {root}/vol && '
             f'zfs snapshot -r {root}@s1 && echo x > /{root}/a/f && zfs snapshot -r {root}@s2 && '
             f'zfs snapshot {root}/a@only-a')
    caps = _zfs.probe(ssh_host)
    argv = _zfs.listing_argv(caps, [root])
    assert argv[:4] == ['zfs', 'list', '-H', '-p']  # the modern path, not the zfs-fuse `zfs get` fallback

    listing = _zfs.list_tree(ssh_host, caps, root)

    truth = {}
    for line in guest.zfs('get', '-H', '-p', '-r', '-o', 'name,property,value', 'guid,createtxg,type', root).splitlines():
        name, prop, value = line.split('\t')
        truth.setdefault(name, {})[prop] = value
    datasets = {n: p for n, p in truth.items() if '@' not in n}
    assert list(listing.datasets) == [root, f'{root}/a', f'{root}/vol', f'{root}/a/b']  # parents first
    for name, props in datasets.items():
        ds = listing.get(name)
        assert (ds.type, ds.guid, ds.createtxg) == (props['type'], props['guid'], int(props['createtxg']))
        assert ds.props['receive_resume_token'] == '-'
        assert len(ds.guid) > 10 and ds.guid.isdigit()  # exact, not abbreviated like zfs-fuse's `zfs list`
    assert listing.get(f'{root}/vol').type == 'volume'
    got = {s.full: (s.guid, s.createtxg) for ds in listing.datasets.values() for s in ds.snapshots}
    want = {n: (p['guid'], int(p['createtxg'])) for n, p in truth.items() if '@' in n}
    assert got == want
    assert len(want) == 4 * 2 + 1
    assert [s.name for s in listing.get(f'{root}/a').snapshots] == ['s1', 's2', 'only-a']  # createtxg order
