# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""status.yml prints its table as lines under the default callback; the role quotes --metrics-dir in ExecStart.

Real ansible-playbook runs: status.yml with the default stdout callback (what users see), and the scheduler role
writing a service for a metrics directory with a space, a % and a $ in its name, checked by systemd-analyze verify
and by reading ExecStart back the way systemd splits it.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import scheduler_vars

REPO = Path(__file__).resolve().parents[2]


def exec_start_argv(unit_text: str) -> list[str]:
    """ExecStart= split as systemd does for these words: double quotes with C escapes, %% and $$ for % and $."""
    line = next(line for line in unit_text.splitlines() if line.startswith("ExecStart="))
    return [w.replace("%%", "%").replace("$$", "$") for w in shlex.split(line[len("ExecStart="):], posix=True)]


def role_vars(tmp: Path) -> dict:
    return scheduler_vars(tmp)


def test_metrics_dir_is_quoted_in_exec_start(ansible_playbook, tmp_path):
    (tmp_path / "units").mkdir()
    (tmp_path / "bin").mkdir()
    metrics = tmp_path / "node exporter" / "50% of $HOME"
    play = """
- name: Role
  hosts: localhost
  gather_facts: false
  roles:
    - role: zfs.replication.scheduler
"""
    extravars = {**role_vars(tmp_path), "scheduler_metrics_dir": str(metrics),
                 "scheduler_snapshot_tasks": [{"name": "hourly", "dataset": "tank/data", "schedule": "hourly"}]}
    ansible_playbook(play, extravars=extravars)
    unit = tmp_path / "units" / "zfs-replication-snap-hourly.service"
    argv = exec_start_argv(unit.read_text())
    assert argv == [str(tmp_path / "bin" / "zfs-replication-run"), "run", "--config", str(tmp_path / "etc" / "snap-hourly.json"),
                    "--state-dir", str(tmp_path / "state"), "--log-dir", str(tmp_path / "log"), "--metrics-dir", str(metrics)]
    analyze = shutil.which("systemd-analyze")
    if analyze:  # the offline check systemd itself makes: fatal errors exit 1, bad quoting is reported on stderr
        proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, check=False)
        complaints = [line for line in proc.stderr.splitlines() if unit.name in line or "ExecStart" in line]
        assert proc.returncode == 0 and not complaints, proc.stderr


def test_status_prints_one_line_per_row_under_the_default_callback(collections_path, tmp_path):
    """No literal \\n: the table is a list, printed item by item by the callback users have."""
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "snap-hourly.json").write_text('{"result": "failed", "error": "pool full", "last_end": "2026-11-28T12:00:00+00:00"}')
    extravars = {"scheduler_state_dir": str(tmp_path / "state"), "zfs_replication_status_file": str(tmp_path / "status.txt"),
                 "zfs_replication_snapshot_tasks": [{"name": "hourly", "dataset": "tank/data", "schedule": "hourly"},
                                                    {"name": "daily", "dataset": "tank/data", "schedule": "daily"}]}
    (tmp_path / "vars.json").write_text(json.dumps(extravars))
    (tmp_path / "ansible.cfg").write_text("[defaults]\n")
    (tmp_path / "inventory.ini").write_text(f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    env = {**os.environ, "ANSIBLE_CONFIG": str(tmp_path / "ansible.cfg"), "ANSIBLE_COLLECTIONS_PATH": str(collections_path),
           "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0",
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp")}
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(tmp_path / "inventory.ini"),
                           str(REPO / "playbooks" / "status.yml"), "-e", f"@{tmp_path / 'vars.json'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "\\n" not in proc.stdout
    printed = re.search(r'"zr_status_table": \[\n(.*?)\n    \]', proc.stdout, re.S)
    assert printed, proc.stdout
    lines = [json.loads(line.strip().rstrip(",")) for line in printed.group(1).splitlines()]
    assert lines[0].split()[:4] == ["HOST", "TASK", "KIND", "HEALTH"]
    assert lines[1].split() == ["localhost", "hourly", "snapshot", "warning", "-", "-", "failed", "2026-11-28T12:00:00+00:00", "pool", "full"]
    assert lines[2].split() == ["localhost", "daily", "snapshot", "ok", "-", "-", "never", "-"]
    assert (tmp_path / "status.txt").read_text() == "\n".join(lines) + "\n"
