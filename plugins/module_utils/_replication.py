# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One run of a replication task: probe, list, plan, execute, verify.

The module and the timer entry point both call :func:`run_replication`. The host that runs it
is the source for ``push`` and the target for ``pull``; the other side is reached with ssh.
"""
from __future__ import annotations

import shlex
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, TypeVar

from . import _netcat as netcat
from ._executor import PipelineError, PipelineResult, Stage, Watch, remote_stage, run_pipeline
from ._first_full import FirstFulls, prepare_retry, settle, stuck_message
from ._holds import Holds, hold_tag
from ._keys import key_path
from ._lag import CREATION, listing_recovery_points
from ._planner import DatasetPlan, Plan, PlanError, PlanTask, Send, plan, target_retention, target_root
from ._preflight import Preflight, netcat_sender_listens
from ._progress import StreamProgress
from ._received_props import ReceivedProps, fixed_properties
from ._replication_task import ReplicationTask, TaskError, suggest_name
from ._streams import Streams
from ._target_keys import TargetKeys
from ._transport import AppendOnlyHost, ConnectionFailed, Host, LocalHost, SSHHost, TransportError
from ._zfs import Capabilities, DatasetMissing, Listing, Snapshot, ZfsError, dataset_type, is_within, list_tree, probe, zfs_values

A = TypeVar("A")
B = TypeVar("B")
TRANSIENT_HINTS = ("Connection reset", "Connection closed", "Connection timed out", "connection lost", "Broken pipe")


@dataclass
class DatasetResult:
    source: str
    target: str
    action: str
    base: str | None
    snapshots_sent: list[str] = field(default_factory=list)
    destroyed: list[str] = field(default_factory=list)
    bytes: int | None = None
    duration: float = 0.0
    attempts: int = 0
    estimated_bytes: int | None = None
    resumed: bool = False
    error: str | None = None
    recovery_point: str | None = None  # _lag: creation of the target's newest snapshot after the run (ISO, UTC)


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
    key_file: str | None = None  # encryption_key_generate: where the key is kept on this host (the path, never the key)

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
                    "destroyed": d.destroyed,
                    "bytes": d.bytes,
                    "duration": round(d.duration, 3),
                    "attempts": d.attempts,
                    "estimated_bytes": d.estimated_bytes,
                    "resumed": d.resumed,
                    "error": d.error,
                    "recovery_point": d.recovery_point,
                }
                for d in self.datasets
            },
            "snapshots_sent": self.snapshots_sent,
            "bytes": self.bytes,
            "duration": round(self.duration, 3),
            "errors": self.errors,
            "log": self.log,
            **({"encryption_key_file": self.key_file} if self.key_file else {}),
            "capabilities": {
                "source": self.source_capabilities.as_dict() if self.source_capabilities else None,
                "target": self.target_capabilities.as_dict() if self.target_capabilities else None,
            },
        }


def snapshot_names(listing: Listing | None) -> dict[str, list[str]]:
    if listing is None:
        return {}
    return {name: [s.name for s in ds.snapshots] for name, ds in listing.datasets.items()}


def is_transient(exc: PipelineError) -> bool:
    """A connection that dropped (ssh exit 255, a remote stage that never reported) is worth a retry;
    ZFS refusing the stream (modified target, no space, bad stream) is not."""
    for s in exc.stages:
        if s.rc == 255 and ("ssh" in s.name or " on " in s.name or not s.stderr.strip().startswith("cannot")):
            return True
        if s.rc != 0 and s.name.startswith("nc") and "refused" in s.stderr:
            return True
    return any(h in str(exc) for h in TRANSIENT_HINTS) and not any("cannot receive" in s.stderr for s in exc.stages)


def target_appeared(exc: PipelineError) -> bool:
    """zfs recv of a full stream refused because its target exists ("destination ... exists, must specify -F")."""
    return any(s.rc != 0 and "destination" in s.stderr and "exists" in s.stderr for s in exc.stages)


class Runner:
    """One run of a replication task."""

    def __init__(self, task: ReplicationTask, log: Callable[[str], None] | None = None, sleep: Callable[[float], None] = time.sleep,
                 state_dir: str | None = None):
        self.task = task
        self.lines: list[str] = []
        self._log_cb = log
        self._log_lock = threading.Lock()
        self._sleep = sleep
        remote_class = AppendOnlyHost if task.target_access == "append_only" else SSHHost
        remote: Host | None = None if task.transport == "local" else remote_class(task.ssh, sudo=task.sudo)  # type: ignore[arg-type]
        local = LocalHost(sudo=task.local_sudo)
        self.remote = remote
        if task.direction == "pull":
            self.src, self.dst = remote, local  # type: ignore[assignment]
        else:
            self.src, self.dst = local, remote or local
        self.src_caps: Capabilities | None = None
        self.dst_caps: Capabilities | None = None
        self.counter_on_sender = False
        self.source: Listing | None = None
        self.target_listing: Listing | None = None
        self.resumed: set[str] = set()
        self.parent_encrypted = False
        self.first_fulls = FirstFulls(state_dir, task.name, self.log)  # first transfers in progress, on this host
        # encryption_key_generate: the key is kept on this host (_keys), read or made once per run, passed on stdin only.
        self.keys = TargetKeys(task, self.dst, [target_root(task.source_datasets, task.target_dataset, s) for s in task.source_datasets],
                               self.log, key_path(state_dir, task.name) if task.encryption and task.encryption_key_generate else None)

    def preflight(self) -> Preflight:
        """The checks before a run lists anything (and of its encrypted sources once listed)."""
        return Preflight(self.task, self.src, self.dst, self.src_caps, self.dst_caps, self.log)

    def streams(self) -> Streams:
        """How this run builds its streams, from what it knows of both sides now (probed; listed once planned)."""
        return Streams(self.task, self.src, self.dst, self.src_caps, self.dst_caps, self.source, self.target_listing,
                       self.parent_encrypted, self.counter_on_sender)

    def log(self, line: str) -> None:
        with self._log_lock:  # datasets transfer in parallel: whole lines, one at a time
            self.lines.append(line)
            if self._log_cb:
                self._log_cb(line)

    def close(self) -> None:
        if self.remote is not None:
            self.remote.close()

    # -- preparation ---------------------------------------------------------
    # -- listing -------------------------------------------------------------
    def list_source(self, caps: Capabilities) -> Listing:
        try:
            return list_tree(self.src, caps, self.task.source_datasets)
        except DatasetMissing as exc:
            raise TaskError(
                f"source_datasets: {', '.join(exc.names)} does not exist on {self.src.label}: check the name (zfs list) or create it"
            ) from exc

    def list_target(self, caps: Capabilities) -> Listing | None:
        target = self.task.target_dataset
        try:
            # allow_rollback plans a rollback only when the target was written to since the base (`written`, OpenZFS).
            written = ["written"] if self.task.allow_rollback and caps.list_parsable else []
            listing = list_tree(self.dst, caps, target, [*fixed_properties(self.task, caps), *written, CREATION])
        except DatasetMissing:
            listing = None
        if listing is not None:
            root = listing.get(target)
            if root is not None and root.type == "volume" and (len(self.task.source_datasets) > 1 or self.task.recursive):
                raise TaskError(f"target_dataset {target} is a zvol: a zvol cannot hold replicated datasets; choose a filesystem")
            return listing
        parent = target.rsplit("/", 1)[0]
        kind = dataset_type(self.dst, parent)
        if kind is not None and caps.encryption:
            enc = self.dst.run(["zfs", "get", "-H", "-p", "-o", "value", "encryption", parent], check=False).stdout.strip()
            self.parent_encrypted = enc not in ("off", "-", "")
        if kind is None:
            raise TaskError(
                f"target_dataset {target}: its parent {parent} does not exist on {self.dst.label}; "
                "only the last path component is created: create the parent first"
            )
        if kind == "volume":
            raise TaskError(f"target_dataset {target}: its parent {parent} is a zvol, which cannot hold datasets: choose a filesystem")
        return None

    # -- streams -------------------------------------------------------------
    def run_stream(self, send: Send, expected: int | None = None) -> PipelineResult:
        """One attempt at SEND; EXPECTED is its estimated size, for the progress lines (progress_interval)."""
        streams = self.streams()
        sender, counter = streams.sender_parts(send)
        receiver = streams.receiver_parts(send)
        where = {"ssh": "ssh", "ssh+netcat": "nc", "local": ""}[self.task.transport]
        self.log("  $ " + " | ".join(shlex.join(p.argv) for p in sender) + (f" | {where} | " if where else " | ")
                 + " | ".join(shlex.join(p.argv) for p in receiver))
        progress = None
        if counter is not None and self.task.progress_interval > 0:
            progress = StreamProgress(send.target, send.snapshot or "(resumed)", expected, self.log)
        watch = Watch(self.task.progress_interval, progress) if progress is not None else None
        try:
            return self._run_stream(send, sender, counter, receiver, watch)
        finally:
            if progress is not None:
                progress.end()

    def _run_stream(self, send: Send, sender: list[Stage], counter: int | None, receiver: list[Stage],
                    watch: Watch | None) -> PipelineResult:
        if self.task.transport == "ssh+netcat":
            return self.run_netcat(sender, counter, receiver, watch)
        stages: list[Stage] = []
        if self.src.is_local:
            stages += sender
        else:
            stages.append(remote_stage(self.src, sender))
            counter = 0 if counter is not None else None
        if self.dst.is_local:
            stages += receiver
        else:
            stages.append(remote_stage(self.dst, receiver))
        return run_pipeline(stages, counter, watch)

    def run_netcat(self, sender: list[Stage], counter: int | None, receiver: list[Stage], watch: Watch | None = None) -> PipelineResult:
        """Data over a plain TCP connection (see _netcat): the active side (netcat.active_side, by default the receiving
        side) listens, the other connects."""
        nc = self.task.netcat
        if nc is None or self.task.ssh is None:
            raise TaskError("transport ssh+netcat needs the ssh and netcat options")
        try:
            listen_addr, connect_addr = netcat.addresses(self.task.direction, self.task.ssh.host, nc.listen_address, nc.connect_address,
                                                         nc.active_side)
        except ValueError as exc:
            raise TaskError(str(exc)) from exc
        sender_listens = netcat_sender_listens(self.task)
        listen_host = self.src if sender_listens else self.dst
        port = self.free_port(listen_host, nc.port_min, nc.port_max)
        stream = netcat.build(listen_host, self.src, listen_addr, connect_addr, port, sender, receiver, sender_listens)
        side = "sending" if sender_listens else "receiving"
        self.log(f"  netcat: {listen_host.label} ({side} side) listens on {listen_addr}:{port}; data is NOT encrypted")
        return netcat.run(stream, counter, self.port_listening, watch=watch)

    def free_port(self, host: Host, low: int, high: int) -> int:
        try:
            return netcat.pick_port(self._listening_ports(host), low, high, host.label)
        except ValueError as exc:
            raise TaskError(str(exc)) from exc

    def _listening_ports(self, host: Host) -> set[int]:
        return netcat.listening_ports(host)

    def port_listening(self, host: Host, port: int) -> bool:
        return port in self._listening_ports(host)

    # -- execution -----------------------------------------------------------
    def destroy(self, dataset: str, names: list[str], why: str) -> None:
        """Destroy snapshots of one dataset: one call on OpenZFS (a@x,y,z), one per snapshot on older CLIs."""
        if not names:
            return
        self.log(f"destroy {dataset}@{','.join(names)} on {self.dst.label}: {why}")
        if self.dst_caps is not None and self.dst_caps.version:
            self.dst.run(["zfs", "destroy", f"{dataset}@{','.join(names)}"])
        else:
            for name in names:
                self.dst.run(["zfs", "destroy", f"{dataset}@{name}"])

    def send_with_retries(self, send: Send, res: DatasetResult, expected: int | None = None) -> PipelineResult:
        delay = self.task.retry_delay
        attempt = 0
        resent_first_full = False  # a cut first full found nothing on the target and is sent again in full
        while True:
            attempt += 1
            res.attempts += 1
            try:
                result = self.run_stream(send, expected)
            except PipelineError as exc:
                # The receive of the cut stream may still be saving its state when the target is read (a slow target):
                # the full sent again then finds the target there; read it again, it now carries a token to resume.
                late = resent_first_full and target_appeared(exc)
                transient = is_transient(exc) or late
                if transient and self.arrived(send):
                    # The connection dropped only after the receive had committed (a multiplexed ssh session drains
                    # what it holds): sending it again would be refused ("destination exists") on every retry.
                    self.log(f"  {send.target}: the connection dropped after {send.target}@{send.snapshot} had arrived "
                             f"(same guid as the source): nothing to send again")
                    return PipelineResult(exc.stages, 0.0, None)
                if attempt > self.task.retries or not transient:
                    raise
                self.log(f"  {send.target}: attempt {attempt} failed ({exc}); retrying in {delay:g}s")
                self._sleep(delay)
                delay = min(delay * 2, 300)
                # Continue from what the cut stream left on the target: resume its token, or discard our own empty leftover.
                resumable = bool(self.dst_caps and self.dst_caps.resumable and self.src_caps and self.src_caps.resumable)
                if self.dst_caps is not None:
                    why = prepare_retry(send, self.dst, self.dst_caps, resumable, self.is_first_full(send), self._sleep, self.log)
                    if why is not None:
                        raise PipelineError(f"{exc}; {why}", exc.stages) from exc
                    res.resumed = res.resumed or bool(send.token)
                    resent_first_full = send.mode == "full" and not send.token and not send.replicate and self.is_first_full(send)
                continue
            # zfs recv exits 0 when the user may not set a property the stream carries (zfs allow): say so, and how.
            for stage in result.stages:
                if stage.rc == 0 and stage.advice:
                    self.log(f"  {send.target}: warning: {stage.name} on {stage.host} was refused part of the stream's "
                             f"properties; {stage.advice}")
            return result

    def arrived(self, send: Send) -> bool:
        """Did the stream reach the target before its connection dropped? Its last snapshot is there, with the guid the
        source listed for it (one zfs get)."""
        src = self.source.get(send.source) if self.source is not None and not send.replicate else None
        want = next((s.guid for s in src.snapshots if s.name == send.snapshot), None) if src is not None else None
        snap = f"{send.target}@{send.snapshot}"
        return bool(want) and self.target_guids([snap]).get(snap) == want

    def target_guids(self, snaps: list[str]) -> dict[str, str]:
        """{snapshot: guid} of SNAPS on the target right now (one zfs get); a snapshot that is not there is left out."""
        return zfs_values(self.dst, "guid", snaps)

    def rollback(self, dplan: DatasetPlan) -> None:
        self.log(f"rollback {dplan.target}@{dplan.base} on {self.dst.label} (allow_rollback: discards changes made on the target after it)")
        self.dst.run(["zfs", "rollback", f"{dplan.target}@{dplan.base}"])

    def unmount_replaced(self, target: str) -> None:
        """Unmount the target a from-scratch full stream (zfs recv -F) replaces, before the receive: recv -F has to
        unmount it anyway, and zfs-fuse, doing that itself, fails now and then with "cannot receive new filesystem
        stream: I/O error" (measured: 5 of 20 such receives; 0 of 20 after an explicit unmount). Not mounted, or a
        volume: nothing to do. Busy: the receive then fails and says so."""
        out = self.dst.run(["zfs", "unmount", target], check=False)
        if out.returncode == 0:
            self.log(f"unmounted {target} on {self.dst.label}: the zfs recv -F of a full stream replaces it")

    def destroy_listed(self, dplan: DatasetPlan, why: str) -> list[str]:
        """Destroy the target snapshots the plan lists in destroy_before, only if each still has the guid it was
        planned on (one zfs get for all of them, right before): a snapshot replaced since the listing is refused."""
        names = dplan.destroy_before
        snaps = [f"{dplan.target}@{n}" for n in names]
        now = self.target_guids(snaps)
        changed = [n for n in names if now.get(f"{dplan.target}@{n}") != dplan.destroy_guids.get(n)]
        if changed:
            raise TransportError(
                f"not destroying {dplan.target}@{','.join(changed)}: changed since this run listed it (guid differs or it is gone); "
                "nothing was destroyed, the next run plans again"
            )
        # The task's own hold (on an earlier base) must not block what the user consented to.
        self.holds.batch(self.dst, "release", snaps, strict=False)
        self.destroy(dplan.target, names, why)
        return list(names)

    def execute_dataset(self, dplan: DatasetPlan, res: DatasetResult, errors: list[str]) -> bool:
        """Run one dataset's plan. Returns False when it failed."""
        try:
            if dplan.destroy_before:
                why = "allow_from_scratch" if dplan.base is None else "allow_rollback (diverged after the common snapshot)"
                res.destroyed += self.destroy_listed(dplan, why)
            if dplan.rollback:
                self.rollback(dplan)
            if any(s.force for s in dplan.sends):
                self.unmount_replaced(dplan.target)
        except TransportError as exc:
            res.error = f"{dplan.target}: {exc}"
            errors.append(res.error)
            return False
        uncounted = False
        for send in dplan.sends:
            self.log(send.describe())
            est, how = self.streams().estimate(send)
            if est is not None:
                res.estimated_bytes = (res.estimated_bytes or 0) + est
                self.log(f"  estimated size {est} bytes ({how})")
            first = self.is_first_full(send)
            if first:
                src = self.source.get(send.source) if self.source is not None else None
                snap = src.by_name().get(send.snapshot) if src is not None else None
                self.first_fulls.start(send.target, f"{send.source}@{send.snapshot}", snap.guid if snap else "", self.dst.label)
            try:
                self.keys.prepare(send, self.target_listing)
                out = self.send_with_retries(send, res, est)
            except PipelineError as exc:
                left = self.discard_partial_full(send)
                res.error = f"{send.describe()}: {explain_receive_error(str(exc), dplan)}{left}"
                errors.append(res.error)
                self.log(f"FAILED {res.error}")
                return False
            except TransportError as exc:
                res.error = f"{send.describe()}: {exc}"
                errors.append(res.error)
                return False
            finally:
                self.keys.finish(send)
            if first:
                self.first_fulls.clear(send.target)
            res.snapshots_sent += send.snapshots
            res.duration += out.duration
            uncounted = uncounted or out.bytes is None
            res.bytes = None if uncounted else (res.bytes or 0) + (out.bytes or 0)
            self.log(f"done {send.target}@{send.snapshot}: {out.bytes if out.bytes is not None else '?'} bytes in {out.duration:.2f}s")
            try:
                ReceivedProps(self.streams(), self.log).fix(send)
            except TransportError as exc:
                res.error = f"{send.target}: properties: {exc}"
                errors.append(res.error)
                return False
        return True

    def apply_retention(self, dplan: DatasetPlan, decided: list[tuple[str, str]], res: DatasetResult, errors: list[str]) -> list[str]:
        """Destroy the target snapshots retention decided for one dataset. Returns what was destroyed."""
        if not decided:
            return []
        names = [n for n, _unused in decided]
        try:
            self.destroy(dplan.target, names, "retention: " + "; ".join(sorted({r for _unused, r in decided})))
            res.destroyed += names
        except TransportError as exc:
            res.error = f"{dplan.target}: retention: {exc}"
            errors.append(res.error)
            return []
        return names

    @property
    def holds(self) -> Holds:
        return Holds(hold_tag(self.task.name), self.src, self.dst, self.log)

    def holds_need_repair(self, dplan: DatasetPlan) -> bool:
        return self.task.hold_base and Holds.need_repair(dplan, self.source, self.target_listing)

    def is_first_full(self, send: Send) -> bool:
        """The first full stream into a target that did not exist when this run listed it: its leftover is ours."""
        return send.mode == "full" and not send.force and (self.target_listing is None or self.target_listing.get(send.target) is None)

    def discard_partial_full(self, send: Send) -> str:
        """After a first full stream failed for good: keep a resumable partial receive for the next run, or destroy
        the empty dataset it left (zfs-fuse), so the next run sends again instead of refusing an 'unrelated' target.
        Returns what the run's error should add about the target's state ('' when there is nothing to say)."""
        if not self.is_first_full(send) or self.dst_caps is None:
            return ""
        try:
            out = settle(self.dst, self.dst_caps, send.target, True, self._sleep, self.log, "left without snapshots by the failed first full stream")
        except (ZfsError, TransportError) as exc:
            return f"; the state of {send.target} could not be read ({exc}): the next run looks again"
        if out.action == "resume":
            return f"; {send.target} keeps what arrived (receive_resume_token): the next run resumes it"
        if out.action in ("discarded", "resend"):
            self.first_fulls.clear(send.target)
            return "; nothing of it was kept: the next run sends it again" if out.action == "discarded" else ""
        if out.action == "stuck":
            return "; " + stuck_message(send.target, self.first_fulls.get(send.target), out.reason)
        return ""

    def target_root(self, source_root: str) -> str:
        return target_root(self.task.source_datasets, self.task.target_dataset, source_root)

    def resume_interrupted(self, listing: Listing, check_mode: bool) -> bool:
        """Finish receives that left a resume token, or abort stale ones. True when the target changed."""
        touched = False
        for ds in listing.datasets.values():
            token = ds.props.get("receive_resume_token", "-")
            if token in ("-", ""):
                continue
            source = self.source_for(ds.name)
            if check_mode:
                self.log(f"{ds.name} has a resume token: the run would resume it")
                self.first_fulls.note_resume(ds.name)
                continue
            send = Send(source or "", ds.name, "resume", "", token=token)
            self.log(f"resume {ds.name} from its receive_resume_token")
            stale = source is None
            if not stale:
                try:
                    out = self.send_with_retries(send, DatasetResult(source or "", ds.name, "resume", None))
                    self.log(f"resumed {ds.name}: {out.bytes if out.bytes is not None else '?'} bytes in {out.duration:.2f}s")
                    self.resumed.add(ds.name)
                    touched = True
                    continue
                except PipelineError as exc:
                    text = str(exc)
                    stale = any(h in text for h in ("no longer exists", "does not exist", "cannot resume", "kernel modules must be upgraded", "toguid"))
                    if not stale:
                        raise TaskError(f"resuming the interrupted receive of {ds.name} failed: {text}") from exc
            self.log(f"the resume token of {ds.name} is stale (its snapshot is gone): zfs recv -A, then replan")
            self.dst.run(["zfs", "recv", "-A", ds.name])
            touched = True
        return touched

    def take_missing_snapshots(self, source: Listing, now: datetime, check_mode: bool) -> bool:
        """create_snapshot: a source root (or, when recursive, any dataset of its tree) without a selected
        snapshot gets one now, named by the first naming schema (zfs snapshot -r for a tree). True when taken."""
        from ._tz import zone

        selection = self.task.selection()
        schema = self.task.schemas()[0]
        name = schema.format(now.astimezone(zone(self.task.timezone, "timezone")))
        taken = False
        for root in self.task.source_datasets:
            members = [d for n, d in source.datasets.items() if is_within(n, root)] if self.task.recursive else [source.datasets[root]]
            members = [d for d in members if not any(is_within(d.name, ex) for ex in self.task.exclude)]
            if all(any(selection.matches(s.name) for s in d.snapshots) for d in members):
                continue
            argv = ["zfs", "snapshot", *(["-r"] if self.task.recursive else []), f"{root}@{name}"]
            if check_mode:
                self.log(f"create_snapshot: would take {root}@{name}{' recursively' if self.task.recursive else ''}")
                # Plan as if it were taken, so check mode shows the streams the real run sends.
                for d in (d for n, d in source.datasets.items() if is_within(n, root)) if self.task.recursive else [source.datasets[root]]:
                    top = max((x.createtxg for x in d.snapshots), default=0)
                    d.snapshots.append(Snapshot(d.name, name, f"planned-{d.name}@{name}", top + 1))
                continue
            self.log(f"create_snapshot: {root} has no snapshot matching the task: taking {root}@{name}")
            self.src.run(argv)
            taken = True
        return taken

    def mount_received(self, the_plan: Plan, results: dict[str, DatasetResult]) -> None:
        """mount: mount the filesystems that received something (they are received unmounted).

        One zfs get for them and their ancestors in the target tree, right before mounting. Not mounted: a
        mountpoint that came from the source, directly or inherited from a received ancestor. Mounted with
        nosuid,nodev whatever setuid/devices arrived, unless the task's properties_override turns them on."""
        targets = [d.target for d in the_plan.datasets if results[d.target].snapshots_sent and not results[d.target].error]
        if not targets:
            return
        names = set(targets)
        for name in targets:
            while "/" in name and is_within(name, self.task.target_dataset) and name != self.task.target_dataset:
                name = name.rsplit("/", 1)[0]
                names.add(name)
        proc = self.dst.run(["zfs", "get", "-H", "-o", "name,property,value,source", "type,mounted,canmount,mountpoint", *sorted(names)],
                            check=False)
        props: dict[str, dict[str, tuple[str, str]]] = {}
        for line in proc.stdout.splitlines():
            cols = line.split("\t")
            if len(cols) == 4:
                props.setdefault(cols[0], {})[cols[1]] = (cols[2], cols[3])

        def origin(name: str) -> str:
            """Where the mountpoint of ``name`` was set: local, received, default, or outside (an ancestor beyond these)."""
            for _depth in range(name.count("/") + 1):
                where = props[name]["mountpoint"][1]
                parent = where[len("inherited from "):] if where.startswith("inherited from ") else None
                if parent is None:
                    return where
                if parent not in props:
                    return "outside"
                name = parent
            return "outside"

        opts = [o for p, o in (("setuid", "nosuid"), ("devices", "nodev")) if str(self.task.properties_override.get(p, "off")) != "on"]
        for target in targets:
            got = props.get(target, {})
            kind, mounted, canmount = (got.get(p, ("", ""))[0] for p in ("type", "mounted", "canmount"))
            mountpoint = got.get("mountpoint", ("", ""))[0]
            if kind != "filesystem" or mounted == "yes" or canmount == "off" or mountpoint in ("none", "legacy", ""):
                continue
            if origin(target) == "received":
                self.log(f"not mounting {target}: its mountpoint {mountpoint} came from the source (set mountpoint on the target)")
                continue
            out = self.dst.run(["zfs", "mount", *(["-o", ",".join(opts)] if opts else []), target], check=False)
            self.log(f"mount {target} at {mountpoint}{' (' + ','.join(opts) + ')' if opts else ''}: "
                     + ("ok" if out.returncode == 0 else out.stderr.strip()))

    def source_for(self, target: str) -> str | None:
        for root in self.task.source_datasets:
            troot = self.target_root(root)
            if is_within(target, troot):
                return root + target[len(troot):]
        return None

    def execute(self, the_plan: Plan, results: dict[str, DatasetResult], errors: list[str]) -> list[DatasetPlan]:
        """Create, send, roll back, move holds, set readonly. Returns the datasets whose target retention may run
        (their sends succeeded and the holds moved); retention itself runs on the listing taken after this."""
        if the_plan.create_target_root:
            self.log(f"create {self.task.target_dataset} on {self.dst.label}")
            self.dst.run(["zfs", "create", self.task.target_dataset])
        self.keys.load(the_plan, self.target_listing)
        work = [d for d in the_plan.datasets if d.sends or d.destroy_before or d.destroy_after or d.rollback]
        done = self.transfer(work, results, errors)
        moved = [d for d in done if d.sends and d.pending] + [d for d in the_plan.datasets if self.holds_need_repair(d)]
        if self.task.hold_base:
            try:
                self.holds.move(moved, self.source, self.target_listing)
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

    def retain(self, done: list[DatasetPlan], source: Listing, after: Listing | None, the_task: PlanTask,
               results: dict[str, DatasetResult], errors: list[str]) -> dict[str, list[str]]:
        """Target retention after the sends, on ``after`` (listed once for the whole tree). Only what the logged
        plan listed can go, and only if it is still due on the target as it is now. Returns what was destroyed."""
        destroyed: dict[str, list[str]] = {}
        for dplan in done:
            src = source.get(dplan.source)
            tgt = after.get(dplan.target) if after is not None else None
            if src is None or tgt is None:
                continue
            planned = {n for n, _unused in dplan.destroy_after}
            due = target_retention(the_task, src, tgt.snapshots)
            for name in sorted(planned - {n for n, _unused in due}):
                self.log(f"  keep {dplan.target}@{name}: planned for retention, but not due on the target as it is after the sends")
            gone = self.apply_retention(dplan, [(n, why) for n, why in due if n in planned], results[dplan.target], errors)
            if gone:
                destroyed[dplan.target] = gone
        return destroyed

    @property
    def workers(self) -> int:
        """Datasets transferred at once. ssh+netcat picks a free port per stream: one at a time there."""
        return 1 if self.task.transport == "ssh+netcat" else self.task.parallel_transfers

    def transfer(self, work: list[DatasetPlan], results: dict[str, DatasetResult], errors: list[str]) -> list[DatasetPlan]:
        """Run every dataset's plan, up to ``workers`` at once; returns those that succeeded, in plan order.

        A dataset starts once its nearest ancestor in ``work`` has finished (the plan lists parents first, and
        the pool starts jobs in that order, so a waiting child never holds up its own parent). When that
        ancestor could not be created (a failed full send) or was itself skipped, the dataset is skipped.
        """
        status: dict[str, str] = {}  # source -> ok | failed | lost (a failed full send: nothing below it can land)
        jobs: dict[str, Future] = {}

        def job(dplan: DatasetPlan, parent: tuple[str, Future] | None) -> None:
            res = results[dplan.target]
            if parent is not None:
                parent[1].result()
                if status[parent[0]] == "lost":
                    res.error = f"{dplan.source}: skipped because a parent failed"
                    errors.append(res.error)
                    status[dplan.source] = "lost"
                    return
            if self.execute_dataset(dplan, res, errors):
                status[dplan.source] = "ok"
            else:
                status[dplan.source] = "lost" if res.action == "full" else "failed"

        with ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(work)))) as pool:
            for dplan in work:
                parent = _nearest_ancestor(dplan.source, jobs)
                jobs[dplan.source] = pool.submit(job, dplan, (parent, jobs[parent]) if parent is not None else None)
        for future in jobs.values():
            future.result()  # an unexpected error in a job is the run's error, as it was before threads
        return [d for d in work if status.get(d.source) == "ok"]

    def verify(self, the_plan: Plan, source: Listing, after: Listing | None, errors: list[str], results: dict[str, DatasetResult]) -> None:
        """Every snapshot reported sent is on the target with the source's guid."""
        for dplan in the_plan.datasets:
            res = results[dplan.target]
            src = source.get(dplan.source)
            if not res.snapshots_sent or src is None:
                continue
            tgt = after.get(dplan.target) if after is not None else None
            src_guids = {s.name: s.guid for s in src.snapshots}
            tgt_guids = {s.name: s.guid for s in tgt.snapshots} if tgt is not None else {}
            bad = [n for n in res.snapshots_sent if tgt_guids.get(n) != src_guids.get(n)]
            if bad:
                msg = f"verification: {dplan.target} lacks or has a different guid for {', '.join(bad)} after the transfer"
                res.error = msg
                errors.append(msg)

    def run(self, check_mode: bool = False, now: datetime | None = None) -> RunResult:
        start = time.monotonic()
        now = now or datetime.now(timezone.utc)
        errors: list[str] = []
        if self.dst is self.src:
            self.src_caps = self.dst_caps = probe(self.src)
        else:  # both sides at once: over a long link the round trips overlap
            self.src_caps, self.dst_caps = _both(lambda: probe(self.src), lambda: probe(self.dst))
        self.log(
            f"task {self.task.name}: {self.task.direction} from {self.src.label} ({self.src_caps.family}) "
            f"to {self.dst.label} ({self.dst_caps.family}) over {self.task.transport}"
        )
        if self.task.target_access == "append_only":
            self.log("target_access append_only: the target's key only receives (no destroy, rollback or recv -F from here)"
                     + (f"; retention_policy {self.task.retention_policy} is applied by the target host itself"
                        if self.task.retention_policy != "none" else ""))
        preflight = self.preflight()
        self.counter_on_sender = preflight.tools()
        preflight.capabilities()
        preflight.source_zone()
        src_caps, dst_caps = self.src_caps, self.dst_caps
        source, before = _both(lambda: self.list_source(src_caps), lambda: self.list_target(dst_caps))
        self.source = source
        preflight.encrypted_sources(source)
        self.keys.obtain(before, check_mode)  # before anything changes: a lost key stops the run here
        if self.task.create_snapshot and self.take_missing_snapshots(source, now, check_mode):
            source = self.source = self.list_source(self.src_caps)
        if before is not None and self.dst_caps.resumable and self.resume_interrupted(before, check_mode):
            before = self.list_target(self.dst_caps)
        # A first full of this task cut in an earlier run (killed, rebooted) left an empty target: discard it, send again.
        if self.first_fulls.recover(before, self.dst, self.dst_caps, check_mode, self._sleep):
            before = self.list_target(self.dst_caps)
        before = self.first_fulls.visible(before)
        self.target_listing = before
        plan_task = self.task.plan_task(now)  # selection, schedules and lifetimes: built once, for the plan and retention
        try:
            the_plan = plan(plan_task, source, before)
        except PlanError as exc:
            raise TaskError(str(exc)) from exc
        self.first_fulls.annotate(the_plan)  # our own cut first transfers: resumed or sent again, never 'unrelated'
        results = {d.target: DatasetResult(d.source, d.target, d.action, d.base, resumed=d.target in self.resumed) for d in the_plan.datasets}
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
                self.log(f"  {s.describe()}")
            for n, why in d.destroy_after:
                self.log(f"  destroy {n}: {why}")
            if d.action == "refused":
                results[d.target].error = d.message
                errors.append(d.message)
        after = before
        names_after: dict[str, list[str]] | None = None
        changed = False
        if check_mode:
            changed = the_plan.has_work or any(d.action == "resume" for d in the_plan.datasets)
        elif not the_plan.has_work and self.resumed:
            changed = True
        elif not the_plan.has_work and any(self.holds_need_repair(d) for d in the_plan.datasets):
            try:  # nothing to send, but a killed run left the holds behind: put them right
                self.holds.move([d for d in the_plan.datasets if self.holds_need_repair(d)], self.source, self.target_listing)
            except TransportError as exc:
                errors.append(f"hold: {exc}")
        elif the_plan.has_work:
            done: list[DatasetPlan] = []
            try:
                done = self.execute(the_plan, results, errors)
            finally:
                try:
                    after = list_tree(self.dst, self.dst_caps, self.task.target_dataset, (CREATION,))
                except DatasetMissing:
                    after = None
            self.verify(the_plan, source, after, errors, results)
            destroyed = self.retain(done, source, after, plan_task, results, errors)
            if self.task.mount:
                self.mount_received(the_plan, results)
            names_after = snapshot_names(after)
            for target, gone in destroyed.items():
                names_after[target] = [n for n in names_after.get(target, []) if n not in gone]
            rolled_back = any(d.rollback and not results[d.target].error for d in the_plan.datasets)
            changed = (
                snapshot_names(before) != names_after or bool(the_plan.set_readonly) or the_plan.create_target_root
                or bool(self.resumed) or rolled_back
            )
        changed = changed or self.keys.new
        for target, point in listing_recovery_points(after, results).items():
            results[target].recovery_point = point
        result = RunResult(
            task=self.task.name,
            changed=changed,
            plan=the_plan,
            datasets=list(results.values()),
            duration=time.monotonic() - start,
            errors=errors,
            log=self.lines,
            source_capabilities=self.src_caps,
            target_capabilities=self.dst_caps,
            before=snapshot_names(before),
            after=_planned_after(before, the_plan) if check_mode else names_after if names_after is not None else snapshot_names(after),
            key_file=str(self.keys.key_file) if self.keys.key_file is not None else None,
        )
        self.log(
            f"task {self.task.name}: {'check mode, ' if check_mode else ''}{result.snapshots_sent} snapshot(s) sent, "
            f"{result.bytes if result.bytes is not None else '?'} bytes, {result.duration:.2f}s, "
            f"{'FAILED: ' + '; '.join(errors) if errors else 'ok'}"
        )
        return result


def _both(first: Callable[[], A], second: Callable[[], B]) -> tuple[A, B]:
    """Run two independent steps at once (one per side); an error of ``first`` wins, as it would in sequence."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        a, b = pool.submit(first), pool.submit(second)
        return a.result(), b.result()


def _nearest_ancestor(name: str, known: dict[str, Any]) -> str | None:
    """The closest ancestor of dataset ``name`` among ``known`` (walks up the path: O(depth))."""
    while "/" in name:
        name = name.rsplit("/", 1)[0]
        if name in known:
            return name
    return None


def explain_receive_error(message: str, dplan: DatasetPlan) -> str:
    if "has been modified" in message:
        return (
            f"{message} -- the target {dplan.target} was changed since its last snapshot. Nothing was received. "
            "Set allow_rollback: true to roll it back (discarding those changes), or undo them yourself"
        )
    if "out of space" in message or "No space left" in message:
        return f"{message} -- the target pool is full: free space on it; nothing was destroyed to make room"
    return message


def _planned_after(before: Listing | None, the_plan: Plan) -> dict[str, list[str]]:
    after = snapshot_names(before)
    for d in the_plan.datasets:
        names = [n for n in after.get(d.target, []) if n not in d.destroy_before and n not in {x for x, _unused in d.destroy_after}]
        if d.pending or names != after.get(d.target, []):
            after[d.target] = names + d.pending
    return after


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
        runner.src_caps = probe(runner.src)
        runner.dst_caps = runner.src_caps if runner.dst is runner.src else probe(runner.dst)
        sides = [("source", runner.src, runner.src_caps, task.source_datasets), ("target", runner.dst, runner.dst_caps, [task.target_dataset])]
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


__all__ = ["ReplicationTask", "RunResult", "TaskError", "run_replication", "suggest_name"]
