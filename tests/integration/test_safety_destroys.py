# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Destructive steps on real ZFS: retention decided on guids after the sends, the base protected by guid, no recv -F
on incremental streams. The engine runs in this process on the sandbox's zfs-fuse pools (transport local); every
check reads the pools (names, guids, datasets, file checksums)."""
from __future__ import annotations

import contextlib
import secrets
import time
from datetime import datetime, timedelta, timezone

import pytest

from ansible_collections.zfs.replication.plugins.module_utils._replication import run_replication
from helpers import datasets_under, mounted_checksums, own_checksums, snapshots_with_guids, zfs

pytestmark = pytest.mark.integration

SCHEMA = "auto-%Y-%m-%d_%H-%M"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def name(days_ago: float) -> str:
    return (NOW - timedelta(days=days_ago)).strftime(SCHEMA)


def write(dataset: str, seed: str) -> None:
    mp = zfs("get", "-H", "-o", "value", "mountpoint", dataset).strip()
    with open(f"{mp}/{seed}.bin", "wb") as handle:
        handle.write(secrets.token_bytes(100_000))


def destroy(name: str, *flags: str) -> None:
    """zfs-fuse sometimes says "dataset is busy" right after a receive or an unmount: retry a few times."""
    for attempt in range(5):
        try:
            zfs("destroy", *flags, name)
            return
        except AssertionError:
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))


@pytest.fixture
def pair(sandbox):
    tag = secrets.token_hex(3)
    src, parent = f"{sandbox.src_pool}/safe{tag}", f"{sandbox.dst_pool}/safe{tag}"
    zfs("create", src)
    zfs("create", parent)
    yield src, f"{parent}/data"
    for root in (src, parent):
        for line in zfs("get", "-H", "-p", "-r", "-o", "name,value", "userrefs", root).splitlines():
            snap, refs = line.split("\t")
            if "@" in snap and refs != "0":
                with contextlib.suppress(AssertionError):
                    zfs("release", "zfs.replication:safety", snap)
        with contextlib.suppress(AssertionError):
            zfs("destroy", "-r", root)


def params(src: str, dst: str, **kw) -> dict:
    return {"name": "safety", "source_datasets": [src], "target_dataset": dst, "transport": "local",
            "naming_schema": [SCHEMA], "retries": 0, **kw}


def run(p: dict, check_mode: bool = False):
    return run_replication(p, check_mode=check_mode, now=NOW)


def test_rolled_back_source_slot_retaken_is_received_and_kept_under_source_retention(pair):
    src, dst = pair
    n1, n2, n3 = name(3), name(2), name(1)
    write(src, "one")
    zfs("snapshot", f"{src}@{n1}")
    write(src, "two")
    zfs("snapshot", f"{src}@{n2}")
    # No holds: with hold_base the task's hold on the old n2 kept it out of retention and hid the defect.
    p = params(src, dst, retention_policy="source", allow_rollback=True, hold_base=False)
    first = run(p)
    assert not first.failed, first.errors
    old_n2 = snapshots_with_guids(dst)[f"@{n2}"]
    # The source is rolled back to n1 and the n2 slot taken again (same name, new guid), then n3.
    zfs("rollback", "-r", f"{src}@{n1}")
    write(src, "two-again")
    zfs("snapshot", f"{src}@{n2}")
    write(src, "three")
    zfs("snapshot", f"{src}@{n3}")

    second = run(p)

    assert not second.failed, second.errors
    assert snapshots_with_guids(dst) == snapshots_with_guids(src)  # the new n2 and n3 are there, with the source's guids
    assert snapshots_with_guids(dst)[f"@{n2}"] != old_n2
    (ds,) = second.datasets
    assert ds.destroyed == [n2]  # the old n2, destroyed once, before the send; never the new one after it
    assert mounted_checksums(dst) == own_checksums(src)


def test_from_scratch_over_a_target_with_the_same_names_keeps_everything_it_received(pair):
    src, dst = pair
    n1, n2 = name(2), name(1)
    zfs("create", dst)
    for n in (n1, n2):  # an unrelated target whose snapshot names overlap the source's
        zfs("snapshot", f"{dst}@{n}")
    write(src, "one")
    zfs("snapshot", f"{src}@{n1}")
    write(src, "two")
    zfs("snapshot", f"{src}@{n2}")

    result = run(params(src, dst, retention_policy="source", allow_from_scratch=True))

    assert not result.failed, result.errors
    assert snapshots_with_guids(dst) == snapshots_with_guids(src)
    assert mounted_checksums(dst) == own_checksums(src)


def test_the_common_snapshot_renamed_on_the_target_survives_custom_retention(pair):
    src, dst = pair
    n1 = name(1)
    write(src, "one")
    zfs("snapshot", f"{src}@{n1}")
    p = params(src, dst, retention_policy="custom", lifetime_value=1, lifetime_unit="week", hold_base=False)
    assert not run(p).failed
    # Someone renames the target's copy of the base to an older (long expired) name.
    old = name(300)
    zfs("rename", f"{dst}@{n1}", f"{dst}@{old}")
    guid = snapshots_with_guids(dst)[f"@{old}"]

    kept = run(p)
    assert not kept.failed, kept.errors
    assert snapshots_with_guids(dst) == {f"@{old}": guid}  # the only common snapshot stays

    write(src, "two")
    zfs("snapshot", f"{src}@{name(0.5)}")
    after = run(p)
    assert not after.failed, after.errors  # still related: an incremental from the renamed base
    assert after.datasets[0].action == "incremental"
    assert snapshots_with_guids(dst)[f"@{name(0.5)}"] == snapshots_with_guids(src)[f"@{name(0.5)}"]


def test_replicate_with_allow_rollback_keeps_what_the_source_no_longer_has(pair):
    """With allow_rollback every incremental used to be received with -F; with replicate (-R -F) that destroyed target
    snapshots and child datasets the source no longer had, with retention_policy none and unlisted in the plan."""
    src, dst = pair
    n1, n2, n3 = name(3), name(2), name(1)
    zfs("create", f"{src}/child")
    write(src, "one")
    zfs("snapshot", "-r", f"{src}@{n1}")
    zfs("snapshot", "-r", f"{src}@{n2}")
    p = params(src, dst, recursive=True, replicate=True, allow_rollback=True, retention_policy="none")
    assert not run(p).failed
    destroy(f"{src}/child", "-r")
    destroy(f"{src}@{n1}")
    write(src, "three")
    zfs("snapshot", f"{src}@{n3}")
    before = snapshots_with_guids(dst)

    result = run(p)

    assert not result.failed, result.errors
    after = snapshots_with_guids(dst)
    assert f"{dst}/child" in datasets_under(dst)
    assert {k: v for k, v in before.items()} == {k: v for k, v in after.items() if k in before}  # nothing destroyed
    assert after[f"@{n3}"] == snapshots_with_guids(src)[f"@{n3}"]
    assert not any(s.force for s in result.plan.sends)


def test_check_mode_lists_what_a_from_scratch_replicate_replaces_and_changes_nothing(pair):
    src, dst = pair
    n1 = name(1)
    zfs("create", f"{src}/child")
    zfs("snapshot", "-r", f"{src}@{n1}")
    zfs("create", dst)
    zfs("create", f"{dst}/mine")
    zfs("snapshot", "-r", f"{dst}@unrelated")
    before = snapshots_with_guids(dst), datasets_under(dst)

    planned = run(params(src, dst, recursive=True, replicate=True, allow_from_scratch=True), check_mode=True)

    (d,) = planned.plan.datasets
    assert d.destroy_before == ["unrelated"] and d.force_destroys == [f"{dst}/mine"]
    assert (snapshots_with_guids(dst), datasets_under(dst)) == before


def test_pull_reads_snapshot_names_in_the_source_hosts_zone(pair, sandbox, monkeypatch):
    """The engine runs on the target in pull mode: the source named its snapshots in its own zone (this machine's,
    reached over ssh), not in the zone the engine runs in (TZ=Pacific/Kiritimati, UTC+14 here)."""
    src, dst = pair
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    young, newest = (now - timedelta(hours=20)).strftime(SCHEMA), (now - timedelta(hours=1)).strftime(SCHEMA)
    write(src, "one")
    zfs("snapshot", f"{src}@{young}")
    zfs("snapshot", f"{src}@{newest}")
    ssh = {"host": "127.0.0.1", "port": sandbox.sshd.port, "user": "root", "private_key_file": str(sandbox.sshd.private_key),
           "known_hosts_file": str(sandbox.sshd.known_hosts)}
    p = params(src, dst, direction="pull", transport="ssh", ssh=ssh, retention_policy="custom", lifetime_value=1, lifetime_unit="day")
    assert not run_replication(p, now=now).failed
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # read as +14:00, `young` would be 34 hours old: expired

    again = run_replication(p, now=now)

    assert not again.failed, again.errors
    assert any("source's time zone UTC" in line for line in again.log), again.log
    assert sorted(snapshots_with_guids(dst)) == sorted([f"@{young}", f"@{newest}"])  # 20 hours old: kept
