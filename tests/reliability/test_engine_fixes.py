# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Pure regression tests for engine bugs the reliability tier found (each failed before its fix)."""
from __future__ import annotations

import pytest

from ansible_collections.zfs.replication.plugins.module_utils._executor import Stage, remote_stage, split_remote_result
from ansible_collections.zfs.replication.plugins.module_utils._replication_task import ReplicationTask, TaskError
from ansible_collections.zfs.replication.plugins.module_utils._transport import SSHConnection, SSHHost
from ansible_collections.zfs.replication.plugins.module_utils._zfs import validate_dataset, validate_snapname


@pytest.mark.fault_class("connection cut mid-stream")
def test_killed_ssh_client_is_reported_as_the_connection_not_as_zfs_recv(tmp_path):
    """The ssh client carrying `zfs recv` killed by SIGKILL (rc -9, no status tag came back): the error names the
    ssh connection; before the fix it said 'zfs recv ... killed by signal 9', which zfs recv never was."""
    host = SSHHost(SSHConnection("127.0.0.1", 2222), control_dir=str(tmp_path))
    stage = remote_stage(host, [Stage(host, ["zfs", "recv", "-u", "p/x"], "zfs recv")])
    results = split_remote_result(stage, -9, "")
    assert [r.name for r in results] == ["ssh connection"]
    assert "killed by signal 9" in results[0].stderr and "connection lost" in results[0].stderr


@pytest.mark.fault_class("hostile input (argv, names, hosts)")
@pytest.mark.parametrize("check", [
    lambda: validate_dataset("pool/x\n", "target_dataset"),
    lambda: validate_snapname("snap\n", "snapshots[0]"),
    lambda: SSHConnection(host="host\n").validate(),
    lambda: SSHConnection(host="h", user="user\n").validate(),
    lambda: SSHConnection(host="h", cipher="aes128-ctr\n").validate(),
], ids=["dataset", "snapshot", "ssh.host", "ssh.user", "ssh.cipher"])
def test_a_trailing_newline_is_refused(check):
    """`$` in the validation patterns matched before a trailing newline: 'pool/x\\n', 'host\\n', 'user\\n' passed."""
    with pytest.raises(ValueError):
        check()


@pytest.mark.fault_class("hostile input (argv, names, hosts)")
@pytest.mark.parametrize("extra", [{"name": "x\n"}, {"properties_override": {"zr:x\n": "1"}}, {"properties_exclude": ["zr:x\n"]},
                                   {"buffer_size": "64M\n"}], ids=["name", "properties_override", "properties_exclude", "buffer_size"])
def test_task_fields_with_a_trailing_newline_are_refused(extra):
    params = {"source_datasets": ["p/a"], "target_dataset": "q/b", "transport": "local", "naming_schema": ["auto-%Y-%m-%d_%H-%M"]}
    with pytest.raises(TaskError):
        ReplicationTask.from_params({**params, **extra})


@pytest.mark.fault_class("security defaults (host keys, key files)")
def test_loose_key_permissions_are_named_before_the_authentication_failure():
    """ssh ignores a 0644 key and then fails authentication: both lines are in stderr. The message used to say
    'refused authentication ... check authorized_keys' instead of naming the file's permissions."""
    from ansible_collections.zfs.replication.plugins.module_utils._transport import explain_ssh_failure

    stderr = ("WARNING: UNPROTECTED PRIVATE KEY FILE!\nPermissions 0644 for '/k' are too open.\n"
              'Load key "/k": bad permissions\nroot@127.0.0.1: Permission denied (publickey).\n')
    msg = explain_ssh_failure(SSHConnection("127.0.0.1", 22, private_key_file="/k"), stderr)
    assert "loose permissions" in msg and "chmod 600" in msg


@pytest.mark.fault_class("hostile input (argv, names, hosts)")
def test_runner_refuses_a_task_name_with_a_trailing_newline():
    """The timer entry point names its state, lock and log files after the task: 'x\\n' passed its `$` pattern."""
    from ansible_collections.zfs.replication.plugins.module_utils._runner import ConfigError, TaskConfig

    with pytest.raises(ConfigError, match="name"):
        TaskConfig.from_dict({"kind": "replication", "name": "x\n", "params": {}})
    with pytest.raises(ConfigError, match="depends_on"):
        TaskConfig.from_dict({"kind": "replication", "name": "x", "params": {}, "depends_on": ["snap\n"]})
