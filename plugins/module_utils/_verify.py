# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""After the sends: every snapshot a run reports sent is on the target with the source's guid, read from the one
listing of the target tree taken after the sends (no call per dataset)."""
from __future__ import annotations

from ._planner import Plan
from ._results import DatasetResult
from ._zfs import Listing


def verify(the_plan: Plan, source: Listing, after: Listing | None, errors: list[str], results: dict[str, DatasetResult]) -> None:
    """Every snapshot reported sent is on the target with the source's guid."""
    for dplan in the_plan.datasets:
        res = results[dplan.target]
        src = source.get(dplan.source)
        if not res.snapshots_sent or src is None:
            continue
        tgt = after.get(dplan.target) if after is not None else None
        src_guids = {s.name: s.guid for s in src.snapshots}
        tgt_guids = {s.name: s.guid for s in tgt.snapshots} if tgt is not None else {}
        bad = [n for n in res.snapshots_sent if tgt_guids.get(n) != src_guids.get(n)]
        if bad:
            msg = f"verification: {dplan.target} lacks or has a different guid for {', '.join(bad)} after the transfer"
            res.error = msg
            errors.append(msg)
