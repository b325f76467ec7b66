# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The first full transfer of a dataset: resume it when it was cut, or discard what it left, never refuse it.

A first full stream creates its target. Cut part-way (a dropped connection, a killed run, a reboot), it leaves
either a resumable partial receive (OpenZFS with ``zfs recv -s``: the target carries a receive_resume_token) or,
on older command lines, an empty target without snapshots that the planner would take for someone else's dataset.

* Within a run, before a retry: a token is resumed (``zfs send -t``); an empty leftover of this run's own (the
  target did not exist when the run listed it) is destroyed and the stream sent again.
* Across runs (the run was killed, the host rebooted): before the stream starts, the run records it in a small
  JSON file on the host that runs the engine (the task's state directory), keyed by target dataset; the record
  goes when the stream completes or its leftover is discarded. The next run that finds a target without
  snapshots resumes it when it has a token, destroys it and sends again when the record says this task started a
  first full into it, and otherwise leaves the planner's refusal (it really is someone else's dataset).

A leftover is discarded only when it has no snapshots, no children and no resume token.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from ._planner import Plan, Send
from ._transport import Host
from ._zfs import Capabilities, DatasetMissing, Listing, list_tree

DEFAULT_STATE_DIR = "/var/lib/zfs-replication"
RECORD_VERSION = 1
# zfs-fuse keeps a dataset "busy" for a while after the receive that created it was hung up on.
DISCARD_ATTEMPTS = 7
DISCARD_FIRST_DELAY = 0.5
DISCARD_MAX_DELAY = 4.0


@dataclass(frozen=True)
class Leftover:
    """What a target holds after a cut: nothing, a partial receive with a token, or an (empty) dataset."""

    exists: bool
    token: str = ""
    snapshots: int = 0
    children: int = 0


def leftover_in(listing: Listing | None, target: str) -> Leftover:
    """The state of ``target`` in a listing that covers it (None or without it: it does not exist)."""
    ds = listing.get(target) if listing is not None else None
    if ds is None:
        return Leftover(False)
    token = ds.props.get("receive_resume_token", "-")
    children = sum(1 for name in listing.datasets if name.startswith(target + "/")) if listing is not None else 0
    return Leftover(True, "" if token in ("-", "") else token, len(ds.snapshots), children)


# Reads of an absent target before concluding that nothing of a cut resumable receive was kept (0.5+1+2 s apart).
SETTLE_ATTEMPTS = 4


def decide(left: Leftover, ours: bool) -> str:
    """What to do with the target of a first full stream that was cut.

    ``resend``: nothing is there, send the full stream again; ``resume``: zfs send -t the token; ``discard``: an
    empty leftover this task made, destroy it and send again; ``kept``: it holds snapshots or children, so it is not
    an empty leftover (the planner decides); ``refuse``: an empty dataset this task did not make.
    """
    if not left.exists:
        return "resend"
    if left.token:
        return "resume"
    if left.snapshots or left.children:
        return "kept"
    return "discard" if ours else "refuse"


@dataclass
class Settled:
    action: str  # resend | resume | discarded | kept | refuse | stuck
    token: str = ""
    reason: str = ""


def read_leftover(host: Host, caps: Capabilities, target: str) -> Leftover:
    """One listing of ``target`` (and its children, if any)."""
    try:
        return leftover_in(list_tree(host, caps, target), target)
    except DatasetMissing:
        return Leftover(False)


def settle(host: Host, caps: Capabilities, target: str, ours: bool, sleep: Callable[[float], None],
           log: Callable[[str], None], why: str) -> Settled:
    """Look at the target of a cut first full stream and discard it when it is an empty leftover of ours.

    A destroy that fails (zfs-fuse says "dataset is busy" while it tears the receive down; OpenZFS while the receive
    is still saving its state) is retried with a growing pause, re-reading the target each time: by then it may
    carry a token (resume) or be gone (resend). Raises ZfsError/TransportError when the target cannot be read.
    """
    delay = DISCARD_FIRST_DELAY
    reason = ""
    for attempt in range(DISCARD_ATTEMPTS):
        left = read_leftover(host, caps, target)
        action = decide(left, ours)
        if action == "resend" and caps.resumable and attempt + 1 < SETTLE_ATTEMPTS:
            # The sending side's end of a cut stream is gone, but the receiving zfs recv may still be reading what was
            # in flight and saving its resume state: the dataset appears, with its token, only once it has exited.
            sleep(delay)
            delay = min(delay * 2, DISCARD_MAX_DELAY)
            continue
        if action != "discard":
            return Settled(action, left.token)
        if attempt == 0:
            log(f"  removing {target} on {host.label}: {why}")
        proc = host.run(["zfs", "destroy", target], check=False)
        if proc.returncode == 0:
            return Settled("discarded")
        reason = proc.stderr.strip() or f"zfs destroy exited {proc.returncode}"
        if attempt + 1 < DISCARD_ATTEMPTS:
            log(f"  zfs destroy {target}: {reason}; trying again in {delay:g}s")
            sleep(delay)
            delay = min(delay * 2, DISCARD_MAX_DELAY)
    return Settled("stuck", reason=reason)


def stuck_message(target: str, record: dict[str, Any] | None, reason: str) -> str:
    what = f" from {record['source']}" if record and record.get("source") else ""
    return (
        f"a first transfer of this task into {target}{what} was cut, and the empty dataset it left could not be removed: "
        f"{reason}. Nothing else was changed. The next run tries again; or remove it by hand: zfs destroy {target}"
    )


def records_path(state_dir: str, task_name: str) -> Path:
    # Next to the timer's state file of the task (repl-NAME.json), under a name of its own.
    return Path(state_dir, f"repl-{task_name}.first-full.json")


class FirstFulls:
    """The task's first full transfers in progress (the record) and what a run did about cut ones (the notes)."""

    def __init__(self, state_dir: str | None, task_name: str, log: Callable[[str], None]) -> None:
        self.path = records_path(state_dir or DEFAULT_STATE_DIR, task_name)
        self.log = log
        self.lock = threading.Lock()  # datasets transfer in parallel: one read-modify-write at a time
        self.notes: dict[str, tuple[str, str]] = {}  # target -> (plan action, message) shown in the plan
        self.hidden: set[str] = set()  # check mode: leftovers the run would destroy, left out of the plan's listing

    # -- the record ------------------------------------------------------------------------------------
    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            self.log(f"  warning: cannot read {self.path} ({exc}): no record of first transfers in progress")
            return {}
        targets = data.get("targets") if isinstance(data, dict) else None
        return {k: v for k, v in targets.items() if isinstance(v, dict)} if isinstance(targets, dict) else {}

    def _write(self, targets: dict[str, dict[str, Any]]) -> None:
        """Atomically: a reader (or a run killed while writing) sees the old file or the new one."""
        if not targets:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name + ".")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump({"version": RECORD_VERSION, "targets": targets}, handle, indent=2, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def records(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return self._read()

    def get(self, target: str) -> dict[str, Any] | None:
        return self.records().get(target)

    def start(self, target: str, source_snapshot: str, guid: str, host: str) -> None:
        """Before the first full stream into ``target`` starts."""
        entry = {"source": source_snapshot, "guid": guid, "host": host,
                 "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        with self.lock:
            try:
                self._write({**self._read(), target: entry})
            except OSError as exc:
                self.log(f"  warning: cannot record the first transfer into {target} in {self.path} ({exc}): "
                         "if it is cut, the next run cannot tell its leftover from someone else's dataset")

    def clear(self, target: str) -> None:
        """The first full into ``target`` completed, or its leftover is gone."""
        with self.lock:
            targets = self._read()
            if target not in targets:
                return
            del targets[target]
            try:
                self._write(targets)
            except OSError as exc:
                self.log(f"  warning: cannot update {self.path}: {exc}")

    # -- across runs -----------------------------------------------------------------------------------
    def recover(self, listing: Listing | None, host: Host, caps: Capabilities, check_mode: bool,
                sleep: Callable[[float], None]) -> bool:
        """Settle the leftovers of recorded first transfers in the target ``listing`` (after any resume).

        Returns True when a leftover was destroyed (the caller lists the target again). In check mode nothing
        changes: the notes say what the run would do, and ``hidden`` the leftovers the plan must not see.
        """
        changed = False
        for target, record in sorted(self.records().items()):
            left = leftover_in(listing, target)
            action = decide(left, ours=True)
            src = record.get("source", "?")
            if action == "resume":
                if check_mode:
                    self.notes[target] = ("resume", f"a first transfer of {src} into {target} was cut: the run would resume "
                                                    "it from its receive_resume_token (zfs send -t)")
                continue
            if action in ("resend", "kept"):
                # Gone (nothing to do, the plan sends it in full) or complete (its snapshots are there): done.
                if not check_mode:
                    self.clear(target)
                continue
            why = (f"a first transfer of this task ({src} into {target}, started {record.get('started', '?')}) was cut and "
                   f"left it without snapshots and without a resume token: it is destroyed and the stream sent again")
            if check_mode:
                self.log(f"{target}: {why} (check mode: not destroyed)")
                self.notes[target] = ("full", why)
                self.hidden.add(target)
                continue
            out = settle(host, caps, target, True, sleep, self.log, why)
            if out.action in ("discarded", "resend"):
                self.notes[target] = ("full", why)
                self.clear(target)
                changed = True
            elif out.action == "stuck":
                self.notes[target] = ("refused", stuck_message(target, record, out.reason))
        return changed

    def visible(self, listing: Listing | None) -> Listing | None:
        """``listing`` without the leftovers check mode pretends are destroyed."""
        hidden = self.hidden
        if listing is None or not hidden:
            return listing
        if listing.root in hidden:
            return None
        return Listing(listing.root, {n: d for n, d in listing.datasets.items() if not any(n == h or n.startswith(h + "/") for h in hidden)})

    def note_resume(self, target: str) -> None:
        """Check mode: ``target`` has a token the run would resume."""
        self.notes[target] = ("resume", f"{target} holds an interrupted receive: the run would resume it from its "
                                        "receive_resume_token (zfs send -t)")

    def annotate(self, the_plan: Plan) -> None:
        """The plan says what happens to our leftovers instead of blaming the user for an 'unrelated' target."""
        for d in the_plan.datasets:
            note = self.notes.get(d.target)
            if note is None:
                continue
            action, message = note
            if d.action == "refused" or (action == "full" and d.action == "full" and not d.message):
                d.action, d.message = action, message


def read_token(host: Host, target: str) -> str:
    """The target's receive_resume_token ('' when none, or when the target is gone)."""
    proc = host.run(["zfs", "get", "-H", "-p", "-o", "value", "receive_resume_token", target], check=False)
    token = proc.stdout.strip() if proc.returncode == 0 else ""
    return "" if token in ("-", "") else token


def prepare_retry(send: Send, host: Host, caps: Capabilities, resumable: bool, ours: bool,
                  sleep: Callable[[float], None], log: Callable[[str], None]) -> str | None:
    """Before a cut stream is sent again in the same run: continue from what the target kept.

    A first full of this run's own (``ours``): resume from its token, or destroy the empty dataset it left
    (zfs-fuse), or nothing is there. Any other stream on a resumable pair: a single-snapshot stream resumes from
    the token; a stream of several snapshots aborts the partial receive (zfs recv -A) and is sent again, since a
    token resumes one snapshot only. ``send`` is changed in place. Returns why a retry cannot succeed, or None.
    """
    if send.replicate:
        return None
    if send.mode == "full" and not send.force and ours:
        out = settle(host, caps, send.target, True, sleep, log, "left without snapshots by the cut first full stream")
        if out.action == "resume":
            log(f"  {send.target} kept what arrived: the retry resumes it from its receive_resume_token (zfs send -t)")
            send.token = out.token
        elif out.action in ("resend", "discarded"):
            send.token = None
        elif out.action == "stuck":
            return f"the empty dataset {send.target} it left could not be removed: {out.reason}"
        return None
    if not resumable:
        return None
    token = read_token(host, send.target)
    if not token:
        return None
    if send.token or len(send.snapshots) <= 1:
        log(f"  {send.target} kept what arrived: the retry resumes it from its receive_resume_token (zfs send -t)")
        send.token = token
    else:
        log(f"  {send.target}: a token resumes one snapshot of the {len(send.snapshots)} in this stream: zfs recv -A, then send it again")
        host.run(["zfs", "recv", "-A", send.target], check=False)
    return None


__all__ = ["DEFAULT_STATE_DIR", "FirstFulls", "Leftover", "Settled", "decide", "leftover_in", "prepare_retry", "read_leftover", "read_token",
           "settle", "stuck_message"]
