# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations


class ModuleDocFragment:
    # The task's lock, log, state and metrics, shared with the scheduler role's timers (module_utils/_runner.py).
    DOCUMENTATION = r"""
options:
  state_dir:
    description:
      - Directory of the task's lock file C(ID.lock) and state file C(ID.json), where C(ID) is C(repl-NAME) or
        C(snap-NAME). The same as the P(zfs.replication.scheduler#role) role's C(scheduler_state_dir), so a run
        from a playbook and a run of the task's timer take the same lock and record the same history.
      - A run holds the lock from start to end; it records the run in the state file (result, error, snapshots
        sent, bytes, duration, last success), atomically. Check mode takes no lock and writes nothing.
    type: path
    default: /var/lib/zfs-replication
  log_dir:
    description:
      - Directory of the task's log file C(ID.log) (rotated by size), the role's C(scheduler_log_dir). Every run
        appends its lines there, whoever starts it. Check mode writes no log file.
    type: path
    default: /var/log/zfs-replication
  metrics_dir:
    description:
      - Write Prometheus textfile metrics of the run into this directory (node_exporter's textfile collector),
        the role's C(scheduler_metrics_dir). Omitted, no metrics are written.
      - A replication task's C(zfs_replication_lag_seconds) is the lag M(zfs.replication.zfs_replication_info) reports
        (from the creation of the newest snapshot on the target), counted up to the end of the run.
    type: path
  logging_level:
    description:
      - TrueNAS's "Logging Level" for this task's log file (O(log_dir)) and the journal, in module and timer runs alike.
      - V(default) is V(info). V(debug) also logs every command the engine runs (the local command line, ssh included,
        with secret-looking C(name=value) arguments redacted), each command's exit status and duration, and each
        stream pipeline's stages and duration. V(warning) and V(error) keep only those lines (a failed run logs its errors).
    type: str
    choices: [default, debug, info, warning, error]
    default: default
  lock_wait:
    description:
      - Seconds to wait when another run of the same task (its timer, C(run_now.yml), another playbook) holds
        the task's lock. When it still holds it after that, the module fails naming the lock file and the pid
        holding it, and changes nothing.
      - The timers themselves do not wait (C(zfs-replication-run --lock-wait 0) by default); a timer run that
        finds the lock held skips, exits 0 and logs why.
    type: float
    default: 600
"""
