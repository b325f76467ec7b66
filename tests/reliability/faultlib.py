# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared parts of the reliability tier: real state on both sides, the engine in a subprocess, a dropping proxy."""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# DataLost, fault_injected and the evidence the fault table counts: tests/faulttable.py (shared with tests/scenarios).
from faulttable import DataLost, fault_injected, record_kept, record_replica, sandbox_zfs

from helpers import (
    CommandError,
    dataset_exists,
    datasets_under,
    destroy_retrying,
    held,
    mounted_checksums,
    mountpoint,
    snapshots_with_guids,
    tree_checksums,
    zfs,
)
from sandbox import ZFS

SCHEMA = "auto-%Y-%m-%d_%H-%M"
DRIVER = Path(__file__).resolve().parents[1] / "scenario_driver.py"


# ------------------------------------------------------------------------------------------------ real state
def write_files(mountpoint: str, seed: str, count: int = 2, size: int = 100_000) -> None:
    root = Path(mountpoint)
    (root / "dir").mkdir(exist_ok=True)
    for i in range(count):
        (root / "dir" / f"{seed}-{i}.bin").write_bytes(secrets.token_bytes(size))
    (root / f"{seed}.txt").write_text(f"hello {seed}\n")


def guids(dataset: str) -> dict[str, str]:
    """{snapshot: guid} of DATASET itself; {} when it does not exist."""
    if not dataset_exists(dataset):
        return {}
    return {k[1:]: v for k, v in snapshots_with_guids(dataset).items() if k.startswith("@")}


def snaps(dataset: str) -> list[str]:
    out = zfs("list", "-H", "-o", "name", "-s", "createtxg", "-r", "-d", "1", "-t", "snapshot", dataset)
    return [n.split("@", 1)[1] for n in out.split() if n.split("@", 1)[0] == dataset]


def snap(dataset: str, name: str, data: str | None = None, size: int = 100_000, count: int = 2) -> None:
    if data:
        write_files(mountpoint(dataset), data, count=count, size=size)
    zfs("snapshot", f"{dataset}@{name}")


def our_holds(dataset: str, tag: str) -> dict[str, int]:
    """{snapshot: 1} of the snapshots of DATASET that carry hold TAG (zfs-fuse has no `zfs holds`: probe by a
    release and put the hold back). Other holds are left out: a SIGKILLed `zfs send` on zfs-fuse leaks its
    temporary `.send-PID-N` holds (the daemon does not release them when the client dies; OpenZFS does)."""
    out = {}
    for full in held(dataset):
        if full.split("@")[0] != dataset:
            continue
        try:
            zfs("release", tag, full)
        except CommandError:
            continue
        zfs("hold", tag, full)
        out[full] = 1
    return out


def destroy_r(dataset: str, tags: list[str], timeout: float = 10) -> None:
    """Teardown: release our holds, destroy -r (retried while busy). Snapshots pinned by holds zfs-fuse leaked
    (see our_holds) cannot go: they are left for the pool's destruction at the end of the session."""
    destroy_retrying(dataset, timeout, tags)


def tree(dataset: str) -> dict[str, str]:
    """{'@snap' or '/child@snap': guid} of DATASET and its descendants; {} when it does not exist. The state a case
    records before its fault and compares after it (expect_kept)."""
    return snapshots_with_guids(dataset) if dataset_exists(dataset) else {}


def expect_kept(before: dict[str, str], dataset: str, side: str) -> None:
    """Every snapshot of BEFORE (tree(dataset) taken before the fault) is still there with the same guid, on DATASET
    and on its children, else DataLost."""
    if any("@" not in k for k in before):
        raise TypeError("expect_kept wants tree(dataset) ({'@snap' or '/child@snap': guid}) as BEFORE")
    now = tree(dataset)
    lost = {n: g for n, g in before.items() if now.get(n) != g}
    record_kept(dataset)
    if lost:
        raise DataLost(f"{side} {dataset} lost or changed snapshots {sorted(lost)}; has {sorted(now)}")


def files(dataset: str) -> dict[str, str]:
    """{path: sha256} of DATASET's own files as they are now (mounted for the read if it is not)."""
    return mounted_checksums(dataset)


def expect_files_kept(before: dict[str, str], dataset: str) -> None:
    """DATASET's files are what files(dataset) read before the fault, else DataLost."""
    now = files(dataset)
    record_kept(dataset)
    if now != before:
        diff = sorted(k for k in set(now) | set(before) if now.get(k) != before.get(k))
        raise DataLost(f"files of {dataset} changed: {diff[:10]}")


def snapshot_checksums(dataset: str, name: str) -> dict[str, str]:
    """{path: sha256} of DATASET@NAME's own files, read from a temporary clone (zfs-fuse has no .zfs directory)."""
    clone = f"{dataset.split('/')[0]}/zr-check-{secrets.token_hex(4)}"
    where = tempfile.mkdtemp(prefix="zr-check-")
    zfs("clone", "-o", f"mountpoint={where}", "-o", "readonly=on", f"{dataset}@{name}", clone)
    try:
        with contextlib.suppress(CommandError):
            zfs("mount", clone)  # mounted already where clones mount at once
        return tree_checksums(where)
    finally:
        for _attempt in range(20):
            try:
                zfs("destroy", "-f", clone)
                break
            except CommandError:
                time.sleep(0.2)
        with contextlib.suppress(OSError):
            os.rmdir(where)


def expect_replica(src: str, dst: str, names: list[str] | None = None) -> None:
    """The target tree has every (or NAMES of the) source snapshot with the same guid, on the dataset and on every
    child, and the newest of them holds the same files on both sides (compared snapshot to snapshot, also when
    the source has newer snapshots than NAMES), else DataLost."""
    src_tree, dst_tree = tree(src), tree(dst)
    want = {k: g for k, g in src_tree.items() if names is None or k.split("@", 1)[1] in names}
    if names is not None and not want:
        raise AssertionError(f"expect_replica: none of {names} is a snapshot of {src}")
    bad = sorted(k for k, g in want.items() if dst_tree.get(k) != g)
    if bad:
        raise DataLost(f"target {dst} lacks or differs in {bad}: source {src_tree}, target {dst_tree}")
    compared = 0
    for child in datasets_under(src):
        rel = child[len(src):]
        mine = [n for n in snaps(child) if f"{rel}@{n}" in want]
        if not mine:
            continue
        newest = mine[-1]
        s, t = snapshot_checksums(child, newest), snapshot_checksums(dst + rel, newest)
        compared += 1
        if s != t:
            diff = sorted(k for k in set(s) | set(t) if s.get(k) != t.get(k))
            raise DataLost(f"files of @{newest} differ between {child} and {dst + rel}: {diff[:10]}")
    if want and not compared:
        raise AssertionError(f"expect_replica compared no files between {src} and {dst}")
    record_replica(dst)


# ------------------------------------------------------------------------------------------------ the engine in a subprocess
def import_root() -> str:
    """The sys.path entry under which ansible_collections.zfs.replication is this checkout (set up by tests/conftest.py)."""
    for entry in sys.path:
        if entry and Path(entry, "ansible_collections", "zfs", "replication", "plugins").is_dir():
            return entry
    raise RuntimeError("ansible_collections.zfs.replication is not importable: run under tests/conftest.py")


def engine_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = import_root() + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra or {})
    return env


@dataclass(repr=False)
class EngineRun:
    rc: int | None
    lines: list[str] = field(default_factory=list)
    result: dict[str, Any] | None = None
    error: str | None = None
    killed: bool = False
    pid: int = 0

    @property
    def ok(self) -> bool:
        return self.rc == 0 and self.result is not None and not self.result["errors"]

    @property
    def message(self) -> str:
        if self.error:
            return self.error
        return "; ".join(self.result["errors"]) if self.result else ""

    def __repr__(self) -> str:
        return f"EngineRun rc={self.rc} killed={self.killed} message={self.message}\n" + "\n".join(self.lines[-60:])


def start_engine(params: dict[str, Any], env: dict[str, str] | None = None, pause_after: str | None = None) -> subprocess.Popen:
    """`run_replication(params)` in its own python process and process group (a timer's unit, in effect); PAUSE_AFTER:
    the start of a log line after which the run waits to be killed (tests/scenario_driver.py)."""
    proc = subprocess.Popen([sys.executable, str(DRIVER)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.PIPE, text=True, env=engine_env(env), start_new_session=True)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps({"params": params, "pause_after": pause_after}))  # on stdin, never argv: the params may hold a key
    proc.stdin.close()
    return proc


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the engine and everything it started (what systemd does to a unit's cgroup)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def run_engine(params: dict[str, Any], *, kill_after_lines: int | None = None, kill_when: Any = None, cut: StreamCut | None = None,
               env: dict[str, str] | None = None, timeout: float = 120, pause_after: str | None = None) -> EngineRun:
    """Run the engine once; optionally SIGKILL its process group after K log lines or when KILL_WHEN(line) is true,
    or let CUT kill a part of the stream at a byte offset. PAUSE_AFTER holds the run after the log line that starts
    with it, for a kill meant to land before the next step where that step is too short to race."""
    proc = start_engine(params, env, pause_after)
    run = EngineRun(rc=None, pid=proc.pid)
    watcher = cut.start(proc) if cut else None
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.rstrip("\n")
        if line.startswith("ZR-RESULT "):
            run.result = json.loads(line[len("ZR-RESULT "):])
            continue
        if line.startswith("ZR-ERROR "):
            run.error = json.loads(line[len("ZR-ERROR "):])
            continue
        run.lines.append(line)
        if not run.killed and ((kill_after_lines is not None and len(run.lines) >= kill_after_lines)
                               or (kill_when is not None and kill_when(line))):
            run.killed = True
            kill_group(proc)
        if time.monotonic() > deadline:
            kill_group(proc)
            raise AssertionError(f"engine run exceeded {timeout}s\n{run}")
    run.rc = proc.wait(timeout=30)
    if watcher:
        watcher.join(timeout=30)
        run.killed = run.killed or (cut is not None and cut.victim == "engine" and cut.killed is not None)
    return run


# ------------------------------------------------------------------------------------------------ cutting a stream at a byte offset
def stream_size(dataset: str, snapshot: str, base: str | None = None) -> int:
    """Bytes of the stream the engine sends here (`zfs send -p [-I BASE] DATASET@SNAPSHOT`, with -L -e -c on OpenZFS,
    where blocks travel as the pool compressed them), counted by reading it."""
    flags = ["-p", "-L", "-e", "-c"] if sandbox_zfs() == "openzfs" else ["-p"]
    argv = [ZFS, "send", *flags, *(["-I", f"{dataset}@{base}"] if base else []), f"{dataset}@{snapshot}"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    total = sum(len(chunk) for chunk in iter(lambda: proc.stdout.read(1 << 20), b""))
    _out, err = proc.communicate(timeout=120)
    if proc.returncode != 0:
        raise CommandError(f"{' '.join(argv)} exited {proc.returncode}: {err.decode(errors='replace')}")
    return total


def _state(pid: int) -> str:
    """The process state letter of PID ('Z' zombie), '' when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _written(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _master_of(client_cmd: str) -> int | None:
    """The ssh master process (ControlMaster, detached from the engine) that carries the connection of CLIENT_CMD."""
    opts = client_cmd.split()
    where = next((o.split("=", 1)[1].rsplit("/", 1)[0] for o in opts if o.startswith("ControlPath=")), None)
    if where is None:
        return None
    for pid, cmd in descendants(1):
        if cmd.startswith(f"ssh: {where}/") and "[mux]" in cmd:
            return pid
    return None


@dataclass
class StreamCut:
    """SIGKILL one part of a running stream when the sender's `pv` has passed FRACTION of TOTAL bytes (the real size
    of the stream, see stream_size); FRACTION 1.0 means when all of it has passed but the receive has not finished.

    VICTIM: "ssh" the ssh client that carries `zfs recv` (a dropped session, seen from the sender), "master" the
    shared ssh master connection that carries the bytes (the connection dropped), "recv" the receiving `zfs recv`
    (sshd hanging up on it), "engine" the engine's whole process group (a unit killed).
    Afterwards `at_bytes` says where the cut fell and `problem` why it did not happen."""

    total: int
    fraction: float
    victim: str
    target: str
    at_bytes: int | None = None
    killed: int | None = None
    problem: str = ""

    def start(self, engine: subprocess.Popen) -> threading.Thread:
        th = threading.Thread(target=self._watch, args=(engine,), daemon=True)
        th.start()
        return th

    def _find(self, engine: subprocess.Popen) -> tuple[int | None, int | None]:
        pv = victim = None
        # pv and the ssh client are the engine's; the receiving zfs recv is under the sandbox sshd (ours too).
        for pid, cmd in descendants(os.getpid() if self.victim == "recv" else engine.pid):
            if cmd.startswith("pv "):
                pv = pid
            elif (self.victim == "ssh" and cmd.startswith("ssh ") and "zfs recv" in cmd and self.target in cmd) or (
                    self.victim == "recv" and cmd.startswith("zfs recv") and cmd.rstrip().endswith(self.target)):
                victim = pid
            elif self.victim == "master" and cmd.startswith("ssh ") and "zfs recv" in cmd and self.target in cmd:
                victim = _master_of(cmd)
        if self.victim == "engine":
            victim = engine.pid
        return pv, victim

    def _watch(self, engine: subprocess.Popen) -> None:
        pv = victim = None
        while pv is None or victim is None:
            if engine.poll() is not None:
                self.problem = f"the run ended before the stream's pv and its {self.victim} were seen"
                return
            pv, victim = self._find(engine)
            time.sleep(0.005)
        want = self.fraction * self.total
        seen = 0
        while True:
            if engine.poll() is not None:
                self.problem = f"the run ended after {seen} of {self.total} bytes, before the cut at {want:.0f}"
                return
            count = _written(pv)
            ended = _state(pv) in ("", "Z")
            if count is not None:
                seen = count
            if self.fraction >= 1 and ended:
                seen = max(seen, self.total)  # pv exits at the end of its input: all of the stream has passed it
            if seen >= want:
                break
            if ended:
                self.problem = f"the stream's pv exited after {seen} of {self.total} bytes, before the cut at {want:.0f}"
                return
            time.sleep(0.002)
        if _state(victim) in ("", "Z"):
            self.problem = f"the {self.victim} process had already exited when {seen} bytes had passed"
            return
        self.at_bytes = seen
        if self.victim == "engine":
            kill_group(engine)
        else:
            os.kill(victim, signal.SIGKILL)
        self.killed = victim

    def describe(self) -> str:
        where = "at the end of" if self.fraction >= 1 else f"at {self.fraction:.0%} of"
        return f"{self.victim} SIGKILLed {where} a {self.total} byte stream (cut after {self.at_bytes} bytes)"

    def happened(self, slack: float = 0.15) -> bool:
        """The victim was killed, at the intended offset (no earlier; later by at most SLACK of the stream)."""
        if self.killed is None or self.at_bytes is None:
            return False
        if self.fraction >= 1:
            return self.at_bytes >= self.total * 0.99
        return self.fraction * self.total <= self.at_bytes <= min(self.total - 1, (self.fraction + slack) * self.total)

    def check(self, slack: float = 0.15) -> None:
        fault_injected(self.describe(), self.happened(slack), self.problem)


def settle(dataset: str, timeout: float = 20) -> None:
    """Wait until zfs answers about DATASET's pool (after a kill, zfs-fuse may still be tearing a receive down)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            zfs("list", "-H", "-o", "name", dataset.split("/")[0])
            return
        except CommandError:
            time.sleep(0.2)


# ------------------------------------------------------------------------------------------------ a proxy that cuts connections
class DroppingProxy:
    """TCP proxy on 127.0.0.1 in front of an sshd. Passes everything until `arm(extra)`; from then on it resets each
    connection (open or new) once EXTRA more bytes from the client have passed on it, and records in `cuts` how many
    bytes past the arming point each cut fell (so a test can tell the cut was where it meant it).

    Or, given DROP_AFTER: resets connection number VICTIM (1-based; 0 = every one) opened while `armed` once
    DROP_AFTER client bytes have passed on it; `dropped` counts the resets."""

    def __init__(self, upstream_port: int, drop_after: int | None = None, victim: int = 0):
        self.upstream_port = upstream_port
        self.drop_after = drop_after
        self.victim = victim
        self.armed = drop_after is not None
        self.dropped = 0
        self.lock = threading.Lock()
        self.sent: dict[int, int] = {}  # connection number -> client bytes so far
        self.limit: dict[int, int] = {}  # connection number -> cut once this many client bytes passed
        self.extra: int | None = None
        self.cuts: list[int] = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.stopping = False
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, extra: int) -> None:
        with self.lock:
            self.extra = extra
            self.limit = {c: n + extra for c, n in self.sent.items()}

    def disarm(self) -> None:
        with self.lock:
            self.extra = None
            self.limit = {}

    def _accept(self) -> None:
        while not self.stopping:
            try:
                client, _addr = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            number = self.connections
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            self.sockets += [client, upstream]
            with self.lock:
                self.sent[number] = 0
                if self.extra is not None:
                    self.limit[number] = self.extra
                elif self.drop_after is not None and self.armed and self.victim in (0, number):
                    self.limit[number] = self.drop_after
            threading.Thread(target=self._pump, args=(client, upstream, number), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket, number: int | None) -> None:
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                if number is not None:
                    with self.lock:
                        self.sent[number] += len(data)
                        seen, limit = self.sent[number], self.limit.get(number)
                    if limit is not None and seen > limit:
                        with self.lock:
                            self.dropped += 1
                            self.cuts.append(seen - (limit - (self.extra or self.drop_after or 0)))
                        for s in (a, b):
                            with contextlib.suppress(OSError):
                                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                                s.shutdown(socket.SHUT_RDWR)
                                s.close()
                        return
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def known_hosts(self, sandbox, path: Path) -> Path:
        keytype, key = Path(f"{sandbox.sshd.host_key}.pub").read_text().split()[:2]
        path.write_text(f"[127.0.0.1]:{self.port} {keytype} {key}\n")
        return path

    def close(self) -> None:
        self.stopping = True
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.close()


def descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, cmdline) of every process below PID (one read of each /proc/*/stat; command lines of the subtree only)."""
    kids: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int(stat.read_text().rsplit(") ", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            try:
                cmd = Path(f"/proc/{k}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                cmd = ""
            out.append((k, cmd))
            todo.append(k)
    return out
