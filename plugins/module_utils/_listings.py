# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The two listings a run plans on: the source trees and the target tree, one recursive zfs call each (_zfs.list_tree),
with what a missing source, a missing target parent or a zvol in the way means for the task."""
from __future__ import annotations

from dataclasses import dataclass

from ._lag import CREATION
from ._received_props import fixed_properties
from ._replication_task import ReplicationTask, TaskError
from ._transport import Host
from ._zfs import Capabilities, DatasetMissing, Listing, dataset_type, list_tree


@dataclass(frozen=True)
class TargetListing:
    listing: Listing | None  # None: the target dataset does not exist yet (its parent does)
    parent_encrypted: bool = False  # the new target's parent is encrypted (its streams then go without -e)


@dataclass(frozen=True)
class Listings:
    task: ReplicationTask
    src: Host
    dst: Host

    def source(self, caps: Capabilities) -> Listing:
        try:
            return list_tree(self.src, caps, self.task.source_datasets)
        except DatasetMissing as exc:
            raise TaskError(
                f"source_datasets: {', '.join(exc.names)} does not exist on {self.src.label}: check the name (zfs list) or create it"
            ) from exc

    def target(self, caps: Capabilities) -> TargetListing:
        target = self.task.target_dataset
        try:
            # allow_rollback plans a rollback only when the target was written to since the base (`written`, OpenZFS).
            written = ["written"] if self.task.allow_rollback and caps.list_parsable else []
            listing = list_tree(self.dst, caps, target, [*fixed_properties(self.task, caps), *written, CREATION])
        except DatasetMissing:
            listing = None
        if listing is not None:
            root = listing.get(target)
            if root is not None and root.type == "volume" and (len(self.task.source_datasets) > 1 or self.task.recursive):
                raise TaskError(f"target_dataset {target} is a zvol: a zvol cannot hold replicated datasets; choose a filesystem")
            return TargetListing(listing)
        parent = target.rsplit("/", 1)[0]
        kind = dataset_type(self.dst, parent)
        parent_encrypted = False
        if kind is not None and caps.encryption:
            enc = self.dst.run(["zfs", "get", "-H", "-p", "-o", "value", "encryption", parent], check=False).stdout.strip()
            parent_encrypted = enc not in ("off", "-", "")
        if kind is None:
            raise TaskError(
                f"target_dataset {target}: its parent {parent} does not exist on {self.dst.label}; "
                "only the last path component is created: create the parent first"
            )
        if kind == "volume":
            raise TaskError(f"target_dataset {target}: its parent {parent} is a zvol, which cannot hold datasets: choose a filesystem")
        return TargetListing(None, parent_encrypted)
