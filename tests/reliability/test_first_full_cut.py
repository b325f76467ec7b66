# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The first full stream (64 MB) cut part-way. On zfs-fuse (no resumable receive) the stream is sent again; on OpenZFS
the cut receive keeps what arrived and the stream is resumed (tests/openzfs/test_first_full_resume.py looks at the
token itself).

The connection goes through a proxy that resets it after N bytes of the real stream (10 %, 50 %, 90 %), each offset
several times: with retries 0 the next run, with retries 2 the retry inside the same run, always ends with a complete
replica (guids and file checksums), never with the "exists and has no snapshots ... allow_from_scratch" refusal nor
"destination exists, must specify -F". A run SIGKILLed mid-stream (no cleanup at all) is followed by a run that
completes too: the first run recorded its first transfer in the task's state directory, so the next run knows the
empty leftover is its own.
"""
from __future__ import annotations

import contextlib
import secrets
import signal
import socket
from pathlib import Path

import faultlib
import pytest
from faultlib import DroppingProxy, destroy_r, expect_replica, fault_injected, guids, kill_group, run_engine, settle, snap, start_engine

from helpers import zfs

T1 = "auto-2026-11-28_10-00"
SIZE = 64 << 20
FILES = 8
REFUSALS = ("allow_from_scratch", "must specify -F", "has no snapshots")


@pytest.fixture(scope="module")
def source(sandbox):
    """One 64 MB source snapshot for the whole file (each case replicates it to a target of its own)."""
    src = f"{sandbox.src_pool}/ffcut{secrets.token_hex(3)}"
    zfs("create", src)
    snap(src, T1, data="big", size=SIZE // FILES, count=FILES)
    yield src
    destroy_r(src, [f"zfs.replication:{n}" for n in _names])


_names: list[str] = []


@pytest.fixture(scope="module")
def stream_size(source) -> int:
    """The real size of the first full stream, sent with the engine's flags on this backend (counted, not estimated)."""
    return faultlib.stream_size(source, T1)


class Case:
    def __init__(self, sandbox, source: str, tmp_path: Path):
        self.sandbox = sandbox
        self.src = source
        self.name = f"ffcut-{secrets.token_hex(3)}"
        _names.append(self.name)
        self.parent = f"{sandbox.dst_pool}/{self.name}"
        self.dst = f"{self.parent}/data"
        self.state_dir = tmp_path / "state"
        zfs("create", self.parent)

    def params(self, **more):
        s = self.sandbox.sshd
        p = {"name": self.name, "source_datasets": [self.src], "target_dataset": self.dst, "naming_schema": ["auto-%Y-%m-%d_%H-%M"],
             "ssh": {"host": "127.0.0.1", "port": s.port, "user": "root", "private_key_file": str(s.private_key),
                     "known_hosts_file": str(s.known_hosts), "cipher": "fast"},
             "retries": 0, "retry_delay": 0.2, "state_dir": str(self.state_dir)}
        p.update(more)
        return p


@pytest.fixture
def case(sandbox, source, tmp_path):
    c = Case(sandbox, source, tmp_path)
    yield c
    destroy_r(c.parent, [f"zfs.replication:{c.name}"])


def _no_refusal(run) -> None:
    text = run.message + "\n" + "\n".join(run.lines)
    assert not any(r in text for r in REFUSALS), f"our own leftover was refused or blamed on the user\n{run}"


def _complete(case: Case) -> None:
    settle(case.dst)
    assert guids(case.dst) == guids(case.src)
    expect_replica(case.src, case.dst)
    assert not (case.state_dir / f"repl-{case.name}.first-full.json").exists(), "the record outlived the completed transfer"


@pytest.mark.fault_class("first full stream cut")
@pytest.mark.parametrize("retries", [0, 2])
@pytest.mark.parametrize("offset", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("trial", [1, 2])
def test_first_full_cut_by_the_connection(case, tmp_path, stream_size, offset, retries, trial):
    proxy = DroppingProxy(case.sandbox.sshd.port, drop_after=int(stream_size * offset), victim=1)
    try:
        kh = proxy.known_hosts(case.sandbox, tmp_path / "kh")
        ssh = {**case.params()["ssh"], "port": proxy.port, "known_hosts_file": str(kh)}
        run = run_engine(case.params(ssh=ssh, retries=retries), timeout=300)
        fault_injected(f"the first full's connection cut at {offset:.0%} of the stream", proxy.dropped >= 1,
                       f"the stream was shorter than {offset:.0%}\n{run}")
        _no_refusal(run)
        if retries:
            assert run.ok, run
            assert run.result["datasets"][case.dst]["attempts"] == 2, run.result["datasets"]
        else:
            assert not run.ok, run
            again = run_engine(case.params(ssh=ssh), timeout=300)
            _no_refusal(again)
            assert again.ok, again
        _complete(case)
    finally:
        proxy.close()


class KillingProxy(DroppingProxy):
    """Forwards everything; once the client has sent AFTER bytes on the first connection, calls ACTION once."""

    def __init__(self, upstream_port: int, after: int, action):
        self.after, self.action, self.fired_at = after, action, 0
        super().__init__(upstream_port, drop_after=1 << 62, victim=1)

    def _pump(self, a, b, number) -> None:  # number: which connection this is (the base class's name)
        doomed = bool(number)
        seen = 0
        with contextlib.suppress(OSError):
            while True:
                data = a.recv(65536)
                if not data:
                    break
                seen += len(data)
                if doomed and not self.fired_at and seen > self.after:
                    self.fired_at = seen
                    self.action()
                b.sendall(data)
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


@pytest.mark.fault_class("first full stream cut")
@pytest.mark.parametrize("offset", [0.1, 0.5, 0.9])
def test_engine_killed_during_first_full_then_next_run_completes(case, tmp_path, stream_size, offset, zfs_caps):
    """SIGKILL the whole run (engine, zfs send, ssh) once OFFSET of the stream went through: nothing cleans up."""
    procs: list = []
    proxy = KillingProxy(case.sandbox.sshd.port, int(stream_size * offset), lambda: kill_group(procs[0]))
    try:
        kh = proxy.known_hosts(case.sandbox, tmp_path / "kh")
        ssh = {**case.params()["ssh"], "port": proxy.port, "known_hosts_file": str(kh)}
        procs.append(start_engine(case.params(ssh=ssh)))
        assert procs[0].stdout is not None
        lines = procs[0].stdout.read().splitlines()
        procs[0].wait(timeout=60)
        fault_injected(f"the run SIGKILLed at {offset:.0%} of the first full", bool(proxy.fired_at) and procs[0].returncode == -signal.SIGKILL,
                       "\n".join(lines))
        assert (case.state_dir / f"repl-{case.name}.first-full.json").exists(), "the first transfer was not recorded before it started"
        settle(case.dst)
        again = run_engine(case.params(ssh=ssh), timeout=300)
        _no_refusal(again)
        assert again.ok, again
        if "resumable" in zfs_caps:  # the cut receive kept a token: the next run resumed it before planning
            assert again.result["datasets"][case.dst]["resumed"] or again.result["plan"][0]["action"] == "full", again
        else:  # zfs-fuse either tore the empty target down itself, or the next run knew it as its own and destroyed it
            assert again.result["plan"][0]["action"] == "full", again
        _complete(case)
    finally:
        proxy.close()
