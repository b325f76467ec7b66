# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``mount: true``: after a run, the filesystems that received something are mounted (receives are always unmounted,
``zfs recv -u``), never at a mountpoint that came from the source."""
from __future__ import annotations

from typing import Callable

from ._planner import Plan
from ._replication_task import ReplicationTask
from ._results import DatasetResult
from ._transport import Host
from ._zfs import is_within


def mount_received(task: ReplicationTask, dst: Host, the_plan: Plan, results: dict[str, DatasetResult], log: Callable[[str], None]) -> None:
    """mount: mount the filesystems that received something (they are received unmounted).

    One zfs get for them and their ancestors in the target tree, right before mounting. Not mounted: a
    mountpoint that came from the source, directly or inherited from a received ancestor. Mounted with
    nosuid,nodev whatever setuid/devices arrived, unless the task's properties_override turns them on."""
    targets = [d.target for d in the_plan.datasets if results[d.target].snapshots_sent and not results[d.target].error]
    if not targets:
        return
    names = set(targets)
    for name in targets:
        while "/" in name and is_within(name, task.target_dataset) and name != task.target_dataset:
            name = name.rsplit("/", 1)[0]
            names.add(name)
    proc = dst.run(["zfs", "get", "-H", "-o", "name,property,value,source", "type,mounted,canmount,mountpoint", *sorted(names)],
                   check=False)
    props: dict[str, dict[str, tuple[str, str]]] = {}
    for line in proc.stdout.splitlines():
        cols = line.split("\t")
        if len(cols) == 4:
            props.setdefault(cols[0], {})[cols[1]] = (cols[2], cols[3])

    def origin(name: str) -> str:
        """Where the mountpoint of ``name`` was set: local, received, default, or outside (an ancestor beyond these)."""
        for _depth in range(name.count("/") + 1):
            where = props[name]["mountpoint"][1]
            parent = where[len("inherited from "):] if where.startswith("inherited from ") else None
            if parent is None:
                return where
            if parent not in props:
                return "outside"
            name = parent
        return "outside"

    opts = [o for p, o in (("setuid", "nosuid"), ("devices", "nodev")) if str(task.properties_override.get(p, "off")) != "on"]
    for target in targets:
        got = props.get(target, {})
        kind, mounted, canmount = (got.get(p, ("", ""))[0] for p in ("type", "mounted", "canmount"))
        mountpoint = got.get("mountpoint", ("", ""))[0]
        if kind != "filesystem" or mounted == "yes" or canmount == "off" or mountpoint in ("none", "legacy", ""):
            continue
        if origin(target) == "received":
            log(f"not mounting {target}: its mountpoint {mountpoint} came from the source (set mountpoint on the target)")
            continue
        out = dst.run(["zfs", "mount", *(["-o", ",".join(opts)] if opts else []), target], check=False)
        log(f"mount {target} at {mountpoint}{' (' + ','.join(opts) + ')' if opts else ''}: "
            + ("ok" if out.returncode == 0 else out.stderr.strip()))
