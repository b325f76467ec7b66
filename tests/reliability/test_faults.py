# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Faults on real parts: cut connections, SIGKILLed runs, hands on the datasets between runs, overlapping runs,
a full destination pool. Each case checks guids and checksums on both sides and that no snapshot was lost."""
from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from faultlib import (
    DroppingProxy,
    EngineRun,
    StreamCut,
    destroy_r,
    engine_env,
    expect_files_kept,
    expect_kept,
    expect_replica,
    fault_injected,
    files,
    held,
    our_holds,
    run_engine,
    settle,
    snap,
    snaps,
    stream_size,
    tree,
)

from helpers import dataset_exists, zfs, zpool
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


def recovered(pair: Pair, src_before: dict[str, str], dst_before: dict[str, str], **more) -> EngineRun:
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
    return again


# ==================================================================================================== connection cut
RATE = 1_000_000  # speed_limit of the cut streams: a 1.5 MB stream lasts about 1.5 s, long enough to cut where meant


def _stream(pair: Pair, stream: str) -> tuple[int, str | None]:
    """Prepare a ~1.5 MB full or incremental stream of T1 (full) or T2 (on T1); return its real size and its base."""
    snap(pair.src, T1, data="a", size=750_000 if stream == "full" else 25_000)
    if stream == "full":
        return stream_size(pair.src, T1), None
    assert run_engine(pair.params()).ok
    snap(pair.src, T2, data="b", size=750_000)
    return stream_size(pair.src, T2, base=T1), T1


def _sent_bytes(run, pair: Pair) -> int:
    return run.result["datasets"][pair.dst]["bytes"]


@pytest.mark.fault_class("connection cut mid-stream")
@pytest.mark.parametrize("offset", [0.15, 0.5, 0.85, 1.0])
@pytest.mark.parametrize("stream", ["full", "incremental"])
def test_ssh_client_killed_mid_stream(pair, offset, stream, zfs_caps):
    """SIGKILL the ssh client that carries `zfs recv` when OFFSET of the real stream has passed; at 1.0 (all of it
    sent, the receive committing) the ssh master connection that carries the bytes, since the client then only waits
    for the exit status. Clean failure with a clear error (retries: 0), the next run completes. At 1.0 the receive
    may have committed before the connection went: then the run sees the snapshot on the target with the source's
    guid and completes without sending again."""
    total, _base = _stream(pair, stream)
    src_before, dst_before = tree(pair.src), tree(pair.dst)
    cut = StreamCut(total, offset, "ssh" if offset < 1 else "master", pair.dst)
    run = run_engine(pair.params(speed_limit=RATE), cut=cut)
    cut.check()
    arrived = [line for line in run.lines if "the connection dropped after" in line and "had arrived" in line]
    # A run that finished ok without seeing the connection drop was cut too late to be this case (its receive had
    # already reported back).
    fault_injected("the cut landed before the receive reported back", (not run.ok and bool(run.message)) or bool(arrived), repr(run))
    if run.ok:
        assert offset == 1.0 and pair.dst in arrived[0], run  # only a cut at the commit can find the stream arrived
        assert run.result["datasets"][pair.dst]["attempts"] == 1, run.result["datasets"]  # nothing was sent again
        expect_kept(src_before, pair.src, "source")
        expect_replica(pair.src, pair.dst)
        return
    # A clear error: names the stream and the ssh connection that went away.
    assert ("ssh" in run.message or "connection" in run.message.lower()) and pair.dst in run.message, run.message
    expect_kept(src_before, pair.src, "source")
    expect_kept(dst_before, pair.dst, "target")
    again = recovered(pair, src_before, dst_before)
    if again.result["datasets"][pair.dst]["resumed"]:  # the cut receive kept what arrived, and this run resumed it
        assert "resumable" in zfs_caps, again.result["datasets"]
    elif again.result["datasets"][pair.dst]["snapshots_sent"]:
        assert abs(_sent_bytes(again, pair) - total) < 0.01 * total, "the stream measured for the cut is not the one the engine sends"


@pytest.mark.fault_class("connection cut mid-stream")
def test_killed_ssh_client_is_retried(pair, zfs_caps):
    """The same cut with retries: 2: the run retries the stream by itself and succeeds: on OpenZFS from what the cut
    receive kept (its resume token), on zfs-fuse from the base again."""
    total, _base = _stream(pair, "incremental")
    src_before, dst_before = tree(pair.src), tree(pair.dst)
    cut = StreamCut(total, 0.4, "ssh", pair.dst)
    run = run_engine(pair.params(speed_limit=RATE, retries=2, retry_delay=0.2), cut=cut)
    cut.check()
    assert run.ok, run
    assert run.result["datasets"][pair.dst]["attempts"] == 2, run.result["datasets"]
    if "resumable" in zfs_caps:  # the retry sent only the rest of the stream
        assert run.result["datasets"][pair.dst]["resumed"] and 0 < _sent_bytes(run, pair) < total, run.result["datasets"]
    else:
        assert abs(_sent_bytes(run, pair) - total) < 0.01 * total
    assert any("attempt 1 failed" in line and "connection lost" in line for line in run.lines), run
    expect_kept(src_before, pair.src, "source")
    expect_kept(dst_before, pair.dst, "target")
    expect_replica(pair.src, pair.dst)


@pytest.mark.fault_class("connection cut mid-stream")
@pytest.mark.parametrize("offset", [0.05, 0.5, 0.9])
def test_proxy_drops_connection_mid_stream(pair, tmp_path, offset):
    """A TCP proxy resets the (shared ssh master) connection once OFFSET of the real stream has passed it after the
    stream started: the run fails with a clear error (retries: 0); the next run, through the same proxy
    disarmed, completes."""
    total, _base = _stream(pair, "incremental")
    src_before, dst_before = tree(pair.src), tree(pair.dst)
    proxy = DroppingProxy(pair.sandbox.sshd.port)
    try:
        kh = proxy.known_hosts(pair.sandbox, tmp_path / "kh")
        ssh = {**pair.params()["ssh"], "port": proxy.port, "known_hosts_file": str(kh)}
        want = int(offset * total)

        def arm_at_stream_start(line: str) -> bool:
            if line.strip().startswith("$ zfs send"):
                proxy.arm(want)
            return False

        run = run_engine(pair.params(ssh=ssh, speed_limit=RATE), kill_when=arm_at_stream_start)
        # The cut fell where meant: OFFSET of the stream past its start (ssh adds a little framing), before its end.
        fault_injected(f"connection reset {offset:.0%} into a {total} byte stream (cuts after {proxy.cuts} bytes)",
                       len(proxy.cuts) >= 1 and want < proxy.cuts[0] <= want + 0.15 * total and not run.ok, repr(run))
        assert "ssh" in run.message.lower() or "connection" in run.message.lower(), run.message
        expect_kept(src_before, pair.src, "source")
        expect_kept(dst_before, pair.dst, "target")
        proxy.disarm()
        recovered(pair, src_before, dst_before, ssh=ssh)
    finally:
        proxy.close()


@pytest.mark.fault_class("connection cut mid-stream")
def test_remote_zfs_recv_killed_during_first_full_stream(pair):
    """The receiving `zfs recv` (under sshd) SIGKILLed halfway through the first full stream: as when sshd
    hangs up on it after a dropped connection. The run fails; the next run must complete."""
    total, _base = _stream(pair, "full")
    src_before = tree(pair.src)
    cut = StreamCut(total, 0.5, "recv", pair.dst)
    run = run_engine(pair.params(speed_limit=RATE), cut=cut)
    cut.check()
    assert not run.ok, run
    assert pair.dst in run.message, run.message
    expect_kept(src_before, pair.src, "source")
    settle(pair.dst)
    again = run_engine(pair.params())
    assert again.ok, again
    expect_replica(pair.src, pair.dst)


# ==================================================================================================== SIGKILL of the engine
def _starts(prefix: str):
    return lambda line: line.strip().startswith(prefix)


ENGINE_POINTS = {
    # point: (what the kill interrupts, the log line after which it is sent, the log line it must come before)
    # or (what, a stream offset, None)
    "probe": ("probing and listing both sides", lambda line: line.startswith("task ") and " push " in line, _starts("plan ")),
    "stream:start": ("the stream's first bytes (planning to the stream has no window of its own)", 0.02, None),
    "stream:0.3": ("the stream at 30%", 0.3, None),
    "stream:0.7": ("the stream at 70%", 0.7, None),
    "stream:end": ("the receive's commit, the whole stream sent", 1.0, None),
    "received": ("moving the holds, right after the receive", _starts("done "), _starts("hold ")),
    "holds-moved": ("the end of the run, after the holds moved", _starts("hold "), lambda line: line.startswith("task ") and " sent" in line),
}
# Points whose next step can end before a kill sent on the line lands (a catch-up reads what arrived while the holds
# move, so after the holds' line the run only checks and reports): the run waits there, after the line, to be killed.
PAUSED_AFTER = {"holds-moved": "hold "}


@pytest.mark.fault_class("engine SIGKILLed")
@pytest.mark.parametrize("point", list(ENGINE_POINTS))
def test_engine_killed_then_next_run_recovers(pair, point):
    """SIGKILL the engine's process group at a point of an incremental run; the next run recovers."""
    snap(pair.src, T1, data="a", size=25_000)
    assert run_engine(pair.params()).ok
    snap(pair.src, T2, data="b", size=375_000)
    snap(pair.src, T3, data="c", size=375_000)
    total = stream_size(pair.src, T3, base=T1)
    src_before, dst_before = tree(pair.src), tree(pair.dst)
    what, where, before = ENGINE_POINTS[point]
    params = pair.params(speed_limit=RATE)
    if callable(where):
        run = run_engine(params, kill_when=where, pause_after=PAUSED_AFTER.get(point))
        # Killed (not exited), after its line and before the next step's line was printed.
        fault_injected(f"engine SIGKILLed during {what}", run.killed and run.rc == -signal.SIGKILL and any(where(x) for x in run.lines)
                       and not any(before(x) for x in run.lines), repr(run))
    else:
        cut = StreamCut(total, where, "engine", pair.dst)
        run = run_engine(params, cut=cut)
        cut.check()
        assert run.rc == -signal.SIGKILL, run
    expect_kept(src_before, pair.src, "source")
    expect_kept(dst_before, pair.dst, "target")
    recovered(pair, src_before, dst_before)


# ==================================================================================================== hands on the datasets
# A file written on the target between runs: tests/scenarios/test_faults.py, on both backends.


def _destroy_target_base(pair) -> None:
    snap(pair.src, T1, data="a")
    snap(pair.src, T2, data="b")
    assert run_engine(pair.params()).ok
    zfs("release", pair.tags[0], f"{pair.dst}@{T2}")
    zfs("destroy", f"{pair.dst}@{T2}")
    fault_injected("the target's base snapshot destroyed by hand", T2 not in snaps(pair.dst) and snaps(pair.dst) == [T1])
    snap(pair.src, T3, data="c")


@pytest.mark.fault_class("target/source changed by hand")
def test_target_base_snapshot_destroyed_by_hand(pair):
    """The newest common snapshot destroyed on the target: its data still holds T2's state, so an incremental
    from the previous common snapshot T1 needs a rollback: refused without consent, done with allow_rollback."""
    _destroy_target_base(pair)
    src_before, dst_before = tree(pair.src), tree(pair.dst)
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
    expect_replica(pair.src, pair.dst, names=[T1, T3])


@pytest.mark.fault_class("target/source changed by hand")
def test_every_target_snapshot_destroyed_is_refused(pair):
    snap(pair.src, T1, data="a")
    assert run_engine(pair.params()).ok
    zfs("release", pair.tags[0], f"{pair.dst}@{T1}")
    zfs("destroy", f"{pair.dst}@{T1}")
    fault_injected("every target snapshot destroyed by hand", dataset_exists(pair.dst) and snaps(pair.dst) == [])
    files_before = files(pair.dst)
    snap(pair.src, T2, data="b")
    src_before = tree(pair.src)
    run = run_engine(pair.params())
    assert not run.ok and "allow_from_scratch" in run.message, run.message
    expect_kept(src_before, pair.src, "source")
    expect_files_kept(files_before, pair.dst)  # the target's data is not replaced without consent


@pytest.mark.fault_class("target/source changed by hand")
def test_source_base_snapshot_destroyed_by_hand(pair):
    """The newest common snapshot destroyed on the source: the target's copy is now 'diverged' history; the run
    refuses (allow_rollback) and destroys nothing."""
    snap(pair.src, T1, data="a")
    snap(pair.src, T2, data="b")
    assert run_engine(pair.params()).ok
    zfs("release", pair.tags[0], f"{pair.src}@{T2}")
    zfs("destroy", f"{pair.src}@{T2}")
    fault_injected("the source's base snapshot destroyed by hand", snaps(pair.src) == [T1])
    snap(pair.src, T3, data="c")
    src_before, dst_before = tree(pair.src), tree(pair.dst)
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
    fault_injected("the target renamed away", not dataset_exists(pair.dst) and snaps(moved) == [T1])
    moved_before = tree(moved)
    snap(pair.src, T2, data="b")
    src_before = tree(pair.src)
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
    fault_injected("the source rolled back past the replicated snapshot", snaps(pair.src) == [T1] and T2 in snaps(pair.dst))
    snap(pair.src, T3, data="c")


@pytest.mark.fault_class("target/source changed by hand")
def test_source_rolled_back_is_refused(pair):
    """The source rolled back past the replicated snapshot and snapshotted anew: the target has history the
    source lost; the run refuses and keeps it."""
    _roll_source_back(pair)
    src_before, dst_before = tree(pair.src), tree(pair.dst)
    run = run_engine(pair.params())
    assert not run.ok and "diverged" in run.message and "allow_rollback" in run.message, run
    expect_kept(src_before, pair.src, "source")
    expect_kept(dst_before, pair.dst, "target")


@pytest.mark.fault_class("target/source changed by hand")
def test_source_rolled_back_with_allow_rollback(pair):
    _roll_source_back(pair)
    src_before, dst_before = tree(pair.src), tree(pair.dst)
    ok = run_engine(pair.params(allow_rollback=True))  # with consent: target rolled back to T1, then T3 arrives
    assert ok.ok, ok
    expect_kept(src_before, pair.src, "source")
    expect_kept({k: g for k, g in dst_before.items() if k != f"@{T2}"}, pair.dst, "target")  # only the diverged T2 goes
    expect_replica(pair.src, pair.dst)


# ==================================================================================================== overlapping runs
RUNNER_MAIN = ("import sys\nfrom ansible_collections.zfs.replication.plugins.module_utils._runner import main\n"
               "sys.exit(main())\n")


@pytest.mark.fault_class("overlapping runs (runner lock)")
def test_overlapping_runs_of_one_task_wait_for_the_lock(pair, tmp_path):
    """Timer + run-now of the same task, started together through the timer entry point with --lock-wait 120: the
    second runs after the first; one consistent replica, no snapshot lost. (--lock-wait 0, the second skipping at
    the lock: tests/scenarios/test_faults.py, on both backends.)"""
    snap(pair.src, T1, data="a", size=50_000)
    snap(pair.src, T2, data="b", size=800_000)
    snap(pair.src, T3, data="c", size=400_000)
    src_before = tree(pair.src)
    config = tmp_path / "repl.json"
    config.write_text(json.dumps({"kind": "replication", "name": pair.name, "params": pair.params(speed_limit=1_000_000)}))
    state_dir, log_dir = tmp_path / "state", tmp_path / "log"
    argv = [sys.executable, "-c", RUNNER_MAIN, "run", "--config", str(config), "--state-dir", str(state_dir),
            "--log-dir", str(log_dir), "--lock-wait", "120"]
    procs = [subprocess.Popen(argv, env=engine_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _run in range(2)]
    outs = [p.communicate(timeout=180)[0] for p in procs]
    rcs = [p.returncode for p in procs]
    assert rcs == [0, 0], outs
    skipped = [o for o in outs if "skipped: another run of this task holds" in o]
    # The overlap happened: one run met the other's lock, waited, then found nothing left to do.
    fault_injected("two runs of one task at once, the second waited for the lock",
                   not skipped and sum("snapshot(s) sent" in o for o in outs) == 2 and sum(" 0 snapshot(s) sent" in o for o in outs) == 1,
                   "\n".join(outs))
    expect_kept(src_before, pair.src, "source")
    state = json.loads((state_dir / f"repl-{pair.name}.json").read_text())
    assert state["result"] == "ok" and "running" not in state, state
    expect_replica(pair.src, pair.dst)
    assert held(pair.dst) == {f"{pair.dst}@{T3}": 1}


# ==================================================================================================== full destination pool
@pytest.mark.fault_class("full destination pool")
def test_full_destination_pool(pair, sandbox):
    """A 64M destination pool and more data than fits: a clear 'out of space' error, nothing destroyed on either
    side to make room (retention off), earlier replicas intact; once the pool has room (a second disk added), the
    next run completes (on OpenZFS it resumes what the receive kept)."""
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
        src_before, dst_before = tree(pair.src), tree(dst)
        run = run_engine(params, timeout=300)
        fault_injected("the destination pool ran out of space", not run.ok and "space" in run.message.lower(), repr(run))
        expect_kept(src_before, pair.src, "source")
        expect_kept(dst_before, dst, "target")
        assert sorted(tree(dst)) == [f"@{T1}", f"@{T2}"]  # nothing of T3 landed as a snapshot
        # The files are compared once there is room: OpenZFS keeps what arrived of T3 (resumable), filling the pool.
        more = Path(sandbox.workdir) / f"{tiny}-more.img"
        subprocess.run(["truncate", "-s", "256M", str(more)], check=True)
        zpool("add", "-f", tiny, str(more))
        again = run_engine(params, timeout=300)
        assert again.ok, again
        expect_replica(pair.src, dst, names=[T1, T2, T3])
    finally:
        settle(dst)
        for _attempt in range(20):
            try:
                destroy_pool(tiny)
                break
            except Exception:  # noqa: BLE001  (busy right after a failed receive on zfs-fuse)
                time.sleep(0.5)
        for image in (f"{tiny}.img", f"{tiny}-more.img"):
            (Path(sandbox.workdir) / image).unlink(missing_ok=True)
