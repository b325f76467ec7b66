# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/ssh_trust.yml against the loopback sandbox sshd, in check mode and for real.

"runner" is reached over ssh (the sandbox sshd, as root) and runs a replication task whose key path starts with "~/":
the key must land in the home of root on the managed host (getent passwd), not in the controller's $HOME, which the
test points elsewhere. Its known_hosts file is in a directory standing in for /etc/ssh (mode 0755), which must keep
its mode. "peer" is the sandbox sshd's side: its host key is trusted and the runner's key goes into the sshd's real
authorized_keys (ansible.posix.authorized_key), after which the new key logs in with the host key checked.
"""
from __future__ import annotations

import json
import pwd
import secrets
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PLAY = "- name: SSH trust\n  ansible.builtin.import_playbook: zfs.replication.ssh_trust\n"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def inventory(sandbox, key_file: str, known_hosts: Path, tag: str) -> str:
    sshd = sandbox.sshd
    runner = {**sshd.ansible_host_vars(), "ansible_connection": "ssh", "ansible_python_interpreter": "/usr/bin/python3",
              # How others would reach the runner (not the sandbox port: only "peer" matches the task's ssh.host/port).
              "zfs_replication_ssh_address": "127.0.0.2", "zfs_replication_ssh_from": "127.0.0.1",
              "zfs_replication_replication_tasks": [{
                  "name": f"trust{tag}", "source_datasets": [f"{sandbox.src_pool}/trust{tag}"],
                  "target_dataset": f"{sandbox.dst_pool}/trust{tag}", "naming_schema": ["auto-%Y-%m-%d_%H-%M"],
                  "ssh": {"host": sshd.host, "port": sshd.port, "user": sshd.user, "private_key_file": key_file,
                          "known_hosts_file": str(known_hosts)}}]}
    peer = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
            "zfs_replication_ssh_address": sshd.host, "zfs_replication_ssh_port": sshd.port,
            "zfs_replication_ssh_host_key_file": f"{sshd.host_key}.pub",
            "zfs_replication_authorized_keys_file": str(sshd.authorized_keys)}
    return json.dumps({"all": {"hosts": {"runner": runner, "peer": peer}}}, indent=2)


def assert_no_warnings(result) -> None:
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "[WARNING]" in line or "[DEPRECATION WARNING]" in line]
    assert not lines, f"{lines}\n{result}"


def changed(result) -> list[str]:
    return [f"{t['task']['name']} ({h})" for t in result.tasks_run for h, r in t["hosts"].items() if r.get("changed")]


@pytest.fixture
def remote_home_dir():
    """A fresh directory name under the managed user's (root's) ~/.ssh; removed afterwards with what it holds,
    and ~/.ssh too when this test created it."""
    ssh_dir = Path(pwd.getpwnam("root").pw_dir) / ".ssh"
    existed = ssh_dir.exists()
    before = mode(ssh_dir) if existed else None
    name = f"zr-trust-{secrets.token_hex(3)}"
    yield ssh_dir, name, before
    shutil.rmtree(ssh_dir / name, ignore_errors=True)
    if not existed and ssh_dir.exists() and not any(ssh_dir.iterdir()):
        ssh_dir.rmdir()


def test_ssh_trust_check_then_real_then_idempotent(sandbox, ansible_playbook, tmp_path, remote_home_dir):
    ssh_dir, name, ssh_dir_mode = remote_home_dir
    tag = secrets.token_hex(3)
    # The controller's $HOME for these runs (short: ssh's ControlPath lives under it).
    controller_home = Path(tempfile.mkdtemp(prefix="zrh-", dir="/tmp"))
    etc_ssh = tmp_path / "etc-ssh"  # stands in for /etc/ssh: exists, 0755, and must stay so
    etc_ssh.mkdir()
    etc_ssh.chmod(0o755)
    known_hosts = etc_ssh / "ssh_known_hosts"
    key = ssh_dir / name / "id_ed25519"
    inv = inventory(sandbox, f"~/.ssh/{name}/id_ed25519", known_hosts, tag)
    env = {"HOME": str(controller_home)}  # "~" expanded on the controller would land here
    authorized_before = sandbox.sshd.authorized_keys.read_text()
    host_key = Path(f"{sandbox.sshd.host_key}.pub").read_text().split()
    try:
        # Check mode on hosts never set up: exit 0, nothing written anywhere.
        check = ansible_playbook(PLAY, inventory_text=inv, check=True, env=env)
        assert_no_warnings(check)
        assert not (ssh_dir / name).exists() and not known_hosts.exists()
        assert sandbox.sshd.authorized_keys.read_text() == authorized_before
        assert mode(etc_ssh) == 0o755

        first = ansible_playbook(PLAY, inventory_text=inv, env=env)
        assert_no_warnings(first)
        # The key pair is in the managed user's home (resolved there), its new directory 0700; ~/.ssh kept its mode.
        assert key.is_file() and Path(f"{key}.pub").is_file()
        assert mode(key.parent) == 0o700
        if ssh_dir_mode is not None:
            assert mode(ssh_dir) == ssh_dir_mode
        assert not any(controller_home.rglob("*id_ed25519*"))
        # The existing "/etc/ssh" keeps 0755; known_hosts holds exactly the peer's host key for host and port.
        assert mode(etc_ssh) == 0o755
        assert known_hosts.read_text() == f"[{sandbox.sshd.host}]:{sandbox.sshd.port} {host_key[0]} {host_key[1]}\n"
        # authorized_keys: what was there, plus the runner's key restricted to its address.
        pub = Path(f"{key}.pub").read_text().split()
        after = sandbox.sshd.authorized_keys.read_text().splitlines()
        assert after[:len(authorized_before.splitlines())] == authorized_before.splitlines()
        assert after[len(authorized_before.splitlines()):] == [f'restrict,from="127.0.0.1" {pub[0]} {pub[1]} zfs.replication@runner']
        # The trust works: the new key logs in, the host key checked against the new known_hosts.
        login = subprocess.run(["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                                "-o", f"UserKnownHostsFile={known_hosts}", "-o", "IdentitiesOnly=yes", "-i", str(key),
                                "-p", str(sandbox.sshd.port), f"{sandbox.sshd.user}@{sandbox.sshd.host}", "echo", "trusted"],
                               capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
        assert login.returncode == 0 and login.stdout.strip() == "trusted", login.stderr

        # Idempotent: a second run and a check run after it change nothing.
        key_bytes, auth_text, kh_text = key.read_bytes(), sandbox.sshd.authorized_keys.read_text(), known_hosts.read_text()
        second = ansible_playbook(PLAY, inventory_text=inv, env=env)
        assert_no_warnings(second)
        assert second.stats["runner"]["changed"] == 0 and second.stats["peer"]["changed"] == 0, changed(second)
        again = ansible_playbook(PLAY, inventory_text=inv, check=True, env=env)
        assert again.stats["runner"]["changed"] == 0 and again.stats["peer"]["changed"] == 0, changed(again)
        assert (key.read_bytes(), sandbox.sshd.authorized_keys.read_text(), known_hosts.read_text()) == (key_bytes, auth_text, kh_text)
        assert mode(etc_ssh) == 0o755
    finally:
        shutil.rmtree(controller_home, ignore_errors=True)
        sandbox.sshd.authorized_keys.write_text(authorized_before)
        sandbox.sshd.authorized_keys.chmod(0o600)


def test_ssh_trust_forces_the_receiver_for_an_append_only_push(sandbox, ansible_playbook, tmp_path, remote_home_dir):
    """target_access append_only: the key's line gets the receiver as its forced command, with the task's target
    root and hold tag; the key can then ask what a push needs and nothing else (the receiver is a launcher of this
    checkout's engine standing in for the one the scheduler role installs)."""
    import os

    ssh_dir, name, _mode = remote_home_dir
    tag = secrets.token_hex(3)
    controller_home = Path(tempfile.mkdtemp(prefix="zrh-", dir="/tmp"))
    known_hosts = tmp_path / "known_hosts"
    key = ssh_dir / name / "id_ed25519"
    receive_log = tmp_path / "receive.log"
    launcher = tmp_path / "zfs-replication-receive"
    launcher.write_text("#!/bin/sh\n" + shlex.join(["exec", "env", f"PYTHONPATH={os.pathsep.join(sys.path)}", sys.executable, "-m",
                                                    "ansible_collections.zfs.replication.plugins.module_utils._receiver",
                                                    "--log", str(receive_log)]) + ' "$@"\n')
    launcher.chmod(0o755)
    inv = json.loads(inventory(sandbox, f"~/.ssh/{name}/id_ed25519", known_hosts, tag))
    hosts = inv["all"]["hosts"]
    hosts["runner"]["zfs_replication_replication_tasks"][0]["target_access"] = "append_only"
    hosts["peer"]["scheduler_receive_command"] = str(launcher)
    target = hosts["runner"]["zfs_replication_replication_tasks"][0]["target_dataset"]
    authorized_before = sandbox.sshd.authorized_keys.read_text()
    env = {"HOME": str(controller_home)}
    try:
        first = ansible_playbook(PLAY, inventory_text=json.dumps(inv), env=env)
        assert_no_warnings(first)
        pub = Path(f"{key}.pub").read_text().split()
        added = sandbox.sshd.authorized_keys.read_text().splitlines()[len(authorized_before.splitlines()):]
        assert added == [f'restrict,from="127.0.0.1",command="{launcher} --root {target} --tag zfs.replication:trust{tag}" '
                         f'{pub[0]} {pub[1]} zfs.replication@runner']

        def with_key(*command: str) -> subprocess.CompletedProcess:
            return subprocess.run(["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                                   "-o", f"UserKnownHostsFile={known_hosts}", "-o", "IdentitiesOnly=yes", "-i", str(key),
                                   "-p", str(sandbox.sshd.port), f"{sandbox.sshd.user}@{sandbox.sshd.host}", "--", *command],
                                  capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)

        def datasets() -> str:
            return subprocess.run(["zfs", "list", "-H", "-o", "name", "-r", sandbox.dst_pool], capture_output=True, text=True,
                                  check=True).stdout

        pools = datasets()
        asked = with_key("zfs-replication-which", "pv", "zfs")
        assert asked.returncode == 0 and asked.stdout == "", asked
        for command in ([f"zfs destroy -r {sandbox.dst_pool}"], ["echo", "trusted"], [f"zfs recv -u -F {target}"]):
            refused = with_key(*command)
            assert refused.returncode == 126 and "zfs-replication-receive: refused" in refused.stderr, (command, refused)
        assert datasets() == pools and pools
        assert receive_log.read_text().count("refused") == 3

        second = ansible_playbook(PLAY, inventory_text=json.dumps(inv), env=env)
        assert second.stats["runner"]["changed"] == 0 and second.stats["peer"]["changed"] == 0, changed(second)
    finally:
        shutil.rmtree(controller_home, ignore_errors=True)
        sandbox.sshd.authorized_keys.write_text(authorized_before)
        sandbox.sshd.authorized_keys.chmod(0o600)
