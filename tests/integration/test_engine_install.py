# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The scheduler role installs the engine in one step: the host's package is the collection's module_utils, byte for
byte, whatever the run before left there.

Real ansible-playbook runs of the role's engine tasks against this host: a first install, an unchanged second run,
then a package someone edited by hand (a file changed, one with the wrong mode, one the collection no longer has,
one missing): check mode reports exactly those and touches nothing, a real run puts the collection's files back and
removes the stale one. The installed launcher then runs from that package.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path

from helpers import scheduler_vars

REPO = Path(__file__).resolve().parents[2]
TASK = "zfs.replication.scheduler : Install the engine (the collection's module_utils, in one step whatever its number of files)"


def playbook(tmp_path: Path) -> str:
    role_vars = scheduler_vars(tmp_path)
    return json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "engine", "ansible.builtin.include_role": {"name": "zfs.replication.scheduler", "tasks_from": "engine"},
         "vars": role_vars}]}])


def package(tmp_path: Path) -> dict[str, tuple[str, int]]:
    """{file name: (sha256, mode)} of the installed engine package (files only, no bytecode)."""
    pkg = tmp_path / "engine" / "zfs_replication_engine"
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), stat.S_IMODE(p.stat().st_mode))
            for p in sorted(pkg.iterdir()) if p.is_file()}


def collection() -> dict[str, tuple[str, int]]:
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), 0o644)
            for p in sorted((REPO / "plugins" / "module_utils").glob("_*.py"))}


def reported(result) -> list[str]:
    return json.loads(result.task(TASK)["stdout"])["changed"]


def test_the_engine_is_the_collections_module_utils_and_a_tampered_package_is_put_back(tmp_path, ansible_playbook):
    (tmp_path / "bin").mkdir()  # the role's main tasks create it before these
    first = ansible_playbook(playbook(tmp_path))
    assert first.task(TASK)["changed"] is True
    installed = package(tmp_path)
    assert installed.pop("__init__.py")[1] == 0o644
    assert installed == collection()

    second = ansible_playbook(playbook(tmp_path))
    assert second.task(TASK)["changed"] is False and reported(second) == []

    pkg = tmp_path / "engine" / "zfs_replication_engine"
    (pkg / "_naming.py").write_text((pkg / "_naming.py").read_text() + "\nBROKEN = True\n")
    (pkg / "_lifetime.py").chmod(0o600)
    (pkg / "_schedule.py").unlink()
    os.chown(pkg / "_planner.py", 65534, 65534)  # a user who could rewrite what the timers run as root
    os.chown(pkg, 65534, 65534)
    (pkg / "_gone.py").write_text("STALE = True\n")
    tampered = package(tmp_path)

    checked = ansible_playbook(playbook(tmp_path), check=True)
    assert checked.task(TASK)["changed"] is True
    assert sorted(reported(checked)) == [str(pkg), "_gone.py (removed)", "_lifetime.py", "_naming.py", "_planner.py", "_schedule.py"]
    assert package(tmp_path) == tampered  # check mode only reports
    assert (pkg / "_planner.py").stat().st_uid == 65534 and pkg.stat().st_uid == 65534

    fixed = ansible_playbook(playbook(tmp_path))
    assert sorted(reported(fixed)) == [str(pkg), "_gone.py (removed)", "_lifetime.py", "_naming.py", "_planner.py", "_schedule.py"]
    assert {(p.stat().st_uid, p.stat().st_gid) for p in [pkg, *pkg.iterdir()]} == {(os.geteuid(), os.getegid())}
    installed = package(tmp_path)
    installed.pop("__init__.py")
    assert installed == collection()
    assert not [p.name for p in pkg.iterdir() if p.name.startswith(".install-")]

    # The launcher the same tasks install runs the engine from that package.
    launcher = scheduler_vars(tmp_path)["scheduler_launcher"]
    proc = subprocess.run([launcher, "status", "--state-dir", str(tmp_path / "state")], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {}  # no task has run: nothing in the state directory
