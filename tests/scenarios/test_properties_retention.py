# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Properties, readonly, send features, holds and retention on each backend. Where the backends differ the scenario
asserts each one's outcome through its capabilities: OpenZFS receives properties (`source` received) and excludes or
overrides them with recv -x/-o, also under replicate; the legacy command line gets the source's local properties
copied (`source` local) and refuses what needs recv -x/-o or newer send flags, up front and untouched. Every check
reads the pools: property values and their source, snapshot names and guids, file checksums, userrefs."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from scenario_helpers import SCHEMA, guids, held, message, params, parent, prop_source, sends, snaps, state

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def named(when: datetime) -> str:
    return when.strftime(SCHEMA)


# --------------------------------------------------------------------------------------------------------------------
# Properties and readonly
# --------------------------------------------------------------------------------------------------------------------

def test_properties_exclude_override_and_off_hold_across_incrementals(backend):
    src, dst = backend.pair("prop")
    no_props = f"{dst}-noprops"
    backend.zfs("set", "zr:keep=k1", src)
    backend.zfs("set", "zr:drop=d1", src)
    backend.zfs("set", "atime=off", src)
    backend.write(src, "props")
    backend.zfs("snapshot", f"{src}@auto-2026-11-28_10-00")
    tasks = {
        dst: params(src, dst, properties_exclude=["zr:drop", "atime"], properties_override={"zr:over": "o1", "compression": "gzip"}),
        no_props: params(src, no_props, properties=False),
    }
    # OpenZFS receives the properties (send -p, recv -x/-o); the legacy command line has no recv -x: the engine sends
    # without -p and copies the source's local properties minus the excluded ones, so they arrive as local there.
    kept = "received" if "recv_props" in backend.caps else "local"

    def check(keep: str) -> None:
        assert prop_source(backend, dst, "zr:keep") == (keep, kept)
        assert prop_source(backend, dst, "zr:drop") == ("-", "-")
        assert prop_source(backend, dst, "atime") == ("on", "default")
        assert prop_source(backend, dst, "zr:over") == ("o1", "local")
        assert prop_source(backend, dst, "compression") == ("gzip", "local")
        assert prop_source(backend, no_props, "zr:keep") == ("-", "-") and prop_source(backend, no_props, "atime") == ("on", "default")
        for target in (dst, no_props):
            assert guids(backend, target) == guids(backend, src)
            assert backend.checksums(target) == backend.checksums(src)

    for p in tasks.values():
        run = backend.engine(p)
        assert run.ok, str(run)
    check("k1")
    # A property changed since is received with the next incremental (on OpenZFS its stream carries send -p again);
    # exclude and override still hold after it.
    backend.zfs("set", "zr:drop=d2", src)
    backend.zfs("set", "zr:keep=k2", src)
    backend.write(src, "props2")
    backend.zfs("snapshot", f"{src}@auto-2026-11-28_11-00")
    for target, p in tasks.items():
        run = backend.engine(p)
        assert run.ok, str(run)
        assert run.dataset(target)["snapshots_sent"] == ["auto-2026-11-28_11-00"]
    check("k2")


def test_properties_override_applies_without_sending_properties(backend):
    """properties: false only drops `send -p`; an explicit properties_override is still set on the target (as
    `zfs recv -o` does, and as TrueNAS/zettarepl apply it independently of `properties`)."""
    src, dst = backend.pair("povr")
    backend.zfs("set", "zr:keep=k1", src)
    backend.write(src, "po")
    backend.zfs("snapshot", f"{src}@auto-2026-11-28_10-00")

    run = backend.engine(params(src, dst, properties=False, properties_override={"zr:over": "o1"}))

    assert run.ok, str(run)
    assert prop_source(backend, dst, "zr:keep") == ("-", "-")
    assert guids(backend, dst) == guids(backend, src)
    assert prop_source(backend, dst, "zr:over") == ("o1", "local")


def test_properties_exclude_and_override_with_replicate_need_recv_x(backend):
    """replicate (send -R) carries every property of the tree; excluding or overriding them needs zfs recv -x/-o. Where
    the target has it, the excluded property arrives nowhere in the tree and the override is inherited by the children;
    where it lacks it, the task is refused up front with a message naming the options, nothing changed. Without
    exclusions the tree replicates on both, every property received."""
    src, dst = backend.pair("rx")
    whole = f"{dst}-all"
    backend.zfs("create", f"{src}/child")
    backend.zfs("set", "zr:drop=root", src)
    backend.zfs("set", "zr:drop=kid", f"{src}/child")
    backend.zfs("set", "zr:keep=k1", f"{src}/child")
    backend.write(src, "rr")
    backend.zfs("snapshot", "-r", f"{src}@auto-2026-11-28_10-00")
    before = state(backend, src, parent(dst))

    run = backend.engine(params(src, dst, recursive=True, replicate=True, properties_exclude=["zr:drop"], properties_override={"zr:over": "o1"}))

    if "recv_props" in backend.caps:
        assert run.ok, str(run)
        assert backend.snapshots_with_guids(dst) == backend.snapshots_with_guids(src)
        assert prop_source(backend, dst, "zr:drop") == ("-", "-") and prop_source(backend, f"{dst}/child", "zr:drop") == ("-", "-")
        assert prop_source(backend, dst, "zr:over") == ("o1", "local")
        assert prop_source(backend, f"{dst}/child", "zr:over") == ("o1", f"inherited from {dst}")
        assert prop_source(backend, f"{dst}/child", "zr:keep") == ("k1", "received")
        assert backend.checksums(dst) == backend.checksums(src)
    else:
        assert run.failed, str(run)
        assert "properties_exclude/properties_override with replicate need zfs recv -x/-o" in message(run), run
        assert state(backend, src, parent(dst)) == before

    run = backend.engine(params(src, whole, recursive=True, replicate=True))

    assert run.ok, str(run)
    assert backend.snapshots_with_guids(whole) == backend.snapshots_with_guids(src)
    assert prop_source(backend, whole, "zr:drop") == ("root", "received")
    assert prop_source(backend, f"{whole}/child", "zr:drop") == ("kid", "received")


def test_readonly_set_require_ignore(backend):
    src, dst = backend.pair("ro")
    set_dst = f"{dst}-set"
    backend.write(src, "r1")
    backend.zfs("snapshot", f"{src}@auto-2026-11-28_10-00")
    for target, mode in ((dst, "ignore"), (set_dst, "set")):
        run = backend.engine(params(src, target, readonly=mode))
        assert run.ok, str(run)
    assert prop_source(backend, dst, "readonly") == ("off", "default")
    assert prop_source(backend, set_dst, "readonly") == ("on", "local")
    assert guids(backend, dst) == guids(backend, src) == guids(backend, set_dst)

    # require: an existing target that is not read-only is refused untouched.
    backend.write(src, "r2")
    backend.zfs("snapshot", f"{src}@auto-2026-11-28_11-00")
    before = state(backend, src, parent(dst))
    refused = backend.engine(params(src, dst, readonly="require"))
    assert refused.failed, str(refused)
    assert "readonly=require" in message(refused) and dst in message(refused), refused
    assert state(backend, src, parent(dst)) == before
    assert backend.prop(dst, "readonly") == "off"

    # require on a read-only target replicates and leaves the property as it is.
    backend.zfs("set", "readonly=on", dst)
    ok = backend.engine(params(src, dst, readonly="require"))
    assert ok.ok, str(ok)
    assert ok.result["snapshots_sent"] == 1
    assert guids(backend, dst) == guids(backend, src)
    assert backend.checksums(dst) == backend.checksums(src)


# --------------------------------------------------------------------------------------------------------------------
# Send features: used where the hosts have them, a clear refusal up front where they do not
# --------------------------------------------------------------------------------------------------------------------

FEATURES = [
    ("encryption", "encryption", {"encryption": True, "encryption_key": "6f" * 32}, "encryption: true needs native encryption on the target"),
    ("raw", "raw_send", {"raw": True}, "raw: true needs raw send"),
    ("large_block", "openzfs", {"large_block": True}, "large_block: true needs zfs send -L"),
    ("compressed", "openzfs", {"compressed": True}, "compressed: true needs zfs send -c"),
]


@pytest.mark.parametrize("feature,cap,option,refusal", FEATURES, ids=[f[0] for f in FEATURES])
def test_a_send_feature_is_used_where_the_hosts_have_it_and_refused_where_they_do_not(backend, feature, cap, option, refusal):
    src, dst = backend.pair("feat")
    backend.write(src, "f", size=20_000)
    backend.zfs("snapshot", f"{src}@auto-2026-11-28_10-00")
    before = state(backend, src, parent(dst))

    run = backend.engine(params(src, dst, **option))

    assert "6f6f6f6f" not in str(run.result) + str(run.error) + "\n".join(run.log)  # the key is never reported
    if cap not in backend.caps:
        assert run.failed, str(run)
        assert refusal in message(run), run
        assert state(backend, src, parent(dst)) == before
        return
    assert run.ok, str(run)
    assert guids(backend, dst) == guids(backend, src)
    if feature == "encryption":  # a new encrypted dataset, its key loaded by the task: the files are readable
        assert backend.prop(dst, "encryption") != "off" and backend.prop(dst, "keystatus") == "available"
    elif feature == "raw":  # raw applies to encrypted sources (tests/openzfs/test_features.py): this one is sent as it is
        sent = [line for line in run.log if line.startswith("  $ zfs send ")]
        assert sent and not any(" -w" in line.split("|")[0] for line in sent), str(run)
    else:
        flag = {"large_block": "-L", "compressed": "-c"}[feature]
        assert any(line.startswith("  $ zfs send ") and f" {flag}" in line.split("|")[0] for line in run.log), str(run)
    assert backend.checksums(dst) == backend.checksums(src)


# --------------------------------------------------------------------------------------------------------------------
# Holds
# --------------------------------------------------------------------------------------------------------------------

def test_the_base_is_held_on_both_sides_and_the_hold_moves_forward(backend):
    src, dst = backend.pair("hold")
    one, two = "auto-2026-11-28_10-00", "auto-2026-11-28_11-00"
    backend.write(src, "h")
    backend.zfs("snapshot", f"{src}@{one}")
    p = params(src, dst, name="held")
    assert backend.engine(p).ok
    assert held(backend, src) == {f"{src}@{one}": 1} and held(backend, dst) == {f"{dst}@{one}": 1}
    # The held base cannot be destroyed by another tool.
    with pytest.raises(AssertionError, match="busy|hold"):
        backend.zfs("destroy", f"{src}@{one}")

    backend.zfs("snapshot", f"{src}@{two}")
    assert backend.engine(p).ok
    assert held(backend, src) == {f"{src}@{two}": 1} and held(backend, dst) == {f"{dst}@{two}": 1}

    # Retention on the target may now destroy the old base, never the held new one.
    backend.destroy(f"{src}@{one}")
    run = backend.engine({**p, "retention_policy": "source"})
    assert run.ok, str(run)
    assert run.dataset(dst)["destroyed"] == [one]
    assert backend.snapshots_with_guids(dst) == backend.snapshots_with_guids(src)
    assert list(backend.snapshots_with_guids(dst)) == [f"@{two}"]


# --------------------------------------------------------------------------------------------------------------------
# Retention on the target (the real zfs destroy)
# --------------------------------------------------------------------------------------------------------------------

def replicated(backend, src: str, dst: str, names: list[str], **more) -> dict:
    """SRC snapshotted as NAMES (new data each), replicated to DST once; returns the task's parameters."""
    for i, name in enumerate(names):
        backend.write(src, f"ret{i}", size=10_000)
        backend.zfs("snapshot", f"{src}@{name}")
    p = params(src, dst, timezone="UTC", **more)
    first = backend.engine(p, now=NOW)
    assert first.ok, str(first)
    assert first.result["snapshots_sent"] == len(names)
    assert snaps(backend, dst) == names
    return p


@pytest.mark.parametrize("policy", ["none", "source"])
def test_retention_none_and_source(backend, policy):
    src, dst = backend.pair("rns")
    old = [named(NOW - timedelta(days=d)) for d in (10, 5, 1)]
    p = replicated(backend, src, dst, old)
    backend.destroy(f"{src}@{old[0]}")
    backend.destroy(f"{src}@{old[1]}")
    newest = named(NOW)
    backend.write(src, "new", size=10_000)
    backend.zfs("snapshot", f"{src}@{newest}")
    backend.zfs("snapshot", f"{src}@manual-on-source")  # not selected: never sent, never a retention candidate

    run = backend.engine({**p, "retention_policy": policy}, now=NOW)

    assert run.ok, str(run)
    assert run.dataset(dst)["snapshots_sent"] == [newest]
    if policy == "none":
        assert snaps(backend, dst) == [*old, newest]
        assert run.dataset(dst)["destroyed"] == []
    else:
        assert snaps(backend, dst) == [old[2], newest]
        assert sorted(run.dataset(dst)["destroyed"]) == sorted(old[:2])
    assert snaps(backend, src) == [old[2], newest, "manual-on-source"]
    src_guids = guids(backend, src)
    assert all(src_guids[n] == g for n, g in guids(backend, dst).items() if n in src_guids)
    assert backend.checksums(dst) == backend.checksums(src)


def test_retention_custom_lifetime(backend):
    src, dst = backend.pair("rcl")
    old = [named(NOW - timedelta(days=d)) for d in (10, 5, 2, 1)]
    p = replicated(backend, src, dst, old)
    newest = named(NOW)
    backend.write(src, "new", size=10_000)
    backend.zfs("snapshot", f"{src}@{newest}")

    run = backend.engine({**p, "retention_policy": "custom", "lifetime_value": 3, "lifetime_unit": "day"}, now=NOW)

    assert run.ok, str(run)
    assert snaps(backend, dst) == [old[2], old[3], newest]
    assert sorted(run.dataset(dst)["destroyed"]) == sorted(old[:2])
    assert snaps(backend, src) == [*old, newest]  # the source is never pruned by a replication task
    assert guids(backend, dst) == {n: g for n, g in guids(backend, src).items() if n in snaps(backend, dst)}
    assert backend.checksums(dst) == backend.checksums(src)


def test_retention_lifetimes_per_schedule(backend):
    src, dst = backend.pair("rls")
    day = NOW.replace(hour=0, minute=0)
    old = [named(day - timedelta(days=10)), named(day - timedelta(days=10) + timedelta(hours=12)),
           named(day - timedelta(days=5)), named(day - timedelta(days=5) + timedelta(hours=12)),
           named(NOW - timedelta(hours=3))]
    p = replicated(backend, src, dst, old)
    newest = named(NOW)
    backend.zfs("snapshot", f"{src}@{newest}")

    run = backend.engine({**p, "retention_policy": "custom", "lifetime_value": 1, "lifetime_unit": "day",
                          "lifetimes": [{"schedule": {"minute": "0", "hour": "0"}, "lifetime_value": 1, "lifetime_unit": "year"}]}, now=NOW)

    assert run.ok, str(run)
    # Midnight snapshots live a year; the others a day.
    assert snaps(backend, dst) == [old[0], old[2], old[4], newest]
    assert sorted(run.dataset(dst)["destroyed"]) == sorted([old[1], old[3]])
    assert guids(backend, dst) == {n: g for n, g in guids(backend, src).items() if n in snaps(backend, dst)}


def test_retention_never_destroys_the_base(backend):
    """custom lifetime 1 hour with every snapshot years old: the newest common snapshot remains, and the next incremental
    still works from it. hold_base is off, so what protects the base is the planner, not a hold."""
    src, dst = backend.pair("rnb")
    names = ["auto-2020-01-01_00-00", "auto-2020-01-02_00-00"]
    p = replicated(backend, src, dst, names, hold_base=False)
    p = {**p, "retention_policy": "custom", "lifetime_value": 1, "lifetime_unit": "hour"}
    assert held(backend, dst) == {} and held(backend, src) == {}

    run = backend.engine(p, now=NOW)  # nothing to send, only retention
    assert run.ok, str(run)
    assert run.dataset(dst)["destroyed"] == ["auto-2020-01-01_00-00"]
    assert snaps(backend, dst) == ["auto-2020-01-02_00-00"]
    assert guids(backend, dst)["auto-2020-01-02_00-00"] == guids(backend, src)["auto-2020-01-02_00-00"]

    again = backend.engine(p, now=NOW)
    assert again.ok, str(again)
    assert again.result["changed"] is False and snaps(backend, dst) == ["auto-2020-01-02_00-00"]

    backend.write(src, "next", size=10_000)
    backend.zfs("snapshot", f"{src}@auto-2020-01-03_00-00")
    inc = backend.engine(p, now=NOW)
    assert inc.ok, str(inc)
    assert sends(inc, src) == [("I", "auto-2020-01-02_00-00", "auto-2020-01-03_00-00")]
    assert snaps(backend, dst) == ["auto-2020-01-03_00-00"]
    assert guids(backend, dst)["auto-2020-01-03_00-00"] == guids(backend, src)["auto-2020-01-03_00-00"]
    assert backend.checksums(dst) == backend.checksums(src)
    assert snaps(backend, src) == [*names, "auto-2020-01-03_00-00"]
