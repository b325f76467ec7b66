# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A task's logging level (TrueNAS "Logging Level") and the DEBUG trace of every command the engine runs.

``logging_level`` is one of ``default`` (= ``info``), ``debug``, ``info``, ``warning``, ``error``. The runner
(:mod:`._runner`) sets its task logger to it, for the task's log file and the journal alike, whoever runs the task
(timer or module). At ``debug`` every command the engine starts is logged before it starts, with the local argv
as it is run (an ssh command line included) and secrets redacted, and every command that ran to completion with
its exit status and duration; a pipeline's processes are logged as they start, and the pipeline with its
stages' exit statuses and duration when it ends.

:func:`.._transport.run_process` and :func:`.._transport.start_process`, the only places that start processes, call
:func:`command_started`; a run installs its trace with :func:`tracing`. Without a trace (the default) they do
nothing more. Only the standard library: this file runs under the timer without Ansible.
"""
from __future__ import annotations

import contextlib
import logging
import re
import shlex
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Callable

LEVELS = {
    "default": logging.INFO,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
DEFAULT_LEVEL = "default"
# The option as both modules declare it (documented once, in the task_run doc fragment).
LOGGING_LEVEL_SPEC = {"type": "str", "default": DEFAULT_LEVEL, "choices": list(LEVELS)}
REDACTED = "<redacted>"
# name=value arguments whose value could be a secret (none is put on argv by the engine; this is a second line).
_SECRET_ARG = re.compile(r"(?i)^(-o)?([A-Za-z0-9_.:-]*(pass|passphrase|password|secret|token|key)=)(.+)$")

Trace = Callable[[str], None]
_trace: Trace | None = None
_trace_lock = threading.Lock()


class LoggingLevelError(ValueError):
    """logging_level is not one of LEVELS; the message names the field and the choices."""


def level_of(value: object, field: str = "logging_level") -> int:
    """The ``logging`` level for a task's ``logging_level`` (None means ``default``)."""
    if value is None:
        return LEVELS[DEFAULT_LEVEL]
    if not isinstance(value, str) or value.lower() not in LEVELS:
        raise LoggingLevelError(f"{field} {value!r}: use one of {', '.join(LEVELS)} (default is info)")
    return LEVELS[value.lower()]


def redact(argv: Sequence[str]) -> list[str]:
    """``argv`` with the values of secret-looking ``name=value`` arguments replaced."""
    out = []
    for arg in (str(a) for a in argv):
        m = _SECRET_ARG.match(arg)
        out.append(f"{m.group(1) or ''}{m.group(2)}{REDACTED}" if m else arg)
    return out


def show(argv: Sequence[str]) -> str:
    return shlex.join(redact(argv))


@contextlib.contextmanager
def tracing(trace: Trace | None) -> Iterator[None]:
    """Send the DEBUG trace of every command started in this process (any thread) to ``trace`` while in the block."""
    global _trace  # pylint: disable=global-statement
    with _trace_lock:
        previous, _trace = _trace, trace
    try:
        yield
    finally:
        with _trace_lock:
            _trace = previous


def trace_line(line: str) -> None:
    """A DEBUG line for the run's trace, if a run traces."""
    trace = _trace
    if trace is not None:
        trace(line)


class _Started:
    """One started command: ``ended`` logs its exit status and how long it ran."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.t0 = time.monotonic()

    def ended(self, rc: int | None) -> None:
        trace_line(f"debug: exit {rc} after {time.monotonic() - self.t0:.3f}s: {self.text}")


def command_started(argv: Sequence[str], detached: bool = False) -> _Started | None:
    """Log ``argv`` as it starts (``detached``: a pipeline process that is waited for elsewhere)."""
    if _trace is None:
        return None
    text = show(argv)
    trace_line(f"debug: {'start' if detached else 'run'}: {text}")
    return _Started(text)


__all__ = ["DEFAULT_LEVEL", "LEVELS", "LOGGING_LEVEL_SPEC", "LoggingLevelError", "command_started", "level_of", "redact", "show", "trace_line", "tracing"]
