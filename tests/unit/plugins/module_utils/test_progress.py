# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Live progress: pv's running count read while real pipelines run (pv rate-limited, so the stream lasts), the
progress lines, the records the runner's sink gets, the state file's running.transfers and the metrics' gauges."""
from __future__ import annotations

import io
import json
import os
import tempfile
import threading
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from ansible_collections.zfs.replication.plugins.module_utils import _progress as progress
from ansible_collections.zfs.replication.plugins.module_utils import _status_cli as status_cli
from ansible_collections.zfs.replication.plugins.module_utils._executor import Stage, Watch, counter_bytes, run_pipeline
from ansible_collections.zfs.replication.plugins.module_utils._info import last_run, replication_rows
from ansible_collections.zfs.replication.plugins.module_utils._runner import (
    RunOptions,
    TaskConfig,
    execute_task,
    render_metrics,
    state_path,
    write_state,
)
from ansible_collections.zfs.replication.plugins.module_utils._transport import LocalHost

L = LocalHost()


def written(text: bytes):
    f = tempfile.TemporaryFile()  # noqa: SIM115
    f.write(text)
    f.flush()
    return f


def test_counter_bytes_reads_the_last_whole_number_of_the_tail():
    assert counter_bytes(written(b"")) is None
    assert counter_bytes(written(b"1024\n")) == 1024
    assert counter_bytes(written(b"1024\n20480\n3072")) == 20480  # pv is still writing the last line
    assert counter_bytes(written(b"1024\nssh: warning\n")) == 1024  # other stderr lines of a remote pipeline
    long = b"".join(f"{n}\n".encode() for n in range(0, 10_000_000, 997))
    assert counter_bytes(written(long)) == max(range(0, 10_000_000, 997))  # a long count: its last number
    f = written(b"5\n6\n")
    f.seek(1)
    counter_bytes(f)
    assert f.tell() == 1  # the offset _collect reads from stays where it was


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "polling"])
def test_a_running_pipeline_reports_its_growing_count_and_the_total_is_the_same(monkeypatch, pidfd):
    if not pidfd:  # where there is no os.pidfd_open (not Linux) the watch waits by polling
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    counts: list[int] = []
    size = 600_000
    stages = [Stage(L, ["head", "-c", str(size), "/dev/zero"], "send"),
              Stage(L, ["pv", "-n", "-b", "-f", "-i", "0.2", "-L", "400000"], "pv"),
              Stage(L, ["sh", "-c", "cat >/dev/null"], "recv")]
    out = run_pipeline(stages, counter_index=1, watch=Watch(0.3, counts.append))
    assert out.bytes == size
    assert [s.rc for s in out.stages] == [0, 0, 0]
    assert len(counts) >= 2, counts  # ~1.5 s at 400 kB/s, a look every 0.3 s
    assert counts == sorted(counts) and 0 < counts[0] < size, counts


def test_progress_lines_and_records():
    lines: list[str] = []
    records: list[dict] = []
    clock = iter([0.0, 10.0, 20.0]).__next__
    with progress.reporting_to(records.append):
        p = progress.StreamProgress("tank/b/data", "auto-1", 4 * 1024**3, lines.append, clock=clock)
        p(1024**3)
        p.end()
    p(2 * 1024**3)  # no sink any more: a line, no record
    assert lines[0] == "  progress tank/b/data@auto-1: 1.0 GiB of 4.0 GiB (25%), 102.4 MiB/s, ETA 30s"
    assert lines[1] == "  progress tank/b/data@auto-1: 2.0 GiB of 4.0 GiB (50%), 102.4 MiB/s, ETA 20s"
    assert records[0]["bytes"] == 1024**3 and records[0]["percent"] == 25.0 and records[0]["eta_seconds"] == 30
    assert records[0]["rate"] == round(1024**3 / 10) and records[0]["expected_bytes"] == 4 * 1024**3
    assert records[1] == {"dataset": "tank/b/data", "snapshot": "auto-1", "ended": True}
    assert len(records) == 2

    unknown: list[str] = []
    q = progress.StreamProgress("t/x", "s", None, unknown.append, clock=iter([0.0, 5.0]).__next__)
    q(5 * 1024**2)
    assert unknown == ["  progress t/x@s: 5.0 MiB (size unknown), 1.0 MiB/s"]


def test_the_runner_keeps_running_transfers_in_the_state_file_and_metrics(tmp_path):
    """A run through execute_task (the timer's and the modules' path) whose engine streams: while it runs the state
    file's running.transfers and the metrics show the stream; after it, both are gone."""
    seen: list[tuple[dict, str]] = []
    config = TaskConfig.from_dict({"name": "live", "kind": "replication", "params": {"name": "live"}})
    opts = RunOptions(state_dir=tmp_path / "state", log_dir=tmp_path / "log", metrics_dir=str(tmp_path / "metrics"))
    spath = state_path(opts.state_dir, config.task_id)
    metrics = tmp_path / "metrics"

    def look() -> None:
        prom = "".join(p.read_text() for p in metrics.glob("*.prom"))
        seen.append((json.loads(spath.read_text()), prom))

    def engine(params, check_mode, log):
        p = progress.StreamProgress("zrb/live/data", "auto-1", 1000, log)
        p(250)
        look()
        p(500)
        look()
        p.end()
        look()
        return SimpleNamespace(errors=[], failed=False, changed=True)

    run = execute_task(config, opts, engines={"replication": engine})
    assert run.status == 0, run.state
    (first, prom1), (second, prom2), (after, prom3) = seen
    assert [t["bytes"] for t in first["running"]["transfers"]] == [250]
    assert [t["bytes"] for t in second["running"]["transfers"]] == [500]
    assert second["running"]["transfers"][0]["percent"] == 50.0 and second["running"]["pid"] > 0
    assert after["running"]["transfers"] == []
    assert 'zfs_replication_transfer_bytes{task="live",kind="replication",dataset="zrb/live/data"} 250' in prom1
    assert 'zfs_replication_transfer_bytes{task="live",kind="replication",dataset="zrb/live/data"} 500' in prom2
    assert 'zfs_replication_transfer_expected_bytes{task="live",kind="replication",dataset="zrb/live/data"} 1000' in prom2
    assert 'zfs_replication_running{task="live",kind="replication"} 1' in prom2
    assert "zfs_replication_transfer_bytes" not in prom3
    final = json.loads(spath.read_text())
    assert "running" not in final and final["result"] == "ok"
    assert 'zfs_replication_running{task="live",kind="replication"} 0' in "".join(p.read_text() for p in metrics.glob("*.prom"))
    log_text = "".join(p.read_text() for p in (tmp_path / "log").iterdir())
    assert "progress zrb/live/data@auto-1: 500 B of 1000 B (50%)" in log_text


def test_metrics_group_each_family_with_two_transfers():
    state = {"task": "t", "kind": "replication", "running": {"transfers": [
        {"dataset": "a", "bytes": 1, "expected_bytes": 10}, {"dataset": "b", "bytes": 2, "expected_bytes": None}]}}
    lines = [ln for ln in render_metrics(state, datetime.now(timezone.utc)).splitlines() if "transfer" in ln and not ln.startswith("#")]
    assert lines == ['zfs_replication_transfer_bytes{task="t",kind="replication",dataset="a"} 1',
                     'zfs_replication_transfer_bytes{task="t",kind="replication",dataset="b"} 2',
                     'zfs_replication_transfer_expected_bytes{task="t",kind="replication",dataset="a"} 10']


def test_sinks_are_per_block_and_thread_safe():
    got: list[dict] = []
    with progress.reporting_to(got.append):
        threads = [threading.Thread(target=progress.report, args=({"dataset": str(i)},)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    progress.report({"dataset": "late"})  # after the block: nobody hears it
    assert sorted(int(r["dataset"]) for r in got) == list(range(20))


def test_the_info_module_and_the_status_table_show_a_running_transfer(tmp_path):
    """zfs_replication_info's last_run reads the transfers the runner wrote; the status table's NOTE shows them."""
    record = {"dataset": "zrb/live/data", "snapshot": "auto-1", "bytes": 3 * 1024**3, "expected_bytes": 4 * 1024**3,
              "percent": 75.0, "rate": 50 * 1024**2, "eta_seconds": 1300, "started": "2026-12-03T10:00:00+00:00", "seconds": 61.5}
    running = {"since": "2026-12-03T10:00:00+00:00", "pid": 1, "transfers": [record]}
    write_state(state_path(tmp_path, "repl-live"), {"result": "ok", "running": running})
    last = last_run(str(tmp_path), "live")
    assert last["running"] is True and last["transfers"] == [record]
    task = {"name": "live", "health": "warning", "lag": 7200, "pending": 3, "reasons": ["pending 3"], "last_run": last}
    assert replication_rows([task])[0]["reason"] == "running: zrb/live/data@auto-1 3.0 GiB of 4.0 GiB (75%), ETA 21m40s"
    write_state(state_path(tmp_path, "repl-live"), {"result": "ok"})
    idle = last_run(str(tmp_path), "live")
    assert idle["running"] is False and idle["transfers"] == []
    assert replication_rows([{**task, "last_run": idle}])[0]["reason"] == "pending 3"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_status_command_prints_tasks_lag_and_live_progress(tmp_path):
    now = datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc)
    record = {"dataset": "zrb/live/data", "snapshot": "auto-1", "bytes": 3 * 1024**3, "expected_bytes": 4 * 1024**3,
              "percent": 75.0, "rate": 50 * 1024**2, "eta_seconds": 100, "started": "2026-12-03T11:00:00+00:00", "seconds": 61.5}
    write_state(state_path(tmp_path, "repl-live"), {"task": "live", "kind": "replication", "result": "ok",
                                                    "last_end": "2026-12-03T10:00:05+00:00", "newest_replicated": "2026-12-03T10:00:00+00:00",
                                                    "running": {"since": "2026-12-03T11:00:00+00:00", "pid": os.getpid(), "transfers": [record]}})
    write_state(state_path(tmp_path, "snap-hourly"), {"task": "hourly", "kind": "snapshot", "result": "failed",
                                                      "last_end": "2026-12-03T11:00:01+00:00"})
    write_state(state_path(tmp_path, "repl-dead"), {"task": "dead", "kind": "replication", "result": "ok",
                                                    "running": {"since": "2026-12-03T09:00:00+00:00", "pid": 2**22 + 12345}})
    out = io.StringIO()
    assert status_cli.main(["--state-dir", str(tmp_path)], out=out, clock=lambda: now) == 0
    assert out.getvalue().splitlines() == [
        "TASK    KIND         LAST    LAST RUN (UTC)             LAG    NOW",
        "dead    replication  ok      -                          -      stale run (pid 4206649 is gone)",
        "live    replication  ok      2026-12-03T10:00:05+00:00  2h00m  running since 2026-12-03T11:00:00+00:00",
        "    zrb/live/data@auto-1: 3.0 GiB of 4.0 GiB (75%), 50.0 MiB/s, ETA 1m40s",
        "hourly  snapshot     failed  2026-12-03T11:00:01+00:00  -      -",
    ]
    js = io.StringIO()
    assert status_cli.main(["--state-dir", str(tmp_path), "--json"], out=js, clock=lambda: now) == 0
    doc = json.loads(js.getvalue())
    live = next(t for t in doc["tasks"] if t["task"] == "live")
    assert live["lag"] == 7200 and live["running"]["transfers"] == [record] and live["running"]["stale"] is False

    # --watch: plain blocks with a time line when the output is a file or a pipe, redrawn in place on a terminal.
    plain, sleeps = io.StringIO(), []
    assert status_cli.main(["--state-dir", str(tmp_path), "--watch", "2"], out=plain, clock=lambda: now, sleep=sleeps.append, cycles=2) == 0
    assert plain.getvalue().count("-- 2026-12-03T12:00:00+00:00\n") == 2 and sleeps == [2.0] and "\033[" not in plain.getvalue()
    tty = Tty()
    assert status_cli.main(["--state-dir", str(tmp_path), "--watch"], out=tty, clock=lambda: now, sleep=lambda s: None, cycles=2) == 0
    assert tty.getvalue().count("\033[H\033[J") == 2


def test_the_status_command_names_a_missing_state_dir(tmp_path, capsys):
    assert status_cli.main(["--state-dir", str(tmp_path / "nope")], out=io.StringIO()) == 2
    assert "no such directory" in capsys.readouterr().err


def test_the_size_is_asked_for_only_when_a_stream_outlasts_its_first_interval():
    """A callable expected size (the engine's Estimate, which costs a zfs call) is asked once, at the first progress
    line: a stream that ends within the interval never asks; a longer one asks once and its lines carry percent."""
    def stream(size: int, limit: int, every: float) -> tuple[int, list[str]]:
        asked: list[int] = []
        lines: list[str] = []

        def ask() -> int:
            asked.append(1)
            return size
        p = progress.StreamProgress("t/x", "s", ask, lines.append)
        stages = [Stage(L, ["head", "-c", str(size), "/dev/zero"], "send"),
                  Stage(L, ["pv", "-n", "-b", "-f", "-i", "0.2", "-L", str(limit)], "pv"),
                  Stage(L, ["sh", "-c", "cat >/dev/null"], "recv")]
        assert run_pipeline(stages, 1, Watch(every, p)).bytes == size
        return len(asked), lines

    asked, lines = stream(10_000, 10_000_000, 5.0)  # a few milliseconds: over before the first line
    assert (asked, lines) == (0, [])
    asked, lines = stream(600_000, 400_000, 0.3)  # ~1.5 s: lines every 0.3 s
    assert asked == 1 and len(lines) >= 2, lines
    assert all(" of 585.9 KiB (" in line for line in lines), lines
