# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The replication task's bad input through real ansible-playbook runs on zfs-fuse and the sandbox sshd: the module
refuses it with a message naming the field, and nothing changes on either side.

What the engine does with good input (directions, transports, ciphers, selection, recursion, properties, readonly,
retention, consent, compression, rate limit, retries) is tested on each ZFS backend in tests/scenarios
(test_transport.py, test_selection.py, test_properties_retention.py).
"""
from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import pytest

from helpers import dataset_exists, destroy_retrying, mountpoint, zfs

pytestmark = pytest.mark.integration

SCHEMA = "auto-%Y-%m-%d_%H-%M"

# --------------------------------------------------------------------------------------------------------------------
# Helpers: real state
# --------------------------------------------------------------------------------------------------------------------


def write_files(mountpoint: str, seed: str, count: int = 2, size: int = 100_000) -> None:
    root = Path(mountpoint)
    (root / "dir").mkdir(exist_ok=True)
    for i in range(count):
        (root / "dir" / f"{seed}-{i}.bin").write_bytes(secrets.token_bytes(size))
    (root / f"{seed}.txt").write_text(f"hello {seed}\n")


def state(*roots: str) -> dict[str, object]:
    """Datasets and snapshots (with guids) below ROOTS: what "nothing changed" compares."""
    return {root: sorted(zfs("get", "-H", "-p", "-r", "-o", "name,value", "guid", root).splitlines()) for root in roots}


def snap(dataset: str, name: str, recursive: bool = False, data: str | None = None) -> None:
    """Optionally write new files, then snapshot."""
    if data:
        write_files(mountpoint(dataset), data)
    zfs("snapshot", *(["-r"] if recursive else []), f"{dataset}@{name}")


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


def replicate_many(ansible_playbook, tasks: dict[str, dict], ignore_errors: bool = False, **kw) -> dict[str, dict]:
    """Several module calls in one playbook; returns {task name: result}."""
    res = ansible_playbook(playbook(tasks, ignore_errors=ignore_errors), **kw)
    return {name: res.task(name) for name in tasks}


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


def destroy_r(dataset: str) -> None:
    destroy_retrying(dataset, tags=HOLD_TAGS)


def base_params(sandbox, src: str, dst: str, **more) -> dict:
    params = {"source_datasets": [src], "target_dataset": dst, "naming_schema": [SCHEMA], "ssh": ssh_args(sandbox)}
    params.update(more)
    return params


# --------------------------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------------------------

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
    assert not dataset_exists(dst)


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
    assert not dataset_exists(dst)
