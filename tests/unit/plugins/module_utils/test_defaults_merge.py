# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One merge of saved defaults into declared tasks: recursive for dicts, lists replace, null keeps the default."""
from __future__ import annotations

import copy

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.zfs.replication.plugins.filter.merge_defaults import merge_defaults as merge_filter
from ansible_collections.zfs.replication.plugins.filter.scheduler_tasks import scheduler_tasks
from ansible_collections.zfs.replication.plugins.module_utils._defaults import DefaultsError, merge_all, merge_defaults
from ansible_collections.zfs.replication.plugins.module_utils._info import tasks_info
from ansible_collections.zfs.replication.plugins.module_utils._replication_task import TaskError

DEFAULTS = {
    "recursive": True,
    "exclude": ["tank/data/tmp", "tank/data/cache"],
    "naming_schema": ["auto-%Y-%m-%d_%H-%M"],
    "ssh": {"user": "zrepl", "port": 2222, "private_key_file": "/root/.ssh/repl", "known_hosts_file": "/etc/zr/known_hosts",
            "cipher": "fast"},
    "properties_override": {"compression": "lz4", "atime": "off"},
}


def test_nested_dicts_merge_and_the_task_wins() -> None:
    task = {"name": "offsite", "ssh": {"host": "backup.example.net", "port": 22}, "properties_override": {"atime": "on"}}
    assert merge_defaults(DEFAULTS, task) == {
        "name": "offsite",
        "recursive": True,
        "exclude": ["tank/data/tmp", "tank/data/cache"],
        "naming_schema": ["auto-%Y-%m-%d_%H-%M"],
        "ssh": {"host": "backup.example.net", "user": "zrepl", "port": 22, "private_key_file": "/root/.ssh/repl",
                "known_hosts_file": "/etc/zr/known_hosts", "cipher": "fast"},
        "properties_override": {"compression": "lz4", "atime": "on"},
    }


def test_lists_and_scalars_replace_the_default_whole() -> None:
    merged = merge_defaults(DEFAULTS, {"exclude": ["tank/data/scratch"], "naming_schema": [], "recursive": False})
    assert merged["exclude"] == ["tank/data/scratch"]
    assert merged["naming_schema"] == []
    assert merged["recursive"] is False


def test_null_or_absent_keeps_the_default_at_any_depth() -> None:
    merged = merge_defaults(DEFAULTS, {"exclude": None, "ssh": {"host": "b", "user": None}, "retries": None})
    assert merged["exclude"] == DEFAULTS["exclude"]
    assert merged["ssh"]["user"] == "zrepl" and merged["ssh"]["host"] == "b"
    assert "retries" not in merged  # null and no default: not set at all
    assert merge_defaults(None, {"name": "a", "ssh": {"host": "b", "port": None}}) == {"name": "a", "ssh": {"host": "b"}}
    assert merge_defaults({}, {}) == {}


def test_a_dict_replaces_a_scalar_default_and_back() -> None:
    assert merge_defaults({"schedule": "daily"}, {"schedule": {"minute": "0"}}) == {"schedule": {"minute": "0"}}
    assert merge_defaults({"schedule": {"minute": "0"}}, {"schedule": "hourly"}) == {"schedule": "hourly"}


def test_the_defaults_are_never_changed_and_tasks_do_not_share_values() -> None:
    before = copy.deepcopy(DEFAULTS)
    first, second = merge_all(DEFAULTS, [{"ssh": {"host": "a"}}, {"ssh": {"host": "b"}}])
    first["ssh"]["port"] = 1
    first["exclude"].append("x")
    assert before == DEFAULTS
    assert second["ssh"] == {**DEFAULTS["ssh"], "host": "b"} and second["exclude"] == DEFAULTS["exclude"]


def test_bad_input_names_the_task_or_the_defaults() -> None:
    with pytest.raises(DefaultsError, match=r"^tasks\[1\] is not a dict: declare each task as a mapping"):
        merge_all({}, [{"name": "a"}, "b"])
    with pytest.raises(DefaultsError, match=r"^replication_defaults is a list: give a mapping"):
        merge_defaults([], {}, defaults_name="replication_defaults")
    with pytest.raises(DefaultsError, match=r"^zfs_replication_replication_tasks is a dict: give a list of tasks"):
        merge_all({}, {"name": "a"}, "zfs_replication_replication_tasks")
    with pytest.raises(AnsibleFilterError, match=r"zfs_replication_snapshot_tasks\[0\] is not a dict"):
        merge_filter(["x"], {}, name="zfs_replication_snapshot_tasks")
    with pytest.raises(AnsibleFilterError, match=r"replication_tasks\[0\] is not a dict"):
        scheduler_tasks([], replication_tasks=["x"])
    with pytest.raises(TaskError, match=r"tasks\[0\] is not a dict|task_defaults is a str"):
        tasks_info([{"name": "a"}], "nope")


def test_the_role_filter_the_playbook_filter_and_the_info_module_merge_alike() -> None:
    """scheduler_tasks (the role), merge_defaults (playbooks/tasks/declared.yml) give the same task."""
    task = {"name": "offsite", "source_datasets": ["tank/data"], "target_dataset": "backup/data", "ssh": {"host": "b.example.net"},
            "exclude": ["tank/data/scratch"], "retries": None}
    via_role = scheduler_tasks([], replication_tasks=[task], replication_defaults=DEFAULTS)[0]["config"]["params"]
    via_playbook = scheduler_tasks([], replication_tasks=merge_filter([task], DEFAULTS))[0]["config"]["params"]
    assert via_role == via_playbook == merge_defaults(DEFAULTS, task)
    assert via_role["ssh"]["user"] == "zrepl" and via_role["ssh"]["host"] == "b.example.net"


class TemplarLike:
    """Stands for the templar ansible-core's lazy containers carry: deep-copying it copies plugin loaders (a
    deprecation on ansible-core 2.21), so here it cannot be copied at all."""

    def __deepcopy__(self, memo: dict) -> TemplarLike:
        raise AssertionError("the templar a lazy container holds was deep-copied")


class LazyDict(dict):
    templar = TemplarLike()

    def __deepcopy__(self, memo: dict) -> LazyDict:
        return LazyDict(copy.deepcopy(dict(self), memo), templar=copy.deepcopy(self.templar, memo))


class LazyList(list):
    templar = TemplarLike()

    def __deepcopy__(self, memo: dict) -> LazyList:
        copy.deepcopy(self.templar, memo)
        return LazyList(self)


def test_containers_a_filter_is_given_come_out_as_plain_dicts_and_lists() -> None:
    """Inside a filter the defaults and tasks are ansible-core's lazy containers: the merge reads them item by item
    into plain dicts and lists, so the result holds no templar and no container of theirs is deep-copied."""
    defaults = LazyDict(ssh=LazyDict(user="zrepl", port=2222), exclude=LazyList(["tank/a"]), recursive=True)
    tasks = LazyList([LazyDict(name="t", ssh=LazyDict(host="b"), naming_schema=LazyList(["x-%Y"]))])
    (merged,) = merge_all(defaults, tasks)
    assert merged == {"name": "t", "recursive": True, "exclude": ["tank/a"], "naming_schema": ["x-%Y"],
                      "ssh": {"user": "zrepl", "port": 2222, "host": "b"}}
    kinds = {type(merged), type(merged["ssh"]), type(merged["exclude"]), type(merged["naming_schema"])}
    assert kinds == {dict, list}
    merged["exclude"].append("tank/b")
    assert defaults["exclude"] == ["tank/a"]
