# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""encryption_key_generate's key store (_keys) on a real file system (a tmp dir): where the key is kept, its modes,
the atomic never-replacing write, reuse, the lost-key error, and the task validation and role filters around it.

The OpenZFS side (a target created encrypted with the key, reloaded with it, the lost key refused) is
tests/openzfs/test_generated_key.py.
"""
from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.zfs.replication.plugins.filter.scheduler_secret_configs import scheduler_secret_configs
from ansible_collections.zfs.replication.plugins.filter.scheduler_tasks import scheduler_tasks
from ansible_collections.zfs.replication.plugins.module_utils._info import key_file_info
from ansible_collections.zfs.replication.plugins.module_utils._keys import (
    KeyStoreError,
    generate_key,
    key_path,
    keyed_targets,
    obtain_key,
    read_key,
    store_key,
)
from ansible_collections.zfs.replication.plugins.module_utils._replication_task import ReplicationTask, TaskError
from ansible_collections.zfs.replication.plugins.module_utils._zfs import Dataset, Listing

HEX = "0123456789abcdef" * 4
BASE = {"name": "offsite", "source_datasets": ["tank/data"], "target_dataset": "backup/data", "transport": "local",
        "naming_schema": ["auto-%Y-%m-%d_%H-%M"]}
GENERATE = dict(BASE, encryption=True, encryption_key_format="hex", encryption_key_generate=True)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


@pytest.fixture
def loose_umask():
    """The most permissive umask: the modes must come from the code, not from the caller's umask."""
    old = os.umask(0)
    yield
    os.umask(old)


# ------------------------------------------------------------------ where and what


def test_the_key_file_sits_in_a_keys_directory_of_the_state_dir_named_like_the_state_file(tmp_path: Path) -> None:
    assert key_path(str(tmp_path), "offsite") == tmp_path / "keys" / "repl-offsite.key"
    assert key_path(None, "offsite") == Path("/var/lib/zfs-replication/keys/repl-offsite.key")


def test_a_generated_key_is_32_random_bytes_in_hex() -> None:
    keys = {generate_key() for _unused in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert len(key) == 64 and bytes.fromhex(key) and key == key.lower()


# ------------------------------------------------------------------ first run, later runs


def test_first_run_keeps_a_new_key_root_only_and_later_runs_reuse_it(tmp_path: Path, loose_umask) -> None:
    path = key_path(str(tmp_path), "offsite")
    lines: list[str] = []
    key, generated = obtain_key(path, [], False, lines.append)
    assert generated is True and len(key or "") == 64
    assert mode(path.parent) == 0o700 and mode(path) == 0o600
    assert os.lstat(path).st_uid == os.geteuid()
    assert path.read_text() == f"{key}\n"
    assert files_in(path.parent) == ["repl-offsite.key"]  # no temporary file left
    assert any(str(path) in line for line in lines) and not any(key in line for line in lines)  # type: ignore[operator]

    before = os.lstat(path)
    for _unused in range(3):
        again, generated = obtain_key(path, ["backup/data"], False, lines.append)
        assert (again, generated) == (key, False)
    after = os.lstat(path)
    assert (after.st_ino, after.st_mtime_ns, path.read_text()) == (before.st_ino, before.st_mtime_ns, f"{key}\n")


def test_a_stored_key_is_never_replaced(tmp_path: Path) -> None:
    path = key_path(str(tmp_path), "offsite")
    assert store_key(path, HEX) is True
    assert store_key(path, generate_key()) is False
    assert read_key(path) == HEX
    assert files_in(path.parent) == ["repl-offsite.key"]


def _race(state_dir: str, queue) -> None:
    key, generated = obtain_key(key_path(state_dir, "raced"), [], False, lambda _line: None)
    queue.put((key, generated))


def test_runs_racing_for_the_first_key_all_end_up_with_the_same_one(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), queue)) for _unused in range(8)]
    for p in procs:
        p.start()
    got = [queue.get(timeout=60) for _unused in procs]
    for p in procs:
        p.join(timeout=60)
    keys = {k for k, _generated in got}
    assert len(keys) == 1
    assert sum(1 for _k, generated in got if generated) == 1
    assert read_key(key_path(str(tmp_path), "raced")) == keys.pop()
    assert files_in(tmp_path / "keys") == ["repl-raced.key"]


def test_a_write_that_fails_leaves_no_key_and_no_temporary_file(tmp_path: Path, monkeypatch) -> None:
    path = key_path(str(tmp_path), "offsite")

    def disk_full(_fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(KeyStoreError, match="cannot keep the new key in .*repl-offsite.key: No space left on device"):
        obtain_key(path, [], False, lambda _line: None)
    monkeypatch.undo()
    assert files_in(path.parent) == []
    assert read_key(path) is None


def test_a_looser_keys_directory_is_made_root_only(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir(mode=0o755)
    os.chmod(tmp_path / "keys", 0o755)
    key, _generated = obtain_key(key_path(str(tmp_path), "offsite"), [], False, lambda _line: None)
    assert key and mode(tmp_path / "keys") == 0o700


# ------------------------------------------------------------------ lost, exposed or damaged keys


def test_a_lost_key_with_an_encrypted_target_is_an_error_and_never_a_new_key(tmp_path: Path) -> None:
    path = key_path(str(tmp_path), "offsite")
    with pytest.raises(KeyStoreError) as err:
        obtain_key(path, ["backup/data"], False, lambda _line: None)
    message = str(err.value)
    assert "backup/data" in message and str(path) in message and "Nothing was changed" in message
    assert not path.exists() and not path.parent.exists()


def test_check_mode_writes_no_key(tmp_path: Path) -> None:
    path = key_path(str(tmp_path), "offsite")
    lines: list[str] = []
    assert obtain_key(path, [], True, lines.append) == (None, False)
    assert files_in(tmp_path) == []
    assert any("would be generated" in line and str(path) in line for line in lines)
    with pytest.raises(KeyStoreError):  # the lost key is found in check mode too
        obtain_key(path, ["backup/data"], True, lines.append)


def test_a_key_file_others_can_read_is_refused_naming_the_fix(tmp_path: Path) -> None:
    path = key_path(str(tmp_path), "offsite")
    store_key(path, HEX)
    os.chmod(path, 0o644)
    with pytest.raises(KeyStoreError, match=r"can be read by others \(mode 0644\): .*chmod 600"):
        read_key(path)
    os.chmod(path, 0o600)
    assert read_key(path) == HEX


def test_a_restored_key_is_read_and_a_damaged_one_refused(tmp_path: Path) -> None:
    path = key_path(str(tmp_path), "offsite")
    path.parent.mkdir(mode=0o700)
    path.write_text(HEX.upper())  # restored by hand from an export: no newline, upper case
    os.chmod(path, 0o600)
    assert obtain_key(path, ["backup/data"], False, lambda _line: None) == (HEX, False)
    path.write_text("not a key\n")
    with pytest.raises(KeyStoreError, match="does not hold a hex key") as err:
        obtain_key(path, ["backup/data"], False, lambda _line: None)
    assert "not a key" not in str(err.value)


def test_keyed_targets_are_the_encryption_roots_inside_the_target() -> None:
    def ds(name: str, enc: str, root: str) -> Dataset:
        return Dataset(name, "filesystem", props={"encryption": enc, "encryptionroot": root, "keystatus": "available"})

    own = Listing("backup/data", {"backup/data": ds("backup/data", "aes-256-gcm", "backup/data"),
                                  "backup/data/child": ds("backup/data/child", "aes-256-gcm", "backup/data")})
    assert keyed_targets(own, "backup/data") == ["backup/data"]
    parents = Listing("backup/data", {"backup/data": ds("backup/data", "aes-256-gcm", "backup")})  # a parent's key
    assert keyed_targets(parents, "backup/data") == []
    plain = Listing("backup/data", {"backup/data": ds("backup/data", "off", "-")})
    assert keyed_targets(plain, "backup/data") == []
    fuse = Listing("backup/data", {"backup/data": Dataset("backup/data", "filesystem")})  # no encryption properties
    assert keyed_targets(fuse, "backup/data") == []
    assert keyed_targets(None, "backup/data") == []


# ------------------------------------------------------------------ the task's options


def test_a_task_with_a_generated_key_is_valid() -> None:
    task = ReplicationTask.from_params(GENERATE)
    assert task.encryption_key_generate is True and task.encryption_key is None


@pytest.mark.parametrize(("change", "words"), [
    ({"encryption_key": HEX}, ["encryption_key_generate and encryption_key exclude each other"]),
    ({"encryption_key_format": "passphrase"}, ["encryption_key_generate makes a hex key", "encryption_key_format: hex"]),
    ({"encryption": False}, ["encryption_key_generate needs encryption: true"]),
])
def test_a_generated_key_with_conflicting_options_is_refused_naming_the_fields(change: dict, words: list[str]) -> None:
    with pytest.raises(TaskError) as err:
        ReplicationTask.from_params(dict(GENERATE, **change))
    for word in words:
        assert word in str(err.value)


def test_encryption_without_a_key_points_at_encryption_key_generate() -> None:
    with pytest.raises(TaskError, match="encryption_key_generate: true"):
        ReplicationTask.from_params(dict(BASE, encryption=True))


def test_info_says_where_the_key_is_kept_never_the_key(tmp_path: Path) -> None:
    assert key_file_info(GENERATE, "offsite", str(tmp_path)) == {"path": str(tmp_path / "keys" / "repl-offsite.key"), "exists": False}
    key, _generated = obtain_key(key_path(str(tmp_path), "offsite"), [], False, lambda _line: None)
    info = key_file_info(GENERATE, "offsite", str(tmp_path))
    assert info == {"path": str(tmp_path / "keys" / "repl-offsite.key"), "exists": True} and key not in repr(info)
    assert key_file_info(BASE, "offsite", str(tmp_path)) is None


# ------------------------------------------------------------------ the role's filters


def test_a_generated_key_is_no_secret_in_inventory_and_the_config_holds_no_key() -> None:
    entries = {e["id"]: e for e in scheduler_tasks([], replication_tasks=[GENERATE])}
    entry = entries["repl-offsite"]
    assert entry["secret"] is False
    assert entry["config"]["params"]["encryption_key_generate"] is True
    assert "encryption_key" not in entry["config"]["params"]
    assert scheduler_secret_configs([], replication_tasks=[GENERATE]) == {}
    shown = {e["id"]: e for e in scheduler_tasks([], replication_tasks=[GENERATE], secrets=False)}
    assert shown["repl-offsite"]["config"] == entry["config"]


def test_the_role_refuses_a_generated_key_with_a_given_one_naming_the_task() -> None:
    with pytest.raises(AnsibleFilterError) as err:
        scheduler_tasks([], replication_tasks=[dict(GENERATE, encryption_key=HEX)])
    assert "offsite" in str(err.value) and "encryption_key_generate and encryption_key" in str(err.value)
    assert HEX not in str(err.value)
