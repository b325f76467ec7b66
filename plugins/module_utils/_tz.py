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


def zone_name_from_probe(localtime_target: str, utc_offset: str) -> str | None:
    """An IANA zone name for another host from ``readlink -f /etc/localtime`` and ``date +%z`` run there.

    The link names the zone with its DST rules (``/usr/share/zoneinfo/Europe/Berlin``); when it is not a link into
    a zoneinfo tree, a whole-hour offset maps to a fixed ``Etc/GMT-N`` zone (POSIX signs: east of UTC is minus).
    None when neither says which zone it is.
    """
    marker = "/zoneinfo/"
    path = localtime_target.strip()
    if marker in path:
        name = path.split(marker, 1)[1]
        for prefix in ("posix/", "right/"):
            name = name[len(prefix):] if name.startswith(prefix) else name
        try:
            zone(name)
            return "UTC" if name in ("Etc/UTC", "UTC", "Etc/Universal", "Zulu") else name
        except TimezoneError:
            pass
    offset = utc_offset.strip()
    if len(offset) == 5 and offset[0] in "+-" and offset[1:].isdigit() and offset[3:] == "00":
        hours = int(offset[1:3])
        if hours == 0:
            return "UTC"
        return f"Etc/GMT{'-' if offset[0] == '+' else '+'}{hours}"
    return None
