# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Hostile or careless sources on a target without zfs recv -o/-x (zfs-fuse): the source's mountpoint, canmount,
setuid and devices never apply to the replicas, not even for the moment between a receive and the next zfs set.

The source tree sets mountpoint=<a populated directory standing in for /etc> (and another one on a child),
canmount=on, setuid=on, devices=on on the parent and the children. The stand-ins live under the test's tmp_path:
mounting anything over this machine's real /etc would break every other process on it (the OpenZFS tier in
tests/openzfs/test_received_properties.py uses /etc itself, inside its guest)."""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path

import pytest
from faultlib import destroy_r, guids, run_engine, settle

from helpers import CommandError, zfs

T1, T2 = "auto-2026-11-28_10-00", "auto-2026-11-28_11-00"
SAFE = {"canmount": "noauto", "setuid": "off", "devices": "off"}
pytestmark = pytest.mark.fault_class("hostile received properties")


@pytest.fixture(autouse=True)
def _without_recv_props(zfs_caps) -> None:
    """This file is about the zfs set that follows a receive where zfs recv has no -o/-x. OpenZFS receives with
    -o/-x, and there is no such zfs set to test: its path is tests/openzfs/test_received_properties.py, which runs
    on OpenZFS wherever the suite runs."""
    if "recv_props" in zfs_caps:
        pytest.skip("this ZFS receives with zfs recv -o/-x: tests/openzfs/test_received_properties.py covers that path")


def _mounted(dataset: str) -> bool:
    return any(line.split(" ", 1)[0] == dataset for line in Path("/proc/mounts").read_text().splitlines())


def _unmount_tree(names: list[str]) -> None:
    for ds in reversed(names):
        if _mounted(ds):
            zfs("unmount", ds)


def _props(dataset: str) -> dict[str, tuple[str, str]]:
    out = zfs("get", "-H", "-o", "property,value,source", "mountpoint,canmount,setuid,devices", dataset)
    return {p: (v, s) for p, v, s in (line.split("\t") for line in out.splitlines())}


def _tree(root: str) -> list[str]:
    return zfs("list", "-H", "-r", "-t", "filesystem", "-o", "name", root).split()


class Hostile:
    """src (mountpoint=<etc stand-in>), src/c1 (inherits it), src/c2 (mountpoint=<second stand-in>): all canmount=on,
    setuid=on, devices=on, none of them mounted here. Snapshot T1 (a file in each, and those properties)."""

    def __init__(self, sandbox, tmp_path: Path, own_mountpoints: bool = True) -> None:
        self.tag = secrets.token_hex(3)
        self.src = f"{sandbox.src_pool}/h{self.tag}"
        self.parent = f"{sandbox.dst_pool}/h{self.tag}"
        self.dst = f"{self.parent}/data"
        self.name = f"hostile-{self.tag}"
        self.etc, self.etc2 = tmp_path / "etc", tmp_path / "hostile-etc"
        for d in (self.etc, self.etc2):
            d.mkdir()
            (d / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        self.names = [self.src, f"{self.src}/c1", f"{self.src}/c2"]
        for ds in self.names:
            zfs("create", ds)
            mp = zfs("get", "-H", "-o", "value", "mountpoint", ds).strip()
            Path(mp, "file").write_text(ds + "\n")
        zfs("create", self.parent)
        _unmount_tree(self.names)
        for ds in self.names:
            zfs("set", "canmount=noauto", ds)  # the SOURCE must not mount over the stand-ins here
        if own_mountpoints:
            zfs("set", f"mountpoint={self.etc}", self.src)
            zfs("set", f"mountpoint={self.etc2}", f"{self.src}/c2")
        for ds in self.names:
            for p in ("setuid=on", "devices=on", "canmount=on"):
                zfs("set", p, ds)
        _unmount_tree(self.names)
        zfs("snapshot", "-r", f"{self.src}@{T1}")

    def params(self, **kw) -> dict:
        return dict({"name": self.name, "source_datasets": [self.src], "target_dataset": self.dst, "transport": "local",
                     "naming_schema": ["auto-%Y-%m-%d_%H-%M"], "recursive": True}, **kw)

    def received(self) -> list[str]:
        return _tree(self.dst)

    def expect_no_source_mountpoints(self) -> None:
        """No replica has a mountpoint from the source (value or provenance); none is mounted over a stand-in."""
        parent_mp = zfs("get", "-H", "-o", "value", "mountpoint", self.parent).strip()
        for ds in self.received():
            value, source = _props(ds)["mountpoint"]
            assert source not in ("received", "local"), (ds, value, source)
            assert value == parent_mp + ds[len(self.parent):], (ds, value, source)
        mounts = Path("/proc/mounts").read_text()
        assert f" {self.etc} " not in mounts and f" {self.etc2} " not in mounts, mounts
        for d in (self.etc, self.etc2):
            assert (d / "passwd").read_text().startswith("root:")

    def expect_safe(self) -> None:
        self.expect_no_source_mountpoints()
        for ds in self.received():
            props = _props(ds)
            for p, want in SAFE.items():
                assert props[p] == (want, "local"), (ds, props)

    def close(self) -> None:
        with contextlib.suppress(CommandError):
            _unmount_tree(_tree(self.dst))
        for ds in (self.src, self.parent):
            destroy_r(ds, [f"zfs.replication:{self.name}"])


@pytest.fixture
def hostile(sandbox, tmp_path):
    h = Hostile(sandbox, tmp_path)
    yield h
    h.close()


def test_recursive_replicas_get_safe_values_and_no_source_mountpoint(hostile):
    run = run_engine(hostile.params())
    assert run.ok, run
    assert hostile.received() == [hostile.dst, f"{hostile.dst}/c1", f"{hostile.dst}/c2"]
    for ds in hostile.names:
        assert guids(hostile.dst + ds[len(hostile.src):]) == guids(ds)
    hostile.expect_safe()
    # ...and the source's other local properties still arrive (copied after the receive, as local values).
    zfs("set", "zr:note=from-the-source", f"{hostile.src}/c1")
    zfs("snapshot", "-r", f"{hostile.src}@{T2}")
    again = run_engine(hostile.params())
    assert again.ok, again
    assert zfs("get", "-H", "-o", "value,source", "zr:note", f"{hostile.dst}/c1").strip() == "from-the-source\tlocal"
    hostile.expect_safe()


def test_run_killed_before_any_property_is_fixed_leaves_no_source_mountpoint(hostile, tmp_path):
    """A `zfs` on PATH that kills the whole run (its process group) at the first `zfs set`: the receive has
    finished, nothing has been fixed yet. What the stream itself created must already be harmless."""
    shims = tmp_path / "shims"
    shims.mkdir()
    real = shutil.which("zfs") or "/usr/sbin/zfs"
    (shims / "zfs").write_text(f'#!/bin/sh\nif [ "$1" = set ]; then kill -KILL 0; fi\nexec {real} "$@"\n')
    (shims / "zfs").chmod(0o755)
    run = run_engine(hostile.params(), env={"PATH": f"{shims}:{os.environ.get('PATH', '')}"})
    assert run.rc == -9 and run.result is None, run
    settle(hostile.dst)
    assert hostile.received() == [hostile.dst], run  # the first receive finished; the kill came before the children
    assert guids(hostile.dst) == guids(hostile.src)
    props = _props(hostile.dst)
    for p in ("mountpoint", "canmount", "setuid", "devices"):
        assert props[p][1] != "received", (p, props)  # nothing of the source's arrived with the stream
    hostile.expect_no_source_mountpoints()
    # The next run that sends to it finishes the tree and fixes what the killed one could not.
    zfs("snapshot", "-r", f"{hostile.src}@{T2}")
    again = run_engine(hostile.params())
    assert again.ok, again
    hostile.expect_safe()


def test_replicate_with_a_source_mountpoint_is_refused_and_changes_nothing(hostile):
    before = zfs("get", "-H", "-p", "-r", "-o", "name,value", "guid", hostile.parent)
    run = run_engine(hostile.params(replicate=True))  # (check mode runs the same capability check first)
    assert run.result is None and run.error, run
    assert "replicate" in run.error and str(hostile.etc) in run.error and "zfs inherit mountpoint" in run.error, run.error
    assert zfs("get", "-H", "-p", "-r", "-o", "name,value", "guid", hostile.parent) == before


def test_replicate_without_source_mountpoints_ends_safe_on_every_child(sandbox, tmp_path):
    """canmount=on, setuid=on, devices=on on every dataset, mountpoints inherited: replicate is allowed; a send -R
    stream carries the properties, so every received filesystem is fixed right after the receive."""
    h = Hostile(sandbox, tmp_path, own_mountpoints=False)
    try:
        run = run_engine(h.params(replicate=True))
        assert run.ok, run
        assert h.received() == [h.dst, f"{h.dst}/c1", f"{h.dst}/c2"]
        h.expect_safe()
    finally:
        h.close()


def test_mount_true_mounts_nosuid_nodev_at_the_targets_path(hostile):
    run = run_engine(hostile.params(mount=True))
    assert run.ok, run
    hostile.expect_safe()
    line = next(m for m in Path("/proc/mounts").read_text().splitlines() if m.split(" ", 1)[0] == hostile.dst)
    options = line.split(" ")[3].split(",")
    assert "nosuid" in options and "nodev" in options, line
    assert line.split(" ")[1] == zfs("get", "-H", "-o", "value", "mountpoint", hostile.dst).strip()
