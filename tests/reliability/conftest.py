# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The reliability and security tier (tests/reliability, marker `reliability`; issue 8).

Faults real fleets see, on real parts: zfs-fuse pools, the sandbox sshd, the engine in its own process
(killed with SIGKILL, its connection cut), the timer entry point with its lock, hostile names and properties.

Every test belongs to a fault class (`@pytest.mark.fault_class("...")`). At the end the tier prints one line per
backend and class, from what the cases recorded in faultlib.EVIDENCE, not from their names:

- cases: run (a strict xfail counts as a known engine bug, not as passed);
- fault: cases that saw their fault happen (`faultlib.fault_injected`: the process killed, the connection cut at
  the intended offset, the hand change made). A case that expected a fault and did not see it fails with
  FaultNotInjected and counts under "not injected". Pure logic and property cases inject nothing and say so;
- kept: cases that compared both sides' snapshots (children included) or files before and after the fault
  (`expect_kept`, `expect_files_kept`); replica: cases that compared the replica with its source, guids and file
  checksums snapshot to snapshot (`expect_replica`);
- lost: cases that failed with faultlib.DataLost (a snapshot gone, a guid or a checksum that differs);
- failed: every failure, data lost or not.

The backend is the ZFS the case ran on: "zfs-fuse" here; a run of the fault suite against the OpenZFS guest sets
ZR_FAULT_BACKEND=openzfs and gets its own lines.
"""
from __future__ import annotations

import os
import sys
from collections import defaultdict
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import faultlib  # noqa: E402  (needs HERE on sys.path)

COLUMNS = ("run", "fault", "kept", "replica", "lost", "not injected", "failed", "passed", "known")
_RESULTS: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(COLUMNS, 0))
_CLASS_OF: dict[str, str] = {}


def backend() -> str:
    return os.environ.get("ZR_FAULT_BACKEND", "zfs-fuse")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "reliability: fault injection and hostile input on real parts (tests/reliability)")
    config.addinivalue_line("markers", "fault_class(name): the fault class a reliability case counts under in the summary")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.path)).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.reliability)
            mark = item.get_closest_marker("fault_class")
            _CLASS_OF[item.nodeid] = mark.args[0] if mark else "other"


@pytest.fixture(autouse=True)
def _evidence_of_this_case(request: pytest.FixtureRequest):
    faultlib.CURRENT["nodeid"] = request.node.nodeid
    faultlib.EVIDENCE.pop(request.node.nodeid, None)
    yield
    faultlib.CURRENT["nodeid"] = None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is not None:
        report.zr_data_lost = call.excinfo.errisinstance(faultlib.DataLost)
        report.zr_not_injected = call.excinfo.errisinstance(faultlib.FaultNotInjected)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    cls = _CLASS_OF.get(report.nodeid)
    if cls is None:
        return
    counts = _RESULTS[(backend(), cls)]
    if report.when == "call" or (report.when == "setup" and not report.passed):
        if report.skipped and not hasattr(report, "wasxfail"):
            return
        counts["run"] += 1
        seen = faultlib.EVIDENCE.get(report.nodeid, {})
        counts["fault"] += bool(seen.get("faults"))
        counts["kept"] += bool(seen.get("kept"))
        counts["replica"] += bool(seen.get("replica"))
        if hasattr(report, "wasxfail"):
            counts["known"] += 1  # a reported engine bug, kept as a strict xfail until it is fixed
        elif report.passed:
            counts["passed"] += 1
        else:
            counts["failed"] += 1
            counts["lost"] += bool(getattr(report, "zr_data_lost", False))
            counts["not injected"] += bool(getattr(report, "zr_not_injected", False))


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not _RESULTS:
        return
    terminalreporter.section("reliability: per backend and fault class")
    labels = {"run": "cases", "known": "xfail"}
    width = {k: max(len(labels.get(k, k)), 3) + 2 for k in COLUMNS}
    terminalreporter.write_line(f"{'backend':<9} {'fault class':<40}" + "".join(f"{labels.get(k, k):>{width[k]}}" for k in COLUMNS))
    totals: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COLUMNS, 0))
    for (be, cls) in sorted(_RESULTS):
        c = _RESULTS[(be, cls)]
        for k in COLUMNS:
            totals[be][k] += c[k]
        terminalreporter.write_line(f"{be:<9} {cls:<40}" + "".join(f"{c[k]:>{width[k]}}" for k in COLUMNS))
    for be, c in sorted(totals.items()):
        terminalreporter.write_line(f"{be:<9} {'all fault classes':<40}" + "".join(f"{c[k]:>{width[k]}}" for k in COLUMNS))
    terminalreporter.write_line("fault: saw its fault happen; kept: compared both sides before/after it (children too); replica: compared "
                                "guids and file checksums snapshot to snapshot; lost: failed with DataLost; not injected: failed "
                                "because its fault did not happen; xfail: known engine bugs")
