# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pytest wiring for all tiers.

- Imports: `ansible_collections.zfs.replication...` resolves to this checkout (a symlink tree in a temp dir),
  and tests can `import helpers` / `import sandbox` (this directory is put on sys.path).
- Fixtures are lazy: unit tests never start zfs-fuse or sshd.
    sandbox            session: real pools `src_pool`/`dst_pool` (the host's OpenZFS when it runs it, else zfs-fuse) + an
                       sshd on 127.0.0.1 (tests/sandbox.py)
    zfs_caps           session: what that ZFS can do ('resumable', 'encryption', 'recv_props', 'written', ...)
    collections_path   session: a copy of the checkout at <dir>/ansible_collections/zfs/replication; <dir>
    ansible_playbook   function: run(playbook_yaml, extravars=None, check=False, diff=False, inventory_text=None,
                                     expect_rc=0) -> PlaybookResult (real ansible-playbook, JSON results)
    sandbox_inventory  function: inventory (YAML) with `localhost` (local) and `zrremote` (ssh to the sandbox sshd)
- Everything under tests/integration is marked `integration`.
- The fault table (tests/faulttable.py) is registered as a plugin: fault cases of any tier, per backend and class.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

import faulttable  # noqa: E402

import backends  # noqa: E402
import guest_fixtures  # noqa: E402
import sandbox as sandbox_mod  # noqa: E402  (needs TESTS_DIR on sys.path)

# The OpenZFS guest's fixtures, defined once for the session (tests/openzfs and tests/scenarios share one guest).
openzfs_vm = guest_fixtures.openzfs_vm
guest = guest_fixtures.guest
guest_cleanup = guest_fixtures.guest_cleanup
guest_inventory = guest_fixtures.guest_inventory

COLLECTION_PARTS = ('ansible_collections', 'zfs', 'replication')


def _collection_import_root() -> Path:
    """A sys.path entry under which `ansible_collections.zfs.replication` is this checkout."""
    if REPO_ROOT.parts[-3:] == COLLECTION_PARTS:  # e.g. running inside a prepared copy
        return REPO_ROOT.parents[2]
    top = Path(tempfile.mkdtemp(prefix='zr-import-'))
    link = top.joinpath(*COLLECTION_PARTS)
    link.parent.mkdir(parents=True)
    link.symlink_to(REPO_ROOT, target_is_directory=True)
    atexit.register(shutil.rmtree, top, True)  # rmtree removes the link, never what it points to
    return top


sys.path.insert(0, str(_collection_import_root()))


def pytest_configure(config: pytest.Config) -> None:
    # One fault table per backend and fault class for every tier that injects faults (tests/faulttable.py).
    if not config.pluginmanager.has_plugin('zr-faulttable'):
        config.pluginmanager.register(faulttable.FaultTable(), 'zr-faulttable')
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:
        return
    # CI machines are small and shared: no per-example deadline, and failures print their reproduction blob.
    settings.register_profile('ci', deadline=None, print_blob=True,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile('dev', deadline=None)
    settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE') or ('ci' if os.environ.get('CI') else 'dev'))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    integration_dir = TESTS_DIR / 'integration'
    for item in items:
        if Path(str(item.path)).resolve().is_relative_to(integration_dir):
            item.add_marker(pytest.mark.integration)


# --------------------------------------------------------------------------------------------------------------------
# Real parts
# --------------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope='session')
def sandbox() -> Iterator[sandbox_mod.Sandbox]:
    """Two fresh file-backed pools (the host's OpenZFS when it runs it, else zfs-fuse) and an sshd on 127.0.0.1, for
    the whole session.

    ZR_STOP_ZFS_FUSE=1 stops zfs-fuse at the end if this session started it; ZR_KEEP_SANDBOX=1 keeps the work
    directory (logs, keys) for a look after a failure.
    """
    sb = sandbox_mod.Sandbox(stop_zfs_fuse=os.environ.get('ZR_STOP_ZFS_FUSE') == '1')
    with sb:
        yield sb
    if os.environ.get('ZR_KEEP_SANDBOX') != '1':
        shutil.rmtree(sb.workdir, ignore_errors=True)


@pytest.fixture(scope='session')
def zfs_caps(sandbox: sandbox_mod.Sandbox) -> frozenset[str]:
    """What the sandbox's ZFS can do, named as the engine's probe names it: the host's OpenZFS has every capability
    (resumable and raw send, encryption, recv -o/-x, written, zfs holds), zfs-fuse none of them (tests/backends.py)."""
    return backends.OPENZFS_CAPS if sandbox.zfs == 'openzfs' else backends.LEGACY_CAPS


@pytest.fixture(scope='session')
def collections_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkout as <path>/ansible_collections/zfs/replication; returns <path>."""
    return sandbox_mod.prepare_collection(REPO_ROOT, tmp_path_factory.mktemp('collections'))


@pytest.fixture
def sandbox_inventory(sandbox: sandbox_mod.Sandbox) -> str:
    """Inventory text: `localhost` (local connection) and `zrremote` (ssh to the sandbox sshd, host key checked)."""
    remote = {**sandbox.sshd.ansible_host_vars(), 'ansible_connection': 'ssh',
              'ansible_python_interpreter': '/usr/bin/python3'}
    local = {'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable}
    return json.dumps({'all': {'hosts': {'localhost': local, 'zrremote': remote}}}, indent=2)


# --------------------------------------------------------------------------------------------------------------------
# ansible-playbook
# --------------------------------------------------------------------------------------------------------------------

@dataclass
class PlaybookResult:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str
    workdir: Path
    data: dict[str, Any] | None = None
    tasks_run: list[dict[str, Any]] = field(default_factory=list)

    def task_results(self, name: str, host: str = 'localhost') -> list[dict[str, Any]]:
        """Every result HOST returned for tasks named NAME, in order."""
        return [t['hosts'][host] for t in self.tasks_run if t['task']['name'] == name and host in t['hosts']]

    def task(self, name: str, host: str = 'localhost') -> dict[str, Any]:
        """The dict HOST returned for the task named NAME (the last one, if the name repeats)."""
        found = self.task_results(name, host)
        if not found:
            names = sorted({t['task']['name'] for t in self.tasks_run})
            raise KeyError(f'no result of task {name!r} for host {host!r}; tasks that ran: {names}\n{self}')
        return found[-1]

    @property
    def stats(self) -> dict[str, Any]:
        return (self.data or {}).get('stats', {})

    def __str__(self) -> str:
        return (f'$ {" ".join(self.argv)}\nrc={self.rc}\n--- stderr (tail) ---\n{self.stderr[-4000:]}'
                f'\n--- stdout (tail) ---\n{self.stdout[-8000:]}')


def _parse_json_stdout(stdout: str) -> dict[str, Any] | None:
    """The zr_json callback's document; tolerate stray lines that other plugins print before it."""
    decoder = json.JSONDecoder()
    start = 0
    while True:
        pos = stdout.find('{', start)
        if pos < 0:
            return None
        if pos == 0 or stdout[pos - 1] == '\n':
            try:
                doc, _end = decoder.raw_decode(stdout, pos)
            except json.JSONDecodeError:
                pass
            else:
                if isinstance(doc, dict) and 'plays' in doc:
                    return doc
        start = pos + 1


def ansible_env(collections_path: Path, workdir: Path) -> dict[str, str]:
    """Environment for a real ansible-playbook run that sees only this checkout and writes only under WORKDIR."""
    cfg = workdir / 'ansible.cfg'
    if not cfg.exists():
        cfg.write_text('[defaults]\n')  # never pick up an ansible.cfg from the cwd or ~
    env = dict(os.environ)
    env.update({
        'ANSIBLE_CONFIG': str(cfg),
        'ANSIBLE_COLLECTIONS_PATH': str(collections_path),
        'ANSIBLE_CALLBACK_PLUGINS': str(TESTS_DIR / 'callback_plugins'),
        'ANSIBLE_STDOUT_CALLBACK': 'zr_json',
        'ANSIBLE_NOCOLOR': '1',
        'ANSIBLE_FORCE_COLOR': '0',
        'ANSIBLE_RETRY_FILES_ENABLED': '0',
        'ANSIBLE_LOCAL_TEMP': str(workdir / 'tmp-local'),
        'ANSIBLE_REMOTE_TEMP': str(workdir / 'tmp-remote'),
        'ANSIBLE_HOST_KEY_CHECKING': 'True',
        'ANSIBLE_PYTHON_INTERPRETER': 'auto_silent',
    })
    return env


@pytest.fixture
def ansible_playbook(tmp_path: Path, collections_path: Path) -> Callable[..., PlaybookResult]:
    """run(playbook_yaml_text, extravars=None, check=False, diff=False, inventory_text=None, expect_rc=0,
    extra_args=(), env=None, timeout=900) -> PlaybookResult.

    Runs the ansible-playbook of the venv pytest runs in. expect_rc=None accepts any exit code.
    """
    binary = Path(sys.executable).parent / 'ansible-playbook'
    if not binary.exists():
        pytest.fail(f'{binary} not found: run the tests from a venv made by scripts/bootstrap')
    counter = iter(range(1, 1_000_000))

    def run(playbook_yaml_text: str, extravars: dict[str, Any] | None = None, check: bool = False,
            diff: bool = False, inventory_text: str | None = None, expect_rc: int | None = 0,
            extra_args: tuple[str, ...] | list[str] = (), env: dict[str, str] | None = None,
            timeout: float = 900) -> PlaybookResult:
        workdir = tmp_path / f'play{next(counter)}'
        workdir.mkdir()
        playbook = workdir / 'playbook.yml'
        playbook.write_text(playbook_yaml_text)
        if inventory_text is None:
            inventory_text = f'localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n'
        is_yaml = inventory_text.lstrip().startswith(('{', '---', 'all:'))
        inventory = workdir / ('inventory.yml' if is_yaml else 'inventory.ini')
        inventory.write_text(inventory_text)
        argv = [str(binary), '-i', str(inventory), str(playbook)]
        if extravars:
            vars_file = workdir / 'extravars.json'
            vars_file.write_text(json.dumps(extravars))
            argv += ['-e', f'@{vars_file}']
        if check:
            argv.append('--check')
        if diff:
            argv.append('--diff')
        argv += list(extra_args)
        run_env = ansible_env(collections_path, workdir)
        run_env.update(env or {})
        proc = subprocess.run(argv, cwd=workdir, env=run_env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
        result = PlaybookResult(argv=argv, rc=proc.returncode, stdout=proc.stdout, stderr=proc.stderr, workdir=workdir)
        result.data = _parse_json_stdout(proc.stdout)
        if result.data:
            result.tasks_run = [t for play in result.data['plays'] for t in play['tasks']]
        if expect_rc is not None and proc.returncode != expect_rc:
            pytest.fail(f'ansible-playbook exited {proc.returncode}, expected {expect_rc}\n{result}', pytrace=False)
        if result.data is None and proc.returncode == 0:
            pytest.fail(f'ansible-playbook printed no JSON results\n{result}', pytrace=False)
        return result

    return run
