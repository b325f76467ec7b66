# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""site.yml runs a task the way its timer does, and only the tasks that are to run now.

Real ansible-playbook runs of playbooks/site.yml on zfs-fuse pools (no systemd as PID 1 here: scheduler_systemd=false,
so the role runs the unit's own command line, the launcher). A task without a schedule runs at the first apply; a
task with a schedule (and the replication that runs after it) waits for its timer unless run now is asked; every run
leaves the task's state file, log and metrics, and takes the task's lock (a run in progress, here this test holding the
lock with the runner's own TaskLock, makes site.yml's run skip and send nothing).
"""
from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path

import pytest

from ansible_collections.zfs.replication.plugins.module_utils._runner import TaskLock
from helpers import destroy_retrying, scheduler_vars, snapshots_with_guids, zfs

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCHEMA = "auto-%Y-%m-%d_%H-%M"
SITE = f"- name: site\n  ansible.builtin.import_playbook: {REPO / 'playbooks' / 'site.yml'}\n"
RUN = "zfs.replication.scheduler : Run tasks now"


@pytest.fixture
def declared(sandbox, tmp_path):
    tag = secrets.token_hex(3)
    src, once_src, dst = f"{sandbox.src_pool}/sr{tag}", f"{sandbox.src_pool}/so{tag}", f"{sandbox.dst_pool}/sr{tag}"
    for ds in (src, f"{src}/child", once_src, dst):
        zfs("create", ds)
    zfs("snapshot", f"{once_src}@manual-2026-12-01_10-00")
    (tmp_path / "units").mkdir()
    (tmp_path / "bin").mkdir()
    dirs = {"state": tmp_path / "state", "log": tmp_path / "log", "metrics": tmp_path / "metrics"}
    host = {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "zfs_replication_ssh_trust": False, **scheduler_vars(tmp_path), "scheduler_metrics_dir": str(dirs["metrics"]),
        "zfs_replication_snapshot_tasks": [{"name": f"hourly{tag}", "dataset": src, "recursive": True, "naming_schema": SCHEMA,
                                            "schedule": "hourly", "lifetime_value": 1, "lifetime_unit": "week"}],
        "zfs_replication_replication_tasks": [
            # runs after its (scheduled) snapshot task: it waits with it
            {"name": f"after{tag}", "source_datasets": [src], "target_dataset": f"{dst}/data", "transport": "local",
             "recursive": True, "periodic_snapshot_tasks": [f"hourly{tag}"], "hold_base": False},
            # no schedule, no snapshot task: TrueNAS's "Run Once", it runs when applied
            {"name": f"once{tag}", "source_datasets": [once_src], "target_dataset": f"{dst}/once", "transport": "local",
             "naming_schema": ["manual-%Y-%m-%d_%H-%M"], "hold_base": False},
        ],
    }
    yield {"tag": tag, "src": src, "once_src": once_src, "dst": dst, "dirs": dirs,
           "inventory": lambda **more: json.dumps({"all": {"hosts": {"fileserver": {**host, **more}}}})}
    for ds in (src, once_src, dst):
        destroy_retrying(ds)


def state(d: dict, task_id: str) -> dict | None:
    path = d["dirs"]["state"] / f"{task_id}.json"
    return json.loads(path.read_text()) if path.exists() else None


def log_lines(d: dict, task_id: str) -> list[str]:
    path = d["dirs"]["log"] / f"{task_id}.log"
    return [line.split(": ", 1)[1] for line in path.read_text().splitlines()] if path.exists() else []


def reported(result) -> dict[str, dict]:
    """What the role's "Run tasks now" reported, by task id."""
    return {item["item"]["item"]["id"]: item for item in result.task(RUN, "fileserver")["results"]}


def test_site_runs_unscheduled_tasks_through_the_runner_and_scheduled_ones_when_asked(declared, ansible_playbook):
    d, tag = declared, declared["tag"]
    once, after, snap = f"repl-once{tag}", f"repl-after{tag}", f"snap-hourly{tag}"

    first = ansible_playbook(SITE, inventory_text=d["inventory"]())
    # The task without a schedule ran, through the runner: its state, log and metrics, and the snapshot on the target.
    assert snapshots_with_guids(f"{d['dst']}/once") == snapshots_with_guids(d["once_src"])
    run = state(d, once)
    assert (run["result"], run["snapshots_sent"], run["changed"]) == ("ok", 1, True)
    assert run["config"].endswith(f"/etc/{once}.json")  # the config file the timer's unit reads
    assert log_lines(d, once) == [f"replication task once{tag}: start", *log_lines(d, once)[1:-1], f"replication task once{tag}: ok"]
    assert (d["dirs"]["metrics"] / f"zfs_replication_repl_once{tag}.prom").exists()
    assert set(reported(first)) == {once} and reported(first)[once]["changed"] is True
    # The scheduled snapshot task and the replication that runs after it wait for the timer: nothing taken, no history.
    assert snapshots_with_guids(d["src"]) == {} and state(d, snap) is None and state(d, after) is None
    assert (d["dirs"]["log"] / f"{snap}.log").exists() is False

    # A run in progress (the lock held) is honoured: site.yml's run waits lock_wait, then skips and sends nothing.
    zfs("snapshot", f"{d['once_src']}@manual-2026-12-02_10-00")
    with TaskLock(d["dirs"]["state"] / f"{once}.lock") as lock:
        assert lock.acquire()
        busy = ansible_playbook(SITE, inventory_text=d["inventory"](zfs_replication_lock_wait=0), expect_rc=2)
    assert "@manual-2026-12-02_10-00" not in snapshots_with_guids(f"{d['dst']}/once")
    assert state(d, once) == run  # the run in progress records its own result
    assert log_lines(d, once)[-1].startswith(f"replication task once{tag}: skipped: another run of this task holds ")
    busy_report = reported(busy)[once]
    assert busy_report["failed_when_result"] is True and busy_report["changed"] is False
    assert busy_report["msg"] == (f"{once}: did not run: another run of the task held its lock longer than 0s (scheduler_run_lock_wait); "
                                  "that run records its own result (see the log)")

    # Run now asked: the scheduled snapshot task takes its slot, the replication after it sends it, the lock is free again.
    now = ansible_playbook(SITE, inventory_text=d["inventory"](zfs_replication_run_now=True))
    taken = snapshots_with_guids(d["src"])
    assert len(taken) == 2 and snapshots_with_guids(f"{d['dst']}/data") == taken
    assert state(d, snap)["result"] == "ok" and state(d, snap)["details"]["snapshot_name"] in {k.split("@")[1] for k in taken}
    assert (state(d, after)["result"], state(d, after)["snapshots_sent"]) == ("ok", 2)
    assert "@manual-2026-12-02_10-00" in snapshots_with_guids(f"{d['dst']}/once")
    assert set(reported(now)) == {snap, after, once} and all(r["changed"] for r in reported(now).values())
    for task_id in (snap, after):
        assert log_lines(d, task_id)[-1].endswith(": ok") and (d["dirs"]["metrics"] / f"zfs_replication_{task_id.replace('-', '_')}.prom").exists()


def test_site_check_mode_plans_only_what_runs_now_and_writes_no_history(declared, ansible_playbook):
    d, tag = declared, declared["tag"]
    check = ansible_playbook(SITE, inventory_text=d["inventory"](), check=True)
    planned = [i["item"]["name"] for i in check.task("Run the replication tasks", "fileserver")["results"] if not i.get("skipped")]
    assert planned == [f"once{tag}"]
    assert not d["dirs"]["state"].exists() or not any(d["dirs"]["state"].glob("*.json"))
    assert zfs("list", "-H", "-o", "name", "-r", d["dst"]).split() == [d["dst"]]
