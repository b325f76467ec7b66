# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Properties of received datasets that ``zfs recv -o``/``-x`` could not set, set after the receive.

Two cases stand in for a capability:

* a ``send -R`` tree (``replicate``): ``canmount`` is not inherited, so ``recv -o canmount=noauto`` reaches only the
  tree's top; every received filesystem whose canmount (and, on older command lines, setuid/devices) differs gets it
  (:meth:`ReceivedProps.fix_tree`);
* command lines without ``recv -o``/``-x`` (zfs-fuse, ``Capabilities.recv_props`` false): the stream carries no
  properties (``Streams.emulate_exclude``), and the replica gets the safe values, the task's overrides and the
  source's own local properties (minus the excluded ones and the mountpoint) with ``zfs set``
  (:meth:`ReceivedProps.fix`). Those local properties are read for the run's datasets in batches
  (:class:`LocalProps`: one ``zfs get`` per side for up to 200 datasets), not twice per dataset.

Before a run's incrementals into existing OpenZFS targets, :func:`read_target_local` reads what the targets hold (one
``zfs get`` of the values receives set): a receive sets with ``-o`` only the values the target does not hold as its own.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

from ._planner import DatasetPlan, Send
from ._replication_task import ReplicationTask
from ._streams import SAFE_VALUES, Streams, trimmable
from ._transport import Host, TransportError
from ._zfs import Capabilities, Listing, property_lines


def fixed_properties(task: ReplicationTask, caps: Capabilities) -> list[str]:
    """Properties :meth:`ReceivedProps.fix` sets on targets without recv -o: the target listing reads them too."""
    if caps.recv_props:
        return []
    return sorted(set(task.properties_override) | {p for p, _unused in SAFE_VALUES})


def local_values(host: Host, root: str, props: Iterable[str]) -> dict[str, dict[str, str]]:
    """The own (local) values of PROPS on every filesystem and volume of ROOT's tree: one zfs get of those properties
    only (``all`` would cost several times a listing). A failed call is the caller's to handle (TransportError)."""
    argv = ["zfs", "get", "-H", "-p", "-r", "-t", "filesystem,volume", "-s", "local", "-o", "name,property,value",
            ",".join(sorted(set(props))), root]
    return property_lines(host.run(argv).stdout)


def read_target_local(task: ReplicationTask, dst: Host, caps: Capabilities, target: Listing | None,
                      datasets: Iterable[DatasetPlan], log: Callable[[str], None]) -> dict[str, dict[str, str]] | None:
    """The existing targets' own values of the properties receives set with -o (``Streams.recv_settings``), read once
    before a run's incrementals into them: one zfs get of the target tree's values of those properties. None when no
    incremental goes into an existing target that can receive -o, or the read failed (every receive then sets them)."""
    if not caps.recv_props or target is None or not any(trimmable(s) for d in datasets for s in d.sends):
        return None
    props = sorted({*task.properties_override, *(p for p, _value in SAFE_VALUES)})
    try:
        return local_values(dst, task.target_dataset, props)
    except TransportError as exc:
        log(f"  reading the targets' own {', '.join(props)} failed ({exc}): every receive sets them")
        return None


class LocalProps:
    """The local properties (``zfs get -s local all``) of a run's datasets, read for many datasets in one call per side
    (:meth:`prefetch`) and served from there; a dataset not read that way (created by this run, or its batch failed)
    costs a call of its own (:meth:`get`). Thread-safe: the run's transfers ask from their workers, and the batch
    read may run beside them (:meth:`reading`): an answer waits for it."""

    BATCH = 200

    def __init__(self) -> None:
        self._known: dict[tuple[str, str], dict[str, str]] = {}
        self._lock = threading.Lock()
        self._reading: Future[None] | None = None

    def reading(self, batch: Future[None]) -> None:
        """The batch read runs in BATCH (its prefetches): :meth:`get` waits for it to end first."""
        self._reading = batch

    def wait(self) -> None:
        """Until the batch read given to :meth:`reading` has ended; its unexpected error is raised here."""
        if self._reading is not None:
            self._reading.result()

    @staticmethod
    def _read(host: Host, names: list[str], check: bool = False) -> tuple[int, dict[str, dict[str, str]]]:
        proc = host.run(["zfs", "get", "-H", "-p", "-s", "local", "-o", "name,property,value", "all", *names], check=check)
        return proc.returncode, property_lines(proc.stdout)

    def prefetch(self, side: str, host: Host, names: Iterable[str]) -> None:
        """Read NAMES' local properties on HOST (SIDE names the cache: 'source' or 'target'). When a batch's call
        fails (a name that does not exist), only the datasets it printed are kept: the others are read one by one."""
        todo = sorted(set(names))
        for i in range(0, len(todo), self.BATCH):
            chunk = todo[i:i + self.BATCH]
            rc, got = self._read(host, chunk)
            with self._lock:
                for name in chunk if rc == 0 else list(got):
                    self._known[(side, name)] = got.get(name, {})

    def get(self, side: str, host: Host, name: str) -> dict[str, str]:
        """NAME's local properties as prefetched for SIDE, else read now (:meth:`read`)."""
        self.wait()
        with self._lock:
            known = self._known.get((side, name))
        return known if known is not None else self.read(host, name)

    def read(self, host: Host, name: str) -> dict[str, str]:
        """NAME's local properties on HOST now (one zfs get); a failure is the transfer's error."""
        _rc, got = self._read(host, [name], check=True)
        return got.get(name, {})


@dataclass(frozen=True)
class ReceivedProps:
    streams: Streams  # the run's streams: its task, hosts, capabilities and the target listing it planned on
    log: Callable[[str], None]
    local: LocalProps = field(default_factory=LocalProps)  # the run's batch-read local properties

    def fix(self, send: Send) -> None:
        """After a receive: what recv -o/-x could not do (see the module's docstring). Older command lines: safe
        values and overrides are set where the target's value (from this run's listing) differs, after a full stream
        or when the task's overrides changed; then the source's local properties are copied where the target's local
        value differs."""
        s = self.streams
        caps, task = s.dst_caps, s.task
        if caps is None:
            return
        if send.replicate:
            self.fix_tree(send.target)
            return
        if caps.recv_props:
            return
        source, target = send.source, send.target
        known = s.target.get(target) if s.target is not None and send.mode != "full" else None
        current = known.props if known is not None else {}
        for prop, value in sorted(s.safe_values(source).items()):  # first: canmount, then setuid, devices
            if current.get(prop) != value:
                s.dst.run(["zfs", "set", f"{prop}={value}", target])
        if s.emulate_exclude():
            skip = set(task.properties_exclude) | set(task.properties_override) | {"mountpoint"} | {p for p, _unused in SAFE_VALUES}
            # The target's values as the run found them (a full stream's new dataset: read after its receive).
            have = self.local.get("target", s.dst, target) if known is not None else self.local.read(s.dst, target)
            for prop, value in self.local.get("source", s.src, source).items():
                if prop not in skip and have.get(prop) != value:
                    s.dst.run(["zfs", "set", f"{prop}={value}", target])
        for prop, value in sorted(task.properties_override.items()):
            if current.get(prop) != str(value):
                s.dst.run(["zfs", "set", f"{prop}={value}", target])

    def fix_tree(self, target: str) -> None:
        """Every filesystem of a received send -R tree gets canmount=noauto, setuid=off, devices=off (or the task's
        override of them) where its value differs: one zfs list, and one zfs set per property that needs it."""
        s = self.streams
        wanted = {p: str(s.task.properties_override.get(p, v)) for p, v in SAFE_VALUES}
        out = s.dst.run(["zfs", "list", "-H", "-r", "-t", "filesystem", "-o", "name," + ",".join(wanted), target]).stdout
        rows = [line.split("\t") for line in out.splitlines() if line.count("\t") == len(wanted)]
        for i, (prop, value) in enumerate(wanted.items(), start=1):
            names = [row[0] for row in rows if row[i] != value]
            if names:
                self.log(f"  set {prop}={value} on {len(names)} received filesystem(s) of {target}")
                s.dst.run(["zfs", "set", f"{prop}={value}", *names])
