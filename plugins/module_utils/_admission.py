# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""How many datasets a run transfers at once.

``parallel_transfers`` set: exactly up to that many. Unset (auto): up to :data:`AUTO_BASE`, and up to
``MAX_PARALLEL_TRANSFERS`` while the streams are small: the last one to end moved less than :data:`SMALL` bytes (a
stream nothing counted: took less than :data:`SHORT` seconds), and fewer than :data:`AUTO_BASE` of those running have
run :data:`LONG` seconds. A catch-up's small incremental streams spend most of their time waiting for the receive's
transaction groups (each received snapshot is committed in one), however long that takes on a slow or busy host, and
streams received at the same time share those waits; streams that move more data are bounded by disks and links, and
stay at :data:`AUTO_BASE`. Once a large one ends the run narrows again until a small one ends.
A legacy zfs (zfs-fuse) does every zfs call of its host in one daemon, already busy at four receives (measured: at
eight each takes twice as long, and the daemon twice failed an assertion and exited): auto does not widen there.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Callable

from ._replication_task import MAX_PARALLEL_TRANSFERS

AUTO_BASE = 4
SMALL = 64 * 1024 * 1024  # bytes: a stream a disk writes in well under a second
SHORT = 2.0  # seconds: a stream nothing counted (no pv) is small when it took less
LONG = 30.0  # seconds: a transfer running this long moves data, whatever the last one to end was


class Ticket:
    """One admitted transfer: the caller sets ``bytes`` to what it moved (None: not counted)."""

    __slots__ = ("bytes",)

    def __init__(self) -> None:
        self.bytes: int | None = None


class Admission:
    """Admits transfers (``with admission.slot():``) as the module's docstring says; thread-safe."""

    def __init__(self, fixed: int | None, log: Callable[[str], None], clock: Callable[[], float] = time.monotonic,
                 widen: bool = True) -> None:
        self.base = fixed or AUTO_BASE
        self.most = fixed or (MAX_PARALLEL_TRANSFERS if widen else AUTO_BASE)
        self.log = log
        self.clock = clock
        self._running: list[float] = []  # when each running transfer started
        self._last_small = False
        self._widened = False
        self._cond = threading.Condition()

    @property
    def workers(self) -> int:
        """Threads the run needs: the most that may ever run at once."""
        return self.most

    def _may_start(self) -> bool:
        running = len(self._running)
        if running < self.base:
            return True
        if running >= self.most or not self._last_small:
            return False
        now = self.clock()
        return sum(1 for began in self._running if now - began >= LONG) < self.base

    @contextlib.contextmanager
    def slot(self) -> Iterator[Ticket]:
        with self._cond:
            while not self._may_start():
                self._cond.wait()
            began = self.clock()
            self._running.append(began)
            if len(self._running) > self.base and not self._widened:
                self._widened = True
                self.log(f"  streams are small (under {SMALL // 2**20} MiB each): up to {self.most} datasets at once")
        ticket = Ticket()
        try:
            yield ticket
        finally:
            with self._cond:
                self._running.remove(began)  # one of equal start times is as good as another
                moved = ticket.bytes
                self._last_small = moved < SMALL if moved is not None else self.clock() - began < SHORT
                self._cond.notify_all()
