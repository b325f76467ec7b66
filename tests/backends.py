# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One scenario, two ZFS backends: OpenZFS 2.x (what users run) and zfs-fuse (the legacy command line).

OpenZFS is this host's own when it runs OpenZFS (the `zfs` module loaded: tests/sandbox.py's pools on image files),
otherwise the qemu guest's; zfs-fuse is this host's (it cannot be installed beside OpenZFS).

A scenario takes the `backend` fixture (tests/scenarios/conftest.py) and talks only to it:

    src, dst = backend.pair('name')            fresh source dataset and target path (cleaned up after the test)
    backend.zfs(...), backend.sh(script)       commands on the backend's host
    backend.write(ds, seed), backend.checksums(ds), backend.snapshots_with_guids(ds), backend.datasets_under(ds)
    backend.engine(params, check_mode=, now=, env=)   one run of the engine ON the backend's host -> EngineRun
    backend.ssh()                              `ssh` options reaching that host's own sshd on loopback (host key checked)
    backend.python(), backend.engine_import()  a Python on that host with the engine importable (as that package)
    backend.require('resumable', why)          skip, with the reason, where the backend lacks a capability

On OpenZFS the engine runs inside the guest as the role installs it (a package of plugins/module_utils), driven by
tests/scenario_driver.py over the guest's shared ssh connection: no Ansible round trip per run, which is what lets
the scenario suite run on the emulated guest within CI's time. The Ansible glue is tested in tests/integration,
tests/openzfs and tests/systemd.
"""
from __future__ import annotations

import contextlib
import json
import secrets
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import helpers

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
DRIVER = TESTS_DIR / 'scenario_driver.py'
GUEST_ENGINE_DIR = '/opt/zr-engine'
GUEST_LOOP_KEY = '/root/.ssh/zr_loop'
GUEST_LOOP_KNOWN_HOSTS = '/root/.ssh/zr_loop_known_hosts'

# What each backend can do, named as the engine's probe names it (plugins/module_utils/_zfs.py Capabilities).
OPENZFS_CAPS = frozenset({'openzfs', 'resumable', 'encryption', 'raw_send', 'recv_props', 'written', 'holds_list', 'bookmarks'})
LEGACY_CAPS = frozenset()


@dataclass
class EngineRun:
    rc: int
    log: list[str]
    result: dict[str, Any] | None
    error: str | None
    stderr: str = ''

    @property
    def ok(self) -> bool:
        return self.rc == 0 and self.result is not None and not self.result.get('errors')

    @property
    def failed(self) -> bool:
        return not self.ok

    def dataset(self, target: str) -> dict[str, Any]:
        assert self.result is not None, self
        return self.result['datasets'][target]

    def __str__(self) -> str:
        return (f'engine exit {self.rc}; error: {self.error}; errors: {self.result and self.result.get("errors")}\n'
                + '\n'.join(self.log[-40:]) + (f'\nstderr: {self.stderr[-2000:]}' if self.stderr.strip() else ''))


def parse_driver_output(rc: int, stdout: str, stderr: str) -> EngineRun:
    log: list[str] = []
    result = error = None
    for line in stdout.splitlines():
        if line.startswith('ZR-RESULT '):
            result = json.loads(line[len('ZR-RESULT '):])
        elif line.startswith('ZR-ERROR '):
            error = json.loads(line[len('ZR-ERROR '):])
        else:
            log.append(line)
    return EngineRun(rc, log, result, error, stderr)


@dataclass
class Backend:
    """What a scenario needs of a ZFS backend. Subclasses run the commands where that ZFS is."""

    name: str
    src_pool: str
    dst_pool: str
    caps: frozenset[str]
    _cleanup: list[str] = field(default_factory=list)
    _tags: set[str] = field(default_factory=set)

    # -- commands on the backend's host ------------------------------------------------------------------------
    def sh(self, script: str, timeout: float = 300) -> str:
        raise NotImplementedError

    def zfs(self, *args: str) -> str:
        return self.sh(shlex.join(['zfs', *args]))

    def snapshots_with_guids(self, dataset: str) -> dict[str, str]:
        """{'@snap' or '/child@snap': guid} below DATASET (`zfs get -H -p`: exact on both command lines)."""
        out = self.zfs('get', '-H', '-p', '-r', '-o', 'name,value', 'guid', dataset)
        return {name[len(dataset):]: guid for name, guid in (line.split('\t') for line in out.splitlines()) if '@' in name}

    def datasets_under(self, root: str) -> list[str]:
        return self.zfs('list', '-H', '-o', 'name', '-r', '-t', 'filesystem,volume', root).splitlines()  # names may hold spaces

    def prop(self, dataset: str, name: str) -> str:
        return self.zfs('get', '-H', '-o', 'value', name, dataset).strip()

    def write(self, dataset: str, seed: str, size: int = 100_000) -> None:
        """A file of SIZE random bytes named SEED in DATASET's mountpoint (mounted for it, as it was after): one round trip."""
        self.sh(self._mounted_script(dataset, f'head -c {int(size)} /dev/urandom > "$mp"/{shlex.quote(seed)}.bin && sync'))

    def checksums(self, dataset: str) -> dict[str, str]:
        """sha256 of DATASET's own files (children's left out), read in its mountpoint: one round trip."""
        return self._parse_checksums(dataset, self.sh(self._checksum_script(dataset)))

    def snapshot_checksums(self, dataset: str, name: str) -> dict[str, str]:
        """sha256 of DATASET@NAME's own files, read from a temporary read-only clone (zfs-fuse has no .zfs), destroyed
        after (retried: zfs-fuse says "dataset is busy" for a moment after an unmount): one round trip."""
        tag = secrets.token_hex(4)
        clone, where = f"{dataset.split('/')[0]}/zr-check-{tag}", f'/tmp/zr-check-{tag}'
        q = shlex.quote
        out = self.sh(f'zfs clone -o mountpoint={q(where)} -o readonly=on {q(f"{dataset}@{name}")} {q(clone)} || exit 1\n'
                      f'{self._checksum_script(clone)}'
                      f'for wait in 0 1 2 3 4 5; do sleep "$wait"; zfs destroy -f {q(clone)} && break; done\n'
                      f'rmdir {q(where)} 2>/dev/null || true; zfs list -H -o name {q(clone)} >/dev/null 2>&1 && exit 1 || exit 0\n')
        return self._parse_checksums(clone, out)

    def _checksum_script(self, dataset: str) -> str:
        listing = (f'zfs list -H -o name -r -t filesystem {shlex.quote(dataset)} | sed "s|^|CHILD |"; '
                   'cd "$mp" && find . -path ./.zfs -prune -o -type f -print0 | sort -z | xargs -0 -r sha256sum; cd /')
        return self._mounted_script(dataset, listing)

    @staticmethod
    def _parse_checksums(dataset: str, out: str) -> dict[str, str]:
        children = {line[len('CHILD ') + len(dataset) + 1:].split('/')[0] for line in out.splitlines()
                    if line.startswith('CHILD ') and line != f'CHILD {dataset}'}
        sums = {}
        for line in out.splitlines():
            if line.startswith('CHILD '):
                continue
            digest, _sep, path = line.partition('  ')
            rel = path[2:] if path.startswith('./') else path
            if rel.split('/')[0] not in children:
                sums[rel] = digest
        return sums

    @staticmethod
    def _mounted_script(dataset: str, body: str) -> str:
        """A sh script that runs BODY with $mp = DATASET's mountpoint, mounting it for that if it was not mounted (and
        unmounting it after, removing the directory zfs leaves behind: a parent could not mount over it later)."""
        ds = shlex.quote(dataset)
        return (f'was=$(zfs get -H -o value mounted {ds}); mp=$(zfs get -H -o value mountpoint {ds})\n'
                f'[ "$was" = yes ] || zfs mount {ds}\n'
                f'{body}\n'
                f'if [ "$was" != yes ]; then {{ zfs unmount {ds} 2>/dev/null && rmdir "$mp" 2>/dev/null; }} || true; fi\n')

    @contextlib.contextmanager
    def mounted(self, dataset: str):
        was = self.prop(dataset, 'mounted') == 'yes'
        if not was:
            self.zfs('mount', dataset)
        try:
            yield self.prop(dataset, 'mountpoint')
        finally:
            if not was:
                with contextlib.suppress(AssertionError):
                    self.zfs('unmount', dataset)

    def destroy(self, name: str, *flags: str) -> None:
        """zfs destroy, retried: zfs-fuse says "dataset is busy" for a moment after receives and unmounts."""
        for attempt in range(6):
            try:
                self.zfs('destroy', *flags, name)
                return
            except AssertionError:
                if attempt == 5:
                    raise
                time.sleep(0.5 * (attempt + 1))

    # -- datasets for one test ---------------------------------------------------------------------------------
    def pair(self, prefix: str) -> tuple[str, str]:
        """A new source dataset and a target path whose parent exists; both removed after the test."""
        tag = secrets.token_hex(3)
        src, parent = f'{self.src_pool}/{prefix}{tag}', f'{self.dst_pool}/{prefix}{tag}'
        self.zfs('create', src)
        self.zfs('create', parent)
        self._cleanup += [src, parent]
        return src, f'{parent}/data'

    def cleanup(self) -> None:
        for root in reversed(self._cleanup):
            with contextlib.suppress(AssertionError):
                listing = self.zfs('get', '-H', '-p', '-r', '-o', 'name,value', 'userrefs', root)
                for line in listing.splitlines():
                    snap, refs = line.split('\t')
                    if '@' in snap and refs not in ('0', '-'):
                        for tag in self._tags:
                            with contextlib.suppress(AssertionError):
                                self.zfs('release', tag, snap)
                self.destroy(root, '-r')
        self._cleanup.clear()

    # -- the engine --------------------------------------------------------------------------------------------
    def engine(self, params: dict[str, Any], check_mode: bool = False, now: datetime | None = None,
               env: dict[str, str] | None = None, timeout: float = 600) -> EngineRun:
        self._tags.add(f'zfs.replication:{params.get("name") or "scenario"}')
        request = json.dumps({'params': params, 'check_mode': check_mode, 'now': now.isoformat() if now else None})
        return self._drive(request, env or {}, timeout)

    def _drive(self, request: str, env: dict[str, str], timeout: float) -> EngineRun:
        raise NotImplementedError

    def ssh(self) -> dict[str, Any]:
        raise NotImplementedError

    def authorized_keys(self) -> str:
        """The authorized_keys file (a path on the backend's host) of the sshd that ssh() reaches."""
        raise NotImplementedError

    # -- engine code run directly on the backend's host (e.g. the timer entry point, to meet its lock) ---------------
    def python(self) -> str:
        """A shell command (quoted) that starts a Python on the backend's host with the engine importable as
        engine_import()."""
        raise NotImplementedError

    def engine_import(self) -> str:
        """The package the engine's modules are under on the backend's host (`<it>._runner`, `<it>._replication`)."""
        raise NotImplementedError


class LocalBackend(Backend):
    """The ZFS of this host (tests/sandbox.py): zfs-fuse, or the host's own OpenZFS when it runs it (then this is the
    `openzfs` backend and no guest is booted); pools zrs*src / zrs*dst, the sandbox's sshd on 127.0.0.1."""

    def __init__(self, sandbox: Any) -> None:
        native = sandbox.zfs == 'openzfs'
        super().__init__('openzfs' if native else 'zfs-fuse', sandbox.src_pool, sandbox.dst_pool,
                         OPENZFS_CAPS if native else LEGACY_CAPS)
        self.sandbox = sandbox

    def sh(self, script: str, timeout: float = 300) -> str:
        proc = subprocess.run(['sh', '-ec', script], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
        if proc.returncode != 0:
            raise helpers.CommandError(f'{self.name} (this host): {script} exited {proc.returncode}: {proc.stderr.strip()}')
        return proc.stdout

    def _drive(self, request: str, env: dict[str, str], timeout: float) -> EngineRun:
        import os

        proc = subprocess.run([sys.executable, str(DRIVER)], input=request, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, 'PYTHONPATH': os.pathsep.join(sys.path), **env}, check=False)
        return parse_driver_output(proc.returncode, proc.stdout, proc.stderr)

    def ssh(self) -> dict[str, Any]:
        return {'host': '127.0.0.1', 'port': self.sandbox.sshd.port, 'user': 'root',
                'private_key_file': str(self.sandbox.sshd.private_key), 'known_hosts_file': str(self.sandbox.sshd.known_hosts)}

    def authorized_keys(self) -> str:
        return str(self.sandbox.sshd.authorized_keys)

    def python(self) -> str:
        import os

        return shlex.join(['env', f'PYTHONPATH={os.pathsep.join(sys.path)}', sys.executable])

    def engine_import(self) -> str:
        return 'ansible_collections.zfs.replication.plugins.module_utils'


class GuestBackend(Backend):
    """OpenZFS 2.x in the qemu guest (tests/guest_fixtures.py): pools zra / zrb, the guest's own sshd on 127.0.0.1:22."""

    def __init__(self, guest: Any) -> None:
        super().__init__('openzfs', 'zra', 'zrb', OPENZFS_CAPS)
        self.guest = guest

    def sh(self, script: str, timeout: float = 300) -> str:
        return self.guest.sh(script, timeout=timeout)

    def install(self) -> None:
        """The engine as the role installs it (a package of plugins/module_utils) plus the driver, and a key that lets
        the guest reach its own sshd on loopback with the host key checked. Once per session."""
        files = {f'zfs_replication_engine/{path.name}': path for path in (REPO_ROOT / 'plugins' / 'module_utils').glob('*.py')}
        self.guest.copy_in({**files, 'scenario_driver.py': DRIVER}, GUEST_ENGINE_DIR)
        self.sh(f'''
            touch {GUEST_ENGINE_DIR}/zfs_replication_engine/__init__.py
            mkdir -p -m 700 /root/.ssh
            [ -f {GUEST_LOOP_KEY} ] || ssh-keygen -q -t ed25519 -N '' -f {GUEST_LOOP_KEY}
            grep -qF "$(cut -d' ' -f2 {GUEST_LOOP_KEY}.pub)" /root/.ssh/authorized_keys 2>/dev/null || cat {GUEST_LOOP_KEY}.pub >> /root/.ssh/authorized_keys
            echo "127.0.0.1 $(cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub)" > {GUEST_LOOP_KNOWN_HOSTS}
        ''')

    def _drive(self, request: str, env: dict[str, str], timeout: float) -> EngineRun:
        envs = ' '.join(f'{k}={shlex.quote(v)}' for k, v in env.items())
        proc = self.guest.vm.run(f'cd {GUEST_ENGINE_DIR} && env {envs} python3 scenario_driver.py', check=False, input=request, timeout=timeout)
        return parse_driver_output(proc.returncode, proc.stdout, proc.stderr)

    def ssh(self) -> dict[str, Any]:
        return {'host': '127.0.0.1', 'port': 22, 'user': 'root', 'private_key_file': GUEST_LOOP_KEY,
                'known_hosts_file': GUEST_LOOP_KNOWN_HOSTS}

    def authorized_keys(self) -> str:
        return '/root/.ssh/authorized_keys'

    def python(self) -> str:
        return f'env PYTHONPATH={GUEST_ENGINE_DIR} python3'

    def engine_import(self) -> str:
        return 'zfs_replication_engine'
