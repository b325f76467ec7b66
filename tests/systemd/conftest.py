# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures of the systemd tier: a real systemd (systemd-nspawn, tests/systemd/container.py) whose `zfs` is the
host's (zfs-fuse, or the host's own OpenZFS) with the sandbox's pools, reached by Ansible over an sshd inside it.

    container            session: the booted container (exec() runs commands inside, via nsenter)
    container_inventory  session: inventory text with the host `zrsystemd`

The root conftest's `sandbox`, `collections_path` and `ansible_playbook` fixtures are reused as they are.
ZR_KEEP_CONTAINER=1 keeps the work directory (nspawn log, keys) after the session.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from container import Container, ContainerError, ensure_rootfs, host_openzfs  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line('markers', 'systemd: boots a real systemd (systemd-nspawn) and applies the scheduler role')


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.path)).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.systemd)


@pytest.fixture(scope='session')
def container(sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """A booted systemd container whose `zfs` is the sandbox's: the zfs-fuse daemon the sandbox starts, or on a
    host that runs OpenZFS the host's kernel module (the sandbox's pools are its own, on image files)."""
    try:
        openzfs = host_openzfs()
        rootfs = ensure_rootfs(log=lambda msg: print(f'systemd tier: {msg}', file=sys.stderr), openzfs=openzfs)
    except ContainerError as exc:
        pytest.fail(str(exc), pytrace=False)
    workdir = tmp_path_factory.mktemp('systemd')
    box = Container(workdir, rootfs=rootfs, openzfs=openzfs)
    box.boot()
    try:
        yield box
    finally:
        box.stop()
        if os.environ.get('ZR_KEEP_CONTAINER') != '1':
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope='session')
def container_inventory(container: Container) -> str:
    return json.dumps({'all': {'hosts': {'zrsystemd': container.ansible_host_vars()}}}, indent=2)
