# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/: the main playbook applied twice to a two-host inventory on the sandbox, run-now, status, log.

Both inventory hosts are this machine (local connection); "backup" is reached by the replication through the
sandbox sshd, whose host key and authorized_keys the playbook itself sets up. There is no systemd as PID 1 here,
so scheduler_systemd=false: the role writes engine, configs and units, and run-now calls the launcher directly.
"""
from __future__ import annotations

import base64
import hashlib
import json
import secrets
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import scheduler_vars, snapshots_with_guids, zfs

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCHEMA = "auto-%Y-%m-%d_%H-%M"


def playbook(name: str) -> str:
    # The fixture runs playbook text from its own directory: import the real file, so its relative paths hold.
    return f"- name: {name}\n  ansible.builtin.import_playbook: {REPO / 'playbooks' / name}\n"


def sandbox_declaration(sandbox, tmp: Path, tag: str) -> tuple[str, dict]:
    src = f"{sandbox.src_pool}/site{tag}"
    dst_parent = f"{sandbox.dst_pool}/site{tag}"
    zfs("create", src)
    zfs("create", f"{src}/web")
    zfs("create", dst_parent)
    (tmp / "bin").mkdir(exist_ok=True)
    (tmp / "units").mkdir(exist_ok=True)
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inv = {
        "all": {
            "vars": {
                **scheduler_vars(tmp, config_dir="etc/tasks"),
                "scheduler_metrics_dir": str(tmp / "metrics"),
                # the daily snapshot task and the replication after it run at each apply, not only at their timer's
                "zfs_replication_run_now": True,
                # daily in UTC: the slot a run takes is the UTC day it ran on (see daily_names)
                "zfs_replication_snapshot_task_defaults": {"naming_schema": SCHEMA, "schedule": "daily", "timezone": "UTC",
                                                           "lifetime_value": 2, "lifetime_unit": "week"},
                "zfs_replication_replication_task_defaults": {
                    "recursive": True,
                    "ssh": {"user": sandbox.sshd.user, "private_key_file": str(tmp / "keys" / "replication_ed25519"),
                            "known_hosts_file": str(tmp / "keys" / "known_hosts"), "cipher": "fast"},
                },
            },
            "hosts": {
                "fileserver": {**local, "zfs_replication_ssh_from": "127.0.0.1",
                               "zfs_replication_snapshot_tasks": [{"name": f"data{tag}", "dataset": src, "recursive": True}],
                               "zfs_replication_replication_tasks": [{
                                   "name": f"data{tag}-to-backup", "source_datasets": [src],
                                   "target_dataset": f"{dst_parent}/data", "periodic_snapshot_tasks": [f"data{tag}"],
                                   "ssh": {"host": sandbox.sshd.host, "port": sandbox.sshd.port}}]},
                "backup": {**local, "zfs_replication_ssh_address": sandbox.sshd.host,
                           "zfs_replication_ssh_port": sandbox.sshd.port,
                           "zfs_replication_ssh_host_key_file": f"{sandbox.sshd.host_key}.pub",
                           "zfs_replication_authorized_keys_file": str(sandbox.sshd.authorized_keys)},
            },
        }
    }
    return json.dumps(inv, indent=2), {"src": src, "dst": f"{dst_parent}/data", "task": f"data{tag}-to-backup"}


def changed_tasks(result) -> list[str]:
    return [f"{t['task']['name']} ({h})" for t in result.tasks_run for h, r in t["hosts"].items() if r.get("changed")]


SNAPSHOT_TASKS = "Run the periodic snapshot tasks"  # check mode: the modules plan
REPLICATION_TASKS = "Run the replication tasks"
RUN_TASKS = "zfs.replication.scheduler : Run tasks now"  # a real apply: the runs, as the timers run them


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def daily_names(before: datetime, after: datetime) -> set[str]:
    """The snapshot names the daily schedule (00:00 UTC) can give a run that happened between BEFORE and AFTER (real
    times read around it): its UTC day's slot; two candidates only when the run straddled midnight. The module's clock
    is the real one, so a test compares what the module reports against these, on whichever day it runs."""
    days = (after.date() - before.date()).days
    return {f"auto-{before.date() + timedelta(days=i):%Y-%m-%d}_00-00" for i in range(days + 1)}


def snapshot_state(result, task: str) -> dict:
    """What the run of snapshot task TASK on fileserver recorded in its state file (the details of its run), as the
    apply's report read it right after the run."""
    items = [i for i in result.task(RUN_TASKS, "fileserver")["results"] if i["item"]["item"]["id"] == f"snap-{task}"]
    assert len(items) == 1, items
    return json.loads(base64.b64decode(items[0]["item"]["content"]))["details"]


def snapshot_run(result, task: str) -> dict:
    """What the site's snapshot task TASK reported on fileserver in check mode (one item of the loop over its snapshot tasks)."""
    items = [i for i in result.task(SNAPSHOT_TASKS, "fileserver")["results"] if i["item"]["name"] == task]
    assert len(items) == 1, items
    return items[0]


def test_site_twice_run_now_status_log(sandbox, ansible_playbook, tmp_path):
    tag = secrets.token_hex(3)
    inventory, d = sandbox_declaration(sandbox, tmp_path, tag)

    t0 = utc_now()
    first = ansible_playbook(playbook("site.yml"), inventory_text=inventory)
    t1 = utc_now()
    # The snapshot task took the slot of the UTC day it ran on, of both datasets; the replication sent them over the sshd.
    day1 = snapshot_state(first, f"data{tag}")["snapshot_name"]
    assert day1 in daily_names(t0, t1), (day1, t0, t1)
    src_snaps = snapshots_with_guids(d["src"])
    assert set(src_snaps) == {f"@{day1}", f"/web@{day1}"} and snapshots_with_guids(d["dst"]) == src_snaps
    # SSH trust: the key is authorized with restrict + from=, the host key is known.
    auth = sandbox.sshd.authorized_keys.read_text()
    assert 'restrict,from="127.0.0.1" ssh-ed25519 ' in auth and "zfs.replication@fileserver" in auth
    assert f"[127.0.0.1]:{sandbox.sshd.port} ssh-ed25519" in (tmp_path / "keys" / "known_hosts").read_text()
    # The role's files: engine, launcher, config, unit with the metrics option.
    config = json.loads((tmp_path / "etc" / "tasks" / f"repl-{d['task']}.json").read_text())
    assert config["params"]["ssh"]["user"] == sandbox.sshd.user  # merged from the group defaults
    unit = (tmp_path / "units" / f"zfs-replication-repl-{d['task']}.service").read_text()
    assert f"--metrics-dir {tmp_path / 'metrics'}" in unit
    assert (tmp_path / "bin" / "zfs-replication-run").exists()

    t2 = utc_now()
    second = ansible_playbook(playbook("site.yml"), inventory_text=inventory)
    t3 = utc_now()
    day2 = snapshot_state(second, f"data{tag}")["snapshot_name"]
    assert day2 in daily_names(t2, t3), (day2, t2, t3)
    new = {k for k in snapshots_with_guids(d["src"]) if k not in src_snaps}
    if day2 == day1:
        # Same UTC day: the second apply has nothing to do anywhere.
        assert new == set()
        assert changed_tasks(second) == [], changed_tasks(second)
        assert second.stats["fileserver"]["changed"] == 0 and second.stats["backup"]["changed"] == 0
    else:
        # Midnight (UTC) passed between the runs: the second run took the new day's slot of both datasets,
        # replicated it, and changed nothing else.
        assert day2 > day1 and new == {f"@{day2}", f"/web@{day2}"}, (day1, day2, new)
        assert snapshots_with_guids(d["dst"]) == snapshots_with_guids(d["src"])
        assert changed_tasks(second) == [f"{RUN_TASKS} (fileserver)"], changed_tasks(second)
        assert second.stats["backup"]["changed"] == 0

    # Run now: a new (manual, schema-named) snapshot goes over with the task's timer config.
    newest = "auto-2099-01-01_00-00"
    zfs("snapshot", "-r", f"{d['src']}@{newest}")
    now = ansible_playbook(playbook("run_now.yml"), inventory_text=inventory, extravars={"task": d["task"]})
    assert snapshots_with_guids(d["dst"]) == snapshots_with_guids(d["src"])
    assert f"/web@{newest}" in snapshots_with_guids(d["dst"])
    state = json.loads((tmp_path / "state" / f"repl-{d['task']}.json").read_text())
    assert state["result"] == "ok" and state["snapshots_sent"] == 2
    log_lines = now.task("Print the last run's log", "fileserver")["msg"]
    assert log_lines[0].endswith(f"replication task {d['task']}: start") and log_lines[-1].endswith(": ok")

    # Metrics: the textfile parses with the Prometheus parser and carries the run.
    text = (tmp_path / "metrics" / f"zfs_replication_repl_{d['task'].replace('-', '_')}.prom").read_text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["zfs_replication_last_run_bytes"].samples[0].value == state["bytes"]
    assert families["zfs_replication_last_run_snapshots_sent"].samples[0].value == 2
    results = {s.labels["result"]: s.value for s in families["zfs_replication_last_run_result"].samples}
    assert results == {"ok": 1, "failed": 0, "skipped": 0, "waiting": 0}
    assert families["zfs_replication_last_success_timestamp_seconds"].samples[0].labels == {"task": d["task"], "kind": "replication"}
    assert "zfs_replication_newest_replicated_timestamp_seconds" in families

    # Status: one table with both tasks; log viewer.
    status = ansible_playbook(playbook("status.yml"), inventory_text=inventory)
    table = status.task("Print the table", "fileserver")["zr_status_table"]
    assert table[0].split()[:4] == ["HOST", "TASK", "KIND", "HEALTH"]
    row = next(line for line in table if d["task"] in line).split()

    assert row[:4] == ["fileserver", d["task"], "replication", "ok"] and row[6] == "ok"
    snap_row = next(line for line in table if f" data{tag} " in line).split()
    assert snap_row[2] == "snapshot"
    log = ansible_playbook(playbook("log.yml"), inventory_text=inventory, extravars={"task": d["task"]})
    assert log.task("Print the last run's log", "fileserver")["msg"] == log_lines


def _files(root: Path) -> dict[str, str]:
    """{path: sha256 and mode} of every file under ROOT (the role's files, keys, state, logs, metrics)."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and "play" not in path.relative_to(root).parts[0]:  # the fixture's own playbook dirs
            out[str(path.relative_to(root))] = f"{hashlib.sha256(path.read_bytes()).hexdigest()} {oct(path.stat().st_mode)}"
    return out


def _holds(dataset: str) -> dict[str, str]:
    out = zfs("get", "-H", "-p", "-r", "-o", "name,value", "userrefs", dataset)
    return {n: v for n, v in (line.split("\t") for line in out.splitlines()) if "@" in n}


def test_site_check_mode_on_a_configured_host_changes_nothing(sandbox, ansible_playbook, tmp_path):
    """site.yml in check mode on hosts it already configured: exit 0; the only change it reports is the one
    there is to make (the replication of a snapshot taken since); no file, unit, key, snapshot or hold changes."""
    tag = secrets.token_hex(3)
    inventory, d = sandbox_declaration(sandbox, tmp_path, tag)
    t0 = utc_now()
    applied = ansible_playbook(playbook("site.yml"), inventory_text=inventory)
    t1 = utc_now()
    day1 = snapshot_state(applied, f"data{tag}")["snapshot_name"]
    assert day1 in daily_names(t0, t1), (day1, t0, t1)
    newest = "auto-2099-01-01_00-00"  # something to replicate: the check run must plan it and not send it
    zfs("snapshot", "-r", f"{d['src']}@{newest}")
    before = (_files(tmp_path), sandbox.sshd.authorized_keys.read_text(), snapshots_with_guids(d["src"]),
              snapshots_with_guids(d["dst"]), _holds(d["src"]), _holds(d["dst"]))

    t2 = utc_now()
    check = ansible_playbook(playbook("site.yml"), inventory_text=inventory, check=True, expect_rc=0)
    t3 = utc_now()

    after = (_files(tmp_path), sandbox.sshd.authorized_keys.read_text(), snapshots_with_guids(d["src"]),
             snapshots_with_guids(d["dst"]), _holds(d["src"]), _holds(d["dst"]))
    names = ("files", "authorized_keys", "source snapshots", "target snapshots", "source holds", "target holds")
    changed_state = [n for n, b, a in zip(names, before, after) if b != a]
    assert not changed_state, f"check mode changed {changed_state}"
    assert f"@{newest}" not in snapshots_with_guids(d["dst"])
    # Changed as planned: the replication would send the new snapshot; the snapshot task would take a snapshot only
    # if the check ran on a later UTC day than the apply (then it names that day's slot, not on the source).
    snap = snapshot_run(check, f"data{tag}")
    day2 = snap["snapshot_name"]
    assert day2 in daily_names(t2, t3), (day2, t2, t3)
    would_take = {t["snapshot"] for t in snap["plan"]["take"]}
    if day2 == day1:
        assert snap["changed"] is False and would_take == set(), snap
        expected_changes = [f"{REPLICATION_TASKS} (fileserver)"]
    else:
        assert snap["changed"] is True and would_take == {f"{d['src']}@{day2}", f"{d['src']}/web@{day2}"}, snap
        assert f"@{day2}" not in before[2]
        expected_changes = [f"{SNAPSHOT_TASKS} (fileserver)", f"{REPLICATION_TASKS} (fileserver)"]
    assert changed_tasks(check) == expected_changes
    replication = check.task(REPLICATION_TASKS, "fileserver")["results"]
    pending = [p.get("pending") for item in replication for p in item.get("plan") or [] if isinstance(p, dict)]
    assert any(newest in (p or []) for p in pending), f"check mode did not plan the pending replication: {replication}"
