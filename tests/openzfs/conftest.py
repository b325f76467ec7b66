# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The OpenZFS 2.x tier (tests/openzfs, marker `openzfs`). Its fixtures (openzfs_vm, guest, guest_cleanup,
guest_inventory) live in tests/guest_fixtures.py, defined once for the session so the two-backend scenarios
(tests/scenarios) share the same booted guest.

Every test here talks to the guest over SSH from the host, the way a user's controller does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import guest_fixtures  # tests/ is on sys.path via the root conftest

HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line('markers', 'openzfs: runs against OpenZFS 2.x in the qemu guest (tests/openzfs/vm.py)')


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.path)).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.openzfs)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if guest_fixtures.TIMINGS:
        parts = ', '.join(f'{k} {v:.0f} s' for k, v in guest_fixtures.TIMINGS.items())
        terminalreporter.write_line(f'openzfs guest: {parts}')
