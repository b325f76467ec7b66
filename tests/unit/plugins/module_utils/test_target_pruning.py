# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pruning tasks of an append-only target (_target_pruning, the target_pruning_tasks filter) and the prune-only
snapshot task they are (take_snapshots: false). The whole path on real ZFS through site.yml is in
tests/integration/test_append_only_site.py."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from ansible_collections.zfs.replication.plugins.filter.target_pruning_tasks import target_pruning_tasks
from ansible_collections.zfs.replication.plugins.module_utils import _snapshot_task as st
from ansible_collections.zfs.replication.plugins.module_utils import _zfs as z
from ansible_collections.zfs.replication.plugins.module_utils._replication_task import ReplicationTask
from ansible_collections.zfs.replication.plugins.module_utils._target_pruning import derive

NOW = datetime(2026, 12, 4, 10, 17, tzinfo=timezone.utc)


def push(**kw: Any) -> dict[str, Any]:
    base = {"name": "fs-data", "source_datasets": ["tank/data"], "target_dataset": "backup/fs/data", "transport": "ssh",
            "ssh": {"host": "192.0.2.20"}, "naming_schema": ["auto-%Y-%m-%d_%H-%M"], "target_access": "append_only",
            "retention_policy": "custom", "lifetime_value": 2, "lifetime_unit": "week"}
    return {**base, **kw}


def test_one_prune_only_task_per_schema_with_the_longest_lifetimes():
    task = ReplicationTask.from_params(push(also_include_naming_schema=["manual-%Y-%m-%d_%H-%M"], schedule="daily",
                                            lifetimes=[{"schedule": "hourly", "lifetime_value": 1, "lifetime_unit": "day"}],
                                            timezone="Europe/Berlin"))
    tasks = derive(task, "fileserver")
    assert [t["name"] for t in tasks] == ["fileserver-fs-data-prune", "fileserver-fs-data-prune-2"]
    assert tasks[0] == {"name": "fileserver-fs-data-prune", "dataset": "backup/fs/data", "recursive": True,
                        "naming_schema": "auto-%Y-%m-%d_%H-%M", "take_snapshots": False, "schedule": "daily",
                        "lifetime_value": 2, "lifetime_unit": "week",
                        "other_lifetimes": [{"lifetime_value": 1, "lifetime_unit": "day"}], "timezone": "Europe/Berlin"}
    assert tasks[1]["naming_schema"] == "manual-%Y-%m-%d_%H-%M"
    for params in tasks:  # valid snapshot tasks
        st.SnapshotTask.from_params(params)


@pytest.mark.parametrize("kw", [{"target_access": "full"}, {"retention_policy": "none"}])
def test_no_pruning_task_without_append_only_custom_retention(kw):
    assert derive(ReplicationTask.from_params(push(**kw)), "fileserver") == []


def test_a_prune_only_task_takes_nothing_and_keeps_the_newest_and_the_held():
    task = st.SnapshotTask.from_params({"dataset": "backup/fs/data", "recursive": True, "take_snapshots": False, "schedule": "hourly",
                                        "timezone": "UTC", "lifetime_value": 1, "lifetime_unit": "day"})
    snaps = {"backup/fs/data": ["auto-2026-11-20_08-00", ("auto-2026-11-21_08-00", 1), "auto-2026-11-22_08-00", "manual-1",
                                "auto-2026-11-23_08-00"],
             "backup/fs/data/child": ["auto-2026-11-20_08-00"]}
    datasets = {}
    txg = 100
    for name, items in snaps.items():
        ds = datasets[name] = z.Dataset(name, "filesystem")
        for item in items:
            short, refs = (item, 0) if isinstance(item, str) else item
            txg += 1
            ds.snapshots.append(z.Snapshot(name, short, f"g{txg}", txg, refs))
    plan = st.plan_snapshot_task(task, z.Listing("backup/fs/data", datasets), NOW)
    assert plan.take == [] and plan.snapshot_name is None
    assert plan.reason == "take_snapshots is false: this task only prunes"
    assert [n for n, _why in plan.retention.destroy] == ["backup/fs/data@auto-2026-11-20_08-00", "backup/fs/data@auto-2026-11-22_08-00"]
    kept = {n for n, _why in plan.retention.keep}
    assert kept == {"backup/fs/data@auto-2026-11-21_08-00", "backup/fs/data@auto-2026-11-23_08-00", "backup/fs/data/child@auto-2026-11-20_08-00"}


def declaration(source: str, *tasks: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"source": source, "snapshot_tasks": [], "replication_tasks": list(tasks), "snapshot_defaults": {},
            "replication_defaults": {}, **more}


def test_the_filter_picks_the_pushes_that_reach_this_host():
    decls = [
        declaration("fileserver", push(), push(name="to-other", ssh={"host": "192.0.2.30"}),
                    push(name="other-port", ssh={"host": "192.0.2.20", "port": 2222}),
                    push(name="full", target_access="full", target_dataset="backup/fs/full")),
        # the ssh.host comes from the host's defaults (merged as on that host)
        declaration("db", {"name": "db", "source_datasets": ["tank/db"], "target_dataset": "backup/db",
                           "naming_schema": ["db-%Y-%m-%d_%H-%M"]},
                    replication_defaults={"ssh": {"host": "192.0.2.20"}, "target_access": "append_only",
                                          "retention_policy": "custom", "lifetime_value": 3, "lifetime_unit": "day"}),
    ]
    got = target_pruning_tasks(decls, address="192.0.2.20")
    assert [(t["name"], t["dataset"], t["naming_schema"]) for t in got] == [
        ("fileserver-fs-data-prune", "backup/fs/data", "auto-%Y-%m-%d_%H-%M"),
        ("db-db-prune", "backup/db", "db-%Y-%m-%d_%H-%M"),
    ]
    assert [t["name"] for t in target_pruning_tasks(decls, address="192.0.2.20", port=2222)] == ["fileserver-other-port-prune"]
    assert target_pruning_tasks(decls, address="192.0.2.99") == []


def test_an_invalid_declaration_elsewhere_is_left_out_and_the_others_still_count():
    """Its own host fails on it (naming the field); here it only means no pruning task for it, which keeps snapshots."""
    decls = [declaration("fileserver", push(retention_policy="source")), declaration("db", push(name="db"))]
    assert [t["name"] for t in target_pruning_tasks(decls, address="192.0.2.20")] == ["db-db-prune"]
