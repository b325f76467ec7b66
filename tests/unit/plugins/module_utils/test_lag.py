# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One definition of lag: the newest snapshot on the target, dated by its creation, to now."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from ansible_collections.zfs.replication.plugins.module_utils._info import dataset_info
from ansible_collections.zfs.replication.plugins.module_utils._lag import (
    dataset_recovery_point,
    iso,
    lag_seconds,
    listing_recovery_points,
    run_recovery_point,
    task_recovery_point,
)
from ansible_collections.zfs.replication.plugins.module_utils._planner import Selection
from ansible_collections.zfs.replication.plugins.module_utils._replication_task import ReplicationTask
from ansible_collections.zfs.replication.plugins.module_utils._runner import render_metrics
from ansible_collections.zfs.replication.plugins.module_utils._zfs import parse_get_output

T0 = 1_790_000_000  # 2026-09-21T14:13:20Z


def listing(root: str, rows: list[tuple[str, str, int, int]]) -> object:
    """A `zfs get -Hp -r` listing of ROOT with snapshots (name, guid, createtxg, creation)."""
    lines = [f"{root}\ttype\tfilesystem", f"{root}\tguid\t1", f"{root}\tcreatetxg\t1"]
    for name, guid, txg, creation in rows:
        lines += [f"{root}@{name}\ttype\tsnapshot", f"{root}@{name}\tguid\t{guid}", f"{root}@{name}\tcreatetxg\t{txg}",
                  f"{root}@{name}\tcreation\t{creation}"]
    return parse_get_output(root, "\n".join(lines) + "\n")


def test_the_newest_snapshot_by_creation_dates_the_target_whatever_its_name_says() -> None:
    # Named as if taken a week ago in another zone; created (on the source) an hour ago: the name never decides.
    tgt = listing("b/data", [("auto-2026-09-14_00-00", "11", 10, T0 - 7200), ("auto-2026-09-14_01-00", "12", 11, T0 - 3600)])
    snaps = tgt.get("b/data").snapshots
    assert dataset_recovery_point(snaps) == datetime.fromtimestamp(T0 - 3600, timezone.utc)
    assert dataset_recovery_point([]) is None
    now = datetime.fromtimestamp(T0, timezone.utc) + timedelta(microseconds=999_999)
    assert lag_seconds(dataset_recovery_point(snaps), now) == 3600  # whole seconds, truncated
    assert lag_seconds(datetime.fromtimestamp(T0 + 5, timezone.utc), now) == 0  # the target's clock ahead: never negative
    assert lag_seconds(None, now) is None


def test_a_task_is_as_fresh_as_its_stalest_dataset() -> None:
    a, b = datetime.fromtimestamp(T0 - 60, timezone.utc), datetime.fromtimestamp(T0 - 600, timezone.utc)
    assert task_recovery_point([a, b]) == b
    assert task_recovery_point([a, None]) is None  # a dataset with nothing replicated: no recovery point
    assert task_recovery_point([]) is None


def test_info_metrics_and_engine_read_the_same_point() -> None:
    src = listing("a/data", [("s1", "11", 10, T0 - 7200), ("s2", "12", 11, T0 - 3600), ("s3", "13", 12, T0 - 60)])
    tgt = listing("b/data", [("s1", "11", 5, T0 - 7200), ("s2", "12", 6, T0 - 3600)])
    now = datetime.fromtimestamp(T0 + 10, timezone.utc)
    info = dataset_info(src.get("a/data"), "b/data", tgt.get("b/data"), Selection(name_regex=re.compile(".*")), now)
    assert (info["target_newest"], info["recovery_point"], info["lag"]) == ("s2", iso(datetime.fromtimestamp(T0 - 3600, timezone.utc)), 3610)
    assert info["pending_snapshots"] == ["s3"]

    # The engine records the point per target; the runner's state and metrics take the task's from it.
    points = listing_recovery_points(tgt, ["b/data", "b/data/missing"])
    assert points == {"b/data": info["recovery_point"], "b/data/missing": None}
    assert run_recovery_point({"datasets": {"b/data": {"recovery_point": points["b/data"]}}}) == info["recovery_point"]
    assert run_recovery_point({"datasets": {"b/data": {"recovery_point": points["b/data"]}, "b/x": {"recovery_point": None}}}) is None
    ended = datetime.fromtimestamp(T0 + 4, timezone.utc)
    metrics = render_metrics({"task": "t", "kind": "replication", "newest_replicated": info["recovery_point"], "last_end": iso(ended)}, ended)
    assert f'zfs_replication_lag_seconds{{task="t",kind="replication"}} {3604}' in metrics.splitlines()
    assert f'zfs_replication_newest_replicated_timestamp_seconds{{task="t",kind="replication"}} {T0 - 3600}' in metrics.splitlines()


def test_before_the_first_transfer_pending_leaves_out_what_the_first_run_skips() -> None:
    """Custom retention of one day over a month-old snapshot and a fresh one: the first run would skip the old one
    (retention would destroy it right after), so status does not count it as pending; source retention counts both."""
    now = datetime(2026, 9, 21, 12, 0, tzinfo=timezone.utc)
    src = listing("a/data", [("auto-2026-08-20_12-00", "11", 10, T0 - 86400 * 30), ("auto-2026-09-21_11-00", "12", 11, T0 - 60)])
    base = {"name": "t", "source_datasets": ["a/data"], "target_dataset": "b/data", "naming_schema": ["auto-%Y-%m-%d_%H-%M"],
            "transport": "local"}
    custom = ReplicationTask.from_params({**base, "retention_policy": "custom", "lifetime_value": 1, "lifetime_unit": "day"}).plan_task(now)
    info = dataset_info(src.get("a/data"), "b/data", None, custom.selection, now, custom)
    assert info["pending_snapshots"] == ["auto-2026-09-21_11-00"] and info["pending"] == 1
    plain = ReplicationTask.from_params({**base, "retention_policy": "source"}).plan_task(now)
    info = dataset_info(src.get("a/data"), "b/data", None, plain.selection, now, plain)
    assert info["pending_snapshots"] == ["auto-2026-08-20_12-00", "auto-2026-09-21_11-00"]
