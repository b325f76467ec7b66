#!/usr/bin/python
# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: zfs_replication_info
short_description: Report the status of ZFS replication tasks (newest snapshots, common base, pending, lag, health)
version_added: 0.1.0
description:
  - For each replication task and each dataset it covers, reports the newest selected snapshot on the source,
    the newest snapshot on the target, the common base (the newest target snapshot whose guid the source has),
    the number of selected source snapshots newer than that base (pending), the recovery point (the C(creation) time
    of the newest snapshot on the target) and the lag (seconds from the recovery point to the check).
  - The lag is the one C(zfs_replication_lag_seconds) of the runner's metrics reports (same definition, same code),
    dated at the end of the task's last run instead of at this check.
  - Reads the last run's result from the state file that C(zfs-replication-run) (the P(zfs.replication.scheduler#role)
    role's timers) writes, and gives a health verdict from thresholds on the lag.
  - Run it on the host that runs the task (the source for C(direction=push)), with the same task options as
    M(zfs.replication.zfs_replication). One capability probe and one recursive listing per side and task, whatever
    the number of datasets. Changes nothing.
author:
  - zfs.replication contributors (@zfs-replication)
extends_documentation_fragment:
  - zfs.replication.attributes
attributes:
  check_mode:
    support: full
    details: Read-only; runs the same in check mode.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: Never changes anything.
options:
  tasks:
    description:
      - Replication tasks, each a dict of M(zfs.replication.zfs_replication) options (C(source_datasets),
        C(target_dataset), C(ssh), C(naming_schema), ...). Options that do not affect the status are ignored.
      - The encryption options (C(encryption), C(encryption_key_format), C(encryption_key), C(encryption_key_location),
        C(encryption_key_generate)) are ignored, since the status needs no key; for a task with C(encryption_key_generate),
        RV(tasks[].encryption_key_file) says where its key is kept. A C(encryption_key) given here or in O(task_defaults) is masked in every
        output of the module, like an option with C(no_log), whatever the verbosity.
    type: list
    elements: dict
    required: true
  task_defaults:
    description:
      - Options merged into every task, the way the P(zfs.replication.scheduler#role) role and the playbooks merge their
        defaults, recursively (a task's C(ssh.host) keeps the defaults' C(ssh.user), key and known_hosts); a task's lists
        replace the default whole; a null in a task keeps the default.
    type: dict
    default: {}
  state_dir:
    description:
      - The runner's state directory, where C(repl-NAME.json) records each task's last run.
    type: path
    default: /var/lib/zfs-replication
  lag_warning:
    description:
      - Health is V(warning) when a dataset's lag reaches this many seconds.
    type: int
    default: 90000
  lag_critical:
    description:
      - Health is V(critical) when a dataset's lag reaches this many seconds.
    type: int
    default: 176400
notes:
  - Health is V(critical) when a dataset's lag reaches O(lag_critical), or when a dataset has selected snapshots
    and nothing was replicated yet; V(warning) when a lag reaches O(lag_warning), when the last run failed, or when
    no snapshot matches the selection; V(ok) otherwise.
  - Snapshot times come from the C(creation) property (a received snapshot keeps the source's), so lags are exact
    whatever the naming schema; with a task of several datasets, the task's recovery point is the oldest of theirs.
"""

EXAMPLES = r"""
- name: Status of the backup replication
  zfs.replication.zfs_replication_info:
    tasks:
      - name: data-to-backup
        source_datasets: [tank/data]
        target_dataset: backup/data
        recursive: true
        naming_schema: ["auto-%Y-%m-%d_%H-%M"]
        ssh:
          host: backup.example.net
          known_hosts_file: /etc/zfs-replication/known_hosts
    lag_warning: 7200
    lag_critical: 86400
  register: status

- name: Fail when a replica is too old
  ansible.builtin.assert:
    that: status.tasks | selectattr('health', 'equalto', 'critical') | list | length == 0
"""

RETURN = r"""
table:
  description:
    - The status as a table, one line per task after a header (TASK, KIND, HEALTH, LAG, PENDING, LAST, LAST RUN, NOTE),
      columns aligned; C(ansible.builtin.debug) with C(var) prints one line per item.
  returned: always
  type: list
  elements: str
  sample:
    - "TASK           KIND        HEALTH LAG   PENDING LAST LAST RUN (UTC)            NOTE"
    - "data-to-backup replication ok     1h02m 1       ok   2026-11-28T11:00:04+00:00"
tasks:
  description: One entry per task, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The task's name (given or suggested).
      type: str
    direction:
      description: V(push) or V(pull).
      type: str
    transport:
      description: V(ssh), V(ssh+netcat) or V(local).
      type: str
    source:
      description: The source host (V(local) or C(user@host:port)).
      type: str
    target:
      description: The target host.
      type: str
    reachable:
      description:
        - Whether both hosts answered.
        - When one cannot be reached (ssh refused, timed out, host key or login refused), the task's status is still
          returned. RV(tasks[].health) is V(critical); the first reason names the host, the error and the last
          successful run; what the unreachable side holds (RV(tasks[].datasets), RV(tasks[].pending),
          RV(tasks[].lag)) is unknown (empty and null), never guessed.
      type: bool
    pending:
      description:
        - Selected source snapshots not yet on the target, summed over the datasets; null when a host is unreachable.
      type: int
    recovery_point:
      description:
        - The oldest of the datasets' recovery points (ISO 8601, UTC); null when a target dataset has no snapshot.
      type: str
    lag:
      description: Seconds from RV(tasks[].recovery_point) to RV(tasks[].checked_at) (the largest lag of the datasets).
      type: int
    checked_at:
      description: When the task was checked (ISO 8601, UTC, whole seconds); the lags are counted up to it.
      type: str
    health:
      description: V(ok), V(warning) or V(critical).
      type: str
    reasons:
      description: Why the health is not V(ok), worst first.
      type: list
      elements: str
    encryption_key_file:
      description:
        - For a task with C(encryption=true) and C(encryption_key_generate=true), where its generated key is kept on this
          host (C(path), C(<state_dir>/keys/repl-<name>.key)) and whether the file is there (C(exists)); never the key.
          Null for other tasks.
        - A missing key file while the target is already encrypted makes the health V(critical), as the next run fails and
          the replica cannot be read without the key. Restore it there from your export.
      type: dict
      sample: {path: /var/lib/zfs-replication/keys/repl-data-offsite.key, exists: true}
    last_run:
      description:
        - The last run recorded by C(zfs-replication-run); all null when it never ran there.
        - Keys C(result) (V(ok), V(failed), V(skipped), or V(waiting) when a run came outside the task's
          C(restrict_schedule) window and waits for it), C(last_start), C(last_end), C(last_success) (ISO 8601 UTC),
          C(error), C(snapshots_sent), C(bytes), C(duration), C(running) (a run is in progress), C(reason) (why a run
          was skipped or waits) and C(next_window) (for a waiting run, the start of the next window, ISO 8601).
        - C(transfers) lists the streams of the run in progress, as its last progress update (every
          C(progress_interval) seconds) wrote them; each has C(dataset) (the target), C(snapshot), C(bytes) sent so far,
          C(expected_bytes) (C(zfs send -nP)'s estimate, or where zfs send has no C(-nP) a rougher one from the
          snapshots' C(referenced); null when unknown), C(percent), C(rate) (bytes per second over
          the last interval), C(eta_seconds), C(started) and C(seconds). Empty when no run is in progress.
      type: dict
    datasets:
      description: One entry per source dataset of the task.
      type: list
      elements: dict
      contains:
        source:
          description: Source dataset.
          type: str
        target:
          description: Its target dataset.
          type: str
        target_exists:
          description: Whether the target dataset exists.
          type: bool
        source_newest:
          description: Newest source snapshot that the task selects (name after the C(@)).
          type: str
        source_snapshots:
          description: Number of source snapshots the task selects.
          type: int
        target_newest:
          description: Newest snapshot on the target (by its C(creation)), the recovery point.
          type: str
        target_snapshots:
          description: Number of snapshots on the target.
          type: int
        common:
          description: The common base, the newest target snapshot whose guid the source has.
          type: str
        common_guid:
          description: The guid of the common base.
          type: str
        common_time:
          description: The C(creation) of the common base (ISO 8601, UTC).
          type: str
        pending:
          description: Number of selected source snapshots newer than the common base (all of them without one).
          type: int
        pending_snapshots:
          description: Their names.
          type: list
          elements: str
        recovery_point:
          description: The C(creation) of the newest snapshot on the target (ISO 8601, UTC); null when it has none.
          type: str
        lag:
          description: Seconds from the recovery point to the check; null without one.
          type: int
  sample:
    - name: data-to-backup
      direction: push
      transport: ssh
      source: local
      target: root@backup.example.net:22
      pending: 1
      recovery_point: "2026-11-28T11:00:00+00:00"
      lag: 3720
      checked_at: "2026-11-28T12:02:00+00:00"
      health: ok
      reasons: []
      last_run: {result: ok, last_success: "2026-11-28T11:00:04+00:00", bytes: 1048576, duration: 2.3}
      datasets:
        - source: tank/data
          target: backup/data
          target_exists: true
          source_newest: auto-2026-11-28_12-00
          source_snapshots: 24
          target_newest: auto-2026-11-28_11-00
          target_snapshots: 23
          common: auto-2026-11-28_11-00
          common_guid: "1234567890123456789"
          common_time: "2026-11-28T11:00:00+00:00"
          pending: 1
          pending_snapshots: [auto-2026-11-28_12-00]
          recovery_point: "2026-11-28T11:00:00+00:00"
          lag: 3720
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zfs.replication.plugins.module_utils._info import replication_rows, secret_values, status_table, tasks_info
from ansible_collections.zfs.replication.plugins.module_utils._replication_task import TaskError


class InfoModule(AnsibleModule):
    """An AnsibleModule that masks the tasks' secrets like no_log options.

    tasks and task_defaults are free-form dicts, so no option spec can mark their encryption_key no_log. Its values
    join no_log_values as soon as the arguments are read: before a failed validation returns the invocation, before
    the invocation is logged, and for every result and failure message.
    """

    def _load_params(self) -> None:
        super()._load_params()
        self.no_log_values.update(secret_values(self.params.get("tasks"), self.params.get("task_defaults")))


def main() -> None:
    module = InfoModule(
        argument_spec=dict(
            tasks=dict(type="list", elements="dict", required=True),
            task_defaults=dict(type="dict", default={}),
            state_dir=dict(type="path", default="/var/lib/zfs-replication"),
            lag_warning=dict(type="int", default=90000),
            lag_critical=dict(type="int", default=176400),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p["lag_warning"] > p["lag_critical"]:
        module.fail_json(msg=f"lag_warning ({p['lag_warning']}) must not exceed lag_critical ({p['lag_critical']})")
    try:
        tasks = tasks_info(p["tasks"], p["task_defaults"], state_dir=p["state_dir"], lag_warning=p["lag_warning"],
                           lag_critical=p["lag_critical"])
    except TaskError as exc:
        module.fail_json(msg=str(exc), changed=False)
    module.exit_json(changed=False, tasks=tasks, table=status_table(replication_rows(tasks)))


if __name__ == "__main__":
    main()
