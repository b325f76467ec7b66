# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""zfs_replication_info against real listings: its numbers match `zfs get` on both sides."""
from __future__ import annotations

import json
import secrets
import time

import pytest

from helpers import free_port, sandbox_ssh, zfs

pytestmark = pytest.mark.integration

SCHEMA = "auto-%Y-%m-%d_%H-%M"


def guids(dataset: str) -> dict[str, str]:
    out = {}
    for line in zfs("get", "-H", "-p", "-o", "name,value", "-r", "guid", dataset).splitlines():
        name, value = line.split("\t")
        if name.startswith(f"{dataset}@"):
            out[name.split("@", 1)[1]] = value
    return out


def creation(snapshot: str, prop: str = "creation") -> int:
    return int(zfs("get", "-H", "-p", "-o", "value", prop, snapshot).strip())


def test_info_numbers_match_listings(sandbox, ansible_playbook, tmp_path):
    tag = secrets.token_hex(3)
    src, dst = f"{sandbox.src_pool}/info{tag}", f"{sandbox.dst_pool}/info{tag}"
    zfs("create", src)
    zfs("create", f"{src}/child")
    names = ["auto-2026-01-01_00-00", "auto-2026-01-02_00-00", "auto-2026-01-03_00-00", "auto-2026-01-04_00-00"]
    for n in names:
        zfs("snapshot", "-r", f"{src}@{n}")
    zfs("snapshot", f"{src}@manual")  # not selected by the schema
    task = {"name": f"info{tag}", "source_datasets": [src], "target_dataset": dst, "recursive": True,
            "naming_schema": [SCHEMA], "transport": "local", "hold_base": False}
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / f"repl-info{tag}.json").write_text(json.dumps({"result": "failed", "error": "boom"}))
    play = f"""
- name: Info
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Before
      zfs.replication.zfs_replication_info:
        tasks: [{json.dumps(task)}]
        state_dir: {tmp_path / 'state'}
    - name: Replicate the first two
      zfs.replication.zfs_replication: {json.dumps({**task, "snapshots": names[:2]})}
    - name: After
      zfs.replication.zfs_replication_info:
        tasks: [{json.dumps(task)}]
        state_dir: {tmp_path / 'state'}
        lag_warning: 1
        lag_critical: 999999999
"""
    t0 = time.time()
    result = ansible_playbook(play, check=False)
    t1 = time.time()
    before = result.task("Before")["tasks"][0]
    assert before["health"] == "critical" and before["pending"] == 8 and before["lag"] is None
    assert [d["target_exists"] for d in before["datasets"]] == [False, False]

    after = result.task("After")
    assert after["changed"] is False
    info = after["tasks"][0]
    for d in info["datasets"]:
        s, t = guids(d["source"]), guids(d["target"])
        common = max((n for n in t if t[n] == s.get(n)), key=lambda n: creation(f"{d['target']}@{n}", "createtxg"))
        assert d["common"] == common == names[1] and d["common_guid"] == s[common] == t[common]
        assert d["source_newest"] == names[-1] and d["source_snapshots"] == 4
        assert d["target_newest"] == names[1] and d["target_snapshots"] == len(t) == 2
        assert d["pending_snapshots"] == names[2:] and d["pending"] == 2
        # lag = the module's now - the common snapshot's creation; its now lies between the times read around the
        # run (whole seconds: the creation time and the lag are both rounded down)
        created = creation(f"{d['source']}@{common}")
        assert int(t0) - created - 1 <= d["lag"] <= int(t1) - created + 1, (t0, t1, created, d["lag"])
    assert info["pending"] == 4
    assert info["last_run"]["result"] == "failed"
    assert info["health"] == "warning" and any("last run failed: boom" in r for r in info["reasons"])

    # Check mode: same answer, nothing changed.
    checked = ansible_playbook(play, check=True)

    def strip(ds):
        return [{k: v for k, v in d.items() if k != "lag"} for d in ds]

    assert strip(checked.task("After")["tasks"][0]["datasets"]) == strip(info["datasets"])
    assert guids(dst) == {n: guids(src)[n] for n in names[:2]}


def test_an_unreachable_target_is_critical_in_status_and_the_other_tasks_still_report(sandbox, ansible_playbook, tmp_path):
    """A target host that refuses the connection: the status call succeeds, that task is critical with the host, the
    error and its last success in the first reason and nothing guessed about the target; a reachable task in the same
    call reports its real numbers."""
    tag = secrets.token_hex(3)
    src = f"{sandbox.src_pool}/dead{tag}"
    zfs("create", src)
    zfs("snapshot", f"{src}@auto-2026-01-01_00-00")
    port = free_port()
    ssh = sandbox_ssh(sandbox, port)
    dead = {"name": f"dead{tag}", "source_datasets": [src], "target_dataset": f"{sandbox.dst_pool}/dead{tag}",
            "naming_schema": [SCHEMA], "ssh": ssh}
    alive = {"name": f"alive{tag}", "source_datasets": [src], "target_dataset": f"{sandbox.dst_pool}/alive{tag}",
             "naming_schema": [SCHEMA], "transport": "local", "hold_base": False}
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / f"repl-dead{tag}.json").write_text(json.dumps({"result": "ok", "last_success": "2026-01-01T00:05:00Z"}))
    play = f"""
- name: Info
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Status
      zfs.replication.zfs_replication_info:
        tasks: [{json.dumps(dead)}, {json.dumps(alive)}]
        state_dir: {tmp_path / 'state'}
"""
    result = ansible_playbook(play, check=False)
    down, up = result.task("Status")["tasks"]
    assert down["reachable"] is False and down["health"] == "critical", down
    assert down["reasons"][0].startswith(f"target root@127.0.0.1:{port} unreachable: "), down["reasons"]
    assert "last successful run: 2026-01-01T00:05:00Z" in down["reasons"][0], down["reasons"]
    assert down["datasets"] == [] and down["pending"] is None and down["lag"] is None, down
    assert up["reachable"] is True and up["pending"] == 1 and up["datasets"][0]["source_snapshots"] == 1, up
    assert up["health"] == "critical" and up["reasons"][0].endswith("nothing replicated yet (1 snapshots pending)"), up
