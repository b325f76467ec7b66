# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What a run reports: per dataset (:class:`DatasetResult`) and for the whole run (:class:`RunResult`), as the module
returns it and the runner records it, and the modules' ``--diff`` of the snapshots before and after a run."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._planner import Plan
from ._zfs import Capabilities, Listing


@dataclass
class DatasetResult:
    source: str
    target: str
    action: str
    base: str | None
    snapshots_sent: list[str] = field(default_factory=list)
    destroyed: list[str] = field(default_factory=list)
    bytes: int | None = None
    duration: float = 0.0
    attempts: int = 0
    estimated_bytes: int | None = None
    resumed: bool = False
    error: str | None = None
    recovery_point: str | None = None  # _lag: creation of the target's newest snapshot after the run (ISO, UTC)


@dataclass
class RunResult:
    task: str
    changed: bool
    plan: Plan
    datasets: list[DatasetResult]
    duration: float
    errors: list[str]
    log: list[str]
    source_capabilities: Capabilities | None = None
    target_capabilities: Capabilities | None = None
    before: dict[str, list[str]] = field(default_factory=dict)
    after: dict[str, list[str]] = field(default_factory=dict)
    key_file: str | None = None  # encryption_key_generate: where the key is kept on this host (the path, never the key)

    @property
    def failed(self) -> bool:
        return bool(self.errors)

    @property
    def snapshots_sent(self) -> int:
        return sum(len(d.snapshots_sent) for d in self.datasets)

    @property
    def bytes(self) -> int | None:
        counted = [d.bytes for d in self.datasets if d.snapshots_sent]
        if any(b is None for b in counted):
            return None
        return sum(b for b in counted if b is not None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "changed": self.changed,
            "plan": self.plan.as_list(),
            "datasets": {
                d.target: {
                    "source": d.source,
                    "action": d.action,
                    "base": d.base,
                    "snapshots_sent": d.snapshots_sent,
                    "destroyed": d.destroyed,
                    "bytes": d.bytes,
                    "duration": round(d.duration, 3),
                    "attempts": d.attempts,
                    "estimated_bytes": d.estimated_bytes,
                    "resumed": d.resumed,
                    "error": d.error,
                    "recovery_point": d.recovery_point,
                }
                for d in self.datasets
            },
            "snapshots_sent": self.snapshots_sent,
            "bytes": self.bytes,
            "duration": round(self.duration, 3),
            "errors": self.errors,
            "log": self.log,
            **({"encryption_key_file": self.key_file} if self.key_file else {}),
            "capabilities": {
                "source": self.source_capabilities.as_dict() if self.source_capabilities else None,
                "target": self.target_capabilities.as_dict() if self.target_capabilities else None,
            },
        }


def snapshot_names(listing: Listing | None) -> dict[str, list[str]]:
    if listing is None:
        return {}
    return {name: [s.name for s in ds.snapshots] for name, ds in listing.datasets.items()}


def planned_after(before: Listing | None, the_plan: Plan) -> dict[str, list[str]]:
    """The snapshot names of the target once ``the_plan`` has run (check mode's "after")."""
    after = snapshot_names(before)
    for d in the_plan.datasets:
        names = [n for n in after.get(d.target, []) if n not in d.destroy_before and n not in {x for x, _unused in d.destroy_after}]
        if d.pending or names != after.get(d.target, []):
            after[d.target] = names + d.pending
    return after


def snapshot_diff(before: dict[str, list[str]], after: dict[str, list[str]], header: str) -> dict[str, str]:
    """Ansible's diff of two {dataset: [snapshot names]} maps, one ``dataset@snapshot`` a line."""

    def render(lists: dict[str, list[str]]) -> str:
        return "".join(f"{ds}@{snap}\n" for ds in sorted(lists) for snap in lists[ds])

    return {"before": render(before), "after": render(after), "before_header": header, "after_header": header}
