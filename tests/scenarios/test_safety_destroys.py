# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Destructive steps on real ZFS, each backend: retention decided on guids after the sends, the base protected by
guid, no recv -F on incremental streams, what a from-scratch receive replaces listed in the plan, names read in the
source's zone in pull mode. Every check reads the pools (names, guids, datasets, file checksums)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

SCHEMA = "auto-%Y-%m-%d_%H-%M"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def name(days_ago: float) -> str:
    return (NOW - timedelta(days=days_ago)).strftime(SCHEMA)


def params(src: str, dst: str, **kw) -> dict:
    return {"name": "scenario", "source_datasets": [src], "target_dataset": dst, "transport": "local",
            "naming_schema": [SCHEMA], "retries": 0, **kw}


def test_rolled_back_source_slot_retaken_is_received_and_kept_under_source_retention(backend):
    src, dst = backend.pair("rb")
    n1, n2, n3 = name(3), name(2), name(1)
    backend.write(src, "one")
    backend.zfs("snapshot", f"{src}@{n1}")
    backend.write(src, "two")
    backend.zfs("snapshot", f"{src}@{n2}")
    # No holds: with hold_base the task's hold on the old n2 kept it out of retention and hid the defect.
    p = params(src, dst, retention_policy="source", allow_rollback=True, hold_base=False)
    first = backend.engine(p, now=NOW)
    assert first.ok, str(first)
    old_n2 = backend.snapshots_with_guids(dst)[f"@{n2}"]
    # The source is rolled back to n1 and the n2 slot taken again (same name, new guid), then n3.
    backend.zfs("rollback", "-r", f"{src}@{n1}")
    backend.write(src, "two-again")
    backend.zfs("snapshot", f"{src}@{n2}")
    backend.write(src, "three")
    backend.zfs("snapshot", f"{src}@{n3}")

    second = backend.engine(p, now=NOW)

    assert second.ok, str(second)
    assert backend.snapshots_with_guids(dst) == backend.snapshots_with_guids(src)  # the new n2 and n3, with the source's guids
    assert backend.snapshots_with_guids(dst)[f"@{n2}"] != old_n2
    assert second.dataset(dst)["destroyed"] == [n2]  # the old n2, destroyed once, before the send; never the new one
    assert backend.checksums(dst) == backend.checksums(src)


def test_from_scratch_over_a_target_with_the_same_names_keeps_everything_it_received(backend):
    src, dst = backend.pair("fs")
    n1, n2 = name(2), name(1)
    backend.zfs("create", dst)
    for n in (n1, n2):  # an unrelated target whose snapshot names overlap the source's
        backend.zfs("snapshot", f"{dst}@{n}")
    backend.write(src, "one")
    backend.zfs("snapshot", f"{src}@{n1}")
    backend.write(src, "two")
    backend.zfs("snapshot", f"{src}@{n2}")

    result = backend.engine(params(src, dst, retention_policy="source", allow_from_scratch=True), now=NOW)

    assert result.ok, str(result)
    assert backend.snapshots_with_guids(dst) == backend.snapshots_with_guids(src)
    assert backend.checksums(dst) == backend.checksums(src)


def test_the_common_snapshot_renamed_on_the_target_survives_custom_retention(backend):
    src, dst = backend.pair("rn")
    n1 = name(1)
    backend.write(src, "one")
    backend.zfs("snapshot", f"{src}@{n1}")
    p = params(src, dst, retention_policy="custom", lifetime_value=1, lifetime_unit="week", hold_base=False)
    assert backend.engine(p, now=NOW).ok
    # Someone renames the target's copy of the base to an older (long expired) name.
    old = name(300)
    backend.zfs("rename", f"{dst}@{n1}", f"{dst}@{old}")
    guid = backend.snapshots_with_guids(dst)[f"@{old}"]

    kept = backend.engine(p, now=NOW)
    assert kept.ok, str(kept)
    assert backend.snapshots_with_guids(dst) == {f"@{old}": guid}  # the only common snapshot stays

    backend.write(src, "two")
    backend.zfs("snapshot", f"{src}@{name(0.5)}")
    after = backend.engine(p, now=NOW)
    assert after.ok, str(after)  # still related: an incremental from the renamed base
    assert after.dataset(dst)["action"] == "incremental"
    assert backend.snapshots_with_guids(dst)[f"@{name(0.5)}"] == backend.snapshots_with_guids(src)[f"@{name(0.5)}"]


def test_replicate_with_allow_rollback_keeps_what_the_source_no_longer_has(backend):
    """With allow_rollback every incremental used to be received with -F; with replicate (-R -F) that destroyed target
    snapshots and child datasets the source no longer had, with retention_policy none and unlisted in the plan."""
    src, dst = backend.pair("rr")
    n1, n2, n3 = name(3), name(2), name(1)
    backend.zfs("create", f"{src}/child")
    backend.write(src, "one")
    backend.zfs("snapshot", "-r", f"{src}@{n1}")
    backend.zfs("snapshot", "-r", f"{src}@{n2}")
    p = params(src, dst, recursive=True, replicate=True, allow_rollback=True, retention_policy="none")
    assert backend.engine(p, now=NOW).ok
    backend.destroy(f"{src}/child", "-r")
    backend.destroy(f"{src}@{n1}")
    backend.write(src, "three")
    backend.zfs("snapshot", f"{src}@{n3}")
    before = backend.snapshots_with_guids(dst)

    result = backend.engine(p, now=NOW)

    assert result.ok, str(result)
    after = backend.snapshots_with_guids(dst)
    assert f"{dst}/child" in backend.datasets_under(dst)
    assert {k: after.get(k) for k in before} == before  # nothing destroyed
    assert after[f"@{n3}"] == backend.snapshots_with_guids(src)[f"@{n3}"]
    assert not any(s["force"] for d in result.result["plan"] for s in d["sends"])
    assert not [line for line in result.log if line.startswith("  $ ") and " recv " in line and " -F " in line], result


def test_allow_rollback_rolls_back_a_written_target_as_a_planned_step(backend):
    src, dst = backend.pair("wr")
    backend.write(src, "one")
    backend.zfs("snapshot", f"{src}@{name(2)}")
    p = params(src, dst, allow_rollback=True)
    assert backend.engine(p, now=NOW).ok
    backend.write(src, "two")
    backend.zfs("snapshot", f"{src}@{name(1)}")
    clean = backend.engine(p, check_mode=True, now=NOW)
    # OpenZFS says the target was not written to since the base (written = 0): nothing to roll back. The legacy command
    # line cannot say, so there the rollback is planned whenever something is sent.
    assert clean.result["plan"][0]["rollback"] is ("written" not in backend.caps), clean
    # Someone writes on the target after the base.
    backend.zfs("set", "readonly=off", dst)
    backend.write(dst, "stray")
    backend.zfs("set", "readonly=on", dst)

    result = backend.engine(p, now=NOW)

    assert result.ok, str(result)
    assert result.result["plan"][0]["rollback"] is True
    assert any(line.startswith(f"rollback {dst}@{name(2)}") for line in result.log), result
    assert backend.checksums(dst) == backend.checksums(src)  # the stray file is gone


def test_check_mode_lists_what_a_from_scratch_replicate_replaces_and_changes_nothing(backend):
    src, dst = backend.pair("cm")
    backend.zfs("create", f"{src}/child")
    backend.zfs("snapshot", "-r", f"{src}@{name(1)}")
    backend.zfs("create", dst)
    backend.zfs("create", f"{dst}/mine")
    backend.zfs("snapshot", "-r", f"{dst}@unrelated")
    before = backend.snapshots_with_guids(dst), backend.datasets_under(dst)

    planned = backend.engine(params(src, dst, recursive=True, replicate=True, allow_from_scratch=True), check_mode=True, now=NOW)

    (d,) = planned.result["plan"]
    assert d["destroy_before"] == ["unrelated"] and d["force_destroys"] == [f"{dst}/mine"]
    assert (backend.snapshots_with_guids(dst), backend.datasets_under(dst)) == before


def test_pull_reads_snapshot_names_in_the_source_hosts_zone(backend):
    """The engine runs on the target in pull mode: the source named its snapshots in its own zone (its /etc/localtime,
    reached over ssh), not in the zone the engine runs in (TZ=Pacific/Kiritimati, UTC+14 here)."""
    src, dst = backend.pair("tz")
    zone = backend.sh("readlink -f /etc/localtime").strip()
    assert zone.endswith("/UTC"), zone  # both backends' hosts run in UTC: the +14 engine zone differs from it
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    young, newest = (now - timedelta(hours=20)).strftime(SCHEMA), (now - timedelta(hours=1)).strftime(SCHEMA)
    backend.write(src, "one")
    backend.zfs("snapshot", f"{src}@{young}")
    backend.zfs("snapshot", f"{src}@{newest}")
    p = params(src, dst, direction="pull", transport="ssh", ssh=backend.ssh(), retention_policy="custom", lifetime_value=1,
               lifetime_unit="day")
    assert backend.engine(p, now=now).ok

    again = backend.engine(p, now=now, env={"TZ": "Pacific/Kiritimati"})  # read as +14:00, `young` is 34 hours old

    assert again.ok, str(again)
    assert any("source's time zone UTC" in line for line in again.log), again
    assert sorted(backend.snapshots_with_guids(dst)) == sorted([f"@{young}", f"@{newest}"])  # 20 hours old: kept


@pytest.mark.backends("openzfs", reason="no native encryption on the legacy command line: there is no encrypted source to send")
def test_raw_false_with_properties_over_an_encrypted_source_is_refused_untouched(backend):
    src, dst = backend.pair("rawoff")
    backend.sh(f"printf %s {'6f' * 32} | zfs create -o encryption=on -o keyformat=hex -o keylocation=prompt {src}/secret")
    backend.zfs("snapshot", "-r", f"{src}@{name(1)}")

    refused = backend.engine(params(f"{src}/secret", dst, raw=False), now=NOW)

    assert refused.rc == 2 and "is encrypted" in refused.error and "properties: false" in refused.error, refused
    assert backend.datasets_under(dst.rsplit("/", 1)[0]) == [dst.rsplit("/", 1)[0]]  # nothing was created
    decrypted = backend.engine(params(f"{src}/secret", dst, raw=False, properties=False), now=NOW)
    assert decrypted.ok, str(decrypted)  # what the error suggests works
    assert backend.prop(dst, "encryption") == "off"
    assert backend.checksums(dst) == backend.checksums(f"{src}/secret")
