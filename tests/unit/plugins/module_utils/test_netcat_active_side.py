# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""netcat.active_side: which host listens, and what each side runs when the sending side listens."""
from __future__ import annotations

import pytest

from ansible_collections.zfs.replication.plugins.module_utils import _netcat as netcat
from ansible_collections.zfs.replication.plugins.module_utils._executor import Stage
from ansible_collections.zfs.replication.plugins.module_utils._replication_task import ReplicationTask, TaskError
from ansible_collections.zfs.replication.plugins.module_utils._transport import LocalHost

HOST = LocalHost()


@pytest.mark.parametrize("direction,side,remote", [
    ("push", None, True), ("pull", None, False), ("push", "local", False), ("push", "remote", True),
    ("pull", "local", False), ("pull", "remote", True),
])
def test_listener_is_remote(direction, side, remote):
    assert netcat.listener_is_remote(direction, side) is remote


def test_addresses_when_this_host_listens_in_push_mode():
    assert netcat.addresses("push", "nas", "10.0.0.1", None, "local") == ("10.0.0.1", "10.0.0.1")
    with pytest.raises(ValueError, match="netcat.listen_address is required when netcat.active_side is local"):
        netcat.addresses("push", "nas", None, None, "local")
    assert netcat.addresses("pull", "nas", None, None, "remote") == ("nas", "nas")


def test_sender_listens_receiver_connects_and_checks_the_token():
    recv = [Stage(HOST, ["zfs", "recv", "-u", "p/t"], "zfs recv")]
    send = [Stage(HOST, ["zfs", "send", "p/s@a"], "zfs send"), Stage(HOST, ["plzip", "-q", "-c"], "plzip")]
    s = netcat.build(HOST, HOST, "10.0.0.2", "10.0.0.3", 47111, send, recv, sender_listens=True)
    assert s.sender is s.listener and s.receiver is s.connector
    sender_script, receiver_script = s.listener.argv[2], s.connector.argv[2]
    assert "nc -N -l 10.0.0.2 47111" in sender_script and "printf '%s' \"$zr_token\" && plzip -q -c" in sender_script
    assert "nc 10.0.0.3 47111 </dev/null" in receiver_script and " -l " not in receiver_script
    assert receiver_script.index(f"dd bs=1 count={netcat.TOKEN_LEN}") < receiver_script.index("zfs recv -u p/t")
    assert [p.name for p in s.connector.parts] == ["nc", "netcat token check", "zfs recv"]


def _task(**netcat_opts):
    return ReplicationTask.from_params({
        "name": "t", "source_datasets": ["tank/a"], "target_dataset": "backup/a", "naming_schema": ["auto-%Y-%m-%d_%H-%M"],
        "transport": "ssh+netcat", "ssh": {"host": "nas"}, "netcat": {"port_min": 5000, "port_max": 5001, **netcat_opts},
    })


def test_validation_names_the_field_and_the_fix():
    with pytest.raises(TaskError, match="netcat.active_side 'left': use local"):
        _task(active_side="left")
    with pytest.raises(TaskError, match="netcat.listen_address is required with netcat.active_side: local"):
        _task(active_side="local")
    assert _task(active_side="local", listen_address="10.0.0.1").netcat.active_side == "local"
    assert _task(active_side="remote").netcat.active_side == "remote"
