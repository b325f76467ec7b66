# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every name ZFS accepts works: letters, digits, ``_ - . :`` and space in dataset and snapshot names (OpenZFS
zfs_namecheck.c), refused only where ZFS refuses them, with the field and the fix named.

Each layer a name passes through is checked with a space in it: validation, naming schemas, the argv a remote shell
receives, listings, the role's unit and file names, metrics labels and the status table. The real replication of such
names is tests/integration/test_names_with_spaces.py.
"""
from __future__ import annotations

import json
import re
import subprocess
from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.zfs.replication.plugins.filter.scheduler_tasks import scheduler_tasks
from ansible_collections.zfs.replication.plugins.filter.status_rows import status_rows
from ansible_collections.zfs.replication.plugins.filter.status_table import status_table
from ansible_collections.zfs.replication.plugins.module_utils._naming import NamingSchema, NamingSchemaError
from ansible_collections.zfs.replication.plugins.module_utils._pending import metric_lines
from ansible_collections.zfs.replication.plugins.module_utils._replication_task import ReplicationTask, TaskError, suggest_name
from ansible_collections.zfs.replication.plugins.module_utils._runner import render_metrics
from ansible_collections.zfs.replication.plugins.module_utils._snapshot_task import SnapshotTask
from ansible_collections.zfs.replication.plugins.module_utils._snapshot_task import TaskError as SnapshotTaskError
from ansible_collections.zfs.replication.plugins.module_utils._transport import SSHConnection, SSHHost, quote_remote
from ansible_collections.zfs.replication.plugins.module_utils._zfs import (
    LIST_PROPS,
    parse_get_output,
    parse_list_output,
    validate_dataset,
    validate_snapname,
)

RULE = "letters, digits, spaces and _ . : - (the characters ZFS allows)"

# Names OpenZFS creates (zfs create / zfs snapshot on 2.x; zfs-fuse takes them too).
ZFS_DATASETS = [
    "tank/my data",
    "tank/Time Machine",
    "tank/my data/sub dir",
    "my pool/x",  # pool names take a space as well
    "tank/ leading and trailing ",
    "tank/-starts-with-a-dash",
    "tank/.hidden",
    "tank/...",
    "tank/a:b.c_d-e 1",
    "t/" + "x" * 253,  # 255 characters: ZFS_MAX_DATASET_NAME_LEN less the NUL
]
ZFS_SNAPNAMES = ["auto 2026-11-28_10-00", "auto-2026-11-28 10:00", "-x", " ", "a:b", ".x", "..."]


@pytest.mark.parametrize("name", ZFS_DATASETS)
def test_every_dataset_name_zfs_accepts_is_accepted(name: str) -> None:
    assert validate_dataset(name, "source_datasets[0]") == name


@pytest.mark.parametrize("name", ZFS_SNAPNAMES)
def test_every_snapshot_name_zfs_accepts_is_accepted(name: str) -> None:
    assert validate_snapname(name, "snapshots[0]") == name


@pytest.mark.parametrize(("name", "problem"), [
    ("tank/a+b", f"contains '+': use {RULE} in /-separated components"),
    ("tank/my%data", f"contains '%': use {RULE} in /-separated components"),
    ("tank/$(reboot) x", f"contains '$' '(' ')': use {RULE} in /-separated components"),
    ("tank/tab\there", f"contains '\\t': use {RULE} in /-separated components"),
    ("tank/no\u00a0break", f"contains '\\xa0': use {RULE} in /-separated components"),
    ("tank/ünï", f"contains 'ï' 'ü': use {RULE} in /-separated components"),
    ("tank/my data@snap", "contains @, which starts a snapshot's name: give the dataset only (pool/path)"),
    ("/tank/my data", "starts with /: give the dataset's name (pool/path), not its mountpoint"),
    ("tank/my data/", "ends with /: remove it"),
    ("tank//my data", "has an empty component (//): remove the extra /"),
    ("tank/my data/..", "has a . or .. component, which ZFS refuses: name the dataset itself"),
    (" tank/x", "starts with a pool name that does not start with a letter: ZFS pool names start with a letter"),
    ("-tank/x", "starts with a pool name that does not start with a letter: ZFS pool names start with a letter"),
    ("mirror/x", "starts with 'mirror', a name ZFS reserves (not a pool name)"),
    ("t/" + "x" * 254, "is longer than 255 characters"),
])
def test_names_zfs_refuses_are_refused_naming_the_field_and_the_fix(name: str, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_dataset(name, "source_datasets[0]")
    assert str(info.value) == f"source_datasets[0] {name!r} is not a valid dataset name: it {problem}"


@pytest.mark.parametrize(("name", "problem"), [
    ("a+b", f"contains '+': use {RULE}"),
    ("my/snap", f"contains '/': use {RULE}"),
    ("a@b", f"contains '@': use {RULE}"),
    ("snap\n", f"contains '\\n': use {RULE}"),
    (".", "is . or .., which ZFS refuses"),
    ("..", "is . or .., which ZFS refuses"),
    ("", "is empty"),
])
def test_snapshot_names_zfs_refuses_are_refused(name: str, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_snapname(name, "snapshots[0]")
    assert str(info.value) == f"snapshots[0] {name!r} is not a valid snapshot name (the part after @): it {problem}"


# ------------------------------------------------------------------------------------------------ task options
def test_a_replication_task_takes_spaces_in_sources_target_and_snapshots() -> None:
    task = ReplicationTask.from_params({"source_datasets": ["tank/my data", "tank/Time Machine"], "target_dataset": "backup/my backups",
                                        "transport": "local", "naming_schema": ["auto %Y-%m-%d %H:%M"], "recursive": True,
                                        "exclude": ["tank/my data/scratch space"], "snapshots": ["manual one"]})
    assert task.source_datasets == ["tank/my data", "tank/Time Machine"] and task.target_dataset == "backup/my backups"
    # the suggested task name (which names units, files and the hold tag) carries no space: see the role's test below
    assert task.name == suggest_name(task) == "tank-my-data-tank-Time-Machine-to-backup-my-backups"


@pytest.mark.parametrize(("params", "message"), [
    ({"source_datasets": ["tank/my+data"]},
     f"source_datasets[0] 'tank/my+data' is not a valid dataset name: it contains '+': use {RULE} in /-separated components"),
    ({"target_dataset": "backup/my data/"}, "target_dataset 'backup/my data/' is not a valid dataset name: it ends with /: remove it"),
    ({"snapshots": ["my/snap"]}, f"snapshots[0] 'my/snap' is not a valid snapshot name (the part after @): it contains '/': use {RULE}"),
    ({"naming_schema": ["auto+%Y-%m-%d_%H-%M"]},
     "naming_schema[0]: naming_schema 'auto+%Y-%m-%d_%H-%M' contains '+', not allowed in ZFS snapshot names: use only letters, "
     "digits, spaces and _ . : - besides the % directives"),
])
def test_a_replication_task_refuses_what_zfs_refuses(params: dict, message: str) -> None:
    base = {"source_datasets": ["tank/my data"], "target_dataset": "backup/my data", "transport": "local",
            "naming_schema": ["auto-%Y-%m-%d_%H-%M"]}
    with pytest.raises(TaskError) as info:
        ReplicationTask.from_params({**base, **params})
    assert str(info.value) == message


def test_a_snapshot_task_takes_spaces_in_dataset_exclude_and_kept_snapshots() -> None:
    task = SnapshotTask.from_params({"dataset": "tank/my data", "recursive": True, "exclude": ["tank/my data/scratch space"],
                                     "keep_snapshots": ["tank/my data@before the upgrade"], "naming_schema": "auto %Y-%m-%d %H:%M"})
    assert task.dataset == "tank/my data" and task.exclude == ("tank/my data/scratch space",)
    assert task.keep_snapshots == frozenset({"tank/my data@before the upgrade"})
    with pytest.raises(SnapshotTaskError) as info:
        SnapshotTask.from_params({"dataset": "tank/my data", "keep_snapshots": ["tank/my data@a/b"]})
    assert str(info.value) == (f"keep_snapshots[0] 'a/b' is not a valid snapshot name (the part after @): it contains '/': use {RULE}")


# ------------------------------------------------------------------------------------------------ naming schemas
@pytest.mark.parametrize(("schema", "name"), [
    ("auto %Y-%m-%d_%H-%M", "auto 2026-11-28_10-05"),
    ("auto-%Y-%m-%d %H:%M", "auto-2026-11-28 10:05"),
    ("daily backup %Y%m%d %H%M%z", "daily backup 20261128 1005:0100"),
])
def test_a_naming_schema_with_a_space_names_and_parses_back(schema: str, name: str) -> None:
    ns = NamingSchema(schema)
    when = datetime(2026, 11, 28, 10, 5, tzinfo=timezone(timedelta(hours=1)) if ns.has_offset else None)
    assert ns.format(when) == name
    assert ns.parse(name) == when
    assert validate_snapname(name, "snapshot") == name
    assert ns.parse(name.replace(" ", "_")) is None  # the space is part of the schema, not any separator


def test_a_naming_schema_still_refuses_what_zfs_refuses() -> None:
    with pytest.raises(NamingSchemaError) as info:
        NamingSchema("auto\t%Y-%m-%d_%H-%M")
    assert str(info.value) == ("naming_schema 'auto\\t%Y-%m-%d_%H-%M' contains '\\t', not allowed in ZFS snapshot names: "
                               "use only letters, digits, spaces and _ . : - besides the % directives")


# ------------------------------------------------------------------------------------------------ argv and listings
def test_a_remote_command_carries_a_space_as_one_argument() -> None:
    """Every remote command is an argv quoted once: what the remote shell makes of it is exactly the argv."""
    argv = ["zfs", "send", "-I", "tank/my data@auto 2026-11-28_10-00", "tank/my data@auto 2026-11-28_11-00"]
    host = SSHHost(SSHConnection("127.0.0.1", 2222), control_dir="/nonexistent")
    local = host.command(argv)
    assert local[-2:] == ["--", quote_remote(argv)]
    out = subprocess.run(["sh", "-c", "printf '%s\\0' " + local[-1][len("zfs "):]], capture_output=True, check=True).stdout
    assert out.decode().split("\0")[:-1] == argv[1:]


def test_listings_with_spaces_parse_into_the_same_names() -> None:
    cols = ("name",) + LIST_PROPS
    text = ("tank/my data\tfilesystem\t11\t1\t-\toff\n"
            "tank/my data@auto 2026-11-28_10-00\tsnapshot\t12\t2\t0\t-\n"
            "tank/my data/sub dir \tfilesystem\t13\t3\t-\toff\n"
            "tank/my data/sub dir @auto 2026-11-28_10-00\tsnapshot\t14\t4\t1\t-\n")
    listing = parse_list_output("tank/my data", text, cols)
    assert list(listing.datasets) == ["tank/my data", "tank/my data/sub dir "]
    snap = listing.get("tank/my data/sub dir ").snapshots[0]
    assert (snap.name, snap.guid, snap.createtxg, snap.userrefs) == ("auto 2026-11-28_10-00", "14", 4, 1)

    get_text = "".join(f"{n}\t{p}\t{v}\n" for n, p, v in [
        ("tank/my data", "type", "filesystem"), ("tank/my data", "guid", "11"), ("tank/my data", "createtxg", "1"),
        ("tank/my data@auto 2026-11-28_10-00", "type", "snapshot"), ("tank/my data@auto 2026-11-28_10-00", "guid", "12"),
        ("tank/my data@auto 2026-11-28_10-00", "createtxg", "2")])
    legacy = parse_get_output("tank/my data", get_text)
    assert [(s.name, s.guid) for s in legacy.get("tank/my data").snapshots] == [("auto 2026-11-28_10-00", "12")]


# ------------------------------------------------------------------------------------------------ the role's units and files
SYSTEMD_UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\-]+\.(service|timer)")  # what systemd takes unescaped (systemd.unit(5))


def test_the_systemd_units_of_tasks_whose_datasets_have_spaces() -> None:
    """Task names (which name units, configs, state, logs, locks and hold tags) stay letters, digits and _ . -: a
    task over 'tank/my data' gets its suggested name with the spaces turned into '-', and the dataset names travel
    only inside the JSON config, verbatim."""
    snap = {"name": "my-data-hourly", "dataset": "tank/my data", "recursive": True, "schedule": "hourly",
            "naming_schema": "auto %Y-%m-%d_%H-%M"}
    repl = {"source_datasets": ["tank/my data"], "target_dataset": "backup/Time Machine/my data", "transport": "local",
            "periodic_snapshot_tasks": ["my-data-hourly"]}
    entries = {e["id"]: e for e in scheduler_tasks([snap], replication_tasks=[repl])}
    assert sorted(entries) == ["repl-tank-my-data-to-backup-Time-Machine-my-data", "snap-my-data-hourly"]
    r = entries["repl-tank-my-data-to-backup-Time-Machine-my-data"]
    assert r["service"] == "zfs-replication-repl-tank-my-data-to-backup-Time-Machine-my-data.service"
    assert r["config_path"] == "/etc/zfs-replication/tasks/repl-tank-my-data-to-backup-Time-Machine-my-data.json"
    assert r["exec_start"] == ("/usr/local/sbin/zfs-replication-run run --config "
                               "/etc/zfs-replication/tasks/repl-tank-my-data-to-backup-Time-Machine-my-data.json "
                               "--state-dir /var/lib/zfs-replication --log-dir /var/log/zfs-replication")
    s = entries["snap-my-data-hourly"]
    assert (s["service"], s["timer"]) == ("zfs-replication-snap-my-data-hourly.service", "zfs-replication-snap-my-data-hourly.timer")
    assert s["wants"] == [r["service"]] and r["after"] == [s["service"]]
    for e in entries.values():
        assert all(SYSTEMD_UNIT_NAME.fullmatch(u) for u in (e["service"], e["timer"]) if u), e
    # the datasets, verbatim, in the configs the runner reads
    config = json.loads(json.dumps(r["config"]))
    assert config["params"]["source_datasets"] == ["tank/my data"]
    assert config["params"]["target_dataset"] == "backup/Time Machine/my data"
    assert config["params"]["periodic_snapshot_tasks"][0]["dataset"] == "tank/my data"


def test_a_task_name_with_a_space_is_refused_naming_the_field() -> None:
    from ansible.errors import AnsibleFilterError

    with pytest.raises(AnsibleFilterError) as info:
        scheduler_tasks([{"name": "my data hourly", "dataset": "tank/my data"}])
    assert str(info.value) == ("snapshot task 'my data hourly': name 'my data hourly': give each snapshot task a name of letters, "
                               "digits and _ . - (at most 100 characters)")
    with pytest.raises(AnsibleFilterError) as info:
        scheduler_tasks([], replication_tasks=[{"name": "my data", "source_datasets": ["tank/my data"], "target_dataset": "b/my data",
                                                "transport": "local", "naming_schema": ["auto-%Y-%m-%d_%H-%M"]}])
    assert str(info.value) == ("replication task 'my data': name 'my data': use letters, digits and _ . - (at most 100 characters)")


# ------------------------------------------------------------------------------------------------ metrics and status
def test_metrics_labels_carry_dataset_names_with_spaces() -> None:
    """Prometheus label values: a space as is, and \\, " and newline escaped (a target label holds a dataset name)."""
    feed = {"replication": "tank-my-data-to-backup-my-data", "target": '127.0.0.1:2222:backup/my data "q" \\ x\ny', "held": 3,
            "pending": 2, "behind": 7200, "health": "ok"}
    state = {"task": "my-data-hourly", "kind": "snapshot", "result": "ok", "last_end": "2026-11-28T10:00:05+00:00",
             "details": {"pending": [feed]}}
    lines = metric_lines(state, 'task="my-data-hourly",kind="snapshot"')
    assert ('zfs_replication_pending_snapshots{task="my-data-hourly",kind="snapshot",replication="tank-my-data-to-backup-my-data",'
            'target="127.0.0.1:2222:backup/my data \\"q\\" \\\\ x\\ny"} 2') in lines
    text = render_metrics(state, datetime(2026, 11, 28, 10, 1, tzinfo=timezone.utc))
    samples = {(f.name, s.labels.get("target")): s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("zfs_replication_pending_snapshots", feed["target"])] == 2  # read back: the exact dataset name
    assert samples[("zfs_replication_pending_held_snapshots", feed["target"])] == 3


def test_the_status_table_keeps_a_dataset_name_with_spaces_on_one_aligned_line() -> None:
    info = [{"name": "tank-my-data-to-backup-my-data", "health": "critical", "lag": 7200, "pending": 2,
             "reasons": ["backup/my data/sub dir: nothing replicated yet"],
             "last_run": {"result": "failed", "last_end": "2026-11-28T10:00:05+00:00"}}]
    lines = status_table(status_rows(info, host="nas 1"))
    assert lines == [
        "HOST  TASK                           KIND        HEALTH   LAG   PENDING LAST   LAST RUN (UTC)            NOTE",
        "nas 1 tank-my-data-to-backup-my-data replication critical 2h00m 2       failed 2026-11-28T10:00:05+00:00 "
        "backup/my data/sub dir: nothing replicated yet",
    ]
