# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The full replication task (issue 4) through real ansible-playbook runs on zfs-fuse and the sandbox sshd.

Directions (push, pull), transports (ssh, ssh+netcat, local), ciphers, every selection mode, -I versus -i,
recursive with exclude, several sources, properties, readonly, every retention policy, consent for
from-scratch and rollback, compression, rate limit and buffer, bad input, retries after a dropped connection.

Every test checks the real state on both sides: snapshot names and guids (`zfs get -p`), file checksums in the
mounted replicas, property values and sources. Several module calls share one playbook where the cases are
independent, to keep the file fast (one ansible-playbook start is ~2 s).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import stat
import struct
import threading
import time
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from helpers import CommandError, datasets_under, mounted_checksums, mountpoint, own_checksums, prop, snapshots_with_guids, zfs

pytestmark = pytest.mark.integration

SCHEMA = "auto-%Y-%m-%d_%H-%M"
DAILY = "daily-%Y%m%d-%H%M"


# --------------------------------------------------------------------------------------------------------------------
# Helpers: real state
# --------------------------------------------------------------------------------------------------------------------

def write_files(mountpoint: str, seed: str, count: int = 2, size: int = 100_000) -> None:
    root = Path(mountpoint)
    (root / "dir").mkdir(exist_ok=True)
    for i in range(count):
        (root / "dir" / f"{seed}-{i}.bin").write_bytes(secrets.token_bytes(size))
    (root / f"{seed}.txt").write_text(f"hello {seed}\n")


def prop_source(dataset: str, name: str) -> tuple[str, str]:
    value, source = zfs("get", "-H", "-o", "value,source", name, dataset).rstrip("\n").split("\t")
    return value, source


def exists(dataset: str) -> bool:
    try:
        zfs("get", "-H", "-o", "value", "type", dataset)
    except CommandError:
        return False
    return True


def snaps(dataset: str) -> list[str]:
    """Snapshot names (after the @) of DATASET itself, oldest first."""
    out = zfs("list", "-H", "-o", "name", "-s", "createtxg", "-r", "-t", "snapshot", dataset)
    return [n.split("@", 1)[1] for n in out.split() if n.split("@", 1)[0] == dataset]


def guids(dataset: str) -> dict[str, str]:
    """{snapshot: guid} of DATASET itself (no children)."""
    return {k[1:]: v for k, v in snapshots_with_guids(dataset).items() if k.startswith("@")}


def state(*roots: str) -> dict[str, object]:
    """Datasets and snapshots (with guids) below ROOTS: what "nothing changed" compares."""
    return {root: sorted(zfs("get", "-H", "-p", "-r", "-o", "name,value", "guid", root).splitlines()) for root in roots}


def snap(dataset: str, name: str, recursive: bool = False, data: str | None = None) -> None:
    """Optionally write new files, then snapshot."""
    if data:
        write_files(mountpoint(dataset), data)
    zfs("snapshot", *(["-r"] if recursive else []), f"{dataset}@{name}")


def named(when: datetime, schema: str = SCHEMA) -> str:
    return when.strftime(schema)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(second=0, microsecond=0)


# --------------------------------------------------------------------------------------------------------------------
# Helpers: playbooks
# --------------------------------------------------------------------------------------------------------------------

def ssh_args(sandbox, **overrides) -> dict:
    args = {
        "host": "127.0.0.1",
        "port": sandbox.sshd.port,
        "user": "root",
        "private_key_file": str(sandbox.sshd.private_key),
        "known_hosts_file": str(sandbox.sshd.known_hosts),
    }
    args.update(overrides)
    return args


HOLD_TAGS: set[str] = set()  # hold tags of every task run in this session (released before destroying datasets)


def task_name(params: dict) -> str:
    """A stable task name (so the hold tag zfs.replication:<name> is known), like the engine would suggest."""
    raw = f"{','.join(params.get('source_datasets') or [])}-to-{params.get('target_dataset')}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", raw).strip("-.")[:100] or "replication"


def playbook(tasks: dict[str, dict], ignore_errors: bool = False) -> str:
    """One play on localhost; TASKS maps task names to zfs_replication parameters."""
    items = []
    for name, params in tasks.items():
        if isinstance(params.get("source_datasets"), list) and isinstance(params.get("target_dataset"), str):
            params = {"name": task_name(params), **params}
            HOLD_TAGS.add(f"zfs.replication:{params['name']}")
        item = {"name": name, "zfs.replication.zfs_replication": params}
        if ignore_errors:
            item["ignore_errors"] = True
        items.append(item)
    return json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": items}])


def replicate(ansible_playbook, params: dict, expect_rc: int = 0, **kw) -> dict:
    """One module call; returns its result."""
    return ansible_playbook(playbook({"replicate": params}), expect_rc=expect_rc, **kw).task("replicate")


def replicate_many(ansible_playbook, tasks: dict[str, dict], ignore_errors: bool = False, **kw) -> dict[str, dict]:
    """Several module calls in one playbook; returns {task name: result}."""
    res = ansible_playbook(playbook(tasks, ignore_errors=ignore_errors), **kw)
    return {name: res.task(name) for name in tasks}


def sends(result: dict, source: str) -> list[tuple]:
    dplan = next(d for d in result["plan"] if d["source"] == source)
    return [(s["mode"], s["base"], s["snapshot"]) for s in dplan["sends"]]


def shim_dir(tmp_path: Path, tools: list[str]) -> tuple[Path, Path]:
    """A directory of wrappers that log each call ('tool args...') to a file, then exec the real tool."""
    bindir = tmp_path / "shims"
    bindir.mkdir(exist_ok=True)
    log = tmp_path / "shim.log"
    log.touch()
    for tool in tools:
        real = f"/usr/bin/{tool}"
        assert os.access(real, os.X_OK), f"{real} is needed by this test"
        path = bindir / tool
        path.write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\nexec {real} "$@"\n')
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return bindir, log


@pytest.fixture
def pair(sandbox):
    """A fresh source dataset (with a child) and a target path (its parent exists) for one test."""
    tag = secrets.token_hex(3)
    src = f"{sandbox.src_pool}/t{tag}"
    zfs("create", src)
    zfs("create", f"{src}/child")
    dst_parent = f"{sandbox.dst_pool}/b{tag}"
    zfs("create", dst_parent)
    yield src, f"{dst_parent}/data"
    for ds in (src, dst_parent):
        destroy_r(ds)


def held(dataset: str) -> dict[str, int]:
    """{snapshot (full name): userrefs} of the held snapshots below DATASET."""
    out = zfs("get", "-H", "-p", "-r", "-o", "name,value", "userrefs", dataset)
    return {n: int(v) for n, v in (line.split("\t") for line in out.splitlines()) if "@" in n and v.isdigit() and int(v) > 0}


def release_all(dataset: str) -> None:
    """Release the holds the tasks of this session put on snapshots below DATASET (zfs-fuse has no `zfs holds`)."""
    for full in held(dataset):
        for tag in HOLD_TAGS:
            with contextlib.suppress(CommandError):
                zfs("release", tag, full)


def destroy_r(dataset: str, timeout: float = 20) -> None:
    """Release our holds, then zfs destroy -r, retried: zfs-fuse says "dataset is busy" for a moment after an
    unmount or a send."""
    if not exists(dataset):
        return
    release_all(dataset)
    deadline = time.monotonic() + timeout
    while True:
        try:
            zfs("destroy", "-r", dataset)
            return
        except CommandError as exc:
            if time.monotonic() > deadline:
                # zfs-fuse sometimes keeps a dataset busy until the daemon restarts (after a killed receive):
                # the names are unique per test and the pool goes at the end of the session, so only warn.
                warnings.warn(f"teardown: {dataset} left behind: {exc}", stacklevel=2)
                return
            time.sleep(0.5)


def base_params(sandbox, src: str, dst: str, **more) -> dict:
    params = {"source_datasets": [src], "target_dataset": dst, "naming_schema": [SCHEMA], "ssh": ssh_args(sandbox)}
    params.update(more)
    return params


# --------------------------------------------------------------------------------------------------------------------
# Directions, transports, ciphers
# --------------------------------------------------------------------------------------------------------------------

def test_pull_over_ssh_with_named_cipher(sandbox, pair, ansible_playbook):
    """direction pull: the module runs here (the target) and fetches from the 'remote' source over ssh."""
    src, dst = pair
    snap(src, "auto-2026-11-28_10-00", recursive=True, data="p1")
    write_files(mountpoint(f"{src}/child"), "kid")
    snap(src, "auto-2026-11-28_11-00", recursive=True, data="p2")
    snap(src, "manual-not-selected", recursive=True)
    params = base_params(sandbox, src, dst, direction="pull", recursive=True,
                         ssh=ssh_args(sandbox, cipher="chacha20-poly1305@openssh.com"))

    first = replicate(ansible_playbook, params)
    assert first["changed"] is True and first["snapshots_sent"] == 4
    assert first["datasets"][dst]["snapshots_sent"] == ["auto-2026-11-28_10-00", "auto-2026-11-28_11-00"]
    assert sends(first, src) == [("full", None, "auto-2026-11-28_10-00"), ("I", "auto-2026-11-28_10-00", "auto-2026-11-28_11-00")]
    want = {k: v for k, v in snapshots_with_guids(src).items() if "manual" not in k}
    assert len(want) == 4 and snapshots_with_guids(dst) == want
    assert mounted_checksums(dst) == own_checksums(src)
    assert mounted_checksums(f"{dst}/child") == own_checksums(f"{src}/child")
    assert prop_source(dst, "readonly") == ("on", "local")
    # The base is held on both sides (hold_base defaults to true).
    assert held(src) == {f"{src}@auto-2026-11-28_11-00": 1, f"{src}/child@auto-2026-11-28_11-00": 1}
    assert held(dst) == {f"{dst}@auto-2026-11-28_11-00": 1, f"{dst}/child@auto-2026-11-28_11-00": 1}

    snap(src, "auto-2026-11-28_12-00", recursive=True, data="p3")
    inc = replicate(ansible_playbook, params)
    assert inc["changed"] is True and inc["snapshots_sent"] == 2
    # manual-not-selected lies between the base and the new snapshot: -i, so it is not sent
    assert sends(inc, src) == [("i", "auto-2026-11-28_11-00", "auto-2026-11-28_12-00")]
    want = {k: v for k, v in snapshots_with_guids(src).items() if "manual" not in k}
    assert snapshots_with_guids(dst) == want
    assert mounted_checksums(dst) == own_checksums(src)
    assert held(src) == {f"{src}@auto-2026-11-28_12-00": 1, f"{src}/child@auto-2026-11-28_12-00": 1}
    assert held(dst) == {f"{dst}@auto-2026-11-28_12-00": 1, f"{dst}/child@auto-2026-11-28_12-00": 1}

    again = replicate(ansible_playbook, params)
    assert again["changed"] is False and again["snapshots_sent"] == 0
    assert snapshots_with_guids(dst) == want


def test_push_fast_cipher_and_local_transport(sandbox, pair, ansible_playbook):
    src, dst = pair
    local_dst = dst + "-local"
    snap(src, "auto-2026-11-28_10-00", data="f1")
    snap(src, "auto-2026-11-28_11-00", data="f2")
    res = replicate_many(ansible_playbook, {
        "push fast": base_params(sandbox, src, dst, ssh=ssh_args(sandbox, cipher="fast")),
        "local": {"source_datasets": [src], "target_dataset": local_dst, "naming_schema": [SCHEMA], "transport": "local"},
    })
    for target, name in ((dst, "push fast"), (local_dst, "local")):
        assert res[name]["changed"] is True and res[name]["snapshots_sent"] == 2, res[name]
        assert guids(target) == guids(src)
        assert mounted_checksums(target) == own_checksums(src)
        assert prop(target, "readonly") == "on"


def test_unsupported_cipher_is_refused_by_ssh(sandbox, pair, ansible_playbook):
    """The cipher option reaches ssh: a cipher the server does not offer fails the connection, nothing changes."""
    src, dst = pair
    snap(src, "auto-2026-11-28_10-00", data="c")
    before = state(sandbox.src_pool, sandbox.dst_pool)
    res = replicate(ansible_playbook, base_params(sandbox, src, dst, ssh=ssh_args(sandbox, cipher="aes256-cbc")), expect_rc=2)
    assert res["failed"] is True
    assert "cipher" in res["msg"], res["msg"]
    assert state(sandbox.src_pool, sandbox.dst_pool) == before


NETCAT = {"port_min": 47100, "port_max": 47160, "listen_address": "127.0.0.1", "connect_address": "127.0.0.1"}


def test_ssh_netcat_push_and_pull(sandbox, pair, ansible_playbook):
    src, dst = pair
    pulled = dst + "-pull"
    snap(src, "auto-2026-11-28_10-00", data="n1")
    snap(src, "auto-2026-11-28_11-00", data="n2")
    push = base_params(sandbox, src, dst, transport="ssh+netcat", netcat=NETCAT)
    pull = base_params(sandbox, src, pulled, transport="ssh+netcat", netcat=NETCAT, direction="pull")
    res = replicate_many(ansible_playbook, {"push": push, "pull": pull})
    for name, target in (("push", dst), ("pull", pulled)):
        r = res[name]
        assert r["changed"] is True and r["snapshots_sent"] == 2, r
        assert guids(target) == guids(src)
        assert mounted_checksums(target) == own_checksums(src)
        ports = [int(line.rsplit(":", 1)[1].split(";")[0]) for line in r["log"] if "netcat:" in line and "listens on" in line]
        assert ports and all(NETCAT["port_min"] <= p <= NETCAT["port_max"] for p in ports), r["log"]

    snap(src, "auto-2026-11-28_12-00", data="n3")
    inc = replicate(ansible_playbook, push)
    assert sends(inc, src) == [("I", "auto-2026-11-28_11-00", "auto-2026-11-28_12-00")]
    assert guids(dst) == guids(src)
    assert mounted_checksums(dst) == own_checksums(src)


def test_ssh_netcat_refused_without_port_range(sandbox, pair, ansible_playbook):
    src, dst = pair
    snap(src, "auto-2026-11-28_10-00", data="x")
    before = state(sandbox.src_pool, sandbox.dst_pool)
    res = replicate_many(ansible_playbook, {
        "no netcat": base_params(sandbox, src, dst, transport="ssh+netcat"),
        "no port_max": base_params(sandbox, src, dst, transport="ssh+netcat", netcat={"port_min": 47100}),
        "port range zero": base_params(sandbox, src, dst, transport="ssh+netcat", netcat={"port_min": 0, "port_max": 0}),
    }, ignore_errors=True)
    assert "netcat" in res["no netcat"]["msg"]
    assert "port_max" in res["no port_max"]["msg"]
    assert "netcat.port_min" in res["port range zero"]["msg"] and "UNENCRYPTED" in res["port range zero"]["msg"]
    for r in res.values():
        assert r["failed"] is True and not r.get("changed")
    assert state(sandbox.src_pool, sandbox.dst_pool) == before
    assert not exists(dst)


# --------------------------------------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------------------------------------

def test_selection_modes(sandbox, pair, ansible_playbook):
    src, dst = pair
    order = ["auto-2026-11-28_00-00", "auto-2026-11-28_01-00", "daily-20261128-0130", "auto-2026-11-28_02-00",
             "auto-2026-11-28_03-00", "manual-x", "auto-2026-11-28_04-00", "auto-2026-11-28_05-00"]
    at_snapshot = {}
    for i, name in enumerate(order):
        snap(src, name, data=f"s{i}")
        at_snapshot[name] = own_checksums(src)
    auto = [n for n in order if n.startswith("auto-")]
    local = {"source_datasets": [src], "transport": "local", "timezone": "UTC"}
    cases = {
        "naming_schema": ({"naming_schema": [SCHEMA]}, auto),
        "also_include": ({"naming_schema": [SCHEMA], "also_include_naming_schema": [DAILY]}, [n for n in order if n != "manual-x"]),
        "periodic_snapshot_tasks": ({"periodic_snapshot_tasks": [{"naming_schema": DAILY}]}, ["daily-20261128-0130"]),
        "name_regex": ({"name_regex": "manual-.*|daily-.*"}, ["daily-20261128-0130", "manual-x"]),
        "only_matching_schedule": ({"naming_schema": [SCHEMA], "only_matching_schedule": True, "schedule": {"minute": "0", "hour": "*/2"}},
                                   ["auto-2026-11-28_00-00", "auto-2026-11-28_02-00", "auto-2026-11-28_04-00"]),
        "run-once snapshots": ({"naming_schema": [SCHEMA], "snapshots": ["auto-2026-11-28_01-00", "auto-2026-11-28_03-00"]},
                               ["auto-2026-11-28_01-00", "auto-2026-11-28_03-00"]),
    }
    targets = {name: f"{dst}{i}" for i, name in enumerate(cases)}
    tasks = {name: {**local, **opts, "target_dataset": targets[name]} for name, (opts, _want) in cases.items()}
    res = replicate_many(ansible_playbook, tasks)
    src_guids = guids(src)
    for name, (_opts, want) in cases.items():
        target = targets[name]
        assert res[name]["datasets"][target]["snapshots_sent"] == want, name
        assert snaps(target) == want, name
        assert guids(target) == {n: src_guids[n] for n in want}, name
    # only_matching_schedule skips the odd hours: -i hops from selected to selected.
    assert sends(res["only_matching_schedule"], src) == [
        ("full", None, "auto-2026-11-28_00-00"),
        ("i", "auto-2026-11-28_00-00", "auto-2026-11-28_02-00"),
        ("i", "auto-2026-11-28_02-00", "auto-2026-11-28_04-00"),
    ]
    assert sends(res["run-once snapshots"], src) == [("full", None, "auto-2026-11-28_01-00"), ("i", "auto-2026-11-28_01-00", "auto-2026-11-28_03-00")]
    # Each replica holds exactly the files of the newest snapshot it selected.
    for name, (_opts, want) in cases.items():
        assert mounted_checksums(targets[name]) == at_snapshot[want[-1]], name


def test_one_I_stream_when_all_selected_and_i_chain_when_one_is_skipped(sandbox, pair, ansible_playbook):
    src, dst = pair
    for h in range(4):
        snap(src, f"auto-2026-11-28_0{h}-00", data=f"a{h}")
    params = base_params(sandbox, src, dst)
    first = replicate(ansible_playbook, params)
    assert sends(first, src) == [("full", None, "auto-2026-11-28_00-00"), ("I", "auto-2026-11-28_00-00", "auto-2026-11-28_03-00")]
    assert first["plan"][0]["sends"][1]["snapshots"] == ["auto-2026-11-28_01-00", "auto-2026-11-28_02-00", "auto-2026-11-28_03-00"]
    assert guids(dst) == guids(src)

    snap(src, "auto-2026-11-28_04-00", data="a4")
    snap(src, "hourly-skip-me", data="skip")
    snap(src, "auto-2026-11-28_05-00", data="a5")
    second = replicate(ansible_playbook, params)
    assert sends(second, src) == [("i", "auto-2026-11-28_03-00", "auto-2026-11-28_04-00"), ("i", "auto-2026-11-28_04-00", "auto-2026-11-28_05-00")]
    assert snaps(dst) == [f"auto-2026-11-28_0{h}-00" for h in range(6)]
    assert guids(dst) == {k: v for k, v in guids(src).items() if k.startswith("auto-")}
    assert mounted_checksums(dst) == own_checksums(src)


# --------------------------------------------------------------------------------------------------------------------
# Recursive, exclude, several sources
# --------------------------------------------------------------------------------------------------------------------

def test_recursive_exclude_and_several_sources(sandbox, pair, ansible_playbook):
    src, dst = pair
    other = f"{src}-other"
    zfs("create", other)
    zfs("create", f"{src}/skip")
    zfs("create", f"{src}/skip/deep")
    zfs("create", f"{src}/child/grand")
    for ds in (src, f"{src}/child", f"{src}/child/grand", f"{src}/skip", other):
        write_files(mountpoint(ds), ds.rsplit("/", 1)[-1])
    try:
        snap(src, "auto-2026-11-28_10-00", recursive=True)
        snap(other, "auto-2026-11-28_10-00")
        assert not exists(dst)
        res = replicate(ansible_playbook, base_params(sandbox, src, dst, source_datasets=[src, other], recursive=True,
                                                      exclude=[f"{src}/skip"]))
        leaf, oleaf = src.rsplit("/", 1)[1], other.rsplit("/", 1)[1]
        assert res["changed"] is True
        # The container is created; each source lands in target/<leaf>; the excluded subtree is absent.
        assert sorted(datasets_under(dst)) == sorted([dst, f"{dst}/{leaf}", f"{dst}/{leaf}/child", f"{dst}/{leaf}/child/grand", f"{dst}/{oleaf}"])
        assert snaps(dst) == []
        for s, t in ((src, f"{dst}/{leaf}"), (f"{src}/child", f"{dst}/{leaf}/child"), (f"{src}/child/grand", f"{dst}/{leaf}/child/grand"),
                     (other, f"{dst}/{oleaf}")):
            assert guids(t) == guids(s), t
            assert mounted_checksums(t) == own_checksums(s), t
        assert prop(f"{dst}/{leaf}", "readonly") == "on" and prop(f"{dst}/{oleaf}", "readonly") == "on"
        assert not exists(f"{dst}/{leaf}/skip")
    finally:
        destroy_r(other)


# --------------------------------------------------------------------------------------------------------------------
# Properties and readonly
# --------------------------------------------------------------------------------------------------------------------

def test_properties_exclude_override_and_off(sandbox, pair, ansible_playbook):
    src, dst = pair
    no_props = dst + "-noprops"
    zfs("set", "zr:keep=k1", src)
    zfs("set", "zr:drop=d1", src)
    zfs("set", "atime=off", src)
    snap(src, "auto-2026-11-28_10-00", data="props")
    tasks = {
        "props": base_params(sandbox, src, dst, properties_exclude=["zr:drop", "atime"],
                             properties_override={"zr:over": "o1", "compression": "gzip"}),
        "no props": base_params(sandbox, src, no_props, properties=False),
    }

    def check():
        # zfs-fuse has no recv -x: the engine sends without -p and copies the source's local properties
        # minus the excluded ones, so kept properties arrive as local there (received on OpenZFS).
        assert prop_source(dst, "zr:keep") == ("k1", "local")
        assert prop_source(dst, "zr:drop")[1] != "received" and prop(dst, "zr:drop") != "d1"
        assert prop_source(dst, "atime")[1] != "received" and prop(dst, "atime") == "on"
        assert prop_source(dst, "zr:over") == ("o1", "local")
        assert prop_source(dst, "compression") == ("gzip", "local")
        assert prop(no_props, "zr:keep") == "-" and prop(no_props, "atime") == "on"
        for target in (dst, no_props):
            assert guids(target) == guids(src)
            assert mounted_checksums(target) == own_checksums(src)

    replicate_many(ansible_playbook, tasks)
    check()
    # Properties are received again with every incremental: exclude and override still hold after one.
    zfs("set", "zr:drop=d2", src)
    snap(src, "auto-2026-11-28_11-00", data="props2")
    res = replicate_many(ansible_playbook, tasks)
    assert res["props"]["snapshots_sent"] == 1
    check()


def test_properties_override_applies_without_sending_properties(sandbox, pair, ansible_playbook):
    """properties: false only drops `send -p`; an explicit properties_override is still set on the target
    (as `zfs recv -o` does, and as TrueNAS/zettarepl apply it independently of `properties`)."""
    src, dst = pair
    zfs("set", "zr:keep=k1", src)
    snap(src, "auto-2026-11-28_10-00", data="po")
    replicate(ansible_playbook, base_params(sandbox, src, dst, properties=False, properties_override={"zr:over": "o1"}))
    assert prop(dst, "zr:keep") == "-"
    assert guids(dst) == guids(src)
    assert prop_source(dst, "zr:over") == ("o1", "local")


def test_properties_exclude_with_full_filesystem_replication_needs_recv_x(sandbox, pair, ansible_playbook):
    """replicate (send -R) carries every property of the tree; excluding or overriding them needs zfs recv -x/-o,
    which zfs-fuse lacks. The task is refused up front with a message naming the options, nothing changed."""
    src, dst = pair
    zfs("set", "zr:drop=root", src)
    zfs("set", "zr:drop=kid", f"{src}/child")
    snap(src, "auto-2026-11-28_10-00", recursive=True, data="rr")
    before = state(sandbox.src_pool, sandbox.dst_pool)
    res = replicate(ansible_playbook, base_params(sandbox, src, dst, recursive=True, replicate=True, properties_exclude=["zr:drop"],
                                                  properties_override={"zr:over": "o1"}), expect_rc=2)
    assert res["failed"] is True
    assert "properties_exclude/properties_override with replicate need zfs recv -x/-o" in res["msg"]
    assert state(sandbox.src_pool, sandbox.dst_pool) == before
    # The same tree replicates with replicate: true when nothing is excluded: every property arrives received.
    res = replicate(ansible_playbook, base_params(sandbox, src, dst, recursive=True, replicate=True))
    assert snapshots_with_guids(dst) == snapshots_with_guids(src)
    assert prop_source(f"{dst}/child", "zr:drop") == ("kid", "received")


def test_readonly_set_require_ignore(sandbox, pair, ansible_playbook):
    src, dst = pair
    set_dst = dst + "-set"
    snap(src, "auto-2026-11-28_10-00", data="r1")
    replicate_many(ansible_playbook, {
        "ignore": base_params(sandbox, src, dst, readonly="ignore"),
        "set": base_params(sandbox, src, set_dst, readonly="set"),
    })
    assert prop_source(dst, "readonly") == ("off", "default")
    assert prop_source(set_dst, "readonly") == ("on", "local")
    assert guids(dst) == guids(src) == guids(set_dst)

    # require: an existing target that is not read-only is refused untouched.
    snap(src, "auto-2026-11-28_11-00", data="r2")
    before = state(sandbox.src_pool, sandbox.dst_pool)
    refused = replicate(ansible_playbook, base_params(sandbox, src, dst, readonly="require"), expect_rc=2)
    assert refused["failed"] is True and refused["changed"] is False
    assert "readonly=require" in refused["msg"] and dst in refused["msg"], refused["msg"]
    assert state(sandbox.src_pool, sandbox.dst_pool) == before
    assert prop(dst, "readonly") == "off"

    # require on a read-only target replicates and leaves the property as it is.
    zfs("set", "readonly=on", dst)
    ok = replicate(ansible_playbook, base_params(sandbox, src, dst, readonly="require"))
    assert ok["changed"] is True and ok["snapshots_sent"] == 1
    assert guids(dst) == guids(src)
    assert mounted_checksums(dst) == own_checksums(src)


# --------------------------------------------------------------------------------------------------------------------
# Retention on the target
# --------------------------------------------------------------------------------------------------------------------

def _retention_setup(sandbox, src, dst, ansible_playbook, names: list[str], **more) -> dict:
    for i, name in enumerate(names):
        snap(src, name, data=f"ret{i}")
    params = {"source_datasets": [src], "target_dataset": dst, "naming_schema": [SCHEMA], "transport": "local", "timezone": "UTC", **more}
    first = replicate(ansible_playbook, params)
    assert first["snapshots_sent"] == len(names)
    assert snaps(dst) == names
    return params


@pytest.mark.parametrize("policy", ["none", "source"])
def test_retention_none_and_source(sandbox, pair, ansible_playbook, policy):
    src, dst = pair
    now = utcnow()
    old = [named(now - timedelta(days=d)) for d in (10, 5, 1)]
    params = _retention_setup(sandbox, src, dst, ansible_playbook, old)
    zfs("destroy", f"{src}@{old[0]}")
    zfs("destroy", f"{src}@{old[1]}")
    newest = named(now)
    snap(src, newest, data="new")
    snap(src, "manual-on-source", data="man")  # not selected: never sent, never a retention candidate
    res = replicate(ansible_playbook, {**params, "retention_policy": policy})
    assert res["datasets"][dst]["snapshots_sent"] == [newest]
    if policy == "none":
        assert snaps(dst) == [*old, newest]
        assert res["datasets"][dst]["destroyed"] == []
    else:
        assert snaps(dst) == [old[2], newest]
        assert sorted(res["datasets"][dst]["destroyed"]) == sorted(old[:2])
    assert snaps(src) == [old[2], newest, "manual-on-source"]
    src_guids = guids(src)
    assert all(src_guids[n] == g for n, g in guids(dst).items() if n in src_guids)


def test_retention_custom_lifetime(sandbox, pair, ansible_playbook):
    src, dst = pair
    now = utcnow()
    old = [named(now - timedelta(days=d)) for d in (10, 5, 2, 1)]
    params = _retention_setup(sandbox, src, dst, ansible_playbook, old)
    newest = named(now)
    snap(src, newest, data="new")
    res = replicate(ansible_playbook, {**params, "retention_policy": "custom", "lifetime_value": 3, "lifetime_unit": "day"})
    assert snaps(dst) == [old[2], old[3], newest]
    assert sorted(res["datasets"][dst]["destroyed"]) == sorted(old[:2])
    assert snaps(src) == [*old, newest]  # the source is never pruned by a replication task
    assert guids(dst) == {n: g for n, g in guids(src).items() if n in snaps(dst)}
    assert mounted_checksums(dst) == own_checksums(src)


def test_retention_lifetimes_per_schedule(sandbox, pair, ansible_playbook):
    src, dst = pair
    now = utcnow()
    day = now.replace(hour=0, minute=0)
    old = [named(day - timedelta(days=10)), named(day - timedelta(days=10) + timedelta(hours=12)),
           named(day - timedelta(days=5)), named(day - timedelta(days=5) + timedelta(hours=12)),
           named(now - timedelta(hours=3))]
    params = _retention_setup(sandbox, src, dst, ansible_playbook, old)
    newest = named(now)
    snap(src, newest, data="new")
    res = replicate(ansible_playbook, {
        **params, "retention_policy": "custom", "lifetime_value": 1, "lifetime_unit": "day",
        "lifetimes": [{"schedule": {"minute": "0", "hour": "0"}, "lifetime_value": 1, "lifetime_unit": "year"}],
    })
    # Midnight snapshots live a year; the others a day.
    assert snaps(dst) == [old[0], old[2], old[4], newest]
    assert sorted(res["datasets"][dst]["destroyed"]) == sorted([old[1], old[3]])
    assert guids(dst) == {n: g for n, g in guids(src).items() if n in snaps(dst)}


def test_retention_never_destroys_the_base(sandbox, pair, ansible_playbook):
    """custom lifetime 1 hour with every snapshot years old: the newest common snapshot remains, and the next
    incremental still works from it. hold_base is off, so what protects the base is the planner, not a hold."""
    src, dst = pair
    names = ["auto-2020-01-01_00-00", "auto-2020-01-02_00-00"]
    params = _retention_setup(sandbox, src, dst, ansible_playbook, names, hold_base=False)
    params = {**params, "retention_policy": "custom", "lifetime_value": 1, "lifetime_unit": "hour"}
    assert held(dst) == {} and held(src) == {}

    res = replicate(ansible_playbook, params)  # nothing to send, only retention
    assert res["datasets"][dst]["destroyed"] == ["auto-2020-01-01_00-00"]
    assert snaps(dst) == ["auto-2020-01-02_00-00"]
    assert guids(dst)["auto-2020-01-02_00-00"] == guids(src)["auto-2020-01-02_00-00"]

    again = replicate(ansible_playbook, params)
    assert again["changed"] is False and snaps(dst) == ["auto-2020-01-02_00-00"]

    snap(src, "auto-2020-01-03_00-00", data="next")
    inc = replicate(ansible_playbook, params)
    assert sends(inc, src) == [("I", "auto-2020-01-02_00-00", "auto-2020-01-03_00-00")]
    assert snaps(dst) == ["auto-2020-01-03_00-00"]
    assert guids(dst)["auto-2020-01-03_00-00"] == guids(src)["auto-2020-01-03_00-00"]
    assert mounted_checksums(dst) == own_checksums(src)
    assert snaps(src) == [*names, "auto-2020-01-03_00-00"]


# --------------------------------------------------------------------------------------------------------------------
# Consent: from scratch, rollback
# --------------------------------------------------------------------------------------------------------------------

def test_allow_from_scratch_off_and_on(sandbox, pair, ansible_playbook):
    src, dst = pair
    snap(src, "auto-2026-11-28_10-00", data="s1")
    snap(src, "auto-2026-11-28_11-00", data="s2")
    zfs("create", dst)  # an unrelated dataset with its own snapshot of the schema
    write_files(mountpoint(dst), "unrelated")
    zfs("snapshot", f"{dst}@auto-2026-01-01_00-00")
    theirs = own_checksums(dst)
    params = base_params(sandbox, src, dst, readonly="ignore")
    before = state(sandbox.src_pool, sandbox.dst_pool)

    refused = replicate(ansible_playbook, params, expect_rc=2)
    assert refused["failed"] is True and refused["changed"] is False
    assert "allow_from_scratch" in refused["msg"] and "unrelated" in refused["msg"], refused["msg"]
    assert state(sandbox.src_pool, sandbox.dst_pool) == before
    assert own_checksums(dst) == theirs

    zfs("unmount", dst)
    ok = replicate(ansible_playbook, {**params, "allow_from_scratch": True})
    assert ok["changed"] is True and ok["snapshots_sent"] == 2
    assert guids(dst) == guids(src)
    assert mounted_checksums(dst) == own_checksums(src)


def test_allow_rollback_target_with_extra_snapshot(sandbox, pair, ansible_playbook):
    src, dst = pair
    snap(src, "auto-2026-11-28_10-00", data="b1")
    params = base_params(sandbox, src, dst)
    replicate(ansible_playbook, params)
    zfs("snapshot", f"{dst}@auto-2026-11-28_10-30")  # someone's snapshot on the target
    snap(src, "auto-2026-11-28_11-00", data="b2")
    before = state(sandbox.src_pool, sandbox.dst_pool)

    refused = replicate(ansible_playbook, params, expect_rc=2)
    assert refused["failed"] is True and refused["changed"] is False
    assert "allow_rollback" in refused["msg"] and "auto-2026-11-28_10-30" in refused["msg"], refused["msg"]
    assert state(sandbox.src_pool, sandbox.dst_pool) == before

    ok = replicate(ansible_playbook, {**params, "allow_rollback": True})
    assert ok["changed"] is True
    assert "auto-2026-11-28_10-30" in ok["datasets"][dst]["destroyed"]
    assert guids(dst) == guids(src)
    assert mounted_checksums(dst) == own_checksums(src)


def test_allow_rollback_target_modified_since_last_snapshot(sandbox, pair, ansible_playbook):
    src, dst = pair
    snap(src, "auto-2026-11-28_10-00", data="m1")
    params = base_params(sandbox, src, dst, readonly="ignore")
    replicate(ansible_playbook, params)
    zfs("mount", dst)
    Path(mountpoint(dst), "written-on-target.txt").write_text("local change\n")
    zfs("unmount", dst)
    modified = mounted_checksums(dst)
    assert "written-on-target.txt" in modified
    snap(src, "auto-2026-11-28_11-00", data="m2")
    before = state(sandbox.src_pool, sandbox.dst_pool)

    refused = replicate(ansible_playbook, params, expect_rc=2)
    assert refused["failed"] is True
    assert "allow_rollback" in refused["msg"], refused["msg"]
    assert refused["snapshots_sent"] == 0
    assert refused["datasets"][dst]["attempts"] == 1  # a logical failure is not retried
    assert state(sandbox.src_pool, sandbox.dst_pool) == before
    assert mounted_checksums(dst) == modified

    ok = replicate(ansible_playbook, {**params, "allow_rollback": True})
    assert ok["changed"] is True and ok["snapshots_sent"] == 1
    assert guids(dst) == guids(src)
    assert mounted_checksums(dst) == own_checksums(src)


# --------------------------------------------------------------------------------------------------------------------
# Pipeline: compression, rate limit, buffer
# --------------------------------------------------------------------------------------------------------------------

def test_compression_each_tool(sandbox, pair, ansible_playbook, tmp_path):
    """Each compressor runs in the pipeline (a logging wrapper on the sending side sees it) and the data arrives
    identical."""
    src, dst = pair
    snap(src, "auto-2026-11-28_10-00", data="z1")
    snap(src, "auto-2026-11-28_11-00", data="z2")
    tools = ["lz4", "zstd", "pigz", "xz"]
    bindir, log = shim_dir(tmp_path, tools)
    tasks = {tool: base_params(sandbox, src, f"{dst}-{tool}", compression=tool, ssh=ssh_args(sandbox, cipher="fast")) for tool in tools}
    res = replicate_many(ansible_playbook, tasks, env={"PATH": f"{bindir}:{os.environ['PATH']}"})
    calls = log.read_text().splitlines()
    for tool in tools:
        target = f"{dst}-{tool}"
        assert res[tool]["snapshots_sent"] == 2, res[tool]
        assert guids(target) == guids(src), tool
        assert mounted_checksums(target) == own_checksums(src), tool
        # two streams (full + I), each compressed on this (sending) host
        assert sum(1 for c in calls if c.split()[0] == tool and "-d" not in c.split()) == 2, (tool, calls)


def test_speed_limit_and_buffer_on_pull(sandbox, pair, ansible_playbook, tmp_path):
    """Pull: pv -L runs on the (remote) source, mbuffer before zfs recv on this host (a logging wrapper sees it)."""
    src, dst = pair
    write_files(mountpoint(src), "slow", count=1, size=300_000)
    snap(src, "auto-2026-11-28_10-00")
    bindir, log = shim_dir(tmp_path, ["mbuffer"])
    res = replicate(ansible_playbook, base_params(sandbox, src, dst, direction="pull", speed_limit=120_000, buffer_size="1M"),
                    env={"PATH": f"{bindir}:{os.environ['PATH']}"})
    ds = res["datasets"][dst]
    assert ds["snapshots_sent"] == ["auto-2026-11-28_10-00"]
    assert ds["bytes"] >= 300_000
    assert ds["duration"] >= 0.8 * ds["bytes"] / 120_000, ds  # the limit held the stream back
    assert any(c.startswith("mbuffer") and "-m 1M" in c for c in log.read_text().splitlines()), log.read_text()
    assert guids(dst) == guids(src)
    assert mounted_checksums(dst) == own_checksums(src)


# --------------------------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------------------------

def test_bad_input_is_a_clear_error_naming_the_field(sandbox, pair, ansible_playbook):
    src, dst = pair
    snap(src, "auto-2026-11-28_10-00", recursive=True, data="bad")

    def p(**more):
        return base_params(sandbox, src, dst, **more)

    cases = {
        "negative speed_limit": (p(speed_limit=-5), ["speed_limit"]),
        "unknown compression": (p(compression="brotli"), ["compression", "brotli"]),
        "pull without naming schema": ({**p(direction="pull"), "naming_schema": []}, ["naming_schema", "pull"]),
        "overlapping sources": (p(source_datasets=[src, f"{src}/child"], recursive=True), ["source_datasets", "overlap"]),
        "exclude outside the source": (p(recursive=True, exclude=[f"{sandbox.dst_pool}/elsewhere"]), ["exclude[0]"]),
        "name_regex with naming_schema": (p(name_regex="auto-.*"), ["name_regex", "naming_schema"]),
        "exclude without recursive": (p(exclude=[f"{src}/child"]), ["exclude", "recursive"]),
        "custom retention without lifetime": (p(retention_policy="custom"), ["lifetime_value"]),
        "bad buffer_size": (p(buffer_size="64X"), ["buffer_size"]),
        "schedule missing": (p(only_matching_schedule=True), ["only_matching_schedule", "schedule"]),
        "bad schedule": (p(only_matching_schedule=True, schedule={"minute": "61"}), ["schedule"]),
        "source is the target": ({**p(transport="local", target_dataset=src), "ssh": None}, ["target_dataset"]),
        "negative retries": (p(retries=-1), ["retries"]),
        "properties exclude and override": (p(properties_exclude=["zr:x"], properties_override={"zr:x": "1"}), ["properties_exclude", "zr:x"]),
        "bad lifetime unit": (p(retention_policy="custom", lifetime_value=1, lifetime_unit="fortnight"), ["lifetime_unit"]),
    }
    before = state(sandbox.src_pool, sandbox.dst_pool)
    res = replicate_many(ansible_playbook, {name: params for name, (params, _message) in cases.items()}, ignore_errors=True)
    problems = []
    for name, (_params, words) in cases.items():
        r = res[name]
        if r.get("failed") is not True or r.get("changed"):
            problems.append(f"{name}: not refused: {r}")
        elif not all(w in r.get("msg", "") for w in words):
            problems.append(f"{name}: message lacks {words}: {r.get('msg')!r}")
    assert not problems, "\n".join(problems)
    assert state(sandbox.src_pool, sandbox.dst_pool) == before
    assert not exists(dst)


# --------------------------------------------------------------------------------------------------------------------
# Retries after a dropped connection
# --------------------------------------------------------------------------------------------------------------------

class DroppingProxy:
    """TCP proxy on 127.0.0.1 in front of the sandbox sshd. It kills the FIRST connection (the ssh master, which
    carries every command and stream of a run) after DROP_AFTER bytes from the client, and forwards the others."""

    def __init__(self, upstream_port: int, drop_after: int):
        self.upstream_port = upstream_port
        self.drop_after = drop_after
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.dropped = False
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
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.sockets += [client, upstream]
            doomed = self.connections == 1
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
                    self.dropped = True
                    for s in (a, b):  # reset both ends, like a network that went away
                        with contextlib.suppress(OSError):
                            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                            s.shutdown(socket.SHUT_RDWR)  # wakes the pump of the other direction
                            s.close()
                    return
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.stopping = True
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.close()


def test_dropped_connection_is_retried(sandbox, pair, ansible_playbook, tmp_path):
    src, dst = pair
    write_files(mountpoint(src), "big", count=3, size=1_000_000)  # a ~3 MB stream
    snap(src, "auto-2026-11-28_10-00")
    proxy = DroppingProxy(sandbox.sshd.port, drop_after=200_000)
    try:
        keytype, key = Path(f"{sandbox.sshd.host_key}.pub").read_text().split()[:2]
        known_hosts = tmp_path / "known_hosts_proxy"
        known_hosts.write_text(f"[127.0.0.1]:{proxy.port} {keytype} {key}\n")
        params = base_params(sandbox, src, dst, retries=3, retry_delay=0.5,
                             ssh=ssh_args(sandbox, port=proxy.port, known_hosts_file=str(known_hosts)))
        res = replicate(ansible_playbook, params, expect_rc=None)
        assert proxy.dropped, "the proxy never dropped the connection: the test did not exercise a retry"
        assert res.get("failed") is not True, res.get("msg") or res
        assert res["datasets"][dst]["attempts"] >= 2
        # The drop hit the stream itself (after the listings, during the send), and the stream was sent again.
        failed_at = next(i for i, line in enumerate(res["log"]) if "attempt 1 failed" in line)
        assert any(line.startswith("full ") for line in res["log"][:failed_at]), res["log"]
        assert res["datasets"][dst]["bytes"] >= 3_000_000
        assert proxy.connections >= 2
    finally:
        proxy.close()
    assert guids(dst) == guids(src)
    assert mounted_checksums(dst) == own_checksums(src)
