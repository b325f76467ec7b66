# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The reliability and security tier (tests/reliability, marker `reliability`).

Faults real fleets see, on real parts: zfs-fuse pools, the sandbox sshd, the engine in its own process
(killed with SIGKILL, its connection cut), the timer entry point with its lock, hostile names and properties.

Every case counts in the fault table (tests/faulttable.py, a plugin tests/conftest.py registers) under its
`@pytest.mark.fault_class("...")` ("other" without one), from the evidence it recorded, not from its name. The
backend is zfs-fuse here (ZR_FAULT_BACKEND names another); tests/scenarios/test_faults.py runs the fault cases
written once for both backends and gets its own lines per backend.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # the cases import faultlib


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "reliability: fault injection and hostile input on real parts (tests/reliability)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.path)).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.reliability)
