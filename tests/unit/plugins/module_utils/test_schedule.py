# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.zfs.replication.plugins.module_utils._schedule import Schedule, ScheduleError, parse_field

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def in_utc(values: list[datetime]) -> list[datetime]:
    return [v.astimezone(UTC) for v in values]


def slots(schedule: Schedule, start: datetime, count: int) -> list[datetime]:
    result, current = [], start
    for _attempt in range(count):
        current = schedule.next_slot(current)
        result.append(current)
    return result


# ------------------------------------------------------------------ fields


@pytest.mark.parametrize(
    ("name", "text", "values"),
    [
        ("minute", "*", set(range(60))),
        ("minute", "*/15", {0, 15, 30, 45}),
        ("minute", "10/20", {10, 30, 50}),
        ("minute", "0,30", {0, 30}),
        ("minute", " 5 , 7 ", {5, 7}),
        ("minute", 0, {0}),
        ("hour", "1-5/2", {1, 3, 5}),
        ("hour", "22-23,0-1", {22, 23, 0, 1}),
        ("dom", "1,15,31", {1, 15, 31}),
        ("month", "jan,MAR,Dec", {1, 3, 12}),
        ("month", "jun-aug", {6, 7, 8}),
        ("month", "*/3", {1, 4, 7, 10}),
        ("dow", "*", set(range(7))),
        ("dow", "mon-fri", {1, 2, 3, 4, 5}),
        ("dow", "fri-sun", {5, 6, 0}),
        ("dow", "5-0", {5, 6, 0}),
        ("dow", "5-7", {5, 6, 0}),
        ("dow", "7", {0}),
        ("dow", "0,7", {0}),
        ("dow", "Sun,sat", {0, 6}),
        ("dow", "*/2", {0, 2, 4, 6}),
    ],
)
def test_parse_field(name: str, text: str, values: set[int]) -> None:
    assert parse_field(name, text) == frozenset(values)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"minute": "61"}, "schedule.minute '61' is out of range 0-59"),
        ({"minute": "0,61"}, "schedule.minute '61' in '0,61' is out of range 0-59"),
        ({"hour": "24"}, "schedule.hour '24' is out of range 0-23"),
        ({"dom": "0"}, "schedule.dom '0' is out of range 1-31"),
        ({"month": "13"}, "schedule.month '13' is out of range 1-12"),
        ({"dow": "8"}, "schedule.dow '8' is out of range 0-7"),
        ({"hour": "5-3"}, "schedule.hour '5-3' is a reversed range: write the smaller value first, e.g. '3-5'"),
        ({"dow": "funday"}, "schedule.dow 'funday' is not a number or a name: use 0-7 or sun, mon, tue, wed, thu, fri, sat"),
        (
            {"month": "january"},
            "schedule.month 'january' is not a number or a name: use 1-12 or jan, feb, mar, apr, may, jun, jul, aug, "
            "sep, oct, nov, dec",
        ),
        ({"minute": "-5"}, "schedule.minute '' in '-5' is not a number or a name: use 0-59"),
        ({"minute": "*/0"}, "schedule.minute '*/0' has step '0': use a whole number of 1 or more after '/'"),
        ({"minute": "*/x"}, "schedule.minute '*/x' has step 'x': use a whole number of 1 or more after '/'"),
        ({"minute": "1,,2"}, "schedule.minute '1,,2' has an empty list item: use values like '0,30'"),
        ({"minute": ""}, "schedule.minute is empty: use '*' for every value, or 0-59"),
        ({"minute": 1.5}, "schedule.minute 1.5 is not a string: quote it, e.g. '*/15' or '08:00'"),
        ({"minute": True}, "schedule.minute True is not a string: quote it, e.g. '*/15' or '08:00'"),
        ({"begin": "25:00"}, "schedule.begin '25:00' is not a time of day: use HH:MM from 00:00 to 23:59"),
        ({"end": "7pm"}, "schedule.end '7pm' is not a time of day: use HH:MM from 00:00 to 23:59"),
        ({"minutes": "0"}, "schedule has unknown key 'minutes': use minute, hour, dom, month, dow, begin, end"),
        (
            {"hour": "3", "begin": "05:00", "end": "06:00"},
            "schedule.begin '05:00' and schedule.end '06:00' exclude every time of schedule.hour '3' and "
            "schedule.minute '0': widen the window or change hour/minute",
        ),
        ({"dom": "30,31", "month": "feb"}, "schedule.dom '30,31' never falls in schedule.month 'feb': pick days that exist in those months"),
        ({"dom": "31", "month": "4,6,9,11"}, "schedule.dom '31' never falls in schedule.month '4,6,9,11': pick days that exist in those months"),
        (
            "often",
            "schedule 'often' is not a preset: use hourly, daily, weekly, monthly, or a mapping with minute, hour, dom, "
            "month, dow (and optional begin, end)",
        ),
        (
            ["0", "*"],
            "schedule ['0', '*'] is neither a preset nor a mapping: use hourly, daily, weekly, monthly or a mapping with "
            "minute, hour, dom, month, dow",
        ),
    ],
)
def test_invalid_specs_name_the_field(spec: object, message: str) -> None:
    with pytest.raises(ScheduleError) as info:
        Schedule.from_spec(spec)  # type: ignore[arg-type]
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


def test_unknown_timezone_is_rejected() -> None:
    with pytest.raises(ScheduleError) as info:
        Schedule.from_spec("hourly", timezone="Mars/Olympus")
    assert str(info.value) == (
        "schedule.timezone 'Mars/Olympus' is not a known IANA time zone: use 'UTC' or a name like 'Europe/Berlin' "
        "(see /usr/share/zoneinfo)"
    )


def test_feb_29_alone_is_valid_and_dom_31_with_dow_is_valid() -> None:
    Schedule.from_spec({"dom": "29", "month": "feb"})
    # with a restricted dow the OR rule makes the schedule fire on that weekday
    Schedule.from_spec({"dom": "31", "month": "feb", "dow": "mon"})


# ------------------------------------------------------------------ presets, defaults, as_dict


@pytest.mark.parametrize(
    ("preset", "calendar"),
    [
        ("hourly", ["*-*-* *:00:00"]),
        ("daily", ["*-*-* 00:00:00"]),
        ("weekly", ["Sun *-*-* 00:00:00"]),
        ("monthly", ["*-*-01 00:00:00"]),
        ("Daily", ["*-*-* 00:00:00"]),
    ],
)
def test_presets(preset: str, calendar: list[str]) -> None:
    assert Schedule.from_spec(preset).to_oncalendar() == calendar


def test_defaults_and_as_dict() -> None:
    schedule = Schedule.from_spec({"hour": 3}, timezone="UTC")
    assert schedule.as_dict() == {
        "minute": "0",
        "hour": "3",
        "dom": "*",
        "month": "*",
        "dow": "*",
        "begin": "00:00",
        "end": "23:59",
        "timezone": "UTC",
    }
    assert schedule == Schedule(hour="3", timezone="UTC")
    assert Schedule.from_spec(schedule) is schedule
    assert Schedule.from_spec(schedule, timezone="Europe/Berlin").timezone == "Europe/Berlin"


def test_none_values_take_defaults() -> None:
    assert Schedule.from_spec({"minute": None, "hour": "2", "begin": None}).as_dict()["minute"] == "0"


# ------------------------------------------------------------------ matching


def test_matches_uses_wall_time_in_the_schedule_zone() -> None:
    schedule = Schedule.from_spec({"minute": "30", "hour": "9"}, timezone="Europe/Berlin")
    assert schedule.matches(datetime(2024, 1, 5, 9, 30))  # naive: Berlin wall time
    assert schedule.matches(datetime(2024, 1, 5, 9, 30, 59))  # seconds ignored
    assert schedule.matches(utc(2024, 1, 5, 8, 30))  # CET = UTC+1
    assert schedule.matches(utc(2024, 7, 5, 7, 30))  # CEST = UTC+2
    assert not schedule.matches(utc(2024, 7, 5, 8, 30))
    assert not schedule.matches(datetime(2024, 1, 5, 9, 31))


def test_matches_dom_or_dow() -> None:
    schedule = Schedule.from_spec({"minute": "0", "hour": "0", "dom": "1", "dow": "mon"}, timezone="UTC")
    assert schedule.matches(datetime(2024, 2, 1))  # Thursday, the 1st
    assert schedule.matches(datetime(2024, 2, 5))  # Monday
    assert not schedule.matches(datetime(2024, 2, 6))
    # with dom '*' the weekday alone decides (AND with an unrestricted field)
    weekly = Schedule.from_spec({"minute": "0", "hour": "0", "dom": "*", "dow": "mon"}, timezone="UTC")
    assert not weekly.matches(datetime(2024, 2, 1))
    assert weekly.matches(datetime(2024, 2, 5))
    # month ANDs with the day rule
    summer = Schedule.from_spec({"minute": "0", "hour": "0", "dom": "1", "dow": "mon", "month": "jun-aug"}, timezone="UTC")
    assert not summer.matches(datetime(2024, 2, 5))
    assert summer.matches(datetime(2024, 6, 3))


def test_matches_skips_nonexistent_and_second_occurrence() -> None:
    hourly = Schedule.from_spec({"minute": "30"}, timezone="America/New_York")
    assert not hourly.matches(datetime(2024, 3, 10, 2, 30))  # skipped by spring-forward
    assert hourly.matches(datetime(2024, 11, 3, 1, 30))  # first 01:30 (EDT)
    assert hourly.matches(utc(2024, 11, 3, 5, 30))
    assert not hourly.matches(datetime(2024, 11, 3, 1, 30, fold=1))  # second 01:30 (EST)
    assert not hourly.matches(utc(2024, 11, 3, 6, 30))


# ------------------------------------------------------------------ windows


def test_window_inside_a_day() -> None:
    schedule = Schedule.from_spec({"minute": "*/30", "hour": "*", "begin": "09:15", "end": "11:00"}, timezone="UTC")
    assert in_utc(slots(schedule, utc(2024, 1, 1, 8, 0), 5)) == [
        utc(2024, 1, 1, 9, 30),
        utc(2024, 1, 1, 10, 0),
        utc(2024, 1, 1, 10, 30),
        utc(2024, 1, 1, 11, 0),  # end is inclusive
        utc(2024, 1, 2, 9, 30),
    ]
    assert schedule.in_window(utc(2024, 1, 1, 9, 15))
    assert schedule.in_window(utc(2024, 1, 1, 11, 0))
    assert not schedule.in_window(utc(2024, 1, 1, 11, 1))
    assert not schedule.in_window(utc(2024, 1, 1, 9, 14))


def test_window_wrapping_past_midnight() -> None:
    schedule = Schedule.from_spec({"minute": "*/30", "hour": "*", "begin": "22:00", "end": "01:00"}, timezone="UTC")
    assert in_utc(slots(schedule, utc(2024, 1, 1, 12, 0), 8)) == [
        utc(2024, 1, 1, 22, 0),
        utc(2024, 1, 1, 22, 30),
        utc(2024, 1, 1, 23, 0),
        utc(2024, 1, 1, 23, 30),
        utc(2024, 1, 2, 0, 0),
        utc(2024, 1, 2, 0, 30),
        utc(2024, 1, 2, 1, 0),
        utc(2024, 1, 2, 22, 0),
    ]
    assert schedule.previous_slot(utc(2024, 1, 2, 12, 0)) == utc(2024, 1, 2, 1, 0)
    assert schedule.in_window(utc(2024, 1, 1, 23, 59))
    assert schedule.in_window(utc(2024, 1, 1, 0, 30))
    assert not schedule.in_window(utc(2024, 1, 1, 1, 1))
    assert not schedule.in_window(utc(2024, 1, 1, 21, 59))


def test_window_begin_equals_end_is_the_whole_day() -> None:
    schedule = Schedule.from_spec({"minute": "0", "hour": "*", "begin": "08:00", "end": "08:00"}, timezone="UTC")
    assert schedule.in_window(utc(2024, 1, 1, 3, 0))
    assert len(schedule.to_oncalendar()) == 1


def test_window_follows_the_schedule_zone() -> None:
    schedule = Schedule.from_spec({"minute": "0", "hour": "*", "begin": "08:00", "end": "09:00"}, timezone="Europe/Berlin")
    assert schedule.in_window(utc(2024, 1, 1, 7, 0))  # 08:00 CET
    assert not schedule.in_window(utc(2024, 1, 1, 8, 30))  # 09:30 CET


# ------------------------------------------------------------------ slots: DST


def test_berlin_spring_forward_hourly() -> None:
    hourly = Schedule.from_spec("hourly", timezone="Europe/Berlin")
    # 2024-03-31: 02:00 CET -> 03:00 CEST; 02:00 does not exist
    got = slots(hourly, datetime(2024, 3, 31, 0, 30, tzinfo=BERLIN), 3)
    assert in_utc(got) == [utc(2024, 3, 31, 0, 0), utc(2024, 3, 31, 1, 0), utc(2024, 3, 31, 2, 0)]
    assert [(s.hour, s.utcoffset()) for s in got] == [(1, timedelta(hours=1)), (3, timedelta(hours=2)), (4, timedelta(hours=2))]
    assert hourly.previous_slot(utc(2024, 3, 31, 1, 10)) == datetime(2024, 3, 31, 3, 0, tzinfo=BERLIN)
    assert hourly.previous_slot(utc(2024, 3, 31, 0, 59)) == datetime(2024, 3, 31, 1, 0, tzinfo=BERLIN)


def test_berlin_spring_forward_daily_in_the_gap_is_skipped() -> None:
    schedule = Schedule.from_spec({"minute": "30", "hour": "2"}, timezone="Europe/Berlin")
    got = slots(schedule, datetime(2024, 3, 30, 3, 0, tzinfo=BERLIN), 2)
    assert in_utc(got) == [utc(2024, 4, 1, 0, 30), utc(2024, 4, 2, 0, 30)]
    assert schedule.previous_slot(datetime(2024, 3, 31, 23, 0, tzinfo=BERLIN)) == datetime(2024, 3, 30, 2, 30, tzinfo=BERLIN)


def test_berlin_fall_back_fires_once() -> None:
    schedule = Schedule.from_spec({"minute": "*/30", "hour": "*"}, timezone="Europe/Berlin")
    # 2024-10-27: 03:00 CEST -> 02:00 CET; 02:00-02:59 happen twice
    got = slots(schedule, utc(2024, 10, 26, 23, 0), 5)
    assert in_utc(got) == [
        utc(2024, 10, 26, 23, 30),  # 01:30 CEST
        utc(2024, 10, 27, 0, 0),  # 02:00 CEST
        utc(2024, 10, 27, 0, 30),  # 02:30 CEST
        utc(2024, 10, 27, 2, 0),  # 03:00 CET: the second 02:00 and 02:30 do not fire
        utc(2024, 10, 27, 2, 30),
    ]
    # during the second pass, the latest slot is the first pass's 02:30
    assert schedule.previous_slot(utc(2024, 10, 27, 1, 45)) == datetime(2024, 10, 27, 2, 30, tzinfo=BERLIN)
    assert schedule.previous_slot(utc(2024, 10, 27, 1, 45)).utcoffset() == timedelta(hours=2)
    assert schedule.next_slot(utc(2024, 10, 27, 1, 0)) == utc(2024, 10, 27, 2, 0)


def test_new_york_spring_forward_and_fall_back() -> None:
    hourly = Schedule.from_spec({"minute": "30"}, timezone="America/New_York")
    spring = slots(hourly, datetime(2024, 3, 10, 0, 0, tzinfo=NEW_YORK), 3)
    assert [s.strftime("%H:%M %Z") for s in spring] == ["00:30 EST", "01:30 EST", "03:30 EDT"]
    assert in_utc(spring) == [utc(2024, 3, 10, 5, 30), utc(2024, 3, 10, 6, 30), utc(2024, 3, 10, 7, 30)]
    fall = slots(hourly, datetime(2024, 11, 3, 0, 0, tzinfo=NEW_YORK), 3)
    assert [s.strftime("%H:%M %Z") for s in fall] == ["00:30 EDT", "01:30 EDT", "02:30 EST"]
    assert in_utc(fall) == [utc(2024, 11, 3, 4, 30), utc(2024, 11, 3, 5, 30), utc(2024, 11, 3, 7, 30)]
    # now = 01:40 EST (second pass): the last slot was 01:30 EDT, the next is 02:30 EST.
    # (A slot inside a fold never compares == to another zone's datetime (PEP 495): convert first.)
    assert hourly.previous_slot(utc(2024, 11, 3, 6, 40)).astimezone(UTC) == utc(2024, 11, 3, 5, 30)
    assert hourly.next_slot(utc(2024, 11, 3, 6, 40)) == utc(2024, 11, 3, 7, 30)
    # a naive now is wall time in the zone; fold=1 is the second 01:40
    assert hourly.previous_slot(datetime(2024, 11, 3, 1, 40, fold=1)).astimezone(UTC) == utc(2024, 11, 3, 5, 30)
    assert hourly.previous_slot(datetime(2024, 11, 3, 1, 40)).astimezone(UTC) == utc(2024, 11, 3, 5, 30)
    assert hourly.previous_slot(datetime(2024, 11, 3, 1, 29, fold=1)).astimezone(UTC) == utc(2024, 11, 3, 5, 30)
    assert hourly.previous_slot(datetime(2024, 11, 3, 1, 29)).astimezone(UTC) == utc(2024, 11, 3, 4, 30)


def test_new_york_daily_at_0130_fires_once_on_fall_back_day() -> None:
    schedule = Schedule.from_spec({"minute": "30", "hour": "1"}, timezone="America/New_York")
    assert in_utc(slots(schedule, utc(2024, 11, 2, 12, 0), 2)) == [utc(2024, 11, 3, 5, 30), utc(2024, 11, 4, 6, 30)]


def test_previous_slot_at_exact_slot_is_that_slot_and_next_is_strictly_after() -> None:
    hourly = Schedule.from_spec("hourly", timezone="UTC")
    assert hourly.previous_slot(utc(2024, 1, 1, 5, 0)) == utc(2024, 1, 1, 5, 0)
    assert hourly.next_slot(utc(2024, 1, 1, 5, 0)) == utc(2024, 1, 1, 6, 0)
    assert hourly.previous_slot(utc(2024, 1, 1, 5, 59, 59)) == utc(2024, 1, 1, 5, 0)


def test_slots_between() -> None:
    schedule = Schedule.from_spec({"minute": "0", "hour": "*/6"}, timezone="UTC")
    assert list(schedule.slots_between(utc(2024, 1, 1, 0, 0), utc(2024, 1, 2, 0, 0))) == [
        utc(2024, 1, 1, 6),
        utc(2024, 1, 1, 12),
        utc(2024, 1, 1, 18),
        utc(2024, 1, 2, 0),
    ]
    assert list(schedule.slots_between(utc(2024, 1, 1, 1), utc(2024, 1, 1, 5))) == []


# ------------------------------------------------------------------ slots: month ends


def test_dom_31_fires_only_in_long_months() -> None:
    schedule = Schedule.from_spec({"minute": "0", "hour": "0", "dom": "31"}, timezone="UTC")
    assert slots(schedule, utc(2024, 1, 31, 0, 1), 4) == [utc(2024, 3, 31), utc(2024, 5, 31), utc(2024, 7, 31), utc(2024, 8, 31)]
    assert schedule.previous_slot(utc(2024, 7, 30)) == utc(2024, 5, 31)


def test_feb_29_leap_years_only() -> None:
    schedule = Schedule.from_spec({"minute": "0", "hour": "12", "dom": "29", "month": "2"}, timezone="UTC")
    assert schedule.next_slot(utc(2024, 3, 1)) == utc(2028, 2, 29, 12)
    assert schedule.previous_slot(utc(2024, 2, 29, 11, 59)) == utc(2020, 2, 29, 12)
    assert schedule.previous_slot(utc(2024, 2, 29, 12, 0)) == utc(2024, 2, 29, 12)
    # 2100 is not a leap year: eight years between 2096 and 2104
    assert schedule.next_slot(utc(2096, 3, 1)) == utc(2104, 2, 29, 12)
    assert schedule.previous_slot(utc(2104, 2, 1)) == utc(2096, 2, 29, 12)


def test_last_days_of_month_over_a_year_end() -> None:
    schedule = Schedule.from_spec({"minute": "0", "hour": "0", "dom": "28-31"}, timezone="UTC")
    assert slots(schedule, utc(2023, 12, 30, 12), 4) == [utc(2023, 12, 31), utc(2024, 1, 28), utc(2024, 1, 29), utc(2024, 1, 30)]
    assert slots(schedule, utc(2024, 2, 28, 12), 3) == [utc(2024, 2, 29), utc(2024, 3, 28), utc(2024, 3, 29)]


def test_dom_or_dow_slots() -> None:
    schedule = Schedule.from_spec({"minute": "0", "hour": "0", "dom": "1", "dow": "mon"}, timezone="UTC")
    assert slots(schedule, utc(2023, 12, 31, 12), 7) == [
        utc(2024, 1, 1),  # Monday and the 1st
        utc(2024, 1, 8),
        utc(2024, 1, 15),
        utc(2024, 1, 22),
        utc(2024, 1, 29),
        utc(2024, 2, 1),  # Thursday, the 1st
        utc(2024, 2, 5),
    ]


def test_search_skips_months_instead_of_walking_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"days": 0, "slots": 0}
    day_matches, slot = Schedule._day_matches, Schedule._slot

    def counting_day(self: Schedule, day: object) -> bool:
        calls["days"] += 1
        return day_matches(self, day)  # type: ignore[arg-type]

    def counting_slot(self: Schedule, day: object, minute: int) -> object:
        calls["slots"] += 1
        return slot(self, day, minute)  # type: ignore[arg-type]

    monkeypatch.setattr(Schedule, "_day_matches", counting_day)
    monkeypatch.setattr(Schedule, "_slot", counting_slot)
    feb29 = Schedule.from_spec({"minute": "0", "hour": "0", "dom": "29", "month": "feb"}, timezone="UTC")
    assert feb29.next_slot(utc(2096, 3, 1)) == utc(2104, 2, 29)
    # only the February days 2097-2104 are looked at, and one slot is built
    assert calls == {"days": 7 * 28 + 29, "slots": 1}
    calls.update(days=0, slots=0)
    every_minute = Schedule.from_spec({"minute": "*", "hour": "*"}, timezone="UTC")
    assert every_minute.previous_slot(utc(2024, 6, 1, 12, 0, 30)) == utc(2024, 6, 1, 12, 0)
    assert calls["slots"] <= 181


# ------------------------------------------------------------------ property: slots agree with matches()

_ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago"]
_TRANSITIONS = [
    utc(2024, 3, 31, 1, 0),
    utc(2024, 10, 27, 1, 0),
    utc(2024, 3, 10, 7, 0),
    utc(2024, 11, 3, 6, 0),
    utc(2024, 4, 6, 15, 0),
    utc(2024, 10, 5, 15, 30),
    utc(2024, 4, 7, 3, 0),
    utc(2024, 9, 8, 4, 0),
]


@settings(max_examples=150)
@given(
    zone=st.sampled_from(_ZONES),
    minutes=st.sets(st.integers(0, 59), min_size=1, max_size=4),
    hours=st.sets(st.integers(0, 23), min_size=4, max_size=24),
    base=st.sampled_from(_TRANSITIONS),
    shift=st.integers(-36 * 60, 36 * 60),
    window=st.one_of(st.none(), st.tuples(st.integers(0, 1439), st.integers(0, 1439))),
)
def test_previous_and_next_slot_bracket_now_with_no_slot_between(
    zone: str, minutes: set[int], hours: set[int], base: datetime, shift: int, window: tuple[int, int] | None
) -> None:
    spec = {"minute": ",".join(map(str, sorted(minutes))), "hour": ",".join(map(str, sorted(hours)))}
    if window is not None:
        spec.update(begin=f"{window[0] // 60:02d}:{window[0] % 60:02d}", end=f"{window[1] // 60:02d}:{window[1] % 60:02d}")
    try:
        schedule = Schedule.from_spec(spec, timezone=zone)
    except ScheduleError:
        return  # the window excludes every time
    now = base + timedelta(minutes=shift, seconds=17)
    before, after = schedule.previous_slot(now), schedule.next_slot(now)
    assert before.timestamp() <= now.timestamp() < after.timestamp()
    assert schedule.matches(before) and schedule.matches(after)
    assert before.second == 0 and after.second == 0
    # brute force over every UTC minute in between: nothing else matches
    probe = before.astimezone(UTC) + timedelta(minutes=1)
    end = after.astimezone(UTC)
    while probe < end:
        assert not schedule.matches(probe), probe
        probe += timedelta(minutes=1)
    assert schedule.next_slot(before) == after
    assert schedule.previous_slot(after.astimezone(UTC) - timedelta(seconds=1)) == before


# ------------------------------------------------------------------ OnCalendar


@pytest.mark.parametrize(
    ("spec", "timezone_name", "expected"),
    [
        ("hourly", None, ["*-*-* *:00:00"]),
        ("hourly", "UTC", ["*-*-* *:00:00 UTC"]),
        ("daily", "Europe/Berlin", ["*-*-* 00:00:00 Europe/Berlin"]),
        ({"minute": "*/15", "hour": "*"}, None, ["*-*-* *:00,15,30,45:00"]),
        ({"minute": "*", "hour": "9-17", "dow": "mon-fri"}, None, ["Mon..Fri *-*-* 09..17:*:00"]),
        ({"minute": "0", "hour": "0", "dow": "fri-sun"}, None, ["Fri..Sun *-*-* 00:00:00"]),
        ({"minute": "0", "hour": "0", "dow": "0,1,3"}, None, ["Mon,Wed,Sun *-*-* 00:00:00"]),
        ({"minute": "5", "hour": "4", "dom": "1,15", "month": "jan-mar,dec"}, None, ["*-01..03,12-01,15 04:05:00"]),
        ({"minute": "0", "hour": "0", "dom": "1", "dow": "mon"}, None, ["*-*-01 00:00:00", "Mon *-*-* 00:00:00"]),
        ({"minute": "0", "hour": "0", "dom": "1", "dow": "mon", "month": "6"}, None, ["*-06-01 00:00:00", "Mon *-06-* 00:00:00"]),
        ({"minute": "0", "hour": "0", "dom": "29", "month": "2"}, None, ["*-02-29 00:00:00"]),
        (
            {"minute": "*/15", "hour": "*", "begin": "09:10", "end": "17:20"},
            None,
            ["*-*-* 09:15,30,45:00", "*-*-* 10..16:00,15,30,45:00", "*-*-* 17:00,15:00"],
        ),
        (
            {"minute": "0,30", "hour": "*", "begin": "22:00", "end": "01:00"},
            "America/New_York",
            ["*-*-* 00,22,23:00,30:00 America/New_York", "*-*-* 01:00:00 America/New_York"],
        ),
    ],
)
def test_to_oncalendar(spec: object, timezone_name: str | None, expected: list[str]) -> None:
    assert Schedule.from_spec(spec, timezone=timezone_name).to_oncalendar() == expected  # type: ignore[arg-type]


CALENDAR_SPECS: list[tuple[object, str | None]] = [
    ("hourly", None),
    ("weekly", "UTC"),
    ("monthly", "Europe/Berlin"),
    ({"minute": "*/7", "hour": "1-5/2,20", "dom": "1,31", "dow": "sat-sun", "month": "jan,feb,dec"}, "UTC"),
    ({"minute": "0,30", "hour": "*", "begin": "22:00", "end": "01:00"}, "America/New_York"),
    ({"minute": "*/15", "hour": "*", "begin": "09:10", "end": "17:20", "dow": "mon-fri"}, "UTC"),
    ({"minute": "0", "hour": "12", "dom": "29", "month": "feb"}, "UTC"),
    ({"minute": "*", "hour": "*"}, None),
]
needs_systemd_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")


def _systemd_calendar(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TZ="UTC", LC_ALL="C", SYSTEMD_COLORS="0")
    return subprocess.run(["systemd-analyze", "calendar", *args], capture_output=True, text=True, env=env, timeout=60, check=False)


@needs_systemd_analyze
def test_systemd_analyze_accepts_every_expression() -> None:
    expressions = [e for spec, tz in CALENDAR_SPECS for e in Schedule.from_spec(spec, timezone=tz).to_oncalendar()]  # type: ignore[arg-type]
    assert len(expressions) == 12
    for expression in expressions:
        proc = _systemd_calendar([expression])
        assert proc.returncode == 0, f"{expression}: {proc.stderr}"
        assert f"Normalized form: {expression}" in proc.stdout


_ELAPSE = re.compile(r"(?:Next elapse|Iter\. #\d+): \w{3} (\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) UTC")


@needs_systemd_analyze
@pytest.mark.parametrize(
    ("spec", "timezone_name"), [(s, t) for s, t in CALENDAR_SPECS if t is not None], ids=lambda v: str(v)[:40]
)
def test_systemd_fires_at_the_same_times(spec: object, timezone_name: str) -> None:
    schedule = Schedule.from_spec(spec, timezone=timezone_name)  # type: ignore[arg-type]
    base = utc(2024, 1, 30, 21, 0)
    count = 25
    theirs: set[datetime] = set()
    for expression in schedule.to_oncalendar():
        proc = _systemd_calendar([f"--base-time={base:%Y-%m-%d %H:%M:%S} UTC", f"--iterations={count}", expression])
        if proc.returncode != 0 and "base-time" in proc.stderr:
            pytest.skip("this systemd-analyze has no --base-time")
        assert proc.returncode == 0, proc.stderr
        times = [datetime.strptime(m, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC) for m in _ELAPSE.findall(proc.stdout)]
        assert len(times) == count, proc.stdout
        theirs.update(times)
    ours = in_utc(slots(schedule, base, count))
    # the first `count` of the merged systemd sequences are exactly our slots
    assert sorted(theirs)[:count] == ours


def test_local_zone_schedule_has_no_zone_suffix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    schedule = Schedule.from_spec("daily")
    assert schedule.to_oncalendar() == ["*-*-* 00:00:00"]
    assert schedule.next_slot(utc(2024, 1, 1, 0, 0)) == utc(2024, 1, 1, 15, 0)
    assert schedule.tz.utcoffset(datetime(2024, 1, 1)) == timedelta(hours=9)
