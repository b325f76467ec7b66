# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run ``zfs send | [pv] | [ssh host] zfs recv`` as an OS pipeline.

Python only starts the processes and waits: the stream goes from process to process
through kernel pipes. Every stage's exit status is checked; the error names the stage
that failed first for a reason of its own (not a broken pipe caused by a later stage)
and carries its stderr.
"""
from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from ._log import trace_line
from ._transport import Host, command_env, quote_remote, start_process

STDERR_LIMIT = 4000


@dataclass
class Stage:
    host: Host
    argv: list[str]
    name: str  # what a person calls it: "zfs send", "ssh", "zfs recv"
    local_argv: list[str] = field(default_factory=list)
    parts: list[Stage] = field(default_factory=list)  # a remote shell pipeline of these stages


STATUS_MARK = "zr-status"
_STATUS_RE = re.compile(rf"^{STATUS_MARK} (\d+) (\d+)$")


def shell_pipeline(stages: Sequence[Stage]) -> str:
    """A POSIX sh script that runs ``stages`` as a pipeline and reports each stage's status.

    POSIX sh has no pipefail, so each stage echoes its exit status to stderr, tagged
    (``zr-status INDEX RC``); the caller reads the tags back and checks every stage.
    """
    groups = [f"{{ {quote_remote(s.host.wrap(s.argv))}; echo \"{STATUS_MARK} {i} $?\" >&2; }}" for i, s in enumerate(stages)]
    return " | ".join(groups)


def remote_stage(host: Host, parts: Sequence[Stage]) -> Stage:
    """One local process (ssh) that runs ``parts`` as a pipeline on ``host``."""
    script = shell_pipeline(parts)
    names = " | ".join(p.name for p in parts)
    local = host.pipeline_command([p.host.wrap(p.argv) for p in parts]) or host.shell_command(script)
    return Stage(host, ["sh", "-c", script], f"{names} on {host.label}", local, list(parts))


def split_remote_result(stage: Stage, rc: int, stderr: str) -> list[StageResult]:
    """Per-part results of a remote pipeline from its tagged stderr."""
    statuses: dict[int, int] = {}
    text_lines = []
    for line in stderr.splitlines():
        m = _STATUS_RE.match(line.strip())
        if m:
            statuses[int(m.group(1))] = int(m.group(2))
        else:
            text_lines.append(line)
    text = "\n".join(text_lines)
    out = []
    for i, part in enumerate(stage.parts):
        # No tag: the remote shell never finished this stage (connection lost, killed).
        prc = statuses.get(i, rc if rc != 0 else 255)
        # A refusal can come with success: zfs recv exits 0 when it may not set a property the stream carries.
        out.append(StageResult(part.name, stage.host.label, list(part.argv), prc, text if prc != 0 else "",
                               stage.host.refusal_hint(part.argv, text)))
    if not statuses and (rc == 255 or rc < 0):
        # No stage reported: the ssh client itself failed (255) or was killed (a signal). Blaming the first
        # remote stage ("zfs recv ... killed by signal 9") would send people looking in the wrong place.
        why = text or ("connection lost" if rc == 255 else f"the ssh client was killed by signal {-rc}: connection lost")
        out = [StageResult("ssh connection", stage.host.label, list(stage.local_argv), rc, why)]
    return out


@dataclass
class StageResult:
    name: str
    host: str
    argv: list[str]
    rc: int
    stderr: str
    advice: str = ""  # what to do about a refusal (a missing zfs allow permission, sudo without a rule), failed or not

    @property
    def broken_pipe(self) -> bool:
        return self.rc in (-signal.SIGPIPE, 128 + signal.SIGPIPE) or "Broken pipe" in self.stderr


class PipelineError(Exception):
    def __init__(self, message: str, stages: list[StageResult]):
        super().__init__(message)
        self.stages = stages


@dataclass
class PipelineResult:
    stages: list[StageResult]
    duration: float
    bytes: int | None


def _explain(stage: StageResult) -> str:
    err = stage.stderr.strip()[-STDERR_LIMIT:]
    how = f"killed by signal {-stage.rc}" if stage.rc < 0 else f"exit {stage.rc}"
    advice = f"; {stage.advice}" if stage.advice else ""
    return f"{stage.name} on {stage.host} failed ({how}): {err or '(no error output)'}{advice} [argv: {quote_remote(stage.argv)}]"


def culprit(stages: list[StageResult]) -> StageResult | None:
    """The stage whose failure explains the pipeline's.

    A stage upstream of a failed stage dies of a broken pipe; a stage downstream of a
    failed stage complains about a truncated stream. So the first failed stage that did not
    die of a broken pipe is the cause; if every failure is a broken pipe, the last one.
    """
    failed = [s for s in stages if s.rc != 0]
    if not failed:
        return None
    for s in failed:
        if not s.broken_pipe:
            return s
    return failed[-1]


def _parse_pv_bytes(text: str) -> int | None:
    """``pv -n -b`` prints the running byte count, one number per line; the last is the total."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.isdigit():
            return int(line)
    return None


def counter_bytes(errf: Any) -> int | None:
    """The running byte count ``pv -n -b`` has written so far to ERRF: the last whole number in the file's tail.

    Read with pread (the file's offset stays where _collect expects it) and only the tail, so a long stream costs
    the same to watch at its end as at its start.
    """
    fd = errf.fileno()
    size = os.fstat(fd).st_size
    start = max(0, size - 256)
    lines = os.pread(fd, size - start, start).decode("utf-8", "replace").split("\n")
    lines = lines[1:-1] if start else lines[:-1]  # a partial first line (cut by the tail) and the line pv is writing
    for line in reversed(lines):
        if line.strip().isdigit():
            return int(line.strip())
    return None


class Watch:
    """Calls ``report(bytes)`` with a pipeline's running byte count every ``every`` seconds while it runs."""

    def __init__(self, every: float, report: Callable[[int], None]) -> None:
        self.every = every
        self.report = report
        self.next_at = time.monotonic() + every

    def tick(self, errf: Any) -> None:
        now = time.monotonic()
        if now < self.next_at:
            return
        self.next_at = now + self.every
        nbytes = counter_bytes(errf)
        if nbytes is not None:
            self.report(nbytes)

    def wait(self, procs: Sequence[subprocess.Popen], errf: Any) -> list[int]:
        """Wait for every process, ticking in between; returns their exit statuses."""
        for proc in procs:
            while not exited_by(proc, self.next_at):
                self.tick(errf)
        return [p.returncode for p in procs]


def exited_by(proc: subprocess.Popen, deadline: float) -> bool:
    """Wait for PROC until DEADLINE (time.monotonic(), at least 0.05 s from now); True once it has exited, reaped.

    Woken the moment it exits, by its pidfd (Linux >= 5.3). ``Popen.wait(timeout=...)`` instead polls, up to 50 ms
    apart, and every stage of every pipeline paid that after its end: 10-15% of a catch-up's small incremental
    streams, which take 0.2-0.5 s each on a busy host. Where the kernel or a sandbox gives no pidfd, that polling wait.
    """
    if proc.poll() is not None:
        return True
    timeout = max(0.05, deadline - time.monotonic())
    try:
        fd = os.pidfd_open(proc.pid)  # only this Popen reaps its child, so the pid is still this process's
    except (AttributeError, OSError):  # not Linux (no os.pidfd_open), or the kernel or a sandbox refuses pidfd_open
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if not poller.poll(timeout * 1000):
            return False
    finally:
        os.close(fd)
    proc.wait()  # it has exited: reaps it at once
    return True


def _start(stages: Sequence[Stage], procs: list[subprocess.Popen], errfiles: list, stdin_data: bytes | None = None) -> None:
    """Start ``stages`` connected by pipes; append to ``procs``/``errfiles`` as they start.

    With ``stdin_data`` the first stage reads it from a pipe that stays open (see :func:`run_chains`), and every
    stage runs in a session of its own, so that a script's ``kill 0`` or our ``killpg`` reaches exactly its group.
    """
    prev_out = None
    for i, stage in enumerate(stages):
        errf = tempfile.TemporaryFile()  # noqa: SIM115  (closed by _collect after the stage ends)
        errfiles.append(errf)
        last = i == len(stages) - 1
        cmd = stage.local_argv or stage.host.command(stage.argv)
        feed = i == 0 and stdin_data is not None
        try:
            proc = start_process(
                cmd,
                stdin=subprocess.PIPE if feed else (prev_out if prev_out is not None else subprocess.DEVNULL),
                stdout=subprocess.DEVNULL if last else subprocess.PIPE,
                stderr=errf,
                env=command_env(),
                close_fds=True,
                start_new_session=stdin_data is not None,
            )
        except OSError as exc:
            raise PipelineError(f"cannot start {stage.name}: {exc}", []) from exc
        finally:
            if prev_out is not None:
                prev_out.close()  # only the next stage holds the read end now
        prev_out = proc.stdout
        procs.append(proc)
        if feed and proc.stdin is not None and stdin_data is not None:
            try:
                proc.stdin.write(stdin_data)  # a few bytes: the pipe buffer takes them without blocking
                proc.stdin.flush()
            except OSError:
                pass  # the stage already ended: its exit status tells why


def _collect(stages: Sequence[Stage], rcs: list[int], errfiles: list, counter_index: int | None) -> tuple[list[StageResult], int | None]:
    results: list[StageResult] = []
    counter_text = ""
    for i, (stage, rc, errf) in enumerate(zip(stages, rcs, errfiles)):
        errf.seek(0)
        text = errf.read().decode("utf-8", "replace")
        errf.close()
        if i == counter_index:
            counter_text = text
        results += stage_results(stage, rc, text)
    nbytes = _parse_pv_bytes(counter_text) if counter_index is not None else None
    return results, nbytes


def stage_results(stage: Stage, rc: int, stderr: str) -> list[StageResult]:
    """The results of one ended stage: its remote pipeline's parts (see split_remote_result), or the stage itself."""
    if stage.parts:
        return split_remote_result(stage, rc, stderr)
    return [StageResult(stage.name, stage.host.label, list(stage.argv), rc, stderr, stage.host.refusal_hint(stage.argv, stderr))]


def _trace_end(results: list[StageResult], duration: float) -> None:
    """logging_level debug: the pipeline's end, each stage's exit status and the duration."""
    trace_line(f"debug: pipeline ended after {duration:.3f}s: " + ", ".join(f"{s.name} on {s.host} exit {s.rc}" for s in results))


def _raise_on_failure(results: list[StageResult], blame_first: list[StageResult] | None = None) -> None:
    """Raise for the culprit; ``blame_first`` (a subset of ``results``) is searched first: the part that failed first."""
    bad = (culprit(blame_first) if blame_first else None) or culprit(results)
    if bad is not None:
        others = [s for s in results if s.rc != 0 and s is not bad]
        msg = _explain(bad)
        if others:
            msg += "; then " + "; ".join(f"{s.name} exit {s.rc}" for s in others)
        raise PipelineError(msg, results)


def _kill(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def run_pipeline(stages: Sequence[Stage], counter_index: int | None = None, watch: Watch | None = None) -> PipelineResult:
    """Start every stage connected by pipes, wait for all, raise PipelineError on any failure.

    ``counter_index`` is the index of the stage whose stderr holds ``pv -n -b``'s byte count; ``watch`` is told that
    count while the pipeline runs.
    """
    procs: list[subprocess.Popen] = []
    errfiles: list = []
    start = time.monotonic()
    try:
        _start(stages, procs, errfiles)
    except PipelineError:
        _kill(procs)
        raise
    counted = errfiles[counter_index] if counter_index is not None else None
    rcs = watch.wait(procs, counted) if watch is not None and counted is not None else [p.wait() for p in procs]
    duration = time.monotonic() - start
    results, nbytes = _collect(stages, rcs, errfiles, counter_index)
    _trace_end(results, duration)
    _raise_on_failure(results)
    return PipelineResult(results, duration, nbytes)


ABORT_GRACE = 5.0


def _abort(procs: Sequence[subprocess.Popen], grace: float = ABORT_GRACE) -> None:
    """End a chain: cut its lifeline (stdin), give it ``grace`` seconds to end its own process group, then kill.

    A chain started with stdin data is a script whose stdin is its lifeline: on end of file it kills its whole
    process group, on the remote host too (killing the local ssh client alone would leave the remote side running
    until sshd noticed). The local kill is the fallback, to the session for such a chain.
    """
    for p in procs:
        _close_stdin(p)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                p.kill()
            p.wait()


def _close_stdin(p: subprocess.Popen) -> None:
    if p.stdin is not None and not p.stdin.closed:
        with contextlib.suppress(OSError):
            p.stdin.close()


def _peek(stages: Sequence[Stage], procs: Sequence[subprocess.Popen], errfiles: list) -> list[StageResult]:
    """Results of a chain whose processes have all ended, read without moving the files' offsets."""
    results: list[StageResult] = []
    for stage, proc, errf in zip(stages, procs, errfiles):
        size = os.fstat(errf.fileno()).st_size
        text = os.pread(errf.fileno(), size, 0).decode("utf-8", "replace")
        results += stage_results(stage, proc.returncode, text)
    return results


def _wait_chains(chains: list[tuple[Sequence[Stage], list[subprocess.Popen], list]], pause: float = 0.05,
                 tick: Callable[[], None] | None = None) -> int | None:
    """Wait until every chain has ended; when one ends in failure, abort the others (the stream cannot succeed,
    and a listener nobody connects to would wait forever). Returns the index of the chain that failed first.
    ``tick`` is called between the looks."""
    first_failed: int | None = None
    ended = [False] * len(chains)
    while not all(ended):
        if tick is not None:
            tick()
        for i, (stages, procs, errfiles) in enumerate(chains):
            if ended[i] or any(p.poll() is None for p in procs):
                continue
            ended[i] = True
            if first_failed is None and any(r.rc != 0 for r in _peek(stages, procs, errfiles)):
                first_failed = i
                for j, (_s, others, _e) in enumerate(chains):
                    if not ended[j]:
                        _abort(others)
        if not all(ended):
            time.sleep(pause)
    return first_failed


def run_chains(
    listener: Sequence[Stage],
    sender: Sequence[Stage],
    ready: Callable[[Callable[[], bool]], None],
    counter_index: int | None = None,
    *,
    listener_input: bytes | None = None,
    sender_input: bytes | None = None,
    data_from_listener: bool = False,
    watch: Watch | None = None,
) -> PipelineResult:
    """Two pipelines joined by a network connection: start ``listener``, wait for ``ready``, start ``sender``.

    ``ready(running)`` returns once the listener accepts connections and raises PipelineError otherwise;
    ``running()`` says whether the listener is still running. ``counter_index`` indexes ``sender``.
    ``*_input`` is written to the first stage of a chain, whose stdin then stays open until the chain ends: the
    chain's lifeline, cut (closed) to end it. When one chain fails, or ``ready`` fails, or anything raises,
    the other chains are ended too. ``sender`` is the chain started second (it connects); with
    ``data_from_listener`` the data flows from ``listener`` to it (the sending side listens) and ``counter_index``
    indexes ``listener`` instead. Results are reported in data order; the error blames the chain that failed first.
    ``watch`` is told the running byte count while the chains run.
    """
    lprocs: list[subprocess.Popen] = []
    sprocs: list[subprocess.Popen] = []
    lerr: list = []
    serr: list = []
    start = time.monotonic()
    try:
        _start(listener, lprocs, lerr, listener_input)
        ready(lambda: all(p.poll() is None for p in lprocs))
        _start(sender, sprocs, serr, sender_input)
        counted = lerr if data_from_listener else serr
        tick = None if watch is None or counter_index is None else (lambda: watch.tick(counted[counter_index]))
        first_failed = _wait_chains([(sender, sprocs, serr), (listener, lprocs, lerr)], tick=tick)
    except PipelineError as exc:
        _abort(sprocs)
        _abort(lprocs)
        sres, _unused = _collect(sender, [p.returncode for p in sprocs], serr, None)
        lres, _unused = _collect(listener, [p.returncode for p in lprocs], lerr, None)
        detail = "; ".join(_explain(s) for s in lres + sres if s.rc != 0 and s.stderr.strip())
        raise PipelineError(f"{exc}" + (f" ({detail})" if detail else ""), sres + lres) from exc
    except BaseException:
        _abort(sprocs)
        _abort(lprocs)
        for f in lerr + serr:
            f.close()
        raise
    for p in sprocs + lprocs:
        _close_stdin(p)
    duration = time.monotonic() - start
    sres, sbytes = _collect(sender, [p.returncode for p in sprocs], serr, None if data_from_listener else counter_index)
    lres, lbytes = _collect(listener, [p.returncode for p in lprocs], lerr, counter_index if data_from_listener else None)
    results = lres + sres if data_from_listener else sres + lres
    _trace_end(results, duration)
    _raise_on_failure(results, lres if first_failed == 1 else sres if first_failed == 0 else None)
    return PipelineResult(results, duration, lbytes if data_from_listener else sbytes)
