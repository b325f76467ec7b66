# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The sandbox itself: real zfs-fuse pools, a real sshd that checks host keys, a real send | ssh | recv."""

from __future__ import annotations

import subprocess

import pytest

from helpers import snapshots_with_guids, tree_checksums, zfs

pytestmark = pytest.mark.integration


def test_send_over_ssh_keeps_guids_and_data(sandbox):
    src, dst = f'{sandbox.src_pool}/x', f'{sandbox.dst_pool}/x'
    zfs('create', src)
    mountpoint = zfs('get', '-H', '-o', 'value', 'mountpoint', src).strip()
    with open(f'{mountpoint}/payload', 'wb') as f:
        f.write(b'zfs.replication sandbox\n' * 1000)
    zfs('snapshot', f'{src}@s1')
    with open(f'{mountpoint}/second', 'w') as f:
        f.write('second\n')
    zfs('snapshot', f'{src}@s2')

    send = subprocess.Popen(['zfs', 'send', '-R', f'{src}@s2'], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    recv = subprocess.run(sandbox.sshd.ssh_argv('zfs', 'recv', '-F', dst), stdin=send.stdout, capture_output=True,
                          text=True, timeout=120, check=False)
    send.stdout.close()
    assert send.wait(timeout=60) == 0
    assert recv.returncode == 0, recv.stderr

    src_snaps = snapshots_with_guids(src)
    assert set(src_snaps) == {'@s1', '@s2'}
    assert snapshots_with_guids(dst) == src_snaps
    dst_mountpoint = zfs('get', '-H', '-o', 'value', 'mountpoint', dst).strip()
    assert tree_checksums(dst_mountpoint) == tree_checksums(mountpoint)
    assert set(tree_checksums(dst_mountpoint)) == {'payload', 'second'}


def test_pools_mount_inside_the_sandbox(sandbox):
    for pool in (sandbox.src_pool, sandbox.dst_pool):
        mountpoint = zfs('get', '-H', '-o', 'value', 'mountpoint', pool).strip()
        assert mountpoint.startswith(f'{sandbox.workdir}/'), mountpoint
        assert zfs('get', '-H', '-o', 'value', 'mounted', pool).strip() == 'yes'


def test_ssh_checks_the_host_key(sandbox, tmp_path):
    empty = tmp_path / 'known_hosts_without_key'
    empty.write_text('')
    argv = sandbox.sshd.ssh_argv('true', control_master=False)
    argv[argv.index(f'UserKnownHostsFile={sandbox.sshd.known_hosts}')] = f'UserKnownHostsFile={empty}'
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 255
    assert 'Host key verification failed' in proc.stderr

    # A known_hosts line for the right address with another key is refused too.
    other = tmp_path / 'other_key'
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', str(other)], check=True)
    wrong = tmp_path / 'known_hosts_wrong_key'
    kind, key = other.with_suffix('.pub').read_text().split()[:2]
    wrong.write_text(f'[{sandbox.sshd.host}]:{sandbox.sshd.port} {kind} {key}\n')
    argv[argv.index(f'UserKnownHostsFile={empty}')] = f'UserKnownHostsFile={wrong}'
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 255
    assert 'Host key verification failed' in proc.stderr


def test_remote_commands_share_one_connection_and_skip_the_login_shell_setup(sandbox):
    """What makes remote commands cheap, counted rather than timed: the commands after the first reuse the master
    connection (the sshd logs no new login for them), and the remote shell skips root's ~/.bashrc (pyenv init,
    ~200 ms per command)."""
    def logins() -> int:
        return sandbox.sshd.log.read_text(errors='replace').count('Accepted publickey for root')

    argv = sandbox.sshd.ssh_argv('true')
    subprocess.run(argv, check=True, timeout=30, stdin=subprocess.DEVNULL)  # opens the master (or finds it open)
    before = logins()
    for _run in range(10):
        subprocess.run(argv, check=True, timeout=30, stdin=subprocess.DEVNULL)
    assert logins() == before, 'a command over the shared connection logged in anew'
    subprocess.run(sandbox.sshd.ssh_argv('true', control_master=False), check=True, timeout=30, stdin=subprocess.DEVNULL)
    assert logins() == before + 1, 'the sshd log does not show logins: the count above proves nothing'
    shell = subprocess.run(sandbox.sshd.ssh_argv('echo $SHLVL; command -v pyenv || echo no-pyenv'), check=True,
                           capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL).stdout.split()
    assert shell == ['2', 'no-pyenv']


def test_ansible_playbook_reaches_the_sandbox_sshd(ansible_playbook, sandbox_inventory, sandbox):
    playbook = """
- name: Reach the sandbox over ssh
  hosts: zrremote
  gather_facts: false
  tasks:
    - name: Pool listing
      ansible.builtin.command: zpool list -H -o name
      changed_when: false
"""
    result = ansible_playbook(playbook, inventory_text=sandbox_inventory)
    pools = result.task('Pool listing', host='zrremote')['stdout'].split()
    assert {sandbox.src_pool, sandbox.dst_pool} <= set(pools)
    assert result.stats['zrremote']['failures'] == 0


def test_ansible_playbook_reports_failures(ansible_playbook):
    playbook = """
- name: A failing play
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Fail on purpose
      ansible.builtin.fail:
        msg: expected failure {{ marker }}
"""
    result = ansible_playbook(playbook, extravars={'marker': 'm-42'}, expect_rc=2)
    failed = result.task('Fail on purpose')
    assert failed['failed'] is True
    assert failed['msg'] == 'expected failure m-42'
