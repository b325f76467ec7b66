# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""zfs calls a catch-up makes once per run rather than per dataset: the local properties older targets need copied
(LocalProps), and the move of the task's hold on both sides (Holds.move), with the order that keeps a held common
snapshot on each side when one side refuses. Pure logic over a host that answers from a table and records each argv;
the real outcomes run on zfs-fuse (tests/reliability/test_received_properties_legacy.py, the fault suite) and
OpenZFS (tests/openzfs)."""
from __future__ import annotations

import subprocess
import threading
from collections.abc import Sequence

import pytest

from ansible_collections.zfs.replication.plugins.module_utils._holds import Holds
from ansible_collections.zfs.replication.plugins.module_utils._planner import DatasetPlan, Send
from ansible_collections.zfs.replication.plugins.module_utils._received_props import LocalProps
from ansible_collections.zfs.replication.plugins.module_utils._transport import Host, TransportError


class Recorder(Host):
    """A host whose zfs answers from LOCAL ({dataset: {prop: value}}); REFUSE: verbs that fail."""

    def __init__(self, label: str, local: dict[str, dict[str, str]] | None = None, refuse: Sequence[str] = ()) -> None:
        self.label = label
        self.local = local or {}
        self.refuse = set(refuse)
        self.calls: list[list[str]] = []
        self.lock = threading.Lock()

    def run(self, argv: Sequence[str], check: bool = True, input_text: str | None = None) -> subprocess.CompletedProcess:
        argv = list(argv)
        with self.lock:
            self.calls.append(argv)
        if argv[1] in self.refuse:
            rc, out, err = 1, "", f"cannot {argv[1]}: permission denied"
        elif argv[1] == "get":
            names = argv[argv.index("all") + 1:]
            missing = [n for n in names if n not in self.local]
            out = "".join(f"{n}\t{p}\t{v}\n" for n in names if n in self.local for p, v in self.local[n].items())
            rc, err = (1, "".join(f"cannot open '{n}': dataset does not exist\n" for n in missing)) if missing else (0, "")
        else:
            rc, out, err = 0, "", ""
        if check and rc:
            raise TransportError(err, argv, rc, err)
        return subprocess.CompletedProcess(argv, rc, out, err)


def test_local_properties_of_many_datasets_cost_one_call_per_side_per_batch():
    names = [f"p/a/d{i:03d}" for i in range(450)]
    src = Recorder("src", {n: ({"compression": "lz4"} if i % 2 else {}) for i, n in enumerate(names)})
    local = LocalProps()
    local.prefetch("source", src, names)
    assert len(src.calls) == 3  # 200 + 200 + 50
    assert all(len(c) - c.index("all") - 1 <= LocalProps.BATCH for c in src.calls)
    assert local.get("source", src, "p/a/d001") == {"compression": "lz4"}
    assert local.get("source", src, "p/a/d002") == {}  # listed without local properties: known, no call of its own
    assert len(src.calls) == 3


def test_a_failed_batch_keeps_what_it_printed_and_the_rest_is_read_one_by_one():
    src = Recorder("src", {"p/a": {"atime": "off"}, "p/a/b": {}})
    local = LocalProps()
    local.prefetch("source", src, ["p/a", "p/a/b", "p/a/gone"])
    assert local.get("source", src, "p/a") == {"atime": "off"}  # printed by the failed batch: kept
    assert len(src.calls) == 1
    assert local.get("source", src, "p/a/b") == {}  # not printed (no local properties, or failed): read again
    assert src.calls[-1][-1] == "p/a/b" and len(src.calls) == 2
    with pytest.raises(TransportError, match="does not exist"):  # a single read that fails is the transfer's error
        local.get("source", src, "p/a/gone")


def plans(n: int) -> list[DatasetPlan]:
    return [DatasetPlan(f"p/a/d{i}", f"q/a/d{i}", "incremental", base="s1", sends=[Send(f"p/a/d{i}", f"q/a/d{i}", "I", "s2", "s1", ["s2"])])
            for i in range(n)]


def test_the_hold_moves_on_both_sides_in_one_hold_and_one_release_each():
    src, dst = Recorder("src"), Recorder("dst")
    Holds("zfs.replication:t", src, dst, lambda _line: None).move(plans(3), None, None)
    for host, root in ((src, "p/a"), (dst, "q/a")):
        assert [c[1] for c in host.calls] == ["hold", "release"]
        assert host.calls[0][3:] == [f"{root}/d{i}@s2" for i in range(3)]
        assert host.calls[1][3:] == [f"{root}/d{i}@s1" for i in range(3)]


@pytest.mark.parametrize("refusing", ["src", "dst"])
def test_a_side_that_cannot_take_the_new_hold_leaves_both_old_bases_held(refusing):
    src = Recorder("src", refuse=["hold"] if refusing == "src" else [])
    dst = Recorder("dst", refuse=["hold"] if refusing == "dst" else [])
    with pytest.raises(TransportError, match="zfs hold"):
        Holds("zfs.replication:t", src, dst, lambda _line: None).move(plans(2), None, None)
    for host in (src, dst):
        assert "release" not in [c[1] for c in host.calls], host.calls
        assert host.calls[0][1] == "hold"
