# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hostile or careless sources on OpenZFS 2.x: the source tree sets mountpoint=/etc (on a child) and
mountpoint=/zr-hostile-etc-<tag> (on the parent), canmount=on, setuid=on, devices=on on every dataset. Replicated
with replicate: true (one send -R stream) and with recursive: true (one stream per dataset), and once with
mount: true, all by the module running ON the guest (transport local).

Every replica ends with canmount=noauto, setuid=off, devices=off and a mountpoint it inherits from the target
(never received); nothing is mounted over /etc or the hostile directory; `zfs mount -a` mounts none of them;
mount: true mounts with nosuid,nodev. Everything is read from the guest: zfs get (value and source), findmnt,
/proc/mounts, the files of /etc.
"""

from __future__ import annotations

import json

SCHEMA = 'auto-%Y-%m-%d_%H-%M'
SAFE = {'canmount': 'noauto', 'setuid': 'off', 'devices': 'off'}


def playbook(tasks: list[dict]) -> str:
    return json.dumps([{'hosts': 'zrvm', 'gather_facts': False, 'tasks': tasks}])


def props(guest, root: str) -> dict[str, dict[str, tuple[str, str]]]:
    out = guest.zfs('get', '-H', '-r', '-t', 'filesystem', '-o', 'name,property,value,source',
                    'mountpoint,canmount,setuid,devices,mounted', root)
    got: dict[str, dict[str, tuple[str, str]]] = {}
    for line in out.splitlines():
        name, prop, value, source = line.split('\t')
        got.setdefault(name, {})[prop] = (value, source)
    return got


def mounts(guest) -> list[tuple[str, str, list[str]]]:
    """(source, target, options) of every mount in the guest."""
    return [(f[0], f[1], f[3].split(',')) for f in (line.split(' ') for line in guest.run('cat', '/proc/mounts').splitlines())]


def test_hostile_source_properties_never_apply_to_replicas(guest, guest_cleanup, guest_inventory, ansible_playbook):
    tag = guest.tag()
    src, parent = f'zra/hp{tag}', f'zrb/hp{tag}'
    hostile = f'/zr-hostile-etc-{tag}'
    tree = [src, f'{src}/c1', f'{src}/c2']
    guest_cleanup += [src, parent]
    etc_before = guest.sh('ls -A /etc | sort | sha256sum')
    # Data while mounted at the pool's own path, then the hostile properties (set unmounted, canmount=noauto
    # while changing the mountpoint so the SOURCE never mounts over /etc here), then canmount=on and the snapshot.
    guest.sh(f'''
        mkdir -p {hostile} && echo keep > {hostile}/passwd
        zfs create {src} && zfs create {src}/c1 && zfs create {src}/c2 && zfs create {parent}
        for ds in {' '.join(tree)}; do echo "$ds" > "$(zfs get -H -o value mountpoint "$ds")/file"; done
        for ds in {' '.join(reversed(tree))}; do zfs unmount "$ds"; zfs set canmount=noauto "$ds"; done
        zfs set mountpoint={hostile} {src}
        zfs set mountpoint=/etc {src}/c2
        for ds in {' '.join(tree)}; do zfs set setuid=on "$ds"; zfs set devices=on "$ds"; zfs set canmount=on "$ds"; done
        zfs snapshot -r {src}@auto-2026-11-28_10-00
        ! findmnt -rn -o SOURCE /etc | grep -q zra
    ''')
    base = {'source_datasets': [src], 'naming_schema': [SCHEMA], 'transport': 'local', 'recursive': True}
    tasks = [
        {'name': 'replicate', 'zfs.replication.zfs_replication': dict(base, target_dataset=f'{parent}/rep', replicate=True), 'register': 'a'},
        {'name': 'recursive', 'zfs.replication.zfs_replication': dict(base, target_dataset=f'{parent}/rec'), 'register': 'b'},
        {'name': 'mount', 'zfs.replication.zfs_replication': dict(base, target_dataset=f'{parent}/mnt', mount=True), 'register': 'c'},
    ]
    try:
        run = ansible_playbook(playbook(tasks), inventory_text=guest_inventory)
        logs = {t['name']: run.task(t['name'], 'zrvm') for t in tasks}
        for name, res in logs.items():
            assert res['changed'] is True and not res.get('failed') and not res['errors'], (name, res)
        got = props(guest, parent)
        replicas = [n for n in got if n != parent]
        assert sorted(replicas) == sorted(f'{parent}/{kind}{child}' for kind in ('rep', 'rec', 'mnt') for child in ('', '/c1', '/c2')), got
        for name in replicas:
            p = got[name]
            for prop, want in SAFE.items():
                assert p[prop][0] == want and p[prop][1] != 'received', (name, prop, p)
            value, source = p['mountpoint']
            assert source.startswith('inherited from') and value == f'/{name}', (name, p)  # the target's own path
            if not name.startswith(f'{parent}/mnt'):
                assert p['mounted'][0] == 'no', (name, p)
        # mount: true mounted the replicas at the target's paths with nosuid,nodev.
        on = {s: (t, o) for s, t, o in mounts(guest) if s.startswith(f'{parent}/mnt')}
        assert sorted(on) == [f'{parent}/mnt', f'{parent}/mnt/c1', f'{parent}/mnt/c2'], on
        for name, (target, options) in on.items():
            assert target == f'/{name}' and 'nosuid' in options and 'nodev' in options, (name, target, options)
        # Nothing over /etc or the hostile directory, /etc as it was.
        assert not [m for m in mounts(guest) if m[1] in ('/etc', hostile)], mounts(guest)
        assert guest.sh('ls -A /etc | sort | sha256sum') == etc_before
        # Boot's `zfs mount -a` (the source put back to canmount=noauto first: it must not cover the guest's /etc)
        # mounts none of the replicas.
        guest.sh(f'''
            for ds in {' '.join(tree)}; do zfs set canmount=noauto "$ds"; done
            zfs unmount {parent}/mnt/c2 && zfs unmount {parent}/mnt/c1 && zfs unmount {parent}/mnt
            zfs mount -a
        ''')
        after = props(guest, parent)
        assert [n for n in after if n != parent and after[n]['mounted'][0] == 'yes'] == [], after
        assert not [m for m in mounts(guest) if m[1] in ('/etc', hostile)], mounts(guest)
        # A steady run of the send -R task sets nothing.
        again = ansible_playbook(playbook(tasks[:1]), inventory_text=guest_inventory).task('replicate', 'zrvm')
        assert again['changed'] is False and not any('received filesystem(s)' in line for line in again['log']), again['log']
        # The next snapshots into the per-dataset replicas: a receive sets with -o only what the target does not hold
        # as its own value (a received value never overrides a local one). rec/c1's setuid now inherits off from
        # rec (not its own: a received setuid=on would win over it), rec/c2's devices is on: those are set again.
        guest.sh(f'''
            zfs inherit setuid {parent}/rec/c1
            zfs set devices=on {parent}/rec/c2
            zfs snapshot -r {src}@auto-2026-11-28_10-05
        ''')
        later = ansible_playbook(playbook(tasks[1:2]), inventory_text=guest_inventory).task('recursive', 'zrvm')
        assert later['changed'] is True and not later.get('failed') and not later['errors'], later
        rec = f'{parent}/rec'
        want = {
            rec: ('', 'held on the target: canmount=noauto, devices=off, setuid=off'),
            f'{rec}/c1': ('-o setuid=off ', 'recv -o setuid=off; held on the target: canmount=noauto, devices=off'),
            f'{rec}/c2': ('-o devices=off ', 'recv -o devices=off; held on the target: canmount=noauto, setuid=off'),
        }
        for target, (flags, note) in want.items():
            planned = [line for line in later['log'] if line.endswith(f'-> {target} ({note})')]
            assert len(planned) == 1 and 'incremental -I' in planned[0], (target, later['log'])
            piped = [line for line in later['log'] if line.startswith('  $ zfs send') and line.endswith(f' {target}')]
            assert len(piped) == 1 and piped[0].endswith(f'| zfs recv -u -s -x mountpoint {flags}{target}'), (target, piped)
            assert piped[0].startswith('  $ zfs send -p '), piped  # the stream carries the source's setuid=on, devices=on
        out = guest.zfs('get', '-H', '-r', '-t', 'filesystem', '-o', 'name,property,value,received,source', 'canmount,setuid,devices', rec)
        for line in out.splitlines():
            name, prop, value, received, source = line.split('\t')
            assert (value, source) == (SAFE[prop], 'local'), line  # the target's own value, set or held
            if prop != 'canmount' and f'{prop}={SAFE[prop]}' in want[name][1].rpartition('held on the target: ')[2]:
                assert received == 'on', line  # held: the stream carried the source's value, the local one wins
        assert len(out.splitlines()) == 9, out
    finally:
        guest.sh(f'for ds in {" ".join(tree)}; do zfs set canmount=noauto "$ds" 2>/dev/null || true; done; rm -rf {hostile}')
