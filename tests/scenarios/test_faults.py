# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fault suite on each backend: cut connections, SIGKILLed runs, a target written by hand, a
full destination pool, overlapping runs, hostile names and hostile received properties, written once and run on
OpenZFS (the guest) and zfs-fuse. Each case proves its fault happened (faulttable.fault_injected, else it fails with
FaultNotInjected) and compares both sides' snapshots, guids and file checksums before and after it; the fault table
(tests/faulttable.py) prints what they saw per backend and fault class.

Cuts at a byte offset are made ON the backend's host by CUTTER: the engine runs with ZR_CUT=<tag> in its
environment, which its processes inherit; the cutter finds them by it, follows the stream's pv (`wchar`, the bytes
pv passed on; the engine pipes through pv, rate-limited so the stream lasts seconds) or, on OpenZFS, what the
target's `zfs recv` has read (`rchar`: the data that reached the receive, not what ssh still buffers) and, at
the offset, kills the ssh master connection or SIGKILLs every process of the run. It prints what it killed and at which offset.
"""
from __future__ import annotations

import base64
import json
import re
import secrets
import shlex
import threading

import pytest
from faulttable import fault_injected

from backends import Backend, EngineRun
from scenario_helpers import (
    exists,
    expect_kept,
    expect_replica,
    held,
    message,
    over_ssh,
    params,
    parent,
    prop_source,
    snap,
    snaps,
    stream_size,
    tree,
)

T1, T2, T3, T4 = (f"auto-2026-11-28_1{i}-00" for i in range(4))
RATE = 250_000  # speed_limit of the cut streams (B/s): a 1 MB stream lasts about 4 s, long enough to cut where meant
SIZE = 1_000_000

CUTTER = r'''
import os, signal, sys, time
tag, mode, at, total, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
target = sys.argv[6] if len(sys.argv) > 6 else ''  # count what this dataset's zfs recv has read, not pv's output
marker, me = ('ZR_CUT=' + tag).encode(), os.getpid()

def procs(only=None):
    # (pid, tagged, command line) of every process, or of those whose command line ONLY(cmd) accepts (the environment
    # is read for those alone: a whole scan costs a one-vCPU emulated guest real time, and the engine needs it too)
    for pid in os.listdir('/proc'):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            cmd = open(f'/proc/{pid}/cmdline', 'rb').read().replace(b'\0', b' ').decode(errors='replace')
            if only and not only(cmd):
                continue
            env = open(f'/proc/{pid}/environ', 'rb').read().split(b'\0')
        except OSError:
            continue
        yield int(pid), marker in env, cmd

def alive(pid):
    try:
        return open(f'/proc/{pid}/stat').read().rsplit(') ', 1)[1].split()[0] != 'Z'
    except (OSError, IndexError):
        return False

def io(pid, field):
    try:
        for line in open(f'/proc/{pid}/io'):
            if line.startswith(field + ':'):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None

def receiver():
    # The receiving zfs runs under sshd on this same host (the loopback target): what it has read is what reached the
    # receive, whatever ssh and the sockets still buffer (a slow receive start would otherwise see no data at all).
    for pid in os.listdir('/proc') if target else ():
        try:
            words = open(f'/proc/{pid}/cmdline', 'rb').read().decode(errors='replace').split('\0')
        except OSError:
            continue
        if words[:2] in (['zfs', 'recv'], ['zfs', 'receive']) and target in ' '.join(words):
            return int(pid)
    return None

def done(why):
    signal_pv(signal.SIGCONT)
    print('NOCUT ' + why, flush=True)
    sys.exit(0)

def lockstep(pid):
    # pv (the rate-limited stage: what is downstream has only what pv passed on) shares one CPU with this cutter, which
    # is first in line there (nice -10; a real-time class let its polling starve a one-vCPU guest's pipeline): when
    # the host starves that CPU (an emulated guest on a loaded machine), pv stops with the cutter instead of running
    # on unwatched, so the cut lands where it is meant to.
    try:
        cpu = {min(os.sched_getaffinity(0))}
        os.sched_setaffinity(pid, cpu)
        os.sched_setaffinity(0, cpu)
        os.setpriority(os.PRIO_PROCESS, 0, -10)
    except (OSError, AttributeError):
        pass

def signal_pv(sig):
    try:
        if pv:
            os.kill(pv, sig)
    except ProcessLookupError:
        pass

deadline, pv, started = time.time() + timeout, None, False
while pv is None:
    tagged = [(pid, cmd) for pid, t, cmd in procs(lambda cmd: cmd.startswith('pv ') or 'scenario_driver.py' in cmd) if t]
    started = started or bool(tagged)
    if started and not tagged:
        done('the run ended before its stream started')
    if time.time() > deadline:
        done('no tagged run with a pv seen')
    pv = next((pid for pid, cmd in tagged if cmd.startswith('pv ')), None)
    time.sleep(0.02)  # the stream lasts seconds at its rate
lockstep(pv)
seen, recv = 0, None
while True:
    recv = recv or (receiver() if target else None)
    watched = recv or pv
    count, ended = io(watched, 'rchar' if recv else 'wchar'), not alive(watched)
    if count is not None:
        seen = count
    if ended and at >= total and not recv:
        seen = max(seen, total)  # pv exits at the end of its input: all of the stream has passed it
    if seen >= at:
        break
    if ended:
        done(f'the stream {"zfs recv" if recv else "pv"} exited after {seen} of {total} bytes, before the cut at {at}')
    time.sleep(0.01 if recv or not target else 0.02)  # 2.5 KB of the stream at its rate; a /proc scan, less often
signal_pv(signal.SIGSTOP)  # nothing more enters the stream while the cut is made
tagged = [(pid, cmd) for pid, t, cmd in procs() if t]
if not any('scenario_driver.py' in cmd for pid, cmd in tagged):
    done(f'the engine had already exited when {seen} bytes had passed')
if mode == 'master':
    where = next((cmd.split('ControlPath=', 1)[1].split()[0].rsplit('/', 1)[0] for pid, cmd in tagged if 'ControlPath=' in cmd), None)
    # The master retitles itself "ssh: <ControlPath> [mux]": found by its socket's directory, not by its argv.
    victims = [(pid, cmd) for pid, t, cmd in procs() if where and where + '/' in cmd and '[mux]' in cmd]
else:
    victims = tagged
victims = [(pid, cmd) for pid, cmd in victims if alive(pid)]
if not victims:
    done(f'nothing to kill ({mode}) when {seen} bytes had passed')
for pid, cmd in victims:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
signal_pv(signal.SIGCONT)  # pv (when it was no victim) meets the cut pipe and ends
print(f'CUT {mode} at {seen} of {total}: killed ' + '; '.join(f'{pid} {cmd[:60]}' for pid, cmd in victims), flush=True)
'''


class Cut:
    """CUTTER on the backend's host, watching one engine run: `run(params)` runs the engine with the cut armed."""

    def __init__(self, backend: Backend, mode: str, fraction: float, total: int, target: str = "") -> None:
        self.backend, self.mode, self.fraction, self.total, self.target = backend, mode, fraction, total, target
        self.tag = secrets.token_hex(6)
        self.report = ""

    @property
    def at(self) -> int:
        return int(self.fraction * self.total)

    def _watch(self) -> None:
        args = shlex.join([self.tag, self.mode, str(self.at), str(self.total), "600", self.target])
        try:
            self.report = self.backend.sh(f"python3 - {args} <<'ZR_CUTTER'\n{CUTTER}\nZR_CUTTER\n", timeout=700).strip()
        except AssertionError as exc:
            self.report = f"NOCUT the cutter failed: {exc}"

    def run(self, task: dict) -> EngineRun:
        watcher = threading.Thread(target=self._watch, daemon=True)
        watcher.start()
        run = self.backend.engine(task, env={"ZR_CUT": self.tag})
        watcher.join(timeout=120)
        return run

    @property
    def cut_at(self) -> int | None:
        m = re.match(r"CUT \S+ at (\d+) of", self.report)
        return int(m.group(1)) if m else None

    def check(self, what: str, slack: float = 0.15) -> None:
        """The cut happened, at the intended offset (no earlier; later by at most SLACK of the stream), else FaultNotInjected."""
        at = self.cut_at
        if self.fraction >= 1:
            ok = at is not None and at >= 0.99 * self.total
        else:
            ok = at is not None and self.at <= at <= min(self.total - 1, (self.fraction + slack) * self.total)
        where = "at the end of" if self.fraction >= 1 else f"at {self.fraction:.0%} of"
        fault_injected(f"{self.backend.name}: {what} {where} a {self.total} byte stream (cut after {at} bytes)", ok, self.report)


def prepare_stream(backend: Backend, task: dict, stream: str) -> tuple[int, str | None]:
    """A ~1 MB full stream of T1, or an incremental T1 -> T2 after a first replication of T1; its real size and base."""
    src = task["source_datasets"][0]
    snap(backend, src, T1, data="a", size=SIZE if stream == "full" else 20_000)
    if stream == "full":
        return stream_size(backend, src, T1), None
    first = backend.engine(task)
    assert first.ok, str(first)
    snap(backend, src, T2, data="b", size=SIZE)
    return stream_size(backend, src, T2, base=T1), T1


def resumed_bytes(run: EngineRun, target: str) -> int | None:
    """What the run reported sending to finish TARGET's interrupted receive ("resumed <target>: N bytes in ...")."""
    for line in (run.result or {}).get("log") or run.log:
        if line.startswith(f"resumed {target}: "):
            count = line.split(": ", 1)[1].split()[0]
            return int(count) if count.isdigit() else None
    return None


# ==================================================================================================== connection cut
@pytest.mark.fault_class("connection cut mid-stream")
@pytest.mark.parametrize("stream", ["full", "incremental"])
def test_connection_cut_mid_stream_then_next_run_completes(backend: Backend, stream: str) -> None:
    """The ssh master connection that carries the stream killed at 50% of it (retries: 0): the run fails naming the
    target and the connection; the next run completes. On OpenZFS it resumes the receive (less than the whole stream
    is sent again); on zfs-fuse (no resumable receive) it sends the stream again from its start."""
    src, dst = backend.pair("cut")
    task = over_ssh(backend, src, dst)
    total, _base = prepare_stream(backend, task, stream)
    src_before, dst_before = tree(backend, src), tree(backend, dst)
    # OpenZFS: cut at what the receive has read, so there is a partial state to resume. zfs-fuse's zfs hands its
    # stdin to the daemon (the client reads nothing): there the cut follows pv.
    cut = Cut(backend, "master", 0.5, total, target=dst if "resumable" in backend.caps else "")
    run = cut.run({**task, "speed_limit": RATE})
    cut.check("the ssh master connection killed")
    fault_injected(f"{backend.name}: the cut landed before the receive reported back", run.failed and bool(message(run)), str(run))
    text = message(run)
    assert ("ssh" in text or "connection" in text.lower()) and dst in text, text
    expect_kept(backend, src_before, src, "source")
    expect_kept(backend, dst_before, dst, "target")

    again = backend.engine(task)
    assert again.ok, f"the run after the cut did not complete: {again}"
    if "resumable" in backend.caps:
        sent = resumed_bytes(again, dst)
        assert again.dataset(dst)["resumed"] is True and sent is not None, str(again)
        assert 0 < sent < total, f"the resumed receive sent {sent} of the {total} byte stream: not a resume"
    else:
        assert again.dataset(dst)["resumed"] is False, str(again)
        assert abs(again.dataset(dst)["bytes"] - total) < 0.02 * total, (again.dataset(dst), total)  # the whole stream again
    expect_kept(backend, src_before, src, "source")
    expect_kept(backend, dst_before, dst, "target")
    expect_replica(backend, src, dst)
    # The task's hold is on the newest common snapshot on each side, also when the resume completed it and there
    # was nothing left to send: between runs, pruning must not take the next incremental's base.
    newest = snaps(backend, src)[-1]
    for side, dataset in (("source", src), ("target", dst)):
        assert f"{dataset}@{newest}" in held(backend, dataset), (side, newest, held(backend, dataset), str(again))


# ==================================================================================================== SIGKILL of the engine
@pytest.mark.fault_class("engine SIGKILLed")
@pytest.mark.parametrize("fraction", [0.5, 1.0], ids=["mid-stream", "receive-commit"])
def test_engine_sigkilled_then_next_run_recovers(backend: Backend, fraction: float) -> None:
    """Every process of the run SIGKILLed (what systemd does to a unit's cgroup) at 50% of an incremental stream, or
    once all of it has passed and the receive is committing: no result was reported, nothing was lost, and the next
    run completes the replica."""
    src, dst = backend.pair("kill")
    task = over_ssh(backend, src, dst)
    total, _base = prepare_stream(backend, task, "incremental")
    src_before, dst_before = tree(backend, src), tree(backend, dst)
    # Mid-stream on OpenZFS: counted at what the receive has read (in the guest's pipeline pv's write count was seen
    # at 16 bytes when it exited after the whole 1 MB stream: most likely its splice(2) path, which that count does not
    # show). At the commit: once pv has passed all of it and exited.
    cut = Cut(backend, "engine", fraction, total, target=dst if "resumable" in backend.caps and fraction < 1 else "")
    run = cut.run({**task, "speed_limit": RATE})
    cut.check("the engine's processes SIGKILLed")
    fault_injected(f"{backend.name}: the engine died before reporting", run.result is None and run.rc != 0, str(run))
    expect_kept(backend, src_before, src, "source")
    expect_kept(backend, dst_before, dst, "target")
    again = backend.engine(task)
    assert again.ok, f"the run after the kill did not recover: {again}"
    expect_kept(backend, src_before, src, "source")
    expect_kept(backend, dst_before, dst, "target")
    expect_replica(backend, src, dst)


# ==================================================================================================== hands on the target
@pytest.mark.fault_class("target/source changed by hand")
def test_target_written_by_hand_is_refused_then_rolled_back_with_consent(backend: Backend) -> None:
    """A file written on the replica between runs: the next run refuses (naming allow_rollback and the modification)
    and keeps the change; with allow_rollback the change is discarded and the replica completes."""
    src, dst = backend.pair("hand")
    task = params(src, dst, readonly="ignore")
    snap(backend, src, T1, data="a")
    assert backend.engine(task).ok
    backend.write(dst, "local-change", size=1000)
    fault_injected(f"{backend.name}: a file written on the target", "local-change.bin" in backend.checksums(dst))
    snap(backend, src, T2, data="b")
    src_before, dst_before = tree(backend, src), tree(backend, dst)
    run = backend.engine(task)
    assert run.failed and "allow_rollback" in message(run) and "modified" in message(run), run
    expect_kept(backend, src_before, src, "source")
    expect_kept(backend, dst_before, dst, "target")
    assert "local-change.bin" in backend.checksums(dst)  # the change is not discarded silently
    ok = backend.engine({**task, "allow_rollback": True})
    assert ok.ok, str(ok)
    expect_kept(backend, src_before, src, "source")
    expect_replica(backend, src, dst)
    assert "local-change.bin" not in backend.checksums(dst)


# ==================================================================================================== full destination pool
@pytest.mark.fault_class("full destination pool")
@pytest.mark.backends("openzfs", reason="zfs-fuse's full pool case is tests/reliability/test_faults.py::test_full_destination_pool "
                      "(a pool on the sandbox's files); here a 64M pool in the guest that grows with zpool online -e")
def test_full_destination_pool_then_grown(backend: Backend) -> None:
    """A 64M file-backed destination pool filled up: a clear out-of-space error, nothing destroyed on either side,
    earlier replicas intact; after the pool's file grows and `zpool online -e`, the next run completes."""
    src, _dst = backend.pair("full")
    pool, img = f"zrfull{secrets.token_hex(3)}", f"/var/tmp/zrfull-{secrets.token_hex(3)}.img"
    backend.sh(f"truncate -s 64M {img} && zpool create -o cachefile=none -O compression=off {pool} {img}")
    dst = f"{pool}/data"
    task = params(src, dst)
    try:
        snap(backend, src, T1, data="a")
        assert backend.engine(task).ok
        snap(backend, src, T2, data="b")
        assert backend.engine(task).ok
        backend.zfs("create", "-o", "compression=off", f"{pool}/filler")
        backend.sh(f"dd if=/dev/zero of=/{pool}/filler/fill bs=1M 2>/dev/null || true; sync")
        snap(backend, src, T3, data="c", size=3_000_000)
        src_before, dst_before = tree(backend, src), tree(backend, dst)
        run = backend.engine(task)
        fault_injected(f"{backend.name}: the destination pool ran out of space", run.failed and "space" in message(run).lower(), str(run))
        expect_kept(backend, src_before, src, "source")
        expect_kept(backend, dst_before, dst, "target")
        assert sorted(tree(backend, dst)) == [f"@{T1}", f"@{T2}"]  # nothing of T3 was left half received
        backend.sh(f"truncate -s 256M {img} && zpool online -e {pool} {img}")
        # the replica's checksums are read from a clone: compared once the pool has room for one
        expect_replica(backend, src, dst, names=[T1, T2])
        again = backend.engine(task)
        assert again.ok, f"the run after the pool grew did not complete: {again}"
        expect_kept(backend, src_before, src, "source")
        expect_kept(backend, dst_before, dst, "target")
        expect_replica(backend, src, dst)
    finally:
        backend.sh(f"zpool destroy -f {pool} || true; rm -f {img}")


# ==================================================================================================== overlapping runs
RUNNER_MAIN = "import sys\nfrom {pkg}._runner import main\nsys.exit(main())\n"


@pytest.mark.fault_class("overlapping runs (runner lock)")
def test_overlapping_runs_the_second_is_refused_at_the_lock(backend: Backend) -> None:
    """Two runs of one task at once through the timer's entry point (--lock-wait 0): the second starts while the first
    holds the task's lock (its state says running), skips naming the lock and changes nothing; the first completes."""
    src, dst = backend.pair("lock")
    task = over_ssh(backend, src, dst)
    snap(backend, src, T1, data="a", size=20_000)
    assert backend.engine(task).ok
    snap(backend, src, T2, data="b", size=SIZE)
    src_before, dst_before = tree(backend, src), tree(backend, dst)
    work = backend.sh("mktemp -d /tmp/zr-lock.XXXXXX").strip()
    config = json.dumps({"kind": "replication", "name": task["name"], "params": {**task, "speed_limit": RATE // 2}})
    py, main = backend.python(), shlex.quote(RUNNER_MAIN.format(pkg=backend.engine_import()))
    run = f"{py} -c {main} run --config {work}/repl.json --state-dir {work}/state --log-dir {work}/log --lock-wait 0"
    out = backend.sh(f"""
        echo {base64.b64encode(config.encode()).decode()} | base64 -d > {work}/repl.json
        {run} > {work}/first.out 2>&1 & first=$!
        n=0; until grep -q '"running"' {work}/state/repl-{task["name"]}.json 2>/dev/null; do
            n=$((n+1)); [ $n -lt 1200 ] || break; kill -0 $first 2>/dev/null || break; sleep 0.05; done
        {run} > {work}/second.out 2>&1; echo "SECOND rc=$?"
        kill -0 $first 2>/dev/null && echo "FIRST still running" || true
        wait $first; echo "FIRST rc=$?"
        echo "--- first"; cat {work}/first.out; echo "--- second"; cat {work}/second.out
        echo "--- state"; cat {work}/state/repl-{task["name"]}.json; rm -rf {work}
    """, timeout=600)
    second = out.split("--- second", 1)[1].split("--- state", 1)[0]
    fault_injected(f"{backend.name}: a second run of the task while the first held its lock",
                   "FIRST still running" in out and "skipped: another run of this task holds" in second, out)
    assert "SECOND rc=0" in out and "FIRST rc=0" in out, out
    state = json.loads(out.split("--- state", 1)[1])
    assert state["result"] == "ok" and "running" not in state, state
    expect_kept(backend, src_before, src, "source")
    expect_kept(backend, dst_before, dst, "target")
    expect_replica(backend, src, dst)


# ==================================================================================================== hostile names and properties
@pytest.mark.fault_class("hostile input (argv, names, hosts)")
def test_hostile_names_are_refused_and_odd_valid_names_replicate(backend: Backend) -> None:
    """Source and target names and snapshot selections that would be shell or zfs options are refused before anything
    runs, naming the field, with nothing changed and no file made; names at the edges of what is valid (every allowed
    character, components starting with a digit or _, long ones) replicate, children and odd snapshot names included."""
    src, dst = backend.pair("name")
    snap(backend, src, T1, data="a", size=10_000)
    pwned = f"/tmp/zr-pwned-{secrets.token_hex(3)}"
    before = {pool: tree(backend, pool) for pool in (backend.src_pool, backend.dst_pool)}
    hostile = {"source_datasets": [f"{src};touch {pwned}"], "target_dataset": f"{dst} -o mountpoint=/etc",
               "snapshots": [f"$(touch {pwned})"]}
    for field, value in hostile.items():
        run = backend.engine({**params(src, dst), field: value})
        assert run.error is not None and field in run.error, (field, run)
    fault_injected(f"{backend.name}: hostile names in source_datasets, target_dataset and snapshots", True)
    assert backend.sh(f"test -e {pwned} && echo made || echo none").strip() == "none"
    for pool, snapshots in before.items():
        expect_kept(backend, snapshots, pool, "pool")  # nothing destroyed or changed by the refused runs

    odd_src = f"{src}/V.a:b_c-d"
    child = f"{odd_src}/0_.:-{'x' * 60}"
    odd_dst = f"{parent(dst)}/9.t:a_r-g"
    names = ["_a.b:c-d", "0", "Z9:" + "y" * 80]
    backend.zfs("create", odd_src)
    backend.zfs("create", child)
    for i, name in enumerate(names):
        snap(backend, odd_src, name, data=f"v{i}", size=10_000)
        snap(backend, child, name, data=f"c{i}", size=10_000)
    task = {k: v for k, v in over_ssh(backend, odd_src, odd_dst, recursive=True, name_regex=".*").items() if k != "naming_schema"}
    run = backend.engine(task)
    assert run.ok, str(run)
    expect_replica(backend, odd_src, odd_dst)
    assert sorted(tree(backend, odd_dst)) == sorted(tree(backend, odd_src)) and len(tree(backend, odd_dst)) == 2 * len(names)


@pytest.mark.fault_class("hostile received properties")
@pytest.mark.backends("openzfs", reason="zfs-fuse has no zfs recv -o/-x: its emulation is "
                      "tests/reliability/test_hostile.py::test_received_mountpoint_over_a_system_path_is_not_mounted")
def test_hostile_received_properties_do_not_take_effect(backend: Backend) -> None:
    """The source says mountpoint=<a populated system directory>, canmount=on, setuid=on, devices=on: the replica is
    received unmounted, nothing covers the directory, its files stay; it does not take the source's mountpoint (it
    inherits the target's), and canmount/setuid/devices are the safe values, set locally."""
    src, dst = backend.pair("prop")
    fake_etc = backend.sh("d=$(mktemp -d /tmp/zr-etc.XXXXXX) && echo root:x:0:0:root:/root:/bin/sh > $d/passwd && echo $d").strip()
    snap(backend, src, T1, data="a", size=10_000)
    backend.zfs("unmount", src)
    backend.zfs("set", "canmount=noauto", src)  # the SOURCE must not mount over it here
    backend.zfs("set", f"mountpoint={fake_etc}", src)
    backend.zfs("set", "canmount=on", src)
    backend.zfs("set", "setuid=on", src)
    backend.zfs("set", "devices=on", src)
    backend.sh(f"! grep -q ' {fake_etc} ' /proc/mounts || zfs unmount {shlex.quote(src)}")
    backend.zfs("snapshot", f"{src}@{T2}")
    run = backend.engine(over_ssh(backend, src, dst))
    assert run.ok, str(run)
    fault_injected(f"{backend.name}: the source sent mountpoint={fake_etc} canmount=on setuid=on devices=on",
                   prop_source(backend, src, "mountpoint") == (fake_etc, "local") and bool(run.dataset(dst)["snapshots_sent"]))
    assert backend.prop(dst, "mounted") == "no"
    mounts = backend.sh("cat /proc/mounts")
    assert f" {fake_etc} " not in mounts, mounts
    assert backend.sh(f"cat {fake_etc}/passwd").startswith("root:")
    assert prop_source(backend, dst, "canmount") == ("noauto", "local")
    assert prop_source(backend, dst, "setuid") == ("off", "local")
    assert prop_source(backend, dst, "devices") == ("off", "local")
    value, source = prop_source(backend, dst, "mountpoint")
    assert source.startswith("inherited from ") and fake_etc not in value, (value, source)
    expect_replica(backend, src, dst)
    backend.sh(f"rm -rf {fake_etc}")
    assert exists(backend, dst) and snaps(backend, dst) == [T1, T2]
