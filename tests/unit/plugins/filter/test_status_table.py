# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The status table is a list of lines (the default callback prints one per item), built from rows in Python."""
from __future__ import annotations

import base64
import json

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.zfs.replication.plugins.filter.status_rows import status_rows
from ansible_collections.zfs.replication.plugins.filter.status_table import status_table
from ansible_collections.zfs.replication.plugins.module_utils._info import format_age, replication_rows
from ansible_collections.zfs.replication.plugins.module_utils._info import status_table as table_lines

INFO = [
    {"name": "data-to-backup", "health": "ok", "lag": 3720, "pending": 1, "reasons": [],
     "last_run": {"result": "ok", "last_end": "2026-11-28T11:00:04+00:00"}},
    {"name": "offsite", "health": "critical", "lag": None, "pending": 8, "reasons": ["backup/x: nothing replicated yet", "second"],
     "last_run": {"result": None, "last_end": None}},
]


def slurped(name: str, state: dict | None) -> dict:
    if state is None:  # the task never ran: slurp failed (failed_when: false)
        return {"item": {"name": name}, "failed": True, "msg": "file not found"}
    return {"item": {"name": name}, "content": base64.b64encode(json.dumps(state).encode()).decode()}


def test_ages_read_like_people_write_them() -> None:
    assert [format_age(s) for s in (None, 0, 59, 61, 3599, 3600, 3720, 172799, 172800, 273600)] == \
        ["-", "0m", "0m", "1m", "59m", "1h00m", "1h02m", "47h59m", "2d00h", "3d04h"]


def test_rows_of_two_hosts_make_aligned_lines() -> None:
    rows = status_rows(INFO, [slurped("hourly", {"result": "failed", "error": "pool full", "last_end": "2026-11-28T12:00:00+00:00"}),
                              slurped("daily", None)], host="fileserver")
    rows += status_rows([], [slurped("weekly", {"result": "ok", "last_end": "2026-11-27T00:00:00+00:00"})], host="backup")
    lines = status_table(rows)
    assert lines == [
        "HOST       TASK           KIND        HEALTH   LAG   PENDING LAST   LAST RUN (UTC)            NOTE",
        "fileserver data-to-backup replication ok       1h02m 1       ok     2026-11-28T11:00:04+00:00",
        "fileserver offsite        replication critical -     8       never  -                         backup/x: nothing replicated yet",
        "fileserver hourly         snapshot    warning  -     -       failed 2026-11-28T12:00:00+00:00 pool full",
        "fileserver daily          snapshot    ok       -     -       never  -",
        "backup     weekly         snapshot    ok       -     -       ok     2026-11-27T00:00:00+00:00",
    ]
    assert all("\n" not in line and line == line.rstrip() for line in lines)


def test_without_hosts_the_host_column_goes_and_no_rows_leave_the_header() -> None:
    # the info module's own table: no inventory host to name
    lines = table_lines(replication_rows(INFO[:1]))
    assert lines == ["TASK           KIND        HEALTH LAG   PENDING LAST LAST RUN (UTC)            NOTE",
                     "data-to-backup replication ok     1h02m 1       ok   2026-11-28T11:00:04+00:00"]
    assert status_table([]) == ["TASK KIND HEALTH LAG PENDING LAST LAST RUN (UTC) NOTE"]


def test_bad_input_is_named() -> None:
    with pytest.raises(AnsibleFilterError, match="status_table: give a list of rows"):
        status_table("HOST TASK")
    with pytest.raises(AnsibleFilterError, match="status_rows: snapshot_states must be the results of a slurp loop"):
        status_rows([], [{"content": ""}])


def test_a_waiting_task_and_a_derived_snapshot_task_say_so_in_the_note() -> None:
    waiting = {"name": "offsite", "health": "ok", "lag": 600, "pending": 2, "reasons": [],
               "last_run": {"result": "waiting", "last_end": "2026-11-28T12:00:01+00:00", "next_window": "2026-11-28T22:00:00+00:00"}}
    derived = {"item": {"name": "offsite-auto", "derived_from": "offsite"},
               "content": base64.b64encode(json.dumps({"result": "ok", "last_end": "2026-11-28T12:00:00+00:00"}).encode()).decode()}
    lines = status_table(status_rows([waiting], [derived]))
    assert lines == [
        "TASK         KIND        HEALTH LAG PENDING LAST    LAST RUN (UTC)            NOTE",
        "offsite      replication ok     10m 2       waiting 2026-11-28T12:00:01+00:00 waiting for its run window (opens 2026-11-28T22:00:00+00:00)",
        "offsite-auto snapshot    ok     -   -       ok      2026-11-28T12:00:00+00:00 auto_snapshot_task of offsite",
    ]
