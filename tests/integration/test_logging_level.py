# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""logging_level (TrueNAS "Logging Level") in the task's real log file and journal.

Timer runs: the runner's entry point with a config file as the role writes it; its stdout is what the journal gets.
Module runs: real ansible-playbook runs of zfs_replication and zfs_snapshot_task. Each run replicates (or snapshots)
on the zfs-fuse sandbox; the assertions read the log file and the runner's stdout, and the replica's guids.
"""
from __future__ import annotations

import io
import json
import secrets
from pathlib import Path

import pytest

from ansible_collections.zfs.replication.plugins.module_utils._runner import main
from helpers import destroy_retrying, snapshots_with_guids, zfs

pytestmark = pytest.mark.integration

SCHEMA = "auto-%Y-%m-%d_%H-%M"


@pytest.fixture
def task(sandbox, tmp_path):
    tag = secrets.token_hex(3)
    src, dst_parent = f"{sandbox.src_pool}/lv{tag}", f"{sandbox.dst_pool}/lv{tag}"
    zfs("create", src)
    zfs("create", dst_parent)
    dirs = {"state_dir": str(tmp_path / "state"), "log_dir": str(tmp_path / "log")}
    params = {"name": f"lvl{tag}", "source_datasets": [src], "target_dataset": f"{dst_parent}/data", "transport": "local",
              "naming_schema": [SCHEMA], "hold_base": False}
    yield {"src": src, "dst": f"{dst_parent}/data", "name": f"lvl{tag}", "params": params, "dirs": dirs, "tmp": tmp_path}
    for ds in (src, dst_parent):
        destroy_retrying(ds)


def timer_run(task: dict, name: str, **params) -> tuple[int, str, str]:
    """The timer's run of task NAME (config as the role writes it): (exit status, journal text, log file text)."""
    config = task["tmp"] / f"repl-{name}.json"
    config.write_text(json.dumps({"kind": "replication", "name": name, "params": {**task["params"], "name": name, **params}}))
    out = io.StringIO()
    rc = main(["run", "--config", str(config), "--state-dir", task["dirs"]["state_dir"], "--log-dir", task["dirs"]["log_dir"]], stream=out)
    log = Path(task["dirs"]["log_dir"], f"repl-{name}.log")
    return rc, out.getvalue(), log.read_text() if log.exists() else ""


def messages(text: str) -> list[str]:
    """Log file lines without their time, task id and pid prefix."""
    return [line.split(": ", 1)[1] for line in text.splitlines()]


def test_timer_runs_log_at_each_level(task):
    src, dst, base = task["src"], task["dst"], task["name"]
    zfs("snapshot", f"{src}@auto-2026-11-28_10-00")

    # debug: every command with its exit status and duration, the pipeline's stages, and the info lines too.
    rc, journal, log = timer_run(task, f"{base}-debug", logging_level="debug", target_dataset=f"{dst}-debug")
    assert rc == 0, journal
    lines = messages(log)
    assert lines == journal.splitlines(), (lines, journal)  # the journal gets the same lines, without the prefix
    # the one recursive listing of each side (zfs list -Hp on OpenZFS, zfs get -Hp on older command lines), streamed,
    # then its exit status and duration
    for root in (src, f"{dst}-debug"):
        listing = next((line for line in lines if line.startswith(("debug: start: zfs list -H -p -r ", "debug: start: zfs get -H -p -r "))
                        and line.endswith(f" {root}")), None)
        assert listing is not None, lines
        assert any(line.startswith("debug: exit ") and line.endswith("s: " + listing[len("debug: start: "):]) for line in lines), lines
    set_readonly = f"zfs set readonly=on {dst}-debug"
    at = lines.index(f"debug: run: {set_readonly}")
    assert lines[at + 1].startswith("debug: exit 0 after ") and lines[at + 1].endswith(f"s: {set_readonly}"), lines
    assert any(line.startswith("debug: start: zfs send ") for line in lines), lines  # the pipeline's processes as they start
    assert any(line.startswith("debug: start: zfs recv ") for line in lines), lines
    assert any(line.startswith("debug: pipeline ended after ") and "zfs send on local exit 0" in line and "zfs recv on local exit 0" in line
               for line in lines), lines
    assert lines[0] == f"replication task {base}-debug: start" and lines[-1] == f"replication task {base}-debug: ok"
    assert snapshots_with_guids(f"{dst}-debug") == snapshots_with_guids(src)

    # default and info: the run's story, no command trace.
    for level in ("default", "info"):
        rc, journal, log = timer_run(task, f"{base}-{level}", logging_level=level, target_dataset=f"{dst}-{level}")
        assert rc == 0, journal
        lines = messages(log)
        assert lines == journal.splitlines()
        assert not [line for line in lines if line.startswith("debug:")], lines
        assert lines[0] == f"replication task {base}-{level}: start" and lines[-1] == f"replication task {base}-{level}: ok"
        assert any(line.strip().startswith("$ zfs send") for line in lines), lines
        assert snapshots_with_guids(f"{dst}-{level}") == snapshots_with_guids(src)

    # warning and error: a good run leaves nothing in the log or the journal; a failed one only its errors.
    for level in ("warning", "error"):
        name, target = f"{base}-{level}", f"{dst}-{level}"
        rc, journal, log = timer_run(task, name, logging_level=level, target_dataset=target)
        assert (rc, journal, log) == (0, "", ""), (journal, log)
        assert snapshots_with_guids(target) == snapshots_with_guids(src)
        zfs("snapshot", f"{target}@diverged")  # the next run is refused: the target has a snapshot the source lacks
        stamp = {"warning": "11-00", "error": "11-30"}[level]
        zfs("snapshot", f"{src}@auto-2026-11-28_{stamp}")
        rc, journal, log = timer_run(task, name, logging_level=level, target_dataset=target)
        lines = messages(log)
        assert rc == 1 and lines == journal.splitlines(), (journal, log)
        assert lines and all("diverged" in line or "FAILED" in line for line in lines), lines
        assert lines[-1].startswith(f"replication task {name}: FAILED: ") and "has diverged" in lines[-1]
        assert not any(line.endswith(": start") or line.startswith(("plan ", "debug:")) for line in lines), lines


def test_a_bad_level_in_the_config_is_refused_naming_the_field(task, capsys):
    rc, journal, log = timer_run(task, f"{task['name']}-bad", logging_level="verbose")
    assert (rc, journal, log) == (2, "", "")
    err = capsys.readouterr().err
    assert "params.logging_level 'verbose': use one of default, debug, info, warning, error" in err, err
    assert not zfs("list", "-H", "-o", "name", "-r", task["dst"].rsplit("/", 1)[0]).strip().endswith("/data")


def play(*tasks: dict) -> str:
    return json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": list(tasks)}])


def test_module_runs_honour_logging_level(task, ansible_playbook):
    src, dst, name, dirs = task["src"], task["dst"], task["name"], task["dirs"]
    zfs("snapshot", f"{src}@auto-2026-11-28_10-00")
    snapshot = {"name": "snapshot", "zfs.replication.zfs_snapshot_task": {
        "name": name, "dataset": src, "naming_schema": SCHEMA, "schedule": "hourly", "logging_level": "debug", **dirs}}
    replicate = {"name": "replicate", "zfs.replication.zfs_replication": {**task["params"], **dirs, "logging_level": "debug"}}
    run = ansible_playbook(play(snapshot, replicate))
    assert run.task("snapshot")["changed"] and run.task("replicate")["changed"]
    assert snapshots_with_guids(dst) == snapshots_with_guids(src)

    snap_lines = messages(Path(dirs["log_dir"], f"snap-{name}.log").read_text())
    assert any(line.startswith("debug: run: zfs snapshot ") for line in snap_lines), snap_lines
    assert any(line.startswith("debug: exit 0 after ") and " zfs snapshot " in f" {line}" for line in snap_lines), snap_lines
    repl_lines = messages(Path(dirs["log_dir"], f"repl-{name}.log").read_text())
    assert any(line.startswith("debug: start: zfs send ") for line in repl_lines), repl_lines
    assert repl_lines[-1] == f"replication task {name}: ok"

    # The same task at warning: its next (good) run adds nothing to the log.
    before = Path(dirs["log_dir"], f"repl-{name}.log").read_text()
    zfs("snapshot", f"{src}@auto-2026-11-28_11-00")
    quiet = {"name": "replicate", "zfs.replication.zfs_replication": {**task["params"], **dirs, "logging_level": "warning"}}
    again = ansible_playbook(play(quiet)).task("replicate")
    assert again["changed"] and again["snapshots_sent"] == 1
    assert Path(dirs["log_dir"], f"repl-{name}.log").read_text() == before
    assert snapshots_with_guids(dst) == snapshots_with_guids(src)
