# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One run of a replication task, step by step: probe both sides, check them, list both, prepare (snapshots to take,
interrupted receives, a first full cut earlier), plan, execute the plan, verify, report.

The module and the timer entry point both call :func:`run_replication`. The host that runs it is the source for
``push`` and the target for ``pull``; the other side is reached with ssh. Each step takes what it needs and returns
what the next needs; each job has its own module (docs/architecture.md names them).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from ._create_snapshot import take_missing_snapshots
from ._first_full import FirstFulls
from ._holds import Holds, hold_tag
from ._keys import key_path
from ._lag import CREATION, listing_recovery_points
from ._listings import Listings, TargetListing
from ._mount import mount_received
from ._planner import DatasetPlan, Plan, PlanError, PlanTask, Send, plan, target_root
from ._preflight import Preflight
from ._received_props import read_target_local
from ._replication_task import ReplicationTask, TaskError, suggest_name
from ._results import DatasetResult, RunResult, planned_after, snapshot_names
from ._resume import resume_interrupted
from ._streams import Streams, trimmable
from ._target_changes import TargetChanges
from ._target_keys import TargetKeys
from ._transfer import Transfer
from ._transport import AppendOnlyHost, ConnectionFailed, Host, LocalHost, SSHHost, TransportError, both_sides
from ._verify import list_received, only_adds, verify
from ._zfs import Capabilities, DatasetMissing, Listing, ZfsError, dataset_type, list_tree, probe


@dataclass(frozen=True)
class Sides:
    """Both sides of a run once probed."""

    src: Host
    dst: Host
    src_caps: Capabilities
    dst_caps: Capabilities


@dataclass(frozen=True)
class Prepared:
    """What the run plans on: the listings after the preparation, and what the preparation did."""

    source: Listing
    target: Listing | None
    resumed: set[str]  # targets whose interrupted receive this run finished


@dataclass
class Executed:
    after: Listing | None  # the target tree after the run (as listed before it when nothing ran)
    names_after: dict[str, list[str]] | None  # its snapshot names, less what retention destroyed
    changed: bool


class Runner:
    """One run of a replication task: its hosts, its log, and :meth:`run`."""

    def __init__(self, task: ReplicationTask, log: Callable[[str], None] | None = None, sleep: Callable[[float], None] = time.sleep,
                 state_dir: str | None = None):
        self.task = task
        self.lines: list[str] = []
        self._log_cb = log
        self._log_lock = threading.Lock()
        self._sleep = sleep
        self._listers: tuple[Host, ...] = ()  # the sides whose zfs names each hold's tag (Holds.carrying), once probed
        remote_class = AppendOnlyHost if task.target_access == "append_only" else SSHHost
        remote: Host | None = None if task.transport == "local" else remote_class(task.ssh, sudo=task.sudo)  # type: ignore[arg-type]
        local = LocalHost(sudo=task.local_sudo)
        self.remote = remote
        if task.direction == "pull":
            self.src, self.dst = remote, local  # type: ignore[assignment]
        else:
            self.src, self.dst = local, remote or local
        self.first_fulls = FirstFulls(state_dir, task.name, self.log)  # first transfers in progress, on this host
        # encryption_key_generate: the key is kept on this host (_keys), read or made once per run, passed on stdin only.
        self.keys = TargetKeys(task, self.dst, [target_root(task.source_datasets, task.target_dataset, s) for s in task.source_datasets],
                               self.log, key_path(state_dir, task.name) if task.encryption and task.encryption_key_generate else None)

    def log(self, line: str) -> None:
        with self._log_lock:  # datasets transfer in parallel: whole lines, one at a time
            self.lines.append(line)
            if self._log_cb:
                self._log_cb(line)

    def close(self) -> None:
        if self.remote is not None:
            self.remote.close()

    @property
    def holds(self) -> Holds:
        return Holds(hold_tag(self.task.name), self.src, self.dst, self.log, self._listers)

    def can_list_holds(self, src_caps: Capabilities, dst_caps: Capabilities) -> None:
        self._listers = tuple(host for host, caps in ((self.src, src_caps), (self.dst, dst_caps)) if caps.holds_list)

    # -- the run ---------------------------------------------------------------------------------------------------
    def run(self, check_mode: bool = False, now: datetime | None = None) -> RunResult:
        start = time.monotonic()
        now = now or datetime.now(timezone.utc)
        sides = self.probe()
        preflight = Preflight(self.task, sides.src, sides.dst, sides.src_caps, sides.dst_caps, self.log)
        counter_on_sender = preflight.tools()
        preflight.capabilities()
        preflight.source_zone()
        listings = Listings(self.task, sides.src, sides.dst)
        source, target = both_sides(lambda: listings.source(sides.src_caps), lambda: listings.target(sides.dst_caps))
        preflight.encrypted_sources(source)
        self.keys.obtain(target.listing, check_mode)  # before anything changes: a lost key stops the run here

        def transfer(source: Listing, target: Listing | None, target_local: dict[str, dict[str, str]] | None = None) -> Transfer:
            streams = Streams(self.task, sides.src, sides.dst, sides.src_caps, sides.dst_caps, source, target,
                              parent_encrypted=target_listing.parent_encrypted, counter_on_sender=counter_on_sender, log=self.log,
                              target_local=target_local)
            changes = TargetChanges(sides.dst, sides.dst_caps, self.holds, self.log)
            return Transfer(self.task, streams, self.keys, self.first_fulls, changes, self.log, self._sleep)

        target_listing = target
        prepared = self.prepare(sides, listings, source, target, transfer, now, check_mode)
        plan_task = self.task.plan_task(now)  # selection, schedules and lifetimes: built once, for the plan and retention
        the_plan = self.plan(plan_task, prepared)
        target_local = read_target_local(self.task, sides.dst, sides.dst_caps, prepared.target, the_plan.datasets, self.log)
        planned = transfer(prepared.source, prepared.target, target_local)
        results, errors = self.report_plan(the_plan, prepared, planned.streams)
        executed = self.execute(the_plan, plan_task, prepared, planned, results, errors, check_mode)
        return self.result(start, check_mode, sides, the_plan, prepared, executed, results, errors)

    def probe(self) -> Sides:
        if self.dst is self.src:
            src_caps = dst_caps = probe(self.src)
        else:  # both sides at once: over a long link the round trips overlap
            src_caps, dst_caps = both_sides(lambda: probe(self.src), lambda: probe(self.dst))
        self.can_list_holds(src_caps, dst_caps)
        self.log(
            f"task {self.task.name}: {self.task.direction} from {self.src.label} ({src_caps.family}) "
            f"to {self.dst.label} ({dst_caps.family}) over {self.task.transport}"
        )
        if self.task.target_access == "append_only":
            self.log("target_access append_only: the target's key only receives (no destroy, rollback or recv -F from here)"
                     + (f"; retention_policy {self.task.retention_policy} is applied by the target host itself"
                        if self.task.retention_policy != "none" else ""))
        return Sides(self.src, self.dst, src_caps, dst_caps)

    def prepare(self, sides: Sides, listings: Listings, source: Listing, target: TargetListing,
                transfer: Callable[[Listing, Listing | None], Transfer], now: datetime, check_mode: bool) -> Prepared:
        """Before planning: take the snapshots create_snapshot asks for, finish (or abort) interrupted receives, and
        discard what a first full cut in an earlier run left; each lists its side again when it changed it."""
        if self.task.create_snapshot and take_missing_snapshots(self.task, sides.src, source, now, check_mode, self.log):
            source = listings.source(sides.src_caps)
        before = target.listing
        resumed: set[str] = set()
        if before is not None and sides.dst_caps.resumable:
            # As the run's first transfers see the target: not yet listed for the plan (a resume is never a first full).
            touched, resumed = resume_interrupted(transfer(source, None), before, check_mode)
            if touched:
                before = listings.target(sides.dst_caps).listing
        # A first full of this task cut in an earlier run (killed, rebooted) left an empty target: discard it, send again.
        if self.first_fulls.recover(before, sides.dst, sides.dst_caps, check_mode, self._sleep):
            before = listings.target(sides.dst_caps).listing
        return Prepared(source, self.first_fulls.visible(before), resumed)

    def plan(self, plan_task: PlanTask, prepared: Prepared) -> Plan:
        try:
            the_plan = plan(plan_task, prepared.source, prepared.target)
        except PlanError as exc:
            raise TaskError(str(exc)) from exc
        self.first_fulls.annotate(the_plan)  # our own cut first transfers: resumed or sent again, never 'unrelated'
        return the_plan

    def report_plan(self, the_plan: Plan, prepared: Prepared, streams: Streams) -> tuple[dict[str, DatasetResult], list[str]]:
        """Log the plan, dataset by dataset, every destructive step named; the results to fill and the refusals."""
        errors: list[str] = []
        results = {d.target: DatasetResult(d.source, d.target, d.action, d.base, resumed=d.target in prepared.resumed)
                   for d in the_plan.datasets}
        for d in the_plan.datasets:
            self.log(f"plan {d.source} -> {d.target}: {d.action}" + (f" (base {d.base})" if d.base else "") + (f": {d.message}" if d.message else ""))
            if d.destroy_before:
                self.log(f"  destroy first: {', '.join(d.destroy_before)}")
            if d.rollback:
                self.log(f"  roll back {d.target} to {d.base} (discards changes made on the target after it)")
            if d.force_destroys:
                self.log(f"  zfs recv -F replaces the target tree: {', '.join(d.force_destroys)} and their snapshots may be destroyed")
            for n, why in d.skipped:
                self.log(f"  skip {n}: {why}")
            for s in d.sends:
                self.log(f"  {s.describe()}{recv_settings_note(streams, s)}")
            for n, why in d.destroy_after:
                self.log(f"  destroy {n}: {why}")
            if d.action == "refused":
                results[d.target].error = d.message
                errors.append(d.message)
        return results, errors

    def holds_need_repair(self, dplan: DatasetPlan, prepared: Prepared) -> bool:
        return self.task.hold_base and Holds.need_repair(dplan, prepared.source, prepared.target)

    def execute(self, the_plan: Plan, plan_task: PlanTask, prepared: Prepared, transfer: Transfer,
                results: dict[str, DatasetResult], errors: list[str], check_mode: bool) -> Executed:
        """Carry the plan out (nothing in check mode), then list the target once: verification and retention read it."""
        before = prepared.target
        repair = [d for d in the_plan.datasets if self.holds_need_repair(d, prepared)]
        if check_mode:
            return Executed(before, None, the_plan.has_work or any(d.action == "resume" for d in the_plan.datasets))
        if not the_plan.has_work:
            # Nothing to send, but the holds are not on the common snapshot: a killed run left them behind, or this
            # run's resume of an interrupted receive completed the snapshot the holds must move to.
            if repair:
                try:
                    self.holds.move(repair, prepared.source, before)
                except TransportError as exc:
                    errors.append(f"hold: {exc}")
            return Executed(before, None, bool(prepared.resumed))
        sent = self.send(the_plan, prepared, transfer, results, errors)
        if before is not None and only_adds(the_plan, before):
            # The snapshots sent are read while the holds move (neither changes what the other reads): a catch-up's
            # two last steps at once.
            after, done = both_sides(lambda: list_received(self.dst, before, [d for d in the_plan.datasets if d.sends]),
                                     lambda: self.settle(the_plan, prepared, sent, results, errors))
        else:  # the whole tree again, once the holds have moved: retention reads it
            done = self.settle(the_plan, prepared, sent, results, errors)
            after = self.list_after(the_plan, transfer)
        verify(the_plan, prepared.source, after, errors, results)
        destroyed = transfer.changes.retain(done, prepared.source, after, plan_task, results, errors)
        if self.task.mount:
            mount_received(self.task, self.dst, the_plan, results, self.log)
        names_after = snapshot_names(after)
        for target, gone in destroyed.items():
            names_after[target] = [n for n in names_after.get(target, []) if n not in gone]
        rolled_back = any(d.rollback and not results[d.target].error for d in the_plan.datasets)
        changed = (
            snapshot_names(before) != names_after or bool(the_plan.set_readonly) or the_plan.create_target_root
            or bool(prepared.resumed) or rolled_back
        )
        return Executed(after, names_after, changed)

    def list_after(self, the_plan: Plan, transfer: Transfer) -> Listing | None:
        """The whole target tree after a run that did more than add snapshots to existing targets (_verify.only_adds),
        for verification and retention."""
        try:
            return list_tree(self.dst, transfer.streams.dst_caps, self.task.target_dataset, (CREATION,))
        except DatasetMissing:
            return None

    def send(self, the_plan: Plan, prepared: Prepared, transfer: Transfer, results: dict[str, DatasetResult],
             errors: list[str]) -> list[DatasetPlan]:
        """Create, send, roll back: the datasets whose plan succeeded (then :meth:`settle`)."""
        if the_plan.create_target_root:
            self.log(f"create {self.task.target_dataset} on {self.dst.label}")
            self.dst.run(["zfs", "create", self.task.target_dataset])
        self.keys.load(the_plan, prepared.target)
        work = [d for d in the_plan.datasets if d.sends or d.destroy_before or d.destroy_after or d.rollback]
        return transfer.run_all(work, results, errors)

    def settle(self, the_plan: Plan, prepared: Prepared, done: list[DatasetPlan], results: dict[str, DatasetResult],
               errors: list[str]) -> list[DatasetPlan]:
        """After the sends: move the holds, set readonly. Returns the datasets whose target retention may run (their
        plan succeeded and the holds moved); retention itself runs on the listing taken after the sends."""
        moved = [d for d in done if d.sends and d.pending] + [d for d in the_plan.datasets if self.holds_need_repair(d, prepared)]
        if self.task.hold_base:
            try:
                self.holds.move(moved, prepared.source, prepared.target)
            except TransportError as exc:
                errors.append(f"hold: {exc}")
                done = []  # an old base may still be held: no retention this run
        for troot in the_plan.set_readonly:
            root_result = results.get(troot)
            if root_result is not None and root_result.error and dataset_type(self.dst, troot) is None:
                continue
            self.log(f"set readonly=on on {troot}")
            try:
                self.dst.run(["zfs", "set", "readonly=on", troot])
            except TransportError as exc:
                errors.append(f"readonly: cannot set readonly=on on {troot}: {exc}")
        return [d for d in done if d.destroy_after]

    def result(self, start: float, check_mode: bool, sides: Sides, the_plan: Plan, prepared: Prepared, executed: Executed,
               results: dict[str, DatasetResult], errors: list[str]) -> RunResult:
        before, after, names_after = prepared.target, executed.after, executed.names_after
        for target, point in listing_recovery_points(after, results).items():
            results[target].recovery_point = point
        result = RunResult(
            task=self.task.name,
            changed=executed.changed or self.keys.new,
            plan=the_plan,
            datasets=list(results.values()),
            duration=time.monotonic() - start,
            errors=errors,
            log=self.lines,
            source_capabilities=sides.src_caps,
            target_capabilities=sides.dst_caps,
            before=snapshot_names(before),
            after=planned_after(before, the_plan) if check_mode else names_after if names_after is not None else snapshot_names(after),
            key_file=str(self.keys.key_file) if self.keys.key_file is not None else None,
        )
        self.log(
            f"task {self.task.name}: {'check mode, ' if check_mode else ''}{result.snapshots_sent} snapshot(s) sent, "
            f"{result.bytes if result.bytes is not None else '?'} bytes, {result.duration:.2f}s, "
            f"{'FAILED: ' + '; '.join(errors) if errors else 'ok'}"
        )
        return result


def recv_settings_note(streams: Streams, send: Send) -> str:
    """What the plan line of SEND adds when the target's own values were read: the -o its receive still sets, and
    those the target holds already (no -o, no commit for them)."""
    if streams.target_local is None or not trimmable(send):
        return ""
    setting, held = streams.recv_settings(send)
    parts = ([f"recv -o {', '.join(f'{p}={v}' for p, v in setting)}"] if setting else []) + \
        ([f"held on the target: {', '.join(f'{p}={v}' for p, v in held)}"] if held else [])
    return f" ({'; '.join(parts)})" if parts else ""


def run_replication(
    params: dict[str, Any], check_mode: bool = False, log: Callable[[str], None] | None = None, now: datetime | None = None
) -> RunResult:
    """Validate ``params`` and run the task once. Raises TaskError for bad input or unreachable hosts."""
    task = ReplicationTask.from_params(params)
    runner = Runner(task, log, state_dir=params.get("state_dir"))
    try:
        return runner.run(check_mode=check_mode, now=now)
    except (ConnectionFailed, ZfsError, TransportError) as exc:
        raise TaskError(str(exc)) from exc
    finally:
        runner.close()


def release_holds(params: dict[str, Any], check_mode: bool = False, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Release the task's holds on both sides (the task is being removed). Returns what was released."""
    task = ReplicationTask.from_params(params)
    runner = Runner(task, log)
    released: dict[str, list[str]] = {"source": [], "target": []}
    try:
        src_caps = probe(runner.src)
        dst_caps = src_caps if runner.dst is runner.src else probe(runner.dst)
        runner.can_list_holds(src_caps, dst_caps)
        sides = [("source", runner.src, src_caps, task.source_datasets), ("target", runner.dst, dst_caps, [task.target_dataset])]
        for side, host, caps, roots in sides:
            try:
                listing = list_tree(host, caps, roots)
            except DatasetMissing:
                continue
            released[side] = runner.holds.release_all(host, listing, check_mode)
    except (ConnectionFailed, ZfsError, TransportError) as exc:
        raise TaskError(str(exc)) from exc
    finally:
        runner.close()
    return {"task": task.name, "changed": bool(released["source"] or released["target"]), "released": released, "log": runner.lines}


__all__ = ["DatasetResult", "ReplicationTask", "RunResult", "Runner", "TaskError", "run_replication", "suggest_name"]
