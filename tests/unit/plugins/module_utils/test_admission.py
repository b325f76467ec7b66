# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Admission: how many datasets transfer at once (the rule alone, on a clock the test moves)."""
from __future__ import annotations

import contextlib
import threading

from ansible_collections.zfs.replication.plugins.module_utils._admission import LONG, SMALL, Admission


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Slot(contextlib.ExitStack):
    """A slot held by the test; ``moved`` is what its transfer reports when it ends (None: nothing counted)."""

    def __init__(self, admission: Admission) -> None:
        super().__init__()
        self.ticket = self.enter_context(admission.slot())

    def end(self, moved: int | None) -> None:
        self.ticket.bytes = moved
        self.close()


def take(admission: Admission, n: int) -> tuple[list[Slot], bool]:
    """Take up to N slots from this thread without waiting for one: the slots taken, and whether the next would wait."""
    taken = []
    for _i in range(n):
        if not admission._may_start():
            return taken, True
        taken.append(Slot(admission))
    return taken, not admission._may_start()


def test_auto_starts_at_four_and_widens_to_eight_only_after_a_small_stream_ended():
    clock = Clock()
    lines: list[str] = []
    a = Admission(None, lines.append, clock)
    first, full = take(a, 8)
    assert len(first) == 4 and full  # nothing has ended yet: no evidence the streams are small
    clock.now += 9  # a slow host: the small stream took 9 s to commit, and is still small
    first.pop().end(200_000)
    more, full = take(a, 8)
    assert len(more) == 5 and full  # 3 still running + 5 = 8, the most
    assert lines == ["  streams are small (under 64 MiB each): up to 8 datasets at once"]


def test_a_large_stream_ends_the_widening_however_fast_it_was():
    clock = Clock()
    a = Admission(None, lambda _l: None, clock)
    first, _full = take(a, 4)
    clock.now += 0.5
    first.pop().end(SMALL)  # 64 MiB in half a second: large
    taken, full = take(a, 8)
    assert len(taken) == 1 and full  # four at once, no more


def test_a_stream_nothing_counted_is_judged_by_its_duration():
    clock = Clock()
    a = Admission(None, lambda _l: None, clock)
    first, _full = take(a, 4)
    clock.now += 0.5
    first.pop().end(None)  # no pv: 0.5 s is short
    assert len(take(a, 8)[0]) == 5
    a2 = Admission(None, lambda _l: None, clock)
    second, _full = take(a2, 4)
    clock.now += 5
    second.pop().end(None)  # 5 s: long
    assert len(take(a2, 8)[0]) == 1


def test_auto_narrows_to_four_after_a_large_stream_ended():
    clock = Clock()
    a = Admission(None, lambda _l: None, clock)
    first, _full = take(a, 4)
    clock.now += 0.1
    first.pop().end(1000)  # small
    second, _full = take(a, 5)  # 3 + 5 = 8 running
    clock.now += 5
    second.pop().end(SMALL * 10)  # large
    assert len(a._running) == 7 and not a._may_start()
    while len(a._running) > 3:  # each of them ends large: nothing starts until fewer than four run
        assert not a._may_start()
        (first or second).pop().end(SMALL * 10)
        clock.now += 5
    taken, full = take(a, 8)
    assert len(taken) == 1 and full  # back to four at once


def test_auto_admits_no_fifth_while_four_running_have_run_long():
    clock = Clock()
    a = Admission(None, lambda _l: None, clock)
    first, _full = take(a, 4)
    clock.now += 0.1
    first.pop().end(1000)  # a small one ended
    _late, _full = take(a, 1)  # 4 running
    clock.now += LONG - 1
    assert a._may_start()  # running a while is no evidence on its own: small streams wait on commits
    clock.now += 1  # every one of them has now run LONG seconds: they are moving data
    assert not a._may_start()


def test_a_number_set_is_the_bound_whatever_the_durations():
    clock = Clock()
    lines: list[str] = []
    a = Admission(2, lines.append, clock)
    taken, full = take(a, 8)
    assert len(taken) == 2 and full
    taken.pop().end(10)  # small
    again, full = take(a, 8)
    assert len(again) == 1 and full and lines == []
    assert a.workers == 2 and Admission(None, lambda _l: None).workers == 8


def test_a_waiting_transfer_starts_when_one_ends():
    a = Admission(1, lambda _l: None)
    order: list[str] = []

    def second() -> None:
        with a.slot():
            order.append("second")

    with a.slot():
        t = threading.Thread(target=second)
        t.start()
        t.join(0.2)  # give it the chance to run if the bound did not hold
        order.append("first ends")
    t.join(10)
    assert order == ["first ends", "second"]
