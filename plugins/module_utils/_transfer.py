# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Executing a plan's datasets: each dataset's steps (destroy or roll back first, then its streams, each with its
retries, then the properties recv could not set), as many datasets at once as _admission allows
(``parallel_transfers``, or more while a catch-up's streams are small), each after its parent unless both only add
snapshots to existing targets.

A stream that fails for a transient reason (a dropped connection) is retried with backoff: it resumes from the
target's receive_resume_token, or, for a first full stream that left nothing resumable, is sent again after its
empty leftover is discarded (_first_full); a stream that arrived before its connection dropped is not sent again.
ZFS refusing a stream (a modified target, a full pool) is not retried.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from ._admission import Admission
from ._executor import PipelineError, PipelineResult
from ._first_full import FirstFulls, prepare_retry, settle, stuck_message
from ._planner import DatasetPlan, Send
from ._received_props import LocalProps, ReceivedProps
from ._replication_task import ReplicationTask
from ._results import DatasetResult
from ._streams import Expected, Streams
from ._target_changes import TargetChanges
from ._target_keys import TargetKeys
from ._transport import Host, TransportError, both_sides
from ._verify import adds_to_existing
from ._zfs import ZfsError, zfs_values

TRANSIENT_HINTS = ("Connection reset", "Connection closed", "Connection timed out", "connection lost", "Broken pipe")


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


def explain_receive_error(message: str, dplan: DatasetPlan) -> str:
    if "has been modified" in message:
        return (
            f"{message} -- the target {dplan.target} was changed since its last snapshot. Nothing was received. "
            "Set allow_rollback: true to roll it back (discarding those changes), or undo them yourself"
        )
    if "out of space" in message or "No space left" in message:
        return f"{message} -- the target pool is full: free space on it; nothing was destroyed to make room"
    return message


def nearest_ancestor(name: str, known: dict[str, Any]) -> str | None:
    """The closest ancestor of dataset ``name`` among ``known`` (walks up the path: O(depth))."""
    while "/" in name:
        name = name.rsplit("/", 1)[0]
        if name in known:
            return name
    return None


class Estimate:
    """A stream's expected size, asked for only when its first progress line needs it: a stream that ends within
    ``progress_interval`` (a catch-up's small incrementals) costs no ``zfs send -nP`` (or ``zfs get``) for it. The
    estimate is made once per stream, logged, and added to the dataset's ``estimated_bytes``; one that cannot be made
    leaves the progress lines without a size."""

    def __init__(self, streams: Streams, send: Send, res: DatasetResult, log: Callable[[str], None]) -> None:
        self.streams, self.send, self.res, self.log = streams, send, res, log
        self.asked = False
        self.value: int | None = None

    def __call__(self) -> int | None:
        if self.asked:
            return self.value
        self.asked = True
        try:
            est, how = self.streams.estimate(self.send)
        except (TransportError, ZfsError) as exc:  # the stream goes on: only its percent and ETA are missing
            self.log(f"  {self.send.target}: no size estimate ({exc})")
            return None
        if est is not None:
            self.value = est
            self.res.estimated_bytes = (self.res.estimated_bytes or 0) + est
            self.log(f"  estimated size {est} bytes ({how})")
        return self.value


@dataclass
class Transfer:
    task: ReplicationTask
    streams: Streams  # how the run builds and runs its streams, from the listings it planned on
    keys: TargetKeys
    first_fulls: FirstFulls
    changes: TargetChanges
    log: Callable[[str], None]
    sleep: Callable[[float], None]
    local_props: LocalProps = field(default_factory=LocalProps)  # zfs-fuse targets: read in batches by run_all

    def run_stream(self, send: Send, expected: Expected = None) -> PipelineResult:
        """One attempt at SEND (Streams.run)."""
        return self.streams.run(send, expected)

    def send_with_retries(self, send: Send, res: DatasetResult, expected: Expected = None) -> PipelineResult:
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
                self.sleep(delay)
                delay = min(delay * 2, 300)
                # Continue from what the cut stream left on the target: resume its token, or discard our own empty leftover.
                resumable = bool(self.streams.dst_caps and self.streams.dst_caps.resumable and self.streams.src_caps and self.streams.src_caps.resumable)
                if self.streams.dst_caps is not None:
                    why = prepare_retry(send, self.streams.dst, self.streams.dst_caps, resumable, self.is_first_full(send), self.sleep, self.log)
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
        src = self.streams.source.get(send.source) if self.streams.source is not None and not send.replicate else None
        want = next((s.guid for s in src.snapshots if s.name == send.snapshot), None) if src is not None else None
        snap = f"{send.target}@{send.snapshot}"
        return bool(want) and zfs_values(self.streams.dst, "guid", [snap]).get(snap) == want

    def is_first_full(self, send: Send) -> bool:
        """The first full stream into a target that did not exist when this run listed it: its leftover is ours."""
        return send.mode == "full" and not send.force and (self.streams.target is None or self.streams.target.get(send.target) is None)

    def discard_partial_full(self, send: Send) -> str:
        """After a first full stream failed for good: keep a resumable partial receive for the next run, or destroy
        the empty dataset it left (zfs-fuse), so the next run sends again instead of refusing an 'unrelated' target.
        Returns what the run's error should add about the target's state ('' when there is nothing to say)."""
        if not self.is_first_full(send) or self.streams.dst_caps is None:
            return ""
        try:
            out = settle(self.streams.dst, self.streams.dst_caps, send.target, True, self.sleep, self.log,
                         "left without snapshots by the failed first full stream")
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

    def execute_dataset(self, dplan: DatasetPlan, res: DatasetResult, errors: list[str]) -> bool:
        """Run one dataset's plan. Returns False when it failed."""
        try:
            if dplan.destroy_before:
                why = "allow_from_scratch" if dplan.base is None else "allow_rollback (diverged after the common snapshot)"
                res.destroyed += self.changes.destroy_listed(dplan, why)
            if dplan.rollback:
                self.changes.rollback(dplan)
            if any(s.force for s in dplan.sends):
                self.changes.unmount_replaced(dplan.target)
        except TransportError as exc:
            res.error = f"{dplan.target}: {exc}"
            errors.append(res.error)
            return False
        uncounted = False
        for send in dplan.sends:
            self.log(send.describe())
            est = Estimate(self.streams, send, res, self.log)
            first = self.is_first_full(send)
            if first:
                src = self.streams.source.get(send.source) if self.streams.source is not None else None
                snap = src.by_name().get(send.snapshot) if src is not None else None
                self.first_fulls.start(send.target, f"{send.source}@{send.snapshot}", snap.guid if snap else "", self.streams.dst.label)
            try:
                self.keys.prepare(send, self.streams.target)
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
                ReceivedProps(self.streams, self.log, self.local_props).fix(send)
            except TransportError as exc:
                res.error = f"{send.target}: properties: {exc}"
                errors.append(res.error)
                return False
        return True

    def admission(self) -> Admission:
        """How many datasets transfer at once (_admission). ssh+netcat picks a free port per stream: one at a time there.
        Unset, no widening when either side runs a legacy zfs (zfs-fuse: one daemon does all of its host's work)."""
        if self.task.transport == "ssh+netcat":
            return Admission(1, self.log)
        legacy = any(caps is not None and caps.version is None for caps in (self.streams.src_caps, self.streams.dst_caps))
        return Admission(self.task.parallel_transfers, self.log, widen=not legacy)

    def local_props_reader(self, work: list[DatasetPlan]) -> Callable[[], None] | None:
        """Targets without recv -x/-o get the source's local properties copied after each receive: what reads them,
        and the existing targets' own, for all of the run's datasets at once (one zfs get per side per 200 datasets, the
        two sides at the same time); None when nothing is copied. run_all runs it beside the first transfers: a
        receive takes longer than these reads, and only what follows it (ReceivedProps.fix) waits for them."""
        streams = self.streams
        if not streams.emulate_exclude():
            return None
        sends = [d for d in work if any(not s.replicate for s in d.sends)]
        listed = streams.target
        # The targets ReceivedProps.fix reads as listed: existing ones an incremental reaches (a full reads its new one).
        existing = [d.target for d in sends if listed is not None and listed.get(d.target) is not None
                    and any(s.mode != "full" and not s.replicate for s in d.sends)]

        def prefetch(side: str, host: Host, names: list[str]) -> None:
            try:
                self.local_props.prefetch(side, host, names)
            except TransportError as exc:  # each transfer then reads its own, and fails with its dataset named if it must
                self.log(f"  reading local properties in one call failed ({exc}): each dataset reads its own")

        def read() -> None:
            both_sides(lambda: prefetch("source", streams.src, [d.source for d in sends]), lambda: prefetch("target", streams.dst, existing))

        return read

    def run_all(self, work: list[DatasetPlan], results: dict[str, DatasetResult], errors: list[str]) -> list[DatasetPlan]:
        """Run every dataset's plan, as many at once as the run's admission allows; returns those that succeeded, in plan
        order.

        A dataset starts once its nearest ancestor in ``work`` has finished (the plan lists parents first, and
        the pool starts jobs in that order, so a waiting child never holds up its own parent). When that
        ancestor could not be created (a failed full send) or was itself skipped, the dataset is skipped. A dataset
        that only adds snapshots to its existing target (_verify.adds_to_existing), as do all its ancestors in
        ``work``, does not wait: nothing they do reaches it (a catch-up of a tree starts as wide as admission allows
        instead of with its root alone and then one level at a time).
        """
        status: dict[str, str] = {}  # source -> ok | failed | lost (a failed full send: nothing below it can land)
        jobs: dict[str, Future] = {}
        reader = self.local_props_reader(work)

        def job(dplan: DatasetPlan, parent: tuple[str, Future] | None) -> None:
            res = results[dplan.target]
            if parent is not None:
                parent[1].result()
                if status[parent[0]] == "lost":
                    res.error = f"{dplan.source}: skipped because a parent failed"
                    errors.append(res.error)
                    status[dplan.source] = "lost"
                    return
            with admission.slot() as ticket:
                ok = self.execute_dataset(dplan, res, errors)
                ticket.bytes = res.bytes
            if ok:
                status[dplan.source] = "ok"
            else:
                status[dplan.source] = "lost" if res.action == "full" else "failed"

        admission = self.admission()
        with ThreadPoolExecutor(max_workers=max(1, min(admission.workers, len(work))) + (reader is not None)) as pool:
            if reader is not None:  # the batch read of local properties, in a thread of its own: the transfers keep every worker
                self.local_props.reading(pool.submit(reader))
            free: set[str] = set()  # datasets that add to existing targets, as do all their ancestors in work
            for dplan in work:
                parent = nearest_ancestor(dplan.source, jobs)
                if adds_to_existing(dplan, self.streams.target) and (parent is None or parent in free):
                    free.add(dplan.source)
                    parent = None
                jobs[dplan.source] = pool.submit(job, dplan, (parent, jobs[parent]) if parent is not None else None)
        self.local_props.wait()  # its unexpected error is the run's too, whether or not a transfer asked for it
        for future in jobs.values():
            future.result()  # an unexpected error in a job is the run's error, as it was before threads
        return [d for d in work if status.get(d.source) == "ok"]
