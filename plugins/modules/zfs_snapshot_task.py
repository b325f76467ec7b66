#!/usr/bin/python
# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: zfs_snapshot_task
short_description: Take periodic ZFS snapshots by schedule and naming schema, and prune them by lifetime
version_added: 0.1.0
description:
  - Does what a TrueNAS Periodic Snapshot Task does, idempotently, on the host it runs on.
  - Each run takes the snapshot of the current schedule slot (the latest time at or before now that the
    O(schedule) matches), named by O(naming_schema) with the slot's time, unless the dataset already has
    a snapshot of this schema for that slot. A second run in the same slot reports C(changed=false).
    A run outside the schedule's C(begin)/C(end) window takes none.
  - With O(recursive=true) every included dataset is snapshotted atomically in one call
    (C(zfs snapshot -r), or C(zfs snapshot a@x b@x ...) on OpenZFS when some are excluded). Older
    command lines such as zfs-fuse take one name per call; there C(zfs snapshot -r) is followed by the
    destruction of the excluded datasets' new snapshots, so the included ones still form one atomic set (when an
    excluded dataset there already has a snapshot of that name, each included dataset is snapshotted on its own,
    not atomically, and the log says so).
  - Then prunes the snapshots of this O(naming_schema) whose lifetime has passed, judged by the time in
    their names. Never touches manual snapshots or those of other schemas, never held snapshots
    (C(zfs hold)), never those in O(keep_snapshots), and always keeps the newest one per dataset.
  - With O(hold_pending_snapshots=true) (the default) pruning also keeps every snapshot that a push replication task
    fed by this task has not sent to its target yet, and that task's incremental base, as the replication task's runs
    recorded them in O(state_dir). With several replication tasks the slowest target decides. Once the target has
    them, their lifetime applies again.
  - One listing before and one after the run, whatever the number of datasets; destroys are batched
    per dataset on OpenZFS (C(zfs destroy ds@a,b,c)).
author:
  - zfs.replication contributors (@zfs-replication)
extends_documentation_fragment:
  - zfs.replication.task_run
  - zfs.replication.attributes
attributes:
  check_mode:
    support: full
    details: Lists the datasets and returns the plan (snapshots to take and to destroy, with reasons) without changing anything.
  diff_mode:
    support: full
    details: Shows the snapshot lists of the task's datasets before and after (planned, in check mode).
  idempotent:
    support: full
    details: A second run in the same schedule slot, with nothing expired, reports C(changed=false).
options:
  name:
    description:
      - Name of the snapshot task, as declared for the P(zfs.replication.scheduler#role) role. Used in the log lines.
      - It names the task's lock, log and state files C(snap-<name>) in O(state_dir) and O(log_dir), the same files the
        role's timer of the task uses, so a run from a playbook and a timer run never overlap and share one history.
      - When omitted the run takes no lock and records nothing (an ad hoc run of no declared task).
    type: str
  dataset:
    description:
      - The dataset or zvol to snapshot.
    type: str
    required: true
  recursive:
    description:
      - Also snapshot every descendant of O(dataset), atomically with it.
    type: bool
    default: false
  exclude:
    description:
      - Descendants of O(dataset) not to snapshot, each with its own descendants. Needs O(recursive=true).
      - Snapshots of excluded datasets are never pruned by this task.
    type: list
    elements: str
    default: []
  naming_schema:
    description:
      - strftime-style pattern for the snapshot names (the part after C(@)).
      - Must contain C(%Y), C(%m), C(%d), C(%H) and C(%M); may contain C(%S), C(%z) and literal letters,
        digits, spaces, underscores, dots, colons and dashes (what ZFS allows in a name). C(/), C(@) and C(%%) are refused.
      - Pruning only considers snapshots whose names parse under this schema.
    type: str
    default: auto-%Y-%m-%d_%H-%M
  schedule:
    description:
      - When snapshots are due. A preset (V(hourly), V(daily), V(weekly) (Sunday 00:00), V(monthly)) or a
        mapping of cron fields C(minute), C(hour), C(dom), C(month), C(dow) (strings, as in TrueNAS; a
        missing C(minute) is C(0), the others C(*)) with an optional C(begin) and C(end) (C(HH:MM)) window.
      - The snapshot of a slot is named after the slot's time, not the time of the run.
    type: raw
    default: daily
  lifetime_value:
    description:
      - How long this task's snapshots are kept, in O(lifetime_unit)s. At least 1.
    type: int
    default: 2
  lifetime_unit:
    description:
      - The unit of O(lifetime_value). Months and years are calendar months (clamped at month ends).
    type: str
    choices: [hour, day, week, month, year]
    default: week
  other_lifetimes:
    description:
      - Lifetimes of other snapshot tasks that make snapshots with the same O(naming_schema) on these
        datasets. A snapshot is kept as long as the longest lifetime among this task's and these.
      - The C(zfs.replication) role fills this in.
    type: list
    elements: dict
    default: []
    suboptions:
      lifetime_value:
        description: How long, in O(other_lifetimes[].lifetime_unit)s.
        type: int
        required: true
      lifetime_unit:
        description: The unit.
        type: str
        choices: [hour, day, week, month, year]
        required: true
  keep_snapshots:
    description:
      - Full snapshot names (C(dataset@snapshot)) never to prune, such as the incremental bases of
        replications. Held snapshots are kept in any case.
    type: list
    elements: str
    default: []
  allow_empty:
    description:
      - When V(false), a dataset on which nothing was written since its newest snapshot of this schema gets
        no new snapshot.
      - On OpenZFS this reads the C(written) property. Older command lines such as zfs-fuse have no
        C(written); there a change is seen when the dataset's C(referenced) differs from that snapshot's, or
        that snapshot (or a later one) has C(used) above zero. That misses a same-size overwrite of data
        the snapshot shares with an identical older snapshot.
      - Writes of the last seconds (the open ZFS transaction group; up to about 30 seconds on zfs-fuse) are
        not counted yet by either.
    type: bool
    default: true
  take_snapshots:
    description:
      - When V(false), the task takes no snapshot and only prunes the snapshots of its naming schema that outlived
        their lifetime (held ones and the newest of each dataset are kept as always). The scheduler role declares such
        a task on the target of a push with O(zfs.replication.zfs_replication#module:target_access=append_only), whose
        source may not prune there.
    type: bool
    default: true
  timezone:
    description:
      - Time zone of the schedule and of the times written in snapshot names without C(%z), V(UTC) or an
        IANA name such as V(Europe/Berlin). Default is the host's zone.
    type: str
  enabled:
    description:
      - When V(false), the task takes and destroys nothing (the options are still checked).
    type: bool
    default: true
  hold_pending_snapshots:
    description:
      - TrueNAS's "Hold Pending Snapshots". When V(true), pruning never destroys a snapshot that a replication task fed
        by this task still has to send to its target, nor the newest snapshot that target has (the next incremental
        base), even when its lifetime has passed. A target that is down or slow thus never forces a full resend.
      - Which replication tasks it feeds is read from their records in O(state_dir) (C(repl-NAME.json), written by
        every run of a replication task, from the scheduler role's timer, a playbook or C(zfs_replication) with
        C(name)). As TrueNAS matches them, it feeds a push task whose source datasets include a dataset of this task and whose
        naming schemas (or name regex) select this task's snapshots. The record holds, per source dataset, the
        newest snapshot the target has, as the run verified it by guid. A replication task that never completed a
        run holds nothing yet; a removed or disabled one (its config file gone, or C(enabled=false) in it) holds
        nothing. A pull task records on the target host and cannot hold the source's snapshots.
      - Bounded, and seen. A replication task whose oldest pending snapshot waits longer than
        O(pending_lag_critical) is C(critical) in RV(pending), the task's log, state and metrics, and in
        M(zfs.replication.zfs_replication_info)'s status of that replication task.
      - When V(false), only lifetimes decide (and holds, O(keep_snapshots), the newest snapshot per dataset).
      - Unlike TrueNAS, where a replication task's field defaults to off, this is on by default.
    type: bool
    default: true
  pending_lag_critical:
    description:
      - Seconds a snapshot may wait to be sent by a replication task fed by this task before that task is
        C(critical) (see O(hold_pending_snapshots)). The default is 49 hours, as
        M(zfs.replication.zfs_replication_info)'s O(zfs.replication.zfs_replication_info#module:lag_critical).
    type: int
    default: 176400
notes:
  - Runs on the host that holds the datasets; it needs the C(zfs) command there.
seealso:
  - module: zfs.replication.zfs_replication
  - name: TrueNAS periodic snapshot tasks
    description: The feature this module mirrors, field by field.
    link: https://www.truenas.com/docs/scale/scaletutorials/dataprotection/periodicsnapshottasksscale/
"""

EXAMPLES = r"""
- name: Hourly snapshots of tank/data and its children, kept two weeks, no scratch space
  zfs.replication.zfs_snapshot_task:
    dataset: tank/data
    recursive: true
    exclude: [tank/data/scratch]
    naming_schema: auto-%Y-%m-%d_%H-%M
    schedule: hourly
    lifetime_value: 2
    lifetime_unit: week

- name: Every 15 minutes during office hours, only when something changed
  zfs.replication.zfs_snapshot_task:
    dataset: tank/projects
    naming_schema: work-%Y%m%d-%H%M
    schedule:
      minute: "*/15"
      hour: "*"
      dow: "mon-fri"
      begin: "08:00"
      end: "18:00"
    timezone: Europe/Berlin
    allow_empty: false
    lifetime_value: 3
    lifetime_unit: day

- name: The declared task "hourly", sharing its lock, log and state with the task's timer
  zfs.replication.zfs_snapshot_task:
    name: hourly
    dataset: tank/data
    schedule: hourly
    state_dir: /var/lib/zfs-replication
    log_dir: /var/log/zfs-replication
    lock_wait: 600

- name: Show what the task would take and prune
  zfs.replication.zfs_snapshot_task:
    dataset: tank/data
    schedule: daily
    lifetime_value: 1
    lifetime_unit: month
  check_mode: true
  register: snaps

- name: Print the plan
  ansible.builtin.debug:
    var: snaps.plan
"""

RETURN = r"""
task:
  description: A label for the task (its dataset and naming schema).
  returned: always
  type: str
  sample: "tank/data auto-%Y-%m-%d_%H-%M"
dataset:
  description: The task's dataset.
  returned: always
  type: str
  sample: tank/data
naming_schema:
  description: The task's naming schema.
  returned: always
  type: str
  sample: auto-%Y-%m-%d_%H-%M
slot:
  description: The schedule slot of this run (ISO 8601 in the task's time zone); null outside the window or when disabled.
  returned: always
  type: str
  sample: "2026-11-28T10:00:00+00:00"
snapshot_name:
  description: The name (after C(@)) of the slot's snapshot; null when there is no slot.
  returned: always
  type: str
  sample: auto-2026-11-28_10-00
taken:
  description: Snapshots this run created (in check mode, would create).
  returned: always
  type: list
  elements: str
  sample: [tank/data@auto-2026-11-28_10-00, tank/data/vm@auto-2026-11-28_10-00]
destroyed:
  description: Snapshots this run destroyed by lifetime (in check mode, would destroy).
  returned: always
  type: list
  elements: str
  sample: [tank/data@auto-2026-11-14_09-00]
kept:
  description: Snapshots of this naming schema that stay, each with the reason (not expired yet, held, pending replication, newest).
  returned: always
  type: list
  elements: dict
  contains:
    snapshot:
      description: Full snapshot name.
      type: str
    reason:
      description: Why it stays.
      type: str
  sample:
    - snapshot: tank/data@auto-2026-11-28_10-00
      reason: newest snapshot of naming schema 'auto-%Y-%m-%d_%H-%M' on tank/data
pending:
  description:
    - One entry per replication task this task feeds (see O(hold_pending_snapshots)); empty when it feeds none or
      O(hold_pending_snapshots=false).
  returned: always
  type: list
  elements: dict
  contains:
    replication:
      description: The replication task's name.
      type: str
    target:
      description: Where it replicates to (host and dataset).
      type: str
    datasets:
      description: How many of this task's datasets it replicates.
      type: int
    held:
      description: Snapshots kept for it (its incremental bases and its pending snapshots).
      type: int
    pending:
      description: Snapshots it has not sent yet, over all its datasets.
      type: int
    oldest_pending:
      description: Its oldest pending snapshot (full name); null when nothing is pending.
      type: str
    behind:
      description: Seconds since the oldest pending snapshot was taken (by the time in its name); 0 when nothing is pending.
      type: int
    lag_critical:
      description: The O(pending_lag_critical) it is judged by.
      type: int
    health:
      description: V(critical) when RV(pending[].behind) exceeds RV(pending[].lag_critical), else V(ok).
      type: str
    notes:
      description: Records that could not be used (the recorded snapshot is gone from the source).
      type: list
      elements: str
  sample:
    - replication: offsite
      target: "backup.example.net:backup/data"
      datasets: 1
      held: 4
      pending: 3
      oldest_pending: tank/data@auto-2026-11-28_08-00
      behind: 7200
      lag_critical: 176400
      health: ok
      notes: []
skipped_datasets:
  description: Datasets that get no snapshot this run, with the reason (already has the slot's snapshot, nothing written).
  returned: always
  type: list
  elements: dict
  sample:
    - dataset: tank/data/archive
      reason: "nothing written since @auto-2026-11-28_09-00 (written=0); allow_empty is false"
plan:
  description: The plan, also in check mode. C(take) and C(destroy) list C(snapshot) and C(reason); C(skip) lists C(dataset) and C(reason);
    C(keep) is as RV(kept); C(reason) says why nothing is taken at all (outside the window, disabled).
  returned: always
  type: dict
  sample:
    slot: "2026-11-28T10:00:00+00:00"
    snapshot_name: auto-2026-11-28_10-00
    datasets: [tank/data]
    reason: null
    take: [{snapshot: tank/data@auto-2026-11-28_10-00, reason: "slot 2026-11-28T10:00+00:00 has no snapshot yet"}]
    skip: []
    destroy: [{snapshot: tank/data@auto-2026-11-14_09-00, reason: "expired 2026-11-28T09:00+00:00 (lifetime 2 weeks from 2026-11-14T09:00+00:00)"}]
    keep: []
duration:
  description: Seconds the run took.
  returned: always
  type: float
  sample: 0.21
errors:
  description: What failed while taking or destroying snapshots.
  returned: always
  type: list
  elements: str
log:
  description: The run's log lines (plan and zfs commands).
  returned: always
  type: list
  elements: str
lock_file:
  description: The task's lock file, when the module failed because another run of the task still held it after O(lock_wait).
  returned: when another run holds the task's lock
  type: str
  sample: /var/lib/zfs-replication/repl-offsite.lock
lock_holder:
  description: The pid of the process that held the task's lock (null when it had not written its pid yet).
  returned: when another run holds the task's lock
  type: int
  sample: 4242
capabilities:
  description: What the host's zfs command line supports, from the probe.
  returned: always
  type: dict
  sample: {family: OpenZFS 2.3.2, version: 2.3.2, list_parsable: true}
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zfs.replication.plugins.module_utils._log import LOGGING_LEVEL_SPEC
from ansible_collections.zfs.replication.plugins.module_utils._results import snapshot_diff
from ansible_collections.zfs.replication.plugins.module_utils._runner import TASK_RUN_SPEC, ConfigError, TaskBusy, run_from_module
from ansible_collections.zfs.replication.plugins.module_utils._snapshot_task import SnapshotTask, TaskError, run_snapshot_task

UNITS = ["hour", "day", "week", "month", "year"]


def run_declared_task(module: AnsibleModule, name: str):
    """Run the task with the same lock, log, state file and metrics as its timer; fail the module when it did not run."""
    try:
        run = run_from_module("snapshot", name, module.params, module.check_mode)
    except TaskBusy as exc:
        module.fail_json(msg=f"snapshot task {name}: {exc}; nothing was changed: run it again when that run has finished, "
                             "or give a longer lock_wait", changed=False, lock_file=str(exc.lock_file), lock_holder=exc.holder)
    except ConfigError as exc:
        module.fail_json(msg=str(exc), changed=False)
    if run.result is None:  # the engine raised: bad input, a signal, a bug (the task's log has the traceback)
        error = run.error
        message = run.state.get("error") or str(error)
        if error is None or isinstance(error, TaskError):
            module.fail_json(msg=message, changed=False)
        module.fail_json(msg=message, changed=False, exception="".join(traceback.format_exception(type(error), error, error.__traceback__)))
    return run.result


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str"),
            dataset=dict(type="str", required=True),
            recursive=dict(type="bool", default=False),
            exclude=dict(type="list", elements="str", default=[]),
            naming_schema=dict(type="str", default="auto-%Y-%m-%d_%H-%M"),
            schedule=dict(type="raw", default="daily"),
            lifetime_value=dict(type="int", default=2),
            lifetime_unit=dict(type="str", default="week", choices=UNITS),
            other_lifetimes=dict(
                type="list",
                elements="dict",
                default=[],
                options=dict(
                    lifetime_value=dict(type="int", required=True),
                    lifetime_unit=dict(type="str", required=True, choices=UNITS),
                ),
            ),
            keep_snapshots=dict(type="list", elements="str", default=[]),
            allow_empty=dict(type="bool", default=True),
            take_snapshots=dict(type="bool", default=True),
            timezone=dict(type="str"),
            enabled=dict(type="bool", default=True),
            logging_level=LOGGING_LEVEL_SPEC,
            hold_pending_snapshots=dict(type="bool", default=True),
            pending_lag_critical=dict(type="int", default=176400),
            **TASK_RUN_SPEC,
        ),
        supports_check_mode=True,
    )
    name = module.params["name"]
    engine_params = {k: v for k, v in module.params.items() if k not in TASK_RUN_SPEC and k != "logging_level"}
    if name is None:  # no declared task: nothing to lock or record
        try:
            result = run_snapshot_task({**engine_params, "state_dir": module.params["state_dir"]}, check_mode=module.check_mode)
        except TaskError as exc:
            module.fail_json(msg=str(exc), changed=False)
    else:
        try:
            SnapshotTask.from_params(engine_params)  # bad input fails here, before the task's lock or history is touched
        except TaskError as exc:
            module.fail_json(msg=str(exc), changed=False)
        result = run_declared_task(module, name)
    out = result.as_dict()
    if module._diff:
        out["diff"] = snapshot_diff(result.before, result.after, "snapshots")
    if result.failed:
        module.fail_json(msg="; ".join(result.errors), **out)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
