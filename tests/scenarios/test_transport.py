# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Directions and transports on each backend: push and pull over the backend host's own sshd, local, ssh+netcat,
ciphers, compression, rate limit and buffer, retries after a dropped connection. Every check reads the pools: snapshot
names and guids on both sides, file checksums of the replicas, holds, property values and their source."""
from __future__ import annotations

import re
import shlex
import time

import pytest

from scenario_helpers import (
    child_checksums,
    guids,
    held,
    message,
    missing_tools,
    over_ssh,
    params,
    parent,
    prop_source,
    require_tools,
    sends,
    shims,
    snaps,
    state,
)


def test_push_over_ssh_full_incremental_then_in_sync(backend):
    src, dst = backend.pair("push")
    backend.zfs("create", f"{src}/child")
    backend.write(src, "one")
    backend.write(f"{src}/child", "kid")
    backend.zfs("snapshot", "-r", f"{src}@auto-2026-11-28_10-00")
    backend.zfs("snapshot", "-r", f"{src}@manual-keep-out")  # not selected by the schema
    backend.write(src, "two")
    backend.zfs("snapshot", "-r", f"{src}@auto-2026-11-28_11-00")
    p = over_ssh(backend, src, dst, recursive=True, ssh={"cipher": "fast"})

    first = backend.engine(p)

    assert first.ok, str(first)
    assert first.result["changed"] is True and first.result["snapshots_sent"] == 4
    assert first.result["bytes"] > 200_000  # pv counted the real streams (two 100 kB files at least)
    assert first.dataset(dst)["snapshots_sent"] == ["auto-2026-11-28_10-00", "auto-2026-11-28_11-00"]
    version = first.result["capabilities"]["target"]["version"]
    assert (version is not None) is ("openzfs" in backend.caps), version  # the legacy command line has no version
    want = {k: v for k, v in backend.snapshots_with_guids(src).items() if "manual" not in k}
    assert len(want) == 4 and backend.snapshots_with_guids(dst) == want
    assert prop_source(backend, dst, "readonly") == ("on", "local")
    assert backend.checksums(dst) == backend.checksums(src)
    assert child_checksums(backend, f"{dst}/child") == backend.checksums(f"{src}/child")

    again = backend.engine(p)
    assert again.ok, str(again)
    assert again.result["changed"] is False and again.result["snapshots_sent"] == 0
    assert {d["action"] for d in again.result["plan"]} == {"in_sync"}

    backend.write(src, "three")
    backend.zfs("snapshot", "-r", f"{src}@auto-2026-11-28_12-00")
    inc = backend.engine(p)
    assert inc.ok, str(inc)
    assert inc.result["snapshots_sent"] == 2
    root = next(d for d in inc.result["plan"] if d["source"] == src)
    assert root["action"] == "incremental" and root["base"] == "auto-2026-11-28_11-00"
    assert sends(inc, src) == [("I", "auto-2026-11-28_11-00", "auto-2026-11-28_12-00")]
    assert backend.snapshots_with_guids(dst) == {k: v for k, v in backend.snapshots_with_guids(src).items() if "manual" not in k}
    assert backend.checksums(dst) == backend.checksums(src)


def test_pull_over_ssh_with_a_named_cipher_holds_the_base_on_both_sides(backend):
    """direction pull: the engine runs on the target and fetches from the source over ssh."""
    src, dst = backend.pair("pull")
    backend.zfs("create", f"{src}/child")
    backend.write(src, "p1")
    backend.zfs("snapshot", "-r", f"{src}@auto-2026-11-28_10-00")
    backend.write(f"{src}/child", "kid")
    backend.write(src, "p2")
    backend.zfs("snapshot", "-r", f"{src}@auto-2026-11-28_11-00")
    backend.zfs("snapshot", "-r", f"{src}@manual-not-selected")
    p = over_ssh(backend, src, dst, direction="pull", recursive=True, ssh={"cipher": "chacha20-poly1305@openssh.com"})

    first = backend.engine(p)

    assert first.ok, str(first)
    assert first.result["snapshots_sent"] == 4
    assert sends(first, src) == [("full", None, "auto-2026-11-28_10-00"), ("I", "auto-2026-11-28_10-00", "auto-2026-11-28_11-00")]
    want = {k: v for k, v in backend.snapshots_with_guids(src).items() if "manual" not in k}
    assert len(want) == 4 and backend.snapshots_with_guids(dst) == want
    assert backend.checksums(dst) == backend.checksums(src)
    assert child_checksums(backend, f"{dst}/child") == backend.checksums(f"{src}/child")
    assert prop_source(backend, dst, "readonly") == ("on", "local")
    # The base is held on both sides (hold_base defaults to true).
    assert held(backend, src) == {f"{src}@auto-2026-11-28_11-00": 1, f"{src}/child@auto-2026-11-28_11-00": 1}
    assert held(backend, dst) == {f"{dst}@auto-2026-11-28_11-00": 1, f"{dst}/child@auto-2026-11-28_11-00": 1}

    backend.write(src, "p3")
    backend.zfs("snapshot", "-r", f"{src}@auto-2026-11-28_12-00")
    inc = backend.engine(p)
    assert inc.ok, str(inc)
    assert inc.result["snapshots_sent"] == 2
    # manual-not-selected lies between the base and the new snapshot: -i, so it is not sent
    assert sends(inc, src) == [("i", "auto-2026-11-28_11-00", "auto-2026-11-28_12-00")]
    assert backend.snapshots_with_guids(dst) == {k: v for k, v in backend.snapshots_with_guids(src).items() if "manual" not in k}
    assert backend.checksums(dst) == backend.checksums(src)
    # The hold moved to the new base on both sides; the old base is released.
    assert held(backend, src) == {f"{src}@auto-2026-11-28_12-00": 1, f"{src}/child@auto-2026-11-28_12-00": 1}
    assert held(backend, dst) == {f"{dst}@auto-2026-11-28_12-00": 1, f"{dst}/child@auto-2026-11-28_12-00": 1}


def test_local_transport(backend):
    src, dst = backend.pair("loc")
    backend.write(src, "f1")
    backend.zfs("snapshot", f"{src}@auto-2026-11-28_10-00")
    backend.write(src, "f2")
    backend.zfs("snapshot", f"{src}@auto-2026-11-28_11-00")

    run = backend.engine(params(src, dst))

    assert run.ok, str(run)
    assert run.result["changed"] is True and run.result["snapshots_sent"] == 2
    assert backend.snapshots_with_guids(dst) == backend.snapshots_with_guids(src)
    assert backend.checksums(dst) == backend.checksums(src)
    assert backend.prop(dst, "readonly") == "on"


@pytest.mark.backends("zfs-fuse", reason="an ssh handshake failure: no zfs command runs")
def test_a_cipher_the_server_does_not_offer_fails_the_connection_and_changes_nothing(backend):
    src, dst = backend.pair("ciph")
    backend.zfs("snapshot", f"{src}@auto-2026-11-28_10-00")
    before = state(backend, src, parent(dst))

    run = backend.engine(over_ssh(backend, src, dst, ssh={"cipher": "aes256-cbc"}))

    assert run.failed, str(run)
    assert "cipher" in message(run), run
    assert state(backend, src, parent(dst)) == before


NETCAT = {"port_min": 47100, "port_max": 47160, "listen_address": "127.0.0.1", "connect_address": "127.0.0.1"}


def test_ssh_netcat_push_and_pull(backend):
    require_tools(backend, ["nc"])
    src, dst = backend.pair("nc")
    pulled = f"{dst}-pull"
    backend.write(src, "n1")
    backend.zfs("snapshot", f"{src}@auto-2026-11-28_10-00")
    backend.write(src, "n2")
    backend.zfs("snapshot", f"{src}@auto-2026-11-28_11-00")
    push = over_ssh(backend, src, dst, transport="ssh+netcat", netcat=NETCAT)
    pull = over_ssh(backend, src, pulled, transport="ssh+netcat", netcat=NETCAT, direction="pull")

    for p, target in ((push, dst), (pull, pulled)):
        run = backend.engine(p)
        assert run.ok, str(run)
        assert run.result["snapshots_sent"] == 2
        assert guids(backend, target) == guids(backend, src)
        assert backend.checksums(target) == backend.checksums(src)
        ports = [int(line.rsplit(":", 1)[1].split(";")[0]) for line in run.log if "netcat:" in line and "listens on" in line]
        assert ports and all(NETCAT["port_min"] <= port <= NETCAT["port_max"] for port in ports), run

    backend.write(src, "n3")
    backend.zfs("snapshot", f"{src}@auto-2026-11-28_12-00")
    inc = backend.engine(push)
    assert inc.ok, str(inc)
    assert sends(inc, src) == [("I", "auto-2026-11-28_11-00", "auto-2026-11-28_12-00")]
    assert guids(backend, dst) == guids(backend, src)
    assert backend.checksums(dst) == backend.checksums(src)


COMPRESSORS = ["lz4", "zstd", "pigz", "xz"]


@pytest.mark.backends(
    "zfs-fuse",
    reason="the compressors are pipeline stages around zfs, not zfs (the ssh+netcat scenario runs the same pipeline on OpenZFS)",
)
def test_compression_each_tool_runs_on_the_sending_side(backend):
    """Each compressor runs in the pipeline (a logging wrapper on the sending side sees it) and the data arrives
    identical."""
    src, dst = backend.pair("zip")
    backend.write(src, "z1", size=50_000)
    backend.zfs("snapshot", f"{src}@auto-2026-11-28_10-00")
    backend.write(src, "z2", size=50_000)
    backend.zfs("snapshot", f"{src}@auto-2026-11-28_11-00")
    missing = missing_tools(backend, COMPRESSORS)
    present = [tool for tool in COMPRESSORS if tool not in missing]
    bindir, log, path = shims(backend, present)
    try:
        for tool in present:
            target = f"{dst}-{tool}"
            run = backend.engine(over_ssh(backend, src, target, compression=tool, ssh={"cipher": "fast"}), env={"PATH": path})
            assert run.ok, str(run)
            assert run.result["snapshots_sent"] == 2, run
            assert guids(backend, target) == guids(backend, src), tool
            assert backend.checksums(target) == backend.checksums(src), tool
        calls = backend.sh(f"cat {shlex.quote(log)}").splitlines()
    finally:
        backend.sh(f"rm -rf {shlex.quote(bindir)}")
    for tool in present:
        # two streams (full + I), each compressed on the sending host (the engine's host, in push)
        assert sum(1 for c in calls if c.split()[0] == tool and "-d" not in c.split()) == 2, (tool, calls)
    require_tools(backend, COMPRESSORS)  # the ones missing on this backend's host fail the scenario, after the others ran


@pytest.mark.backends(
    "zfs-fuse",
    reason="pv and mbuffer are pipeline stages around zfs, not zfs (the fault scenarios rate-limit through pv on OpenZFS)",
)
def test_speed_limit_and_buffer_on_pull(backend):
    """Pull: pv -L runs on the (remote) source, mbuffer before zfs recv on the engine's host (a logging wrapper sees it).
    While the held-back stream runs, the engine reads pv's running count through the ssh session's stderr and logs
    its progress every progress_interval (1 s here)."""
    require_tools(backend, ["mbuffer"])
    src, dst = backend.pair("slow")
    backend.write(src, "slow", size=300_000)
    backend.zfs("snapshot", f"{src}@auto-2026-11-28_10-00")
    bindir, log, path = shims(backend, ["mbuffer"])
    try:
        run = backend.engine(over_ssh(backend, src, dst, direction="pull", speed_limit=120_000, buffer_size="1M", progress_interval=1),
                             env={"PATH": path})
        calls = backend.sh(f"cat {shlex.quote(log)}").splitlines()
    finally:
        backend.sh(f"rm -rf {shlex.quote(bindir)}")
    assert run.ok, str(run)
    ds = run.dataset(dst)
    assert ds["snapshots_sent"] == ["auto-2026-11-28_10-00"]
    assert ds["bytes"] >= 300_000
    assert ds["duration"] >= 0.8 * ds["bytes"] / 120_000, ds  # the limit held the stream back
    assert any(c.startswith("mbuffer") and "-m 1M" in c for c in calls), calls
    progress = [line for line in run.log if line.startswith(f"  progress {dst}@auto-2026-11-28_10-00: ")]
    counts = [parse_size(line.split(": ", 1)[1].split(" (")[0].split(" of ")[0]) for line in progress]
    assert len(counts) >= 1 and counts == sorted(counts) and 0 < counts[-1] <= ds["bytes"], run.log
    # The expected size: zfs send -nP's where the command line has it, else the snapshot's referenced (zfs-fuse).
    assert 0.5 * ds["bytes"] <= ds["estimated_bytes"] <= 2 * ds["bytes"], ds
    assert all(re.search(r" of \S+ \S+ \(\d+%\)", line) for line in progress), progress
    assert guids(backend, dst) == guids(backend, src)
    assert backend.checksums(dst) == backend.checksums(src)


def parse_size(text: str) -> float:
    """'293.0 KiB' (a progress line's byte count) -> bytes."""
    number, unit = text.split()
    return float(number) * 1024 ** ["B", "KiB", "MiB", "GiB", "TiB"].index(unit)


# A TCP proxy in front of the backend host's sshd, run on that host. It resets the FIRST connection (the ssh master,
# which carries every command and stream of a run) after DROP_AFTER bytes from the client and forwards the others. It
# writes its port to <dir>/port, one line per connection to <dir>/connections, and <dir>/dropped when it dropped one.
PROXY = r'''
import os, socket, struct, sys, threading, time
upstream_port, drop_after, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 0))
listener.listen(16)
count = 0

def note(name, text):
    with open(os.path.join(out, name), "a") as f:
        f.write(text)

def close(socks):
    for s in socks:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.shutdown(socket.SHUT_RDWR)
            s.close()
        except OSError:
            pass

def pump(a, b, doomed):
    seen = 0
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            seen += len(data)
            if doomed and seen > drop_after:
                note("dropped", "yes\n")
                close((a, b))  # like a network that went away: both ends reset
                return
            b.sendall(data)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

def serve():
    global count
    while True:
        client, _ = listener.accept()
        count += 1
        note("connections", "%d\n" % count)
        upstream = socket.create_connection(("127.0.0.1", upstream_port))
        threading.Thread(target=pump, args=(client, upstream, count == 1), daemon=True).start()
        threading.Thread(target=pump, args=(upstream, client, False), daemon=True).start()

threading.Thread(target=serve, daemon=True).start()
with open(os.path.join(out, "port.tmp"), "w") as f:
    f.write(str(listener.getsockname()[1]))
os.rename(os.path.join(out, "port.tmp"), os.path.join(out, "port"))
time.sleep(600)  # never outlives a forgotten test by long
'''


def test_a_connection_dropped_during_the_stream_is_retried(backend):
    src, dst = backend.pair("drop")
    backend.write(src, "big", size=600_000)
    backend.zfs("snapshot", f"{src}@auto-2026-11-28_10-00")
    ssh = backend.ssh()
    work = backend.sh("mktemp -d /tmp/zr-proxy.XXXXXX").strip()
    q = shlex.quote(work)
    pid = backend.sh(f"cat > {q}/proxy.py <<'ZR_PROXY_EOF'\n{PROXY}\nZR_PROXY_EOF\n"
                     f"nohup python3 {q}/proxy.py {int(ssh['port'])} 200000 {q} > {q}/proxy.log 2>&1 < /dev/null &\necho $!").strip()
    try:
        port = ""
        for _attempt in range(100):
            port = backend.sh(f"cat {q}/port 2>/dev/null || true").strip()
            if port:
                break
            time.sleep(0.1)
        assert port, backend.sh(f"cat {q}/proxy.log")
        # The backend's known host key, under the proxy's address.
        key = backend.sh(f"cat {shlex.quote(ssh['known_hosts_file'])}").split()[1:3]
        backend.sh(f"echo {shlex.quote(f'[127.0.0.1]:{port} {key[0]} {key[1]}')} > {q}/known_hosts")
        p = over_ssh(backend, src, dst, retries=3, retry_delay=0.5, ssh={"port": int(port), "known_hosts_file": f"{work}/known_hosts"})

        run = backend.engine(p)

        notes = backend.sh(f"cat {q}/dropped 2>/dev/null || true; wc -l < {q}/connections")
    finally:
        backend.sh(f"kill {int(pid)} 2>/dev/null || true; rm -rf {q}")
    assert notes.startswith("yes"), f"the proxy never dropped the connection: the test did not exercise a retry\n{run}"
    assert int(notes.split()[-1]) >= 2  # a new connection after the drop
    assert run.ok, str(run)
    ds = run.dataset(dst)
    assert ds["attempts"] >= 2
    # The drop hit the stream itself (after the listings, during the send), and the stream was sent again.
    failed_at = next(i for i, line in enumerate(run.log) if "attempt 1 failed" in line)
    assert any(line.startswith("full ") for line in run.log[:failed_at]), run
    assert ds["bytes"] >= 600_000
    assert snaps(backend, dst) == ["auto-2026-11-28_10-00"]
    assert guids(backend, dst) == guids(backend, src)
    assert backend.checksums(dst) == backend.checksums(src)
