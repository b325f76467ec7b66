# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Time zone lookup shared by schedules and retention: IANA names via zoneinfo, or the host's zone."""
from __future__ import annotations

import os
from datetime import datetime, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_LOCALTIME = "/etc/localtime"


class TimezoneError(ValueError):
    """A time zone name that zoneinfo does not know."""


def zone(name: str | None, field: str = "timezone") -> tzinfo:
    """The tzinfo for ``name`` ('UTC' or an IANA name); the host's local zone when ``name`` is None.

    The local zone is read from ``$TZ`` or ``/etc/localtime`` as a full zoneinfo zone so DST rules
    apply; a host without either is treated as UTC.
    """
    if name is None:
        return local_zone()
    if not isinstance(name, str) or not name.strip():
        raise TimezoneError(f"{field} {name!r} is not a time zone name: use 'UTC' or an IANA name like 'Europe/Berlin'")
    if name.upper() == "UTC":
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise TimezoneError(
            f"{field} {name!r} is not a known IANA time zone: use 'UTC' or a name like 'Europe/Berlin' "
            "(see /usr/share/zoneinfo)"
        ) from None


def local_zone() -> tzinfo:
    """The host's zone with its DST rules (not just the current fixed offset)."""
    tz_env = os.environ.get("TZ", "").lstrip(":")
    if tz_env:
        try:
            return ZoneInfo(tz_env)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass  # a POSIX TZ rule string or a bad name: fall back to /etc/localtime
    try:
        with open(_LOCALTIME, "rb") as handle:
            return ZoneInfo.from_file(handle, key="localtime")
    except (OSError, ValueError):
        return timezone.utc


def exists(aware: datetime) -> bool:
    """False for a wall time skipped by a spring-forward transition (e.g. 02:30 in Europe/Berlin)."""
    back = aware.astimezone(timezone.utc).astimezone(aware.tzinfo)
    return back.replace(tzinfo=None, fold=0) == aware.replace(tzinfo=None, fold=0)
