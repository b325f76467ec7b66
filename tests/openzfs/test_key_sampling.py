# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Keys never on a command line or in an environment, sampled where they are used: in the guest, while a real
encrypted receive with a task-held key runs (OpenZFS 2.x; zfs-fuse has no encryption, so its run stops before any
key is used).

A sampler in the guest reads every /proc/*/cmdline and /proc/*/environ over and over while the run lasts (slowed
with speed_limit to a few seconds). It must have seen the `zfs recv` of the encrypted receive (so the sampling
really overlapped the receive) and a canary the test put on a command line and in an environment (so it reads
both), and never the key.
"""

from __future__ import annotations

import json
import secrets

SCHEMA = 'auto-%Y-%m-%d_%H-%M'

# Runs in the guest: needles come from a file (never from its own argv), it skips itself, and writes a JSON report.
SAMPLER = r'''
import json, os, sys, time
needles_file, stop_file, out_file, ready_file = sys.argv[1:5]
canary, *needles = open(needles_file).read().split()
me = str(os.getpid())
samples, recv_samples, hits, recv_cmds, canary_seen = 0, 0, [], set(), set()
open(ready_file, 'w').close()
deadline = time.time() + 600
while not os.path.exists(stop_file) and time.time() < deadline:
    samples += 1
    saw_recv = False
    for pid in os.listdir('/proc'):
        if not pid.isdigit() or pid == me:
            continue
        for what in ('cmdline', 'environ'):
            try:
                with open(f'/proc/{pid}/{what}', 'rb') as f:
                    text = f.read().replace(b'\0', b' ').decode(errors='replace')
            except OSError:
                continue
            if what == 'cmdline' and text.startswith(('zfs recv', 'zfs receive')):
                saw_recv = True
                recv_cmds.add(text.strip()[:300])
            if any(n in text for n in needles):
                hits.append(f'{pid} {what}: {text[:300]}')
            if canary in text:
                canary_seen.add(what)
    recv_samples += saw_recv
with open(out_file, 'w') as f:
    json.dump({'samples': samples, 'recv_samples': recv_samples, 'recv_cmds': sorted(recv_cmds), 'hits': hits[:20],
               'canary_seen': sorted(canary_seen)}, f)
'''


def test_key_is_never_on_a_command_line_or_in_an_environment_during_an_encrypted_receive(
        guest, guest_cleanup, guest_inventory, ansible_playbook):
    tag = guest.tag()
    src, parent = f'zra/keys{tag}', f'zrb/keys{tag}'
    guest.sh(f'zfs create {src} && zfs create {parent}')
    guest_cleanup += [src, parent]
    dst = f'{parent}/data'
    key = secrets.token_hex(32)
    work = f'/root/zr-sampler-{tag}'
    guest.sh(f'mkdir -p {work}')
    guest.run('sh', '-c', f'cat > {work}/sampler.py', input=SAMPLER)
    # A canary (not the key) that the test itself puts on a command line and in an environment: the sampler must
    # find it in both, or it could not have found the key either.
    canary = secrets.token_hex(16)
    guest.run('sh', '-c', f'umask 077; cat > {work}/needles', input=f'{canary}\n{key}\n{key[:24]}\n{key.upper()}\n')
    # ~3 MB at 1 MB/s: the receive lasts about three seconds (longer in the emulated guest).
    guest.write_files(src, 'secret', count=3, size=1_000_000)
    guest.zfs('snapshot', f'{src}@auto-2026-11-28_10-00')
    guest.sh(f'setsid nohup python3 {work}/sampler.py {work}/needles {work}/stop {work}/report.json {work}/ready '
             f'>/dev/null 2>&1 </dev/null &')
    guest.sh(f'for i in $(seq 100); do [ -e {work}/ready ] && exit 0; sleep 0.1; done; exit 1')
    guest.sh(f"setsid nohup env ZR_CANARY={canary} sh -c 'sleep 5' {canary} >/dev/null 2>&1 </dev/null &")

    params = {'source_datasets': [src], 'target_dataset': dst, 'naming_schema': [SCHEMA], 'transport': 'local',
              'encryption': True, 'encryption_key_format': 'hex', 'encryption_key': key, 'speed_limit': 1_000_000}
    task = {'name': 'replicate', 'zfs.replication.zfs_replication': params, 'register': 'out'}
    try:
        run = ansible_playbook(json.dumps([{'hosts': 'zrvm', 'gather_facts': False, 'tasks': [task]}]), inventory_text=guest_inventory,
                               extra_args=['-vvv'])
    finally:
        guest.sh(f'touch {work}/stop; for i in $(seq 300); do [ -e {work}/report.json ] && exit 0; sleep 0.1; done; exit 1')
    report = json.loads(guest.run('cat', f'{work}/report.json'))
    guest.sh(f'rm -rf {work}')

    print(f"key sampling: {report['samples']} rounds over /proc, the encrypted zfs recv seen in {report['recv_samples']}")
    res = run.task('replicate', 'zrvm')
    assert res['datasets'][dst]['snapshots_sent'] == ['auto-2026-11-28_10-00'], res
    assert guest.zfs('get', '-H', '-o', 'value', 'encryption', dst).strip() == 'aes-256-gcm'
    # The sampling overlapped the encrypted receive: it saw its zfs recv (with the encryption options) in
    # several rounds, so a key on any command line or in any environment during it would have been seen.
    assert report['canary_seen'] == ['cmdline', 'environ'], report
    assert report['recv_samples'] >= 2, report
    assert any('encryption=on' in c and dst in c for c in report['recv_cmds']), report
    assert report['hits'] == [], f"the key was on a command line or in an environment: {report['hits']}"
    for where, text in (('ansible stdout', run.stdout), ('ansible stderr', run.stderr), ('module log', '\n'.join(res['log']))):
        assert key not in text and key[:24] not in text, f'the key appeared in the {where}'
