# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fault table: per backend and fault class, what the fault cases really did (a pytest plugin, registered by
tests/conftest.py, so the reliability tier on zfs-fuse and the fault scenarios on both backends share one table).

A fault case carries `@pytest.mark.fault_class("...")` (every case of tests/reliability counts too, as "other" when
it names no class). While it runs it records evidence here, never its name:

- fault_injected(what, happened): its fault happened (the process killed, the connection cut at the intended offset,
  the hand change made), else FaultNotInjected and the case fails: it would prove nothing;
- record_kept(dataset): it compared a side's snapshots (children included) or files before and after the fault;
- record_replica(target): it compared the replica with its source, guids and file checksums snapshot to snapshot;
- DataLost: raised by those checks when a snapshot is gone or a guid or a checksum differs.

At the end one line per backend and class: cases run, fault seen, kept and replica checks, lost, not injected,
failed, passed, xfail (known engine bugs), and a total per backend. The backend is the item's `backend_name`
parameter (tests/scenarios), else ZR_FAULT_BACKEND, else the sandbox's ZFS (tests/reliability runs there): openzfs on
a host that runs OpenZFS, zfs-fuse elsewhere.
"""
from __future__ import annotations

import functools
import os
from collections import defaultdict
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
RELIABILITY_DIR = TESTS_DIR / "reliability"
COLUMNS = ("run", "fault", "kept", "replica", "lost", "not injected", "failed", "passed", "known")
LABELS = {"run": "cases", "known": "xfail"}


class DataLost(AssertionError):
    """A snapshot vanished from a side, or a replica differs from its source after recovery."""


class FaultNotInjected(AssertionError):
    """The case's fault did not happen as intended (the run ended first, the cut fell elsewhere): the case proves nothing."""


# What the running case did, keyed by its pytest node id: the faults it saw happen and the data checks it ran.
CURRENT: dict[str, str | None] = {"nodeid": None}
EVIDENCE: dict[str, dict[str, list[str]]] = {}


def _evidence() -> dict[str, list[str]]:
    return EVIDENCE.setdefault(CURRENT["nodeid"] or "?", {"faults": [], "kept": [], "replica": []})


def fault_injected(what: str, happened: bool, detail: str = "") -> None:
    """Assert that the case's fault happened (else FaultNotInjected) and count it for the summary."""
    if not happened:
        raise FaultNotInjected(f"the fault was not injected: {what}. {detail}".strip())
    _evidence()["faults"].append(what)


def record_kept(dataset: str) -> None:
    """The case compared DATASET before and after its fault (call it before raising DataLost)."""
    _evidence()["kept"].append(dataset)


def record_replica(target: str) -> None:
    """The case compared the replica TARGET with its source, guids and checksums (only once they matched)."""
    _evidence()["replica"].append(target)


def fault_class(item: pytest.Item) -> str | None:
    mark = item.get_closest_marker("fault_class")
    if mark is not None:
        return str(mark.args[0])
    if Path(str(item.path)).resolve().is_relative_to(RELIABILITY_DIR):
        return "other"
    return None


def backend_of(item: pytest.Item) -> str:
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "backend_name" in callspec.params:
        return str(callspec.params["backend_name"])
    return os.environ.get("ZR_FAULT_BACKEND") or sandbox_zfs()


@functools.cache
def sandbox_zfs() -> str:
    """The ZFS the sandbox's pools are on: the host's OpenZFS when it runs it, else zfs-fuse (tests/sandbox.py)."""
    import sandbox  # tests/ is on sys.path once conftest runs
    return "openzfs" if sandbox.native_openzfs() else "zfs-fuse"


class FaultTable:
    """The pytest plugin: counts each fault case's report under (backend, fault class) and prints the table."""

    def __init__(self) -> None:
        self.results: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(COLUMNS, 0))

    @staticmethod
    def pytest_configure(config: pytest.Config) -> None:
        config.addinivalue_line("markers", "fault_class(name): the fault class a fault case counts under in the fault table")

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        CURRENT["nodeid"] = item.nodeid
        EVIDENCE.pop(item.nodeid, None)

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> None:
        CURRENT["nodeid"] = None

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        outcome = yield
        report = outcome.get_result()
        report.zr_fault_class = fault_class(item)
        report.zr_backend = backend_of(item)
        if call.excinfo is not None:
            report.zr_data_lost = call.excinfo.errisinstance(DataLost)
            report.zr_not_injected = call.excinfo.errisinstance(FaultNotInjected)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        cls = getattr(report, "zr_fault_class", None)
        if cls is None:
            return
        if not (report.when == "call" or (report.when == "setup" and not report.passed)):
            return
        if report.skipped and not hasattr(report, "wasxfail"):
            return
        counts = self.results[(report.zr_backend, cls)]
        counts["run"] += 1
        seen = EVIDENCE.get(report.nodeid, {})
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

    def pytest_terminal_summary(self, terminalreporter, exitstatus: int, config: pytest.Config) -> None:
        if not self.results:
            return
        terminalreporter.section("fault table: per backend and fault class")
        width = {k: max(len(LABELS.get(k, k)), 3) + 2 for k in COLUMNS}
        terminalreporter.write_line(f"{'backend':<9} {'fault class':<40}" + "".join(f"{LABELS.get(k, k):>{width[k]}}" for k in COLUMNS))
        totals: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COLUMNS, 0))
        for (be, cls) in sorted(self.results):
            c = self.results[(be, cls)]
            for k in COLUMNS:
                totals[be][k] += c[k]
            terminalreporter.write_line(f"{be:<9} {cls:<40}" + "".join(f"{c[k]:>{width[k]}}" for k in COLUMNS))
        for be, c in sorted(totals.items()):
            terminalreporter.write_line(f"{be:<9} {'all fault classes':<40}" + "".join(f"{c[k]:>{width[k]}}" for k in COLUMNS))
        terminalreporter.write_line("fault: saw its fault happen; kept: compared both sides before/after it (children too); replica: "
                                    "compared guids and file checksums snapshot to snapshot; lost: failed with DataLost; not injected: "
                                    "failed because its fault did not happen; xfail: known engine bugs")
