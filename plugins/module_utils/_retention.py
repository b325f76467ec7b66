# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Pruning decision for a periodic snapshot task: which of its snapshots to destroy, and why.

Pure: listings and a clock in, a plan out. Nothing here runs zfs.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Protocol

from ._lifetime import Lifetime, instant, longest
from ._naming import NamingSchema
from ._tz import zone


class SnapshotLike(Protocol):
    """What retention reads of a snapshot (``_zfs.Snapshot`` has these fields too)."""

    dataset: str
    name: str
    createtxg: int
    guid: str
    userrefs: int


@dataclass(frozen=True)
class Snapshot:
    dataset: str
    name: str  # the part after @
    createtxg: int
    guid: str
    userrefs: int = 0

    @property
    def full(self) -> str:
        return f"{self.dataset}@{self.name}"


@dataclass
class RetentionPlan:
    """``destroy`` and ``keep`` hold (full snapshot name, reason) pairs, ordered by dataset, then
    creation (createtxg). Only snapshots of the task's naming schema appear: others are not ours."""

    destroy: list[tuple[str, str]] = field(default_factory=list)
    keep: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[dict[str, str]]]:
        return {
            "destroy": [{"snapshot": name, "reason": reason} for name, reason in self.destroy],
            "keep": [{"snapshot": name, "reason": reason} for name, reason in self.keep],
        }


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="minutes")


def plan_retention(
    snapshots: Iterable[SnapshotLike],
    schema: NamingSchema,
    lifetime: Lifetime,
    other_lifetimes: Sequence[Lifetime],
    keep: AbstractSet[str],
    now: datetime,
    *,
    tz: tzinfo | str | None = None,
    keep_newest: bool = True,
) -> RetentionPlan:
    """Decide which snapshots of ``schema`` have outlived every task that makes them.

    Rules, in order:

    * Only snapshots whose name parses under ``schema`` are candidates. Manual snapshots and
      those of other schemas are not in the plan at all.
    * A snapshot with user holds (``userrefs > 0``) is kept.
    * A snapshot whose full name (``ds@name``) is in ``keep`` is kept: callers list incremental
      bases and snapshots still pending replication there.
    * With ``keep_newest`` (the default), the newest candidate per dataset (highest createtxg) is
      kept even when expired. This is deliberately more conservative than TrueNAS, which prunes
      by lifetime only: with ``allow_empty: false`` an idle dataset takes no new snapshots, so its
      last one would eventually expire and leave no common base for a replication that is not in
      the ``keep`` set (another controller's task, a task declared later, a target offline for
      longer than the lifetime). One extra snapshot per dataset is the price.
    * Otherwise, as in TrueNAS, the snapshot's time is the one parsed from its name (not its
      creation property), its lifetime is the longest of ``lifetime`` and ``other_lifetimes``
      (other tasks with the same schema on the dataset), evaluated at that time, and it is
      destroyed when it expired strictly before ``now`` truncated to the minute (so a run at
      02:00:07 does not yet destroy a 00:00 snapshot with a 2-hour lifetime; the next run does).

    Times in names without %z are wall times in ``tz`` ('UTC', an IANA name, a tzinfo, or None
    for the host's zone); a naive ``now`` is wall time there too.
    """
    zone_info = tz if isinstance(tz, tzinfo) else zone(tz, "timezone")
    if now.tzinfo is None:
        now = now.replace(tzinfo=zone_info)
    cutoff = instant(now.replace(second=0, microsecond=0))
    lifetimes = [lifetime, *other_lifetimes]

    by_dataset: dict[str, list[tuple[SnapshotLike, datetime]]] = defaultdict(list)
    for snap in snapshots:
        parsed = schema.parse(snap.name)
        if parsed is None:
            continue
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=zone_info)
        by_dataset[snap.dataset].append((snap, parsed))

    plan = RetentionPlan()
    for dataset in sorted(by_dataset):
        entries = sorted(by_dataset[dataset], key=lambda e: (e[0].createtxg, e[0].name))
        newest = entries[-1][0] if keep_newest else None
        for snap, created in entries:
            full = f"{snap.dataset}@{snap.name}"
            chosen = longest(lifetimes, created)
            expires = chosen.expires(created)
            if snap.userrefs > 0:
                plan.keep.append((full, f"held ({snap.userrefs} user hold{'s' if snap.userrefs > 1 else ''})"))
            elif full in keep:
                plan.keep.append((full, "kept for replication (incremental base or pending)"))
            elif snap is newest:
                plan.keep.append((full, f"newest snapshot of naming schema {schema.schema!r} on {dataset}"))
            elif instant(expires) < cutoff:
                plan.destroy.append((full, f"expired {_iso(expires)} (lifetime {chosen} from {_iso(created)})"))
            else:
                plan.keep.append((full, f"expires {_iso(expires)} (lifetime {chosen} from {_iso(created)})"))
    return plan
