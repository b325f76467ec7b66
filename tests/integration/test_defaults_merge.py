# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The scheduler role and the playbooks merge a saved configuration into a task the same way (recursively).

One real ansible-playbook run: the playbooks' declaration (playbooks/tasks/declared.yml, what site.yml and
status.yml run the modules with) and the role applied to the same tasks and defaults (the configs its timers read).
"""
from __future__ import annotations

import json
from pathlib import Path

from helpers import scheduler_vars

REPO = Path(__file__).resolve().parents[2]

SNAPSHOT_DEFAULTS = {"naming_schema": "auto-%Y-%m-%d_%H-%M", "schedule": "daily", "lifetime_value": 2, "lifetime_unit": "week"}
REPLICATION_DEFAULTS = {
    "recursive": True,
    "exclude": ["tank/data/tmp"],
    "naming_schema": ["auto-%Y-%m-%d_%H-%M"],
    "ssh": {"user": "zrepl", "port": 2222, "private_key_file": "/root/.ssh/replication_ed25519",
            "known_hosts_file": "/etc/zfs-replication/known_hosts", "cipher": "fast"},
    "properties_override": {"compression": "lz4", "atime": "off"},
}
SNAPSHOT_TASKS = [{"name": "data", "dataset": "tank/data", "recursive": True, "lifetime_unit": "day"}]
REPLICATION_TASKS = [
    {"name": "offsite", "source_datasets": ["tank/data"], "target_dataset": "backup/data",
     "periodic_snapshot_tasks": ["data"], "ssh": {"host": "backup.example.net"},
     "exclude": ["tank/data/scratch"], "properties_override": {"atime": "on"}},
    {"name": "second", "source_datasets": ["tank/data"], "target_dataset": "other/data", "periodic_snapshot_tasks": ["data"],
     "ssh": {"host": "other.example.net", "user": "backup"}, "schedule": "hourly"},
]


def test_role_and_playbooks_merge_the_same_way(ansible_playbook, tmp_path):
    (tmp_path / "units").mkdir()
    (tmp_path / "bin").mkdir()
    planned = tmp_path / "planned.json"
    role_vars = scheduler_vars(tmp_path)
    extravars = {
        **role_vars,
        "zfs_replication_snapshot_tasks": SNAPSHOT_TASKS,
        "zfs_replication_replication_tasks": REPLICATION_TASKS,
        "zfs_replication_snapshot_task_defaults": SNAPSHOT_DEFAULTS,
        "zfs_replication_replication_task_defaults": REPLICATION_DEFAULTS,
    }
    play = f"""
- name: The playbooks' declaration and the role, on the same tasks
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Read the declaration as the playbooks do
      ansible.builtin.import_tasks: {REPO / 'playbooks' / 'tasks' / 'declared.yml'}

    - name: Keep the playbooks' plan
      ansible.builtin.copy:
        content: "{{{{ zr_planned | map(attribute='config') | list | to_json }}}}"
        dest: {planned}
        mode: "0600"

    - name: Apply the role to the declared tasks and the defaults, unmerged
      ansible.builtin.include_role:
        name: zfs.replication.scheduler
      vars:
        scheduler_snapshot_tasks: "{{{{ zfs_replication_snapshot_tasks }}}}"
        scheduler_replication_tasks: "{{{{ zfs_replication_replication_tasks }}}}"
        scheduler_snapshot_task_defaults: "{{{{ zfs_replication_snapshot_task_defaults }}}}"
        scheduler_replication_task_defaults: "{{{{ zfs_replication_replication_task_defaults }}}}"
"""
    ansible_playbook(play, extravars=extravars)
    from_playbooks = {f"{'snap' if c['kind'] == 'snapshot' else 'repl'}-{c['name']}": c for c in json.loads(planned.read_text())}
    from_role = {p.stem: json.loads(p.read_text()) for p in sorted((tmp_path / "etc").glob("*.json"))}
    assert sorted(from_role) == sorted(from_playbooks) == ["repl-offsite", "repl-second", "snap-data"]
    assert from_role == from_playbooks

    offsite = from_role["repl-offsite"]["params"]
    # recursive: the task's ssh.host joins the defaults' user, port, key and known_hosts
    assert offsite["ssh"] == {"host": "backup.example.net", "user": "zrepl", "port": 2222,
                              "private_key_file": "/root/.ssh/replication_ed25519",
                              "known_hosts_file": "/etc/zfs-replication/known_hosts", "cipher": "fast"}
    assert offsite["properties_override"] == {"compression": "lz4", "atime": "on"}
    assert offsite["exclude"] == ["tank/data/scratch"]  # lists replace the default whole
    assert offsite["recursive"] is True and offsite["naming_schema"] == ["auto-%Y-%m-%d_%H-%M"]
    assert from_role["repl-second"]["params"]["ssh"]["user"] == "backup"
    assert from_role["repl-second"]["params"]["ssh"]["port"] == 2222
    assert from_role["repl-second"]["params"]["exclude"] == ["tank/data/tmp"]
    assert (from_role["snap-data"]["params"]["lifetime_value"], from_role["snap-data"]["params"]["lifetime_unit"]) == (2, "day")
