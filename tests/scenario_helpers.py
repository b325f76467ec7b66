# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Small readers of real state shared by the scenario files (tests/scenarios): they only talk to a `Backend`
(tests/backends.py), so they read the pools of whichever ZFS the scenario runs on."""
from __future__ import annotations

import shlex
from typing import Any

import pytest
from faulttable import DataLost, record_kept, record_replica

from backends import Backend, EngineRun

SCHEMA = "auto-%Y-%m-%d_%H-%M"


def params(src: str, dst: str, **kw: Any) -> dict[str, Any]:
    """A task replicating SRC to DST on the backend's host (transport local unless KW says otherwise), no retries."""
    return {"name": "scenario", "source_datasets": [src], "target_dataset": dst, "transport": "local", "naming_schema": [SCHEMA],
            "retries": 0, **kw}


def over_ssh(backend: Backend, src: str, dst: str, **kw: Any) -> dict[str, Any]:
    """A task replicating over the backend host's own sshd on loopback (push unless KW says direction pull)."""
    ssh = {**backend.ssh(), **kw.pop("ssh", {})}
    return params(src, dst, **{"transport": "ssh", "ssh": ssh, **kw})


def message(run: EngineRun) -> str:
    """What the module would report as msg: the refusal, or the run's errors joined."""
    if run.error is not None:
        return run.error
    return "; ".join((run.result or {}).get("errors") or [])


def snaps(backend: Backend, dataset: str) -> list[str]:
    """Snapshot names (after the @) of DATASET itself, oldest first."""
    out = backend.zfs("list", "-H", "-o", "name", "-s", "createtxg", "-r", "-t", "snapshot", dataset)
    return [n.split("@", 1)[1] for n in out.splitlines() if n.split("@", 1)[0] == dataset]  # names may hold spaces


def guids(backend: Backend, dataset: str) -> dict[str, str]:
    """{snapshot: guid} of DATASET itself (no children)."""
    return {k[1:]: v for k, v in backend.snapshots_with_guids(dataset).items() if k.startswith("@")}


def prop_source(backend: Backend, dataset: str, name: str) -> tuple[str, str]:
    value, source = backend.zfs("get", "-H", "-o", "value,source", name, dataset).rstrip("\n").split("\t")
    return value, source


def exists(backend: Backend, dataset: str) -> bool:
    return backend.sh(f"zfs list -H -o name {shlex.quote(dataset)} >/dev/null 2>&1 && echo yes || echo no").strip() == "yes"


def held(backend: Backend, dataset: str) -> dict[str, int]:
    """{snapshot (full name): userrefs} of the held snapshots below DATASET."""
    out = backend.zfs("get", "-H", "-p", "-r", "-o", "name,value", "userrefs", dataset)
    return {n: int(v) for n, v in (line.split("\t") for line in out.splitlines()) if "@" in n and v.isdigit() and int(v) > 0}


def state(backend: Backend, *roots: str) -> dict[str, list[str]]:
    """Datasets and snapshots (with guids) below ROOTS: what "nothing changed" compares."""
    return {root: sorted(backend.zfs("get", "-H", "-p", "-r", "-o", "name,value", "guid", root).splitlines()) for root in roots}


def parent(dataset: str) -> str:
    return dataset.rsplit("/", 1)[0]


def sends(run: EngineRun, source: str) -> list[tuple[str, str | None, str]]:
    """(mode, base, snapshot) of each stream planned for SOURCE."""
    assert run.result is not None, run
    dplan = next(d for d in run.result["plan"] if d["source"] == source)
    return [(s["mode"], s["base"], s["snapshot"]) for s in dplan["sends"]]


def missing_tools(backend: Backend, tools: list[str]) -> list[str]:
    """The TOOLS not installed on the backend's host."""
    script = "; ".join(f"command -v {shlex.quote(t)} >/dev/null || echo {shlex.quote(t)}" for t in tools)
    return backend.sh(script + "; true").split()


def require_tools(backend: Backend, tools: list[str]) -> None:
    """Fail (never skip) when the backend's host lacks a tool the scenario runs: the product supports it there."""
    missing = missing_tools(backend, tools)
    if missing:
        pytest.fail(f"{backend.name}: {', '.join(missing)} not installed on the backend's host: install it there (the OpenZFS guest "
                    f"image) or give the backend a capability for it in tests/backends.py", pytrace=False)


def shims(backend: Backend, tools: list[str]) -> tuple[str, str, str]:
    """Wrappers on the backend's host that log each call ('tool args...') to a file, then exec the real tool (which must
    be installed there). Returns (directory, log file, PATH with the directory first), for backend.engine(env=...)."""
    bindir = backend.sh("mktemp -d /tmp/zr-shims.XXXXXX").strip()
    log = f"{bindir}/calls.log"
    script = [f": > {shlex.quote(log)}"]
    for tool in tools:
        real = backend.sh(f"command -v {shlex.quote(tool)}").strip()
        body = f'#!/bin/sh\necho "{tool} $*" >> {log}\nexec {real} "$@"\n'
        script.append(f"printf %s {shlex.quote(body)} > {bindir}/{tool} && chmod 755 {bindir}/{tool}")
    backend.sh("\n".join(script))
    path = backend.sh('printf %s "$PATH"')
    return bindir, log, f"{bindir}:{path}"


def child_checksums(backend: Backend, child: str) -> dict[str, str]:
    """backend.checksums of CHILD, its parent mounted around it: mounting the child alone would leave its mountpoint
    directory in the unmounted parent's place, which zfs-fuse then refuses to mount over ("directory is not empty")."""
    with backend.mounted(parent(child)):
        return backend.checksums(child)


# -- fault cases: snapshots with data, the state before a fault, the replica after (tests/scenarios/test_faults.py) ------
def snap(backend: Backend, dataset: str, name: str, data: str | None = None, size: int = 100_000) -> None:
    """DATASET@NAME, after writing a file of SIZE random bytes named DATA (when given)."""
    if data:
        backend.write(dataset, data, size=size)
    backend.zfs("snapshot", f"{dataset}@{name}")


def tree(backend: Backend, dataset: str) -> dict[str, str]:
    """{'@snap' or '/child@snap': guid} of DATASET and its descendants; {} when it does not exist. The state a case
    records before its fault and compares after it (expect_kept)."""
    return backend.snapshots_with_guids(dataset) if exists(backend, dataset) else {}


def expect_kept(backend: Backend, before: dict[str, str], dataset: str, side: str) -> None:
    """Every snapshot of BEFORE (tree() taken before the fault) is still there with the same guid, on DATASET and on
    its children, else DataLost."""
    if any("@" not in k for k in before):
        raise TypeError("expect_kept wants tree(backend, dataset) ({'@snap' or '/child@snap': guid}) as BEFORE")
    now = tree(backend, dataset)
    lost = {n: g for n, g in before.items() if now.get(n) != g}
    record_kept(dataset)
    if lost:
        raise DataLost(f"{backend.name}: {side} {dataset} lost or changed snapshots {sorted(lost)}; has {sorted(now)}")


def expect_replica(backend: Backend, src: str, dst: str, names: list[str] | None = None) -> None:
    """The target tree has every (or NAMES of the) source snapshot with the same guid, on the dataset and on every
    child, and the newest of them holds the same files on both sides (compared snapshot to snapshot, also when the
    source has newer snapshots than NAMES), else DataLost."""
    src_tree, dst_tree = tree(backend, src), tree(backend, dst)
    want = {k: g for k, g in src_tree.items() if names is None or k.split("@", 1)[1] in names}
    if names is not None and not want:
        raise AssertionError(f"expect_replica: none of {names} is a snapshot of {src}")
    bad = sorted(k for k, g in want.items() if dst_tree.get(k) != g)
    if bad:
        raise DataLost(f"{backend.name}: target {dst} lacks or differs in {bad}: source {src_tree}, target {dst_tree}")
    compared = 0
    for child in backend.datasets_under(src):
        rel = child[len(src):]
        mine = [n for n in snaps(backend, child) if f"{rel}@{n}" in want]
        if not mine:
            continue
        s, t = backend.snapshot_checksums(child, mine[-1]), backend.snapshot_checksums(dst + rel, mine[-1])
        compared += 1
        if s != t:
            diff = sorted(k for k in set(s) | set(t) if s.get(k) != t.get(k))
            raise DataLost(f"{backend.name}: files of @{mine[-1]} differ between {child} and {dst + rel}: {diff[:10]}")
    if want and not compared:
        raise AssertionError(f"expect_replica compared no files between {src} and {dst}")
    record_replica(dst)


def stream_size(backend: Backend, dataset: str, snapshot: str, base: str | None = None) -> int:
    """Bytes of the stream the engine sends for DATASET@SNAPSHOT (incremental from BASE), counted by sending it to
    wc -c with the engine's flags on this backend (zfs send -nP only estimates, and high)."""
    flags = ["-p", "-L", "-e", "-c"] if "openzfs" in backend.caps else []
    argv = ["zfs", "send", *flags, *(["-I", f"{dataset}@{base}"] if base else []), f"{dataset}@{snapshot}"]
    return int(backend.sh(f"{shlex.join(argv)} | wc -c").strip())
