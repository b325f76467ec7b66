# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""TrueNAS's remaining transport fields: `netcat.active_side` and `plzip` compression.

Real zfs-fuse, the sandbox sshd on 127.0.0.1 and the real OpenBSD nc. Each combination of direction and active side
replicates a full and an incremental stream; the target's guids and file checksums must equal the source's. Which
side listened is read from the real processes: an `nc` wrapper first in this process's PATH (the local side only;
the remote side runs through sshd with its own PATH) records the argv of every local nc, so `-l` on it proves that
this host listened, its absence that it connected.
"""
from __future__ import annotations

import os
import secrets
import stat
import subprocess
import time
from pathlib import Path

import pytest

from ansible_collections.zfs.replication.plugins.module_utils._replication import run_replication
from ansible_collections.zfs.replication.plugins.module_utils._replication_task import TaskError
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


def snap(dataset: str, name: str, seed: str, size: int = 100_000) -> None:
    root = Path(mountpoint(dataset))
    for i in range(2):
        (root / f"{seed}-{i}.bin").write_bytes(secrets.token_bytes(size))
    zfs("snapshot", f"{dataset}@{name}")


def guids(dataset: str) -> dict[str, str]:
    return {k[1:]: v for k, v in snapshots_with_guids(dataset).items() if k.startswith("@")}


def params(sandbox, src: str, dst: str, port: int, **more) -> dict:
    p = {
        "name": f"ncas-{secrets.token_hex(3)}",
        "source_datasets": [src],
        "target_dataset": dst,
        "naming_schema": [SCHEMA],
        "transport": "ssh+netcat",
        "netcat": {"port_min": port, "port_max": port, "listen_address": "127.0.0.1", "connect_address": "127.0.0.1"},
        "ssh": sandbox_ssh(sandbox),
        "retries": 0,
        "hold_base": False,  # held snapshots would keep the teardown's zfs destroy -r from removing the datasets
    }
    p.update(more)
    return p


def gone(port: int, dst: str, timeout: float = 15) -> list[str]:
    """Wait for the stream's processes (nc on its port, zfs recv into its target) to end; return what is left."""
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(["pgrep", "-af", f"nc .*{port}|zfs recv.*{dst}"], capture_output=True, text=True, check=False).stdout
        left = [line for line in out.splitlines() if "pgrep" not in line]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.2)


def recording_nc(tmp_path: Path) -> tuple[str, Path]:
    """A PATH with an `nc` that appends its argv to a file, then runs the real nc; returns (PATH, the file)."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    record = tmp_path / "nc-argv"
    nc = bindir / "nc"
    nc.write_text(f'#!/bin/sh\necho "$*" >> {record}\nexec {REAL_NC} "$@"\n')
    nc.chmod(nc.stat().st_mode | stat.S_IXUSR)
    return f"{bindir}:{os.environ['PATH']}", record


@pytest.fixture
def pair(sandbox):
    tag = secrets.token_hex(3)
    src = f"{sandbox.src_pool}/ncas{tag}"
    parent = f"{sandbox.dst_pool}/ncas{tag}"
    zfs("create", src)
    zfs("create", parent)
    yield src, f"{parent}/data"
    for ds in (src, parent):
        destroy_retrying(ds)


# (direction, active_side, does this host listen, is the listener the sending side)
CASES = [
    ("push", "local", True, True),
    ("push", "remote", False, False),
    ("pull", "local", True, False),
    ("pull", "remote", False, True),
]


@pytest.mark.parametrize("direction,active_side,local_listens,sender_listens", CASES,
                         ids=[f"{d}-active-{a}" for d, a, _l, _s in CASES])
def test_active_side_listens_and_the_replica_is_identical(sandbox, pair, tmp_path, monkeypatch, direction, active_side,
                                                          local_listens, sender_listens):
    src, dst = pair
    port = free_port()
    path, record = recording_nc(tmp_path)
    monkeypatch.setenv("PATH", path)
    snap(src, "auto-2026-11-28_10-00", "a")
    snap(src, "auto-2026-11-28_11-00", "b")
    p = params(sandbox, src, dst, port, direction=direction)
    p["netcat"] = {**p["netcat"], "active_side": active_side}

    first = run_replication(p)
    assert not first.errors, first.log
    side = "sending" if sender_listens else "receiving"
    assert any(f"({side} side) listens on 127.0.0.1:{port}" in line for line in first.log), first.log
    local_argv = record.read_text().splitlines()
    assert len(local_argv) == 2, local_argv  # the full stream and the incremental one: one local nc each
    for line in local_argv:
        words = line.split()
        assert ("-l" in words) is local_listens, local_argv
        # the sending side shuts the connection down at the end of its data (-N); the receiving side never does
        assert ("-N" in words) is (direction == "push"), local_argv  # the local side sends in push mode
        assert words[-2:] == ["127.0.0.1", str(port)]
    assert guids(dst) == guids(src) and len(guids(dst)) == 2
    assert mounted_checksums(dst) == own_checksums(src)

    snap(src, "auto-2026-11-28_12-00", "c")
    inc = run_replication(p)
    assert not inc.errors, inc.log
    assert [d.snapshots_sent for d in inc.datasets] == [["auto-2026-11-28_12-00"]]
    assert guids(dst) == guids(src) and len(guids(dst)) == 3
    assert mounted_checksums(dst) == own_checksums(src)
    assert inc.datasets[0].bytes and inc.datasets[0].bytes > 100_000  # pv counted the increment's two 100 kB files
    assert gone(port, dst) == []


def test_sender_listening_with_plzip(sandbox, pair, tmp_path):
    """plzip on both ends of a stream whose sending side listens: the replica is identical and plzip ran on both sides."""
    src, dst = pair
    port = free_port()
    snap(src, "auto-2026-11-28_10-00", "a", size=300_000)
    p = params(sandbox, src, dst, port, compression="plzip")
    p["netcat"] = {**p["netcat"], "active_side": "local"}
    res = run_replication(p)
    assert not res.errors, res.log
    pipeline = next(line for line in res.log if line.strip().startswith("$ zfs send"))
    assert "plzip -q -c" in pipeline and "plzip -q -d -c" in pipeline, pipeline
    assert guids(dst) == guids(src)
    assert mounted_checksums(dst) == own_checksums(src)


def test_local_active_side_needs_a_listen_address_and_changes_nothing(sandbox, pair):
    src, dst = pair
    snap(src, "auto-2026-11-28_10-00", "a")
    p = params(sandbox, src, dst, free_port())
    p["netcat"] = {"port_min": 50000, "port_max": 50010, "active_side": "local"}
    with pytest.raises(TaskError, match="netcat.listen_address is required with netcat.active_side: local"):
        run_replication(p)
    p["netcat"] = {"port_min": 50000, "port_max": 50010, "active_side": "both"}
    with pytest.raises(TaskError, match="netcat.active_side 'both': use local"):
        run_replication(p)
    assert not dataset_exists(dst)
