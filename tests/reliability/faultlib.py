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
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import CommandError, mounted_checksums, mountpoint, own_checksums, snapshots_with_guids, zfs

SCHEMA = "auto-%Y-%m-%d_%H-%M"
DRIVER = Path(__file__).resolve().parent / "engine_driver.py"


class DataLost(AssertionError):
    """A snapshot vanished from a side, or a replica differs from its source after recovery."""


# ------------------------------------------------------------------------------------------------ real state
def write_files(mountpoint: str, seed: str, count: int = 2, size: int = 100_000) -> None:
    root = Path(mountpoint)
    (root / "dir").mkdir(exist_ok=True)
    for i in range(count):
        (root / "dir" / f"{seed}-{i}.bin").write_bytes(secrets.token_bytes(size))
    (root / f"{seed}.txt").write_text(f"hello {seed}\n")


def exists(dataset: str) -> bool:
    try:
        zfs("get", "-H", "-o", "value", "type", dataset)
    except CommandError:
        return False
    return True


def guids(dataset: str) -> dict[str, str]:
    """{snapshot: guid} of DATASET itself; {} when it does not exist."""
    if not exists(dataset):
        return {}
    return {k[1:]: v for k, v in snapshots_with_guids(dataset).items() if k.startswith("@")}


def snaps(dataset: str) -> list[str]:
    out = zfs("list", "-H", "-o", "name", "-s", "createtxg", "-r", "-d", "1", "-t", "snapshot", dataset)
    return [n.split("@", 1)[1] for n in out.split() if n.split("@", 1)[0] == dataset]


def snap(dataset: str, name: str, data: str | None = None, size: int = 100_000, count: int = 2) -> None:
    if data:
        write_files(mountpoint(dataset), data, count=count, size=size)
    zfs("snapshot", f"{dataset}@{name}")


def held(dataset: str) -> dict[str, int]:
    out = zfs("get", "-H", "-p", "-r", "-o", "name,value", "userrefs", dataset)
    return {n: int(v) for n, v in (line.split("\t") for line in out.splitlines()) if "@" in n and v.isdigit() and int(v) > 0}


def release_all(dataset: str, tags: list[str]) -> None:
    for full in held(dataset):
        for tag in tags:
            with contextlib.suppress(CommandError):
                zfs("release", tag, full)


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
    if not exists(dataset):
        return
    release_all(dataset, tags)
    deadline = time.monotonic() + timeout
    while True:
        try:
            zfs("destroy", "-r", dataset)
            return
        except CommandError as exc:
            if time.monotonic() > deadline:
                warnings.warn(f"left {dataset} behind: {exc}", RuntimeWarning, stacklevel=2)
                return
            time.sleep(0.5)


def expect_kept(before: dict[str, str], dataset: str, side: str) -> None:
    """Every snapshot of BEFORE ({name: guid}) is still on DATASET with the same guid, else DataLost."""
    now = guids(dataset)
    lost = {n: g for n, g in before.items() if now.get(n) != g}
    if lost:
        raise DataLost(f"{side} {dataset} lost or changed snapshots {sorted(lost)}; has {sorted(now)}")


def expect_replica(src: str, dst: str, names: list[str] | None = None) -> None:
    """The target has every (or NAMES of the) source snapshot with the same guid, and the same files."""
    sg, tg = guids(src), guids(dst)
    want = {n: g for n, g in sg.items() if names is None or n in names}
    bad = {n for n, g in want.items() if tg.get(n) != g}
    if bad:
        raise DataLost(f"target {dst} lacks or differs in {sorted(bad)}: source {sg}, target {tg}")
    if names is None or (names and names[-1] == snaps(src)[-1]):
        s, t = own_checksums(src), mounted_checksums(dst)
        if s != t:
            diff = sorted(k for k in set(s) | set(t) if s.get(k) != t.get(k))
            raise DataLost(f"files differ between {src} and {dst}: {diff[:10]}")


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


def start_engine(params: dict[str, Any], env: dict[str, str] | None = None) -> subprocess.Popen:
    """`run_replication(params)` in its own python process and process group (a timer's unit, in effect)."""
    proc = subprocess.Popen([sys.executable, str(DRIVER)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.PIPE, text=True, env=engine_env(env), start_new_session=True)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(params))  # on stdin, never argv: the params may hold a key
    proc.stdin.close()
    return proc


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the engine and everything it started (what systemd does to a unit's cgroup)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def run_engine(params: dict[str, Any], *, kill_after_lines: int | None = None, kill_after_ms: int | None = None,
               kill_when: Any = None, env: dict[str, str] | None = None, timeout: float = 120) -> EngineRun:
    """Run the engine once; optionally SIGKILL its process group after K log lines, T ms, or when KILL_WHEN(line) is true."""
    proc = start_engine(params, env)
    run = EngineRun(rc=None, pid=proc.pid)
    timer = None
    if kill_after_ms is not None:
        def _kill() -> None:
            run.killed = True
            kill_group(proc)
        timer = threading.Timer(kill_after_ms / 1000, _kill)
        timer.start()
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
    if timer:
        timer.cancel()
    return run


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
    """TCP proxy on 127.0.0.1 in front of an sshd: resets connection number N (1-based; 0 = every one while
    `armed`) after DROP_AFTER bytes from the client. Counts bytes so a test can tell where the cut fell."""

    def __init__(self, upstream_port: int, drop_after: int, victim: int = 1):
        self.upstream_port = upstream_port
        self.drop_after = drop_after
        self.victim = victim
        self.armed = True
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.dropped = 0
        self.stopping = False
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopping:
            try:
                client, _addr = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            self.sockets += [client, upstream]
            doomed = self.armed and (self.victim == 0 or self.connections == self.victim)
            threading.Thread(target=self._pump, args=(client, upstream, doomed), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket, doomed: bool) -> None:
        seen = 0
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                seen += len(data)
                if doomed and seen > self.drop_after:
                    self.dropped += 1
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
    """(pid, cmdline) of every process below PID."""
    kids: dict[int, list[int]] = {}
    cmd: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int(stat.read_text().rsplit(") ", 1)[1].split()[1])
            p = int(stat.parent.name)
            kids.setdefault(ppid, []).append(p)
            cmd[p] = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append((k, cmd.get(k, "")))
            todo.append(k)
    return out
