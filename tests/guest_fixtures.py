# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The OpenZFS 2.x guest as pytest fixtures, defined once for the whole test session (tests/conftest.py imports
them), so the OpenZFS tier and the two-backend scenarios share one booted guest.

    openzfs_vm     session: the guest (tests/openzfs/vm.py): image built or reused from the cache, booted once,
                   powered off at the end. ZR_VM_RUN_DIR=<dir of `vm.py start`> uses a guest that is already up
                   (and leaves it up): the quick loop while writing tests.
    guest          session: a Guest (run commands, zfs, checksums) with two fresh pools `zra` and `zrb` on the
                   guest's two virtio disks.
    guest_cleanup  function: a list of guest datasets destroyed (holds released) after the test.
    guest_inventory  function: inventory (JSON) with host `zrvm` = the guest over ssh (root, host key checked).
"""

from __future__ import annotations

import base64
import inspect
import io
import json
import os
import secrets
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

OPENZFS_DIR = Path(__file__).resolve().parent / 'openzfs'
if str(OPENZFS_DIR) not in sys.path:
    sys.path.insert(0, str(OPENZFS_DIR))

import vm as vm_mod  # noqa: E402

import helpers  # noqa: E402

POOLS = ('zra', 'zrb')
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope='session')
def openzfs_vm() -> Iterator[vm_mod.VM]:
    reuse = os.environ.get('ZR_VM_RUN_DIR')
    if reuse:
        yield vm_mod.VM.load(reuse)
        return
    t0 = time.monotonic()
    built = vm_mod.is_built()
    vm_mod.build_with_progress()
    if not built:
        TIMINGS['image build'] = time.monotonic() - t0
    t1 = time.monotonic()
    vm = vm_mod.start(tie_to_parent=True)
    TIMINGS['boot'] = time.monotonic() - t1
    try:
        yield vm
    finally:
        t2 = time.monotonic()
        if os.environ.get('ZR_KEEP_VM') == '1':
            vm_mod.log(f'ZR_KEEP_VM=1: guest left running, run dir {vm.run_dir}')
        else:
            vm.stop()
            TIMINGS['stop'] = time.monotonic() - t2


_CHECKSUM_SCRIPT = '\n'.join([
    'import hashlib, json, os, sys',
    'from pathlib import Path',
    inspect.getsource(helpers.tree_checksums),
    'print(json.dumps(tree_checksums(sys.argv[1])))',
])


class Guest:
    """Commands in the guest over the VM's shared ssh connection."""

    def __init__(self, vm: vm_mod.VM) -> None:
        self.vm = vm

    def run(self, *argv: str, input: str | None = None, timeout: float = 300) -> str:
        proc = self.vm.run(list(argv), check=False, input=input, timeout=timeout)
        if proc.returncode != 0:
            raise helpers.CommandError(f'guest: {" ".join(argv)} exited {proc.returncode}: {proc.stderr.strip()}')
        return proc.stdout

    def sh(self, script: str, timeout: float = 300) -> str:
        return self.run('sh', '-ec', script, timeout=timeout)

    def zfs(self, *args: str) -> str:
        return self.run('zfs', *args)

    def zpool(self, *args: str) -> str:
        return self.run('zpool', *args)

    def snapshots_with_guids(self, dataset: str) -> dict[str, str]:
        """Like helpers.snapshots_with_guids, in the guest: {'@snap' or '/child@snap': guid}."""
        out = self.zfs('get', '-H', '-p', '-r', '-t', 'snapshot', '-o', 'name,value', 'guid', dataset)
        return {name[len(dataset):]: guid for name, guid in (line.split('\t') for line in out.splitlines())}

    def mountpoint(self, dataset: str) -> str:
        return self.zfs('get', '-H', '-o', 'value', 'mountpoint', dataset).strip()

    def checksums(self, dataset: str, mount: bool = True) -> dict[str, str]:
        """helpers.tree_checksums of DATASET's own files (child datasets left out), computed in the guest."""
        if mount and self.zfs('get', '-H', '-o', 'value', 'mounted', dataset).strip() != 'yes':
            self.zfs('mount', dataset)
        children = [line[len(dataset) + 1:] for line in
                    self.zfs('list', '-H', '-o', 'name', '-r', '-d', '1', '-t', 'filesystem', dataset).split()
                    if line != dataset]
        sums = json.loads(self.run('python3', '-', self.mountpoint(dataset), input=_CHECKSUM_SCRIPT))
        return {k: v for k, v in sums.items() if k.split('/')[0] not in children}

    def write_files(self, dataset: str, seed: str, count: int = 2, size: int = 64_000) -> None:
        """COUNT random files of SIZE bytes (+ a text file) in DATASET's mountpoint."""
        mp = self.mountpoint(dataset)
        self.sh(f'mkdir -p {mp}/dir && for i in $(seq {count}); do head -c {size} /dev/urandom > {mp}/dir/{seed}-$i.bin; '
                f'done && echo hello {seed} > {mp}/{seed}.txt')

    def tag(self) -> str:
        return secrets.token_hex(3)

    def pools_state(self) -> tuple[str, str]:
        """Every dataset and snapshot of the guest's own pools (zra, zrb: a user's pools on an OpenZFS host) with its
        guid, and the pools' command history (every command that changed them). Space figures are left out: an
        earlier test's destroy still frees space asynchronously."""
        self.zpool('sync', *POOLS)
        state = self.zfs('get', '-H', '-p', '-r', '-t', 'all', '-o', 'name,value', 'guid', *POOLS)
        return state, self.zpool('history', *POOLS)

    def copy_in(self, files: dict[str, Path], directory: str, timeout: float = 600) -> None:
        """FILES ({name in DIRECTORY: host path}) into DIRECTORY in the guest, replacing it: one tar over the shared
        connection."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode='w:gz') as tar:
            for name, path in sorted(files.items()):
                tar.add(path, arcname=name, recursive=False)
        self.run('sh', '-ec', f'rm -rf {directory} && mkdir -p {directory} && base64 -d | tar -xz -C {directory}',
                 input=base64.b64encode(buf.getvalue()).decode(), timeout=timeout)

    def copy_tree(self, source: Path, directory: str, timeout: float = 900) -> None:
        """The tree at SOURCE (symlinks, modes and owners as they are) into DIRECTORY in the guest, replacing it: tar
        streamed over the shared connection (copy_in holds its files in memory)."""
        self.vm.untar(['tar', '-C', str(source), '-cf', '-', '.'], directory, replace=True, timeout=timeout)

    def destroy(self, *datasets: str) -> None:
        """`zfs destroy -r` each of DATASETS that exists, after releasing every hold on its snapshots."""
        for ds in datasets:
            self.sh(f'''
                zfs list -H -o name {ds} >/dev/null 2>&1 || exit 0
                zfs list -H -p -r -t snapshot -o name,userrefs {ds} | while read -r snap refs; do
                    [ "$refs" -gt 0 ] || continue
                    zfs holds -H "$snap" | cut -f2 | while read -r tag; do zfs release "$tag" "$snap"; done
                done
                zfs destroy -r {ds}''')


@pytest.fixture(scope='session')
def guest(openzfs_vm: vm_mod.VM) -> Guest:
    g = Guest(openzfs_vm)
    existing = g.zpool('list', '-H', '-o', 'name').split()
    for pool, disk in zip(POOLS, openzfs_vm.disks):
        if pool in existing:  # a reused guest (ZR_VM_RUN_DIR): start from empty pools anyway
            g.zpool('destroy', '-f', pool)
        # Right after a destroy, udev may still be re-reading the disk's partitions ("cannot create 'zra': no such
        # pool or dataset" was seen once): let it settle, and try again while the pool is not there.
        for attempt in range(5):
            g.run('udevadm', 'settle', '--timeout=30')
            try:
                g.zpool('create', '-f', '-o', 'ashift=12', '-O', 'compression=lz4', '-O', f'mountpoint=/{pool}', pool, disk)
                break
            except helpers.CommandError:
                if attempt == 4 or pool in g.zpool('list', '-H', '-o', 'name').split():
                    raise
    return g


@pytest.fixture
def guest_cleanup(guest: Guest) -> Iterator[list[str]]:
    """A list to append guest datasets to; they are destroyed (holds released) after the test."""
    datasets: list[str] = []
    yield datasets
    guest.destroy(*reversed(datasets))


@pytest.fixture
def guest_inventory(openzfs_vm: vm_mod.VM) -> str:
    return json.dumps({'all': {'hosts': {'zrvm': openzfs_vm.ansible_host_vars()}}}, indent=2)
