# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""How each stream of a run is built and run: ``zfs send``'s flags, ``zfs recv``'s argv, the pipeline's parts on each
side (pv, compression, mbuffer), the stream's expected size, and one attempt at it: locally, over ssh, or over a
netcat connection on a free port, with its progress lines.

A :class:`Streams` is made by the run once both sides are probed and listed; it reads those facts and the task. How
parts become processes is the executor's (_executor, _netcat); what happens around a stream (retries, the first
full's leftovers, holds, keys) is the transfer's (_transfer).
"""
from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable, Optional, Union

from . import _netcat as netcat
from ._executor import PipelineResult, Stage, Watch, remote_stage, run_pipeline
from ._planner import Send
from ._preflight import netcat_sender_listens
from ._progress import StreamProgress
from ._replication_task import COMPRESSORS, ReplicationTask, TaskError
from ._transport import Host
from ._zfs import Capabilities, Listing, zfs_values

# A stream's expected size for its progress lines: known, unknown (None), or asked for when the first line is due.
Expected = Union[int, None, Callable[[], Optional[int]]]

# What a received filesystem gets instead of the source's values: no mount at boot or on zfs mount -a, no setuid
# programs or device nodes honoured (unless the task's properties_override asks for them).
SAFE_VALUES = (("canmount", "noauto"), ("setuid", "off"), ("devices", "off"))


def trimmable(send: Send) -> bool:
    """An incremental into an existing target: the only stream whose recv -o depends on what the target already holds
    (a full, forced, resumed or send -R stream always sets everything)."""
    return send.mode != "full" and not (send.replicate or send.force or send.token)


@dataclass(frozen=True)
class Streams:
    """The streams of one run: ``source`` and ``target`` are the listings the run planned on (``target`` None when
    the target tree did not exist), ``parent_encrypted`` whether a new target's parent is encrypted, and
    ``counter_on_sender`` whether pv counts on the sending side."""

    task: ReplicationTask
    src: Host
    dst: Host
    src_caps: Capabilities | None
    dst_caps: Capabilities | None
    source: Listing | None
    target: Listing | None
    parent_encrypted: bool = False
    counter_on_sender: bool = False
    # The targets' own (local) values of the properties receives set with -o, read once before the run's incrementals
    # (_received_props.read_target_local); None: not read, every receive sets them.
    target_local: Mapping[str, Mapping[str, str]] | None = None
    log: Callable[[str], None] = lambda _line: None  # the run's log: the pipeline's line, netcat's port, progress

    def stream_flag(self, opt: str) -> bool:
        value = getattr(self.task, opt)
        if value is None:
            return bool(self.src_caps and self.src_caps.version and self.dst_caps and self.dst_caps.version)
        return bool(value)

    def target_encrypted(self, target: str) -> bool:
        """Is (or will) ``target`` be encrypted: the task encrypts it, it is, or its new parent is."""
        if self.task.encryption:
            return True
        listing = self.target
        ds = listing.get(target) if listing is not None else None
        if ds is None and listing is not None:
            ds = listing.get(target.rsplit("/", 1)[0])
        if ds is not None:
            return ds.props.get("encryption", "off") not in ("off", "-", "")
        return self.parent_encrypted

    def is_raw(self, dataset: str) -> bool:
        """Encrypted sources are sent raw (-w) unless raw: false: the target never sees the key."""
        if self.task.raw is False or self.source is None:
            return False
        ds = self.source.get(dataset)
        return ds is not None and ds.props.get("encryption", "off") not in ("off", "-", "")

    def is_filesystem(self, dataset: str) -> bool:
        ds = self.source.get(dataset) if self.source is not None else None
        return ds is None or ds.type == "filesystem"

    def safe_values(self, dataset: str) -> dict[str, str]:
        """What a received filesystem gets instead of the source's canmount, setuid and devices: no mount at boot or
        on zfs mount -a, no setuid programs or device nodes honoured. A property the task's properties_override
        names is left to it (the user asked). {} for a volume."""
        if not self.is_filesystem(dataset):
            return {}
        return {p: v for p, v in SAFE_VALUES if p not in self.task.properties_override}

    def emulate_exclude(self) -> bool:
        """True when properties are sent to a target that cannot zfs recv -x/-o (zfs-fuse). A stream with -p would
        create the replica with the source's mountpoint and canmount, live until a later zfs set (a run killed in
        between leaves them, and it mounts at boot): such streams go without -p, and fix_properties copies the
        source's local properties after the receive, minus the excluded ones and those of safe_values (they arrive
        as local values, not received ones). send -R always carries them: check_capabilities refuses that case
        when the source sets a mountpoint."""
        return bool(self.task.properties and self.dst_caps is not None and not self.dst_caps.recv_props)

    def send_flags(self, send: Send) -> list[str]:
        flags = []
        if send.replicate:
            flags.append("-R")
        elif self.task.properties and not self.emulate_exclude():
            flags.append("-p")  # never to a target without recv -x/-o: the stream would create it with the source's mountpoint
        raw = self.is_raw(send.source)
        if raw:
            flags.append("-w")
        if self.stream_flag("large_block"):
            flags.append("-L")
        if not raw and self.stream_flag("embed") and not self.target_encrypted(send.target):
            flags.append("-e")  # OpenZFS refuses embedded-data streams into encrypted datasets
        if not raw and self.stream_flag("compressed"):
            flags.append("-c")
        return flags

    def recv_argv(self, send: Send) -> list[str]:
        argv = ["zfs", "recv", "-u"]
        caps = self.dst_caps
        if caps is not None and caps.resumable and self.src_caps is not None and self.src_caps.resumable:
            argv.append("-s")
        if send.force:
            argv.append("-F")
        if caps is not None and caps.recv_props and not send.token:
            safe = self.safe_values(send.source)
            if self.task.properties or send.replicate:  # without send -p there is nothing to exclude
                for prop in self.task.properties_exclude:
                    if prop not in safe:  # zfs recv refuses a property in both -x and -o; -o already ignores the source's
                        argv += ["-x", prop]
                if self.is_filesystem(send.source) and "mountpoint" not in self.task.properties_override \
                        and "mountpoint" not in self.task.properties_exclude:
                    argv += ["-x", "mountpoint"]  # never the source's paths: the replica inherits the target's
            for prop, value in self.recv_settings(send)[0]:
                argv += ["-o", f"{prop}={value}"]
        if send.key_file:
            argv += ["-o", "encryption=on", "-o", f"keyformat={self.task.encryption_key_format}", "-o", f"keylocation=file://{send.key_file}"]
        argv.append(send.target)
        return argv

    def recv_settings(self, send: Send) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """The PROPERTY=VALUE pairs SEND's receive sets with -o (the task's overrides, then the safe values), and those
        it leaves out because the existing target already holds that value as its own (local) value, which a received
        one never overrides: each -o costs the receive a property-setting commit per snapshot. A value inherited or
        received, or different, is set again; a full stream, a send -R tree and a forced receive always set them.
        setuid and devices are inherited, so a send -R tree gets them too; canmount is not: fix_tree sets it on the
        received children."""
        wanted = [(p, str(v)) for p, v in sorted(self.task.properties_override.items())]
        # No mount at boot or on zfs mount -a (mount: true mounts explicitly), no setuid programs or device nodes
        # honoured from the source.
        wanted += sorted(self.safe_values(send.source).items())
        held = self.target_local.get(send.target) if self.target_local is not None else None
        if held is None or not trimmable(send):
            return wanted, []
        return [pv for pv in wanted if held.get(pv[0]) != pv[1]], [pv for pv in wanted if held.get(pv[0]) == pv[1]]

    def sender_parts(self, send: Send) -> tuple[list[Stage], int | None]:
        t = self.task
        argv = ["zfs", "send", *self.send_flags(send)]
        if send.mode in ("I", "i"):
            argv += [f"-{send.mode}", f"{send.source}@{send.base}"]
        argv.append(f"{send.source}@{send.snapshot}")
        if send.token:
            argv = ["zfs", "send", *(["-w"] if self.is_raw(send.source) else []), "-t", send.token]
        parts = [Stage(self.src, argv, "zfs send")]
        counter = None
        if self.counter_on_sender:
            # pv writes its count every 5 s, or as often as the progress lines need it (progress_interval).
            every = min(5, t.progress_interval) if t.progress_interval > 0 else 5
            pv = ["pv", "-n", "-b", "-f", "-i", str(every)]
            if t.speed_limit:
                pv += ["-L", str(int(t.speed_limit))]
            counter = len(parts)
            parts.append(Stage(self.src, pv, "pv"))
        if t.compression:
            parts.append(Stage(self.src, COMPRESSORS[t.compression][0], t.compression))
        return parts, counter

    def receiver_parts(self, send: Send) -> list[Stage]:
        t = self.task
        parts = []
        if t.buffer_size:
            parts.append(Stage(self.dst, ["mbuffer", "-q", "-s", "128k", "-m", str(t.buffer_size)], "mbuffer"))
        if t.compression:
            parts.append(Stage(self.dst, COMPRESSORS[t.compression][1], f"{t.compression} -d"))
        parts.append(Stage(self.dst, self.recv_argv(send), "zfs recv"))
        return parts

    def estimate(self, send: Send) -> tuple[int | None, str]:
        """How big the stream will be, and what says so: ``zfs send -n -P`` (OpenZFS), or on a command line without
        it (zfs-fuse) the snapshots' ``referenced``, a rough estimate (see estimate_from_referenced)."""
        if not (self.src_caps and self.src_caps.send_dry_run):
            return self.estimate_from_referenced(send), "from the snapshots' referenced: a rough estimate"
        if send.token:
            argv = ["zfs", "send", "-n", "-P", "-t", send.token]
        else:
            argv = ["zfs", "send", "-n", "-P", *self.send_flags(send)]
            if send.mode in ("I", "i"):
                argv += [f"-{send.mode}", f"{send.source}@{send.base}"]
            argv.append(f"{send.source}@{send.snapshot}")
        proc = self.src.run(argv, check=False)
        for line in (proc.stdout + "\n" + proc.stderr).splitlines():
            parts = line.split("\t")
            if len(parts) == 2 and parts[0] == "size" and parts[1].strip().isdigit():
                return int(parts[1]), "zfs send -nP"
        return None, ""

    def estimate_from_referenced(self, send: Send) -> int | None:
        """Where zfs send has no -nP: a full stream is about the snapshot's referenced bytes, an incremental about
        what referenced grew by since its base (low when data was overwritten rather than added: percent then stops at
        100 and the ETA at 0 before the end). One zfs get. None for a send -R tree (its children are not counted
        here), a resumed stream, or when the growth is not positive."""
        if send.replicate or send.token:
            return None
        snaps = [f"{send.source}@{send.snapshot}"]
        if send.mode in ("I", "i") and send.base:
            snaps.append(f"{send.source}@{send.base}")
        got = zfs_values(self.src, "referenced", snaps)
        if not all(got.get(n, "").strip().isdigit() for n in snaps):
            return None
        size = int(got[snaps[0]]) - (int(got[snaps[1]]) if len(snaps) == 2 else 0)
        return size if size > 0 else None

    # -- running a stream -----------------------------------------------------------------------------------------
    def run(self, send: Send, expected: Expected = None) -> PipelineResult:
        """One attempt at SEND; EXPECTED is its estimated size for the progress lines (progress_interval), or what
        gives it when the first line is due (_transfer.Estimate)."""
        sender, counter = self.sender_parts(send)
        receiver = self.receiver_parts(send)
        where = {"ssh": "ssh", "ssh+netcat": "nc", "local": ""}[self.task.transport]
        self.log("  $ " + " | ".join(shlex.join(p.argv) for p in sender) + (f" | {where} | " if where else " | ")
                 + " | ".join(shlex.join(p.argv) for p in receiver))
        progress = None
        if counter is not None and self.task.progress_interval > 0:
            progress = StreamProgress(send.target, send.snapshot or "(resumed)", expected, self.log)
        watch = Watch(self.task.progress_interval, progress) if progress is not None else None
        try:
            return self._run(send, sender, counter, receiver, watch)
        finally:
            if progress is not None:
                progress.end()

    def _run(self, send: Send, sender: list[Stage], counter: int | None, receiver: list[Stage],
             watch: Watch | None) -> PipelineResult:
        if self.task.transport == "ssh+netcat":
            return self.run_netcat(sender, counter, receiver, watch)
        stages: list[Stage] = []
        if self.src.is_local:
            stages += sender
        else:
            stages.append(remote_stage(self.src, sender))
            counter = 0 if counter is not None else None
        if self.dst.is_local:
            stages += receiver
        else:
            stages.append(remote_stage(self.dst, receiver))
        return run_pipeline(stages, counter, watch)

    def run_netcat(self, sender: list[Stage], counter: int | None, receiver: list[Stage], watch: Watch | None = None) -> PipelineResult:
        """Data over a plain TCP connection (see _netcat): the active side (netcat.active_side, by default the receiving
        side) listens, the other connects."""
        nc = self.task.netcat
        if nc is None or self.task.ssh is None:
            raise TaskError("transport ssh+netcat needs the ssh and netcat options")
        try:
            listen_addr, connect_addr = netcat.addresses(self.task.direction, self.task.ssh.host, nc.listen_address, nc.connect_address,
                                                         nc.active_side)
        except ValueError as exc:
            raise TaskError(str(exc)) from exc
        sender_listens = netcat_sender_listens(self.task)
        listen_host = self.src if sender_listens else self.dst
        port = self.free_port(listen_host, nc.port_min, nc.port_max)
        stream = netcat.build(listen_host, self.src, listen_addr, connect_addr, port, sender, receiver, sender_listens)
        side = "sending" if sender_listens else "receiving"
        self.log(f"  netcat: {listen_host.label} ({side} side) listens on {listen_addr}:{port}; data is NOT encrypted")
        return netcat.run(stream, counter, self.port_listening, watch=watch)

    def free_port(self, host: Host, low: int, high: int) -> int:
        try:
            return netcat.pick_port(self._listening_ports(host), low, high, host.label)
        except ValueError as exc:
            raise TaskError(str(exc)) from exc

    def _listening_ports(self, host: Host) -> set[int]:
        return netcat.listening_ports(host)

    def port_listening(self, host: Host, port: int) -> bool:
        return port in self._listening_ports(host)
