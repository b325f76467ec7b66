# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Receives an earlier run left interrupted (a ``receive_resume_token`` on a target dataset, OpenZFS): each is
resumed from its token before the run plans, or, when its snapshot is gone from the source (a stale token), aborted
with ``zfs recv -A`` so that it never wedges the dataset; the run then plans on the target as it is after that."""
from __future__ import annotations

from ._executor import PipelineError
from ._planner import Send, target_root
from ._replication_task import ReplicationTask, TaskError
from ._results import DatasetResult
from ._transfer import Transfer
from ._zfs import Listing, is_within

STALE_HINTS = ("no longer exists", "does not exist", "cannot resume", "kernel modules must be upgraded", "toguid")


def source_for(task: ReplicationTask, target: str) -> str | None:
    """The source dataset a target dataset replicates, or None when it is not one of the task's."""
    for root in task.source_datasets:
        troot = target_root(task.source_datasets, task.target_dataset, root)
        if is_within(target, troot):
            return root + target[len(troot):]
    return None


def resume_interrupted(transfer: Transfer, listing: Listing, check_mode: bool) -> tuple[bool, set[str]]:
    """Finish the receives of ``listing`` (the target) that left a resume token, or abort stale ones. Returns whether
    the target changed, and the targets resumed."""
    touched = False
    resumed: set[str] = set()
    log = transfer.log
    for ds in listing.datasets.values():
        token = ds.props.get("receive_resume_token", "-")
        if token in ("-", ""):
            continue
        source = source_for(transfer.task, ds.name)
        if check_mode:
            log(f"{ds.name} has a resume token: the run would resume it")
            transfer.first_fulls.note_resume(ds.name)
            continue
        send = Send(source or "", ds.name, "resume", "", token=token)
        log(f"resume {ds.name} from its receive_resume_token")
        stale = source is None
        if not stale:
            try:
                out = transfer.send_with_retries(send, DatasetResult(source or "", ds.name, "resume", None))
                log(f"resumed {ds.name}: {out.bytes if out.bytes is not None else '?'} bytes in {out.duration:.2f}s")
                resumed.add(ds.name)
                touched = True
                continue
            except PipelineError as exc:
                text = str(exc)
                stale = any(h in text for h in STALE_HINTS)
                if not stale:
                    raise TaskError(f"resuming the interrupted receive of {ds.name} failed: {text}") from exc
        log(f"the resume token of {ds.name} is stale (its snapshot is gone): zfs recv -A, then replan")
        transfer.streams.dst.run(["zfs", "recv", "-A", ds.name])
        touched = True
    return touched, resumed
