# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""restrict_schedule on real zfs-fuse pools: the timer's run (the runner, with the config the role writes) started outside
the window sends nothing and records that it waits and until when; started inside, it replicates what waited. The
runner's clock is injected (a fixed time outside, then inside the window); the engine and ZFS are real."""
from __future__ import annotations

import io
import json
import secrets
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ansible_collections.zfs.replication.plugins.module_utils._runner import RunOptions, TaskConfig, run_task
from helpers import destroy_retrying, snapshots_with_guids, zfs

pytestmark = pytest.mark.integration

NIGHT = {"minute": "0", "hour": "*", "begin": "22:00", "end": "06:00"}


def test_outside_the_window_nothing_is_sent_inside_it_is(sandbox, tmp_path):
    tag = secrets.token_hex(3)
    src, dst_parent = f"{sandbox.src_pool}/rw{tag}", f"{sandbox.dst_pool}/rw{tag}"
    zfs("create", src)
    zfs("create", f"{src}/child")
    zfs("create", dst_parent)
    try:
        name = f"night{tag}"
        config = tmp_path / f"repl-{name}.json"
        config.write_text(json.dumps({"kind": "replication", "name": name, "timezone": "UTC", "params": {
            "name": name, "source_datasets": [src], "target_dataset": f"{dst_parent}/data", "transport": "local",
            "recursive": True, "naming_schema": ["auto-%Y-%m-%d_%H-%M"], "hold_base": False, "restrict_schedule": NIGHT}}))
        opts = RunOptions(state_dir=str(tmp_path / "state"), log_dir=str(tmp_path / "log"), metrics_dir=str(tmp_path / "metrics"))
        zfs("snapshot", "-r", f"{src}@auto-2026-12-04_12-00")  # what the snapshot task took at noon

        out = io.StringIO()
        noon = datetime(2026, 12, 4, 12, 0, 30, tzinfo=timezone.utc)  # the snapshot task's run just finished
        assert run_task(TaskConfig.load(config), opts, stream=out, clock=lambda: noon) == 0, out.getvalue()
        assert zfs("list", "-H", "-o", "name", "-r", dst_parent).split() == [dst_parent]  # nothing received
        state = json.loads(Path(opts.state_dir, f"repl-{name}.json").read_text())
        why = "outside restrict_schedule window 22:00-06:00 (UTC); next window starts at 2026-12-04T22:00+00:00"
        assert (state["result"], state["reason"], state["next_window"]) == ("waiting", why, "2026-12-04T22:00:00+00:00")
        assert state["error"] is None and state["last_success"] is None and "running" not in state
        log = Path(opts.log_dir, f"repl-{name}.log").read_text().splitlines()
        assert [line.split(": ", 1)[1] for line in log] == [f"replication task {name}: start", f"replication task {name}: waiting: {why}"]
        metrics = Path(opts.metrics_dir, f"zfs_replication_repl_night{tag}.prom").read_text()
        assert f'zfs_replication_last_run_result{{task="{name}",kind="replication",result="waiting"}} 1' in metrics

        # The window's start (the timer's OnCalendar= for 22:00): what waited goes over, both datasets.
        out = io.StringIO()
        start = datetime(2026, 12, 4, 22, 0, 0, tzinfo=timezone.utc)
        assert run_task(TaskConfig.load(config), opts, stream=out, clock=lambda: start) == 0, out.getvalue()
        assert snapshots_with_guids(f"{dst_parent}/data") == snapshots_with_guids(src)
        assert set(snapshots_with_guids(src)) == {"@auto-2026-12-04_12-00", "/child@auto-2026-12-04_12-00"}
        state = json.loads(Path(opts.state_dir, f"repl-{name}.json").read_text())
        assert (state["result"], state["snapshots_sent"], state["reason"]) == ("ok", 2, None) and "next_window" not in state
    finally:
        for ds in (src, dst_parent):
            destroy_retrying(ds)
