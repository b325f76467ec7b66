# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""hold_pending_snapshots: what replication runs record, which records a snapshot task matches, what it keeps."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from ansible_collections.zfs.replication.plugins.module_utils._naming import NamingSchema
from ansible_collections.zfs.replication.plugins.module_utils._pending import (
    feed_from_state,
    load_feeds,
    metric_lines,
    pending_holds,
    record_replicated,
    status_reasons,
)
from ansible_collections.zfs.replication.plugins.module_utils._snapshot_task import SnapshotTask, TaskError
from ansible_collections.zfs.replication.plugins.module_utils._zfs import Snapshot

SCHEMA = "auto-%Y-%m-%d_%H-%M"
NOW = datetime(2030, 3, 1, 16, 0, tzinfo=timezone.utc)
PARAMS = {"name": "off", "source_datasets": ["tank/data"], "target_dataset": "backup/data", "naming_schema": [SCHEMA],
          "ssh": {"host": "backup.example.net", "port": 2222}}


def snaps(dataset: str, hours: list[int], other: tuple[str, ...] = ()) -> list[Snapshot]:
    names = [f"auto-2030-03-01_{h:02d}-00" for h in hours] + list(other)
    return [Snapshot(dataset, n, f"g{i}", i + 1) for i, n in enumerate(names)]


def details(base: str | None, sent: list[str], error: str | None = None) -> dict:
    return {"datasets": {"backup/data": {"source": "tank/data", "base": base, "snapshots_sent": sent, "error": error}}}


def state(record: dict, name: str = "off", config: str | None = None) -> dict:
    return {"kind": "replication", "task": name, "config": config, "replicated": record}


def test_a_run_records_its_last_verified_snapshot_and_a_failed_run_keeps_the_record():
    first = record_replicated(None, PARAMS, details(None, ["auto-2030-03-01_10-00", "auto-2030-03-01_11-00"]), NOW)
    assert first["datasets"]["tank/data"]["snapshot"] == "auto-2030-03-01_11-00"
    assert first["target"] == "backup.example.net:2222:backup/data" and first["naming_schemas"] == [SCHEMA]
    assert record_replicated(first, PARAMS, {}, NOW)["datasets"] == first["datasets"]  # unreachable: nothing planned
    # Sends that failed: only the planned, guid-checked base is known to be there.
    cut = record_replicated(first, PARAMS, details("auto-2030-03-01_11-00", ["auto-2030-03-01_12-00"], "connection lost"), NOW)
    assert cut["datasets"]["tank/data"]["snapshot"] == "auto-2030-03-01_11-00"


def test_removed_disabled_and_pull_tasks_hold_nothing(tmp_path):
    record = record_replicated(None, PARAMS, details("auto-2030-03-01_10-00", []), NOW)
    assert feed_from_state(state(record)) is not None
    assert feed_from_state(state(record, config=str(tmp_path / "gone.json"))) is None
    disabled = tmp_path / "repl-off.conf.json"
    disabled.write_text(json.dumps({"params": {"enabled": False}}))
    assert feed_from_state(state(record, config=str(disabled))) is None
    assert feed_from_state(state({**record, "direction": "pull"})) is None
    (tmp_path / "repl-off.json").write_text(json.dumps(state(record)))
    (tmp_path / "repl-new.json").write_text(json.dumps({"kind": "replication", "task": "new"}))  # never finished a run
    assert [f.task for f in load_feeds(tmp_path)] == ["off"]


def feeds_for(**records: str):
    out = []
    for name, last in records.items():
        feed = feed_from_state(state(record_replicated(None, {**PARAMS, "name": name}, details(last, []), NOW), name=name))
        assert feed is not None
        out.append(feed)
    return out


def test_the_slowest_target_decides_and_other_schemas_are_not_held():
    listing = {"tank/data": snaps("tank/data", [10, 11, 12, 13, 14, 15], other=("manual-1",))}
    feeds = feeds_for(fast="auto-2030-03-01_15-00", slow="auto-2030-03-01_11-00")
    holds = pending_holds(listing, NamingSchema(SCHEMA), feeds, NOW, timezone.utc, lag_critical=3 * 3600)
    assert sorted(holds.keep) == [f"tank/data@auto-2030-03-01_{h}-00" for h in (11, 12, 13, 14, 15)]
    status = {f["replication"]: f for f in holds.feeds}
    assert (status["fast"]["pending"], status["fast"]["held"], status["fast"]["health"]) == (0, 1, "ok")
    slow = status["slow"]
    assert (slow["pending"], slow["held"], slow["oldest_pending"]) == (4, 5, "tank/data@auto-2030-03-01_12-00")
    assert slow["behind"] == 4 * 3600 and slow["health"] == "critical"


def test_a_recorded_snapshot_gone_from_the_source_holds_by_the_time_in_the_names():
    listing = {"tank/data": snaps("tank/data", [12, 13, 14])}
    holds = pending_holds(listing, NamingSchema(SCHEMA), feeds_for(slow="auto-2030-03-01_11-00"), NOW, timezone.utc)
    assert sorted(holds.keep) == [f"tank/data@auto-2030-03-01_{h}-00" for h in (12, 13, 14)]


def test_a_feed_of_another_schema_or_dataset_holds_nothing():
    listing = {"tank/other": snaps("tank/other", [10, 11])}
    assert pending_holds(listing, NamingSchema(SCHEMA), feeds_for(x="auto-2030-03-01_10-00"), NOW, timezone.utc).feeds == []
    other_schema = feed_from_state(state(record_replicated(None, {**PARAMS, "naming_schema": ["hourly-%Y%m%d-%H%M"]},
                                                           details("auto-2030-03-01_10-00", []), NOW)))
    holds = pending_holds({"tank/data": snaps("tank/data", [10, 11])}, NamingSchema(SCHEMA), [other_schema], NOW, timezone.utc)
    assert holds.keep == {}


def test_metrics_and_status_show_a_critical_target(tmp_path):
    feed = {"replication": "off", "target": "b:backup/data", "held": 5, "pending": 4, "behind": 14400, "lag_critical": 10800,
            "health": "critical", "oldest_pending": "tank/data@auto-2030-03-01_12-00"}
    snap_state = {"task": "hourly", "kind": "snapshot", "details": {"pending": [feed]}}
    lines = metric_lines(snap_state, 'task="hourly",kind="snapshot"')
    assert 'zfs_replication_pending_critical{task="hourly",kind="snapshot",replication="off",target="b:backup/data"} 1' in lines
    assert 'zfs_replication_pending_behind_seconds{task="hourly",kind="snapshot",replication="off",target="b:backup/data"} 14400' in lines
    (tmp_path / "snap-hourly.json").write_text(json.dumps(snap_state))
    assert [h for h, _why in status_reasons(tmp_path, "off")] == ["critical"]
    assert status_reasons(tmp_path, "other") == []


@pytest.mark.parametrize("value", [0, -5, "1h", True])
def test_pending_lag_critical_is_checked(value):
    with pytest.raises(TaskError, match="pending_lag_critical"):
        SnapshotTask.from_params({"dataset": "tank/data", "pending_lag_critical": value})


def test_hold_pending_snapshots_must_be_a_bool():
    with pytest.raises(TaskError, match="hold_pending_snapshots"):
        SnapshotTask.from_params({"dataset": "tank/data", "hold_pending_snapshots": "yes"})
