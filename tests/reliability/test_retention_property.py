# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Property test of the planner's target retention (pure; no ZFS): random snapshot histories on both sides,
holds, policies, lifetimes and clock jumps never make a plan destroy the newest common snapshot, a held one, a
snapshot the source still has (policy source), an unexpired one (custom), or one the task's schemas do not name."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from ansible_collections.zfs.replication.plugins.module_utils._planner import plan
from ansible_collections.zfs.replication.plugins.module_utils._replication_task import ReplicationTask
from ansible_collections.zfs.replication.plugins.module_utils._zfs import Dataset, Listing, Snapshot

SCHEMA = "auto-%Y-%m-%d_%H-%M"
EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)
UNITS = ["hour", "day", "week", "month", "year"]


@st.composite
def histories(draw):
    """(source snapshots, target snapshots, now, params) of one dataset pair with a plausible past."""
    n = draw(st.integers(1, 14))
    minutes = sorted(draw(st.sets(st.integers(0, 60 * 24 * 400), min_size=n, max_size=n)))
    names = []
    for i, m in enumerate(minutes):
        foreign = draw(st.booleans()) and draw(st.booleans()) and draw(st.booleans())  # ~1 in 8: not the task's
        names.append(f"manual-{i}" if foreign else (EPOCH + timedelta(minutes=m)).strftime(SCHEMA))
    history = [(name, f"{1000 + i}", 10 * (i + 1)) for i, name in enumerate(names)]  # (name, guid, createtxg)
    # What was replicated: some earlier snapshots reached the target; later ones are still unsent.
    sent_upto = draw(st.integers(0, n))
    on_target = [h for h in history[:sent_upto] if draw(st.booleans()) or h is history[sent_upto - 1]]
    # The source has since pruned some of its snapshots (its own retention), never the unsent ones.
    pruned = {h[0] for h in history[:sent_upto] if draw(st.integers(0, 3)) == 0}
    source = [h for h in history if h[0] not in pruned]
    # The target may also carry snapshots of another origin (same schema, unknown guid) older than everything.
    extra = [((EPOCH - timedelta(days=d)).strftime(SCHEMA), f"9{d}", 1 + d % 5)
             for d in sorted(draw(st.sets(st.integers(1, 30), max_size=2)), reverse=True)]
    holds = {h[0] for h in on_target if draw(st.integers(0, 4)) == 0}
    # The clock: anywhere from well before the first snapshot (jumped back) to years after the last.
    now = EPOCH + timedelta(minutes=draw(st.integers(-60 * 24 * 30, 60 * 24 * 1500)))
    policy = draw(st.sampled_from(["custom", "source", "custom", "source", "none"]))
    params = {"source_datasets": ["p/src"], "target_dataset": "q/dst", "transport": "local", "naming_schema": [SCHEMA],
              "retention_policy": policy, "hold_base": draw(st.booleans())}
    if policy == "custom":
        params.update(lifetime_value=draw(st.integers(1, 30)), lifetime_unit=draw(st.sampled_from(UNITS)))
    return source, extra + on_target, holds, now, params


def _listing(root: str, snaps, holds=frozenset()) -> Listing:
    ds = Dataset(root, "filesystem", guid=f"g-{root}", createtxg=1,
                 snapshots=[Snapshot(root, n, g, t, userrefs=1 if n in holds else 0) for n, g, t in sorted(snaps, key=lambda s: s[2])])
    return Listing(root, {root: ds})


def _projected(d, source, target) -> list[tuple[str, str]]:
    """(name, guid) of the target as the plan leaves it, oldest first: what it destroys first is gone, what it sends is there."""
    src_guid = {n: g for n, g, _t in source}
    kept = [] if d.action == "full" and d.base is None else [(n, g) for n, g, _t in sorted(target, key=lambda t: t[2])
                                                             if n not in d.destroy_before]
    return kept + [(n, src_guid[n]) for n in d.pending]


def _should_go(d, source, target, holds, now, params, task) -> set[str]:
    """What retention must destroy, derived from the history alone: every target snapshot (as the plan leaves the
    target) that the task's schema names, that is not the newest common one, not held by someone else, and that is
    gone from the source (policy source) or expired (policy custom). A target that does not exist yet has no
    preview in the plan (the run decides on the target it lists after sending)."""
    if params["retention_policy"] == "none" or d.action not in ("full", "incremental", "in_sync") or not target:
        return set()
    src_guid = {n: g for n, g, _t in source}
    projected = _projected(d, source, target)
    common = [g for _n, g in projected if g in set(src_guid.values())]
    if not common:
        return set()
    newest_common = common[-1]
    released = src_guid.get(d.base) if params["hold_base"] and d.pending and d.base else None
    expires = task.retention(now).expires
    out = set()
    for name, guid in projected:
        if guid == newest_common or name.startswith("manual-") or (name in holds and guid != released):
            continue
        if params["retention_policy"] == "source" and guid not in set(src_guid.values()):
            out.add(name)
        elif params["retention_policy"] == "custom":
            when = expires(name, now)
            if when is not None and when < now:
                out.add(name)
    return out


@pytest.mark.fault_class("retention (property test)")
@settings(max_examples=400)
@given(histories())
def test_target_retention_never_destroys_what_must_stay(h):
    """Both directions: nothing that must stay is destroyed, and everything retention owes is destroyed (a planner
    that never destroys fails this as surely as one that destroys too much)."""
    source, target, holds, now, params = h
    task = ReplicationTask.from_params(params)
    src, tgt = _listing("p/src", source), (_listing("q/dst", target, holds) if target else None)
    the_plan = plan(task.plan_task(now), src, tgt)
    (d,) = the_plan.datasets
    destroyed = [n for n, _why in d.destroy_after]
    owed = _should_go(d, source, target, holds, now, params, task)
    event(f"{params['retention_policy']}: {'destroys' if destroyed else 'keeps all'}; {'owes' if owed else 'owes nothing'}")
    # The other direction first: what has expired (custom) or left the source (source) does go.
    assert owed <= set(destroyed), f"retention kept {sorted(owed - set(destroyed))}, which it owes ({params['retention_policy']}, now {now})"
    if not destroyed:
        return
    assert d.action in ("full", "incremental", "in_sync"), d
    # Retention is decided on the target as the run leaves it (destroy_after runs after the sends, so a snapshot
    # sent by this run may go too if it has already expired): only snapshots that will be there are named.
    tsnaps = dict(_projected(d, source, target))
    src_guids = {g for _n, g, _t in source}
    newest_common = d.pending[-1] if d.pending else d.base
    assert newest_common is not None and newest_common not in destroyed, (newest_common, destroyed)
    assert set(destroyed) <= set(tsnaps), destroyed
    assert not set(destroyed) & set(d.destroy_before)
    expires = task.retention(now).expires
    for name in destroyed:
        assert not name.startswith("manual-"), f"{name}: not named by the task's schemas"
        if name in holds:
            assert task.hold_base and name == d.base and d.pending, f"{name} is held by someone else"
        if params["retention_policy"] == "source":
            assert tsnaps[name] not in src_guids, f"{name} is still on the source"
        elif params["retention_policy"] == "custom":
            when = expires(name, now)
            assert when is not None and when < now, f"{name} expires {when}, now {now} (clock jumps must not expire it)"
        else:
            pytest.fail(f"retention_policy none destroyed {name}")
    # The newest common snapshot stays reachable: after the run the target has it with the source's guid.
    src_by_name = {n: g for n, g, _t in source}
    assert newest_common in src_by_name
