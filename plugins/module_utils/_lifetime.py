# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Snapshot lifetimes (``lifetime_value`` + ``lifetime_unit``) and when a snapshot expires."""
from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

UNITS = ("hour", "day", "week", "month", "year")


class LifetimeError(ValueError):
    """A lifetime value or unit that is not usable."""


def add_months(when: datetime, months: int) -> datetime:
    """``when`` moved by whole calendar months, the day clamped to the month's end
    (Jan 31 + 1 month = Feb 28, or Feb 29 in a leap year). Past year 9999: datetime.max."""
    index = when.year * 12 + (when.month - 1) + months
    year, month0 = divmod(index, 12)
    if year > 9999:
        return datetime.max.replace(tzinfo=when.tzinfo)
    if year < 1:
        return datetime.min.replace(tzinfo=when.tzinfo)
    day = min(when.day, calendar.monthrange(year, month0 + 1)[1])
    return when.replace(year=year, month=month0 + 1, day=day)


@dataclass(frozen=True)
class Lifetime:
    """How long a snapshot is kept: ``value`` (>= 1) ``unit`` (hour, day, week, month, year).

    The unit is normalized: case-insensitive, plural accepted (``WEEKS`` -> ``week``).
    """

    value: int
    unit: str

    def __post_init__(self) -> None:
        value = self.value
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LifetimeError(
                f"lifetime_value {self.value!r} is invalid: use a whole number of 1 or more "
                "(or no retention)"
            )
        unit = self.unit.strip().lower() if isinstance(self.unit, str) else ""
        if unit.endswith("s") and unit[:-1] in UNITS:
            unit = unit[:-1]
        if unit not in UNITS:
            raise LifetimeError(
                f"lifetime_unit {self.unit!r} is not a unit: use hour, day, week, month or year"
            )
        object.__setattr__(self, "value", value)
        object.__setattr__(self, "unit", unit)

    def __str__(self) -> str:
        return f"{self.value} {self.unit}{'' if self.value == 1 else 's'}"

    def expires(self, created: datetime) -> datetime:
        """When a snapshot created at ``created`` expires.

        Hours are elapsed time (a DST change does not stretch them); days and weeks keep the wall
        time (a day is 23 or 25 hours across a DST change); months and years are calendar months
        with month-end clamping. The result has ``created``'s tzinfo.
        """
        try:
            if self.unit == "hour":
                delta = timedelta(hours=self.value)
                if created.tzinfo is None:
                    return created + delta
                return (created.astimezone(timezone.utc) + delta).astimezone(created.tzinfo)
            if self.unit in ("day", "week"):
                return created + timedelta(days=self.value * (7 if self.unit == "week" else 1))
        except OverflowError:
            return datetime.max.replace(tzinfo=created.tzinfo)
        return add_months(created, self.value * (12 if self.unit == "year" else 1))


def instant(when: datetime) -> float:
    """A number ordering times by instant for aware ones (comparing two aware datetimes of the
    same zone uses wall time, which is wrong inside a DST fold) and by wall time for naive ones."""
    if when.tzinfo is None:
        return (when - datetime.min).total_seconds()
    try:
        return when.timestamp()
    except (OverflowError, ValueError):  # datetime.max/min with an offset
        return float("inf") if when.year > 5000 else float("-inf")


def longest(lifetimes: Iterable[Lifetime], created: datetime) -> Lifetime:
    """The lifetime that keeps a snapshot created at ``created`` the longest.

    Evaluated at ``created`` because "1 month" and "30 days" compare differently by month. Ties go
    to the first given.
    """
    candidates = list(lifetimes)
    if not candidates:
        raise LifetimeError("longest() needs at least one lifetime")
    return max(candidates, key=lambda lifetime: instant(lifetime.expires(created)))
