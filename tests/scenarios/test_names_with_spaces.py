# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Names with spaces on each backend: `my data` with a child `sub dir`, snapshots `auto 2026-11-28_10-00`, pushed over
ssh into `Time Machine/my data` (full, then incremental, the base held on both sides) and pulled into a second
target. On OpenZFS the listings are `zfs list -p` (zfs-fuse's are `zfs get -p`), the receives resumable (`recv -s`).
Checked on the pools: snapshot names and guids on both sides, the replicas' files, the holds."""
from __future__ import annotations

from scenario_helpers import child_checksums, held, over_ssh, sends

SCHEMA = "auto %Y-%m-%d_%H-%M"
T1, T2, T3 = "auto 2026-11-28_10-00", "auto 2026-11-28_11-00", "auto 2026-11-28_12-00"


def test_names_with_spaces_push_and_pull_over_ssh(backend):
    root, target_parent = backend.pair("names ")
    target_parent = target_parent.rsplit("/", 1)[0] + "/Time Machine"
    src, dst, pulled = f"{root}/my data", f"{target_parent}/my data", f"{target_parent}/pulled data"
    backend.zfs("create", "-p", f"{src}/sub dir")
    backend.zfs("create", target_parent)
    backend.write(src, "one file")
    backend.write(f"{src}/sub dir", "kid")
    backend.zfs("snapshot", "-r", f"{src}@{T1}")
    backend.write(src, "two")
    backend.zfs("snapshot", "-r", f"{src}@{T2}")
    p = over_ssh(backend, src, dst, name="spaces-push", recursive=True, naming_schema=[SCHEMA])

    first = backend.engine(p)

    assert first.ok, str(first)
    assert first.result["snapshots_sent"] == 4 and first.dataset(dst)["snapshots_sent"] == [T1, T2]
    assert first.dataset(f"{dst}/sub dir")["snapshots_sent"] == [T1, T2]
    assert backend.snapshots_with_guids(dst) == backend.snapshots_with_guids(src)
    assert sorted(backend.snapshots_with_guids(dst)) == sorted(f"{d}@{t}" for d in ("", "/sub dir") for t in (T1, T2))
    assert backend.checksums(dst) == backend.checksums(src)
    assert child_checksums(backend, f"{dst}/sub dir") == backend.checksums(f"{src}/sub dir")
    # the base is held on both sides, the hold found again by its full name with the space
    assert {f"{src}@{T2}", f"{src}/sub dir@{T2}"} <= set(held(backend, src))
    assert {f"{dst}@{T2}", f"{dst}/sub dir@{T2}"} <= set(held(backend, dst))

    backend.write(src, "three")
    backend.zfs("snapshot", "-r", f"{src}@{T3}")
    inc = backend.engine(p)
    assert inc.ok, str(inc)
    assert sends(inc, src) == [("I", T2, T3)] and sends(inc, f"{src}/sub dir") == [("I", T2, T3)]
    assert backend.snapshots_with_guids(dst) == backend.snapshots_with_guids(src)
    assert backend.checksums(dst) == backend.checksums(src)
    assert f"{src}@{T3}" in held(backend, src) and f"{src}@{T2}" not in held(backend, src)  # the hold moved to the new base

    # pull: the engine on the target lists and sends the source's names through ssh
    pull = backend.engine(over_ssh(backend, src, pulled, name="spaces-pull", direction="pull", recursive=True, naming_schema=[SCHEMA]))
    assert pull.ok, str(pull)
    assert pull.result["snapshots_sent"] == 6
    assert backend.snapshots_with_guids(pulled) == backend.snapshots_with_guids(src)
    assert backend.checksums(pulled) == backend.checksums(src)
