# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""hold_pending_snapshots: one snapshot task feeds two replication tasks over ssh; one target is unreachable for
several hourly cycles, then comes back.

Real parts: zfs-fuse pools, the loopback sshd with a verified host key (the down target's ssh port points at a closed
loopback port), and the runner's own run of each task (lock, state file, metrics), as a timer runs it. Time is driven
through the engines' ``now`` and the runner's clock (snapshot names come from the schedule slot of that time), so six
hours pass without sleeping. Asserts real outcomes: snapshot names and guids on the source and both targets, the
states the runs recorded, the metrics file.
"""
from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ansible_collections.zfs.replication.plugins.module_utils._pending import status_reasons
from ansible_collections.zfs.replication.plugins.module_utils._replication import run_replication
from ansible_collections.zfs.replication.plugins.module_utils._runner import RunOptions, TaskConfig, execute_task
from ansible_collections.zfs.replication.plugins.module_utils._snapshot_task import run_snapshot_task
from helpers import destroy_retrying, free_port, sandbox_ssh, snapshots_with_guids, zfs

pytestmark = pytest.mark.integration

SCHEMA = "auto-%Y-%m-%d_%H-%M"
START = datetime(2030, 3, 1, 10, 0, tzinfo=timezone.utc)


def name_at(when: datetime) -> str:
    return when.strftime(SCHEMA)


class Site:
    """One source host: a snapshot task and two push replication tasks, run by the runner at a given time."""

    def __init__(self, sandbox, tmp_path: Path, hold: bool) -> None:
        tag = secrets.token_hex(3)
        self.sandbox = sandbox
        self.src = f"{sandbox.src_pool}/hp{tag}"
        self.parents = [f"{sandbox.dst_pool}/hp{tag}a", f"{sandbox.dst_pool}/hp{tag}b"]
        self.targets = [f"{p}/data" for p in self.parents]
        zfs("create", self.src)
        zfs("create", f"{self.src}/child")
        for p in self.parents:
            zfs("create", p)
        self.opts = RunOptions(state_dir=str(tmp_path / "state"), log_dir=str(tmp_path / "log"), metrics_dir=str(tmp_path / "metrics"))
        self.snap = TaskConfig(kind="snapshot", name=f"hourly{tag}", params={
            "dataset": self.src, "recursive": True, "naming_schema": SCHEMA, "schedule": "hourly", "timezone": "UTC",
            "lifetime_value": 2, "lifetime_unit": "hour", "hold_pending_snapshots": hold, "pending_lag_critical": 3 * 3600})
        custom = {"retention_policy": "custom", "lifetime_value": 2, "lifetime_unit": "hour"}
        self.repl = [self._replication(f"up{tag}", self.targets[0], custom), self._replication(f"down{tag}", self.targets[1], {})]

    def _replication(self, name: str, target: str, more: dict) -> TaskConfig:
        ssh = sandbox_ssh(self.sandbox)
        return TaskConfig(kind="replication", name=name, params={
            "name": name, "source_datasets": [self.src], "target_dataset": target, "recursive": True, "naming_schema": [SCHEMA],
            "timezone": "UTC", "hold_base": False, "retries": 0, "ssh": ssh, **more})

    def set_down(self, down: bool) -> None:
        self.repl[1].params["ssh"]["port"] = free_port() if down else self.sandbox.sshd.port

    def run(self, config: TaskConfig, now: datetime):
        engines = {
            "snapshot": lambda p, check, log: run_snapshot_task(p, check_mode=check, log=log, now=now),
            "replication": lambda p, check, log: run_replication(p, check_mode=check, log=log, now=now),
        }
        return execute_task(config, self.opts, engines=engines, clock=lambda: now)

    def state(self, config: TaskConfig) -> dict:
        return json.loads(Path(self.opts.state_dir, f"{config.task_id}.json").read_text())

    def cycle(self, now: datetime) -> list:
        """What the timers do each hour: the snapshot task, then the replication tasks it feeds."""
        return [self.run(self.snap, now)] + [self.run(r, now) for r in self.repl]

    def names(self, dataset: str) -> list[str]:
        return sorted({k.split("@", 1)[1] for k in snapshots_with_guids(dataset) if k.startswith("@")})

    def cleanup(self) -> None:
        for ds in (self.src, *self.parents):
            destroy_retrying(ds)


@pytest.fixture
def site_factory(sandbox, tmp_path):
    made: list[Site] = []

    def make(hold: bool) -> Site:
        made.append(Site(sandbox, tmp_path / f"s{len(made)}", hold))
        return made[-1]

    yield make
    for site in made:
        site.cleanup()


def hours(n: int) -> datetime:
    return START + timedelta(hours=n)


def assert_same_guids(src: str, dst: str) -> None:
    """Every snapshot on the target (the dataset and its child) has the source's guid."""
    source, target = snapshots_with_guids(src), snapshots_with_guids(dst)
    assert target, f"{dst} has no snapshots"
    assert {k: source.get(k) for k in target} == target


def test_a_down_target_keeps_what_it_needs_then_catches_up_incrementally_and_pruning_resumes(site_factory):
    site = site_factory(hold=True)
    snap_task, up, down = site.snap, site.repl[0], site.repl[1]
    runs = site.cycle(hours(0))
    assert [r.state["result"] for r in runs] == ["ok", "ok", "ok"]
    assert site.names(site.targets[1]) == [name_at(hours(0))]

    site.set_down(True)
    for h in range(1, 7):  # 11:00 .. 16:00: the down target misses six cycles
        snap_run, up_run, down_run = site.cycle(hours(h))
        assert snap_run.state["result"] == "ok" and up_run.state["result"] == "ok"
        assert down_run.state["result"] == "failed" and "127.0.0.1" in down_run.state["error"]
        # The failed runs leave the last known truth: the down target has 10:00.
        assert site.state(down)["replicated"]["datasets"][site.src]["snapshot"] == name_at(hours(0))
        # The source keeps everything from the down target's base on, expired or not (lifetime 2 hours).
        assert site.names(site.src) == [name_at(hours(k)) for k in range(0, h + 1)]
        assert site.names(f"{site.src}/child") == site.names(site.src)
        # The up target gets every snapshot and prunes its own side by its lifetime (2 hours): retention proceeds there.
        assert site.names(site.targets[0]) == [name_at(hours(k)) for k in range(max(0, h - 2), h + 1)]
        assert_same_guids(site.src, site.targets[0])
        pending = {p["replication"]: p for p in snap_run.result.as_dict()["pending"]}
        assert pending[up.name]["pending"] == 0 and pending[up.name]["health"] == "ok"
        # The dataset and its child, each from 11:00 to the last cycle (the slot just taken is listed after the run).
        assert pending[down.name]["pending"] == 2 * (h - 1)
        assert pending[down.name]["health"] == ("critical" if h - 1 > 3 else "ok")
        kept = {k["snapshot"]: k["reason"] for k in snap_run.result.as_dict()["kept"]}
        if h >= 3:  # 10:00 expired at 12:00 and is still there, kept as the down target's base
            assert f"incremental base of replication task {down.name}" in kept[f"{site.src}@{name_at(hours(0))}"]
    assert site.names(site.targets[1]) == [name_at(hours(0))]

    # Dead target seen: critical in the snapshot task's state and metrics and in the replication task's status.
    assert [p["health"] for p in site.state(snap_task)["details"]["pending"] if p["replication"] == down.name] == ["critical"]
    metrics = Path(site.opts.metrics_dir, f"zfs_replication_{snap_task.task_id.replace('-', '_')}.prom").read_text()
    assert f'zfs_replication_pending_critical{{task="{snap_task.name}",kind="snapshot",replication="{down.name}"' in metrics
    critical_line = next(line for line in metrics.splitlines()
                         if line.startswith("zfs_replication_pending_critical") and f'replication="{down.name}"' in line)
    assert critical_line.endswith(" 1")
    up_line = next(line for line in metrics.splitlines()
                   if line.startswith("zfs_replication_pending_critical") and f'replication="{up.name}"' in line)
    assert up_line.endswith(" 0")
    assert [h for h, _why in status_reasons(site.opts.state_dir, down.name)] == ["critical"]
    assert status_reasons(site.opts.state_dir, up.name) == []

    # The target comes back: one incremental run from the guid-checked base, 10:00, sends what it missed.
    site.set_down(False)
    source_before = snapshots_with_guids(site.src)
    back = site.run(down, hours(6))
    assert back.state["result"] == "ok", back.state["error"]
    for target in (site.targets[1], f"{site.targets[1]}/child"):
        item = back.state["details"]["datasets"][target]
        assert item["action"] == "incremental" and item["base"] == name_at(hours(0))
        assert item["snapshots_sent"] == [name_at(hours(k)) for k in range(1, 7)]
    assert site.names(site.targets[1]) == [name_at(hours(k)) for k in range(0, 7)]
    assert_same_guids(site.src, site.targets[1])
    # The catch-up sent what the source had kept for it: the guids are those of the snapshots kept through the outage.
    replica = snapshots_with_guids(site.targets[1])
    assert replica == {k: source_before.get(k) for k in replica}
    assert site.state(down)["replicated"]["datasets"][site.src]["snapshot"] == name_at(hours(6))

    # Next cycle: nothing is kept longer than its lifetime now (2 hours: 15:00, 16:00, 17:00 stay).
    site.cycle(hours(7))
    assert site.names(site.src) == [name_at(hours(k)) for k in (5, 6, 7)]
    assert site.names(f"{site.src}/child") == site.names(site.src)
    assert [p["health"] for p in site.state(snap_task)["details"]["pending"]] == ["ok", "ok"]
    assert status_reasons(site.opts.state_dir, down.name) == []
    source = snapshots_with_guids(site.src)
    for target in site.targets:  # what both sides have is the same snapshot (the down target keeps the rest: retention none)
        replica = snapshots_with_guids(target)
        assert {k: replica[k] for k in source if k in replica} == {k: source[k] for k in source if k in replica}
        assert f"@{name_at(hours(6))}" in replica and f"/child@{name_at(hours(6))}" in replica


def test_hold_pending_snapshots_false_prunes_by_lifetime_alone(site_factory):
    site = site_factory(hold=False)
    down = site.repl[1]
    site.cycle(hours(0))
    site.set_down(True)
    for h in range(1, 5):
        snap_run, _up, down_run = site.cycle(hours(h))
        assert down_run.state["result"] == "failed"
        assert snap_run.result.as_dict()["pending"] == []
        # Plain lifetimes: a snapshot that expired strictly before now is gone, the down target's base with it.
        assert site.names(site.src) == [name_at(hours(k)) for k in range(max(0, h - 2), h + 1)]
    assert site.state(down)["replicated"]["datasets"][site.src]["snapshot"] == name_at(hours(0))
    assert name_at(hours(0)) not in site.names(site.src)
