# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/ssh_trust.yml against the booted systemd container, in check mode and for real.

The container is the one managed host, reached over its own sshd, and it replicates to itself over that sshd (the
task's ssh.host/port is the container's address and port): the playbook makes the key pair in root's home there
(a "~/" path resolved on the managed host), trusts the sshd's host key in the container's real
/etc/ssh/ssh_known_hosts (/etc/ssh keeps its 0755) and authorizes the key in root's ~/.ssh/authorized_keys there.
The key then logs in to the container's sshd from inside the container, host key checked, as a run of the task does.

The container's sshd reads only its per-boot key file (tests/systemd/container.py); for this test it also reads
root's ~/.ssh/authorized_keys like a stock sshd (a drop-in ahead of the container's own, removed afterwards).
"""
from __future__ import annotations

import json
import secrets
import shlex
import shutil
import tempfile
from pathlib import Path

from container import Container

from helpers import changed_tasks, warning_lines

PLAY = "- name: SSH trust\n  ansible.builtin.import_playbook: zfs.replication.ssh_trust\n"
HOST = "zrsystemd"
KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"
AUTHORIZED_KEYS = "/root/.ssh/authorized_keys"
# Sorts before the container's zr-test.conf: sshd takes the first AuthorizedKeysFile it reads.
DROP_IN = "/etc/ssh/sshd_config.d/00-zr-trust-test.conf"


def inventory(sandbox, container: Container, tag: str, key_file: str) -> str:
    host = {**container.ansible_host_vars(),
            "zfs_replication_ssh_port": container.port,
            # The container's sshd host key is bound in per boot (none under /etc/ssh in the image).
            "zfs_replication_ssh_host_key_file": "/zr-run/ssh_host_ed25519_key.pub",
            "zfs_replication_replication_tasks": [{
                "name": f"trust{tag}", "source_datasets": [f"{sandbox.src_pool}/trust{tag}"],
                "target_dataset": f"{sandbox.dst_pool}/trust{tag}", "naming_schema": ["auto-%Y-%m-%d_%H-%M"],
                "ssh": {"host": "127.0.0.1", "port": container.port, "user": "root", "private_key_file": key_file,
                        "known_hosts_file": KNOWN_HOSTS}}]}
    return json.dumps({"all": {"hosts": {HOST: host}}}, indent=2)


def listing(container: Container) -> str:
    """Paths, modes, owners and checksums of everything under /root/.ssh and /etc/ssh in the container."""
    return container.exec("sh", "-c", "find /root/.ssh /etc/ssh -printf '%p %m %u:%g %y\\n' | sort; "
                                      "find /root/.ssh /etc/ssh -type f -exec sha256sum {} + | sort").stdout


def test_ssh_trust_in_the_systemd_container(sandbox, container: Container, ansible_playbook):
    tag = secrets.token_hex(3)
    name = f"zr-trust-{tag}"
    key = f"/root/.ssh/{name}/id_ed25519"
    inv = inventory(sandbox, container, tag, f"~/.ssh/{name}/id_ed25519")
    controller_home = Path(tempfile.mkdtemp(prefix="zrh-", dir="/tmp"))  # short: ssh's ControlPath lives under it
    env = {"HOME": str(controller_home)}
    had_authorized = container.exec("test", "-e", AUTHORIZED_KEYS, check=False).returncode == 0
    authorized_before = container.exec("cat", AUTHORIZED_KEYS).stdout if had_authorized else ""
    assert container.exec("test", "-e", KNOWN_HOSTS, check=False).returncode == 1, "the image has no ssh_known_hosts"
    container.exec("sh", "-c", f"echo 'AuthorizedKeysFile /zr-run/authorized_keys .ssh/authorized_keys' > {DROP_IN}")
    container.exec("systemctl", "reload", "ssh")
    host_key = container.exec("cat", "/zr-run/ssh_host_ed25519_key.pub").stdout.split()
    try:
        before = listing(container)
        assert container.exec("stat", "-c", "%a", "/etc/ssh").stdout.strip() == "755"

        # Check mode on a host never set up: exit 0, nothing written in the container.
        check = ansible_playbook(PLAY, inventory_text=inv, check=True, env=env)
        assert not warning_lines(check), f"{warning_lines(check)}\n{check}"
        assert listing(container) == before

        first = ansible_playbook(PLAY, inventory_text=inv, env=env)
        assert not warning_lines(first), f"{warning_lines(first)}\n{first}"
        # The key pair is in root's home in the container, its new directory 0700; /etc/ssh keeps 0755.
        modes = container.exec("stat", "-c", "%n %a", f"/root/.ssh/{name}", key, f"{key}.pub", "/etc/ssh", "/root/.ssh").stdout
        assert modes.splitlines() == [f"/root/.ssh/{name} 700", f"{key} 600", f"{key}.pub 644", "/etc/ssh 755", "/root/.ssh 700"]
        assert not any(controller_home.rglob("*id_ed25519*"))
        # The real /etc/ssh/ssh_known_hosts holds exactly the sshd's host key for its address and port.
        assert container.exec("cat", KNOWN_HOSTS).stdout == f"[127.0.0.1]:{container.port} {host_key[0]} {host_key[1]}\n"
        # Root's authorized_keys, read over the container's sshd: what was there plus the key, restricted to its address.
        pub = container.exec("cat", f"{key}.pub").stdout.split()
        after = container.ssh("cat", AUTHORIZED_KEYS).stdout.splitlines()
        assert after == authorized_before.splitlines() + [f'restrict,from="127.0.0.1" {pub[0]} {pub[1]} zfs.replication@{HOST}']
        # The trust works: from inside the container the new key logs in to the container's sshd, host key checked.
        login = container.exec("ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                               "-o", f"UserKnownHostsFile={KNOWN_HOSTS}", "-o", "IdentitiesOnly=yes", "-i", key,
                               "-p", str(container.port), "root@127.0.0.1", "echo", "trusted", check=False, timeout=60)
        assert login.returncode == 0 and login.stdout.strip() == "trusted", login.stderr

        # Idempotent: a second real run changes nothing.
        applied = listing(container)
        second = ansible_playbook(PLAY, inventory_text=inv, env=env)
        assert not warning_lines(second), f"{warning_lines(second)}\n{second}"
        assert second.stats[HOST]["changed"] == 0, changed_tasks(second)
        assert listing(container) == applied
    finally:
        shutil.rmtree(controller_home, ignore_errors=True)
        restore = f"printf %s {shlex.quote(authorized_before)} > {AUTHORIZED_KEYS}" if had_authorized else f"rm -f {AUTHORIZED_KEYS}"
        container.exec("sh", "-c", f"rm -rf /root/.ssh/{name} {KNOWN_HOSTS} {DROP_IN}; {restore}", check=False)
        container.exec("systemctl", "reload", "ssh", check=False)
