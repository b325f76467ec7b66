# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""TrueNAS-style schedules: cron fields plus an optional begin/end window, in a named time zone.

Semantics, chosen to match TrueNAS (zettarepl, croniter) and cron:

* ``dom`` and ``dow`` both restricted (neither is exactly ``*``): a day matches when EITHER
  matches (cron's OR rule). Otherwise a day must match both (the unrestricted one matches all).
* ``dow`` 0 and 7 are Sunday; names ``sun``..``sat`` and ``jan``..``dec`` are accepted in any
  case; a range ending in Sunday (``fri-sun``, ``5-0``) runs through the weekend.
* ``begin``/``end`` (``HH:MM``, inclusive, default ``00:00``/``23:59``) restrict the times of day.
  ``end`` before ``begin`` wraps past midnight (22:00-02:00); ``begin == end`` is the whole day,
  as in TrueNAS.
* A missing ``minute`` is ``0``, like the TrueNAS API, so a forgotten field never means "every
  minute"; the other fields default to ``*``.
* Time zones: slots are wall times in the schedule's zone. A wall time skipped by a
  spring-forward change does not fire that day; a wall time repeated by a fall-back change fires
  once, at its first occurrence. Every returned slot is an aware datetime in the zone (its wall
  time is what a naming schema writes). Note PEP 495: a slot inside a DST fold never compares
  ``==`` to a datetime of another zone; compare ``.timestamp()`` or ``.astimezone(utc)``.
"""
from __future__ import annotations

import calendar
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, tzinfo
from typing import Union

from ._tz import TimezoneError, exists, zone

SpecType = Union[str, Mapping[str, object]]

PRESETS: dict[str, dict[str, str]] = {
    "hourly": {"minute": "0", "hour": "*", "dom": "*", "month": "*", "dow": "*"},
    "daily": {"minute": "0", "hour": "0", "dom": "*", "month": "*", "dow": "*"},
    "weekly": {"minute": "0", "hour": "0", "dom": "*", "month": "*", "dow": "0"},  # Sunday, as TrueNAS
    "monthly": {"minute": "0", "hour": "0", "dom": "1", "month": "*", "dow": "*"},
}
DEFAULTS: dict[str, str] = {
    "minute": "0",
    "hour": "*",
    "dom": "*",
    "month": "*",
    "dow": "*",
    "begin": "00:00",
    "end": "23:59",
}
MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DOW_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_SYSTEMD_DOW = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
_TIME_RE = re.compile(r"([0-9]{1,2}):([0-9]{2})")
# How far (minutes) a DST change can move wall time; real zones shift by at most 2 hours.
_DST_SLACK = 180
# Months to search for a matching day before giving up; Feb 29 recurs within 8 years.
_SEARCH_MONTHS = 12 * 40


class ScheduleError(ValueError):
    """A schedule that cannot be parsed or can never fire."""


@dataclass(frozen=True)
class _FieldSpec:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    name_base: int = 0  # the number of names[0]

    def hint(self) -> str:
        text = f"{self.low}-{self.high}"
        if self.names:
            text += f" or {', '.join(self.names)}"
        return text


_FIELDS = {
    "minute": _FieldSpec("minute", 0, 59),
    "hour": _FieldSpec("hour", 0, 23),
    "dom": _FieldSpec("dom", 1, 31),
    "month": _FieldSpec("month", 1, 12, MONTH_NAMES, 1),
    "dow": _FieldSpec("dow", 0, 7, DOW_NAMES, 0),
}


def _value(spec: _FieldSpec, token: str, text: str) -> int:
    where = "" if token == text else f" in {text!r}"
    if token.isdigit() and token.isascii():
        number = int(token)
    elif token.lower() in spec.names:
        number = spec.names.index(token.lower()) + spec.name_base
    else:
        raise ScheduleError(
            f"schedule.{spec.name} {token!r}{where} is not a number or a name: use {spec.hint()}"
        )
    if not spec.low <= number <= spec.high:
        raise ScheduleError(f"schedule.{spec.name} {token!r}{where} is out of range {spec.low}-{spec.high}")
    return number


def parse_field(name: str, value: object) -> frozenset[int]:
    """The set of values a cron field allows (dow: 0-6, Sunday 0). Raises ScheduleError."""
    spec = _FIELDS[name]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ScheduleError(f"schedule.{name} {value!r} is not a cron field: use a string such as '*' or '0,30'")
    text = str(value).strip()
    if not text:
        raise ScheduleError(f"schedule.{name} is empty: use '*' for every value, or {spec.hint()}")
    # '*' in dow means 0-6; 7 is only an alias of Sunday
    full_high = 6 if name == "dow" else spec.high
    result: set[int] = set()
    for item in text.split(","):
        item = item.strip()
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not (step_text.isdigit() and step_text.isascii()) or int(step_text) < 1:
                raise ScheduleError(
                    f"schedule.{name} {item!r} has step {step_text!r}: use a whole number of 1 or more after '/'"
                )
            step = int(step_text)
        if base == "*":
            low, high = spec.low, full_high
        elif "-" in base:
            first, _sep, last = base.partition("-")
            low, high = _value(spec, first.strip(), text), _value(spec, last.strip(), text)
            if name == "dow" and high == 0 and low > 0:
                high = 7  # fri-sun: through the weekend
            if high < low:
                raise ScheduleError(
                    f"schedule.{name} {item!r} is a reversed range: write the smaller value first, "
                    f"e.g. '{base.partition('-')[2].strip()}-{base.partition('-')[0].strip()}'"
                )
        elif base:
            low = _value(spec, base, text)
            # 'a/step' means from a to the end of the range, as in croniter
            high = full_high if slash else low
        else:
            raise ScheduleError(f"schedule.{name} {text!r} has an empty list item: use values like '0,30'")
        result.update(range(low, high + 1, step))
    if name == "dow" and 7 in result:
        result.discard(7)
        result.add(0)
    return frozenset(result)


def _parse_hhmm(name: str, value: object) -> int:
    """Minute of day for 'HH:MM'."""
    m = _TIME_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if m is None or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ScheduleError(f"schedule.{name} {value!r} is not a time of day: use HH:MM from 00:00 to 23:59")
    return int(m.group(1)) * 60 + int(m.group(2))


def _window_allows(begin: int, end: int, minute_of_day: int) -> bool:
    if begin < end:
        return begin <= minute_of_day <= end
    return minute_of_day >= begin or minute_of_day <= end


def _runs(values: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs in sorted ``values``: [0,1,2,5] -> [(0,2),(5,5)]."""
    runs: list[tuple[int, int]] = []
    for v in values:
        if runs and v == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    return runs


def _calendar_list(values: list[int], labels: list[str]) -> str:
    """systemd list syntax: runs of three or more become 'a..b'."""
    parts: list[str] = []
    for low, high in _runs(values):
        if high - low >= 2:
            parts.append(f"{labels[low]}..{labels[high]}")
        else:
            parts.extend(labels[v] for v in range(low, high + 1))
    return ",".join(parts)


def _numbers(values: frozenset[int] | set[int], low: int, high: int) -> str:
    if set(values) == set(range(low, high + 1)):
        return "*"
    return _calendar_list(sorted(values), [f"{v:02d}" for v in range(high + 1)])


@dataclass(frozen=True)
class Schedule:
    """A validated schedule. Build with :meth:`from_spec`; the fields keep the texts as given."""

    minute: str = DEFAULTS["minute"]
    hour: str = DEFAULTS["hour"]
    dom: str = DEFAULTS["dom"]
    month: str = DEFAULTS["month"]
    dow: str = DEFAULTS["dow"]
    begin: str = DEFAULTS["begin"]
    end: str = DEFAULTS["end"]
    timezone: str | None = None  # 'UTC' or an IANA name; None: the host's local zone

    _minutes: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _hours: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _doms: frozenset[int] = field(init=False, repr=False, compare=False)
    _months: frozenset[int] = field(init=False, repr=False, compare=False)
    _dows: frozenset[int] = field(init=False, repr=False, compare=False)
    _or_days: bool = field(init=False, repr=False, compare=False)
    _begin: int = field(init=False, repr=False, compare=False)
    _end: int = field(init=False, repr=False, compare=False)
    _times: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _time_set: frozenset[int] = field(init=False, repr=False, compare=False)
    _tz: tzinfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        sets = {name: parse_field(name, getattr(self, name)) for name in _FIELDS}
        begin = _parse_hhmm("begin", self.begin)
        end = _parse_hhmm("end", self.end)
        try:
            tz = zone(self.timezone, "schedule.timezone")
        except TimezoneError as exc:
            raise ScheduleError(str(exc)) from None
        times = tuple(
            h * 60 + m
            for h in sorted(sets["hour"])
            for m in sorted(sets["minute"])
            if _window_allows(begin, end, h * 60 + m)
        )
        if not times:
            raise ScheduleError(
                f"schedule.begin {self.begin!r} and schedule.end {self.end!r} exclude every time of "
                f"schedule.hour {self.hour!r} and schedule.minute {self.minute!r}: widen the window or "
                "change hour/minute"
            )
        dom_restricted = str(self.dom).strip() != "*"
        dow_restricted = str(self.dow).strip() != "*"
        if not dow_restricted:
            # Feb 29 counts (it recurs); 31 in a 30-day month never does
            longest = {m: calendar.monthrange(2000, m)[1] for m in sets["month"]}
            if not any(d <= longest[m] for m in sets["month"] for d in sets["dom"]):
                raise ScheduleError(
                    f"schedule.dom {self.dom!r} never falls in schedule.month {self.month!r}: "
                    "pick days that exist in those months"
                )
        setattr_ = object.__setattr__
        setattr_(self, "_minutes", tuple(sorted(sets["minute"])))
        setattr_(self, "_hours", tuple(sorted(sets["hour"])))
        setattr_(self, "_doms", sets["dom"])
        setattr_(self, "_months", sets["month"])
        setattr_(self, "_dows", sets["dow"])
        setattr_(self, "_or_days", dom_restricted and dow_restricted)
        setattr_(self, "_begin", begin)
        setattr_(self, "_end", end)
        setattr_(self, "_times", times)
        setattr_(self, "_time_set", frozenset(times))
        setattr_(self, "_tz", tz)

    # ----------------------------------------------------------------- construction

    @classmethod
    def from_spec(cls, spec: SpecType | Schedule, timezone: str | None = None) -> Schedule:
        """A schedule from a preset name (hourly, daily, weekly, monthly) or a mapping of cron fields
        ``minute, hour, dom, month, dow`` and optional ``begin``/``end`` ("HH:MM")."""
        if isinstance(spec, Schedule):
            return spec if timezone is None or timezone == spec.timezone else replace(spec, timezone=timezone)
        if isinstance(spec, str):
            preset = PRESETS.get(spec.strip().lower())
            if preset is None:
                raise ScheduleError(
                    f"schedule {spec!r} is not a preset: use hourly, daily, weekly, monthly, or a mapping "
                    "with minute, hour, dom, month, dow (and optional begin, end)"
                )
            return cls(timezone=timezone, **preset)
        if not isinstance(spec, Mapping):
            raise ScheduleError(
                f"schedule {spec!r} is neither a preset nor a mapping: use hourly, daily, weekly, monthly "
                "or a mapping with minute, hour, dom, month, dow"
            )
        unknown = sorted(str(k) for k in spec if k not in DEFAULTS)
        if unknown:
            raise ScheduleError(
                f"schedule has unknown key {', '.join(repr(k) for k in unknown)}: use minute, hour, dom, "
                "month, dow, begin, end"
            )
        values: dict[str, str] = {}
        for key, default in DEFAULTS.items():
            raw = spec.get(key)
            if raw is None:
                values[key] = default
            elif isinstance(raw, bool) or not isinstance(raw, (str, int)):
                raise ScheduleError(f"schedule.{key} {raw!r} is not a string: quote it, e.g. '*/15' or '08:00'")
            else:
                values[key] = str(raw).strip()
        return cls(timezone=timezone, **values)

    def as_dict(self) -> dict[str, str | None]:
        """The schedule in the TrueNAS API shape (for module results)."""
        return {
            "minute": self.minute,
            "hour": self.hour,
            "dom": self.dom,
            "month": self.month,
            "dow": self.dow,
            "begin": self.begin,
            "end": self.end,
            "timezone": self.timezone,
        }

    @property
    def tz(self) -> tzinfo:
        return self._tz

    # ----------------------------------------------------------------- matching

    def _aware(self, when: datetime) -> datetime:
        """``when`` in the schedule's zone; a naive time is wall time there (``fold`` respected)."""
        if when.tzinfo is None:
            return when.replace(tzinfo=self._tz)
        return when.astimezone(self._tz)

    def _day_matches(self, day: date) -> bool:
        if day.month not in self._months:
            return False
        dom_ok = day.day in self._doms
        dow_ok = day.isoweekday() % 7 in self._dows
        return (dom_ok or dow_ok) if self._or_days else (dom_ok and dow_ok)

    def in_window(self, when: datetime) -> bool:
        """True when the wall time of ``when`` (in the schedule's zone) is within begin..end."""
        local = self._aware(when)
        return _window_allows(self._begin, self._end, local.hour * 60 + local.minute)

    def matches(self, when: datetime) -> bool:
        """True when ``when`` (seconds ignored) is a slot: its wall time in the schedule's zone matches
        the cron fields and the window, exists, and is the first occurrence if repeated by DST."""
        local = self._aware(when).replace(second=0, microsecond=0)
        if not exists(local):
            return False
        if local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset():
            return False  # the second 01:30 of a fall-back night: fired at the first one
        if local.hour * 60 + local.minute not in self._time_set:
            return False
        return self._day_matches(local.date())

    # ----------------------------------------------------------------- slot search

    def _dates(self, start: date, step: int) -> Iterator[date]:
        """Matching days from ``start`` (inclusive), forward (step 1) or backward (step -1).

        Skips whole months that are not in the month field, so a sparse schedule (Feb 29) costs
        a few hundred checks, not a walk over every minute."""
        year, month = start.year, start.month
        first = True
        for _attempt in range(_SEARCH_MONTHS):
            if month in self._months:
                last = calendar.monthrange(year, month)[1]
                begin_day = (start.day if step > 0 else min(start.day, last)) if first else (1 if step > 0 else last)
                days = range(begin_day, last + 1) if step > 0 else range(begin_day, 0, -1)
                for day in days:
                    candidate = date(year, month, day)
                    if self._day_matches(candidate):
                        yield candidate
            first = False
            month += step
            if month == 13:
                year, month = year + 1, 1
            elif month == 0:
                year, month = year - 1, 12
            if not 1 <= year <= 9999:
                return

    def _slot(self, day: date, minute_of_day: int) -> datetime | None:
        hour, minute = divmod(minute_of_day, 60)
        local = datetime(day.year, day.month, day.day, hour, minute, tzinfo=self._tz, fold=0)
        return local if exists(local) else None

    def previous_slot(self, now: datetime) -> datetime:
        """The latest slot at or before ``now``, as an aware datetime in the schedule's zone."""
        local = self._aware(now)
        now_ts = local.timestamp()
        today = local.date()
        # a time repeated by DST (now in its second pass) can follow later wall times' first pass
        cap = local.hour * 60 + local.minute + _DST_SLACK
        for day in self._dates(today, -1):
            for minute_of_day in reversed(self._times):
                if day == today and minute_of_day > cap:
                    continue
                slot = self._slot(day, minute_of_day)
                if slot is not None and slot.timestamp() <= now_ts:
                    return slot
        raise ScheduleError(f"schedule {self.as_dict()} has no slot in the 40 years before {now.isoformat()}")

    def next_slot(self, after: datetime) -> datetime:
        """The earliest slot strictly after ``after``, as an aware datetime in the schedule's zone."""
        local = self._aware(after)
        after_ts = local.timestamp()
        today = local.date()
        floor = local.hour * 60 + local.minute - _DST_SLACK
        for day in self._dates(today, 1):
            for minute_of_day in self._times:
                if day == today and minute_of_day < floor:
                    continue
                slot = self._slot(day, minute_of_day)
                if slot is not None and slot.timestamp() > after_ts:
                    return slot
        raise ScheduleError(f"schedule {self.as_dict()} has no slot in the 40 years after {after.isoformat()}")

    def slots_between(self, start: datetime, stop: datetime) -> Iterator[datetime]:
        """Slots ``s`` with start < s <= stop, oldest first."""
        stop_ts = self._aware(stop).timestamp()
        current = start
        while True:
            slot = self.next_slot(current)
            if slot.timestamp() > stop_ts:
                return
            yield slot
            current = slot

    # ----------------------------------------------------------------- systemd

    def to_oncalendar(self) -> list[str]:
        """systemd ``OnCalendar=`` expressions that together fire exactly at this schedule's times.

        Cron's dom-or-dow rule needs two expressions (systemd ANDs weekday and date). A begin/end
        window that cuts through an hour gives one expression per group of hours sharing the same
        minutes. An explicit time zone is appended (systemd >= 235 understands it); None leaves
        the host's zone.
        """
        months = _numbers(self._months, 1, 12)
        doms = _numbers(self._doms, 1, 31)
        dows = ""
        if self._dows != frozenset(range(7)):
            # systemd lists weekdays Mon..Sun; Sunday goes last so Fri..Sun stays one range
            positions = sorted((d + 6) % 7 for d in self._dows)
            labels = [_SYSTEMD_DOW[(p + 1) % 7] for p in range(7)]
            dows = _calendar_list(positions, labels)
        days = [("", doms), (dows, "*")] if self._or_days else [(dows, doms)]
        groups: list[tuple[list[int], list[int]]] = []
        for hour in self._hours:
            minutes = [m for m in self._minutes if hour * 60 + m in self._time_set]
            if not minutes:
                continue
            for hours, group_minutes in groups:
                if group_minutes == minutes:
                    hours.append(hour)
                    break
            else:
                groups.append(([hour], minutes))
        suffix = f" {self.timezone}" if self.timezone else ""
        expressions = []
        for weekday, dom in days:
            prefix = f"{weekday} " if weekday else ""
            for hours, minutes in groups:
                hour_text = _numbers(set(hours), 0, 23)
                minute_text = _numbers(set(minutes), 0, 59)
                expressions.append(f"{prefix}*-{months}-{dom} {hour_text}:{minute_text}:00{suffix}")
        return expressions


# --------------------------------------------------------------------- run windows (restrict_schedule)


@dataclass(frozen=True)
class RunWindow:
    """When a replication task may run: ``restrict_schedule``'s days (``dom``, ``month``, ``dow``, with cron's OR rule)
    and its ``begin``..``end`` time of day, in the schedule's zone.

    A window that wraps past midnight (22:00-02:00) belongs to the day it begins on: a Friday window runs from
    Friday 22:00 to Saturday 02:00. The ``minute`` and ``hour`` fields do not narrow the window (they pick snapshots
    for ``only_matching_schedule``): a replication started by its snapshot task a few seconds after a slot would
    miss a window one minute wide. Build with :meth:`from_spec`, which gives None for a window that is always open.
    """

    schedule: Schedule

    @classmethod
    def from_spec(cls, spec: SpecType | Schedule | None, timezone: str | None = None) -> RunWindow | None:
        """The run window of ``restrict_schedule`` ``spec``; None when there is none or it never closes. Raises ScheduleError."""
        if spec is None:
            return None
        if isinstance(spec, Mapping):
            # minute and hour do not narrow the window: checked, then every minute of the window counts (a window such as
            # 09:01-09:31 holds no slot of the default minute 0, and needs none)
            for key in ("minute", "hour"):
                if spec.get(key) is not None:
                    parse_field(key, spec[key])
            spec = {**spec, "minute": "*", "hour": "*"}
        window = cls(Schedule.from_spec(spec, timezone=timezone))
        return None if window.always_open else window

    @property
    def whole_day(self) -> bool:
        s = self.schedule
        return s._begin == s._end or (s._begin, s._end) == (0, 23 * 60 + 59)

    @property
    def every_day(self) -> bool:
        s = self.schedule
        return s._months == frozenset(range(1, 13)) and all(s._day_matches(date(2000, 1, d)) for d in range(1, 8))

    @property
    def always_open(self) -> bool:
        return self.whole_day and self.every_day

    def describe(self) -> str:
        """``22:00-02:00`` with the days and zone when they narrow it: ``22:00-02:00 on dow fri (UTC)``."""
        s = self.schedule
        days = [f"{name} {getattr(s, name)}" for name in ("dom", "month", "dow") if str(getattr(s, name)).strip() != "*"]
        text = "all day" if self.whole_day else f"{s.begin}-{s.end}"
        if days:
            text += " on " + ", ".join(days)
        return f"{text} ({s.timezone or 'local time'})"

    def _day_of(self, local: datetime) -> date | None:
        """The day whose window ``local`` (wall time in the zone) falls in, or None when it is outside every window."""
        s = self.schedule
        minute_of_day = local.hour * 60 + local.minute
        day = local.date()
        if self.whole_day:
            return day
        if not _window_allows(s._begin, s._end, minute_of_day):
            return None
        if s._begin < s._end or minute_of_day >= s._begin:
            return day
        return date.fromordinal(day.toordinal() - 1)  # the morning part of yesterday's window

    def contains(self, when: datetime) -> bool:
        """True when ``when`` is inside a window."""
        day = self._day_of(self.schedule._aware(when))
        return day is not None and self.schedule._day_matches(day)

    def next_start(self, after: datetime) -> datetime:
        """The start of the first window that opens after ``after`` (begin on the next day the schedule names), as an
        aware datetime in the zone. A begin skipped by a spring-forward change opens at the first existing minute after it."""
        s = self.schedule
        local = s._aware(after)
        begin = 0 if self.whole_day else s._begin
        hour, minute = divmod(begin, 60)
        for day in s._dates(local.date(), 1):
            start = datetime(day.year, day.month, day.day, hour, minute, tzinfo=s.tz)
            for later in range(1, _DST_SLACK + 1):
                if exists(start):
                    break
                # a begin skipped by a spring-forward change: the window opens at the wall time the clock jumps to
                wall = hour * 60 + minute + later
                start = datetime(day.year, day.month, day.day, min(wall // 60, 23), wall % 60 if wall < 1440 else 59, tzinfo=s.tz)
            if start.timestamp() > local.timestamp():
                return start
        raise ScheduleError(f"restrict_schedule {s.as_dict()} opens no window in the 40 years after {after.isoformat()}")

    def to_oncalendar(self) -> list[str]:
        """systemd ``OnCalendar=`` expressions firing at the start of each window (its begin, on each day it names)."""
        s = self.schedule
        begin = 0 if self.whole_day else s._begin
        hour, minute = divmod(begin, 60)
        starts = Schedule(minute=str(minute), hour=str(hour), dom=s.dom, month=s.month, dow=s.dow, timezone=s.timezone)
        return starts.to_oncalendar()
