# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The first full stream cut part-way on OpenZFS 2.x: resumed, never restarted from zero nor destroyed.

The module runs ON the guest (Ansible over ssh) and pushes zra -> zrb over ssh to the guest itself (its own sshd),
so the stream crosses a real ssh connection. A killer in the guest watches the stream's pv and SIGKILLs the ssh
client that carries `zfs recv` once a chosen share of the real stream (zfs send -nP) went through: a cut measured in
bytes. With retries 0 the run fails, the target keeps a receive_resume_token and the next run resumes it (cut at an
early and at a late offset: the late cut is the one OpenZFS 2.1 once got wrong); with the default retries the same
run resumes it (cut in the middle). Either way the resumed part is smaller than the whole stream, and both sides end
with the same guids and the same files. (Each case costs about a minute of the emulated guest: three offsets for
each way took three more minutes of the OpenZFS lane for the same code paths.)
"""

from __future__ import annotations

import json
import threading

import pytest

SCHEMA = 'auto-%Y-%m-%d_%H-%M'
SNAP = 'auto-2026-11-28_10-00'
KEY = '/root/.ssh/zr_self'
KNOWN = '/root/.ssh/zr_self_known_hosts'

# Runs in the guest. The bytes that reached the receiving side so far: what the sshd session that runs `zfs recv`
# has written (the stream into zfs recv's stdin, plus a few replies), counted from when the receive started. Once
# AFTER bytes went through, SIGKILL that sshd session: the connection is cut for real. (Killing the engine's ssh
# client is not a cut when it is a multiplexed client: its ControlMaster holds the stream's file descriptors and
# may go on draining the stream into zfs recv, as seen on OpenZFS 2.1 under load.) The stream's pv (rate-limited:
# downstream has only what it passed on) shares one CPU with the killer, which is first in line there (nice -10), and
# is stopped while the cut is made: a host that starves the emulated guest's CPU stops pv with the killer instead of
# letting the stream run to its end unwatched.
KILLER = r'''
import os, signal, sys, time
after, target = int(sys.argv[1]), sys.argv[2]
def procs():
    for pid in os.listdir('/proc'):
        if pid.isdigit():
            try:
                yield int(pid), open(f'/proc/{pid}/cmdline', 'rb').read().replace(b'\0', b' ').decode()
            except OSError:
                pass
def parent(pid):
    return int(open(f'/proc/{pid}/stat').read().rsplit(') ', 1)[1].split()[1])
def wchar(pid):
    return int(dict(line.split(': ') for line in open(f'/proc/{pid}/io').read().splitlines())['wchar'])
def signal_pv(sig):
    try:
        if pv:
            os.kill(pv, sig)
    except ProcessLookupError:
        pass
deadline, session, start, pv = time.time() + 600, None, 0, None
while time.time() < deadline:
    try:
        if session is None:
            for pid, cmd in procs():
                if cmd.startswith('zfs recv ') and cmd.rstrip().endswith(' ' + target):
                    session = parent(parent(pid))
                    start = wchar(session)
                elif cmd.startswith('pv ') and pv is None:
                    pv = pid
                    cpu = {min(os.sched_getaffinity(0))}
                    os.sched_setaffinity(pv, cpu)
                    os.sched_setaffinity(0, cpu)
                    os.setpriority(os.PRIO_PROCESS, 0, -10)
        elif wchar(session) - start >= after:
            signal_pv(signal.SIGSTOP)
            seen = wchar(session) - start
            os.kill(session, signal.SIGKILL)
            signal_pv(signal.SIGCONT)
            print(seen)
            sys.exit(0)
    except (OSError, ValueError, KeyError, IndexError):
        session = None
    time.sleep(0.02 if session is None else 0.01)
print('timeout')
sys.exit(1)
'''


def playbook(tasks: list[dict]) -> str:
    return json.dumps([{'hosts': 'zrvm', 'gather_facts': False, 'tasks': tasks}])


def replicate(ansible_playbook, inventory: str, params: dict, expect_rc: int | None = 0) -> dict:
    task = {'name': 'replicate', 'zfs.replication.zfs_replication': params, 'register': 'out', 'ignore_errors': expect_rc != 0}
    return ansible_playbook(playbook([task]), inventory_text=inventory, expect_rc=None).task('replicate', 'zrvm')


def token(guest, dataset: str) -> str:
    return guest.zfs('get', '-H', '-o', 'value', 'receive_resume_token', dataset).strip()


@pytest.fixture(scope='module')
def self_ssh(guest) -> dict:
    """root in the guest reaches its own sshd with a key of its own, host key checked."""
    guest.sh(f'''
        [ -f {KEY} ] || ssh-keygen -q -t ed25519 -N '' -f {KEY}
        grep -qF "$(cut -d' ' -f2 {KEY}.pub)" /root/.ssh/authorized_keys || cat {KEY}.pub >> /root/.ssh/authorized_keys
        echo "127.0.0.1 $(cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub)" > {KNOWN}''')
    return {'host': '127.0.0.1', 'port': 22, 'user': 'root', 'private_key_file': KEY, 'known_hosts_file': KNOWN}


@pytest.fixture(scope='module')
def source(guest) -> tuple[str, int]:
    """One source with a few MB of random files, and the real size of its first full stream."""
    src = f'zra/ffresume{guest.tag()}'
    guest.zfs('create', src)
    guest.write_files(src, 'big', count=4, size=1_000_000)
    guest.zfs('snapshot', f'{src}@{SNAP}')
    # The real size of the stream the engine sends (zfs send -nP only estimates it, and high: a cut at 85% of the
    # estimate fell after the end of the stream, so the receive completed and nothing was cut).
    size = int(guest.sh(f'zfs send -L -e -c {src}@{SNAP} | wc -c').strip())
    yield src, size
    guest.destroy(src)


def cut_run(guest, ansible_playbook, inventory: str, params: dict, target: str, after: int, expect_rc: int | None) -> tuple[dict, str]:
    """Run the task while the killer cuts its stream after AFTER bytes; returns (module result, bytes at the cut)."""
    seen: list[str] = []

    def kill() -> None:
        try:
            seen.append(guest.run('python3', '-', str(after), target, input=KILLER, timeout=900).strip())
        except Exception as exc:  # noqa: BLE001  (the assertion below reports it)
            seen.append(f'killer failed: {exc}')

    th = threading.Thread(target=kill, daemon=True)
    th.start()
    res = replicate(ansible_playbook, inventory, params, expect_rc=expect_rc)
    th.join(timeout=60)
    return res, (seen[0] if seen else 'no answer')


@pytest.mark.parametrize('offset', [0.15, 0.85])
def test_first_full_cut_is_resumed_by_the_next_run(guest, guest_cleanup, guest_inventory, ansible_playbook, self_ssh, source, offset):
    src, size = source
    parent = f'zrb/ffnext{guest.tag()}'
    guest.zfs('create', parent)
    guest_cleanup.append(parent)
    dst = f'{parent}/data'
    params = {'name': f'ffnext{guest.tag()}', 'source_datasets': [src], 'target_dataset': dst, 'naming_schema': [SCHEMA],
              'ssh': self_ssh, 'speed_limit': 1_000_000, 'retries': 0}
    first, cut_at = cut_run(guest, ansible_playbook, guest_inventory, params, dst, int(size * offset), expect_rc=2)
    assert cut_at.isdigit() and int(cut_at) < size, f'the stream was not cut: {cut_at}\n{first.get("log")}'
    assert first.get('failed') is True, first
    state = guest.sh(f'zfs list -H -r -t all -o name,receive_resume_token {dst.rsplit("/", 1)[0]} | cut -c1-120')
    assert 'allow_from_scratch' not in first['msg'] and 'resumes it' in first['msg'], (first['msg'], first.get('log'), state)
    assert token(guest, dst) not in ('-', ''), 'the cut first full left no resume token (or it was destroyed)'

    again = replicate(ansible_playbook, guest_inventory, {**params, 'speed_limit': None})
    assert again.get('failed') is not True, again
    assert again['datasets'][dst]['resumed'] is True
    resumed = next(line for line in again['log'] if line.startswith(f'resumed {dst}: '))
    assert int(resumed.split(': ')[1].split()[0]) < size, resumed  # not the whole stream again
    assert token(guest, dst) == '-'
    assert guest.snapshots_with_guids(dst) == guest.snapshots_with_guids(src)
    assert guest.checksums(dst) == guest.checksums(src)
    guest.zfs('unmount', dst)


@pytest.mark.parametrize('offset', [0.5])
def test_first_full_cut_is_resumed_by_the_retry_in_the_same_run(guest, guest_cleanup, guest_inventory, ansible_playbook, self_ssh, source,
                                                                offset):
    src, size = source
    parent = f'zrb/ffretry{guest.tag()}'
    guest.zfs('create', parent)
    guest_cleanup.append(parent)
    dst = f'{parent}/data'
    params = {'name': f'ffretry{guest.tag()}', 'source_datasets': [src], 'target_dataset': dst, 'naming_schema': [SCHEMA],
              'ssh': self_ssh, 'speed_limit': 1_000_000, 'retry_delay': 1}
    res, cut_at = cut_run(guest, ansible_playbook, guest_inventory, params, dst, int(size * offset), expect_rc=0)
    assert cut_at.isdigit() and int(cut_at) < size, f'the stream was not cut: {cut_at}\n{res.get("log")}'
    assert res.get('failed') is not True, f'{res.get("msg")}\n' + '\n'.join(res.get('log') or [])
    ds = res['datasets'][dst]
    assert ds['attempts'] == 2 and ds['resumed'] is True, ds
    assert any('attempt 1 failed' in line for line in res['log']), res['log']
    assert any('zfs send -t' in line for line in res['log']), res['log']
    assert ds['bytes'] < size, ds  # the retry sent the rest, not the whole stream
    assert guest.snapshots_with_guids(dst) == guest.snapshots_with_guids(src)
    assert guest.checksums(dst) == guest.checksums(src)
    guest.zfs('unmount', dst)
