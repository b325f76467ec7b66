# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""target_access append_only through playbooks/site.yml: the push's retention runs on its target.

Two inventory hosts on this machine (local connections, no systemd as PID 1: scheduler_systemd=false): "fileserver"
declares an append-only push with retention_policy custom to "backup" (its ssh.host/port are backup's
zfs_replication_ssh_address/port); backup declares nothing. site.yml gives backup the role with a pruning task derived
from the push (the receiver installed, the task's config and timer unit written) and, asked to run it now, it prunes the
replica on zfs-fuse: expired snapshots of the push's schema go; held ones, the newest of each dataset and other names
stay. fileserver's push waits for its timer and changes nothing on the target.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import pytest

from helpers import destroy_retrying, scheduler_vars, snapshots_with_guids, zfs

pytestmark = pytest.mark.integration

SITE = "- name: site\n  ansible.builtin.import_playbook: zfs.replication.site\n"


def test_the_target_of_an_append_only_push_prunes_its_replica_itself(sandbox, ansible_playbook, tmp_path):
    tag = secrets.token_hex(3)
    src, dst = f"{sandbox.src_pool}/ao{tag}", f"{sandbox.dst_pool}/ao{tag}"
    replica = f"{dst}/data"
    for ds in (src, dst, replica, f"{replica}/child"):
        zfs("create", ds)
    names = ["auto-2026-11-20_08-00", "auto-2026-11-21_08-00", "manual-keep", "auto-2026-11-22_08-00", "auto-2026-11-23_08-00"]
    for name in names:
        zfs("snapshot", f"{replica}@{name}")
    zfs("snapshot", f"{replica}/child@auto-2026-11-20_08-00")
    hold = f"zfs.replication:push{tag}"
    zfs("hold", hold, f"{replica}@auto-2026-11-21_08-00")
    push = {"name": f"push{tag}", "source_datasets": [src], "target_dataset": replica, "naming_schema": ["auto-%Y-%m-%d_%H-%M"],
            "schedule": "hourly", "target_access": "append_only", "retention_policy": "custom", "lifetime_value": 1,
            "lifetime_unit": "day",
            "ssh": {"host": "127.0.0.1", "port": sandbox.sshd.port, "user": "root", "private_key_file": str(sandbox.sshd.private_key),
                    "known_hosts_file": str(sandbox.sshd.known_hosts)}}
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, "zfs_replication_ssh_trust": False}
    prune = f"fileserver-push{tag}-prune"
    hosts = {
        "fileserver": {**local, **scheduler_vars(tmp_path / "fileserver"), "zfs_replication_replication_tasks": [push]},
        "backup": {**local, **scheduler_vars(tmp_path / "backup"), "zfs_replication_ssh_address": "127.0.0.1",
                   "zfs_replication_ssh_port": sandbox.sshd.port, "zfs_replication_run_now": [prune]},
    }
    for host in hosts:
        for sub in ("bin", "units"):  # /usr/local/sbin and /etc/systemd/system exist on a real host
            (tmp_path / host / sub).mkdir(parents=True)
    before_src = snapshots_with_guids(src)
    try:
        ansible_playbook(SITE, inventory_text=json.dumps({"all": {"hosts": hosts}}))

        config = json.loads((tmp_path / "backup" / "etc" / f"snap-{prune}.json").read_text())
        assert config["params"] == {"name": prune, "dataset": replica, "recursive": True, "naming_schema": "auto-%Y-%m-%d_%H-%M",
                                    "take_snapshots": False, "schedule": "hourly", "lifetime_value": 1, "lifetime_unit": "day"}
        timer = (tmp_path / "backup" / "units" / f"zfs-replication-snap-{prune}.timer").read_text()
        assert "OnCalendar=" in timer
        # The receiver the role installed there, run as sshd runs a forced command: it answers and refuses, and logs.
        receiver = tmp_path / "backup" / "bin" / "zfs-replication-receive"
        args = [str(receiver), "--root", replica, "--tag", hold]
        which = subprocess.run(args, env={**os.environ, "SSH_ORIGINAL_COMMAND": "zfs-replication-which pv"}, capture_output=True,
                               text=True, check=False)
        assert which.returncode == 0, which
        refused = subprocess.run(args, env={**os.environ, "SSH_ORIGINAL_COMMAND": f"zfs destroy -r {replica}"}, capture_output=True,
                                 text=True, check=False)
        assert refused.returncode == 126 and "refused: zfs destroy" in refused.stderr, refused
        assert f"refused 'zfs destroy -r {replica}'" in (tmp_path / "backup" / "log" / "receive.log").read_text()
        assert not (tmp_path / "fileserver" / "etc" / f"snap-{prune}.json").exists()

        left = sorted(snapshots_with_guids(replica))
        assert left == sorted(["@auto-2026-11-21_08-00", "@manual-keep", "@auto-2026-11-23_08-00",
                               "/child@auto-2026-11-20_08-00"]), left
        state = json.loads((tmp_path / "backup" / "state" / f"snap-{prune}.json").read_text())
        assert state["result"] == "ok", state
        assert snapshots_with_guids(src) == before_src  # the push waits for its timer
    finally:
        zfs("release", hold, f"{replica}@auto-2026-11-21_08-00")
        for ds in (src, dst):
            destroy_retrying(ds)
