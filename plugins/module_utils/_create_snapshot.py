# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``create_snapshot``: a source without a snapshot the task selects gets one before the run plans, as TrueNAS does
when it sets up a replication of local sources without snapshots."""
from __future__ import annotations

from datetime import datetime
from typing import Callable

from ._replication_task import ReplicationTask
from ._transport import Host
from ._tz import zone
from ._zfs import Listing, Snapshot, is_within


def take_missing_snapshots(task: ReplicationTask, src: Host, source: Listing, now: datetime, check_mode: bool,
                           log: Callable[[str], None]) -> bool:
    """create_snapshot: a source root (or, when recursive, any dataset of its tree) without a selected
    snapshot gets one now, named by the first naming schema (zfs snapshot -r for a tree). True when taken."""
    selection = task.selection()
    schema = task.schemas()[0]
    name = schema.format(now.astimezone(zone(task.timezone, "timezone")))
    taken = False
    for root in task.source_datasets:
        members = [d for n, d in source.datasets.items() if is_within(n, root)] if task.recursive else [source.datasets[root]]
        members = [d for d in members if not any(is_within(d.name, ex) for ex in task.exclude)]
        if all(any(selection.matches(s.name) for s in d.snapshots) for d in members):
            continue
        argv = ["zfs", "snapshot", *(["-r"] if task.recursive else []), f"{root}@{name}"]
        if check_mode:
            log(f"create_snapshot: would take {root}@{name}{' recursively' if task.recursive else ''}")
            # Plan as if it were taken, so check mode shows the streams the real run sends.
            for d in (d for n, d in source.datasets.items() if is_within(n, root)) if task.recursive else [source.datasets[root]]:
                top = max((x.createtxg for x in d.snapshots), default=0)
                d.snapshots.append(Snapshot(d.name, name, f"planned-{d.name}@{name}", top + 1))
            continue
        log(f"create_snapshot: {root} has no snapshot matching the task: taking {root}@{name}")
        src.run(argv)
        taken = True
    return taken
