# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Before a run lists anything: the tools its pipeline needs are on each host, the features the task asks for are on
both command lines, and names are read in the source's time zone; after the source is listed, its encrypted datasets
can be sent the way the task says. Each check fails with the field and the fix, having changed nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import _netcat as netcat
from ._replication_task import COMPRESSORS, ReplicationTask, TaskError
from ._transport import Host
from ._zfs import Capabilities, Listing, is_within


def netcat_sender_listens(task: ReplicationTask) -> bool:
    """ssh+netcat: whether the sending side listens (netcat.active_side names it); by default the receiving side does."""
    nc = task.netcat
    if nc is None:
        return False
    remote_listens = netcat.listener_is_remote(task.direction, nc.active_side)
    return remote_listens == (task.direction == "pull")  # the sender is the remote host in pull mode


@dataclass(frozen=True)
class Preflight:
    task: ReplicationTask
    src: Host
    dst: Host
    src_caps: Capabilities | None
    dst_caps: Capabilities | None
    log: Callable[[str], None]

    def tools(self) -> bool:
        """Every program the pipeline needs exists on its host; pv is used for byte counts when present: whether it is on
        the sending side (the counter of the progress lines and the run's byte count)."""
        need_src: list[str] = []
        need_dst: list[str] = []
        t = self.task
        if t.compression:
            tool = COMPRESSORS[t.compression][0][0]
            need_src.append(tool)
            need_dst.append(tool)
        if t.buffer_size:
            need_dst.append("mbuffer")
        if t.speed_limit:
            need_src.append("pv")
        if t.transport == "ssh+netcat":
            need_src.append("nc")
            need_dst += ["nc", "dd"]
            # ss finds a free port on the side that listens (netcat.active_side; by default the receiving one).
            (need_src if netcat_sender_listens(self.task) else need_dst).append("ss")
        # One look-up per host: pv is asked on the source too, as an optional byte counter.
        src_missing = self.src.missing(sorted(set(need_src) | {"pv"}))
        for host, need, side, absent in ((self.src, need_src, "source", src_missing), (self.dst, need_dst, "target", None)):
            missing = [m for m in (absent if absent is not None else host.missing(sorted(set(need)))) if m in need]
            if missing:
                fields = {"pv": "speed_limit", "mbuffer": "buffer_size", "nc": "transport ssh+netcat", "ss": "transport ssh+netcat",
                          "dd": "transport ssh+netcat"}
                what = ", ".join(f"{m} (for {fields.get(m, 'compression')})" for m in missing)
                raise TaskError(f"the {side} host {host.label} lacks {what}: install it there or change the task's options")
        return "pv" not in src_missing

    def capabilities(self) -> None:
        """A feature the task requires that a host lacks is a clear error; optional ones are used when both sides can."""
        t, sc, dc = self.task, self.src_caps, self.dst_caps
        if sc is None or dc is None:
            raise TaskError("internal: capabilities are probed before they are checked")
        for opt, flag in (("large_block", "-L"), ("embed", "-e"), ("compressed", "-c")):
            if getattr(t, opt) is True and not (sc.version and dc.version):
                host = self.src if not sc.version else self.dst
                raise TaskError(
                    f"{opt}: true needs zfs send {flag} and a receiver that accepts it (OpenZFS); {host.label} has "
                    f"{(sc if host is self.src else dc).family}. Set {opt}: false or leave it unset (used when both sides support it)"
                )
        if t.raw is True and not (sc.raw_send and dc.encryption):
            raise TaskError(f"raw: true needs raw send (zfs send -w, OpenZFS >= 0.8) on both hosts; source has {sc.family}, target {dc.family}")
        if t.replicate and not dc.recv_props and (t.properties_exclude or t.properties_override):
            raise TaskError(
                f"properties_exclude/properties_override with replicate need zfs recv -x/-o on the target, which "
                f"{self.dst.label} ({dc.family}) lacks: drop them, or replicate without replicate: true"
            )
        if t.replicate and not dc.recv_props:
            # A send -R stream always carries the source's properties, and without recv -x nothing keeps a mountpoint
            # set on the source from applying to the replica (e.g. mountpoint=/etc): refuse before anything is sent.
            proc = self.src.run(["zfs", "get", "-H", "-r", "-s", "local,received", "-o", "name,property,value,source", "mountpoint",
                                 *t.source_datasets], check=False)
            own = [line.split("\t")[:3] for line in proc.stdout.splitlines() if line.count("\t") >= 3]
            paths = [(name, value) for name, _prop, value in own if value not in ("none", "legacy")]
            if paths:
                listed = ", ".join(f"{name} (mountpoint={value})" for name, value in paths[:5]) + (" ..." if len(paths) > 5 else "")
                raise TaskError(
                    f"replicate: true sends the source's mountpoints in the zfs send -R stream, and the target {self.dst.label} "
                    f"({dc.family}) has no zfs recv -x to ignore them: {listed} would be mounted at that path on the target. "
                    f"Nothing was changed. Replicate with replicate: false (recursive: true sends the tree without them), or "
                    f"run zfs inherit mountpoint (or set mountpoint=none/legacy) on those source datasets"
                )
        if t.encryption and not dc.encryption:
            raise TaskError(f"encryption: true needs native encryption on the target {self.dst.label}, which has {dc.family}")

    def source_zone(self) -> None:
        """Pull without ``timezone``: snapshot names were made in the source host's zone, not this host's. Read them
        there (retention lifetimes, only_matching_schedule), from the source's /etc/localtime: one call, only when
        names are read as times."""
        t = self.task
        if t.direction != "pull" or t.timezone is not None or not (t.retention_policy == "custom" or t.only_matching_schedule):
            return
        from ._tz import zone_name_from_probe

        proc = self.src.run(["sh", "-c", "readlink -f /etc/localtime; date +%z"], check=False)
        lines = (proc.stdout.splitlines() + ["", ""])[:2] if proc.returncode == 0 else ["", ""]
        name = zone_name_from_probe(lines[0], lines[1])
        if name is None:
            self.log(f"the time zone of {self.src.label} is unknown: snapshot names are read in this host's zone (set timezone)")
            return
        t.timezone = name
        self.log(f"snapshot names are read in the source's time zone {name} (set timezone to choose another)")

    def encrypted_sources(self, source: Listing) -> None:
        """raw: false sends encrypted datasets decrypted; OpenZFS refuses their properties (-p, -R) without -w."""
        t = self.task
        if t.raw is not False or not (t.properties or t.replicate):
            return
        encrypted = [n for n, d in source.datasets.items() if d.props.get("encryption", "off") not in ("off", "-", "")
                     and any(is_within(n, root) for root in t.source_datasets)
                     and (t.recursive or t.replicate or n in t.source_datasets) and not any(is_within(n, ex) for ex in t.exclude)]
        if encrypted:
            shown = ", ".join(encrypted[:3]) + (" ..." if len(encrypted) > 3 else "")
            raise TaskError(
                f"raw: false with {'replicate' if t.replicate else 'properties'}: true: {shown} is encrypted, and OpenZFS "
                "cannot send an encrypted dataset's properties without a raw stream (zfs send -w). Set properties: false "
                "(and replicate: false) to send it decrypted without properties, or leave raw unset to send it raw. Nothing was sent"
            )
