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

import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Sequence

from ._transport import Host, command_env, quote_remote

STDERR_LIMIT = 4000


@dataclass
class Stage:
    host: Host
    argv: list[str]
    name: str  # what a person calls it: "zfs send", "ssh", "zfs recv"
    local_argv: list[str] = field(default_factory=list)


@dataclass
class StageResult:
    name: str
    host: str
    argv: list[str]
    rc: int
    stderr: str

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
    if stage.rc < 0:
        how = f"killed by signal {-stage.rc}"
    else:
        how = f"exit {stage.rc}"
    return f"{stage.name} on {stage.host} failed ({how}): {err or '(no error output)'} [argv: {quote_remote(stage.argv)}]"


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


def run_pipeline(stages: Sequence[Stage], counter_index: int | None = None) -> PipelineResult:
    """Start every stage connected by pipes, wait for all, raise PipelineError on any failure.

    ``counter_index`` is the index of a ``pv -n -b`` stage whose stderr holds the byte count.
    """
    procs: list[subprocess.Popen] = []
    errfiles = []
    start = time.monotonic()
    prev_out = None
    try:
        for i, stage in enumerate(stages):
            errf = tempfile.TemporaryFile()
            errfiles.append(errf)
            last = i == len(stages) - 1
            cmd = stage.local_argv or stage.host.command(stage.argv)
            proc = subprocess.Popen(
                cmd,
                stdin=prev_out if prev_out is not None else subprocess.DEVNULL,
                stdout=subprocess.DEVNULL if last else subprocess.PIPE,
                stderr=errf,
                env=command_env(),
                close_fds=True,
            )
            if prev_out is not None:
                prev_out.close()  # only the next stage holds the read end now
            prev_out = proc.stdout
            procs.append(proc)
    except OSError as exc:
        for p in procs:
            p.kill()
            p.wait()
        raise PipelineError(f"cannot start {stages[len(procs)].name}: {exc}", []) from exc
    rcs = [p.wait() for p in procs]
    duration = time.monotonic() - start
    results = []
    for stage, rc, errf in zip(stages, rcs, errfiles):
        errf.seek(0)
        text = errf.read().decode("utf-8", "replace")
        errf.close()
        results.append(StageResult(stage.name, stage.host.label, list(stage.argv), rc, text))
    nbytes = _parse_pv_bytes(results[counter_index].stderr) if counter_index is not None else None
    bad = culprit(results)
    if bad is not None:
        others = [s for s in results if s.rc != 0 and s is not bad]
        msg = _explain(bad)
        if others:
            msg += "; then " + "; ".join(f"{s.name} exit {s.rc}" for s in others)
        raise PipelineError(msg, results)
    return PipelineResult(results, duration, nbytes)

