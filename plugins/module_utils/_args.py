# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Argument specs shared by the modules (plain dicts: no ansible import needed)."""
from __future__ import annotations

# One spec for every option that reaches another host over SSH (doc fragment: zfs.replication.ssh).
SSH_SPEC: dict = dict(
    type="dict",
    options=dict(
        host=dict(type="str", required=True),
        port=dict(type="int", default=22),
        user=dict(type="str"),
        private_key_file=dict(type="path", no_log=False),
        known_hosts_file=dict(type="path"),
        host_key_checking=dict(type="str", default="strict", choices=["strict", "accept_new"]),
        cipher=dict(type="str", default="standard"),
        connect_timeout=dict(type="int", default=10),
    ),
)
