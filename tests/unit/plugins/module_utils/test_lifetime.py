# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.zfs.replication.plugins.module_utils._lifetime import (
    Lifetime,
    LifetimeError,
    add_months,
    longest,
)

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(
    ("unit", "normalized"),
    [("hour", "hour"), ("HOURS", "hour"), ("Day", "day"), ("days", "day"), ("WEEK", "week"), (" weeks ", "week"), ("month", "month"), ("Years", "year")],
)
def test_units_are_normalized(unit: str, normalized: str) -> None:
    assert Lifetime(2, unit).unit == normalized
    assert Lifetime(2, unit) == Lifetime(2, normalized)


def test_value_from_digit_string_and_str() -> None:
    assert Lifetime("3", "day").value == 3  # type: ignore[arg-type]
    assert str(Lifetime(1, "WEEKS")) == "1 week"
    assert str(Lifetime(2, "week")) == "2 weeks"


@pytest.mark.parametrize(
    ("value", "unit", "message"),
    [
        (0, "day", "lifetime_value 0 is invalid: use a whole number of 1 or more (or no retention)"),
        (-2, "day", "lifetime_value -2 is invalid: use a whole number of 1 or more (or no retention)"),
        (True, "day", "lifetime_value True is invalid: use a whole number of 1 or more (or no retention)"),
        (1.5, "day", "lifetime_value 1.5 is invalid: use a whole number of 1 or more (or no retention)"),
        ("two", "day", "lifetime_value 'two' is invalid: use a whole number of 1 or more (or no retention)"),
        (1, "fortnight", "lifetime_unit 'fortnight' is not a unit: use hour, day, week, month or year"),
        (1, "ss", "lifetime_unit 'ss' is not a unit: use hour, day, week, month or year"),
        (1, "minute", "lifetime_unit 'minute' is not a unit: use hour, day, week, month or year"),
        (1, None, "lifetime_unit None is not a unit: use hour, day, week, month or year"),
    ],
)
def test_invalid_lifetimes(value: object, unit: object, message: str) -> None:
    with pytest.raises(LifetimeError) as info:
        Lifetime(value, unit)  # type: ignore[arg-type]
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("lifetime", "created", "expires"),
    [
        (Lifetime(1, "month"), datetime(2024, 1, 31, 10, 0), datetime(2024, 2, 29, 10, 0)),
        (Lifetime(1, "month"), datetime(2023, 1, 31, 10, 0), datetime(2023, 2, 28, 10, 0)),
        (Lifetime(1, "month"), datetime(2024, 3, 31), datetime(2024, 4, 30)),
        (Lifetime(2, "months"), datetime(2023, 12, 31), datetime(2024, 2, 29)),
        (Lifetime(13, "month"), datetime(2024, 1, 31), datetime(2025, 2, 28)),
        (Lifetime(1, "month"), datetime(2024, 12, 15), datetime(2025, 1, 15)),
        (Lifetime(1, "year"), datetime(2024, 2, 29), datetime(2025, 2, 28)),
        (Lifetime(4, "years"), datetime(2024, 2, 29), datetime(2028, 2, 29)),
        (Lifetime(2, "week"), datetime(2024, 12, 25, 8, 30), datetime(2025, 1, 8, 8, 30)),
        (Lifetime(3, "day"), datetime(2024, 2, 28), datetime(2024, 3, 2)),
        (Lifetime(36, "hour"), datetime(2024, 1, 1, 12), datetime(2024, 1, 3, 0)),
    ],
)
def test_expires_naive(lifetime: Lifetime, created: datetime, expires: datetime) -> None:
    assert lifetime.expires(created) == expires


def test_expires_across_dst_days_keep_wall_time_hours_are_elapsed() -> None:
    created = datetime(2024, 3, 30, 12, 0, tzinfo=BERLIN)  # CET; DST starts 2024-03-31
    one_day = Lifetime(1, "day").expires(created)
    assert one_day == datetime(2024, 3, 31, 12, 0, tzinfo=BERLIN)
    assert one_day.timestamp() - created.timestamp() == 23 * 3600
    hours = Lifetime(24, "hours").expires(created)
    assert hours.timestamp() - created.timestamp() == 24 * 3600
    assert (hours.hour, hours.utcoffset()) == (13, timedelta(hours=2))
    assert hours.tzinfo is BERLIN
    # across fall-back, 1 hour from the first 02:30 is the second 02:30
    first = datetime(2024, 10, 27, 2, 30, tzinfo=BERLIN)
    second = Lifetime(1, "hour").expires(first)
    assert (second.hour, second.minute, second.fold, second.utcoffset()) == (2, 30, 1, timedelta(hours=1))


def test_expires_month_keeps_zone() -> None:
    created = datetime(2024, 1, 31, 23, 0, tzinfo=BERLIN)
    assert Lifetime(1, "month").expires(created) == datetime(2024, 2, 29, 23, 0, tzinfo=BERLIN)
    fixed = datetime(2024, 1, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert Lifetime(1, "month").expires(fixed).utcoffset() == timedelta(hours=-5)


def test_expires_past_year_9999_is_max() -> None:
    assert Lifetime(9000, "year").expires(datetime(2024, 1, 1)) == datetime.max
    assert Lifetime(10**7, "day").expires(datetime(2024, 1, 1)) == datetime.max
    assert Lifetime(10**8, "hour").expires(datetime(2024, 1, 1, tzinfo=timezone.utc)) == datetime.max.replace(tzinfo=timezone.utc)


def test_add_months_negative_and_bounds() -> None:
    assert add_months(datetime(2024, 3, 31), -1) == datetime(2024, 2, 29)
    assert add_months(datetime(1, 1, 1), -1) == datetime.min


def test_longest_is_evaluated_at_the_creation_time() -> None:
    month, thirty_days = Lifetime(1, "month"), Lifetime(30, "day")
    # from Jan 31: 1 month -> Feb 29, 30 days -> Mar 1
    assert longest([month, thirty_days], datetime(2024, 1, 31)) is thirty_days
    # from Mar 1: 1 month -> Apr 1, 30 days -> Mar 31
    assert longest([month, thirty_days], datetime(2024, 3, 1)) is month
    assert longest([Lifetime(2, "week"), Lifetime(1, "year"), Lifetime(300, "day")], datetime(2024, 1, 1)) == Lifetime(1, "year")
    assert longest([Lifetime(24, "hour")], datetime(2024, 1, 1)) == Lifetime(24, "hour")


def test_longest_ties_go_to_the_first() -> None:
    seven_days, one_week = Lifetime(7, "day"), Lifetime(1, "week")
    assert longest([seven_days, one_week], datetime(2024, 1, 1)) is seven_days
    assert longest([one_week, seven_days], datetime(2024, 1, 1)) is one_week


def test_longest_in_a_dst_zone_compares_instants() -> None:
    # 24 hours vs 1 day from the day before spring-forward: the day is 23 hours
    created = datetime(2024, 3, 30, 12, 0, tzinfo=BERLIN)
    assert longest([Lifetime(1, "day"), Lifetime(24, "hour")], created) == Lifetime(24, "hour")
    # ... and before fall-back the day is 25 hours
    created = datetime(2024, 10, 26, 12, 0, tzinfo=BERLIN)
    assert longest([Lifetime(24, "hour"), Lifetime(1, "day")], created) == Lifetime(1, "day")


def test_longest_of_nothing() -> None:
    with pytest.raises(LifetimeError, match=r"^longest\(\) needs at least one lifetime$"):
        longest([], datetime(2024, 1, 1))


@given(
    created=st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)),
    months=st.integers(1, 240),
)
def test_add_months_properties(created: datetime, months: int) -> None:
    moved = add_months(created, months)
    assert (moved.year * 12 + moved.month) - (created.year * 12 + created.month) == months
    assert moved.day == created.day or (moved.day < created.day and (moved + timedelta(days=1)).day == 1)
    assert moved.time() == created.time()
