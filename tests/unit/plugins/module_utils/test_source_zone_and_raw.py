# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Names read in the source's zone in pull mode; raw: false with properties refused on encrypted sources at plan time."""
from __future__ import annotations

import pytest

from ansible_collections.zfs.replication.plugins.module_utils._preflight import Preflight
from ansible_collections.zfs.replication.plugins.module_utils._replication_task import ReplicationTask, TaskError
from ansible_collections.zfs.replication.plugins.module_utils._transport import LocalHost
from ansible_collections.zfs.replication.plugins.module_utils._tz import zone_name_from_probe
from ansible_collections.zfs.replication.plugins.module_utils._zfs import parse_list_output

# `zfs list -H -p -r -t filesystem,volume,snapshot -o name,type,guid,createtxg,userrefs,readonly,receive_resume_token,
#  encryption,keystatus,encryptionroot tank/src` on OpenZFS 2.3.2, tank/src/secret created with encryption=on.
COLUMNS = ("name", "type", "guid", "createtxg", "userrefs", "readonly", "receive_resume_token", "encryption", "keystatus", "encryptionroot")
LISTING = "\n".join([
    "tank/src\tfilesystem\t7370512931421513472\t17\t-\toff\t-\toff\t-\t-",
    "tank/src@auto-2026-11-28_10-00\tsnapshot\t1733416120713066183\t25\t0\t-\t-\toff\t-\t-",
    "tank/src/secret\tfilesystem\t3062440473925153617\t21\t-\toff\t-\taes-256-gcm\tavailable\ttank/src/secret",
    "tank/src/secret@auto-2026-11-28_10-00\tsnapshot\t5817211384128950372\t25\t0\t-\t-\taes-256-gcm\t-\t-",
])


@pytest.mark.parametrize(("link", "offset", "want"), [
    ("/usr/share/zoneinfo/Europe/Berlin", "+0100", "Europe/Berlin"),
    ("/usr/share/zoneinfo/posix/America/New_York", "-0500", "America/New_York"),
    ("/usr/share/zoneinfo/Etc/UTC", "+0000", "UTC"),
    ("/etc/localtime", "+0900", "Etc/GMT-9"),  # a copied file, not a link: the whole-hour offset
    ("/etc/localtime", "-0300", "Etc/GMT+3"),
    ("", "+0530", None),  # a half-hour offset without a zone name: unknown, never guessed
    ("/usr/share/zoneinfo/Not/AZone", "garbage", None),
])
def test_the_source_zone_from_its_localtime_link_or_whole_hour_offset(link, offset, want):
    assert zone_name_from_probe(link, offset) == want


def preflight(**params) -> Preflight:
    base = {"name": "t", "source_datasets": ["tank/src"], "target_dataset": "backup/src", "transport": "local",
            "naming_schema": ["auto-%Y-%m-%d_%H-%M"], "recursive": True}
    return Preflight(ReplicationTask.from_params({**base, **params}), LocalHost(), LocalHost(), None, None, lambda _line: None)


def test_raw_false_with_properties_on_an_encrypted_source_is_refused_before_anything_is_sent():
    source = parse_list_output("tank/src", LISTING, COLUMNS)
    with pytest.raises(TaskError) as err:
        preflight(raw=False).encrypted_sources(source)
    assert "tank/src/secret is encrypted" in str(err.value) and "properties: false" in str(err.value)
    with pytest.raises(TaskError, match="replicate"):
        preflight(raw=False, replicate=True, properties=False).encrypted_sources(source)


@pytest.mark.parametrize("params", [
    {"raw": False, "properties": False},  # decrypted, no properties: OpenZFS sends it
    {"raw": None},  # default: encrypted datasets go raw
    {"raw": False, "exclude": ["tank/src/secret"]},  # the encrypted child is not replicated
    {"raw": False, "recursive": False},  # only the unencrypted root
])
def test_combinations_openzfs_can_send_pass(params):
    preflight(**params).encrypted_sources(parse_list_output("tank/src", LISTING, COLUMNS))
