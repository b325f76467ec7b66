# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Scenarios written once, run on each backend (tests/backends.py): `openzfs` (OpenZFS 2.x, what users run: the
guest's, or this host's own when it runs OpenZFS) and `zfs-fuse` (the legacy command line). ZR_BACKENDS=zfs-fuse (or
openzfs) narrows a local loop; scripts/test runs both, one lane each. A scenario that is meaningless on a backend
(a feature it lacks) runs on the others only and says why in its @pytest.mark.backends marker: that lane deselects it
rather than reporting it skipped.

On a host that runs OpenZFS there is no zfs-fuse (the two cannot be installed together): every scenario runs on the
host's OpenZFS, those marked for zfs-fuse only too (their marker spares the emulated guest, which a native host does
not boot)."""
from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import sandbox as sandbox_mod
from backends import Backend, GuestBackend, LocalBackend

ALL = ('openzfs', 'zfs-fuse')


NATIVE = sandbox_mod.native_openzfs()


def selected() -> list[str]:
    default = 'openzfs' if NATIVE else ','.join(ALL)
    wanted = [b.strip() for b in os.environ.get('ZR_BACKENDS', default).split(',') if b.strip()]
    unknown = sorted(set(wanted) - set(ALL))
    if unknown:
        raise pytest.UsageError(f'ZR_BACKENDS: unknown backend(s) {", ".join(unknown)}: use {", ".join(ALL)}')
    if NATIVE and 'zfs-fuse' in wanted:
        raise pytest.UsageError('ZR_BACKENDS: zfs-fuse cannot run on this host, which runs OpenZFS (zfs-fuse and '
                                'zfsutils-linux conflict): use ZR_BACKENDS=openzfs here, and zfs-fuse on a machine without ZFS')
    return wanted


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line('markers', 'scenario: one scenario run on each ZFS backend (tests/backends.py)')
    config.addinivalue_line('markers', 'backends(*names, reason): run this scenario on these backends only, and say why')


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if 'backend' not in metafunc.fixturenames:
        return
    names = selected()
    only = metafunc.definition.get_closest_marker('backends')
    if only is not None:
        # The emulated OpenZFS guest costs 20-200 s a scenario: what does not depend on the ZFS under it (the
        # planner's selection, the pipeline's tools) runs on zfs-fuse only, and the marker says why.
        if not only.kwargs.get('reason'):
            raise pytest.UsageError(f'{metafunc.definition.nodeid}: @pytest.mark.backends needs a reason')
        names = [n for n in names if n in only.args or (NATIVE and n == 'openzfs')]  # native: cheap, and no zfs-fuse
    metafunc.parametrize('backend_name', names, scope='session')


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A scenario whose backends (its marker) are all outside ZR_BACKENDS has an empty parameter set: it runs in the
    # other backend's lane, so it is deselected here rather than reported as skipped.
    kept, other_lane = [], []
    for item in items:
        if 'backend_name' in getattr(item, 'fixturenames', ()):
            if item.callspec.params.get('backend_name') not in ALL:
                other_lane.append(item)
                continue
            item.add_marker(pytest.mark.scenario)
        kept.append(item)
    if other_lane:
        config.hook.pytest_deselected(items=other_lane)
        items[:] = kept


@pytest.fixture(scope='session')
def _guest_backend(request: pytest.FixtureRequest) -> GuestBackend:
    backend = GuestBackend(request.getfixturevalue('guest'))
    backend.install()
    return backend


@pytest.fixture(scope='session')
def _local_backend(request: pytest.FixtureRequest) -> LocalBackend:
    return LocalBackend(request.getfixturevalue('sandbox'))


@pytest.fixture
def backend(backend_name: str, request: pytest.FixtureRequest) -> Iterator[Backend]:
    b = request.getfixturevalue('_guest_backend' if backend_name == 'openzfs' and not NATIVE else '_local_backend')
    assert b.name == backend_name, (b.name, backend_name)
    try:
        yield b
    finally:
        b.cleanup()
