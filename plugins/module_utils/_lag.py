# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One definition of a replication task's lag, for zfs_replication_info, the status table and the metrics.

* The **recovery point** of a target dataset is its newest snapshot, dated by its ``creation`` property. A
  received snapshot keeps the ``creation`` of the source's snapshot, so this is when the data the target holds
  was on the source, whatever the snapshot's name says (a name may carry another time zone, or no time at all).
* The recovery point of a **task** is the oldest of its target datasets' points: every dataset is at least that
  fresh. None when one of them has no snapshot yet (nothing replicated there).
* The **lag** is the whole seconds from the recovery point to ``now`` (never negative: two hosts' clocks may differ).

The info module dates "now" when it checks; a run (module or timer) records its point in its state file
(``details.datasets.TARGET.recovery_point`` and ``newest_replicated``) and its metrics date "now" at the run's
recorded end, so the table and ``zfs_replication_lag_seconds`` differ by exactly the seconds between the two.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

# The property every target listing must ask for (``extra_props``) to date its snapshots.
CREATION = "creation"


def creation_time(snap: Any) -> datetime | None:
    """A listed snapshot's ``creation`` property as an aware UTC time; None when the listing lacks it."""
    value = str(snap.props.get(CREATION, "")).strip()
    return datetime.fromtimestamp(int(value), timezone.utc) if value.isdigit() else None


def newest_snapshot(snapshots: Sequence[Any]) -> Any | None:
    """The target dataset's newest snapshot by ``creation`` (ties: the later in the listing, i.e. by createtxg)."""
    dated = [(creation_time(s), i, s) for i, s in enumerate(snapshots)]
    dated = [d for d in dated if d[0] is not None]
    return max(dated, key=lambda d: (d[0], d[1]))[2] if dated else None


def dataset_recovery_point(snapshots: Sequence[Any]) -> datetime | None:
    """The recovery point of one target dataset: the ``creation`` of its newest snapshot, or None (no snapshot)."""
    snap = newest_snapshot(snapshots)
    return creation_time(snap) if snap is not None else None


def task_recovery_point(points: Iterable[datetime | None]) -> datetime | None:
    """The oldest of the datasets' recovery points; None when there is none or one dataset has none."""
    points = list(points)
    if not points or any(p is None for p in points):
        return None
    return min(p for p in points if p is not None)


def lag_seconds(point: datetime | None, now: datetime) -> int | None:
    """Whole seconds from ``point`` to ``now`` (0 when ``point`` is in the future); None without a point."""
    if point is None:
        return None
    return max(0, int((now - point).total_seconds()))


def iso(when: datetime | None) -> str | None:
    """The form the state file and the info module use: UTC, whole seconds."""
    return when.astimezone(timezone.utc).isoformat(timespec="seconds") if when is not None else None


def parse_iso(value: Any) -> datetime | None:
    try:
        when = datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None
    return when.replace(tzinfo=timezone.utc) if when is not None and when.tzinfo is None else when


def listing_recovery_points(listing: Any, targets: Iterable[str]) -> dict[str, str | None]:
    """ISO recovery point of each target dataset in a target listing (listed with ``extra_props=(CREATION,)``)."""
    out: dict[str, str | None] = {}
    for target in targets:
        dataset = listing.get(target) if listing is not None else None
        out[target] = iso(dataset_recovery_point(dataset.snapshots)) if dataset is not None else None
    return out


def run_recovery_point(details: Any) -> str | None:
    """The task's recovery point (ISO) from a run's ``details`` (its ``datasets``, each with ``recovery_point``)."""
    datasets = details.get("datasets") if isinstance(details, Mapping) else None
    if not isinstance(datasets, Mapping) or not datasets:
        return None
    points = [parse_iso(item.get("recovery_point")) if isinstance(item, Mapping) else None for item in datasets.values()]
    return iso(task_recovery_point(points))
