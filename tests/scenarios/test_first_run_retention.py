# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A first run does not ship what the target's retention destroys at once (TrueNAS skips them too).

A source holding two weeks of daily snapshots replicated with `retention_policy: custom` (1 week): the first run sends
only the snapshots the target keeps (the full stream starts at the oldest kept one), the plan lists the others as
skipped with the reason, and the target ends with exactly what retention keeps, with the source's guids. A control
task without retention over the same source sends everything: the bytes the first run did not send are the expired
increments. The next day's run is an incremental from the newest snapshot (never skipped: it is the next base), and
retention then destroys the one that expired meanwhile."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from scenario_helpers import SCHEMA, guids, params, sends, snaps, state

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
SIZE = 200_000  # each day rewrites the same file: an increment carries about this much


def named(when: datetime) -> str:
    return when.strftime(SCHEMA)


def daily_source(backend, src: str, days: int) -> list[str]:
    """SRC snapshotted once a day for DAYS days up to NOW, the same file rewritten with new data each day."""
    names = []
    for d in range(days - 1, -1, -1):
        backend.write(src, "data", size=SIZE)
        name = named(NOW - timedelta(days=d))
        backend.zfs("snapshot", f"{src}@{name}")
        names.append(name)
    return names


def plan_of(run, source: str) -> dict:
    assert run.result is not None, run
    return next(d for d in run.result["plan"] if d["source"] == source)


@pytest.mark.backends("zfs-fuse", reason="the planner's choice of snapshots does not depend on the ZFS under it; zfs-fuse shows it")
def test_first_run_sends_only_what_target_retention_keeps(backend):
    src, dst = backend.pair("frr")
    control = f"{dst}-all"
    names = daily_source(backend, src, 14)
    # 1 week: snapshots older than NOW - 7 days are expired on the target (the one exactly 7 days old expires at NOW: kept).
    kept = [n for n in names if datetime.strptime(n, SCHEMA).replace(tzinfo=timezone.utc) >= NOW - timedelta(days=7)]
    expired = [n for n in names if n not in kept]
    assert len(kept) == 8 and len(expired) == 6
    p = params(src, dst, timezone="UTC", retention_policy="custom", lifetime_value=1, lifetime_unit="week", hold_base=False)

    # Check mode shows the plan (skipped with the reason, the full from the oldest kept) and changes nothing.
    before = state(backend, src)
    preview = backend.engine(p, check_mode=True, now=NOW)
    assert preview.ok, str(preview)
    dplan = plan_of(preview, src)
    assert [name for name, _why in dplan["skipped"]] == expired
    assert all("expired" in why and "retention_policy=custom" in why for _name, why in dplan["skipped"])
    assert dplan["pending"] == kept
    assert sends(preview, src) == [("full", None, kept[0]), ("I", kept[0], kept[-1])]
    assert state(backend, src) == before and backend.sh(f"zfs list -H -o name {dst} 2>/dev/null || true").strip() == ""

    run = backend.engine(p, now=NOW)
    assert run.ok, str(run)
    assert any(line.strip().startswith(f"skip {expired[0]}: expired") for line in run.log), run
    result = run.dataset(dst)
    assert result["snapshots_sent"] == kept
    assert result.get("destroyed", []) == []  # nothing sent only to be destroyed
    assert snaps(backend, dst) == kept
    src_guids = guids(backend, src)
    assert guids(backend, dst) == {n: src_guids[n] for n in kept}
    assert backend.checksums(dst) == backend.checksums(src)
    assert snaps(backend, src) == names  # a replication task never prunes the source

    # The same source without retention sends everything: the expired increments are what the first run saved.
    everything = backend.engine(params(src, control, timezone="UTC", hold_base=False), now=NOW)
    assert everything.ok, str(everything)
    assert everything.dataset(control)["snapshots_sent"] == names
    ours, theirs = result["bytes"], everything.dataset(control)["bytes"]
    assert ours is not None and theirs is not None, (run, everything)  # pv counts the bytes on this host
    assert theirs - ours >= len(expired) * SIZE * 0.9, (ours, theirs)

    # Again at once: nothing to send, nothing to destroy.
    again = backend.engine(p, now=NOW)
    assert again.ok, str(again)
    assert again.result["changed"] is False and snaps(backend, dst) == kept

    # A day later: the newest snapshot was the base; the next incremental goes from it, and retention destroys the one
    # that expired meanwhile (after the sends, in the same run).
    later = NOW + timedelta(days=1)
    backend.write(src, "data", size=SIZE)
    backend.zfs("snapshot", f"{src}@{named(later)}")
    inc = backend.engine(p, now=later)
    assert inc.ok, str(inc)
    assert sends(inc, src) == [("I", kept[-1], named(later))]
    assert plan_of(inc, src)["skipped"] == []
    assert inc.dataset(dst)["destroyed"] == [kept[0]]
    assert snaps(backend, dst) == [*kept[1:], named(later)]
    src_guids = guids(backend, src)
    assert guids(backend, dst) == {n: src_guids[n] for n in snaps(backend, dst)}
    assert backend.checksums(dst) == backend.checksums(src)


@pytest.mark.backends("zfs-fuse", reason="the planner's choice of snapshots does not depend on the ZFS under it; zfs-fuse shows it")
def test_first_run_keeps_the_newest_even_when_everything_expired(backend):
    """Every source snapshot is past the target's lifetime: the first run still sends the newest one (the base the next
    run needs), and retention keeps it as the newest common snapshot."""
    src, dst = backend.pair("fre")
    names = daily_source(backend, src, 4)
    p = params(src, dst, timezone="UTC", retention_policy="custom", lifetime_value=1, lifetime_unit="hour")
    run = backend.engine(p, now=NOW + timedelta(days=2))
    assert run.ok, str(run)
    assert [n for n, _why in plan_of(run, src)["skipped"]] == names[:-1]
    assert run.dataset(dst)["snapshots_sent"] == [names[-1]]
    assert snaps(backend, dst) == [names[-1]]
    assert guids(backend, dst) == {names[-1]: guids(backend, src)[names[-1]]}
    assert backend.checksums(dst) == backend.checksums(src)
