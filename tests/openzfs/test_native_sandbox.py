# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The demo's sandbox on a host that already runs OpenZFS (scripts/demo there): the guest is such a host.

tests/sandbox.py runs inside the guest as scripts/demo runs it: it must use the host's OpenZFS (no zfs-fuse), make
its two pools on image files in its own directory with their mountpoints there, work (a stream between them over
its sshd, host key checked), and leave the host's own pools (zra and zrb stand for the user's) exactly as they were:
same datasets and guids, and not one new line in their `zpool history`.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_sandbox_uses_the_hosts_openzfs_and_leaves_its_pools_alone(guest):
    work = f'/root/zr-native-{guest.tag()}'
    guest.sh(f'mkdir -p {work}')
    for name in ('sandbox.py', 'collection_deps.py'):
        guest.run('sh', '-c', f'cat > {work}/{name}', input=(TESTS / name).read_text())
    before = guest.pools_state()

    sb = f'{work}/sb'
    desc = json.loads(guest.run('python3', f'{work}/sandbox.py', 'up', '--dir', sb, timeout=600))
    src, dst = desc['src_pool'], desc['dst_pool']
    try:
        assert desc['zfs'] == 'openzfs' and desc['zfs_fuse_pid'] is None, desc
        assert re.fullmatch(r'zrs[0-9a-f]{4}src', src) and dst == src[:-3] + 'dst', desc
        assert guest.sh('pgrep -x zfs-fuse || true').strip() == '', 'zfs-fuse runs on an OpenZFS host'
        for pool in (src, dst):
            assert guest.zfs('get', '-H', '-o', 'value', 'mountpoint', pool).strip() == f'{sb}/mnt/{pool}'
            assert f'{sb}/{pool}.img' in guest.zpool('list', '-H', '-v', '-P', pool)

        # The sandbox works: a stream from one of its pools to the other through its sshd, host key checked.
        ssh = shlex.join(['ssh', '-F', '/dev/null', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=yes',
                          '-o', f'UserKnownHostsFile={desc["ssh"]["known_hosts"]}', '-o', 'IdentitiesOnly=yes',
                          '-i', desc['ssh']['private_key'], '-p', str(desc['ssh']['port']), 'root@127.0.0.1'])
        guest.sh(f'zfs create {src}/d && echo hello > {sb}/mnt/{src}/d/f && zfs snapshot {src}/d@s1 && '
                 f'zfs send {src}/d@s1 | {ssh} zfs recv -u {dst}/d')
        assert guest.snapshots_with_guids(f'{dst}/d') == guest.snapshots_with_guids(f'{src}/d') != {}
    finally:
        guest.run('python3', f'{work}/sandbox.py', 'down', '--dir', sb, timeout=600)

    pools = guest.zpool('list', '-H', '-o', 'name').split()
    assert src not in pools and dst not in pools, pools
    assert guest.sh(f'ls {sb} 2>/dev/null || true').strip() == ''  # images, keys, state: all gone
    assert guest.pools_state() == before  # the host's pools: nothing read into them changed, nothing written
    guest.sh(f'rm -rf {work}')
