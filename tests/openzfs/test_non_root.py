# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Replication as a user other than root on the remote side, on OpenZFS: permissions delegated with `zfs allow`
(push to a target user, pull from a source user) and zfs through `sudo -n` (TrueNAS's "Use Sudo For ZFS Commands").

The module runs ON the guest as root (Ansible over ssh) and reaches the guest's own sshd on 127.0.0.1 as the
dedicated user, with a key and a known_hosts file of its own (host key checked). Each case first runs without the
permission (or the sudoers rule) and checks that the failure names the exact `zfs allow` line (or sudoers line) to
add and changed nothing; then it grants exactly what the user guide documents for that side (_allow.DELEGATION) and
checks a full, an incremental and target retention, comparing guids on both sides.
"""

from __future__ import annotations

import importlib.util
import json
import re

import pytest

from helpers import REPO_ROOT

SCHEMA = 'auto-%Y-%m-%d_%H-%M'
KEY = '/root/.ssh/zr_nonroot'
KNOWN_HOSTS = '/root/zr-nonroot-known-hosts'


def _allow_module():
    spec = importlib.util.spec_from_file_location('zr_allow', REPO_ROOT / 'plugins' / 'module_utils' / '_allow.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DELEGATION = _allow_module().DELEGATION


def dedicated_user(guest, user: str) -> None:
    """USER in the guest, reachable by root's own key over the guest's sshd on 127.0.0.1, host key recorded."""
    guest.sh(f'''
        id -u {user} >/dev/null 2>&1 || useradd -m -s /bin/sh {user}
        [ -f {KEY} ] || ssh-keygen -q -t ed25519 -N '' -f {KEY}
        install -d -m 700 -o {user} -g {user} /home/{user}/.ssh
        install -m 600 -o {user} -g {user} {KEY}.pub /home/{user}/.ssh/authorized_keys
        [ -s {KNOWN_HOSTS} ] || ssh-keyscan -t ed25519 127.0.0.1 2>/dev/null > {KNOWN_HOSTS}''')


def task_params(name: str, src: str, dst: str, user: str, tag: str, **more) -> dict:
    base = f'/root/zr-nonroot-{tag}'
    return {'name': name, 'source_datasets': [src], 'target_dataset': dst, 'naming_schema': [SCHEMA],
            'transport': 'ssh', 'retries': 0, 'retention_policy': 'source',
            'ssh': {'host': '127.0.0.1', 'user': user, 'private_key_file': KEY, 'known_hosts_file': KNOWN_HOSTS},
            'state_dir': f'{base}/state', 'log_dir': f'{base}/log', 'metrics_dir': f'{base}/metrics', **more}


def playbook(tasks: list[dict]) -> str:
    return json.dumps([{'hosts': 'zrvm', 'gather_facts': False, 'tasks': tasks}])


def replicate(params: dict, name: str = 'replicate', **more) -> dict:
    return {'name': name, 'zfs.replication.zfs_replication': params, 'register': name.replace(' ', '_'), **more}


def delegate(name: str, user: str, dataset: str, side: str) -> dict:
    """The scheduler role's `delegate` entry point: zfs allow what SIDE of a task runs, to USER on DATASET."""
    return {'name': name, 'ansible.builtin.include_role': {'name': 'zfs.replication.scheduler', 'tasks_from': 'delegate'},
            'vars': {'scheduler_delegations': [{'user': user, 'dataset': dataset, 'side': side}]}}


def delegate_results(result) -> list[dict]:
    return [t['hosts']['zrvm'] for t in result.tasks_run
            if t['task']['name'].endswith('Delegate what each side of a replication task runs') and 'zrvm' in t['hosts']]


def sh(script: str, name: str) -> dict:
    return {'name': name, 'ansible.builtin.shell': script, 'changed_when': True}


@pytest.mark.parametrize('direction', ['push', 'pull'])
def test_a_user_with_the_documented_zfs_allow_permissions_replicates_and_a_missing_one_is_named(
        direction, guest, guest_cleanup, guest_inventory, ansible_playbook):
    tag = guest.tag()
    src, parent = f'zra/nr{tag}', f'zrb/nr{tag}'
    dst = f'{parent}/data'
    guest.sh(f'zfs create {src} && zfs create {parent}')
    guest_cleanup += [src, parent]
    # push: the remote side is the target (zrrecv); pull: the remote side is the source (zrsend).
    user, side, granted_on = ('zrrecv', 'target', parent) if direction == 'push' else ('zrsend', 'source', src)
    dedicated_user(guest, user)
    params = task_params(f'nr{tag}', src, dst, user, tag, direction=direction)
    # A property set on the source itself travels with the stream (properties: true) and needs its own permission.
    guest.zfs('set', 'compression=zstd', src)
    guest.write_files(src, 'one')
    guest.zfs('snapshot', f'{src}@auto-2026-11-28_10-00')
    guest.write_files(src, 'two')
    guest.zfs('snapshot', f'{src}@auto-2026-11-28_11-00')

    # Without permissions: the run fails naming the user, the host and the `zfs allow` line; nothing is received.
    first = ansible_playbook(playbook([replicate(params, 'without', ignore_errors=True)]), inventory_text=guest_inventory)
    failed = first.task('without', 'zrvm')
    assert failed.get('failed') is True, failed
    wanted = re.search(rf"'zfs allow -u {user} ([a-z,:-]+) ([^' ]+)'", failed['msg'])
    assert wanted, failed['msg']
    assert 'permission denied' in failed['msg'] and f'{user} on {user}@127.0.0.1:22' in failed['msg'], failed['msg']
    named = set(wanted.group(1).split(','))
    assert named <= set(DELEGATION[side]), (named, DELEGATION[side])
    assert wanted.group(2) in (src, dst), failed['msg']
    assert guest.zfs('list', '-H', '-o', 'name', '-r', parent).split() == [parent]

    # Granted by the role's `delegate` entry point, exactly what the guide documents for that side: a full, then an
    # incremental with target retention (a snapshot gone from the source goes from the target too), all as that user
    # on the remote side. The role run again grants nothing more.
    second = ansible_playbook(playbook([
        delegate('grant', user, granted_on, side),
        replicate(params, 'full'),
        sh(f'zfs snapshot {src}@auto-2026-11-28_12-00 && zfs destroy {src}@auto-2026-11-28_10-00', 'next'),
        replicate(params, 'incremental'),
        delegate('grant again', user, granted_on, side),
    ]), inventory_text=guest_inventory)
    granted, again = delegate_results(second)
    assert granted['changed'] is True and again['changed'] is False and again.get('skipped') is True, (granted, again)
    allow = guest.zfs('allow', granted_on)
    assert f"user {user} {','.join(sorted(DELEGATION[side]))}" in allow, allow
    full, inc = second.task('full', 'zrvm'), second.task('incremental', 'zrvm')
    if direction == 'push':
        # zfs recv exits 0 without the compression permission: the run succeeds, and says what it could not set.
        warned = [line for line in full['log'] if 'warning:' in line]
        assert any(f"'zfs allow -u {user} receive,create,mount," in w and 'compression' in w for w in warned), full['log']
        assert guest.zfs('get', '-H', '-o', 'value', 'compression', dst).strip() != 'zstd'
    assert full['plan'][0]['action'] == 'full' and full['snapshots_sent'] == 2, full
    assert inc['plan'][0]['action'] == 'incremental' and inc['snapshots_sent'] == 1, inc
    assert guest.snapshots_with_guids(dst) == guest.snapshots_with_guids(src)
    assert list(guest.snapshots_with_guids(dst)) == ['@auto-2026-11-28_11-00', '@auto-2026-11-28_12-00']
    assert guest.checksums(dst) == guest.checksums(src)
    # The task's hold moved to the newest common snapshot on the remote side too, put there by the user.
    remote = dst if direction == 'push' else src
    holds = guest.zfs('holds', '-H', f'{remote}@auto-2026-11-28_12-00')
    assert f'zfs.replication:nr{tag}' in holds, holds
    assert guest.zfs('get', '-H', '-o', 'value', 'userrefs', f'{remote}@auto-2026-11-28_11-00').strip() == '0'


def test_sudo_runs_the_remote_zfs_as_root_and_a_missing_sudoers_rule_is_named(guest, guest_cleanup, guest_inventory,
                                                                              ansible_playbook):
    tag = guest.tag()
    src, parent = f'zra/su{tag}', f'zrb/su{tag}'
    dst = f'{parent}/data'
    guest.sh(f'zfs create {src} && zfs create {parent}')
    guest_cleanup += [src, parent]
    user, rule = 'zrsudo', '/etc/sudoers.d/zr-test-zrsudo'
    dedicated_user(guest, user)
    guest.run('rm', '-f', rule)
    params = task_params(f'su{tag}', src, dst, user, tag, sudo=True)
    guest.write_files(src, 'one')
    guest.zfs('snapshot', f'{src}@auto-2026-11-28_10-00')
    try:
        first = ansible_playbook(playbook([replicate(params, 'without', ignore_errors=True)]), inventory_text=guest_inventory)
        failed = first.task('without', 'zrvm')
        assert failed.get('failed') is True, failed
        assert f"'{user} ALL=(root) NOPASSWD: /usr/sbin/zfs'" in failed['msg'], failed['msg']
        assert guest.zfs('list', '-H', '-o', 'name', '-r', parent).split() == [parent]

        second = ansible_playbook(playbook([
            sh(f"echo '{user} ALL=(root) NOPASSWD: /usr/sbin/zfs' > {rule} && chmod 0440 {rule} && visudo -cf {rule}", 'rule'),
            replicate(params, 'full'),
        ]), inventory_text=guest_inventory)
        full = second.task('full', 'zrvm')
        assert full['plan'][0]['action'] == 'full' and full['snapshots_sent'] == 1, full
        assert guest.snapshots_with_guids(dst) == guest.snapshots_with_guids(src)
        assert guest.checksums(dst) == guest.checksums(src)
        # Nothing was delegated to the user: root received it, through sudo.
        assert user not in guest.zfs('allow', parent)
        assert 'sudo' in guest.sh(f'journalctl -q --no-pager -t sudo | grep -F "USER=root" | grep -F "{user}" | tail -1 || true')
    finally:
        guest.run('rm', '-f', rule)
