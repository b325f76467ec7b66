# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pipeline runner with real processes (no ZFS needed)."""
from __future__ import annotations

import os
import subprocess
import time

import pytest

from ansible_collections.zfs.replication.plugins.module_utils import _executor
from ansible_collections.zfs.replication.plugins.module_utils._executor import PipelineError, Stage, exited_by, run_pipeline
from ansible_collections.zfs.replication.plugins.module_utils._transport import LocalHost

L = LocalHost()


def sh(script: str, name: str) -> Stage:
    return Stage(L, ["sh", "-c", script], name)


def test_data_flows_and_all_stages_succeed(tmp_path):
    out = tmp_path / "out"
    res = run_pipeline([sh("head -c 300000 /dev/zero", "send"), sh(f"cat > {out}", "recv")])
    assert out.stat().st_size == 300000
    assert [s.rc for s in res.stages] == [0, 0]


def test_pv_counts_bytes(tmp_path):
    res = run_pipeline(
        [sh("head -c 123457 /dev/urandom", "send"), Stage(L, ["pv", "-n", "-b", "-f"], "pv"), sh("cat >/dev/null", "recv")],
        counter_index=1,
    )
    assert res.bytes == 123457


def test_failing_receiver_is_the_culprit_not_the_broken_pipe_sender():
    with pytest.raises(PipelineError) as exc:
        run_pipeline([sh("yes data", "zfs send"), sh("head -c 10 >/dev/null; echo 'destination has been modified' >&2; exit 1", "zfs recv")])
    msg = str(exc.value)
    assert msg.startswith("zfs recv on local failed (exit 1): destination has been modified")
    assert exc.value.stages[0].broken_pipe


def test_failing_sender_is_the_culprit_even_when_receiver_complains():
    with pytest.raises(PipelineError) as exc:
        run_pipeline([
            sh("echo partial; echo 'cannot send: I/O error' >&2; exit 2", "zfs send"),
            sh("cat >/dev/null; echo 'failed to read from stream' >&2; exit 1", "zfs recv"),
        ])
    assert str(exc.value).startswith("zfs send on local failed (exit 2): cannot send: I/O error")
    assert "then zfs recv exit 1" in str(exc.value)


def test_missing_program_is_reported():
    with pytest.raises(PipelineError, match="cannot start recv"):
        run_pipeline([sh("true", "send"), Stage(L, ["/nonexistent/zfs"], "recv")])


def no_pidfd(pid):
    raise OSError(38, "Function not implemented")  # ENOSYS: a kernel or sandbox without pidfd_open


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "polling"])
def test_exited_by_reaps_an_ended_process_and_leaves_a_running_one(monkeypatch, pidfd):
    if not pidfd:
        monkeypatch.setattr(_executor.os, "pidfd_open", no_pidfd, raising=False)
    else:
        assert hasattr(os, "pidfd_open")  # Linux, Python >= 3.9: the path every run takes there
    quick = subprocess.Popen(["sh", "-c", "exit 3"])
    assert exited_by(quick, time.monotonic() + 60)
    assert quick.returncode == 3  # reaped: its exit status is known
    slow = subprocess.Popen(["sleep", "30"])
    try:
        assert not exited_by(slow, time.monotonic() + 0.2)  # the deadline came first
        assert slow.poll() is None  # still running, not reaped
    finally:
        slow.kill()
        slow.wait()
    assert exited_by(slow, time.monotonic())  # already reaped: at once
