# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The task's hold (``zfs.replication:TASK``, ``hold_base``) on the newest common snapshot of each dataset.

Both sides keep the snapshot the next incremental starts from held, so nothing (another task's retention, a person,
another tool) destroys it while the task needs it. After each run that sent something the hold moves to the new
base, on both sides, in one ``zfs hold`` and one ``zfs release`` per side; a run killed in between leaves a base
unheld, which the next run repairs (:meth:`Holds.need_repair`). zfs takes one txg sync per snapshot named
(about 15 ms each on zfs-fuse, one commit each on OpenZFS): where a subtree's snapshots of one name are exactly
those to change, the call names its top with ``-r`` instead (:func:`recursive_roots`), one sync for the subtree.
Removing a task releases its holds (:meth:`Holds.release_all`).
"""
from __future__ import annotations

from bisect import bisect_left
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Callable

from ._planner import DatasetPlan
from ._transport import Host, TransportError, both_sides
from ._zfs import Listing, Snapshot, by_length, is_within


def hold_tag(task_name: str) -> str:
    return f"zfs.replication:{task_name}"


def newest_common(d: DatasetPlan) -> str | None:
    """The dataset's newest snapshot on both sides once its plan has run: the last one sent, else its base."""
    return d.pending[-1] if d.pending else d.base


def recursive_roots(snapshots: Sequence[str], listing: Listing | None, verb: str,
                    keep: Collection[str] = ()) -> tuple[dict[str, list[str]], list[str]]:
    """SNAPSHOTS (``dataset@name``) split into roots for ``zfs VERB -r``, each with the snapshots it stands for, and the
    rest, to be named one by one.

    ``dataset@name`` stands for its subtree when, in LISTING (the side as this run listed it), every dataset of
    the subtree that has a snapshot called ``name`` has it among SNAPSHOTS and not in KEEP, and, to release, carries
    a hold (a snapshot received by this run, not listed, carries none of ours yet): the recursive call then changes
    exactly what naming them would. Other tools' holds do not matter; a snapshot already carrying our tag makes the
    recursive hold fail as a whole, and :meth:`Holds.batch` then names them. Without a listing nothing goes
    recursive; a root that would stand only for itself is named as it is."""
    wanted = set(snapshots)
    if listing is None or len(wanted) < 2:
        return {}, list(snapshots)
    kids: dict[str, list[str]] = {}
    for name in listing.datasets:
        if "/" in name:
            kids.setdefault(name.rsplit("/", 1)[0], []).append(name)
    keep_by_name: dict[str, list[str]] = {}
    for snap in keep:
        ds, _at, name = snap.partition("@")
        keep_by_name.setdefault(name, []).append(ds)

    def listed(ds: str, name: str) -> Snapshot | None:
        known = listing.get(ds)
        return next((s for s in known.snapshots if s.name == name), None) if known is not None else None

    def stands_for_subtree(top: str, name: str) -> bool:
        """Every snapshot NAME of TOP's subtree, as listed, is one to change (and, to release, carries a hold)."""
        if any(is_within(k, top) for k in keep_by_name.get(name, ())):
            return False
        stack = [top]
        while stack:
            ds = stack.pop()
            snap = listed(ds, name)
            if snap is not None and (f"{ds}@{name}" not in wanted or (verb != "hold" and snap.userrefs == 0)):
                return False
            stack.extend(kids.get(ds, ()))
        return True

    by_name: dict[str, list[str]] = {}
    for snap in wanted:
        ds, _at, name = snap.partition("@")
        by_name.setdefault(name, []).append(ds)
    roots: dict[str, list[str]] = {}
    covered: set[str] = set()
    for name, datasets in by_name.items():
        datasets.sort()  # a parent before its children, each subtree's datasets one after the other
        for i, ds in enumerate(datasets):
            if f"{ds}@{name}" in covered:
                continue
            end = bisect_left(datasets, ds + "0", i + 1)  # "/" sorts just before "0": the names below DS end here
            below = [d for d in datasets[i + 1:end] if is_within(d, ds)]
            if not below or not stands_for_subtree(ds, name):
                continue
            # Releasing: every snapshot must be listed (one received by this run carries no hold of ours yet).
            if verb != "hold" and not all(listed(d, name) is not None for d in (ds, *below)):
                continue
            roots[f"{ds}@{name}"] = [f"{d}@{name}" for d in (ds, *below)]
            covered.update(roots[f"{ds}@{name}"])
    return roots, [s for s in snapshots if s not in covered]


@dataclass(frozen=True)
class Holds:
    tag: str
    src: Host
    dst: Host
    log: Callable[[str], None]
    listers: tuple[Host, ...] = ()  # the hosts whose zfs holds -H names each hold's tag (Capabilities.holds_list)

    def move(self, moved: Sequence[DatasetPlan], source: Listing | None, target: Listing | None) -> None:
        """Hold the new newest common snapshot of every dataset that received something, on both sides, and release
        the previous one: one zfs hold and one zfs release per side for the whole run (per snapshot only when the
        batch fails, e.g. a snapshot that already carries the tag). ``source``/``target``: the listings planned on.

        The two sides' holds run at once, then, only when both succeeded, their releases: a side that cannot take the
        new hold leaves both old bases held, so the chain keeps a held common snapshot on each side."""
        if not moved:
            return
        sides = []
        for host, side, listing in ((self.src, "source", source), (self.dst, "target", target)):
            news = [f"{d.source if side == 'source' else d.target}@{newest_common(d)}" for d in moved]
            # Release the task's hold on every other snapshot that carries a hold, not only the planned base: a
            # base whose copy was destroyed on the other side, or a run killed between receive and hold, left one.
            # A base listed with no hold at all (released by hand, hold_base turned on only now) is left alone: its
            # release could only fail, and where zfs cannot say whose holds a snapshot carries (zfs-fuse) that
            # failure costs a call per snapshot. Unlisted, it is released in case it is held.
            olds = []
            for d in moved:
                ds = d.source if side == "source" else d.target
                known = listing.get(ds) if listing is not None else None
                stale = {s.name for s in known.snapshots if s.userrefs > 0} if known is not None else set()
                if d.base and known is None:
                    stale.add(d.base)
                olds += [f"{ds}@{n}" for n in sorted(stale - {newest_common(d)})]
            sides.append((host, news, olds))
        (src, src_news, src_olds), (dst, dst_news, dst_olds) = sides
        # One round trip per side, at once; the source's error first, as in sequence.
        both_sides(lambda: self.batch(src, "hold", src_news, True, source), lambda: self.batch(dst, "hold", dst_news, True, target))
        # An old base may carry no hold of ours (older runs, released by hand): nothing to release then. A recursive
        # release never reaches a snapshot this run just held (another dataset's new base of the same name).
        both_sides(lambda: self.batch(src, "release", src_olds, False, source, src_news),
                   lambda: self.batch(dst, "release", dst_olds, False, target, dst_news))
        self.log(f"  hold {self.tag} moved to the new base of {len(moved)} dataset(s) on both sides")

    @staticmethod
    def need_repair(dplan: DatasetPlan, source: Listing | None, target: Listing | None) -> bool:
        """An in-sync dataset whose base carries no hold on a side (a run killed between receive and hold).

        Other held snapshots alone do not trigger a repair: they may be anyone's holds, and checking them
        on every run would cost zfs calls in runs that have nothing to do. Stale holds of ours are released
        by the next run that moves the holds."""
        if dplan.action != "in_sync" or not dplan.base:
            return False
        for ds, listing in ((dplan.source, source), (dplan.target, target)):
            known = listing.get(ds) if listing is not None else None
            base = known.by_name().get(dplan.base) if known is not None else None
            if base is not None and base.userrefs == 0:
                return True
        return False

    def batch(self, host: Host, verb: str, snapshots: Sequence[str], strict: bool, listing: Listing | None = None,
              keep: Collection[str] = ()) -> None:
        """``zfs hold``/``release`` of the tag on ``snapshots``: subtrees that allow it with ``-r`` on their top
        (:func:`recursive_roots`, from ``listing``), the rest named, one call per ~60 KB of names (_zfs.by_length).
        ``strict``: a snapshot that cannot take the hold (but for already carrying it) is an error.

        A call fails as a whole for one snapshot it cannot change: one that already carries the tag (a run killed
        between hold and release), one that does not (its userrefs counted another task's or tool's hold, the
        listing cannot tell whose), one gone. Then one ``zfs holds`` of the failed calls' snapshots tells which are
        still to change, and only those are named again (one by one only if that call fails too, so a strict error
        names its snapshot): a few calls per side, never one per dataset."""
        roots, rest = recursive_roots(snapshots, listing, verb, keep)
        under_roots: list[str] = []  # the snapshots of failed recursive calls
        named: list[str] = []  # those of failed named calls
        for chunk in by_length(list(roots)):
            if host.run(["zfs", verb, "-r", self.tag, *chunk], check=False).returncode != 0:
                under_roots += [snap for top in chunk for snap in roots[top]]
        for chunk in by_length(rest):
            if host.run(["zfs", verb, self.tag, *chunk], check=False).returncode != 0:
                named += chunk
        if not under_roots and not named:
            return
        carrying = self.carrying(host, under_roots + named)
        if carrying is None:  # zfs cannot tell: a recursive call's snapshots are named, a named call's taken one by one
            again = under_roots
            self.one_by_one(host, verb, named, strict)
        else:
            again = [snap for snap in under_roots + named if (snap in carrying) != (verb == "hold")]
        for chunk in by_length(again):
            if host.run(["zfs", verb, self.tag, *chunk], check=False).returncode != 0:
                self.one_by_one(host, verb, chunk, strict)

    def carrying(self, host: Host, snapshots: Sequence[str]) -> set[str] | None:
        """The SNAPSHOTS that carry the tag, from ``zfs holds -H`` (one call per ~60 KB of names); None when zfs cannot
        tell (a snapshot gone meanwhile, or a command line without a working ``zfs holds``, such as zfs-fuse's)."""
        if not any(host is lister for lister in self.listers):
            return None
        found: set[str] = set()
        for chunk in by_length(list(snapshots)):
            proc = host.run(["zfs", "holds", "-H", *chunk], check=False)
            if proc.returncode != 0:
                return None
            for line in proc.stdout.splitlines():
                name, _tab, rest = line.partition("\t")
                if rest.partition("\t")[0] == self.tag:
                    found.add(name)
        return found

    def one_by_one(self, host: Host, verb: str, snapshots: Sequence[str], strict: bool) -> None:
        for snap in snapshots:
            one = host.run(["zfs", verb, self.tag, snap], check=False)
            if one.returncode != 0 and strict and "tag already exists" not in one.stderr:
                raise TransportError(f"{host.label}: zfs {verb} {self.tag} {snap}: {one.stderr.strip()}")

    def release_all(self, host: Host, listing: Listing, check_mode: bool) -> list[str]:
        """Release the tag on every held snapshot of ``listing`` (the task is being removed); what was (or, in check
        mode, would be) released. One ``zfs holds`` and one ``zfs release`` per ~60 KB of names; where zfs cannot tell
        whose holds they are, each held snapshot is released on its own (and check mode cannot tell: none)."""
        held = [snap.full for ds in listing.datasets.values() for snap in ds.snapshots if snap.userrefs > 0]
        ours = self.carrying(host, held) if held else set()
        if check_mode:
            return [snap for snap in held if snap in (ours or ())]
        released: list[str] = []
        if ours is None:
            released = [snap for snap in held if host.run(["zfs", "release", self.tag, snap], check=False).returncode == 0]
        else:
            for chunk in by_length([snap for snap in held if snap in ours]):
                proc = host.run(["zfs", "release", self.tag, *chunk], check=False)
                left = set() if proc.returncode == 0 else self.carrying(host, chunk)
                released += [snap for snap in chunk if left is not None and snap not in left]
        for snap in released:
            self.log(f"released {self.tag} on {snap} ({host.label})")
        return released
