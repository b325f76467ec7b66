# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from ansible_collections.zfs.replication.plugins.module_utils._lifetime import Lifetime
from ansible_collections.zfs.replication.plugins.module_utils._naming import NamingSchema
from ansible_collections.zfs.replication.plugins.module_utils._retention import RetentionPlan, Snapshot, plan_retention
from ansible_collections.zfs.replication.plugins.module_utils._tz import TimezoneError
from ansible_collections.zfs.replication.plugins.module_utils._zfs import Snapshot as ZfsSnapshot

AUTO = NamingSchema("auto-%Y-%m-%d_%H-%M")
HOURLY = NamingSchema("hourly-%Y%m%d%H%M")
NOW = datetime(2024, 1, 10, 12, 0, 42)
TWO_DAYS = Lifetime(2, "day")


def snaps(dataset: str, names: list[str], first_txg: int = 100, userrefs: dict[str, int] | None = None) -> list[Snapshot]:
    return [Snapshot(dataset, name, first_txg + i, f"g{dataset}{i}", (userrefs or {}).get(name, 0)) for i, name in enumerate(names)]


def plan(snapshots: list[Snapshot], lifetime: Lifetime = TWO_DAYS, **kw: object) -> RetentionPlan:
    kw.setdefault("other_lifetimes", [])
    kw.setdefault("keep", set())
    kw.setdefault("now", NOW)
    kw.setdefault("tz", "UTC")
    return plan_retention(snapshots, kw.pop("schema", AUTO), lifetime, **kw)  # type: ignore[arg-type]


def test_expired_snapshots_are_destroyed_and_the_rest_kept_with_reasons() -> None:
    listing = snaps("tank/data", ["auto-2024-01-07_12-00", "auto-2024-01-08_11-59", "auto-2024-01-08_12-00", "auto-2024-01-09_12-00"])
    result = plan(listing)
    assert result.destroy == [
        ("tank/data@auto-2024-01-07_12-00", "expired 2024-01-09T12:00+00:00 (lifetime 2 days from 2024-01-07T12:00+00:00)"),
        ("tank/data@auto-2024-01-08_11-59", "expired 2024-01-10T11:59+00:00 (lifetime 2 days from 2024-01-08T11:59+00:00)"),
    ]
    assert result.keep == [
        # expires exactly at now (12:00:42 truncated to 12:00): not yet, as in TrueNAS
        ("tank/data@auto-2024-01-08_12-00", "expires 2024-01-10T12:00+00:00 (lifetime 2 days from 2024-01-08T12:00+00:00)"),
        ("tank/data@auto-2024-01-09_12-00", "newest snapshot of naming schema 'auto-%Y-%m-%d_%H-%M' on tank/data"),
    ]
    assert result.as_dict()["destroy"][0] == {
        "snapshot": "tank/data@auto-2024-01-07_12-00",
        "reason": "expired 2024-01-09T12:00+00:00 (lifetime 2 days from 2024-01-07T12:00+00:00)",
    }


def test_manual_and_other_schema_snapshots_are_untouched_and_not_listed() -> None:
    listing = snaps("tank/data", ["before-upgrade", "hourly-202301010000", "auto-2023-01-01_00-00", "auto-2023-13-01_00-00", "auto-2024-01-10_00-00"])
    result = plan(listing)
    assert result.destroy == [("tank/data@auto-2023-01-01_00-00", "expired 2023-01-03T00:00+00:00 (lifetime 2 days from 2023-01-01T00:00+00:00)")]
    assert [name for name, _unused in result.keep] == ["tank/data@auto-2024-01-10_00-00"]


def test_held_and_keep_listed_snapshots_survive() -> None:
    listing = snaps(
        "tank/data",
        ["auto-2024-01-01_00-00", "auto-2024-01-02_00-00", "auto-2024-01-03_00-00", "auto-2024-01-04_00-00", "auto-2024-01-10_00-00"],
        userrefs={"auto-2024-01-01_00-00": 1, "auto-2024-01-02_00-00": 3},
    )
    result = plan(listing, keep={"tank/data@auto-2024-01-03_00-00", "other/ds@auto-2024-01-04_00-00"})
    assert result.keep == [
        ("tank/data@auto-2024-01-01_00-00", "held (1 user hold)"),
        ("tank/data@auto-2024-01-02_00-00", "held (3 user holds)"),
        ("tank/data@auto-2024-01-03_00-00", "kept for replication (incremental base or pending)"),
        ("tank/data@auto-2024-01-10_00-00", "newest snapshot of naming schema 'auto-%Y-%m-%d_%H-%M' on tank/data"),
    ]
    # keep names are full names: the same short name on another dataset does not protect this one
    assert result.destroy == [("tank/data@auto-2024-01-04_00-00", "expired 2024-01-06T00:00+00:00 (lifetime 2 days from 2024-01-04T00:00+00:00)")]


def test_newest_per_dataset_is_kept_by_createtxg_even_when_expired() -> None:
    # createtxg, not the name, decides which is newest (a clock that jumped back named the last one earlier)
    listing = [
        Snapshot("tank/a", "auto-2024-01-01_00-00", 10, "g1"),
        Snapshot("tank/a", "auto-2023-12-31_00-00", 20, "g2"),
        Snapshot("tank/b", "auto-2023-06-01_00-00", 5, "g3"),
    ]
    result = plan(listing)
    assert result.keep == [
        ("tank/a@auto-2023-12-31_00-00", "newest snapshot of naming schema 'auto-%Y-%m-%d_%H-%M' on tank/a"),
        ("tank/b@auto-2023-06-01_00-00", "newest snapshot of naming schema 'auto-%Y-%m-%d_%H-%M' on tank/b"),
    ]
    assert result.destroy == [("tank/a@auto-2024-01-01_00-00", "expired 2024-01-03T00:00+00:00 (lifetime 2 days from 2024-01-01T00:00+00:00)")]


def test_keep_newest_can_be_turned_off() -> None:
    listing = snaps("tank/data", ["auto-2024-01-01_00-00"])
    result = plan(listing, keep_newest=False)
    assert result.destroy == [("tank/data@auto-2024-01-01_00-00", "expired 2024-01-03T00:00+00:00 (lifetime 2 days from 2024-01-01T00:00+00:00)")]
    assert result.keep == []


def test_longest_lifetime_among_tasks_wins() -> None:
    listing = snaps("tank/data", ["auto-2023-12-01_00-00", "auto-2024-01-05_00-00", "auto-2024-01-09_00-00", "auto-2024-01-10_00-00"])
    result = plan(listing, Lifetime(2, "day"), other_lifetimes=[Lifetime(1, "week"), Lifetime(12, "hour")])
    assert result.destroy == [("tank/data@auto-2023-12-01_00-00", "expired 2023-12-08T00:00+00:00 (lifetime 1 week from 2023-12-01T00:00+00:00)")]
    assert result.keep == [
        ("tank/data@auto-2024-01-05_00-00", "expires 2024-01-12T00:00+00:00 (lifetime 1 week from 2024-01-05T00:00+00:00)"),
        ("tank/data@auto-2024-01-09_00-00", "expires 2024-01-16T00:00+00:00 (lifetime 1 week from 2024-01-09T00:00+00:00)"),
        ("tank/data@auto-2024-01-10_00-00", "newest snapshot of naming schema 'auto-%Y-%m-%d_%H-%M' on tank/data"),
    ]


def test_longest_lifetime_is_judged_per_snapshot_time() -> None:
    # 1 month vs 30 days: from Jan 31 the 30 days last longer, from Mar 1 the month does
    listing = snaps("tank/data", ["auto-2024-01-31_00-00", "auto-2024-03-01_00-00", "auto-2024-04-01_00-00"])
    result = plan(listing, Lifetime(1, "month"), other_lifetimes=[Lifetime(30, "day")], now=datetime(2024, 3, 31, 12, 0))
    assert result.destroy == [
        ("tank/data@auto-2024-01-31_00-00", "expired 2024-03-01T00:00+00:00 (lifetime 30 days from 2024-01-31T00:00+00:00)"),
    ]
    assert result.keep[0] == (
        "tank/data@auto-2024-03-01_00-00",
        "expires 2024-04-01T00:00+00:00 (lifetime 1 month from 2024-03-01T00:00+00:00)",
    )


def test_names_are_wall_times_in_the_task_zone() -> None:
    listing = snaps("tank/data", ["auto-2024-01-09_10-00", "auto-2024-01-09_11-30", "auto-2024-01-10_12-00"])
    # now is 10:00 UTC = 11:00 in Berlin; a 1-day lifetime ends 10:00 and 11:30 Berlin = 09:00 and 10:30 UTC
    result = plan(listing, Lifetime(1, "day"), now=datetime(2024, 1, 10, 10, 0, tzinfo=timezone.utc), tz="Europe/Berlin")
    assert result.destroy == [("tank/data@auto-2024-01-09_10-00", "expired 2024-01-10T10:00+01:00 (lifetime 1 day from 2024-01-09T10:00+01:00)")]
    assert result.keep[0] == ("tank/data@auto-2024-01-09_11-30", "expires 2024-01-10T11:30+01:00 (lifetime 1 day from 2024-01-09T11:30+01:00)")
    # a naive now is wall time in the same zone
    same = plan(listing, Lifetime(1, "day"), now=datetime(2024, 1, 10, 11, 0), tz="Europe/Berlin")
    assert same == result


def test_names_with_offset_use_their_own_offset() -> None:
    schema = NamingSchema("auto-%Y%m%d%H%M%z")
    listing = snaps("tank/data", ["auto-202401091000-0500", "auto-202401091000:0500", "auto-202401101200:0000"])
    result = plan(listing, Lifetime(1, "day"), schema=schema, now=datetime(2024, 1, 10, 12, 0, tzinfo=timezone.utc), tz="America/New_York")
    assert result.destroy == [("tank/data@auto-202401091000:0500", "expired 2024-01-10T10:00+05:00 (lifetime 1 day from 2024-01-09T10:00+05:00)")]
    assert result.keep[0] == ("tank/data@auto-202401091000-0500", "expires 2024-01-10T10:00-05:00 (lifetime 1 day from 2024-01-09T10:00-05:00)")


def test_several_datasets_are_ordered_and_independent() -> None:
    listing = snaps("tank/b", ["auto-2024-01-01_00-00", "auto-2024-01-09_00-00"]) + snaps("tank/a", ["auto-2024-01-01_00-00", "auto-2024-01-02_00-00"])
    result = plan(listing)
    assert [name for name, _unused in result.destroy] == ["tank/a@auto-2024-01-01_00-00", "tank/b@auto-2024-01-01_00-00"]
    assert [name for name, _unused in result.keep] == ["tank/a@auto-2024-01-02_00-00", "tank/b@auto-2024-01-09_00-00"]


def test_empty_listing_gives_empty_plan() -> None:
    assert plan([]) == RetentionPlan([], [])


def test_accepts_the_zfs_listing_snapshot_type() -> None:
    listing = [ZfsSnapshot("tank/data", "auto-2024-01-01_00-00", "g1", 1), ZfsSnapshot("tank/data", "auto-2024-01-10_00-00", "g2", 2)]
    result = plan(listing)  # type: ignore[arg-type]
    assert [name for name, _unused in result.destroy] == ["tank/data@auto-2024-01-01_00-00"]


def test_unknown_zone_is_an_error() -> None:
    with pytest.raises(TimezoneError, match=r"^timezone 'Nowhere/Land' is not a known IANA time zone"):
        plan([], tz="Nowhere/Land")
