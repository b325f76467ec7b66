# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One lag: zfs_replication_info and the runner's metrics report the same recovery point for the same task.

A real replication on zfs-fuse, with snapshot names whose time is months away from when they were taken (the
names never date a snapshot). The metrics count the lag up to the run's recorded end, the info module up to its
recorded check: the two lags differ by exactly the seconds between those two recorded times.
"""
from __future__ import annotations

import json
import re
import secrets
import time
from datetime import datetime

import pytest

from helpers import zfs

pytestmark = pytest.mark.integration

SCHEMA = "auto-%Y-%m-%d_%H-%M"


def creation(snapshot: str) -> int:
    return int(zfs("get", "-H", "-p", "-o", "value", "creation", snapshot).strip())


def metric(text: str, name: str) -> float:
    found = [float(m.group(1)) for m in re.finditer(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.M)]
    assert len(found) == 1, f"{name} in\n{text}"
    return found[0]


def epoch(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp())


def test_info_and_metrics_report_the_same_lag(sandbox, ansible_playbook, tmp_path):
    tag = secrets.token_hex(3)
    name = f"lag{tag}"
    src, dst = f"{sandbox.src_pool}/lag{tag}", f"{sandbox.dst_pool}/lag{tag}"
    zfs("create", src)
    zfs("create", f"{src}/child")
    zfs("snapshot", "-r", f"{src}@auto-2026-01-01_00-00")
    time.sleep(1.2)  # creation has whole seconds: the parent's later snapshot must be dated later
    zfs("snapshot", f"{src}@auto-2026-01-02_00-00")  # the parent only: the child stays at the first
    task = {"name": name, "source_datasets": [src], "target_dataset": dst, "recursive": True,
            "naming_schema": [SCHEMA], "transport": "local", "hold_base": False}
    dirs = {"state_dir": str(tmp_path / "state"), "log_dir": str(tmp_path / "log")}
    play = f"""
- name: Lag
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Replicate
      zfs.replication.zfs_replication: {json.dumps({**task, **dirs, "metrics_dir": str(tmp_path / "metrics")})}
    - name: Info
      zfs.replication.zfs_replication_info:
        tasks: [{json.dumps(task)}]
        state_dir: {dirs['state_dir']}
"""
    result = ansible_playbook(play)
    assert result.task("Replicate")["changed"] is True
    info = result.task("Info")["tasks"][0]
    metrics = (tmp_path / "metrics" / f"zfs_replication_repl_lag{tag}.prom").read_text()

    # The recovery point: the newest snapshot on each target by creation; the task's is the staler dataset's.
    parent = creation(f"{dst}@auto-2026-01-02_00-00")
    child = creation(f"{dst}/child@auto-2026-01-01_00-00")
    assert parent == creation(f"{src}@auto-2026-01-02_00-00") and child < parent  # received snapshots keep the creation
    by_target = {d["target"]: d for d in info["datasets"]}
    assert epoch(by_target[dst]["recovery_point"]) == parent and by_target[dst]["target_newest"] == "auto-2026-01-02_00-00"
    assert epoch(by_target[f"{dst}/child"]["recovery_point"]) == child
    assert epoch(info["recovery_point"]) == child
    assert metric(metrics, "zfs_replication_newest_replicated_timestamp_seconds") == child

    # Each lag counts from that point to its own recorded time; so they differ by the seconds between the two.
    ended = metric(metrics, "zfs_replication_last_run_timestamp_seconds")
    assert ended == epoch(info["last_run"]["last_end"])
    checked = epoch(info["checked_at"])
    metrics_lag = metric(metrics, "zfs_replication_lag_seconds")
    assert metrics_lag == ended - child
    assert info["lag"] == checked - child
    assert info["lag"] - metrics_lag == checked - ended
    assert info["lag"] == max(d["lag"] for d in info["datasets"])
