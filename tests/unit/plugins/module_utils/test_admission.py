# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Admission: how many datasets transfer at once (the rule alone, on a clock the test moves)."""
from __future__ import annotations

import contextlib
import threading

from ansible_collections.zfs.replication.plugins.module_utils._admission import Admission


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def take(admission: Admission, n: int) -> tuple[list[contextlib.ExitStack], bool]:
    """Take up to N slots from this thread without waiting for one: the slots taken, and whether the next would wait."""
    taken = []
    for _i in range(n):
        if not admission._may_start():
            return taken, True
        stack = contextlib.ExitStack()
        stack.enter_context(admission.slot())
        taken.append(stack)
    return taken, not admission._may_start()


def test_auto_starts_at_four_and_widens_to_eight_only_after_a_short_transfer_ended():
    clock = Clock()
    lines: list[str] = []
    a = Admission(None, lines.append, clock)
    first, full = take(a, 8)
    assert len(first) == 4 and full  # nothing has ended yet: no evidence the streams are short
    clock.now += 0.5
    first.pop().close()  # ended after 0.5 s: short
    more, full = take(a, 8)
    assert len(more) == 5 and full  # 3 still running + 5 = 8, the most
    assert lines == ["  transfers are short (each under 2 s): up to 8 datasets at once"]


def test_auto_narrows_to_four_after_a_long_transfer_ended():
    clock = Clock()
    a = Admission(None, lambda _l: None, clock)
    first, _full = take(a, 4)
    clock.now += 0.1
    first.pop().close()  # short
    second, _full = take(a, 5)  # 3 + 5 = 8 running
    clock.now += 5
    second.pop().close()  # ran 5 s: long
    assert len(a._running) == 7 and not a._may_start()
    while len(a._running) > 3:  # each of them ends long: nothing starts until fewer than four run
        assert not a._may_start()
        (first or second).pop().close()
        clock.now += 5
    taken, full = take(a, 8)
    assert len(taken) == 1 and full  # back to four at once


def test_auto_admits_no_fifth_while_four_running_have_run_long():
    clock = Clock()
    a = Admission(None, lambda _l: None, clock)
    first, _full = take(a, 4)
    clock.now += 0.1
    first.pop().close()  # a short one ended
    _late, _full = take(a, 1)  # 4 running
    clock.now += 3  # every one of them has now run 3 s
    assert not a._may_start()  # the short one's evidence is outweighed by four long-running transfers


def test_a_number_set_is_the_bound_whatever_the_durations():
    clock = Clock()
    lines: list[str] = []
    a = Admission(2, lines.append, clock)
    taken, full = take(a, 8)
    assert len(taken) == 2 and full
    taken.pop().close()  # short
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
