# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""An encryption key never shows: not at -vvv, not in --diff, not when a loop item fails, not in a file.

The scheduler role and zfs_replication_info get a replication task with a known key and run with -vvv, once with
the default callback (what a user reads, also written to ANSIBLE_LOG_PATH) and once with the tests' JSON callback
(every result whole: items, facts, invocation, diff). Every output stream and every file the runs leave (log file,
the role's config, state, log and unit directories, the runner's state and log) is searched for the key; only the
task's own config holds it, for root alone. zfs-fuse has no native encryption: neither the role nor the info module
needs it (the info module only lists both sides), and the runner's own run fails on the encryption it cannot do,
which is the error path that must not echo the key either.
"""
from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import scheduler_vars, zfs

pytestmark = pytest.mark.integration

SCHEMA = "auto-%Y-%m-%d_%H-%M"
# Results carry the module's arguments (the default before ansible-core 2.21; shown at -vvv).
INVOCATION = {"ANSIBLE_INJECT_INVOCATION": "true"}


def default_callback_run(collections_path: Path, workdir: Path, play: str, extravars: dict, expect_rc: int | None = 0,
                         diff: bool = False) -> tuple[int, str, str, str]:
    """ansible-playbook -vvv [--diff] with the default stdout callback and a log file: (rc, stdout, stderr, log)."""
    workdir.mkdir(parents=True)
    (workdir / "ansible.cfg").write_text("[defaults]\n")
    (workdir / "playbook.yml").write_text(play)
    (workdir / "extravars.json").write_text(json.dumps(extravars))
    (workdir / "inventory.ini").write_text(f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONFIG": str(workdir / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(collections_path),
        "ANSIBLE_STDOUT_CALLBACK": "default",
        "ANSIBLE_LOG_PATH": str(workdir / "ansible.log"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_LOCAL_TEMP": str(workdir / "tmp-local"),
        "ANSIBLE_REMOTE_TEMP": str(workdir / "tmp-remote"),
        "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
        **INVOCATION,
    })
    argv = [str(Path(sys.executable).parent / "ansible-playbook"), "-vvv", "-i", str(workdir / "inventory.ini"),
            "-e", f"@{workdir / 'extravars.json'}", str(workdir / "playbook.yml")] + (["--diff"] if diff else [])
    proc = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
                          check=False)
    if expect_rc is not None:
        assert proc.returncode == expect_rc, f"rc={proc.returncode}\n{proc.stderr[-4000:]}\n{proc.stdout[-8000:]}"
    return proc.returncode, proc.stdout, proc.stderr, (workdir / "ansible.log").read_text()


def hits(key: str, **texts: str) -> list[str]:
    """Where KEY occurs: 'name: ...context...' for each text that holds it."""
    out = []
    for name, text in texts.items():
        pos = text.find(key)
        if pos >= 0:
            out.append(f"{name}: ...{text[max(0, pos - 300):pos + 80]}...")
    return out


INPUTS = {"playbook.yml", "extravars.json"}  # what the test hands ansible-playbook: the key is there by design


def file_hits(key: str, root: Path, skip: frozenset[Path] = frozenset()) -> list[str]:
    """Every file under ROOT that holds KEY, but the test's own inputs and SKIP."""
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and p not in skip and p.name not in INPUTS]
    return hits(key, **{str(p): p.read_text(errors="replace") for p in files})


def role_play() -> str:
    return """
- name: Apply the scheduler role
  hosts: localhost
  gather_facts: false
  roles:
    - role: zfs.replication.scheduler
"""


def role_vars(tmp: Path, task: dict) -> dict:
    return {
        **scheduler_vars(tmp, config_dir="etc/tasks"),
        "scheduler_snapshot_tasks": [],
        "scheduler_replication_tasks": [task],
    }


def encrypted_task(sandbox, tag: str, key: str) -> dict:
    src, dst_parent = f"{sandbox.src_pool}/sec{tag}", f"{sandbox.dst_pool}/sec{tag}"
    zfs("create", src)
    zfs("create", dst_parent)
    zfs("snapshot", f"{src}@auto-2026-01-01_00-00")
    return {"name": f"sec{tag}", "source_datasets": [src], "target_dataset": f"{dst_parent}/data", "transport": "local",
            "naming_schema": [SCHEMA], "schedule": "daily", "encryption": True, "encryption_key_format": "hex",
            "encryption_key": key}


def test_scheduler_role_never_shows_the_key(sandbox, ansible_playbook, collections_path, tmp_path, zfs_caps):
    tag = secrets.token_hex(3)
    key, new_key = secrets.token_hex(32), secrets.token_hex(32)
    task = encrypted_task(sandbox, tag, key)
    (tmp_path / "bin").mkdir()
    (tmp_path / "units").mkdir()
    config = tmp_path / "etc" / "tasks" / f"repl-{task['name']}.json"
    found = []

    # First apply: the JSON callback keeps every result whole (set_fact's facts, loop items, invocation, diff).
    first = ansible_playbook(role_play(), extravars=role_vars(tmp_path, task), diff=True, extra_args=["-vvv"],
                             env={"ANSIBLE_LOG_PATH": str(tmp_path / "first.log"), **INVOCATION})
    found += hits(key, first_stdout=first.stdout, first_stderr=first.stderr, first_log=(tmp_path / "first.log").read_text())
    written = json.loads(config.read_text())
    assert written["params"]["encryption_key"] == key  # the runner needs it: the config is the one place it lives
    assert first.task("zfs.replication.scheduler : Write the task configs that hold keys")["changed"] is True

    # A new key, --diff, the default callback: the config changes, and neither key shows.
    rc, out, err, log = default_callback_run(collections_path, tmp_path / "second", role_play(),
                                             role_vars(tmp_path, {**task, "encryption_key": new_key}), diff=True)
    assert f"(item=zfs-replication-repl-{task['name']}.timer)" in out  # labels still name the task
    found += hits(key, second_stdout=out, second_stderr=err, second_log=log)
    found += hits(new_key, second_stdout=out, second_stderr=err, second_log=log)
    assert json.loads(config.read_text())["params"]["encryption_key"] == new_key

    # A loop item fails: units cannot be written under a regular file. The failed item is reported, not the key.
    (tmp_path / "not-a-dir").write_text("")
    broken = {**role_vars(tmp_path, {**task, "encryption_key": new_key}), "scheduler_unit_dir": str(tmp_path / "not-a-dir")}
    rc, out, err, log = default_callback_run(collections_path, tmp_path / "third", role_play(), broken, expect_rc=2)
    assert f"failed: [localhost] (item=zfs-replication-repl-{task['name']}.service)" in out
    found += hits(new_key, third_stdout=out, third_stderr=err, third_log=log)

    # The runner's own run (as the timer starts it) writes the state and log: on OpenZFS it creates the encrypted
    # replica with the key; zfs-fuse cannot encrypt, so there it fails at the capability check.
    run = subprocess.run([str(tmp_path / "bin" / "zfs-replication-run"), "run", "--config", str(config), "--state-dir",
                          str(tmp_path / "state"), "--log-dir", str(tmp_path / "log")],
                         capture_output=True, text=True, timeout=600, check=False)
    assert list((tmp_path / "log").iterdir()) and list((tmp_path / "state").iterdir()), run
    assert (run.returncode == 0) == ("encryption" in zfs_caps), run
    found += hits(new_key, runner_stdout=run.stdout, runner_stderr=run.stderr)

    # Files: the task's config holds the key, 0600 and root's; nothing else the runs left does.
    st = config.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0 and st.st_gid == 0
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    for k in (key, new_key):
        found += file_hits(k, tmp_path, skip=frozenset({config}))
    assert found == [], "\n\n".join(found)


def test_info_module_never_shows_the_key(sandbox, ansible_playbook, collections_path, tmp_path):
    tag = secrets.token_hex(3)
    key = secrets.token_hex(32)
    task = encrypted_task(sandbox, tag, key)
    (tmp_path / "state").mkdir()
    # The tasks come from variables, as from a vault: an error's excerpt of the playbook then shows no key.
    play = f"""
- name: Status of an encrypted task
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Status
      zfs.replication.zfs_replication_info:
        tasks: "{{{{ [zr_task] }}}}"
        state_dir: {tmp_path / 'state'}
      register: status
    - name: Status with the key among the defaults
      zfs.replication.zfs_replication_info:
        tasks: "{{{{ [zr_task | dict2items | rejectattr('key', 'equalto', 'encryption_key') | items2dict] }}}}"
        task_defaults: "{{{{ {{'encryption_key': zr_task.encryption_key}} }}}}"
        state_dir: {tmp_path / 'state'}
    - name: Status of a task whose source is missing (the module fails)
      zfs.replication.zfs_replication_info:
        tasks: "{{{{ [zr_task | combine({{'source_datasets': [zr_task.source_datasets[0] ~ '-missing']}})] }}}}"
        state_dir: {tmp_path / 'state'}
      ignore_errors: true
    - name: Status with a bad threshold (argument validation fails)
      zfs.replication.zfs_replication_info:
        tasks: "{{{{ [zr_task] }}}}"
        lag_warning: soon
      ignore_errors: true
"""
    extravars = {"zr_task": task}
    result = ansible_playbook(play, extravars=extravars, extra_args=["-vvv"], env={"ANSIBLE_LOG_PATH": str(tmp_path / "json.log"), **INVOCATION})
    # The module did its job on the encrypted task: it listed the source (zfs-fuse's lack of encryption is no matter).
    info = result.task("Status")["tasks"][0]
    assert info["name"] == task["name"] and info["datasets"][0]["source_snapshots"] == 1 and info["pending"] == 1
    assert result.task("Status with the key among the defaults")["tasks"][0]["name"] == task["name"]
    assert "does not exist" in result.task("Status of a task whose source is missing (the module fails)")["msg"]
    assert "lag_warning" in result.task("Status with a bad threshold (argument validation fails)")["msg"]
    found = hits(key, json_stdout=result.stdout, json_stderr=result.stderr, json_log=(tmp_path / "json.log").read_text())

    rc, out, err, log = default_callback_run(collections_path, tmp_path / "default", play, extravars)
    assert "ok: [localhost]" in out
    found += hits(key, default_stdout=out, default_stderr=err, default_log=log)
    found += file_hits(key, tmp_path)
    assert found == [], "\n\n".join(found)
