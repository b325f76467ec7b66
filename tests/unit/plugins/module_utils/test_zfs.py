# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import pytest

from ansible_collections.zfs.replication.plugins.module_utils import _zfs as z

# Recorded from OpenZFS 2.3.2 (Debian bookworm-backports): zfs version
OPENZFS_VERSION = "zfs-2.3.2-1~bpo12+1\nzfs-kmod-2.3.2-1~bpo12+1\n"

# Recorded from OpenZFS 2.3.2: zfs list -H -p -r -t filesystem,volume,snapshot
#   -o name,type,guid,createtxg,userrefs,readonly,receive_resume_token tank/src
OPENZFS_LIST = (
    "tank/src\tfilesystem\t8127390476355342219\t27\t-\toff\t-\n"
    "tank/src@auto-2026-11-28_10-00\tsnapshot\t13548302741339848161\t41\t0\t-\t-\n"
    "tank/src@auto-2026-11-28_11-00\tsnapshot\t2330155497392219870\t45\t1\t-\t-\n"
    "tank/src/vol\tvolume\t6003513101781234707\t30\t-\toff\t-\n"
    "tank/src/vol@auto-2026-11-28_10-00\tsnapshot\t17389711412811306171\t41\t0\t-\t-\n"
)

# Recorded from zfs-fuse 0.7: zfs get -H -p -r -o name,property,value type,guid,createtxg,userrefs,readonly probea
FUSE_GET = """probea\ttype\tfilesystem
probea\tguid\t16418029095825594780
probea\tcreatetxg\t1
probea\treadonly\toff
probea\tuserrefs\t-
probea/x@s1\ttype\tsnapshot
probea/x@s1\tguid\t7880796679473201017
probea/x@s1\tcreatetxg\t16
probea/x@s1\treadonly\t-
probea/x@s1\tuserrefs\t0
probea/x\ttype\tfilesystem
probea/x\tguid\t8766415905036543789
probea/x\tcreatetxg\t6
probea/x\treadonly\ton
probea/x\tuserrefs\t-
probea/x@s0\ttype\tsnapshot
probea/x@s0\tguid\t111
probea/x@s0\tcreatetxg\t9
probea/x@s0\treadonly\t-
probea/x@s0\tuserrefs\t2
"""


def test_version_probe_parsing():
    caps = z.parse_version_output(OPENZFS_VERSION)
    assert caps.version == "2.3.2" and caps.resumable and caps.raw_send and caps.list_parsable
    assert caps.family == "OpenZFS 2.3.2"
    assert z.parse_version_output("garbage") == z.LEGACY


def test_listing_argv_by_capability():
    caps = z.parse_version_output(OPENZFS_VERSION)
    assert z.listing_argv(caps, ["tank/src"]) == [
        "zfs", "list", "-H", "-p", "-r", "-t", "filesystem,volume,snapshot",
        "-o", "name,type,guid,createtxg,userrefs,readonly,receive_resume_token,encryption,keystatus,encryptionroot", "tank/src",
    ]
    assert z.listing_argv(z.LEGACY, ["a"], ["written"])[-2:] == ["type,guid,createtxg,userrefs,readonly,written", "a"]
    assert z.listing_argv(z.LEGACY, ["a/b", "c"]) == [
        "zfs", "get", "-H", "-p", "-r", "-o", "name,property,value", "type,guid,createtxg,userrefs,readonly", "a/b", "c",
    ]


def test_parse_openzfs_list():
    cols = ("name",) + z.LIST_PROPS + z.MODERN_EXTRA
    lst = z.parse_list_output("tank/src", OPENZFS_LIST, cols)
    assert list(lst.datasets) == ["tank/src", "tank/src/vol"]
    src = lst.get("tank/src")
    assert src.type == "filesystem" and src.guid == "8127390476355342219" and src.createtxg == 27
    assert [(s.name, s.guid, s.createtxg, s.userrefs) for s in src.snapshots] == [
        ("auto-2026-11-28_10-00", "13548302741339848161", 41, 0),
        ("auto-2026-11-28_11-00", "2330155497392219870", 45, 1),
    ]
    assert src.props == {"readonly": "off", "receive_resume_token": "-"}
    assert lst.get("tank/src/vol").type == "volume"
    assert lst.snapshot_count() == 3


def test_parse_fuse_get_sorts_snapshots_by_createtxg_and_parents_first():
    lst = z.parse_get_output("probea", FUSE_GET)
    assert list(lst.datasets) == ["probea", "probea/x"]
    x = lst.get("probea/x")
    assert [(s.name, s.createtxg, s.userrefs) for s in x.snapshots] == [("s0", 9, 2), ("s1", 16, 0)]
    assert x.props["readonly"] == "on"


def test_parse_rejects_malformed_lines():
    with pytest.raises(z.ZfsError, match="unexpected zfs get output"):
        z.parse_get_output("p", "p\ttype\n")
    cols = ("name",) + z.LIST_PROPS + z.MODERN_EXTRA
    with pytest.raises(z.ZfsError, match="unexpected zfs list output"):
        z.parse_list_output("tank/src", "tank/src\tfilesystem\t1\n", cols)
    with pytest.raises(ValueError, match="must start with name,type,guid,createtxg,userrefs"):
        z.parse_list_output("tank/src", OPENZFS_LIST, ("name", "guid", "type", "createtxg", "userrefs", "readonly", "receive_resume_token"))


def test_streamed_lines_parse_like_the_whole_text_and_repeated_values_are_stored_once():
    cols = ("name",) + z.LIST_PROPS + z.MODERN_EXTRA
    streamed = z.parse_list_lines("tank/src", iter(OPENZFS_LIST.splitlines(keepends=True)), cols)
    whole = z.parse_list_output("tank/src", OPENZFS_LIST, cols)
    assert [(d.name, d.props, d.snapshots) for d in streamed.datasets.values()] == [(d.name, d.props, d.snapshots) for d in whole.datasets.values()]
    # zfs snapshot -r gives every dataset the same names and createtxg: one object each across the listing
    a, b = streamed.get("tank/src").snapshots[0], streamed.get("tank/src/vol").snapshots[0]
    assert a.name == b.name == "auto-2026-11-28_10-00" and a.name is b.name and a.createtxg is b.createtxg
    assert a.props == {} and a.dataset is streamed.get("tank/src").snapshots[1].dataset
    with pytest.raises(TypeError):
        a.props["creation"] = "1"  # type: ignore[index]  # the shared empty mapping is read-only
    # extra properties asked for land in the snapshot's props; the base columns do not
    with_creation = z.parse_list_output("t", "t@s\tsnapshot\t7\t3\t0\t-\t-\t1764324000\n", cols + ("creation",))
    assert with_creation.snapshot_count() == 0  # no dataset line for t: its snapshots have nowhere to go
    full = z.parse_list_output("t", "t\tfilesystem\t1\t1\t-\toff\t-\t5\nt@s\tsnapshot\t7\t3\t0\t-\t-\t1764324000\n", cols + ("creation",))
    assert full.get("t").snapshots[0].props == {"creation": "1764324000"} and full.get("t").props["creation"] == "5"


@pytest.mark.parametrize(
    "name",
    ["tank/da+ta", "tank/$(reboot)", "tank/a;b", "-tank", "tank/", "/tank", "tank//a", "tank/a@b", "tank/..", "tank/a\nb", "tank/`x`", "tank/'q'", ""],
)
def test_hostile_dataset_names_are_refused(name):
    with pytest.raises(ValueError, match="source_datasets"):
        z.validate_dataset(name, "source_datasets[0]")


@pytest.mark.parametrize("name", ["tank", "tank/data", "tank/a-b_c.d:e", "pool2/x/y/z", "tank/my data", "tank/Time Machine/sub dir"])
def test_valid_dataset_names(name):
    assert z.validate_dataset(name, "f") == name


def test_is_within():
    assert z.is_within("a/b/c", "a/b") and z.is_within("a/b", "a/b")
    assert not z.is_within("a/bc", "a/b")
