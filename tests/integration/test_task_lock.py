# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One task, one lock, one history: module runs (ansible-playbook) and timer runs (the runner) of the same task.

Real ansible-playbook runs of zfs_replication and zfs_snapshot_task on zfs-fuse pools, the runner's main() for the
timer's run, and the lock taken by this test process with the runner's own TaskLock (what a timer run in progress
holds). Checks the real outcome: snapshot names and guids on both sides, the state, log and metrics files.
"""
from __future__ import annotations

import io
import json
import os
import secrets
import sys
from pathlib import Path

import pytest

from ansible_collections.zfs.replication.plugins.module_utils._runner import TaskLock, main
from helpers import destroy_retrying, scheduler_vars, snapshots_with_guids, zfs

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCHEMA = "auto-%Y-%m-%d_%H-%M"


@pytest.fixture
def task(sandbox, tmp_path):
    """A source with a child, a target path, a unique task name and its own state/log/metrics directories."""
    tag = secrets.token_hex(3)
    src, dst_parent = f"{sandbox.src_pool}/lk{tag}", f"{sandbox.dst_pool}/lk{tag}"
    zfs("create", src)
    zfs("create", f"{src}/child")
    zfs("create", dst_parent)
    dirs = {"state_dir": str(tmp_path / "state"), "log_dir": str(tmp_path / "log"), "metrics_dir": str(tmp_path / "metrics")}
    params = {"name": f"lock{tag}", "source_datasets": [src], "target_dataset": f"{dst_parent}/data", "transport": "local",
              "recursive": True, "naming_schema": [SCHEMA], "hold_base": False}
    yield {"src": src, "dst": f"{dst_parent}/data", "name": f"lock{tag}", "params": params, "dirs": dirs, "tmp": tmp_path}
    for ds in (src, dst_parent):
        destroy_retrying(ds)


def play(*tasks: dict) -> str:
    return json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": list(tasks)}])


def replication(task: dict, **more) -> dict:
    return {"name": "replicate", "zfs.replication.zfs_replication": {**task["params"], **task["dirs"], **more}}


def state_file(task: dict, kind: str = "repl") -> Path:
    return Path(task["dirs"]["state_dir"], f"{kind}-{task['name']}.json")


def log_lines(task: dict, kind: str = "repl") -> list[str]:
    """The task's log lines without their time, task id and pid prefix."""
    text = Path(task["dirs"]["log_dir"], f"{kind}-{task['name']}.log").read_text()
    return [line.split(": ", 1)[1] for line in text.splitlines()]


def test_module_runs_fail_while_the_task_is_locked_and_change_nothing(task, ansible_playbook):
    src, dst, name = task["src"], task["dst"], task["name"]
    zfs("snapshot", "-r", f"{src}@auto-2026-11-28_10-00")
    ansible_playbook(play(replication(task)))
    recorded = state_file(task).read_text()
    zfs("snapshot", "-r", f"{src}@auto-2026-11-28_11-00")
    src_before, dst_before = snapshots_with_guids(src), snapshots_with_guids(dst)
    assert sorted(dst_before) == ["/child@auto-2026-11-28_10-00", "@auto-2026-11-28_10-00"]

    snapshot_task = {"name": "snapshot", "ignore_errors": True, "zfs.replication.zfs_snapshot_task": {
        "name": name, "dataset": src, "recursive": True, "naming_schema": SCHEMA, "schedule": "hourly", **task["dirs"], "lock_wait": 1}}
    repl_lock = Path(task["dirs"]["state_dir"], f"repl-{name}.lock")
    snap_lock = Path(task["dirs"]["state_dir"], f"snap-{name}.lock")
    with TaskLock(repl_lock) as held_repl, TaskLock(snap_lock) as held_snap:
        assert held_repl.acquire() and held_snap.acquire()
        run = ansible_playbook(play({**replication(task, lock_wait=1), "ignore_errors": True}, snapshot_task))

    for label, lock_file in (("replicate", repl_lock), ("snapshot", snap_lock)):
        result = run.task(label)
        assert result["failed"] and not result["changed"], result
        assert f"another run of this task holds {lock_file} (pid {os.getpid()}); waited 1s (lock_wait)" in result["msg"], result["msg"]
        assert (result["lock_file"], result["lock_holder"]) == (str(lock_file), os.getpid())
    # Nothing changed: no new snapshot on the source, nothing sent, the state file is still the first run's.
    assert snapshots_with_guids(src) == src_before
    assert snapshots_with_guids(dst) == dst_before
    assert state_file(task).read_text() == recorded
    assert not state_file(task, "snap").exists()
    assert log_lines(task)[-1].startswith(f"replication task {name}: FAILED: another run of this task holds {repl_lock}")

    # Once the lock is free the same module run goes through.
    ansible_playbook(play(replication(task, lock_wait=1)))
    assert snapshots_with_guids(dst) == src_before


def test_module_and_timer_runs_share_log_state_and_metrics(task, ansible_playbook):
    src, dst, name, dirs = task["src"], task["dst"], task["name"], task["dirs"]
    zfs("snapshot", "-r", f"{src}@auto-2026-11-28_10-00")
    zfs("snapshot", "-r", f"{src}@auto-2026-11-28_11-00")
    module = ansible_playbook(play(replication(task))).task("replicate")
    assert module["changed"] and module["snapshots_sent"] == 4

    state = json.loads(state_file(task).read_text())
    assert (state["result"], state["id"], state["error"]) == ("ok", f"repl-{name}", None)
    assert state["snapshots_sent"] == module["snapshots_sent"] and state["last_success"] == state["last_end"]
    assert "running" not in state
    lines = log_lines(task)
    assert lines[0] == f"replication task {name}: start" and lines[-1] == f"replication task {name}: ok"
    assert [line for line in module["log"] if line in lines] == module["log"]  # the module's lines are the log's lines
    metrics = Path(dirs["metrics_dir"], f"zfs_replication_repl_{name}.prom").read_text()
    assert f'zfs_replication_last_run_snapshots_sent{{task="{name}",kind="replication"}} 4' in metrics

    # The timer's run of the same task: the runner with the config the role writes (the module's options, no dirs).
    zfs("snapshot", "-r", f"{src}@auto-2026-11-28_12-00")
    config = task["tmp"] / f"repl-{name}.json"
    config.write_text(json.dumps({"kind": "replication", "name": name, "params": task["params"]}))
    out = io.StringIO()
    argv = ["run", "--config", str(config), "--state-dir", dirs["state_dir"], "--log-dir", dirs["log_dir"], "--metrics-dir", dirs["metrics_dir"]]
    assert main(argv, stream=out) == 0, out.getvalue()
    after = json.loads(state_file(task).read_text())
    assert (after["result"], after["snapshots_sent"]) == ("ok", 2)
    assert after["last_start"] >= state["last_end"]
    assert log_lines(task)[:len(lines)] == lines  # appended to the same file
    assert log_lines(task).count(f"replication task {name}: start") == 2
    metrics = Path(dirs["metrics_dir"], f"zfs_replication_repl_{name}.prom").read_text()
    assert f'zfs_replication_last_run_snapshots_sent{{task="{name}",kind="replication"}} 2' in metrics
    assert snapshots_with_guids(dst) == snapshots_with_guids(src)
    assert sorted(p.name for p in Path(dirs["state_dir"]).iterdir()) == [f"repl-{name}.json", f"repl-{name}.lock"]


def test_check_mode_module_run_writes_no_history(task, ansible_playbook):
    zfs("snapshot", "-r", f"{task['src']}@auto-2026-11-28_10-00")
    result = ansible_playbook(play(replication(task)), check=True).task("replicate")
    assert result["changed"] and result["log"]
    assert not any(Path(d).exists() for d in task["dirs"].values())  # no lock, state, log or metrics file
    parent = task["dst"].rsplit("/", 1)[0]
    assert zfs("list", "-H", "-o", "name", "-r", parent).split() == [parent]


def test_site_playbook_runs_leave_the_history_status_and_log_read(task, ansible_playbook, tmp_path):
    """The first apply of site.yml records its runs: log.yml and status.yml show them, not "never ran"."""
    src, name = task["src"], task["name"]
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    (tmp_path / "units").mkdir()
    (tmp_path / "bin").mkdir()
    inventory = json.dumps({"all": {"hosts": {"fileserver": {
        **local,
        "zfs_replication_ssh_trust": False,
        **scheduler_vars(tmp_path),
        "scheduler_state_dir": task["dirs"]["state_dir"],
        "scheduler_log_dir": task["dirs"]["log_dir"],
        "scheduler_metrics_dir": task["dirs"]["metrics_dir"],
        "zfs_replication_run_now": True,  # the hourly snapshot task (and the replication after it) run at this apply
        "zfs_replication_snapshot_tasks": [{"name": name, "dataset": src, "recursive": True, "naming_schema": SCHEMA,
                                            "schedule": "hourly", "lifetime_value": 1, "lifetime_unit": "week"}],
        "zfs_replication_replication_tasks": [{**task["params"], "periodic_snapshot_tasks": [name]}],
    }}}})
    imported = f"- name: site\n  ansible.builtin.import_playbook: {REPO / 'playbooks' / 'site.yml'}\n"
    ansible_playbook(imported, inventory_text=inventory)
    assert len(snapshots_with_guids(task["dst"])) == 2  # the hourly snapshot of the source and its child, replicated

    for kind in ("snap", "repl"):
        state = json.loads(state_file(task, kind).read_text())
        assert state["result"] == "ok", state
        assert Path(task["dirs"]["metrics_dir"], f"zfs_replication_{kind}_{name}.prom").exists()
    assert json.loads(state_file(task).read_text())["snapshots_sent"] == 2

    log_play = f"- name: log\n  ansible.builtin.import_playbook: {REPO / 'playbooks' / 'log.yml'}\n"
    shown = ansible_playbook(log_play, inventory_text=inventory, extravars={"task": name, "kind": "replication"})
    printed = shown.task("Print the last run's log", "fileserver")["msg"]
    assert printed[0].endswith(f"replication task {name}: start") and printed[-1].endswith(f"replication task {name}: ok")
    summary = shown.task("Print the last run's result", "fileserver")["msg"]
    assert summary.startswith(f"repl-{name}: ok at ") and "2 snapshots" in summary, summary

    status_play = f"- name: status\n  ansible.builtin.import_playbook: {REPO / 'playbooks' / 'status.yml'}\n"
    table = ansible_playbook(status_play, inventory_text=inventory).task("Print the table", "fileserver")["zr_status_table"]
    rows = {tuple(line.split()[1:3]): line.split() for line in table[1:]}
    assert rows[(name, "snapshot")][6] == "ok" and rows[(name, "replication")][6] == "ok", table
