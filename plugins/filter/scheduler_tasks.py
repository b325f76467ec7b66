# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
name: scheduler_tasks
short_description: Turn declared snapshot and replication tasks into systemd units and runner configs
version_added: 0.1.0
description:
  - Used by the P(zfs.replication.scheduler#role) role. Merges the defaults into each task, validates it with
    the same engine code the timers run (names, datasets, naming schemas, schedules, SSH options), and returns
    one entry per task with its unit names, C(OnCalendar=) expressions, dependencies and the JSON config the
    runner reads.
  - Fails with a message naming the task and the field when a task is invalid, before anything is changed on
    a host.
  - A replication task with C(auto_snapshot_task=true) also gets a snapshot task per source dataset, derived from it
    (TrueNAS's replication wizard creates one for local sources that have none), named C(NAME-auto) (C(NAME-auto-LEAF) with
    several sources), the source with the task's C(recursive) and C(exclude), its first C(naming_schema), its
    C(schedule) and C(timezone), and the target's lifetime with C(retention_policy=custom), else 2 weeks as TrueNAS.
    It comes right after the declared snapshot tasks, feeds the replication task (C(periodic_snapshot_tasks), so
    C(hold_pending_snapshots) keeps what is not sent yet) and starts it after each run. A declared or derived snapshot
    task that already snapshots a source with that naming schema is an error that names it.
author:
  - zfs.replication contributors
options:
  _input:
    description: The declared snapshot tasks (list of dicts, see the role's C(scheduler_snapshot_tasks)).
    type: list
    elements: dict
    required: true
  replication_tasks:
    description: The declared replication tasks (see the role's C(scheduler_replication_tasks)).
    type: list
    elements: dict
    default: []
  snapshot_defaults:
    description:
      - Options merged into every snapshot task, recursively (a task's own values win, lists replace the default
        whole, a null in the task keeps the default); the same merge as the playbooks' and M(zfs.replication.zfs_replication_info)'s.
    type: dict
    default: {}
  replication_defaults:
    description:
      - Options merged into every replication task, recursively (a task's C(ssh.host) keeps the defaults' C(ssh.user),
        key and known_hosts; lists replace the default whole; a null in the task keeps the default).
    type: dict
    default: {}
  run_now:
    description: Names of tasks to run once now, in addition to those with C(run_now=true).
    type: list
    elements: str
    default: []
  launcher:
    description: Path of the runner's launcher on the host.
    type: path
    default: /usr/local/sbin/zfs-replication-run
  config_dir:
    description: Directory of the per-task JSON configs on the host.
    type: path
    default: /etc/zfs-replication/tasks
  state_dir:
    description: The runner's state directory on the host.
    type: path
    default: /var/lib/zfs-replication
  log_dir:
    description: The runner's log directory on the host.
    type: path
    default: /var/log/zfs-replication
  metrics_dir:
    description:
      - Directory of the runner's Prometheus textfile metrics on the host (C(--metrics-dir) in each C(exec_start));
        empty for none.
    type: str
    default: ""
  zfs_units:
    description: ZFS units present on the host; every unit orders itself after them and wants them.
    type: list
    elements: str
    default: []
  secrets:
    description:
      - Whether each C(config) holds the task's secrets (C(encryption_key)).
      - V(false) leaves them out, so that the plan can be shown (C(set_fact) prints it at C(-v), loops print each item);
        C(secret) still tells which tasks have one. Their whole configs come from P(zfs.replication.scheduler_secret_configs#filter),
        in a task with C(no_log).
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Plan the units of the declared tasks
  ansible.builtin.set_fact:
    planned: >-
      {{ snapshot_tasks | zfs.replication.scheduler_tasks(replication_tasks=replication_tasks) }}
"""

RETURN = r"""
_value:
  description: One entry per task, snapshot tasks first, each in declaration order.
  type: list
  elements: dict
  contains:
    id:
      description: C(snap-NAME) or C(repl-NAME); names the config, state, log and lock files.
      type: str
    kind:
      description: V(snapshot) or V(replication).
      type: str
    name:
      description: The task's name (for replication tasks without one, suggested from sources and target).
      type: str
    unit:
      description: Unit name without suffix, C(zfs-replication-ID).
      type: str
    service:
      description: The C(.service) unit name.
      type: str
    timer:
      description:
        - The C(.timer) unit name, or null for a task without schedule (run on demand or after its snapshot tasks).
        - A replication task with a C(restrict_schedule) window has one even without a schedule; it also fires at the
          start of each window.
      type: str
    oncalendar:
      description: The timer's C(OnCalendar=) expressions (the schedule's, then the starts of the C(restrict_schedule) windows).
      type: list
      elements: str
    config_path:
      description: Path of the task's JSON config on the host.
      type: str
    config:
      description:
        - The JSON config the runner reads (kind, name, params, schedule, timezone, depends_on).
        - Without the task's secrets when O(secrets=false).
      type: dict
    exec_start:
      description: The service's C(ExecStart=) line, escaped for systemd.
      type: str
    wants:
      description: Units the service wants.
      type: list
      elements: str
    after:
      description: Units the service starts after.
      type: list
      elements: str
    enabled:
      description: Whether the timer is enabled.
      type: bool
    run_now:
      description: Whether to start the service once now.
      type: bool
    secret:
      description:
        - Whether the task has a secret (an encryption key), which its config file must hold; the role writes that
          file from P(zfs.replication.scheduler_secret_configs#filter) without diff or log.
      type: bool
    derived_from:
      description:
        - For a snapshot task derived from a replication task (C(auto_snapshot_task)), that task's name; else null.
      type: str
"""

import re
from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.zfs.replication.plugins.module_utils._auto_snapshot import derive, shared_dataset
from ansible_collections.zfs.replication.plugins.module_utils._defaults import DefaultsError, merge_defaults
from ansible_collections.zfs.replication.plugins.module_utils._naming import NamingSchema, NamingSchemaError
from ansible_collections.zfs.replication.plugins.module_utils._replication import ReplicationTask, TaskError
from ansible_collections.zfs.replication.plugins.module_utils._schedule import RunWindow, Schedule, ScheduleError
from ansible_collections.zfs.replication.plugins.module_utils._snapshot_task import SnapshotTask

UNIT_PREFIX = "zfs-replication-"
# Task options that are secrets: left out of the plan that is shown (secrets=false), kept only in the config file.
SECRET_PARAMS = ("encryption_key",)
DEFAULT_SNAPSHOT_SCHEMA = "auto-%Y-%m-%d_%H-%M"  # TrueNAS's default
TASK_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
# Keys the role handles itself; everything else is a module option and goes to the engine.
ROLE_KEYS = frozenset({"enabled", "run_now"})
REPLICATION_ROLE_KEYS = ROLE_KEYS
SNAPSHOT_ROLE_KEYS = ROLE_KEYS


def _systemd_quote(arg: str) -> str:
    """One ExecStart= argument: specifiers (%) and variables ($) escaped, quoted when it has spaces."""
    text = arg.replace("%", "%%").replace("$", "$$")
    if re.search(r"[\s\"'\\;]", text):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def _merge(defaults: Any, task: Any, what: str, index: int) -> dict[str, Any]:
    try:
        return merge_defaults(defaults, task, f"{what}[{index}]", what.replace("_tasks", "_defaults"))
    except DefaultsError as exc:
        raise AnsibleFilterError(str(exc)) from None


def _oncalendar(schedule: Any, tz: str | None, where: str) -> list[str]:
    try:
        return Schedule.from_spec(schedule, timezone=tz).to_oncalendar()
    except ScheduleError as exc:
        raise AnsibleFilterError(f"{where}: {exc}") from None


def _entry(kind: str, name: str, params: dict[str, Any], task: dict[str, Any], schedule: Any, tz: str | None,
           paths: dict[str, str], where: str) -> dict[str, Any]:
    task_id = f"{'snap' if kind == 'snapshot' else 'repl'}-{name}"
    unit = f"{UNIT_PREFIX}{task_id}"
    config_path = f"{paths['config_dir'].rstrip('/')}/{task_id}.json"
    argv = [paths["launcher"], "run", "--config", config_path, "--state-dir", paths["state_dir"], "--log-dir", paths["log_dir"]]
    if paths.get("metrics_dir"):
        argv += ["--metrics-dir", paths["metrics_dir"]]
    return {
        "id": task_id,
        "kind": kind,
        "name": name,
        "unit": unit,
        "service": f"{unit}.service",
        "timer": f"{unit}.timer" if schedule is not None else None,
        "oncalendar": _oncalendar(schedule, tz, where) if schedule is not None else [],
        "config_path": config_path,
        "config": {"version": 1, "kind": kind, "name": name, "params": params, "schedule": schedule, "timezone": tz,
                   "depends_on": []},
        "exec_start": " ".join(_systemd_quote(a) for a in argv),
        "wants": [],
        "after": [],
        # A config that holds a key is written without diff and log output.
        "secret": any(params.get(k) for k in SECRET_PARAMS),
        "enabled": bool(task.get("enabled", True)),
        "run_now": bool(task.get("run_now", False)),
        "derived_from": None,
    }


def _without_secrets(entry: dict[str, Any]) -> dict[str, Any]:
    params = {k: v for k, v in entry["config"]["params"].items() if k not in SECRET_PARAMS}
    return {**entry, "config": {**entry["config"], "params": params}}


def scheduler_tasks(snapshot_tasks: Any, replication_tasks: Any = None, snapshot_defaults: Any = None,
                    replication_defaults: Any = None, run_now: Any = None, launcher: str = "/usr/local/sbin/zfs-replication-run",
                    config_dir: str = "/etc/zfs-replication/tasks", state_dir: str = "/var/lib/zfs-replication",
                    log_dir: str = "/var/log/zfs-replication", zfs_units: Any = None, secrets: bool = True,
                    metrics_dir: Any = "") -> list[dict[str, Any]]:
    entries = _plan(snapshot_tasks, replication_tasks, snapshot_defaults, replication_defaults, run_now, launcher, config_dir,
                    state_dir, log_dir, zfs_units, metrics_dir)
    return entries if secrets else [_without_secrets(e) for e in entries]


def _plan(snapshot_tasks: Any, replication_tasks: Any, snapshot_defaults: Any, replication_defaults: Any, run_now: Any,
          launcher: str, config_dir: str, state_dir: str, log_dir: str, zfs_units: Any, metrics_dir: Any = "") -> list[dict[str, Any]]:
    paths = {"launcher": launcher, "config_dir": config_dir, "state_dir": state_dir, "log_dir": log_dir}
    if metrics_dir:
        paths["metrics_dir"] = metrics_dir
    for key, value in paths.items():
        if not isinstance(value, str) or not value.startswith("/"):
            raise AnsibleFilterError(f"{key} {value!r} must be an absolute path")
    zfs = [str(u) for u in (zfs_units or [])]
    entries: list[dict[str, Any]] = []
    snapshots: dict[str, dict[str, Any]] = {}

    for i, raw in enumerate(snapshot_tasks or []):
        task = _merge(snapshot_defaults, raw, "snapshot_tasks", i)
        name = task.get("name")
        where = f"snapshot task {name!r}" if name else f"snapshot_tasks[{i}]"
        if not isinstance(name, str) or not TASK_NAME_RE.match(name):
            raise AnsibleFilterError(f"{where}: name {name!r}: give each snapshot task a name of letters, digits and _ . - "
                                     "(at most 100 characters)")
        if name in snapshots:
            raise AnsibleFilterError(f"{where}: two snapshot tasks are named {name}: names must be unique")
        if not task.get("dataset"):
            raise AnsibleFilterError(f"{where}: dataset is required")
        schema = task.setdefault("naming_schema", DEFAULT_SNAPSHOT_SCHEMA)
        try:
            NamingSchema(schema)
        except (NamingSchemaError, TypeError) as exc:
            raise AnsibleFilterError(f"{where}: naming_schema {schema!r}: {exc}") from None
        schedule = task.get("schedule")
        tz = task.get("timezone")
        params = {k: v for k, v in task.items() if k not in SNAPSHOT_ROLE_KEYS}
        entry = _entry("snapshot", name, params, task, schedule, tz, paths, where)
        snapshots[name] = entry
        entries.append(entry)

    merged = [_merge(replication_defaults, raw, "replication_tasks", i) for i, raw in enumerate(replication_tasks or [])]
    derived = _auto_snapshot_tasks(merged, snapshots, entries, paths)

    names: set[str] = set()
    for i, task in enumerate(merged):
        where = f"replication task {task['name']!r}" if task.get("name") else f"replication_tasks[{i}]"
        if "state" in task:
            raise AnsibleFilterError(f"{where}: state is not a task option here: remove a task from the list to remove it")
        params = {k: v for k, v in task.items() if k not in REPLICATION_ROLE_KEYS}
        own = derived.get(i, [])
        if own:  # fed by its derived snapshot tasks, after those it names itself
            refs = list(params.get("periodic_snapshot_tasks") or [])
            params["periodic_snapshot_tasks"] = refs + [n for n in own if n not in refs]
        # periodic_snapshot_tasks: a name refers to a declared snapshot task (its options go to the engine, and
        # the replication can run right after it); a dict describes a snapshot task elsewhere (e.g. for pull).
        deps: list[str] = []
        resolved: list[Any] = []
        for j, ref in enumerate(params.get("periodic_snapshot_tasks") or []):
            if isinstance(ref, str):
                if ref not in snapshots:
                    known = ", ".join(sorted(snapshots)) or "none declared"
                    raise AnsibleFilterError(f"{where}: periodic_snapshot_tasks[{j}] names {ref!r}, which is not a declared "
                                             f"snapshot task (declared: {known})")
                deps.append(ref)
                resolved.append(dict(snapshots[ref]["config"]["params"]))
            elif isinstance(ref, Mapping):
                resolved.append(dict(ref))
            else:
                raise AnsibleFilterError(f"{where}: periodic_snapshot_tasks[{j}] must be a snapshot task name or a dict")
        if "periodic_snapshot_tasks" in params:
            params["periodic_snapshot_tasks"] = resolved
        try:
            name = ReplicationTask.from_params(params).name
        except TaskError as exc:
            raise AnsibleFilterError(f"{where}: {exc}") from None
        where = f"replication task {name!r}"
        params["name"] = name
        if name in names:
            raise AnsibleFilterError(f"{where}: two replication tasks are named {name}: names must be unique")
        names.add(name)
        schedule = task.get("schedule")
        tz = task.get("timezone")
        entry = _entry("replication", name, params, task, schedule, tz, paths, where)
        entry["config"]["depends_on"] = deps
        # restrict_schedule: a run started outside its window waits (the runner records it); the timer also fires at the
        # start of each window, so what its snapshot tasks took meanwhile goes then.
        try:
            window = RunWindow.from_spec(params.get("restrict_schedule"), timezone=tz)
        except ScheduleError as exc:
            raise AnsibleFilterError(f"{where}: restrict_schedule: {exc}") from None
        if window is not None:
            entry["oncalendar"] = entry["oncalendar"] + [e for e in window.to_oncalendar() if e not in entry["oncalendar"]]
            entry["timer"] = f"{entry['unit']}.timer"
        entry["after"] = [snapshots[d]["service"] for d in deps]
        if params.get("transport", "ssh") != "local":
            entry["wants"].append("network-online.target")
            entry["after"].append("network-online.target")
        # TrueNAS's "run automatically": without a schedule of its own, the replication runs right after each
        # run of its snapshot tasks. The snapshot service wants it; After= above makes it wait until the
        # snapshot run has finished (Type=oneshot), so it never lists the source halfway.
        if schedule is None and entry["enabled"]:
            for dep in deps:
                snapshots[dep]["wants"].append(entry["service"])
        # Its derived snapshot tasks run on its own schedule; their services start it too, so what they took goes
        # right away even when the two timers drift apart (RandomizedDelaySec); at the same time it is one run.
        elif entry["enabled"]:
            for dep in own:
                snapshots[dep]["wants"].append(entry["service"])
        entries.append(entry)

    wanted_now = {str(n) for n in (run_now or [])}
    known = {e["name"] for e in entries}
    unknown = sorted(wanted_now - known)
    if unknown:
        raise AnsibleFilterError(f"run_now names {', '.join(unknown)}, which is not a declared task")
    for entry in entries:
        entry["run_now"] = entry["run_now"] or entry["name"] in wanted_now
        entry["wants"] = zfs + entry["wants"]
        entry["after"] = zfs + entry["after"]
    return entries


def _auto_snapshot_tasks(merged: list[dict[str, Any]], snapshots: dict[str, dict[str, Any]], entries: list[dict[str, Any]],
                         paths: dict[str, str]) -> dict[int, list[str]]:
    """Add the snapshot tasks derived from replication tasks with auto_snapshot_task (module_utils/_auto_snapshot) to
    ``snapshots`` and ``entries``; return their names by the index of the replication task they belong to."""
    out: dict[int, list[str]] = {}
    for i, task in enumerate(merged):
        if not task.get("auto_snapshot_task"):
            continue
        where = f"replication task {task['name']!r}" if task.get("name") else f"replication_tasks[{i}]"
        params = {k: v for k, v in task.items() if k not in REPLICATION_ROLE_KEYS and k != "periodic_snapshot_tasks"}
        try:  # the snapshot tasks it names are resolved later; they do not change what is derived
            repl = ReplicationTask.from_params(params)
        except TaskError as exc:
            raise AnsibleFilterError(f"{where}: {exc}") from None
        where = f"replication task {repl.name!r}"
        for snap in derive(repl, task.get("logging_level")):
            snap_name = snap["name"]
            if not TASK_NAME_RE.match(snap_name):
                raise AnsibleFilterError(f"{where}: auto_snapshot_task: its snapshot task would be named {snap_name!r}, longer than "
                                         "100 characters: give the replication task a shorter name")
            for other, entry in snapshots.items():
                both = shared_dataset(snap, entry["config"]["params"])
                if both is None and other != snap_name:
                    continue
                if entry["derived_from"]:
                    what = f"the snapshot task {other!r} of replication task {entry['derived_from']!r} (auto_snapshot_task)"
                    fix = (f"set auto_snapshot_task on one of the two replication tasks and name {other!r} in the other's "
                           "periodic_snapshot_tasks")
                else:
                    what = f"the declared snapshot task {other!r}"
                    fix = f"name {other!r} in periodic_snapshot_tasks instead of setting auto_snapshot_task"
                if both is None:
                    raise AnsibleFilterError(f"{where}: auto_snapshot_task: its snapshot task would be named {snap_name!r}, like {what}: "
                                             "rename one of them")
                raise AnsibleFilterError(f"{where}: auto_snapshot_task would snapshot {both} with naming schema {snap['naming_schema']!r}, "
                                         f"which {what} already does: {fix}, or give this task another naming_schema")
            try:
                SnapshotTask.from_params({k: v for k, v in snap.items() if k != "logging_level"})
            except TaskError as exc:
                raise AnsibleFilterError(f"{where}: auto_snapshot_task: its snapshot task {snap_name!r}: {exc}") from None
            entry = _entry("snapshot", snap_name, snap, {"enabled": task.get("enabled", True)}, snap["schedule"],
                           snap.get("timezone"), paths, f"{where}: auto_snapshot_task")
            entry["derived_from"] = repl.name
            snapshots[snap_name] = entry
            entries.append(entry)
            out.setdefault(i, []).append(snap_name)
    return out


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"scheduler_tasks": scheduler_tasks}
