# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations


class ModuleDocFragment:
    # The SSH connection to the other side of a replication (one spec for every module).
    DOCUMENTATION = r"""
options:
  ssh:
    description:
      - How to reach the other host with the OpenSSH client.
      - Required when O(transport=ssh).
      - Commands run with C(BatchMode=yes) and one shared master connection per run (C(ControlMaster)).
    type: dict
    suboptions:
      host:
        description:
          - Host name or address of the other side.
        type: str
        required: true
      port:
        description:
          - SSH port.
        type: int
        default: 22
      user:
        description:
          - Remote user. The OpenSSH default (your ssh_config, else the current user) when omitted.
        type: str
      private_key_file:
        description:
          - Private key to authenticate with. C(IdentitiesOnly=yes) is set so only this key is offered.
          - Must not be readable by others; ssh refuses loose permissions.
        type: path
      known_hosts_file:
        description:
          - known_hosts file that holds the other host's key.
          - The ssh default (C(~/.ssh/known_hosts)) when omitted.
        type: path
      host_key_checking:
        description:
          - V(strict) refuses unknown and changed host keys (C(StrictHostKeyChecking=yes)).
          - V(accept_new) trusts an unknown host's key on first use and still refuses a changed one.
        type: str
        choices: [strict, accept_new]
        default: strict
      cipher:
        description:
          - V(standard) uses the OpenSSH default cipher list.
          - V(fast) uses C(aes128-gcm@openssh.com), much faster on CPUs with AES instructions.
          - Any other value is passed to C(ssh -c) as an OpenSSH cipher name.
        type: str
        default: standard
      connect_timeout:
        description:
          - Seconds to wait for the connection.
        type: int
        default: 10
"""
