# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The timer entry point: run one declared task from the config file the role wrote.

    zfs-replication-run run --config /etc/zfs-replication/tasks/repl-NAME.json
    zfs-replication-run status [ID ...]
    zfs-replication-run release --config FILE     # a replication task is being removed: release its holds

A run of one task:

* takes the task's lock (``flock`` on ``STATE_DIR/ID.lock``). When another run of the same task holds
  it, this run waits up to ``--lock-wait`` seconds (default 0), then skips: it logs why (naming the lock
  file and the pid holding it) and exits 0 without touching the state file, which belongs to the run in
  progress. systemd never starts a unit twice at once, so this only happens when the task also runs by
  hand or from a playbook. Check mode takes no lock: it only reads, and writes no file at all;
* for a replication task that ``depends_on`` snapshot tasks, first waits (up to ``--dependency-wait``
  seconds) until a run of each of them in progress has finished, so it never lists the source while
  its snapshots are being taken;
* for a replication task with a ``schedule`` that has a begin/end window, skips (exit 0, result
  ``skipped``) when started outside the window, e.g. by ``Persistent=true`` catching up at boot.
  Snapshot tasks pass their schedule to the snapshot engine, which honours it;
* for a replication task with a ``restrict_schedule`` (TrueNAS "Restrict Replication Schedule"), replicates
  only inside its run window (its days and begin..end, see ``_schedule.RunWindow``). Started outside it
  (typically by a run of its snapshot task), the run sends nothing: it logs "outside restrict_schedule window
  ...; next window starts at ..." and records result ``waiting`` with ``next_window`` (exit 0). The role's timer
  of such a task also fires at the start of every window, so what waited goes then;
* logs every line to stdout (the journal, under systemd) and to ``LOG_DIR/ID.log``, rotated by size, at the
  task's ``logging_level`` (TrueNAS "Logging Level": default/info, debug, warning, error; see ``_log``): at
  ``debug`` also every command the engine runs, with its exit status and duration;
* records the run in ``STATE_DIR/ID.json`` (written atomically): last start and end, result
  (``ok``, ``failed``, ``skipped``, ``waiting``), error, snapshots sent, bytes, duration, last success;
* with ``--metrics-dir``, writes ``METRICS_DIR/zfs_replication_ID.prom`` (atomically) for node_exporter's
  textfile collector: last run time, result, last success, bytes, duration, snapshots sent and, for a
  replication task, the time of the newest replicated snapshot and the lag (alert on RPO with
  ``time() - zfs_replication_newest_replicated_timestamp_seconds``);
* exits 0 (ok or skipped), 1 (failed: systemd marks the unit failed) or 2 (unusable config).

The modules ``zfs_replication`` and ``zfs_snapshot_task`` run a task through the same code
(``run_from_module``): one task, one lock, one history, whoever starts the run. A module run that finds
the lock held waits up to its ``lock_wait`` option, then fails naming the lock file and its holder, and
changes nothing. A module run ignores the windows (``schedule``'s and ``restrict_schedule``'s, like TrueNAS's
"Run Now") and the dependencies: the playbook decides when it runs; so does ``run --ignore-window``.

Only the standard library and the engine: the role installs these files on hosts that have python3,
zfs and ssh, without ansible-core.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import json
import logging
import logging.handlers
import os
import re
import signal
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, TextIO

from ._lag import lag_seconds, run_recovery_point
from ._log import LoggingLevelError, level_of, tracing
from ._pending import metric_lines as pending_metric_lines
from ._pending import record_replicated
from ._progress import reporting_to

DEFAULT_STATE_DIR = "/var/lib/zfs-replication"
DEFAULT_LOG_DIR = "/var/log/zfs-replication"
DEFAULT_LOG_MAX_BYTES = 1024 * 1024
DEFAULT_LOG_KEEP = 5
DEFAULT_DEPENDENCY_WAIT = 3600.0
DEFAULT_MODULE_LOCK_WAIT = 600.0
STATE_VERSION = 1

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2

# Short kind prefixes keep unit, state and log names readable: repl-NAME, snap-NAME.
KIND_PREFIX = {"replication": "repl", "snapshot": "snap"}
TASK_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\Z")  # \Z: $ would let "name\n" through
_WINDOW_DEFAULTS = ("00:00", "23:59")

Engine = Callable[[dict, bool, Callable[[str], None]], Any]


class ConfigError(Exception):
    """The config file is missing or unusable; the message names the file and the field."""


class Terminated(Exception):
    """SIGTERM or SIGINT arrived during a run (``systemctl stop``, shutdown)."""


class TaskBusy(Exception):
    """Another run of the same task still held its lock when the wait was over."""

    def __init__(self, lock_file: Path, holder: int | None, waited: float, option: str = "--lock-wait") -> None:
        self.lock_file, self.holder, self.waited = lock_file, holder, waited
        who = f"pid {holder}" if holder else "a process that has not written its pid yet"
        super().__init__(f"another run of this task holds {lock_file} ({who}); waited {waited:g}s ({option}) for it to finish")


# ----------------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class TaskConfig:
    kind: str
    name: str
    params: dict[str, Any]
    schedule: Any = None
    timezone: str | None = None
    depends_on: list[str] = field(default_factory=list)
    path: str = ""

    @property
    def task_id(self) -> str:
        return f"{KIND_PREFIX[self.kind]}-{self.name}"

    @classmethod
    def from_dict(cls, data: Any, path: str = "") -> TaskConfig:
        where = path or "config"
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a JSON object with kind, name and params")
        kind = data.get("kind")
        if kind not in KIND_PREFIX:
            raise ConfigError(f"{where}: kind {kind!r}: use replication or snapshot")
        name = data.get("name")
        if not isinstance(name, str) or not TASK_NAME_RE.match(name):
            raise ConfigError(f"{where}: name {name!r}: use letters, digits and _ . - (at most 100 characters)")
        params = data.get("params")
        if not isinstance(params, dict):
            raise ConfigError(f"{where}: params must be an object with the task's module options")
        depends = data.get("depends_on") or []
        if isinstance(depends, str):
            depends = [depends]
        if not isinstance(depends, list) or not all(isinstance(d, str) and TASK_NAME_RE.match(d) for d in depends):
            raise ConfigError(f"{where}: depends_on {depends!r}: give snapshot task names")
        tz = data.get("timezone")
        if tz is not None and not isinstance(tz, str):
            raise ConfigError(f"{where}: timezone {tz!r} is not a time zone name")
        try:
            level_of(params.get("logging_level"), "params.logging_level")
        except LoggingLevelError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        return cls(kind=kind, name=name, params=params, schedule=data.get("schedule"), timezone=tz,
                   depends_on=list(depends), path=path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TaskConfig:
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from exc
        except ValueError as exc:
            raise ConfigError(f"config {path} is not valid JSON: {exc}") from exc
        return cls.from_dict(data, str(path))


# ----------------------------------------------------------------------------------------------------------------
# Lock, state, log
# ----------------------------------------------------------------------------------------------------------------


class TaskLock:
    """An exclusive ``flock`` on a file that is never removed (removing lock files races)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self, wait: float = 0.0, poll: float = 0.2) -> bool:
        """Take the lock, waiting up to ``wait`` seconds; False when another process still holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + max(wait, 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(min(poll, max(deadline - time.monotonic(), 0.01)))
                continue
            self._fd = fd
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return True

    def holder(self) -> int | None:
        """The pid the holder wrote into the lock file; None when unreadable or not written yet."""
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except (OSError, ValueError):
            return None
        return int(text) if text.isdigit() else None

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> TaskLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def read_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The state file's content; {} when it is missing or unreadable (a new task, a torn disk)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_state(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write ``state`` atomically: a reader sees the old file or the new one, never half of one."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(state, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def make_logger(task_id: str, log_file: str | os.PathLike[str] | None, stream: TextIO | None,
                max_bytes: int = DEFAULT_LOG_MAX_BYTES, keep: int = DEFAULT_LOG_KEEP, level: int = logging.INFO) -> logging.Logger:
    """A logger of its own (not in logging's global registry) writing to ``stream`` and ``log_file`` at ``level``.

    The journal stamps time and unit itself, so stream lines are bare; file lines carry an ISO time
    with offset, the task id and the pid. The file rotates at ``max_bytes``, keeping ``keep`` old files.
    """
    logger = logging.Logger(f"zfs-replication.{task_id}", level)
    logger.addHandler(logging.NullHandler())  # a check-mode module run has neither: never fall back to stderr
    if stream is not None:
        handler: logging.Handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(log_file, maxBytes=max_bytes, backupCount=keep, encoding="utf-8")
        formatter = logging.Formatter(f"%(asctime)s {task_id}[%(process)d]: %(message)s")
        formatter.formatTime = _iso_time  # type: ignore[method-assign]
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    return logger


def _iso_time(record: logging.LogRecord, datefmt: str | None = None) -> str:
    return datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="seconds")


def close_logger(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        handler.close()
        logger.removeHandler(handler)


class TaskLog:
    """The run's log: whole lines, already formatted (the engine hands over finished lines too)."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def debug(self, line: str) -> None:
        self.logger.debug("%s", line)

    def info(self, line: str) -> None:
        self.logger.info("%s", line)

    def warning(self, line: str) -> None:
        self.logger.warning("%s", line)

    def error(self, line: str) -> None:
        self.logger.error("%s", line)

    def close(self) -> None:
        close_logger(self.logger)


def _now_iso(now: datetime) -> str:
    return now.astimezone(timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------------------------------------
# Engines
# ----------------------------------------------------------------------------------------------------------------


def _run_replication(params: dict, check_mode: bool, log: Callable[[str], None]) -> Any:
    from ._replication import run_replication

    return run_replication(params, check_mode=check_mode, log=log)


def _run_snapshot(params: dict, check_mode: bool, log: Callable[[str], None]) -> Any:
    from ._snapshot_task import run_snapshot_task

    return run_snapshot_task(params, check_mode=check_mode, log=log)


ENGINES: dict[str, Engine] = {"replication": _run_replication, "snapshot": _run_snapshot}


class TaskInputError(Exception):
    """The task cannot run as configured (the engine's TaskError and friends end up here)."""


def _is_input_error(exc: BaseException) -> bool:
    """True for the engine's own 'bad task / unreachable host' errors: their message is the whole story."""
    if isinstance(exc, TaskInputError):
        return True
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"TaskError", "SnapshotTaskError", "ScheduleError", "NamingSchemaError", "LifetimeError"})


def _outside_window(config: TaskConfig, now: datetime) -> str | None:
    """The reason to skip a replication run started outside its schedule's begin/end window, else None."""
    schedule = config.schedule
    if config.kind != "replication" or not isinstance(schedule, dict):
        return None
    begin, end = schedule.get("begin") or _WINDOW_DEFAULTS[0], schedule.get("end") or _WINDOW_DEFAULTS[1]
    if (begin, end) == _WINDOW_DEFAULTS or begin == end:
        return None
    from ._schedule import Schedule

    sched = Schedule.from_spec(schedule, timezone=config.timezone)
    if sched.in_window(now):
        return None
    local = now.astimezone(sched.tz)
    return f"outside the schedule's window {begin}-{end} (now {local.strftime('%H:%M')} {config.timezone or 'local time'})"


def _restrict_wait(config: TaskConfig, now: datetime) -> tuple[str, datetime] | None:
    """(why, when the next window starts) for a replication run started outside its restrict_schedule window, else None."""
    spec = config.params.get("restrict_schedule")
    if config.kind != "replication" or spec is None:
        return None
    from ._schedule import RunWindow, ScheduleError

    try:
        window = RunWindow.from_spec(spec, timezone=config.timezone or config.params.get("timezone"))
    except ScheduleError as exc:
        raise TaskInputError(f"restrict_schedule: {exc}") from None
    if window is None or window.contains(now):
        return None
    start = window.next_start(now)
    return (f"outside restrict_schedule window {window.describe()}; next window starts at {start.isoformat(timespec='minutes')}",
            start)


# ----------------------------------------------------------------------------------------------------------------
# One run
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class RunOptions:
    state_dir: str = DEFAULT_STATE_DIR
    log_dir: str = DEFAULT_LOG_DIR
    lock_wait: float = 0.0
    dependency_wait: float = DEFAULT_DEPENDENCY_WAIT
    check_mode: bool = False
    ignore_window: bool = False
    log_max_bytes: int = DEFAULT_LOG_MAX_BYTES
    log_keep: int = DEFAULT_LOG_KEEP
    metrics_dir: str | None = None
    fail_when_busy: bool = False  # a module run fails when the lock stays held; the timer skips


def state_path(state_dir: str | os.PathLike[str], task_id: str) -> Path:
    return Path(state_dir, f"{task_id}.json")


def lock_path(state_dir: str | os.PathLike[str], task_id: str) -> Path:
    return Path(state_dir, f"{task_id}.lock")


def log_path(log_dir: str | os.PathLike[str], task_id: str) -> Path:
    return Path(log_dir, f"{task_id}.log")


def _summary(result: Any) -> tuple[list[str], dict[str, Any]]:
    """(errors, details for the state file) from an engine result."""
    errors = [str(e) for e in (getattr(result, "errors", None) or [])]
    if getattr(result, "failed", False) and not errors:
        errors = ["the engine reported a failure without a message"]
    data: dict[str, Any] = {}
    as_dict = getattr(result, "as_dict", None)
    if callable(as_dict):
        try:
            data = dict(as_dict())
        except Exception:  # the details are a bonus; the result still counts
            data = {}
    # The plan and the log are in the log file already; keep the state file small.
    details = {k: v for k, v in data.items() if k not in ("log", "plan", "errors")}
    return errors, details


def _wait_for_dependencies(config: TaskConfig, opts: RunOptions, log: TaskLog) -> None:
    for dep in config.depends_on:
        dep_lock = TaskLock(lock_path(opts.state_dir, f"{KIND_PREFIX['snapshot']}-{dep}"))
        if dep_lock.acquire(wait=0):
            dep_lock.release()
            continue
        log.info(f"snapshot task {dep} is running: waiting up to {opts.dependency_wait:.0f}s for it to finish")
        if dep_lock.acquire(wait=opts.dependency_wait):
            dep_lock.release()
            log.info(f"snapshot task {dep} finished")
        else:
            log.warning(f"snapshot task {dep} still runs after {opts.dependency_wait:.0f}s: replicating what exists now")


@dataclass
class TaskRun:
    """What one run of a task did: its exit status, the state it recorded and the engine's own result.

    ``result`` is the engine's result object (None when the engine raised or did not run); ``error`` is what
    the engine raised, if anything. ``busy`` is set when the run skipped because another run held the lock.
    """

    status: int
    state: dict[str, Any]
    result: Any = None
    error: BaseException | None = None
    busy: TaskBusy | None = None


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def run_task(config: TaskConfig, opts: RunOptions, stream: TextIO | None = None,
             engines: dict[str, Engine] | None = None, clock: Callable[[], datetime] | None = None) -> int:
    """Run one task once with its lock, log and state file (the timer's way: skip when busy). Returns the exit status."""
    return execute_task(config, opts, stream, engines, clock).status


def execute_task(config: TaskConfig, opts: RunOptions, stream: TextIO | None = None, engines: dict[str, Engine] | None = None,
                 clock: Callable[[], datetime] | None = None) -> TaskRun:
    """Run one task once under its lock, with its log, state file and metrics; whoever runs it goes through here.

    When another run holds the lock after ``opts.lock_wait`` seconds: with ``opts.fail_when_busy`` (a module
    run) this logs the failure and raises TaskBusy, else (the timer) it logs a skip and returns status 0.
    Either way the engine does not run and the state file stays the holder's. Check mode takes no lock and
    writes no file.
    """
    engines = engines or ENGINES
    clock = clock or _utc_now
    task_id = config.task_id
    try:
        level = level_of(config.params.get("logging_level"))
    except LoggingLevelError as exc:
        raise ConfigError(str(exc)) from None
    log = TaskLog(make_logger(task_id, None if opts.check_mode else log_path(opts.log_dir, task_id), stream,
                              opts.log_max_bytes, opts.log_keep, level))
    try:
        if opts.check_mode:
            return _run_locked(config, opts, log, engines, clock)
        lock = TaskLock(lock_path(opts.state_dir, task_id))
        if not lock.acquire(wait=opts.lock_wait):
            busy = TaskBusy(lock.path, lock.holder(), opts.lock_wait, "lock_wait" if opts.fail_when_busy else "--lock-wait")
            if opts.fail_when_busy:
                log.error(f"{config.kind} task {config.name}: FAILED: {busy}; nothing was changed")
                raise busy
            log.info(f"{config.kind} task {config.name}: skipped: {busy}; it records its own result")
            return TaskRun(EXIT_OK, {}, busy=busy)
        try:
            return _run_locked(config, opts, log, engines, clock)
        finally:
            lock.release()
    finally:
        log.close()


def _progress_writer(spath: Path, previous: dict[str, Any], running: dict[str, Any], opts: RunOptions, task_id: str,
                     clock: Callable[[], datetime]) -> Callable[[dict[str, Any]], None]:
    """A progress sink (module_utils/_progress.py) that keeps the run's streams in flight in the state file's
    ``running.transfers`` and the metrics, rewriting both (atomically) on every record."""
    transfers: dict[str, dict[str, Any]] = {}
    lock = threading.Lock()

    def write(record: dict[str, Any]) -> None:
        with lock:
            if record.get("ended"):
                transfers.pop(record["dataset"], None)
            else:
                transfers[record["dataset"]] = record
            state = {**previous, "running": {**running, "transfers": [transfers[k] for k in sorted(transfers)]}}
            try:
                write_state(spath, state)
            except OSError as exc:  # progress is for the reader; the stream goes on without it
                sys.stderr.write(f"zfs-replication-run: cannot write progress to {spath}: {exc}\n")
            if opts.metrics_dir:
                write_metrics(metrics_path(opts.metrics_dir, task_id), state, clock())

    return write


def _run_locked(config: TaskConfig, opts: RunOptions, log: TaskLog, engines: dict[str, Engine],
                clock: Callable[[], datetime]) -> TaskRun:
    task_id = config.task_id
    spath = state_path(opts.state_dir, task_id)
    previous = read_state(spath)
    started = clock()
    t0 = time.monotonic()
    state: dict[str, Any] = {
        "version": STATE_VERSION,
        "task": config.name,
        "kind": config.kind,
        "id": task_id,
        "config": config.path or None,
        "last_start": _now_iso(started),
        "last_end": None,
        "result": None,
        "reason": None,
        "error": None,
        "errors": [],
        "snapshots_sent": None,
        "bytes": None,
        "duration": None,
        "changed": False,
        "last_success": previous.get("last_success"),
        "details": {},
    }
    mode = " (check mode: nothing changes)" if opts.check_mode else ""
    log.info(f"{config.kind} task {config.name}: start{mode}")

    outcome: dict[str, Any] = {"result": None, "error": None}

    def finish(result: str, status: int) -> TaskRun:
        ended = clock()
        state["result"] = result
        state["last_end"] = _now_iso(ended)
        state["duration"] = round(time.monotonic() - t0, 3)
        if result == "ok":
            state["last_success"] = state["last_end"]
        if config.kind == "replication":  # what the target has, for the snapshot tasks that feed it (hold_pending_snapshots)
            state["replicated"] = record_replicated(previous.get("replicated"), config.params, state["details"], ended)
        newest = _newest_replicated(config, state["details"]) if result == "ok" else None
        state["newest_replicated"] = newest or previous.get("newest_replicated")
        if not opts.check_mode:
            write_state(spath, state)
            if opts.metrics_dir:
                write_metrics(metrics_path(opts.metrics_dir, task_id), state, ended)
        return TaskRun(status, state, outcome["result"], outcome["error"])

    running = {"since": _now_iso(started), "pid": os.getpid()}
    if not opts.check_mode:
        # While a run is in progress the file keeps the previous result and says who is running, and how far its
        # streams are (their progress records, every progress_interval).
        write_state(spath, {**previous, "running": running})
    known = {**previous, "task": config.name, "kind": config.kind, "id": task_id}  # a first run has no previous state
    on_progress = _progress_writer(spath, known, running, opts, task_id, clock)

    previous_handlers = _install_signal_handlers()
    try:
        window = None if opts.ignore_window else _outside_window(config, started)
        if window:
            state["reason"] = window
            log.info(f"{config.kind} task {config.name}: skipped: {window}")
            return finish("skipped", EXIT_OK)
        waiting = None if opts.ignore_window else _restrict_wait(config, started)
        if waiting:
            state["reason"], state["next_window"] = waiting[0], _now_iso(waiting[1])
            log.info(f"{config.kind} task {config.name}: waiting: {waiting[0]}")
            return finish("waiting", EXIT_OK)
        if config.depends_on:
            _wait_for_dependencies(config, opts, log)
        # The replication engine keeps its own records (a first transfer in progress) next to the task's state; a snapshot
        # task reads there what the replication tasks it feeds recorded (hold_pending_snapshots).
        params = {**config.params, "state_dir": str(opts.state_dir)}
        params = {k: v for k, v in params.items() if k != "logging_level"}  # the runner's, not the engine's
        with tracing(log.debug if log.logger.isEnabledFor(logging.DEBUG) else None), \
                contextlib.nullcontext() if opts.check_mode else reporting_to(on_progress):
            result = outcome["result"] = engines[config.kind](params, opts.check_mode, log.info)
        errors, details = _summary(result)
    except Terminated as exc:
        outcome["error"] = exc
        state["error"] = str(exc)
        state["errors"] = [str(exc)]
        log.error(f"{config.kind} task {config.name}: FAILED: {exc}")
        return finish("failed", EXIT_FAILED)
    except Exception as exc:
        outcome["error"] = exc
        message = str(exc) or type(exc).__name__
        if not _is_input_error(exc):
            message = f"internal error: {type(exc).__name__}: {message}"
            for line in traceback.format_exc().rstrip().splitlines():
                log.error(line)
        state["error"] = message
        state["errors"] = [message]
        log.error(f"{config.kind} task {config.name}: FAILED: {message}")
        return finish("failed", EXIT_FAILED)
    finally:
        _restore_signal_handlers(previous_handlers)

    state["details"] = details
    state["changed"] = bool(details.get("changed", getattr(result, "changed", False)))
    state["snapshots_sent"] = details.get("snapshots_sent")
    state["bytes"] = details.get("bytes")
    if errors:
        state["error"] = "; ".join(errors)
        state["errors"] = errors
        log.error(f"{config.kind} task {config.name}: FAILED: {state['error']}")
        return finish("failed", EXIT_FAILED)
    log.info(f"{config.kind} task {config.name}: ok")
    return finish("ok", EXIT_OK)


# ----------------------------------------------------------------------------------------------------------------
# Module runs
# ----------------------------------------------------------------------------------------------------------------

# The options every task module takes for the task's lock, log, state and metrics (doc fragment
# zfs.replication.task_run); plain dicts, so this file stays free of ansible imports. The defaults are the
# scheduler role's, so a module run and a timer run of the same task share their files.
TASK_RUN_SPEC: dict[str, dict[str, Any]] = {
    "state_dir": {"type": "path", "default": DEFAULT_STATE_DIR},
    "log_dir": {"type": "path", "default": DEFAULT_LOG_DIR},
    "metrics_dir": {"type": "path"},
    "lock_wait": {"type": "float", "default": DEFAULT_MODULE_LOCK_WAIT},
}


def run_from_module(kind: str, name: str, params: dict[str, Any], check_mode: bool) -> TaskRun:
    """A module's run of task ``name``: the same lock, log, state file and metrics as the timer's run of it.

    ``params`` are the module's parameters: the TASK_RUN_SPEC options say where the files are, the others
    go to the engine. The run ignores the schedule's window and dependencies (the playbook decides when it
    runs). Raises ConfigError for bad options (before anything runs) or files it cannot write (the lock and
    log files come first, so an unwritable directory stops the run before the engine starts), TaskBusy when
    another run still holds the lock after ``lock_wait`` seconds (nothing runs, nothing is written).
    """
    if not isinstance(name, str) or not TASK_NAME_RE.match(name):
        raise ConfigError(f"name {name!r}: use letters, digits and _ . - (at most 100 characters); it names the task's lock, log and "
                          "state files")
    for key in ("state_dir", "log_dir", "metrics_dir"):
        value = params.get(key)
        if (value is not None or key != "metrics_dir") and not (isinstance(value, str) and os.path.isabs(value)):
            raise ConfigError(f"{key} {value!r}: give an absolute path (the scheduler role's scheduler_{key}, so playbook and timer "
                              "runs share the task's files)")
    lock_wait = params.get("lock_wait")
    lock_wait = DEFAULT_MODULE_LOCK_WAIT if lock_wait is None else lock_wait
    if not isinstance(lock_wait, (int, float)) or lock_wait < 0:
        raise ConfigError(f"lock_wait {lock_wait!r}: give the seconds to wait for a run of the same task in progress (0 or more)")
    engine_params = {k: v for k, v in params.items() if k not in TASK_RUN_SPEC}
    config = TaskConfig(kind=kind, name=name, params=engine_params)
    opts = RunOptions(state_dir=params["state_dir"], log_dir=params["log_dir"], metrics_dir=params.get("metrics_dir"),
                      lock_wait=float(lock_wait), check_mode=check_mode, ignore_window=True, fail_when_busy=True)
    try:
        return execute_task(config, opts)
    except OSError as exc:
        where = exc.filename or opts.state_dir
        key = "log_dir" if str(where).startswith(opts.log_dir.rstrip("/") + "/") else "state_dir"
        raise ConfigError(f"{key} {getattr(opts, key)!r}: cannot write {where}: {exc.strerror or exc}: set {key} to a directory this "
                          "user can write (the scheduler role's, so playbook and timer runs share the task's files)") from exc


# ----------------------------------------------------------------------------------------------------------------
# Prometheus textfile metrics (node_exporter --collector.textfile.directory)
# ----------------------------------------------------------------------------------------------------------------

RESULTS = ("ok", "failed", "skipped", "waiting")


def metrics_path(metrics_dir: str | os.PathLike[str], task_id: str) -> Path:
    return Path(metrics_dir, f"zfs_replication_{task_id.replace('-', '_').replace('.', '_')}.prom")


def _newest_replicated(config: TaskConfig, details: dict[str, Any]) -> str | None:
    """The task's recovery point after a run (ISO), as zfs_replication_info dates it (module_utils/_lag.py)."""
    return run_recovery_point(details) if config.kind == "replication" else None


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_metrics(state: dict[str, Any], now: datetime) -> str:
    """The node_exporter textfile format for one task's state."""
    labels = f'task="{_label(str(state.get("task")))}",kind="{_label(str(state.get("kind")))}"'

    def stamp(iso: Any) -> float | None:
        try:
            return datetime.fromisoformat(str(iso)).timestamp() if iso else None
        except ValueError:
            return None

    newest = stamp(state.get("newest_replicated"))
    rows: list[tuple[str, str, str, Any, str]] = [
        ("zfs_replication_last_run_timestamp_seconds", "gauge", "End of the last run (Unix time).", stamp(state.get("last_end")), ""),
        ("zfs_replication_last_success_timestamp_seconds", "gauge", "End of the last successful run (Unix time).",
         stamp(state.get("last_success")), ""),
        ("zfs_replication_last_run_duration_seconds", "gauge", "Duration of the last run.", state.get("duration"), ""),
        ("zfs_replication_last_run_bytes", "gauge", "Bytes sent by the last run.", state.get("bytes"), ""),
        ("zfs_replication_last_run_snapshots_sent", "gauge", "Snapshots sent by the last run.", state.get("snapshots_sent"), ""),
        ("zfs_replication_newest_replicated_timestamp_seconds", "gauge",
         "Creation time of the newest snapshot on the task's targets, the oldest over its datasets (the recovery point).", newest, ""),
        ("zfs_replication_lag_seconds", "gauge", "Seconds from the recovery point to the end of the last run.",
         None if newest is None else lag_seconds(datetime.fromtimestamp(newest, timezone.utc), now), ""),
    ]
    if state.get("result") == "waiting":
        rows.append(("zfs_replication_next_window_timestamp_seconds", "gauge",
                     "Start of the restrict_schedule window a waiting replication runs in (Unix time).", stamp(state.get("next_window")), ""))
    rows += [("zfs_replication_last_run_result", "gauge", "Result of the last run: 1 for the result it had, 0 for the others.",
              1 if state.get("result") == r else 0, f',result="{r}"') for r in RESULTS]
    running = state.get("running") if isinstance(state.get("running"), dict) else None
    rows.append(("zfs_replication_running", "gauge", "1 while a run of the task is in progress, else 0.", 1 if running else 0, ""))
    transfers = (running or {}).get("transfers") or []
    for key, name, text in (("bytes", "zfs_replication_transfer_bytes", "Bytes a running stream has sent so far (pv's count)."),
                            ("expected_bytes", "zfs_replication_transfer_expected_bytes",
                             "The running stream's size as zfs send -nP estimated it.")):
        rows += [(name, "gauge", text, t.get(key), f',dataset="{_label(str(t.get("dataset")))}"') for t in transfers]
    lines: list[str] = []
    for name, kind, text, value, extra in rows:
        if value is None:
            continue
        if not any(line.startswith(f"# HELP {name} ") for line in lines):
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        number = float(value)
        lines.append(f"{name}{{{labels}{extra}}} {int(number) if number.is_integer() else round(number, 3)!r}")
    return "\n".join(lines + pending_metric_lines(state, labels)) + "\n"


def write_metrics(path: str | os.PathLike[str], state: dict[str, Any], now: datetime) -> None:
    """Write atomically (node_exporter must never read half a file); failures only warn, the run stands."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(render_metrics(state, now))
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        sys.stderr.write(f"zfs-replication-run: cannot write metrics {target}: {exc}\n")


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(f"stopped by signal {signal.Signals(signum).name}")


def _install_signal_handlers() -> dict[int, Any]:
    saved: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError):  # not the main thread (tests): leave the defaults
            saved[sig] = signal.signal(sig, _raise_terminated)
    return saved


def _restore_signal_handlers(saved: dict[int, Any]) -> None:
    for sig, handler in saved.items():
        signal.signal(sig, handler)


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zfs-replication-run", description="Run a zfs.replication task once (timer entry point).")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one task from its config file")
    run.add_argument("--config", required=True, help="the task's JSON config file (written by the zfs.replication.scheduler role)")
    run.add_argument("--check", action="store_true", help="plan only: log what would be done, change nothing, write no state")
    run.add_argument("--ignore-window", action="store_true",
                     help="run a replication task even outside its schedule's begin/end and its restrict_schedule window (Run Now)")
    run.add_argument("--lock-wait", type=float, default=0.0, metavar="SECONDS",
                     help="wait this long for a run of the same task in progress, then skip (default 0)")
    run.add_argument("--dependency-wait", type=float, default=DEFAULT_DEPENDENCY_WAIT, metavar="SECONDS",
                     help="wait this long for runs of the snapshot tasks it depends on (default 3600)")
    for p in (run, sub.add_parser("status", help="print the state of tasks as JSON")):
        p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help=f"default {DEFAULT_STATE_DIR}")
    run.add_argument("--log-dir", default=DEFAULT_LOG_DIR, help=f"default {DEFAULT_LOG_DIR}")
    run.add_argument("--log-max-bytes", type=int, default=DEFAULT_LOG_MAX_BYTES, metavar="BYTES",
                     help="rotate the task's log file at this size (default 1 MiB)")
    run.add_argument("--log-keep", type=int, default=DEFAULT_LOG_KEEP, metavar="N", help="rotated log files to keep (default 5)")
    run.add_argument("--metrics-dir", metavar="DIR", help="write Prometheus textfile metrics here (node_exporter textfile collector)")
    release = sub.add_parser("release", help="release the holds a replication task keeps on its base snapshots (the task is being removed)")
    release.add_argument("--config", required=True, help="the task's JSON config file")
    release.add_argument("--check", action="store_true", help="only report the holds it would release")
    status = sub.choices["status"]
    status.add_argument("ids", nargs="*", metavar="ID", help="task ids like repl-NAME or snap-NAME (default: all)")
    return parser


def _status(state_dir: str, ids: list[str], out: TextIO) -> int:
    directory = Path(state_dir)
    paths = [state_path(directory, i) for i in ids] if ids else sorted(directory.glob("*.json"))
    states = {p.stem: read_state(p) for p in paths}
    for state in states.values():
        running = state.get("running")
        if isinstance(running, dict) and not pid_alive(running.get("pid")):
            running["stale"] = True  # the run was killed hard; the next run replaces it
    json.dump(states, out, indent=2, sort_keys=True)
    out.write("\n")
    missing = [i for i in ids if not states.get(i)]
    return EXIT_CONFIG if missing else EXIT_OK


def pid_alive(pid: object) -> bool:
    """Whether PID names a running process (a run's recorded pid: a run killed hard leaves a stale one)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def release_task(config: TaskConfig, check_mode: bool, out: TextIO) -> int:
    """Release a replication task's holds on both sides; print what was released as JSON (the role reads it)."""
    if config.kind != "replication":
        json.dump({"task": config.name, "changed": False, "released": {}}, out)
        out.write("\n")
        return EXIT_OK
    from ._replication import release_holds

    try:
        result = release_holds(config.params, check_mode=check_mode)
    except Exception as exc:
        sys.stderr.write(f"zfs-replication-run: release {config.name}: {exc}\n")
        return EXIT_FAILED
    json.dump({k: v for k, v in result.items() if k != "log"}, out, sort_keys=True)
    out.write("\n")
    return EXIT_OK


def main(argv: list[str] | None = None, stream: TextIO | None = None) -> int:
    args = _parser().parse_args(argv)
    out = stream or sys.stdout
    if args.command == "status":
        return _status(args.state_dir, args.ids, out)
    try:
        config = TaskConfig.load(args.config)
    except ConfigError as exc:
        sys.stderr.write(f"zfs-replication-run: {exc}\n")
        return EXIT_CONFIG
    if args.command == "release":
        return release_task(config, check_mode=args.check, out=out)
    opts = RunOptions(state_dir=args.state_dir, log_dir=args.log_dir, lock_wait=args.lock_wait,
                      dependency_wait=args.dependency_wait, check_mode=args.check, ignore_window=args.ignore_window,
                      log_max_bytes=args.log_max_bytes, log_keep=args.log_keep, metrics_dir=args.metrics_dir)
    return run_task(config, opts, stream=out)


__all__ = ["TASK_RUN_SPEC", "ConfigError", "RunOptions", "TaskBusy", "TaskConfig", "TaskLock", "TaskRun", "execute_task", "main", "pid_alive",
           "read_state", "render_metrics", "run_from_module", "run_task", "write_metrics", "write_state"]
