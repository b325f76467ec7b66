# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Live progress of running streams.

While a stream runs, the executor reads ``pv -n``'s running byte count every ``progress_interval`` seconds and hands
it to the stream's :class:`StreamProgress`, which logs one line (bytes so far of the expected size, percent, rate over
the last interval, ETA) and reports a record to whoever listens: the timer's runner keeps the records in the task's
state file and metrics (see ``_runner.py``). No Python is in the data path: pv counts, we only read what it wrote.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, Callable

Record = dict[str, Any]
Sink = Callable[[Record], None]

_sinks: list[Sink] = []
_lock = threading.Lock()


@contextlib.contextmanager
def reporting_to(sink: Sink) -> Iterator[None]:
    """Send the progress records of every stream that runs in this process (any thread) to ``sink`` in the block."""
    with _lock:
        _sinks.append(sink)
    try:
        yield
    finally:
        with _lock:
            _sinks.remove(sink)


def report(record: Record) -> None:
    with _lock:
        sinks = list(_sinks)
    for sink in sinks:
        sink(record)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def human_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class StreamProgress:
    """The progress of one stream. Call it with pv's running byte count; ``end()`` when the stream is over.

    ``expected`` is the stream's size as ``zfs send -nP`` estimated it (None when the command line cannot tell), so
    percent and ETA are estimates too; the rate is over the last interval, the ETA uses it. It may be a callable that
    makes the estimate: it is called once, at the first progress line, so a stream that ends sooner never asks.
    """

    def __init__(self, target: str, snapshot: str, expected: int | None | Callable[[], int | None], log: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.target = target
        self.snapshot = snapshot
        self._ask = expected if callable(expected) else None
        self.expected = None if callable(expected) else expected
        self.log = log
        self.clock = clock
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._t0 = self._last_t = clock()
        self._last_bytes = 0

    def __call__(self, nbytes: int) -> None:
        if self._ask is not None:
            self.expected, self._ask = self._ask(), None
        now = self.clock()
        span = now - self._last_t
        rate = (nbytes - self._last_bytes) / span if span > 0 else None
        self._last_t, self._last_bytes = now, nbytes
        percent = eta = None
        if self.expected:
            percent = min(100.0, 100.0 * nbytes / self.expected)
            if rate:
                eta = max(0.0, (self.expected - nbytes) / rate)
        record: Record = {
            "dataset": self.target, "snapshot": self.snapshot, "bytes": nbytes, "expected_bytes": self.expected,
            "percent": None if percent is None else round(percent, 1), "rate": None if rate is None else round(rate),
            "eta_seconds": None if eta is None else round(eta), "started": self.started,
            "seconds": round(now - self._t0, 1),
        }
        size = f" of {human_bytes(self.expected)} ({percent:.0f}%)" if percent is not None else " (size unknown)"
        speed = f", {human_bytes(rate)}/s" if rate is not None else ""
        left = f", ETA {human_seconds(eta)}" if eta is not None else ""
        self.log(f"  progress {self.target}@{self.snapshot}: {human_bytes(nbytes)}{size}{speed}{left}")
        report(record)

    def end(self) -> None:
        report({"dataset": self.target, "snapshot": self.snapshot, "ended": True})
