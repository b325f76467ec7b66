# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The ZFS command layer: name validation, capability probe, one-call recursive listings."""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from types import MappingProxyType

from ._transport import Host

# The characters OpenZFS allows in a dataset or snapshot name component (zfs_namecheck.c, valid_char): ASCII letters,
# digits, _ - . : and space. '%' is refused too (ZFS keeps it for its own temporary clones: libzfs refuses it in
# names it creates). Every command line is an argv, quoted once (shlex.join) for a remote shell, and listings are
# tab-separated, so a space travels like any other character. \Z, not $: $ also matches before a trailing newline.
NAME_CHARS = r"A-Za-z0-9_.:\- "  # for [...] classes; the - escaped so that a character added after it is no range
SNAPNAME_RE = re.compile(rf"^[{NAME_CHARS}]+\Z")
_BAD_CHAR_RE = re.compile(f"[^{NAME_CHARS}/]")
MAX_NAME = 255  # ZFS_MAX_DATASET_NAME_LEN - 1, for the whole name (dataset@snapshot included)
RESERVED_POOLS = ("mirror", "raidz", "draid")  # zfs_namecheck.c pool_namecheck
NAME_RULE = "letters, digits, spaces and _ . : - (the characters ZFS allows)"
NO_PROPS: Mapping[str, str] = MappingProxyType({})


class ZfsError(Exception):
    """A ZFS operation failed or a listing could not be read."""


class DatasetMissing(ZfsError):
    def __init__(self, message: str, names: Sequence[str] = ()):
        super().__init__(message)
        self.names = list(names)


def _shown(chars: Iterable[str]) -> str:
    return " ".join(repr(c) for c in sorted(set(chars)))


def dataset_name_problem(name: str) -> str | None:
    """Why ZFS would refuse ``name`` as a dataset name (OpenZFS's dataset_namecheck), or None when it is valid."""
    if len(name) > MAX_NAME:
        return f"is longer than {MAX_NAME} characters"
    if name.startswith("/"):
        return "starts with /: give the dataset's name (pool/path), not its mountpoint"
    if "@" in name:
        return "contains @, which starts a snapshot's name: give the dataset only (pool/path)"
    bad = _BAD_CHAR_RE.findall(name)
    if bad:
        return f"contains {_shown(bad)}: use {NAME_RULE} in /-separated components"
    parts = name.split("/")
    if name.endswith("/"):
        return "ends with /: remove it"
    if "" in parts:
        return "has an empty component (//): remove the extra /"
    if any(part in (".", "..") for part in parts):
        return "has a . or .. component, which ZFS refuses: name the dataset itself"
    if not parts[0][0].isalpha():
        return "starts with a pool name that does not start with a letter: ZFS pool names start with a letter"
    if parts[0] in RESERVED_POOLS:
        return f"starts with {parts[0]!r}, a name ZFS reserves (not a pool name)"
    return None


def validate_dataset(name: str, field_name: str) -> str:
    """Return ``name`` if ZFS accepts it as a dataset name, else raise ValueError naming the field, what is wrong and
    the fix."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{field_name}: a dataset name is required, like pool/data")
    problem = dataset_name_problem(name)
    if problem is not None:
        raise ValueError(f"{field_name} {name!r} is not a valid dataset name: it {problem}")
    return name


def snapshot_name_problem(name: str) -> str | None:
    """Why ZFS would refuse ``name`` as the part of a snapshot name after @, or None when it is valid."""
    if not name:
        return "is empty"
    if len(name) > MAX_NAME:
        return f"is longer than {MAX_NAME} characters"
    bad = [c for c in name if not SNAPNAME_RE.match(c)]
    if bad:
        return f"contains {_shown(bad)}: use {NAME_RULE}"
    if name in (".", ".."):
        return "is . or .., which ZFS refuses"
    return None


def validate_snapname(name: str, field_name: str) -> str:
    """Return ``name`` (the part after @) if ZFS accepts it, else raise ValueError naming the field and the fix."""
    problem = snapshot_name_problem(name) if isinstance(name, str) else "is not a string"
    if problem is not None:
        raise ValueError(f"{field_name} {name!r} is not a valid snapshot name (the part after @): it {problem}")
    return name


def is_within(child: str, parent: str) -> bool:
    """True when dataset ``child`` is ``parent`` or below it."""
    return child == parent or child.startswith(parent + "/")


@dataclass(frozen=True)
class Capabilities:
    """What a host's zfs command line can do. Probed once per host per run."""

    version: str | None  # "2.3.2" for OpenZFS >= 0.8; None for older command lines (zfs-fuse)
    list_parsable: bool  # zfs list -p
    resumable: bool  # zfs recv -s / zfs send -t
    bookmarks: bool
    encryption: bool
    raw_send: bool  # zfs send -w
    recv_props: bool  # zfs recv -o / -x
    send_dry_run: bool  # zfs send -n -v -P

    @property
    def family(self) -> str:
        return f"OpenZFS {self.version}" if self.version else "legacy zfs (no 'zfs version'; e.g. zfs-fuse)"

    @property
    def holds_list(self) -> bool:
        """``zfs holds -H`` names each hold's tag (zfs-fuse's ``zfs holds`` needs a Python module it does not ship)."""
        return self.version is not None

    def as_dict(self) -> dict[str, object]:
        return {
            "family": self.family,
            "version": self.version,
            "list_parsable": self.list_parsable,
            "resumable": self.resumable,
            "bookmarks": self.bookmarks,
            "encryption": self.encryption,
            "raw_send": self.raw_send,
            "recv_props": self.recv_props,
            "send_dry_run": self.send_dry_run,
        }


LEGACY = Capabilities(None, False, False, False, False, False, False, False)
_VERSION_RE = re.compile(r"zfs-(?:kmod-)?v?(\d+)\.(\d+)\.(\d+)")


def parse_version_output(text: str) -> Capabilities:
    """Capabilities from ``zfs version`` output (first line ``zfs-2.3.2-1``)."""
    m = _VERSION_RE.search(text)
    if not m:
        return LEGACY
    major, minor, patch = (int(x) for x in m.groups())
    modern = (major, minor) >= (0, 8)
    return Capabilities(
        version=f"{major}.{minor}.{patch}",
        list_parsable=True,
        resumable=True,
        bookmarks=True,
        encryption=modern,
        raw_send=modern,
        recv_props=True,
        send_dry_run=True,
    )


def probe(host: Host) -> Capabilities:
    """One zfs call: ``zfs version`` answers on OpenZFS >= 0.8; older CLIs reject the verb."""
    proc = host.run(["zfs", "version"], check=False)
    if proc.returncode == 0:
        return parse_version_output(proc.stdout)
    if host.sudo and proc.returncode == 127 and "sudo" in proc.stderr:
        raise ZfsError(f"{host.label}: sudo is not installed (the task has sudo for this host): install it there, or turn it off")
    if proc.returncode == 127 or "not found" in proc.stderr and "command" in proc.stderr:
        raise ZfsError(f"{host.label}: the zfs command is not installed or not in PATH")
    if "unrecognized command" in proc.stderr or "usage:" in proc.stderr:
        return LEGACY
    raise ZfsError(f"{host.label}: cannot probe zfs: {proc.stderr.strip() or 'exit ' + str(proc.returncode)}"
                   + host.refusal_suffix(["zfs", "version"], proc.stderr))


class Snapshot:
    """One snapshot of a listing. Slotted: a listing of a large fleet holds a million of these."""

    __slots__ = ("dataset", "name", "guid", "createtxg", "userrefs", "props")

    def __init__(
        self, dataset: str, name: str, guid: str, createtxg: int, userrefs: int = 0, props: Mapping[str, str] | None = None
    ) -> None:
        self.dataset = dataset
        self.name = name  # the part after @
        self.guid = guid
        self.createtxg = createtxg
        self.userrefs = userrefs
        self.props: Mapping[str, str] = NO_PROPS if props is None else props  # the listing's extra_props, when asked for

    @property
    def full(self) -> str:
        return f"{self.dataset}@{self.name}"

    def _key(self) -> tuple:
        return (self.dataset, self.name, self.guid, self.createtxg, self.userrefs, dict(self.props))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Snapshot) and self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]  # mutable, like the other listing records

    def __repr__(self) -> str:
        return f"Snapshot({self.dataset!r}, {self.name!r}, {self.guid!r}, {self.createtxg!r}, {self.userrefs!r}, {dict(self.props)!r})"


@dataclass
class Dataset:
    name: str
    type: str  # filesystem | volume
    guid: str = ""
    createtxg: int = 0
    props: dict[str, str] = field(default_factory=dict)
    snapshots: list[Snapshot] = field(default_factory=list)

    def by_guid(self) -> dict[str, Snapshot]:
        return {s.guid: s for s in self.snapshots}

    def by_name(self) -> dict[str, Snapshot]:
        return {s.name: s for s in self.snapshots}


@dataclass
class Listing:
    """Every dataset and snapshot below a root on one host, from one zfs call."""

    root: str
    datasets: dict[str, Dataset]  # parents before children

    def get(self, name: str) -> Dataset | None:
        return self.datasets.get(name)

    def snapshot_count(self) -> int:
        return sum(len(d.snapshots) for d in self.datasets.values())


# Properties the planner needs. `type`, `guid` and `createtxg` for every object; the rest
# describe datasets (zfs prints "-" where a property does not apply).
LIST_PROPS = ("type", "guid", "createtxg", "userrefs", "readonly")
MODERN_EXTRA = ("receive_resume_token",)
ENCRYPTION_PROPS = ("encryption", "keystatus", "encryptionroot")


def list_columns(caps: Capabilities, extra_props: Sequence[str] = ()) -> tuple[str, ...]:
    """The properties one listing reads on a host with ``caps`` (besides the name)."""
    cols = LIST_PROPS
    if caps.list_parsable:
        cols += MODERN_EXTRA
    if caps.encryption:
        cols += ENCRYPTION_PROPS
    return cols + tuple(p for p in extra_props if p not in cols)


def listing_argv(caps: Capabilities, roots: Sequence[str], extra_props: Sequence[str] = ()) -> list[str]:
    cols = list_columns(caps, extra_props)
    if caps.list_parsable:
        return ["zfs", "list", "-H", "-p", "-r", "-t", "filesystem,volume,snapshot", "-o", ",".join(("name",) + cols), *roots]
    # Old command lines print guid and createtxg abbreviated in `zfs list`; `zfs get -p` is exact.
    return ["zfs", "get", "-H", "-p", "-r", "-o", "name,property,value", ",".join(cols), *roots]


# Snapshot.props keeps only the caller's extra_props (the base columns have fields or describe datasets).
_SNAPSHOT_SKIP = frozenset(LIST_PROPS + MODERN_EXTRA + ENCRYPTION_PROPS)
_DATASET_SKIP = frozenset(("type", "guid", "createtxg", "userrefs"))


class _Builder:
    """Collects one listing's objects, streaming: a line is parsed and dropped, only the records stay.

    A recursive tree repeats snapshot names and createtxgs in every dataset (``zfs snapshot -r``):
    each distinct value is stored once, which halves a large listing's memory.
    """

    def __init__(self) -> None:
        self.datasets: dict[str, Dataset] = {}
        self.snapshots: dict[str, tuple[str, list[Snapshot]]] = {}  # dataset name -> (name, snapshots)
        self.names: dict[str, str] = {}
        self.txgs: dict[int, int] = {}

    def dataset(self, name: str, kind: str, guid: str, createtxg: str | None, props: dict[str, str]) -> None:
        self.datasets[name] = Dataset(name=name, type=kind, guid=guid, createtxg=_int(createtxg), props=props)

    def snapshot(self, full: str, guid: str, createtxg: str | None, userrefs: str | None, props: dict[str, str] | None) -> None:
        ds, _sep, short = full.partition("@")
        entry = self.snapshots.get(ds)
        if entry is None:
            entry = self.snapshots[ds] = (ds, [])
        txg = _int(createtxg)
        entry[1].append(
            Snapshot(entry[0], self.names.setdefault(short, short), guid, self.txgs.setdefault(txg, txg), _int(userrefs), props or None)
        )

    def add(self, name: str, props: dict[str, str]) -> None:
        """One object given as a property dict (the zfs get format)."""
        kind = props.get("type", "")
        if kind == "snapshot":
            extra = {k: v for k, v in props.items() if k not in _SNAPSHOT_SKIP}
            self.snapshot(name, props.get("guid", ""), props.get("createtxg"), props.get("userrefs"), extra)
        elif kind in ("filesystem", "volume"):
            self.dataset(name, kind, props.get("guid", ""), props.get("createtxg"), {k: v for k, v in props.items() if k not in _DATASET_SKIP})
        # bookmarks and other types are not part of this listing

    def listing(self, root: str) -> Listing:
        by_txg = attrgetter("createtxg")
        for ds_name, (_name, snaps) in self.snapshots.items():
            ds = self.datasets.get(ds_name)
            if ds is not None:
                snaps.sort(key=by_txg)  # stable: listing order breaks ties
                ds.snapshots = snaps
        ordered = dict(sorted(self.datasets.items(), key=lambda kv: (kv[0].count("/"), kv[0])))
        return Listing(root=root, datasets=ordered)


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def parse_get_lines(root: str, lines: Iterable[str]) -> Listing:
    """Parse ``zfs get -H -p -r -o name,property,value`` output (one line per property)."""
    b = _Builder()
    current: str | None = None
    props: dict[str, str] = {}
    for line in lines:
        line = line.rstrip("\n")
        if not line:
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise ZfsError(f"unexpected zfs get output line: {line!r}")
        name, prop, value = parts
        if name != current:
            if current is not None:
                b.add(current, props)
            current, props = name, {}
        props[prop] = value
    if current is not None:
        b.add(current, props)
    return b.listing(root)


def parse_list_lines(root: str, lines: Iterable[str], columns: Iterable[str]) -> Listing:
    """Parse ``zfs list -H -p -o name,...`` output (one line per object); ``columns`` start with name, type, guid,
    createtxg, userrefs (LIST_PROPS)."""
    cols = list(columns)
    if cols[:5] != ["name", "type", "guid", "createtxg", "userrefs"]:
        raise ValueError(f"listing columns must start with name,{','.join(LIST_PROPS[:4])}: {cols}")
    width = len(cols)
    snap_extra = [(c, i) for i, c in enumerate(cols) if i and c not in _SNAPSHOT_SKIP]
    ds_extra = [(c, i) for i, c in enumerate(cols) if i and c not in _DATASET_SKIP]
    b = _Builder()
    for line in lines:
        line = line.rstrip("\n")
        if not line:
            continue
        parts = line.split("\t")
        if len(parts) != width:
            raise ZfsError(f"unexpected zfs list output line: {line!r}")
        kind = parts[1]
        if kind == "snapshot":
            b.snapshot(parts[0], parts[2], parts[3], parts[4], {c: parts[i] for c, i in snap_extra} if snap_extra else None)
        elif kind in ("filesystem", "volume"):
            b.dataset(parts[0], kind, parts[2], parts[3], {c: parts[i] for c, i in ds_extra})
    return b.listing(root)


def parse_get_output(root: str, text: str) -> Listing:
    return parse_get_lines(root, text.splitlines())


def parse_list_output(root: str, text: str, columns: Iterable[str]) -> Listing:
    return parse_list_lines(root, text.splitlines(), columns)


def _missing(stderr: str) -> bool:
    return "does not exist" in stderr or "dataset does not exist" in stderr


def list_tree(host: Host, caps: Capabilities, roots: str | Sequence[str], extra_props: Sequence[str] = ()) -> Listing:
    """One recursive listing of every root (datasets and snapshots), in a single zfs call, parsed as it streams.

    When a root is missing, DatasetMissing names it.
    """
    roots = [roots] if isinstance(roots, str) else list(roots)
    argv = listing_argv(caps, roots, extra_props)
    if caps.list_parsable:
        columns = ("name",) + list_columns(caps, extra_props)
        rc, listing, stderr = host.stream(argv, lambda lines: parse_list_lines(roots[0], lines, columns))
    else:
        rc, listing, stderr = host.stream(argv, lambda lines: parse_get_lines(roots[0], lines))
    if rc != 0 or listing is None:
        if _missing(stderr):
            missing = [r for r in roots if dataset_type(host, r) is None] or roots
            raise DatasetMissing(f"{host.label}: dataset {', '.join(missing)} does not exist", missing)
        raise ZfsError(f"{host.label}: listing {' '.join(roots)} failed: {stderr.strip()}" + host.refusal_suffix(argv, stderr))
    return listing


def property_lines(out: str) -> dict[str, dict[str, str]]:
    """{name: {property: value}} from ``zfs get -H -o name,property,value`` output (lines of any other shape skipped)."""
    got: dict[str, dict[str, str]] = {}
    for line in out.splitlines():
        parts = line.split("\t", 2)
        if len(parts) == 3:
            got.setdefault(parts[0], {})[parts[1]] = parts[2]
    return got


def zfs_values(host: Host, prop: str, names: list[str]) -> dict[str, str]:
    """{name: PROP's parseable value} of NAMES right now (one zfs get); a name that does not exist is left out."""
    out = host.run(["zfs", "get", "-H", "-p", "-o", "name,value", prop, *names], check=False).stdout
    return dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)


def dataset_type(host: Host, name: str) -> str | None:
    """``filesystem``/``volume`` or None when the dataset does not exist (one zfs call)."""
    proc = host.run(["zfs", "get", "-H", "-p", "-o", "value", "type", name], check=False)
    if proc.returncode != 0:
        if _missing(proc.stderr):
            return None
        raise ZfsError(f"{host.label}: cannot read {name}: {proc.stderr.strip()}")
    return proc.stdout.strip()


# Names per zfs call: well below the 128 KiB one argument may have (ssh hands the whole command line to the remote
# shell as a single argument).
ARGV_BYTES = 60_000


def by_length(names: Sequence[str], limit: int = ARGV_BYTES) -> list[list[str]]:
    """NAMES in order, cut into runs whose names (one space each) take at most LIMIT bytes; a longer name alone."""
    chunks: list[list[str]] = []
    size = limit
    for name in names:
        if size + len(name) + 1 > limit:
            chunks.append([])
            size = 0
        chunks[-1].append(name)
        size += len(name) + 1
    return chunks
