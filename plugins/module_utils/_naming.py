# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Naming schemas: strftime-style patterns that name periodic snapshots, as TrueNAS uses them.

A schema such as ``auto-%Y-%m-%d_%H-%M`` turns a time into a snapshot name (the part after
``@``) and a snapshot name back into that time. Only fixed-width directives are allowed so a
name parses back in exactly one way:

=========  =================================================================
``%Y``     year, 4 digits (required)
``%m``     month 01-12 (required)
``%d``     day of month 01-31 (required)
``%H``     hour 00-23 (required)
``%M``     minute 00-59 (required)
``%S``     second 00-59
``%z``     UTC offset. ZFS names cannot contain ``+``, so, like TrueNAS, a positive offset is
           written with ``:`` instead (``:0100``, ``-0500``); for the same reason a schema with
           ``%z`` may not contain a literal ``:``
=========  =================================================================

Literal text may use letters, digits, spaces and ``_ . : -``: the characters ZFS allows in a snapshot
name (``auto %Y-%m-%d %H:%M`` is a valid schema). ``%%`` is refused because ``%`` is not allowed in ZFS names.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

REQUIRED = ("Y", "m", "d", "H", "M")
OPTIONAL = ("S", "z")
_ALLOWED_LITERAL = re.compile(r"[A-Za-z0-9_.: -]")  # _zfs.NAME_CHARS
_GROUPS = {
    "Y": r"(?P<Y>[0-9]{4})",
    "m": r"(?P<m>[0-9]{2})",
    "d": r"(?P<d>[0-9]{2})",
    "H": r"(?P<H>[0-9]{2})",
    "M": r"(?P<M>[0-9]{2})",
    "S": r"(?P<S>[0-9]{2})",
    # sign, HHMM, and SS for the odd historical offset (local mean time) that has seconds
    "z": r"(?P<z>[:-][0-9]{4}(?:[0-9]{2})?)",
}


class NamingSchemaError(ValueError):
    """A naming schema that cannot name snapshots unambiguously."""


def _tokenize(schema: str) -> list[tuple[str, str]]:
    """Split ``schema`` into ('lit', text) and ('dir', letter) tokens; raise on bad directives."""
    tokens: list[tuple[str, str]] = []
    i = 0
    while i < len(schema):
        ch = schema[i]
        if ch != "%":
            if tokens and tokens[-1][0] == "lit":
                tokens[-1] = ("lit", tokens[-1][1] + ch)
            else:
                tokens.append(("lit", ch))
            i += 1
            continue
        if i + 1 >= len(schema):
            raise NamingSchemaError(
                f"naming_schema {schema!r} ends with a lone '%': remove it or complete the directive, "
                "e.g. %M"
            )
        letter = schema[i + 1]
        if letter == "%":
            raise NamingSchemaError(
                f"naming_schema {schema!r} contains '%%': '%' is not allowed in ZFS snapshot names, "
                "remove it"
            )
        if letter not in REQUIRED and letter not in OPTIONAL:
            raise NamingSchemaError(
                f"naming_schema {schema!r} uses %{letter}, which cannot be parsed back unambiguously: "
                "use only %Y, %m, %d, %H, %M, %S and %z"
            )
        tokens.append(("dir", letter))
        i += 2
    return tokens


class NamingSchema:
    """A validated naming schema. Immutable; equal when the schema strings are equal."""

    __slots__ = ("_has_offset", "_has_seconds", "_regex", "_schema", "_tokens")

    def __init__(self, schema: str) -> None:
        if not isinstance(schema, str) or not schema:
            raise NamingSchemaError(
                f"naming_schema {schema!r} is empty: give a pattern such as 'auto-%Y-%m-%d_%H-%M'"
            )
        tokens = _tokenize(schema)
        literal = "".join(text for kind, text in tokens if kind == "lit")
        bad = sorted({ch for ch in literal if not _ALLOWED_LITERAL.fullmatch(ch)})
        if bad:
            shown = " ".join(repr(ch) for ch in bad)
            raise NamingSchemaError(
                f"naming_schema {schema!r} contains {shown}, not allowed in ZFS snapshot names: "
                "use only letters, digits, spaces and _ . : - besides the % directives"
            )
        letters = [text for kind, text in tokens if kind == "dir"]
        repeated = sorted({f"%{x}" for x in letters if letters.count(x) > 1})
        if repeated:
            raise NamingSchemaError(
                f"naming_schema {schema!r} repeats {' '.join(repeated)}: use each directive once"
            )
        missing = [f"%{x}" for x in REQUIRED if x not in letters]
        if missing:
            raise NamingSchemaError(
                f"naming_schema {schema!r} lacks {' '.join(missing)}: a naming schema must contain "
                "%Y, %m, %d, %H and %M"
            )
        if "z" in letters and ":" in literal:
            raise NamingSchemaError(
                f"naming_schema {schema!r} contains both %z and ':': a positive UTC offset is written "
                "with ':' (ZFS names cannot contain '+'), so replace the literal ':' with '-' or '_'"
            )
        self._schema = schema
        self._tokens = tuple(tokens)
        pattern = "".join(_GROUPS[text] if kind == "dir" else re.escape(text) for kind, text in tokens)
        self._regex = re.compile(pattern)
        self._has_seconds = "S" in letters
        self._has_offset = "z" in letters

    @property
    def schema(self) -> str:
        return self._schema

    @property
    def has_offset(self) -> bool:
        """True when names carry their UTC offset (%z), so parse() returns aware datetimes."""
        return self._has_offset

    @property
    def has_seconds(self) -> bool:
        return self._has_seconds

    def __repr__(self) -> str:
        return f"NamingSchema({self._schema!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NamingSchema) and other._schema == self._schema

    def __hash__(self) -> int:
        return hash(self._schema)

    def format(self, when: datetime) -> str:
        """The snapshot short name (after ``@``) for ``when``, in ``when``'s own wall time.

        A schema with %z needs an aware datetime. Seconds are dropped unless the schema has %S.
        """
        parts: list[str] = []
        for kind, text in self._tokens:
            if kind == "lit":
                parts.append(text)
            elif text == "Y":
                parts.append(f"{when.year:04d}")
            elif text == "m":
                parts.append(f"{when.month:02d}")
            elif text == "d":
                parts.append(f"{when.day:02d}")
            elif text == "H":
                parts.append(f"{when.hour:02d}")
            elif text == "M":
                parts.append(f"{when.minute:02d}")
            elif text == "S":
                parts.append(f"{when.second:02d}")
            else:
                parts.append(_format_offset(when, self._schema))
        return "".join(parts)

    def parse(self, name: str) -> datetime | None:
        """The time encoded in ``name``, or None when ``name`` is not exactly a name of this schema.

        Aware (fixed UTC offset) when the schema has %z, naive wall time otherwise. A name with
        an impossible date or time (month 13, February 30, hour 24) is None.
        """
        if not isinstance(name, str):
            return None
        m = self._regex.fullmatch(name)
        if m is None:
            return None
        tz: timezone | None = None
        if self._has_offset:
            tz = _parse_offset(m.group("z"))
            if tz is None:
                return None
        try:
            return datetime(
                int(m.group("Y")),
                int(m.group("m")),
                int(m.group("d")),
                int(m.group("H")),
                int(m.group("M")),
                int(m.group("S")) if self._has_seconds else 0,
                tzinfo=tz,
            )
        except ValueError:
            return None

    def matches(self, name: str) -> bool:
        """True when ``name`` parses under this schema (a valid date and time included)."""
        return self.parse(name) is not None

    def truncate(self, when: datetime) -> datetime:
        """``when`` at this schema's precision: what parse(format(when)) gives back."""
        return when.replace(second=when.second if self._has_seconds else 0, microsecond=0)


def _format_offset(when: datetime, schema: str) -> str:
    offset = when.utcoffset()
    if offset is None:
        raise ValueError(
            f"naming_schema {schema!r} contains %z: format() needs a time with a time zone, "
            "not a naive datetime"
        )
    if offset.microseconds:
        raise ValueError(f"UTC offset {offset} of {when!r} has fractions of a second: %z cannot write it")
    seconds = int(offset.total_seconds())
    sign = ":" if seconds >= 0 else "-"
    seconds = abs(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{sign}{hours:02d}{minutes:02d}"
    return text + f"{secs:02d}" if secs else text


def _parse_offset(text: str) -> timezone | None:
    sign = -1 if text[0] == "-" else 1
    hours, minutes = int(text[1:3]), int(text[3:5])
    secs = int(text[5:7]) if len(text) == 7 else 0
    if minutes > 59 or secs > 59:
        return None
    try:
        return timezone(sign * timedelta(hours=hours, minutes=minutes, seconds=secs))
    except ValueError:  # 24 hours or more
        return None


def parse_any(schemas: Iterable[NamingSchema | str], name: str) -> tuple[NamingSchema, datetime] | None:
    """The first schema (in the order given) under which ``name`` parses, with the parsed time.

    None when no schema matches: such a snapshot is not one of ours (a manual snapshot, or
    another tool's).
    """
    for schema in schemas:
        if not isinstance(schema, NamingSchema):
            schema = NamingSchema(schema)
        parsed = schema.parse(name)
        if parsed is not None:
            return schema, parsed
    return None
