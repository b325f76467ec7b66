# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Faults on real parts: cut connections, SIGKILLed runs, hands on the datasets between runs, overlapping runs,
a full destination pool. Each case checks guids and checksums on both sides and that no snapshot was lost."""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from faultlib import (
    DroppingProxy,
    descendants,
    destroy_r,
    engine_env,
    exists,
    expect_kept,
    expect_replica,
    guids,
    held,
    our_holds,
    run_engine,
    settle,
    snap,
    snaps,
    start_engine,
)

from helpers import mountpoint, zfs
from sandbox import create_pool, destroy_pool

T1, T2, T3, T4 = (f"auto-2026-11-28_1{i}-00" for i in range(4))


class Pair:
    def __init__(self, sandbox, tag: str):
        self.sandbox = sandbox
        self.name = f"rel-{tag}"
        self.src = f"{sandbox.src_pool}/r{tag}"
        self.parent = f"{sandbox.dst_pool}/r{tag}"
        self.dst = f"{self.parent}/data"
        self.tags = [f"zfs.replication:{self.name}"]

    def params(self, **more):
        s = self.sandbox.sshd
        p = {"name": self.name, "source_datasets": [self.src], "target_dataset": self.dst, "naming_schema": ["auto-%Y-%m-%d_%H-%M"],
             "ssh": {"host": "127.0.0.1", "port": s.port, "user": "root", "private_key_file": str(s.private_key),
                     "known_hosts_file": str(s.known_hosts)},
             "retries": 0}
        p.update(more)
        return p


@pytest.fixture
def pair(sandbox):
    p = Pair(sandbox, secrets.token_hex(3))
    zfs("create", p.src)
    zfs("create", p.parent)
    yield p
    for ds in (p.src, p.parent):
        destroy_r(ds, p.tags)


def recovered(pair: Pair, src_before: dict[str, str], dst_before: dict[str, str], **more) -> None:
    """The next run (no fault) completes; nothing was lost on either side; the replica equals the source."""
    settle(pair.dst)
    again = run_engine(pair.params(**more))
    assert again.ok, f"the run after the fault did not recover: {again.message}\n{again}"
    expect_kept(src_before, pair.src, "source")
    expect_kept(dst_before, pair.dst, "target")
    expect_replica(pair.src, pair.dst)
    # Exactly one hold per side, on the newest common snapshot (a held leftover would block pruning forever).
    newest = snaps(pair.src)[-1]
    assert our_holds(pair.src, pair.tags[0]) == {f"{pair.src}@{newest}": 1}, held(pair.src)
    assert our_holds(pair.dst, pair.tags[0]) == {f"{pair.dst}@{newest}": 1}, held(pair.dst)


# ==================================================================================================== connection cut
@pytest.mark.fault_class("connection cut mid-stream")
@pytest.mark.parametrize("offset", [0.15, 0.5, 0.85, 1.0])
@pytest.mark.parametrize("stream", ["full", "incremental"])
def test_ssh_client_killed_mid_stream(pair, offset, stream):
    """SIGKILL the ssh client that carries `zfs recv` at OFFSET of a rate-limited stream: clean failure with a
    clear error (retries: 0), the next run completes."""
    size = 1_500_000
    snap(pair.src, T1, data="a", size=size if stream == "full" else 50_000)
    if stream == "incremental":
        assert run_engine(pair.params()).ok
        snap(pair.src, T2, data="b", size=size)
    src_before, dst_before = guids(pair.src), guids(pair.dst)
    rate = 1_000_000
    expected = size / rate  # pv -L paces the stream: ~1.5 s

    state: dict[str, float] = {}
    params = pair.params(speed_limit=rate)
    proc_holder: dict[str, int] = {}

    def killer() -> None:
        while "start" not in state:
            time.sleep(0.02)
        time.sleep(expected * offset)
        for pid, cmd in descendants(proc_holder["pid"]):
            if cmd.startswith("ssh ") and "zfs recv" in cmd:
                os.kill(pid, signal.SIGKILL)
                state["killed"] = 1

    th = threading.Thread(target=killer, daemon=True)
    proc = start_engine(params)
    proc_holder["pid"] = proc.pid
    th.start()
    lines, result, error = [], None, None
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.rstrip("\n")
        if line.strip().startswith("$ zfs send"):
            state["start"] = time.monotonic()
        if line.startswith("ZR-RESULT "):
            result = json.loads(line[10:])
        elif line.startswith("ZR-ERROR "):
            error = json.loads(line[9:])
        else:
            lines.append(line)
    proc.wait(timeout=60)
    th.join(timeout=30)
    assert state.get("killed"), f"the ssh client of the stream was never found to kill\n{lines}"
    msg = error or "; ".join((result or {}).get("errors", []))
    assert proc.returncode != 0 and msg, f"a cut stream must fail the run\n{lines}"
    # A clear error: names the stream and the ssh connection that went away.
    assert ("ssh" in msg or "connection" in msg.lower()) and pair.dst in msg, msg
    expect_kept(src_before, pair.src, "source")
    expect_kept(dst_before, pair.dst, "target")
    recovered(pair, src_before, dst_before)


@pytest.mark.fault_class("connection cut mid-stream")
def test_killed_ssh_client_is_retried(pair):
    """The same cut with retries: 2: the run retries the stream from the base by itself and succeeds."""
    snap(pair.src, T1, data="a", size=50_000)
    assert run_engine(pair.params()).ok
    snap(pair.src, T2, data="b", size=1_500_000)
    src_before, dst_before = guids(pair.src), guids(pair.dst)
    killed: list[int] = []

    def cut(line: str) -> bool:
        if line.strip().startswith("$ zfs send") and not killed:
            def later() -> None:
                time.sleep(0.6)
                for pid, cmd in descendants(os.getpid()):
                    if cmd.startswith("ssh ") and "zfs recv" in cmd and not killed:
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
            threading.Thread(target=later, daemon=True).start()
        return False

    run = run_engine(pair.params(speed_limit=1_000_000, retries=2, retry_delay=0.2), kill_when=cut)
    assert killed, "the stream's ssh client was never found"
    assert run.ok, run
    assert run.result["datasets"][pair.dst]["attempts"] == 2, run.result["datasets"]
    assert any("attempt 1 failed" in line and "connection lost" in line for line in run.lines), run
    expect_kept(src_before, pair.src, "source")
    expect_kept(dst_before, pair.dst, "target")
    expect_replica(pair.src, pair.dst)


@pytest.mark.fault_class("connection cut mid-stream")
@pytest.mark.parametrize("drop_after", [60_000, 700_000, 2_000_000])
def test_proxy_drops_connection_after_n_bytes(pair, tmp_path, drop_after):
    """A TCP proxy resets the (shared ssh master) connection after N client bytes: the run fails with a clear
    error (retries: 0); the next run, through the same proxy disarmed, completes."""
    snap(pair.src, T1, data="a", size=50_000)
    assert run_engine(pair.params()).ok
    snap(pair.src, T2, data="b", size=1_500_000)
    src_before, dst_before = guids(pair.src), guids(pair.dst)
    proxy = DroppingProxy(pair.sandbox.sshd.port, drop_after=drop_after, victim=0)
    try:
        kh = proxy.known_hosts(pair.sandbox, tmp_path / "kh")
        ssh = {**pair.params()["ssh"], "port": proxy.port, "known_hosts_file": str(kh)}
        run = run_engine(pair.params(ssh=ssh))
        assert proxy.dropped >= 1, "the proxy never dropped: the stream was shorter than the offset"
        assert not run.ok, run
        assert "ssh" in run.message.lower() or "connection" in run.message.lower(), run.message
        expect_kept(src_before, pair.src, "source")
        expect_kept(dst_before, pair.dst, "target")
        proxy.armed = False
        recovered(pair, src_before, dst_before, ssh=ssh)
    finally:
        proxy.close()


@pytest.mark.fault_class("connection cut mid-stream")
def test_remote_zfs_recv_killed_during_first_full_stream(pair):
    """The receiving `zfs recv` (under sshd) SIGKILLed halfway through the first full stream: as when sshd
    hangs up on it after a dropped connection. The run fails; the next run must complete."""
    snap(pair.src, T1, data="a", size=1_500_000)
    src_before = guids(pair.src)
    killed = []

    def kill_recv(line: str) -> bool:
        if line.strip().startswith("$ zfs send") and not killed:
            def later() -> None:
                time.sleep(1.5)
                for pid, cmd in descendants(1):
                    if cmd.startswith("zfs recv") and pair.dst in cmd:
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
            threading.Thread(target=later, daemon=True).start()
        return False

    run = run_engine(pair.params(speed_limit=1_000_000), kill_when=kill_recv)
    assert killed and not run.ok, run
    assert pair.dst in run.message, run.message
    expect_kept(src_before, pair.src, "source")
    settle(pair.dst)
    again = run_engine(pair.params())
    assert again.ok, again
    expect_replica(pair.src, pair.dst)


# ==================================================================================================== SIGKILL of the engine
@pytest.mark.fault_class("engine SIGKILLed")
@pytest.mark.parametrize("point", ["lines:1", "lines:3", "lines:5", "lines:7", "lines:9", "ms:400", "ms:1200", "after:hold"])
def test_engine_killed_then_next_run_recovers(pair, point):
    """SIGKILL the engine's process group at a point of an incremental run; the next run recovers."""
    snap(pair.src, T1, data="a", size=50_000)
    assert run_engine(pair.params()).ok
    snap(pair.src, T2, data="b", size=600_000)
    snap(pair.src, T3, data="c", size=600_000)
    src_before, dst_before = guids(pair.src), guids(pair.dst)
    kind, _sep, arg = point.partition(":")
    params = pair.params(speed_limit=1_000_000)
    if kind == "lines":
        run = run_engine(params, kill_after_lines=int(arg))
    elif kind == "ms":
        run = run_engine(params, kill_after_ms=int(arg))
    else:  # right after the receive finished, before or while the holds move
        run = run_engine(params, kill_when=lambda line: line.startswith("done "))
    assert run.killed or run.ok, run
    expect_kept(src_before, pair.src, "source")
    expect_kept(dst_before, pair.dst, "target")
    recovered(pair, src_before, dst_before)


# ==================================================================================================== hands on the datasets
@pytest.mark.fault_class("target/source changed by hand")
def test_target_modified_between_runs_is_refused(pair):
    snap(pair.src, T1, data="a")
    assert run_engine(pair.params(readonly="ignore")).ok
    zfs("mount", pair.dst)
    Path(mountpoint(pair.dst), "local-change.txt").write_text("mine\n")
    zfs("unmount", pair.dst)
    snap(pair.src, T2, data="b")
    src_before, dst_before = guids(pair.src), guids(pair.dst)
    run = run_engine(pair.params(readonly="ignore"))
    assert not run.ok and "allow_rollback" in run.message and "modified" in run.message, run.message
    expect_kept(src_before, pair.src, "source")
    expect_kept(dst_before, pair.dst, "target")
    zfs("mount", pair.dst)
    assert Path(mountpoint(pair.dst), "local-change.txt").read_text() == "mine\n"  # the change is not discarded silently
    zfs("unmount", pair.dst)
    ok = run_engine(pair.params(readonly="ignore", allow_rollback=True))
    assert ok.ok, ok
    expect_replica(pair.src, pair.dst)


def _destroy_target_base(pair) -> None:
    snap(pair.src, T1, data="a")
    snap(pair.src, T2, data="b")
    assert run_engine(pair.params()).ok
    zfs("release", pair.tags[0], f"{pair.dst}@{T2}")
    zfs("destroy", f"{pair.dst}@{T2}")
    snap(pair.src, T3, data="c")


@pytest.mark.fault_class("target/source changed by hand")
def test_target_base_snapshot_destroyed_by_hand(pair):
    """The newest common snapshot destroyed on the target: its data still holds T2's state, so an incremental
    from the previous common snapshot T1 needs a rollback: refused without consent, done with allow_rollback."""
    _destroy_target_base(pair)
    src_before, dst_before = guids(pair.src), guids(pair.dst)
    run = run_engine(pair.params())
    assert not run.ok and "allow_rollback" in run.message, run
    expect_kept(src_before, pair.src, "source")
    expect_kept(dst_before, pair.dst, "target")
    ok = run_engine(pair.params(allow_rollback=True))
    assert ok.ok, ok
    expect_kept(src_before, pair.src, "source")
    expect_replica(pair.src, pair.dst)


@pytest.mark.fault_class("target/source changed by hand")
def test_hold_of_a_base_destroyed_on_the_target_is_released(pair):
    _destroy_target_base(pair)
    assert run_engine(pair.params(allow_rollback=True)).ok
    assert our_holds(pair.src, pair.tags[0]) == {f"{pair.src}@{T3}": 1}, held(pair.src)


@pytest.mark.fault_class("target/source changed by hand")
def test_every_target_snapshot_destroyed_is_refused(pair):
    snap(pair.src, T1, data="a")
    assert run_engine(pair.params()).ok
    zfs("release", pair.tags[0], f"{pair.dst}@{T1}")
    zfs("destroy", f"{pair.dst}@{T1}")
    snap(pair.src, T2, data="b")
    src_before = guids(pair.src)
    run = run_engine(pair.params())
    assert not run.ok and "allow_from_scratch" in run.message, run.message
    expect_kept(src_before, pair.src, "source")
    assert exists(pair.dst)  # the target's data is not replaced without consent


@pytest.mark.fault_class("target/source changed by hand")
def test_source_base_snapshot_destroyed_by_hand(pair):
    """The newest common snapshot destroyed on the source: the target's copy is now 'diverged' history; the run
    refuses (allow_rollback) and destroys nothing."""
    snap(pair.src, T1, data="a")
    snap(pair.src, T2, data="b")
    assert run_engine(pair.params()).ok
    zfs("release", pair.tags[0], f"{pair.src}@{T2}")
    zfs("destroy", f"{pair.src}@{T2}")
    snap(pair.src, T3, data="c")
    src_before, dst_before = guids(pair.src), guids(pair.dst)
    run = run_engine(pair.params())
    assert not run.ok and "allow_rollback" in run.message and T2 in run.message, run.message
    expect_kept(src_before, pair.src, "source")
    expect_kept(dst_before, pair.dst, "target")


@pytest.mark.fault_class("target/source changed by hand")
def test_target_dataset_renamed(pair):
    """The target renamed away: the next run sends a fresh full copy to the configured name; the renamed
    replica keeps every snapshot."""
    snap(pair.src, T1, data="a")
    assert run_engine(pair.params()).ok
    moved = f"{pair.parent}/moved"
    zfs("rename", pair.dst, moved)
    moved_before = guids(moved)
    snap(pair.src, T2, data="b")
    src_before = guids(pair.src)
    run = run_engine(pair.params())
    assert run.ok, run
    expect_kept(src_before, pair.src, "source")
    expect_kept(moved_before, moved, "renamed target")
    expect_replica(pair.src, pair.dst)


def _roll_source_back(pair) -> None:
    snap(pair.src, T1, data="a")
    snap(pair.src, T2, data="b")
    assert run_engine(pair.params()).ok
    zfs("release", pair.tags[0], f"{pair.src}@{T2}")
    zfs("rollback", "-r", f"{pair.src}@{T1}")
    snap(pair.src, T3, data="c")


@pytest.mark.fault_class("target/source changed by hand")
def test_source_rolled_back_is_refused(pair):
    """The source rolled back past the replicated snapshot and snapshotted anew: the target has history the
    source lost; the run refuses and keeps it."""
    _roll_source_back(pair)
    src_before, dst_before = guids(pair.src), guids(pair.dst)
    run = run_engine(pair.params())
    assert not run.ok and "diverged" in run.message and "allow_rollback" in run.message, run
    expect_kept(src_before, pair.src, "source")
    expect_kept(dst_before, pair.dst, "target")


@pytest.mark.fault_class("target/source changed by hand")
def test_source_rolled_back_with_allow_rollback(pair):
    _roll_source_back(pair)
    src_before = guids(pair.src)
    ok = run_engine(pair.params(allow_rollback=True))  # with consent: target rolled back to T1, then T3 arrives
    assert ok.ok, ok
    expect_kept(src_before, pair.src, "source")
    expect_replica(pair.src, pair.dst)


# ==================================================================================================== overlapping runs
RUNNER_MAIN = ("import sys\nfrom ansible_collections.zfs.replication.plugins.module_utils._runner import main\n"
               "sys.exit(main())\n")


@pytest.mark.fault_class("overlapping runs (runner lock)")
@pytest.mark.parametrize("lock_wait", [0, 120])
def test_overlapping_runs_of_one_task(pair, tmp_path, lock_wait):
    """Timer + run-now of the same task, started together through the timer entry point: with --lock-wait 0 the
    second skips, with a wait it runs after the first; either way one consistent replica, no snapshot lost."""
    snap(pair.src, T1, data="a", size=50_000)
    snap(pair.src, T2, data="b", size=800_000)
    snap(pair.src, T3, data="c", size=800_000)
    config = tmp_path / "repl.json"
    config.write_text(json.dumps({"kind": "replication", "name": pair.name, "params": pair.params(speed_limit=1_000_000)}))
    state_dir, log_dir = tmp_path / "state", tmp_path / "log"
    argv = [sys.executable, "-c", RUNNER_MAIN, "run", "--config", str(config), "--state-dir", str(state_dir),
            "--log-dir", str(log_dir), "--lock-wait", str(lock_wait)]
    procs = [subprocess.Popen(argv, env=engine_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _run in range(2)]
    outs = [p.communicate(timeout=180)[0] for p in procs]
    rcs = [p.returncode for p in procs]
    assert rcs == [0, 0], outs
    skipped = [o for o in outs if "skipped: another run of this task holds" in o]
    if lock_wait == 0:
        assert len(skipped) == 1, outs
    else:
        assert not skipped and sum("snapshot(s) sent" in o for o in outs) == 2, outs
        assert any(" 0 snapshot(s) sent" in o for o in outs), outs  # the second found nothing left to do
    state = json.loads((state_dir / f"repl-{pair.name}.json").read_text())
    assert state["result"] == "ok" and "running" not in state, state
    expect_replica(pair.src, pair.dst)
    assert held(pair.dst) == {f"{pair.dst}@{T3}": 1}


# ==================================================================================================== full destination pool
@pytest.mark.fault_class("full destination pool")
def test_full_destination_pool(pair, sandbox):
    """A 64M destination pool and more data than fits: a clear 'out of space' error, nothing destroyed on either
    side to make room (retention off), earlier replicas intact; the run after space is freed completes."""
    tiny = f"{sandbox.prefix}tiny"
    create_pool(tiny, "64M", directory=sandbox.workdir)
    dst = f"{tiny}/data"
    params = pair.params(target_dataset=dst)
    try:
        snap(pair.src, T1, data="a", size=200_000)
        assert run_engine(params).ok
        snap(pair.src, T2, data="b", size=200_000)
        assert run_engine(params).ok
        snap(pair.src, T3, data="big", size=20_000_000, count=4)  # 80 MB of random data into a 64 MB pool
        src_before, dst_before = guids(pair.src), guids(dst)
        run = run_engine(params, timeout=300)
        assert not run.ok, run
        assert "space" in run.message.lower(), run.message
        expect_kept(src_before, pair.src, "source")
        expect_kept(dst_before, dst, "target")
        assert sorted(guids(dst)) == [T1, T2]
        expect_replica(pair.src, dst, names=[T1, T2])
    finally:
        settle(dst)
        for _attempt in range(20):
            try:
                destroy_pool(tiny)
                break
            except Exception:  # noqa: BLE001  (busy right after a failed receive on zfs-fuse)
                time.sleep(0.5)
        (Path(sandbox.workdir) / f"{tiny}.img").unlink(missing_ok=True)
