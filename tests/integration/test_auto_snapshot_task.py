# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""auto_snapshot_task through the playbooks on real zfs-fuse: site.yml installs the snapshot task derived from a
replication task (units and config on the replication's schedule and schema), the timer's command of that task
takes a snapshot that the replication's timer command then sends (same guids both sides), status.yml shows it,
site.yml runs it, turning the option off removes its units, config and state, and declarations it cannot derive
from fail before anything changes.

There is no systemd as PID 1 here (scheduler_systemd=false): the role writes engine, configs and units, and the test
runs each unit's ExecStart= as the timer would.
"""
from __future__ import annotations

import hashlib
import json
import secrets
import shlex
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from helpers import scheduler_vars, snapshots_with_guids, zfs

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCHEMA = "auto-%Y-%m-%d_%H-%M"
PLAN = "Plan the declared tasks (merged defaults, names, resolved snapshot tasks, validation)"


def playbook(name: str) -> str:
    return f"- name: {name}\n  ansible.builtin.import_playbook: {REPO / 'playbooks' / name}\n"


def inventory(tmp: Path, hosts: dict[str, dict]) -> str:
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    return json.dumps({"all": {
        "vars": {
            "zfs_replication_ssh_trust": False,  # a local replication: no keys to set up
            **scheduler_vars(tmp, config_dir="etc/tasks"),
        },
        "hosts": {name: {**local, **hostvars} for name, hostvars in hosts.items()},
    }}, indent=2)


def unit_lines(path: Path, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in path.read_text().splitlines() if line.startswith(f"{key}=")]


def run_unit(units: Path, service: str) -> None:
    """Run the service's ExecStart= as systemd would (the paths of this test need no systemd unquoting)."""
    (command,) = unit_lines(units / service, "ExecStart")
    proc = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{service}: {command}\n{proc.stdout}\n{proc.stderr}"


def daily_names(before: datetime, after: datetime) -> set[str]:
    """The daily (00:00 UTC) slot names a run between BEFORE and AFTER (real times read around it) can take."""
    days = (after.date() - before.date()).days
    return {f"auto-{before.date() + timedelta(days=i):%Y-%m-%d}_00-00" for i in range(days + 1)}


def tree(root: Path) -> dict[str, str]:
    """{path: sha256} of every file under ROOT except the fixture's own playbook directories."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.relative_to(root).parts[0].startswith("play")}


def test_derived_snapshot_task_is_installed_run_shown_and_removed(sandbox, ansible_playbook, tmp_path):
    tag = secrets.token_hex(3)
    src, dst_parent = f"{sandbox.src_pool}/auto{tag}", f"{sandbox.dst_pool}/auto{tag}"
    dst = f"{dst_parent}/data"
    zfs("create", src)
    zfs("create", f"{src}/web")
    zfs("create", f"{src}/scratch")
    zfs("create", dst_parent)
    for sub in ("bin", "units"):
        (tmp_path / sub).mkdir()
    name, derived = f"auto{tag}", f"auto{tag}-auto"
    replication = {"name": name, "source_datasets": [src], "target_dataset": dst, "transport": "local",
                   "recursive": True, "exclude": [f"{src}/scratch"], "naming_schema": [SCHEMA, "manual-%Y%m%d%H%M"],
                   "schedule": "daily", "timezone": "UTC", "retention_policy": "custom", "lifetime_value": 3,
                   "lifetime_unit": "day", "auto_snapshot_task": True}

    def declare(task: dict, **hostvars) -> str:
        return inventory(tmp_path, {"fileserver": {"zfs_replication_replication_tasks": [task], **hostvars}})

    # 1. site.yml installing only the timers: the derived task's units and config, on the replication's schedule.
    ansible_playbook(playbook("site.yml"), inventory_text=declare(replication, zfs_replication_run_tasks=False))
    units, configs = tmp_path / "units", tmp_path / "etc" / "tasks"
    snap_unit, repl_unit = f"zfs-replication-snap-{derived}", f"zfs-replication-repl-{name}"
    assert sorted(p.name for p in units.iterdir()) == sorted(
        [f"{snap_unit}.service", f"{snap_unit}.timer", f"{repl_unit}.service", f"{repl_unit}.timer"])
    assert unit_lines(units / f"{snap_unit}.timer", "OnCalendar") == unit_lines(units / f"{repl_unit}.timer", "OnCalendar") \
        == ["*-*-* 00:00:00 UTC"]
    # the snapshot service starts the replication, which runs after it (besides the ZFS units this host has)
    assert f"{repl_unit}.service" in unit_lines(units / f"{snap_unit}.service", "Wants")[0].split()
    assert f"{snap_unit}.service" in unit_lines(units / f"{repl_unit}.service", "After")[0].split()
    config = json.loads((configs / f"snap-{derived}.json").read_text())
    assert config["params"] == {"name": derived, "dataset": src, "recursive": True, "exclude": [f"{src}/scratch"],
                                "naming_schema": SCHEMA, "schedule": "daily", "timezone": "UTC",
                                "lifetime_value": 3, "lifetime_unit": "day"}
    analyze = shutil.which("systemd-analyze")
    if analyze:  # systemd's own offline check of the units as written (ExecStart exists, keys and dependencies parse)
        proc = subprocess.run([analyze, "verify", *sorted(str(p) for p in units.iterdir())], capture_output=True, text=True,
                              check=False)
        assert proc.returncode == 0 and "zfs-replication-" not in proc.stderr, proc.stderr
    repl_config = json.loads((configs / f"repl-{name}.json").read_text())
    assert repl_config["depends_on"] == [derived]
    assert repl_config["params"]["periodic_snapshot_tasks"] == [config["params"]]
    assert snapshots_with_guids(src) == {}  # nothing ran

    # 2. The timers' commands: the snapshot task takes the day's slot (excluded child left out), the replication sends it.
    t0 = datetime.now(timezone.utc)
    run_unit(units, f"{snap_unit}.service")
    t1 = datetime.now(timezone.utc)
    taken = snapshots_with_guids(src)
    (day,) = {key.split("@")[1] for key in taken}
    assert day in daily_names(t0, t1), (day, t0, t1)
    assert set(taken) == {f"@{day}", f"/web@{day}"}
    run_unit(units, f"{repl_unit}.service")
    assert snapshots_with_guids(dst) == taken  # same names, same guids
    states = {kind: json.loads((tmp_path / "state" / f"{kind}.json").read_text()) for kind in (f"snap-{derived}", f"repl-{name}")}
    assert states[f"snap-{derived}"]["result"] == "ok" and states[f"repl-{name}"]["result"] == "ok"
    assert states[f"repl-{name}"]["snapshots_sent"] == 2

    # 3. status.yml: a row for each, the derived one a snapshot task.
    status = ansible_playbook(playbook("status.yml"), inventory_text=declare(replication))
    table = status.task("Print the table", "fileserver")["zr_status_table"]
    rows = {line.split()[1]: line.split() for line in table[1:] if line.split()[0] == "fileserver"}
    assert rows[name][2:4] == ["replication", "ok"], table
    assert rows[derived][2] == "snapshot" and "ok" in rows[derived][3:], table

    # 4. site.yml running the tasks now (asked by name: both have a schedule): the derived one runs like a declared one,
    #    with the same history (state file) as its timer's runs; the same slot gives nothing new, unless midnight UTC
    #    passed (then the new day's snapshot is taken and sent).
    t2 = datetime.now(timezone.utc)
    ansible_playbook(playbook("site.yml"), inventory_text=declare(replication, zfs_replication_run_now=[derived, name]))
    t3 = datetime.now(timezone.utc)
    for task_id in (f"snap-{derived}", f"repl-{name}"):
        state = json.loads((tmp_path / "state" / f"{task_id}.json").read_text())
        assert state["result"] == "ok" and t2.replace(microsecond=0) <= datetime.fromisoformat(state["last_start"]) <= t3, (task_id, state)
    newest = max(key.split("@")[1] for key in snapshots_with_guids(src))
    assert newest in daily_names(t0, t3)
    assert snapshots_with_guids(dst) == snapshots_with_guids(src)

    # 5. Turning the option off removes its units, config and state; the replication's stay, the snapshots too.
    kept = snapshots_with_guids(src)
    off = dict(replication, auto_snapshot_task=False)
    ansible_playbook(playbook("site.yml"), inventory_text=declare(off, zfs_replication_run_tasks=False))
    assert sorted(p.name for p in units.iterdir()) == sorted([f"{repl_unit}.service", f"{repl_unit}.timer"])
    assert sorted(p.name for p in configs.iterdir()) == [f"repl-{name}.json"]
    assert not (tmp_path / "state" / f"snap-{derived}.json").exists()
    assert "periodic_snapshot_tasks" not in json.loads((configs / f"repl-{name}.json").read_text())["params"]
    assert snapshots_with_guids(src) == kept and snapshots_with_guids(dst) == kept


def test_declarations_it_cannot_derive_from_change_nothing(sandbox, ansible_playbook, tmp_path):
    """One host per bad declaration: each fails while planning, with the field or the task named, and nothing is
    written on any of them (not even the SSH trust play's keys), no snapshot taken."""
    tag = secrets.token_hex(3)
    src = f"{sandbox.src_pool}/bad{tag}"
    zfs("create", src)
    zfs("create", f"{src}/web")
    base = {"name": f"bad{tag}", "source_datasets": [src], "target_dataset": f"{sandbox.dst_pool}/bad{tag}",
            "transport": "local", "recursive": True, "naming_schema": [SCHEMA], "schedule": "hourly",
            "auto_snapshot_task": True}
    hourly = {"name": f"hourly{tag}", "dataset": f"{src}/web", "naming_schema": SCHEMA, "schedule": "hourly"}
    cases = {
        "pull": ({**base, "direction": "pull", "transport": "ssh", "ssh": {"host": "127.0.0.1"}}, [],
                 "auto_snapshot_task snapshots the sources on the host that runs the task: it needs direction push"),
        "noschedule": ({**base, "schedule": None}, [],
                       "auto_snapshot_task runs its snapshot task on the replication's schedule: give schedule"),
        "noschema": ({**base, "naming_schema": [], "also_include_naming_schema": [SCHEMA]}, [],
                     "auto_snapshot_task names its snapshots with the first naming_schema: give one"),
        "covered": (base, [hourly],
                    f"auto_snapshot_task would snapshot {src}/web with naming schema '{SCHEMA}', which the declared "
                    f"snapshot task 'hourly{tag}' already does: name 'hourly{tag}' in periodic_snapshot_tasks"),
    }
    hosts = {host: {"zfs_replication_replication_tasks": [task], "zfs_replication_snapshot_tasks": snaps,
                    "zfs_replication_ssh_trust": True}
             for host, (task, snaps, _message) in cases.items()}
    before = (tree(tmp_path), snapshots_with_guids(src))

    result = ansible_playbook(playbook("site.yml"), inventory_text=inventory(tmp_path, hosts), expect_rc=2)

    for host, (_task, _snaps, message) in cases.items():
        failed = [r for r in result.task_results(PLAN, host) if r.get("failed")]
        assert failed and message in failed[0]["msg"] and f"replication task 'bad{tag}'" in failed[0]["msg"], (host, failed)
    assert all(result.stats[host]["changed"] == 0 for host in cases), result.stats
    assert (tree(tmp_path), snapshots_with_guids(src)) == before
    assert not (tmp_path / "units").exists() and not (tmp_path / "etc").exists()
