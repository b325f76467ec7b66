#!/usr/bin/python
# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: zfs_replication
short_description: Replicate ZFS snapshots from this host to another host or dataset
version_added: 0.1.0
description:
  - Replicates the snapshots of one or more ZFS datasets (filesystems or zvols) that match a naming schema
    to a target dataset, on another host over SSH (O(transport=ssh)) or on this host (O(transport=local)).
  - The module runs on the source host and pushes. The first run sends everything (a full stream of the
    oldest selected snapshot, then one incremental stream); later runs send only what is new.
  - Each dataset's incremental base is the newest snapshot present on both sides with the same guid; names
    alone never decide.
  - A target that has diverged (it has snapshots after the common one that the source lacks), or that shares
    no snapshot with the source, is refused with a clear error and left untouched. No C(zfs recv -F) is ever
    used, so nothing on the target is destroyed.
  - One recursive listing per side per run, whatever the number of datasets. The data goes
    C(zfs send | pv | ssh host zfs recv) as an OS pipeline; Python only starts it and checks every stage.
  - Works with OpenZFS 2.x and with older command lines such as zfs-fuse; the capabilities of each host are
    probed once per run and reported.
author:
  - zfs.replication contributors
extends_documentation_fragment:
  - zfs.replication.ssh
  - zfs.replication.attributes
attributes:
  check_mode:
    support: full
    details: Lists both sides and returns the plan (per dataset, the streams it would send) without sending anything.
  diff_mode:
    support: full
    details: Shows the target's snapshot lists before and after (planned, in check mode).
  idempotent:
    support: full
    details: A run with nothing new to send reports C(changed=false).
options:
  name:
    description:
      - Name of the replication task, used in logs.
      - When omitted it is made from the sources and the target, like TrueNAS suggests one.
    type: str
  source_datasets:
    description:
      - Datasets or zvols on this host whose snapshots are replicated.
      - With one source, O(target_dataset) is its copy. With several, each lands in
        O(target_dataset)/<last component of the source>, and O(target_dataset) is created when missing.
    type: list
    elements: str
    required: true
  target_dataset:
    description:
      - Dataset on the target host that receives the replica.
      - When it does not exist, it is created by the first receive; its parent must exist (only the last path
        component is created). A zvol cannot be the parent of a target.
    type: str
    required: true
  direction:
    description:
      - V(push) sends from this host to the target.
    type: str
    choices: [push]
    default: push
  transport:
    description:
      - V(ssh) runs C(zfs recv) on the host given in O(ssh) over the OpenSSH client.
      - V(local) replicates to a dataset on this host.
    type: str
    choices: [ssh, local]
    default: ssh
  recursive:
    description:
      - Also replicate every child dataset of each source, each with its own incremental base.
    type: bool
    default: false
  exclude:
    description:
      - Child datasets (and their descendants) of the sources not to replicate. Needs O(recursive=true).
    type: list
    elements: str
    default: []
  naming_schema:
    description:
      - Replicate the snapshots whose names match one of these strftime schemas, like C(auto-%Y-%m-%d_%H-%M).
      - Each schema must contain C(%Y), C(%m), C(%d), C(%H) and C(%M).
      - Required unless O(name_regex) is given.
    type: list
    elements: str
    default: []
  name_regex:
    description:
      - Also replicate the snapshots whose names fully match this Python regular expression.
    type: str
  properties:
    description:
      - Send dataset properties with the streams (C(zfs send -p)).
    type: bool
    default: true
  readonly:
    description:
      - V(set) sets C(readonly=on) on the target dataset (children inherit it) after it is received.
      - V(require) refuses to replicate into an existing target that is not read-only.
      - V(ignore) leaves the property alone.
    type: str
    choices: [set, require, ignore]
    default: set
notes:
  - Received datasets are not mounted (C(zfs recv -u)).
  - Byte counts need C(pv) on this host; without it RV(bytes) is null.
seealso:
  - name: OpenZFS zfs-send(8)
    description: The send command and its stream types.
    link: https://openzfs.github.io/openzfs-docs/man/master/8/zfs-send.8.html
"""

EXAMPLES = r"""
- name: Replicate tank/data and its children to the backup host
  zfs.replication.zfs_replication:
    source_datasets: [tank/data]
    target_dataset: backup/tank-data
    recursive: true
    exclude: [tank/data/scratch]
    naming_schema: ["auto-%Y-%m-%d_%H-%M"]
    ssh:
      host: backup.example.net
      user: root
      private_key_file: /root/.ssh/replication_ed25519
      known_hosts_file: /etc/zfs-replication/known_hosts
      cipher: fast

- name: Keep a local copy on another pool
  zfs.replication.zfs_replication:
    source_datasets: [tank/vm]
    target_dataset: archive/vm
    transport: local
    naming_schema: ["daily-%Y%m%d-%H%M"]

- name: Show what would be sent
  zfs.replication.zfs_replication:
    source_datasets: [tank/data]
    target_dataset: backup/tank-data
    naming_schema: ["auto-%Y-%m-%d_%H-%M"]
    ssh:
      host: backup.example.net
      known_hosts_file: /etc/zfs-replication/known_hosts
  check_mode: true
  register: repl

- name: Print the plan
  ansible.builtin.debug:
    var: repl.plan
"""

RETURN = r"""
task:
  description: The task's name (given or suggested).
  returned: always
  type: str
  sample: tank-data-to-backup-tank-data
plan:
  description: Per source dataset, what the run does (or would do in check mode).
  returned: always
  type: list
  elements: dict
  contains:
    source:
      description: Source dataset.
      type: str
    target:
      description: Target dataset.
      type: str
    action:
      description: V(full), V(incremental), V(in_sync), V(no_snapshots) or V(refused).
      type: str
    base:
      description: The incremental base (newest snapshot with the same guid on both sides), if any.
      type: str
    sends:
      description: The streams, each with C(mode) (V(full), V(I), V(i)), C(base), C(snapshot), C(snapshots) and C(description).
      type: list
      elements: dict
    pending:
      description: Snapshot names this run creates on the target.
      type: list
      elements: str
    message:
      description: Why a dataset was refused or has nothing to send.
      type: str
  sample:
    - source: tank/data
      target: backup/tank-data
      action: incremental
      base: auto-2026-11-27_00-00
      pending: [auto-2026-11-28_00-00]
      message: ""
      sends:
        - mode: I
          base: auto-2026-11-27_00-00
          snapshot: auto-2026-11-28_00-00
          snapshots: [auto-2026-11-28_00-00]
          description: incremental -I tank/data@auto-2026-11-27_00-00 -> @auto-2026-11-28_00-00 (1 snapshots) -> backup/tank-data
datasets:
  description: Per target dataset, what was sent.
  returned: always
  type: dict
  sample:
    backup/tank-data:
      source: tank/data
      action: incremental
      base: auto-2026-11-27_00-00
      snapshots_sent: [auto-2026-11-28_00-00]
      bytes: 1048576
      duration: 0.84
      error: null
snapshots_sent:
  description: Number of snapshots created on the target by this run.
  returned: always
  type: int
  sample: 3
bytes:
  description: Bytes of stream sent (counted by C(pv)); null when C(pv) is not installed.
  returned: always
  type: int
  sample: 1048576
duration:
  description: Seconds the run took, listings included.
  returned: always
  type: float
  sample: 2.31
errors:
  description: Datasets that were refused or failed, each with the reason and the fix.
  returned: always
  type: list
  elements: str
log:
  description: The run's log lines (plan, streams, results).
  returned: always
  type: list
  elements: str
capabilities:
  description: What the zfs command line of each side supports (C(source) and C(target)), from the probe.
  returned: always
  type: dict
  sample:
    source: {family: OpenZFS 2.3.2, version: 2.3.2, resumable: true, list_parsable: true}
    target: {family: "legacy zfs (no 'zfs version'; e.g. zfs-fuse)", version: null, resumable: false}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zfs.replication.plugins.module_utils._args import SSH_SPEC
from ansible_collections.zfs.replication.plugins.module_utils._replication import TaskError, run_replication


def _diff(before: dict, after: dict) -> dict:
    def render(lists: dict) -> str:
        return "".join(f"{ds}@{snap}\n" for ds in sorted(lists) for snap in lists[ds])

    return {"before": render(before), "after": render(after), "before_header": "target snapshots", "after_header": "target snapshots"}


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str"),
            source_datasets=dict(type="list", elements="str", required=True),
            target_dataset=dict(type="str", required=True),
            direction=dict(type="str", default="push", choices=["push"]),
            transport=dict(type="str", default="ssh", choices=["ssh", "local"]),
            ssh=SSH_SPEC,
            recursive=dict(type="bool", default=False),
            exclude=dict(type="list", elements="str", default=[]),
            naming_schema=dict(type="list", elements="str", default=[]),
            name_regex=dict(type="str"),
            properties=dict(type="bool", default=True),
            readonly=dict(type="str", default="set", choices=["set", "require", "ignore"]),
        ),
        required_if=[("transport", "ssh", ("ssh",))],
        required_one_of=[("naming_schema", "name_regex")],
        supports_check_mode=True,
    )
    try:
        result = run_replication(module.params, check_mode=module.check_mode)
    except TaskError as exc:
        module.fail_json(msg=str(exc), changed=False)
    out = result.as_dict()
    if module._diff:
        out["diff"] = _diff(result.before, result.after)
    if result.failed:
        module.fail_json(msg="; ".join(result.errors), **out)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
