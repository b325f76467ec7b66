# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""transport ssh+netcat against real zfs-fuse, the sandbox sshd on 127.0.0.1 and the real OpenBSD nc.

The engine runs in this process (run_replication): the push's sender and a pull's listener are local processes, the
push's listener runs through sshd. Hostile peers are real sockets; wrappers in PATH (local side only) stand in for a
sender that is slow to connect or fails before connecting, and for a listener that never listens.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ansible_collections.zfs.replication.plugins.module_utils import _netcat as netcat
from ansible_collections.zfs.replication.plugins.module_utils._replication import run_replication
from helpers import (
    dataset_exists,
    destroy_retrying,
    free_port,
    mounted_checksums,
    mountpoint,
    own_checksums,
    sandbox_ssh,
    snapshots_with_guids,
    zfs,
)

pytestmark = pytest.mark.integration

SCHEMA = "auto-%Y-%m-%d_%H-%M"
REAL_NC = "/usr/bin/nc"


def write_files(dataset: str, seed: str, size: int = 100_000, count: int = 2) -> None:
    root = Path(mountpoint(dataset))
    for i in range(count):
        (root / f"{seed}-{i}.bin").write_bytes(secrets.token_bytes(size))


def snap(dataset: str, name: str, seed: str, size: int = 100_000) -> None:
    write_files(dataset, seed, size)
    zfs("snapshot", f"{dataset}@{name}")


def guids(dataset: str) -> dict[str, str]:
    return {k[1:]: v for k, v in snapshots_with_guids(dataset).items() if k.startswith("@")}


def task_name(src: str) -> str:
    """One task per pair (its runs move one hold tag): named after the pair's unique source dataset."""
    return f"nc-{src.rsplit('/', 1)[-1]}"


def params(sandbox, src: str, dst: str, port: int, **more) -> dict:
    p = {
        "name": task_name(src),
        "source_datasets": [src],
        "target_dataset": dst,
        "naming_schema": [SCHEMA],
        "transport": "ssh+netcat",
        "netcat": {"port_min": port, "port_max": port, "listen_address": "127.0.0.1", "connect_address": "127.0.0.1"},
        "ssh": sandbox_ssh(sandbox),
        "retries": 0,
    }
    p.update(more)
    return p


def ours(port: int, dst: str) -> list[str]:
    """Processes of this stream still on the (loopback) receiving host: nc on its port, zfs recv into its target."""
    out = subprocess.run(["pgrep", "-af", f"nc .*{port}|zfs recv.*{dst}"], capture_output=True, text=True, check=False).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


# Deadlines below only end a wait for something that never happens (then the test fails saying what); they are
# generous on purpose and measure nothing: a slow machine takes longer, never fails.
DEADLINE = 120.0


def wait_until(condition, what: str, deadline: float = DEADLINE):
    """Poll CONDITION until it returns something true and return that; fail naming WHAT if it never does."""
    end = time.monotonic() + deadline
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"{what}: still not the case after {deadline:.0f} s")
        time.sleep(0.2)


def gone(port: int, dst: str, deadline: float = DEADLINE) -> list[str]:
    """Wait for the stream's processes to end (a TERM'd zfs recv on zfs-fuse takes a moment); return what is left."""
    end = time.monotonic() + deadline
    left = ours(port, dst)
    while left and time.monotonic() < end:
        time.sleep(0.2)
        left = ours(port, dst)
    return left


def wrapper(tmp_path: Path, body: str) -> str:
    """A directory with an `nc` wrapper (BODY runs before the real nc); returns a PATH that puts it first."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    nc = bindir / "nc"
    nc.write_text(f"#!/bin/sh\n{body}\nexec {REAL_NC} \"$@\"\n")
    nc.chmod(nc.stat().st_mode | stat.S_IXUSR)
    return f"{bindir}:{os.environ['PATH']}"


def hold_sender_until(mark: Path) -> str:
    """Wrapper body: the sender's nc starts only once MARK exists (the hostile peer got in first). The bound of
    DEADLINE seconds only keeps a broken run from hanging; the test then fails on `mark.exists()`."""
    return f'for _ in $(seq {int(DEADLINE * 10)}); do [ -e {mark} ] && break; sleep 0.1; done'


@pytest.fixture
def pair(sandbox):
    tag = secrets.token_hex(3)
    src = f"{sandbox.src_pool}/nc{tag}"
    parent = f"{sandbox.dst_pool}/nc{tag}"
    zfs("create", src)
    zfs("create", parent)
    yield src, f"{parent}/data"
    for ds in (src, parent):
        destroy_retrying(ds, tags=[f"zfs.replication:{task_name(src)}"])


def test_push_full_and_incremental(sandbox, pair):
    src, dst = pair
    port = free_port()
    snap(src, "auto-2026-11-28_10-00", "a")
    snap(src, "auto-2026-11-28_11-00", "b")
    first = run_replication(params(sandbox, src, dst, port))
    assert not first.errors, first.errors
    assert guids(dst) == guids(src) and len(guids(dst)) == 2
    assert any(f"listens on 127.0.0.1:{port}" in line for line in first.log), first.log
    snap(src, "auto-2026-11-28_12-00", "c")
    inc = run_replication(params(sandbox, src, dst, port))
    assert not inc.errors, inc.errors
    assert [d.snapshots_sent for d in inc.datasets] == [["auto-2026-11-28_12-00"]]
    assert guids(dst) == guids(src)
    assert mounted_checksums(dst) == own_checksums(src)
    assert gone(port, dst) == []


def hostile(port: int, payload: bytes, mark: Path, hold: float, stop: threading.Event) -> threading.Thread:
    """Connect to PORT as soon as it listens, send PAYLOAD, tell the sender wrapper (MARK), keep the connection idle."""
    def run() -> None:
        while not stop.is_set():
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=1)
            except OSError:
                time.sleep(0.002)
                continue
            with conn:
                conn.sendall(payload)
                mark.touch()
                stop.wait(hold)
            return
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("payload", [b"x" * 0 + secrets.token_bytes(4096), secrets.token_hex(16).encode() + b"\0" * 512],
                         ids=["random bytes", "a wrong token"])
def test_a_foreign_first_connection_is_refused(sandbox, pair, tmp_path, monkeypatch, payload):
    """Someone connects to the listener before the sender (which waits for them here): the receive refuses the
    stream, zfs recv never starts, the target stays absent, the listener ends itself though that peer stays
    connected, and the run fails with a message that says so."""
    src, dst = pair
    port = free_port()
    snap(src, "auto-2026-11-28_10-00", "a")
    before_src = guids(src)
    mark = tmp_path / "hostile-connected"
    monkeypatch.setenv("PATH", wrapper(tmp_path, hold_sender_until(mark)))
    stop = threading.Event()
    t = hostile(port, payload, mark, hold=60, stop=stop)
    try:
        res = run_replication(params(sandbox, src, dst, port))
        assert mark.exists(), "the foreign connection never got through: the test proved nothing"
        assert res.errors, res.log
        msg = "; ".join(res.errors)
        assert "did not start with this run's stream token" in msg and "zfs recv was not started" in msg, msg
        assert not dataset_exists(dst)
        assert guids(src) == before_src
        assert gone(port, dst) == [], "the listener or receive outlived the refused stream"
    finally:
        stop.set()
        t.join(5)


def test_a_refused_connection_is_retried_with_a_new_token(sandbox, pair, tmp_path, monkeypatch):
    src, dst = pair
    port = free_port()
    snap(src, "auto-2026-11-28_10-00", "a")
    mark = tmp_path / "hostile-connected"
    monkeypatch.setenv("PATH", wrapper(tmp_path, hold_sender_until(mark)))
    tokens: list[str] = []
    real = netcat.new_token
    monkeypatch.setattr(netcat, "new_token", lambda: tokens.append(real()) or tokens[-1])
    stop = threading.Event()
    t = hostile(port, secrets.token_bytes(64), mark, hold=2, stop=stop)
    try:
        res = run_replication(params(sandbox, src, dst, port, retries=1, retry_delay=0))
    finally:
        stop.set()
        t.join(5)
    assert not res.errors, res.log
    assert any("did not start with this run's stream token" in line for line in res.log), res.log
    assert len(tokens) == 2 and tokens[0] != tokens[1]
    assert guids(dst) == guids(src)
    assert gone(port, dst) == []


def test_a_sender_that_fails_before_connecting_ends_the_remote_listener(sandbox, pair, tmp_path, monkeypatch):
    """push: the listener runs through sshd. The local sender's nc fails before it connects; without the lifeline
    `nc -l` would wait on the remote host forever."""
    src, dst = pair
    port = free_port()
    snap(src, "auto-2026-11-28_10-00", "a")
    monkeypatch.setenv("PATH", wrapper(tmp_path, 'echo "nc: simulated failure before connecting" >&2; exit 1'))
    res = run_replication(params(sandbox, src, dst, port))
    assert res.errors and "simulated failure before connecting" in "; ".join(res.errors), res.log
    assert not dataset_exists(dst)
    assert gone(port, dst) == []


def test_a_listener_that_never_listens_times_out_and_is_ended(sandbox, pair, tmp_path, monkeypatch):
    """pull: the listener is local. Its nc never listens; ready() times out and nothing of the stream is left."""
    src, dst = pair
    port = free_port()
    snap(src, "auto-2026-11-28_10-00", "a")
    monkeypatch.setattr(netcat, "READY_TIMEOUT", 3.0)
    monkeypatch.setenv("PATH", wrapper(tmp_path, f'case " $* " in *" -l "*) sleep 300; exit 1 ;; esac  # {port}'))
    res = run_replication(params(sandbox, src, dst, port, direction="pull"))
    assert res.errors and f"did not listen on 127.0.0.1:{port} within 3 s" in "; ".join(res.errors), res.log
    assert not dataset_exists(dst)
    assert gone(port, dst) == []
    assert not subprocess.run(["pgrep", "-f", f"{tmp_path}/bin/nc"], capture_output=True, check=False).stdout


def test_a_killed_controller_leaves_nothing_on_the_receiving_host(sandbox, pair, tmp_path):
    """The engine's process dies mid-stream (a stopped timer unit): the remote listener and zfs recv end too."""
    src, dst = pair
    port = free_port()
    snap(src, "auto-2026-11-28_10-00", "a", size=1_000_000)
    driver = Path(__file__).resolve().parents[1] / "scenario_driver.py"
    import json

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen([sys.executable, str(driver)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, start_new_session=True)
    assert proc.stdin and proc.stdout
    proc.stdin.write(json.dumps(params(sandbox, src, dst, port, speed_limit=100_000)))
    proc.stdin.close()
    try:
        for line in proc.stdout:
            if "listens on" in line:
                break
        wait_until(lambda: any("zfs recv" in p for p in ours(port, dst)), "the stream's zfs recv started")
    finally:
        os.killpg(proc.pid, 9)  # the engine and its local processes: what systemd does when a unit is stopped
        proc.wait()
    assert gone(port, dst) == []


def test_the_token_is_on_no_command_line(sandbox, pair, monkeypatch):
    """Sample every process's argv (and environment) while a speed-limited stream runs: the token is in none."""
    src, dst = pair
    port = free_port()
    snap(src, "auto-2026-11-28_10-00", "a", size=300_000)
    tokens: list[str] = []
    real = netcat.new_token
    monkeypatch.setattr(netcat, "new_token", lambda: tokens.append(real()) or tokens[-1])
    seen: dict[str, bytes] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for d in Path("/proc").glob("[0-9]*"):
                for what in ("cmdline", "environ"):
                    with contextlib.suppress(OSError):
                        data = (d / what).read_bytes()
                        if data:
                            seen[f"{d.name}/{what}/{hash(data)}"] = data
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        res = run_replication(params(sandbox, src, dst, port, speed_limit=200_000))
    finally:
        stop.set()
        t.join(10)
    assert not res.errors, res.errors
    assert guids(dst) == guids(src)
    assert len(tokens) == 1
    cmdlines = [v for k, v in seen.items() if "/cmdline/" in k]
    assert any(b"\x00".join([b"nc", b"-l", b"127.0.0.1", str(port).encode()]) in c for c in cmdlines), "sampling missed the listener: proves nothing"
    assert any(b"\x00".join([b"nc", b"-N", b"127.0.0.1", str(port).encode()]) in c for c in cmdlines), "sampling missed the sender: proves nothing"
    token = tokens[0].encode()
    leaks = [k for k, v in seen.items() if token in v]
    assert leaks == []
