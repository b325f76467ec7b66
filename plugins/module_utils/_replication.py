# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A replication task, validated, and one run of it: probe, list, plan, execute, verify.

The module and the timer entry point both call :func:`run_replication`.
"""
from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ._executor import PipelineError, Stage, run_pipeline
from ._naming import NamingSchema, NamingSchemaError
from ._planner import DatasetPlan, Plan, PlanError, PlanTask, Selection, Send, plan
from ._transport import ConnectionFailed, Host, LocalHost, SSHConnection, SSHHost, TransportError
from ._zfs import (
    Capabilities,
    DatasetMissing,
    Listing,
    ZfsError,
    dataset_type,
    is_within,
    list_tree,
    probe,
    validate_dataset,
)

TASK_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class TaskError(Exception):
    """The task is invalid or cannot run; the message names the field and the fix."""


@dataclass
class ReplicationTask:
    name: str
    source_datasets: list[str]
    target_dataset: str
    naming_schema: list[str]
    direction: str = "push"
    transport: str = "ssh"
    ssh: SSHConnection | None = None
    recursive: bool = False
    exclude: list[str] = field(default_factory=list)
    name_regex: str | None = None
    properties: bool = True
    readonly: str = "set"

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ReplicationTask:
        """Build and validate a task from module parameters / a timer's config file."""
        p = dict(params)
        ssh = p.get("ssh") or None
        conn = None
        if p.get("transport", "ssh") == "ssh":
            if not ssh or not ssh.get("host"):
                raise TaskError("ssh.host is required when transport=ssh: give the destination host, or use transport=local")
            conn = SSHConnection(
                host=ssh["host"],
                port=int(ssh.get("port") or 22),
                user=ssh.get("user"),
                private_key_file=ssh.get("private_key_file"),
                known_hosts_file=ssh.get("known_hosts_file"),
                host_key_checking=ssh.get("host_key_checking") or "strict",
                cipher=ssh.get("cipher") or "standard",
                connect_timeout=int(ssh.get("connect_timeout") or 10),
            )
        task = cls(
            name=p.get("name") or "",
            source_datasets=list(p.get("source_datasets") or []),
            target_dataset=p.get("target_dataset") or "",
            naming_schema=list(p.get("naming_schema") or []),
            direction=p.get("direction") or "push",
            transport=p.get("transport") or "ssh",
            ssh=conn,
            recursive=bool(p.get("recursive", False)),
            exclude=list(p.get("exclude") or []),
            name_regex=p.get("name_regex") or None,
            properties=bool(p.get("properties", True)),
            readonly=p.get("readonly") or "set",
        )
        if not task.name:
            task.name = suggest_name(task)
        task.validate()
        return task

    def validate(self) -> None:
        if not TASK_NAME_RE.match(self.name):
            raise TaskError(f"name {self.name!r}: use letters, digits and _ . - (at most 100 characters)")
        if not self.source_datasets:
            raise TaskError("source_datasets: give at least one dataset to replicate")
        for i, src in enumerate(self.source_datasets):
            _valid(src, f"source_datasets[{i}]")
        _valid(self.target_dataset, "target_dataset")
        if "/" not in self.target_dataset:
            raise TaskError(f"target_dataset {self.target_dataset!r} is a pool: replicate into a dataset inside it, like {self.target_dataset}/backup")
        for a in self.source_datasets:
            for b in self.source_datasets:
                if a != b and is_within(a, b):
                    raise TaskError(f"source_datasets overlap: {a} is inside {b}; use recursive on {b} instead")
        if len(self.source_datasets) != len(set(self.source_datasets)):
            raise TaskError("source_datasets lists a dataset twice")
        leaves = [s.rsplit("/", 1)[-1] for s in self.source_datasets]
        if len(self.source_datasets) > 1 and len(leaves) != len(set(leaves)):
            raise TaskError(
                "source_datasets: several sources end in the same name and would land in the same "
                f"{self.target_dataset}/<name>: use one task per source"
            )
        if self.transport == "local":
            for src in self.source_datasets:
                if is_within(self.target_dataset, src):
                    raise TaskError(f"target_dataset {self.target_dataset} is inside source {src}: choose a target outside the source tree")
                if is_within(src, self.target_dataset):
                    raise TaskError(f"source {src} is inside target_dataset {self.target_dataset}: choose a target outside the source tree")
        if self.exclude and not self.recursive:
            raise TaskError("exclude needs recursive=true: excluded datasets are children of a recursive source")
        for i, ex in enumerate(self.exclude):
            _valid(ex, f"exclude[{i}]")
            if not any(is_within(ex, s) and ex != s for s in self.source_datasets):
                raise TaskError(f"exclude[{i}] {ex} is not a child of any of source_datasets: list children of the sources only")
        if self.direction != "push":
            raise TaskError(f"direction {self.direction!r}: only push is supported")
        if self.transport not in ("ssh", "local"):
            raise TaskError(f"transport {self.transport!r}: use ssh or local")
        if self.readonly not in ("set", "require", "ignore"):
            raise TaskError(f"readonly {self.readonly!r}: use set, require or ignore")
        if not self.naming_schema and not self.name_regex:
            raise TaskError("naming_schema: give at least one naming schema (like auto-%Y-%m-%d_%H-%M) or a name_regex")
        self.selection()  # validates schemas and regex
        if self.ssh is not None:
            try:
                self.ssh.validate()
            except ValueError as exc:
                raise TaskError(str(exc)) from exc

    def selection(self) -> Selection:
        schemas = []
        for i, text in enumerate(self.naming_schema):
            try:
                schemas.append(NamingSchema(text))
            except NamingSchemaError as exc:
                raise TaskError(f"naming_schema[{i}]: {exc}") from exc
        regex = None
        if self.name_regex:
            try:
                regex = re.compile(self.name_regex)
            except re.error as exc:
                raise TaskError(f"name_regex {self.name_regex!r} is not a valid regular expression: {exc}") from exc
        return Selection(naming_schemas=schemas, name_regex=regex)

    def plan_task(self) -> PlanTask:
        return PlanTask(
            sources=list(self.source_datasets),
            target=self.target_dataset,
            selection=self.selection(),
            recursive=self.recursive,
            exclude=list(self.exclude),
            readonly=self.readonly,
        )


def _valid(name: str, field_name: str) -> None:
    try:
        validate_dataset(name, field_name)
    except ValueError as exc:
        raise TaskError(str(exc)) from exc


def suggest_name(task: ReplicationTask) -> str:
    """Like TrueNAS: sources and destination, e.g. ``tank-data-to-backup-data``."""
    src = ",".join(task.source_datasets)
    raw = f"{src}-to-{task.target_dataset}"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", raw).strip("-.")
    return name[:100] or "replication"


@dataclass
class DatasetResult:
    source: str
    target: str
    action: str
    base: str | None
    snapshots_sent: list[str] = field(default_factory=list)
    bytes: int | None = None
    duration: float = 0.0
    error: str | None = None


@dataclass
class RunResult:
    task: str
    changed: bool
    plan: Plan
    datasets: list[DatasetResult]
    duration: float
    errors: list[str]
    log: list[str]
    source_capabilities: Capabilities | None = None
    target_capabilities: Capabilities | None = None
    before: dict[str, list[str]] = field(default_factory=dict)
    after: dict[str, list[str]] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return bool(self.errors)

    @property
    def snapshots_sent(self) -> int:
        return sum(len(d.snapshots_sent) for d in self.datasets)

    @property
    def bytes(self) -> int | None:
        counted = [d.bytes for d in self.datasets if d.snapshots_sent]
        if any(b is None for b in counted):
            return None
        return sum(b for b in counted if b is not None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "changed": self.changed,
            "plan": self.plan.as_list(),
            "datasets": {
                d.target: {
                    "source": d.source,
                    "action": d.action,
                    "base": d.base,
                    "snapshots_sent": d.snapshots_sent,
                    "bytes": d.bytes,
                    "duration": round(d.duration, 3),
                    "error": d.error,
                }
                for d in self.datasets
            },
            "snapshots_sent": self.snapshots_sent,
            "bytes": self.bytes,
            "duration": round(self.duration, 3),
            "errors": self.errors,
            "log": self.log,
            "capabilities": {
                "source": self.source_capabilities.as_dict() if self.source_capabilities else None,
                "target": self.target_capabilities.as_dict() if self.target_capabilities else None,
            },
        }


def snapshot_names(listing: Listing | None) -> dict[str, list[str]]:
    if listing is None:
        return {}
    return {name: [s.name for s in ds.snapshots] for name, ds in listing.datasets.items()}


class Runner:
    """One run of a replication task on the host that calls it (the source side for push)."""

    def __init__(self, task: ReplicationTask, log: Callable[[str], None] | None = None):
        self.task = task
        self.lines: list[str] = []
        self._log_cb = log
        self.src: Host = LocalHost()
        self.dst: Host = LocalHost() if task.transport == "local" else SSHHost(task.ssh)  # type: ignore[arg-type]

    def log(self, line: str) -> None:
        self.lines.append(line)
        if self._log_cb:
            self._log_cb(line)

    def close(self) -> None:
        self.dst.close()

    # -- listing -------------------------------------------------------------
    def list_source(self, caps: Capabilities) -> Listing:
        try:
            return list_tree(self.src, caps, self.task.source_datasets)
        except DatasetMissing as exc:
            raise TaskError(
                f"source_datasets: {', '.join(exc.names)} does not exist on {self.src.label}: "
                "check the name (zfs list) or create it"
            ) from exc

    def list_target(self, caps: Capabilities) -> Listing | None:
        target = self.task.target_dataset
        try:
            listing = list_tree(self.dst, caps, target)
        except DatasetMissing:
            listing = None
        if listing is not None:
            root = listing.get(target)
            if root is not None and root.type == "volume" and (len(self.task.source_datasets) > 1 or self.task.recursive):
                raise TaskError(f"target_dataset {target} is a zvol: a zvol cannot hold replicated datasets; choose a filesystem")
            return listing
        parent = target.rsplit("/", 1)[0]
        kind = dataset_type(self.dst, parent)
        if kind is None:
            raise TaskError(
                f"target_dataset {target}: its parent {parent} does not exist on {self.dst.label}; "
                "only the last path component is created: create the parent first"
            )
        if kind == "volume":
            raise TaskError(f"target_dataset {target}: its parent {parent} is a zvol, which cannot hold datasets: choose a filesystem")
        return None

    # -- execution -----------------------------------------------------------
    def send_stages(self, send: Send) -> tuple[list[Stage], int | None]:
        argv = ["zfs", "send"]
        if self.task.properties:
            argv.append("-p")
        if send.mode in ("I", "i"):
            argv += [f"-{send.mode}", f"{send.source}@{send.base}"]
        argv.append(f"{send.source}@{send.snapshot}")
        recv = ["zfs", "recv", "-u", send.target]
        stages = [Stage(self.src, argv, "zfs send")]
        counter = None
        if shutil.which("pv"):
            counter = len(stages)
            stages.append(Stage(self.src, ["pv", "-n", "-b", "-f", "-i", "5"], "pv"))
        stages.append(Stage(self.dst, recv, "zfs recv" if self.dst.is_local else f"ssh {self.dst.label} zfs recv"))
        return stages, counter

    def execute(self, the_plan: Plan, results: dict[str, DatasetResult], errors: list[str]) -> bool:
        """Run the plan; return True when something on the target was (or may have been) changed."""
        touched = False
        if the_plan.create_target_root:
            self.log(f"create {self.task.target_dataset} on {self.dst.label}")
            self.dst.run(["zfs", "create", self.task.target_dataset])
            touched = True
        failed_sources: list[str] = []
        uncounted: set[str] = set()
        for dplan in the_plan.datasets:
            res = results[dplan.target]
            if not dplan.sends:
                continue
            if any(is_within(dplan.source, f) for f in failed_sources):
                res.error = f"{dplan.source}: skipped because a parent failed"
                errors.append(res.error)
                continue
            for send in dplan.sends:
                stages, counter = self.send_stages(send)
                self.log(f"{send.describe()}")
                try:
                    out = run_pipeline(stages, counter)
                except PipelineError as exc:
                    touched = True  # a receive may have created the dataset before failing
                    res.error = f"{send.describe()}: {exc}"
                    errors.append(res.error)
                    self.log(f"FAILED {res.error}")
                    failed_sources.append(dplan.source)
                    break
                touched = True
                res.snapshots_sent += send.snapshots
                res.duration += out.duration
                if out.bytes is None:
                    uncounted.add(dplan.target)
                res.bytes = None if dplan.target in uncounted else (res.bytes or 0) + (out.bytes or 0)
                self.log(f"done {send.target}@{send.snapshot}: {out.bytes if out.bytes is not None else '?'} bytes in {out.duration:.2f}s")
        for troot in the_plan.set_readonly:
            root_result = results.get(troot)
            if root_result is not None and root_result.error and root_result.action == "full" and not self._exists_after(troot):
                continue
            self.log(f"set readonly=on on {troot}")
            try:
                self.dst.run(["zfs", "set", "readonly=on", troot])
                touched = True
            except TransportError as exc:
                errors.append(f"readonly: cannot set readonly=on on {troot}: {exc}")
        return touched

    def _exists_after(self, name: str) -> bool:
        return dataset_type(self.dst, name) is not None

    def verify(self, the_plan: Plan, source: Listing, after: Listing | None, errors: list[str], results: dict[str, DatasetResult]) -> None:
        """Every snapshot reported sent is on the target with the source's guid."""
        for dplan in the_plan.datasets:
            res = results[dplan.target]
            src = source.get(dplan.source)
            tgt = after.get(dplan.target) if after is not None else None
            if not res.snapshots_sent or src is None:
                continue
            src_guids = {s.name: s.guid for s in src.snapshots}
            tgt_guids = {s.name: s.guid for s in tgt.snapshots} if tgt is not None else {}
            bad = [n for n in res.snapshots_sent if tgt_guids.get(n) != src_guids.get(n)]
            if bad:
                msg = f"verification: {dplan.target} lacks or has a different guid for {', '.join(bad)} after the transfer"
                res.error = msg
                errors.append(msg)

    def run(self, check_mode: bool = False) -> RunResult:
        start = time.monotonic()
        errors: list[str] = []
        src_caps = probe(self.src)
        dst_caps = probe(self.dst)
        self.log(f"task {self.task.name}: source {self.src.label} ({src_caps.family}), target {self.dst.label} ({dst_caps.family})")
        source = self.list_source(src_caps)
        before = self.list_target(dst_caps)
        try:
            the_plan = plan(self.task.plan_task(), source, before)
        except PlanError as exc:
            raise TaskError(str(exc)) from exc
        results = {d.target: DatasetResult(d.source, d.target, d.action, d.base) for d in the_plan.datasets}
        for d in the_plan.datasets:
            self.log(f"plan {d.source} -> {d.target}: {d.action}" + (f" (base {d.base})" if d.base else "") + (f": {d.message}" if d.message else ""))
            for s in d.sends:
                self.log(f"  {s.describe()}")
            if d.action == "refused":
                results[d.target].error = d.message
                errors.append(d.message)
        after = before
        changed = False
        if check_mode:
            changed = the_plan.has_work
        elif the_plan.has_work:
            touched = self.execute(the_plan, results, errors)
            if touched:
                try:
                    after = list_tree(self.dst, dst_caps, self.task.target_dataset)
                except DatasetMissing:
                    after = None
                self.verify(the_plan, source, after, errors, results)
                changed = snapshot_names(before) != snapshot_names(after) or bool(the_plan.set_readonly) or the_plan.create_target_root
        result = RunResult(
            task=self.task.name,
            changed=changed,
            plan=the_plan,
            datasets=list(results.values()),
            duration=time.monotonic() - start,
            errors=errors,
            log=self.lines,
            source_capabilities=src_caps,
            target_capabilities=dst_caps,
            before=snapshot_names(before),
            after=snapshot_names(after) if not check_mode else _planned_after(before, the_plan),
        )
        self.log(
            f"task {self.task.name}: {'check mode, ' if check_mode else ''}{result.snapshots_sent} snapshot(s) sent, "
            f"{result.bytes if result.bytes is not None else '?'} bytes, {result.duration:.2f}s, "
            f"{'FAILED: ' + '; '.join(errors) if errors else 'ok'}"
        )
        return result


def _planned_after(before: Listing | None, the_plan: Plan) -> dict[str, list[str]]:
    after = snapshot_names(before)
    for d in the_plan.datasets:
        if d.pending:
            after[d.target] = after.get(d.target, []) + d.pending
    return after


def run_replication(params: dict[str, Any], check_mode: bool = False, log: Callable[[str], None] | None = None) -> RunResult:
    """Validate ``params`` and run the task once. Raises TaskError for bad input or unreachable hosts."""
    task = ReplicationTask.from_params(params)
    runner = Runner(task, log)
    try:
        return runner.run(check_mode=check_mode)
    except ConnectionFailed as exc:
        raise TaskError(str(exc)) from exc
    except (ZfsError, TransportError) as exc:
        raise TaskError(str(exc)) from exc
    finally:
        runner.close()


__all__ = ["DatasetPlan", "ReplicationTask", "RunResult", "TaskError", "run_replication", "suggest_name"]
