# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What a run destroys or rolls back on the target, each step planned (and consented to) before, shown in the plan,
and checked again right before it happens.

* ``destroy_before`` (allow_from_scratch, allow_rollback): destroyed only if each snapshot still has the guid it was
  planned on (:meth:`TargetChanges.destroy_listed`);
* a rollback to the base (allow_rollback), and the unmount of a target a from-scratch ``recv -F`` replaces;
* target retention after the sends (:meth:`TargetChanges.retain`): only what the logged plan listed, and only if it
  is still due on the target as it is after the sends.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ._holds import Holds
from ._planner import DatasetPlan, PlanTask, target_retention
from ._results import DatasetResult
from ._transport import Host, TransportError
from ._zfs import Capabilities, Listing, zfs_values


@dataclass(frozen=True)
class TargetChanges:
    dst: Host
    dst_caps: Capabilities | None
    holds: Holds
    log: Callable[[str], None]

    def destroy(self, dataset: str, names: list[str], why: str) -> None:
        """Destroy snapshots of one dataset: one call on OpenZFS (a@x,y,z), one per snapshot on older CLIs."""
        if not names:
            return
        self.log(f"destroy {dataset}@{','.join(names)} on {self.dst.label}: {why}")
        if self.dst_caps is not None and self.dst_caps.version:
            self.dst.run(["zfs", "destroy", f"{dataset}@{','.join(names)}"])
        else:
            for name in names:
                self.dst.run(["zfs", "destroy", f"{dataset}@{name}"])

    def destroy_listed(self, dplan: DatasetPlan, why: str) -> list[str]:
        """Destroy the target snapshots the plan lists in destroy_before, only if each still has the guid it was
        planned on (one zfs get for all of them, right before): a snapshot replaced since the listing is refused."""
        names = dplan.destroy_before
        snaps = [f"{dplan.target}@{n}" for n in names]
        now = zfs_values(self.dst, "guid", snaps)
        changed = [n for n in names if now.get(f"{dplan.target}@{n}") != dplan.destroy_guids.get(n)]
        if changed:
            raise TransportError(
                f"not destroying {dplan.target}@{','.join(changed)}: changed since this run listed it (guid differs or it is gone); "
                "nothing was destroyed, the next run plans again"
            )
        # The task's own hold (on an earlier base) must not block what the user consented to.
        self.holds.batch(self.dst, "release", snaps, strict=False)
        self.destroy(dplan.target, names, why)
        return list(names)

    def rollback(self, dplan: DatasetPlan) -> None:
        self.log(f"rollback {dplan.target}@{dplan.base} on {self.dst.label} (allow_rollback: discards changes made on the target after it)")
        self.dst.run(["zfs", "rollback", f"{dplan.target}@{dplan.base}"])

    def unmount_replaced(self, target: str) -> None:
        """Unmount the target a from-scratch full stream (zfs recv -F) replaces, before the receive: recv -F has to
        unmount it anyway, and zfs-fuse, doing that itself, fails now and then with "cannot receive new filesystem
        stream: I/O error" (measured: 5 of 20 such receives; 0 of 20 after an explicit unmount). Not mounted, or a
        volume: nothing to do. Busy: the receive then fails and says so."""
        out = self.dst.run(["zfs", "unmount", target], check=False)
        if out.returncode == 0:
            self.log(f"unmounted {target} on {self.dst.label}: the zfs recv -F of a full stream replaces it")

    def retain(self, done: list[DatasetPlan], source: Listing, after: Listing | None, the_task: PlanTask,
               results: dict[str, DatasetResult], errors: list[str]) -> dict[str, list[str]]:
        """Target retention after the sends, on ``after`` (listed once for the whole tree). Only what the logged
        plan listed can go, and only if it is still due on the target as it is now. Returns what was destroyed."""
        destroyed: dict[str, list[str]] = {}
        for dplan in done:
            src = source.get(dplan.source)
            tgt = after.get(dplan.target) if after is not None else None
            if src is None or tgt is None:
                continue
            planned = {n for n, _unused in dplan.destroy_after}
            due = target_retention(the_task, src, tgt.snapshots)
            for name in sorted(planned - {n for n, _unused in due}):
                self.log(f"  keep {dplan.target}@{name}: planned for retention, but not due on the target as it is after the sends")
            gone = self._apply_retention(dplan, [(n, why) for n, why in due if n in planned], results[dplan.target], errors)
            if gone:
                destroyed[dplan.target] = gone
        return destroyed

    def _apply_retention(self, dplan: DatasetPlan, decided: list[tuple[str, str]], res: DatasetResult, errors: list[str]) -> list[str]:
        """Destroy the target snapshots retention decided for one dataset. Returns what was destroyed."""
        if not decided:
            return []
        names = [n for n, _unused in decided]
        try:
            self.destroy(dplan.target, names, "retention: " + "; ".join(sorted({r for _unused, r in decided})))
            res.destroyed += names
        except TransportError as exc:
            res.error = f"{dplan.target}: retention: {exc}"
            errors.append(res.error)
            return []
        return names
