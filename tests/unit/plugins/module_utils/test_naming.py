# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.zfs.replication.plugins.module_utils._naming import (
    NamingSchema,
    NamingSchemaError,
    parse_any,
)

ZFS_SHORT_NAME = re.compile(r"[A-Za-z0-9_.:-]+")
AUTO = "auto-%Y-%m-%d_%H-%M"


# ------------------------------------------------------------------ formatting and parsing


@pytest.mark.parametrize(
    ("schema", "when", "name"),
    [
        (AUTO, datetime(2024, 3, 9, 7, 5, 59), "auto-2024-03-09_07-05"),
        ("%Y%m%d.%H%M%S", datetime(2024, 12, 31, 23, 59, 58), "20241231.235958"),
        ("snap_%d-%m-%Y_%H:%M", datetime(999, 1, 2, 3, 4), "snap_02-01-0999_03:04"),
        ("%H%M-%Y%m%d", datetime(2024, 2, 29, 0, 0), "0000-20240229"),
        ("auto-%Y-%m-%d_%H-%M%z", datetime(2024, 7, 1, 12, 0, tzinfo=ZoneInfo("Europe/Berlin")), "auto-2024-07-01_12-00:0200"),
        ("auto-%Y-%m-%d_%H-%M%z", datetime(2024, 1, 1, 12, 0, tzinfo=ZoneInfo("America/New_York")), "auto-2024-01-01_12-00-0500"),
        ("auto-%Y-%m-%d_%H-%M%z", datetime(2024, 1, 1, 12, 0, tzinfo=timezone.utc), "auto-2024-01-01_12-00:0000"),
        # local mean time has seconds in its offset: written as HHMMSS, like strftime
        ("%Y%m%d%H%M%z", datetime(1880, 1, 1, 0, 0, tzinfo=ZoneInfo("Europe/Amsterdam")), "188001010000:001932"),
    ],
)
def test_format_and_parse_back(schema: str, when: datetime, name: str) -> None:
    ns = NamingSchema(schema)
    assert ns.format(when) == name
    parsed = ns.parse(name)
    assert parsed == ns.truncate(when)
    assert ns.matches(name)


def test_parse_without_offset_is_naive_wall_time() -> None:
    assert NamingSchema(AUTO).parse("auto-2024-03-31_02-30") == datetime(2024, 3, 31, 2, 30)
    assert NamingSchema(AUTO).parse("auto-2024-03-31_02-30").tzinfo is None


def test_parse_with_offset_is_aware_fixed_offset() -> None:
    ns = NamingSchema("auto-%Y-%m-%d_%H-%M%z")
    parsed = ns.parse("auto-2024-01-02_03-04-0530")
    assert parsed == datetime(2024, 1, 2, 3, 4, tzinfo=timezone(-timedelta(hours=5, minutes=30)))
    assert parsed.utcoffset() == -timedelta(hours=5, minutes=30)
    assert ns.parse("auto-2024-01-02_03-04:0100").utcoffset() == timedelta(hours=1)


def test_format_nonexistent_local_time_keeps_its_instant() -> None:
    # 02:30 does not exist in Berlin on 2024-03-31; the name carries the offset zoneinfo gives it
    ns = NamingSchema("auto-%Y-%m-%d_%H-%M%z")
    when = datetime(2024, 3, 31, 2, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    assert ns.format(when) == "auto-2024-03-31_02-30:0100"
    assert ns.parse(ns.format(when)).timestamp() == when.timestamp()


def test_format_with_offset_needs_aware_time() -> None:
    with pytest.raises(ValueError, match=r"contains %z: format\(\) needs a time with a time zone"):
        NamingSchema("%Y%m%d%H%M%z").format(datetime(2024, 1, 1))


@pytest.mark.parametrize(
    "name",
    [
        "auto-2024-13-01_00-00",  # month 13
        "auto-2024-00-01_00-00",  # month 0
        "auto-2023-02-29_00-00",  # not a leap year
        "auto-2024-04-31_00-00",  # April 31
        "auto-2024-01-01_24-00",  # hour 24
        "auto-2024-01-01_00-60",  # minute 60
        "auto-2024-01-01_00-00x",  # trailing text
        "xauto-2024-01-01_00-00",  # leading text
        "auto-2024-01-01_00-0",  # short field
        "auto-24-01-01_00-00",  # 2-digit year
        "auto-2024-01-01_00-000",  # long field
        "auto-2024-0١-01_00-00",  # non-ASCII digit
        "auto-2024-01-01",  # prefix only
        "hourly-2024-01-01_00-00",  # another schema's prefix
        "",
    ],
)
def test_parse_rejects_non_matching_or_invalid(name: str) -> None:
    ns = NamingSchema(AUTO)
    assert ns.parse(name) is None
    assert ns.matches(name) is False


@pytest.mark.parametrize("name", ["x202401010000:2400", "x202401010000-0060", "x202401010000+0100", "x202401010000:01", "x202401010000"])
def test_parse_rejects_bad_offsets(name: str) -> None:
    assert NamingSchema("x%Y%m%d%H%M%z").parse(name) is None


def test_parse_non_string_is_none() -> None:
    assert NamingSchema(AUTO).parse(None) is None  # type: ignore[arg-type]


def test_schema_value_semantics() -> None:
    a, b = NamingSchema(AUTO), NamingSchema(AUTO)
    assert a == b and hash(a) == hash(b) and {a, b} == {a}
    assert a != NamingSchema("auto-%Y%m%d%H%M") and a != AUTO
    assert a.schema == AUTO and repr(a) == "NamingSchema('auto-%Y-%m-%d_%H-%M')"
    assert (a.has_seconds, a.has_offset) == (False, False)
    full = NamingSchema("%Y%m%d%H%M%S%z")
    assert (full.has_seconds, full.has_offset) == (True, True)


# ------------------------------------------------------------------ parse_any


def test_parse_any_returns_first_matching_schema() -> None:
    hourly, daily = NamingSchema("hourly-%Y%m%d%H%M"), NamingSchema("daily-%Y%m%d%H%M")
    assert parse_any([hourly, daily], "daily-202401020300") == (daily, datetime(2024, 1, 2, 3, 0))
    assert parse_any([hourly, daily], "manual-before-upgrade") is None
    assert parse_any([], "daily-202401020300") is None
    # strings are accepted and validated
    assert parse_any(["x-%Y%m%d%H%M", "%Y%m%d%H%M"], "202401020300") == (NamingSchema("%Y%m%d%H%M"), datetime(2024, 1, 2, 3, 0))
    with pytest.raises(NamingSchemaError):
        parse_any(["bad"], "202401020300")


def test_parse_any_order_decides_between_overlapping_schemas() -> None:
    a, b = NamingSchema("%Y%m%d%H%M"), NamingSchema("%Y%m%d%M%H")
    assert parse_any([a, b], "202401021304") == (a, datetime(2024, 1, 2, 13, 4))
    assert parse_any([b, a], "202401021304") == (b, datetime(2024, 1, 2, 4, 13))


# ------------------------------------------------------------------ validation messages


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ("auto-%Y", "naming_schema 'auto-%Y' lacks %m %d %H %M: a naming schema must contain %Y, %m, %d, %H and %M"),
        ("%Y%m%d%H", "naming_schema '%Y%m%d%H' lacks %M: a naming schema must contain %Y, %m, %d, %H and %M"),
        ("", "naming_schema '' is empty: give a pattern such as 'auto-%Y-%m-%d_%H-%M'"),
        (
            "pool/auto-%Y%m%d%H%M",
            "naming_schema 'pool/auto-%Y%m%d%H%M' contains '/', not allowed in ZFS snapshot names: "
            "use only letters, digits, spaces and _ . : - besides the % directives",
        ),
        (
            "a@b #%Y%m%d%H%M",
            "naming_schema 'a@b #%Y%m%d%H%M' contains '#' '@', not allowed in ZFS snapshot names: "
            "use only letters, digits, spaces and _ . : - besides the % directives",
        ),
        (
            "auto+%Y%m%d%H%M",
            "naming_schema 'auto+%Y%m%d%H%M' contains '+', not allowed in ZFS snapshot names: "
            "use only letters, digits, spaces and _ . : - besides the % directives",
        ),
        ("auto\t%Y%m%d%H%M", None),
        ("%Y%m%d%H%M%%", "naming_schema '%Y%m%d%H%M%%' contains '%%': '%' is not allowed in ZFS snapshot names, remove it"),
        ("%Y%m%d%H%M%", "naming_schema '%Y%m%d%H%M%' ends with a lone '%': remove it or complete the directive, e.g. %M"),
        (
            "%Y%m%d%H%M%y",
            "naming_schema '%Y%m%d%H%M%y' uses %y, which cannot be parsed back unambiguously: "
            "use only %Y, %m, %d, %H, %M, %S and %z",
        ),
        (
            "%Y%m%d%H%M%s",
            "naming_schema '%Y%m%d%H%M%s' uses %s, which cannot be parsed back unambiguously: "
            "use only %Y, %m, %d, %H, %M, %S and %z",
        ),
        ("%Y%m%d%H%M-%j", None),
        ("%b-%Y%m%d%H%M", None),
        ("%Y%m%d%H%M-%M", "naming_schema '%Y%m%d%H%M-%M' repeats %M: use each directive once"),
        (
            "%Y-%m-%d_%H:%M%z",
            "naming_schema '%Y-%m-%d_%H:%M%z' contains both %z and ':': a positive UTC offset is written with ':' "
            "(ZFS names cannot contain '+'), so replace the literal ':' with '-' or '_'",
        ),
    ],
)
def test_invalid_schemas_name_the_field_and_the_fix(schema: str, message: str | None) -> None:
    with pytest.raises(NamingSchemaError) as info:
        NamingSchema(schema)
    text = str(info.value)
    assert text.startswith(f"naming_schema {schema!r} ")
    if message is not None:
        assert text == message
    assert isinstance(info.value, ValueError)


def test_non_string_schema_is_rejected() -> None:
    with pytest.raises(NamingSchemaError, match=r"^naming_schema None is empty"):
        NamingSchema(None)  # type: ignore[arg-type]


# ------------------------------------------------------------------ property: round trips

_DIRECTIVE_ORDER = st.permutations(["%Y", "%m", "%d", "%H", "%M"])


@st.composite
def schemas(draw: st.DrawFn) -> str:
    directives = list(draw(_DIRECTIVE_ORDER))
    with_seconds = draw(st.booleans())
    with_offset = draw(st.booleans())
    for extra, present in (("%S", with_seconds), ("%z", with_offset)):
        if present:
            directives.insert(draw(st.integers(0, len(directives))), extra)
    alphabet = "abcXYZ0189_.-" if with_offset else "abcXYZ0189_.:-"
    literals = [draw(st.text(alphabet, max_size=4)) for _attempt in range(len(directives) + 1)]
    parts = [literals[0]]
    for directive, literal in zip(directives, literals[1:]):
        parts += [directive, literal]
    return "".join(parts)


_OFFSETS = st.one_of(
    st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda minutes: timezone(timedelta(minutes=minutes))),
    st.integers(-(24 * 3600 - 1), 24 * 3600 - 1).map(lambda seconds: timezone(timedelta(seconds=seconds))),
    st.just(timezone.utc),
)


@given(schema=schemas(), when=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)), tz=_OFFSETS)
def test_round_trip_fixed_offsets(schema: str, when: datetime, tz: timezone) -> None:
    ns = NamingSchema(schema)
    aware = when.replace(tzinfo=tz)
    value = aware if ns.has_offset else when
    name = ns.format(value)
    assert ZFS_SHORT_NAME.fullmatch(name), name
    parsed = ns.parse(name)
    assert parsed == ns.truncate(value)
    if ns.has_offset:
        assert parsed.utcoffset() == tz.utcoffset(None)
    else:
        assert parsed.tzinfo is None
    # seconds dropped exactly when the schema has no %S; never microseconds
    assert parsed.second == (when.second if ns.has_seconds else 0)
    assert parsed.microsecond == 0


@given(
    when=st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.sampled_from(
        [ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York"), ZoneInfo("Australia/Lord_Howe"), ZoneInfo("Asia/Kolkata")]
    )),
)
def test_round_trip_iana_zones_keeps_the_instant(when: datetime) -> None:
    ns = NamingSchema("auto-%Y-%m-%d_%H-%M-%S%z")
    parsed = ns.parse(ns.format(when))
    assert parsed is not None
    # inter-zone == is always False inside a DST gap or fold (PEP 495): compare instant and wall time
    assert parsed.timestamp() == ns.truncate(when).timestamp()
    assert parsed.replace(tzinfo=None) == ns.truncate(when).replace(tzinfo=None, fold=0)


@given(schema=schemas(), a=st.datetimes(min_value=datetime(1000, 1, 1)), b=st.datetimes(min_value=datetime(1000, 1, 1)))
def test_distinct_times_give_distinct_names(schema: str, a: datetime, b: datetime) -> None:
    ns = NamingSchema(schema)
    a, b = a.replace(tzinfo=timezone.utc), b.replace(tzinfo=timezone.utc)
    if ns.truncate(a) != ns.truncate(b):
        assert ns.format(a) != ns.format(b)


@given(schema=schemas(), name=st.text("0123456789-_.:abcXYZ", max_size=30))
def test_parse_of_arbitrary_text_never_raises_and_is_consistent(schema: str, name: str) -> None:
    ns = NamingSchema(schema)
    parsed = ns.parse(name)
    assert ns.matches(name) is (parsed is not None)
    if parsed is not None:
        # a name that parses is exactly what format() writes for that time ("-0000" aside)
        assert ns.format(parsed) == name or (ns.has_offset and parsed.utcoffset() == timedelta(0))
