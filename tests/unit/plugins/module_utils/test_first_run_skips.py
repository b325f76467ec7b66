# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A first transfer leaves out what target retention would destroy right after, never the newest."""
from __future__ import annotations

from datetime import datetime, timezone

from ansible_collections.zfs.replication.plugins.module_utils._planner import plan
from ansible_collections.zfs.replication.plugins.module_utils._replication_task import ReplicationTask
from ansible_collections.zfs.replication.plugins.module_utils._zfs import Dataset, Listing, Snapshot

NOW = datetime(2026, 11, 10, 12, 0, tzinfo=timezone.utc)
NAMES = [f"auto-2026-11-{d:02d}_00-00" for d in (1, 2, 3, 4, 8, 9, 10)]


def _task(**kw):
    params = {"name": "t", "source_datasets": ["tank/data"], "target_dataset": "backup/data", "transport": "local",
              "naming_schema": ["auto-%Y-%m-%d_%H-%M"], "timezone": "UTC", **kw}
    return ReplicationTask.from_params(params).plan_task(NOW)


def _listing(names, ds="tank/data"):
    snaps = [Snapshot(ds, n, f"g{i}", 10 * (i + 1)) for i, n in enumerate(names)]
    return Listing(ds, {ds: Dataset(ds, "filesystem", props={}, snapshots=snaps)})


def test_custom_retention_skips_the_expired_and_starts_the_full_at_the_oldest_kept():
    (d,) = plan(_task(retention_policy="custom", lifetime_value=5, lifetime_unit="day"), _listing(NAMES), None).datasets
    assert [n for n, _why in d.skipped] == NAMES[:4]
    assert all("retention_policy=custom" in why for _n, why in d.skipped)
    assert [(s.mode, s.base, s.snapshot) for s in d.sends] == [("full", None, NAMES[4]), ("I", NAMES[4], NAMES[-1])]
    assert d.pending == NAMES[4:]
    assert d.destroy_after == []


def test_the_newest_is_sent_even_when_expired():
    (d,) = plan(_task(retention_policy="custom", lifetime_value=1, lifetime_unit="hour"), _listing(NAMES), None).datasets
    assert [n for n, _why in d.skipped] == NAMES[:-1]
    assert [(s.mode, s.snapshot) for s in d.sends] == [("full", NAMES[-1])]


def test_no_skip_without_custom_retention_or_with_a_common_snapshot():
    for policy in ("none", "source"):
        (d,) = plan(_task(retention_policy=policy), _listing(NAMES), None).datasets
        assert d.skipped == [] and d.pending == NAMES
    # An incremental run is not a first transfer: what it sends is decided from the base as before.
    t = _task(retention_policy="custom", lifetime_value=5, lifetime_unit="day")
    target = _listing(NAMES[:1], "backup/data")
    target.datasets["backup/data"].snapshots[0].guid = "g0"
    (d,) = plan(t, _listing(NAMES), target).datasets
    assert d.action == "incremental" and d.skipped == []


def test_interleaved_lifetimes_skip_with_i_hops():
    """Midnight snapshots live a year, the others a day: only the expired non-midnight ones are left out."""
    names = ["auto-2026-11-01_00-00", "auto-2026-11-01_12-00", "auto-2026-11-02_00-00", "auto-2026-11-02_12-00", "auto-2026-11-10_11-00"]
    t = _task(retention_policy="custom", lifetime_value=1, lifetime_unit="day",
              lifetimes=[{"schedule": {"minute": "0", "hour": "0"}, "lifetime_value": 1, "lifetime_unit": "year"}])
    (d,) = plan(t, _listing(names), None).datasets
    assert [n for n, _why in d.skipped] == [names[1], names[3]]
    assert [(s.mode, s.base, s.snapshot) for s in d.sends] == [
        ("full", None, names[0]), ("i", names[0], names[2]), ("i", names[2], names[4])]
