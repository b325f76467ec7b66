# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The README's commands on a host that already runs OpenZFS: the guest is such a host (zra and zrb stand for the
user's pools).

- `scripts/demo`, run there from a checkout as a user runs it: bootstrap installs no zfs-fuse, the sandbox's pools
  are the host's OpenZFS on image files, the playbooks replicate, and the user's pools are exactly as they were.
- The systemd tier's container boots there with the host's own OpenZFS userland and its `zfs` manages the host's
  pools (its rootfs is built here: the guest has no network).
- The scenario tier there runs natively (no guest, no zfs-fuse): every scenario is collected once, on `openzfs`,
  and scenarios run green on the host's own OpenZFS.

The guest has no network: what the network would give the commands (the pinned wheels from PyPI, the dependency
collections from the `ansible` wheel, tests/collection_deps.py) is downloaded here on the host, into the caches, and
copied in; pip finds the wheels through its own environment variables (PIP_NO_INDEX, PIP_FIND_LINKS), which is how
a user installs on an offline host too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import collection_deps
import pytest

import sandbox as sandbox_mod

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_ROOT = collection_deps.CACHE_ROOT
CHECKOUT = '/root/zr-checkout'
WHEELS = '/root/zr-wheels'
OFFLINE_PIP = f'PIP_NO_INDEX=1 PIP_FIND_LINKS={WHEELS}'


def pin(requirements: str, package: str) -> str:
    """PACKAGE's pinned version in tests/REQUIREMENTS."""
    text = (REPO_ROOT / 'tests' / requirements).read_text()
    found = re.search(rf'^{re.escape(package)}==(\S+)\s*$', text, re.M)
    assert found, f'{requirements} pins no {package}'
    return found.group(1)


def wheelhouse(python_version: str, specs: list[str]) -> Path:
    """The wheels of SPECS (and of what they need) for CPython PYTHON_VERSION on this platform, downloaded once into
    the cache with the test matrix's venv of that version (its pip picks exactly what a host of that Python gets)."""
    venvs = {'3.11': 'venv-oldest', '3.12': 'venv-latest', '3.13': 'venv-middle'}
    python = CACHE_ROOT / venvs[python_version] / 'bin' / 'python'
    key = hashlib.sha256(f'{python_version} {sorted(specs)}'.encode()).hexdigest()[:16]
    directory = CACHE_ROOT / 'guest-wheels' / key
    if not (directory / '.complete').exists():
        directory.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([str(python), '-m', 'pip', 'download', '--only-binary=:all:', '-q', '-d', str(directory), *specs],
                              capture_output=True, text=True, timeout=900, check=False)
        assert proc.returncode == 0, f'pip download {specs}: {proc.stderr[-3000:]}'
        (directory / '.complete').write_text('')
    return directory


@pytest.fixture(scope='module')
def checkout(guest) -> dict[str, str]:
    """This checkout's tracked files at CHECKOUT in the guest, the wheels the demo's venv and a pytest venv need at
    WHEELS, and the dependency collections' cache where tests/collection_deps.py looks for it. Returns the demo's
    selection (scripts/select-python demo, run in the guest)."""
    names = sandbox_mod._tracked_files(REPO_ROOT)
    assert names, 'not a git checkout'
    guest.copy_in({name: REPO_ROOT / name for name in names}, CHECKOUT)
    selection = {}
    for line in guest.sh(f'{CHECKOUT}/scripts/select-python demo 2>/dev/null').splitlines():
        name, _sep, value = line.partition('=')
        selection[name] = ''.join(shlex.split(value))
    assert selection.get('ZR_PYTHON') == '/usr/bin/python3' and selection.get('ZR_VENV_PACKAGE') == '', selection
    wheels = wheelhouse(selection['ZR_PYTHON_VERSION'], [f'ansible-core=={selection["ZR_ANSIBLE_CORE"]}',
                                                         f'pytest=={pin("requirements-oldest.txt", "pytest")}',
                                                         f'pytest-timeout=={pin("requirements-oldest.txt", "pytest-timeout")}'])
    guest.copy_in({p.name: p for p in wheels.glob('*.whl')}, WHEELS)
    deps = collection_deps.collections_path()
    guest.copy_in({str(p.relative_to(deps)): p for p in deps.rglob('*') if p.is_file()}, str(deps))
    return selection


# The demo's four playbook runs cost ~15 min in the emulated guest (a few seconds per module call; a real host runs
# the demo in about a minute), more than the suite's 20 min per-test limit allows with the set-up around it.
@pytest.mark.timeout(2700)
def test_the_demo_runs_on_the_hosts_openzfs_and_leaves_its_pools_alone(guest, checkout) -> None:
    before = guest.pools_state()
    out = guest.sh(f'cd {CHECKOUT} && {OFFLINE_PIP} scripts/demo 2>&1', timeout=2400)

    assert re.search(r'^bootstrap: this host runs OpenZFS \(zfs-2\.', out, re.M), out
    assert f'== controller: ansible-core {checkout["ZR_ANSIBLE_CORE"]} on Python {checkout["ZR_PYTHON_VERSION"]}.' in out, out
    assert guest.sh('dpkg-query -W -f="${Status}" zfs-fuse 2>/dev/null || true').strip() != 'install ok installed'
    assert guest.sh('pgrep -x zfs-fuse || true').strip() == ''
    # The second apply changed nothing.
    again = out.split('== apply it again', 1)[1].split('== a new snapshot', 1)[0]
    assert re.search(r'changed=0 ', again) and 'failed=0' in again, again
    # Every snapshot on the target is the source's (same guid), the three the demo made among them on every dataset.
    source = dict(re.findall(r'^source   (\S+)\t(\d+)$', out, re.M))
    target = dict(re.findall(r'^target   (\S+)\t(\d+)$', out, re.M))
    made = {f'{child}@auto-2026-11-28_{hour}-00' for child in ('', '/web', '/db') for hour in (10, 11, 12)}
    assert made <= set(target), (sorted(target), out)
    assert all(source.get(name) == guid for name, guid in target.items()), (source, target)
    assert 'projects-to-backup' in out.split('== status', 1)[1], out
    # Nothing of the sandbox is left, and the host's own pools are exactly as they were.
    assert not [p for p in guest.zpool('list', '-H', '-o', 'name').split() if p.startswith(sandbox_mod.POOL_PREFIX)]
    assert guest.pools_state() == before


def host_collection(*args: str, env: dict[str, str]) -> list[str]:
    proc = subprocess.run([sys.executable, '-m', 'pytest', '--collect-only', '-q', '-p', 'no:cacheprovider', *args],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [line for line in proc.stdout.splitlines() if '::' in line]


def test_the_scenario_tier_runs_natively_on_the_hosts_openzfs(guest, checkout) -> None:
    before = guest.pools_state()
    venv = '/root/zr-test-venv'
    guest.sh(f'rm -rf {venv} && python3 -m venv {venv} && {OFFLINE_PIP} {venv}/bin/python -m pip install -q '
             f'pytest=={pin("requirements-oldest.txt", "pytest")} pytest-timeout=={pin("requirements-oldest.txt", "pytest-timeout")}',
             timeout=900)
    pytest_in_guest = f'{venv}/bin/python -m pytest -p no:cacheprovider'

    # Every scenario once, on openzfs: those marked for zfs-fuse only too (no zfs-fuse here, and no guest to spare).
    listed = [line for line in guest.sh(f'cd {CHECKOUT} && {pytest_in_guest} --collect-only -q tests/scenarios', timeout=600).splitlines()
              if '::' in line]
    here = host_collection('tests/scenarios', env={**os.environ, 'ZR_BACKENDS': 'openzfs,zfs-fuse'})
    base = re.compile(r'\[(openzfs|zfs-fuse)(-[^\]]*)?\]$')
    assert listed and all(re.search(r'\[openzfs(-[^\]]*)?\]$', line) for line in listed), listed
    assert sorted(listed) == sorted({base.sub(lambda m: f'[openzfs{m.group(2) or ""}]', line) for line in here}), (listed, here)
    fuse = guest.run('sh', '-c', f'cd {CHECKOUT} && ZR_BACKENDS=zfs-fuse {pytest_in_guest} --collect-only -q tests/scenarios 2>&1; '
                     'echo rc=$?', timeout=600)
    assert 'zfs-fuse cannot run on this host, which runs OpenZFS' in fuse and 'rc=0' not in fuse, fuse

    # Scenarios run on the host's OpenZFS: over the sandbox's sshd, one the guest lane leaves to zfs-fuse, and two
    # fault cases (the connection cut mid-stream and resumed, a full pool of its own on an image file).
    chosen = ['tests/scenarios/test_transport.py::test_push_over_ssh_full_incremental_then_in_sync',
              'tests/scenarios/test_selection.py::test_selection_modes',
              'tests/scenarios/test_faults.py::test_connection_cut_mid_stream_then_next_run_completes',
              'tests/scenarios/test_faults.py::test_full_destination_pool_then_grown']
    ran = guest.run('sh', '-c', f'cd {CHECKOUT} && {pytest_in_guest} -q -rA {shlex.join(chosen)} 2>&1; echo rc=$?', timeout=1100)
    assert ran.rstrip().endswith('rc=0'), ran
    passed = re.findall(r'^PASSED (\S+)$', ran, re.M)
    assert sorted(passed) == sorted([f'{chosen[0]}[openzfs]', f'{chosen[1]}[openzfs]', f'{chosen[2]}[openzfs-full]',
                                     f'{chosen[2]}[openzfs-incremental]', f'{chosen[3]}[openzfs]']), ran
    # The fault table's total for the backend: each of the 3 fault cases saw its fault, and none lost data.
    total = re.search(r'^openzfs\s+all fault classes\s+(\d+)\s+(\d+)\s+\d+\s+\d+\s+(\d+)', ran, re.M)
    assert total and total.groups() == ('3', '3', '0'), ran
    assert not [p for p in guest.zpool('list', '-H', '-o', 'name').split() if p.startswith(sandbox_mod.POOL_PREFIX)]
    assert guest.pools_state() == before


def test_the_systemd_tiers_container_runs_zfs_on_the_hosts_openzfs(guest, checkout) -> None:
    before = guest.pools_state()
    sys.path.insert(0, str(REPO_ROOT / 'tests' / 'systemd'))
    import container  # tests/systemd/container.py

    # What the guest is (its release and zfsutils-linux version, read there by the tier's own code) decides the rootfs;
    # it is built here and put where the tier looks for it in the guest.
    identity = guest.sh(f'cd {CHECKOUT}/tests/systemd && python3 -c "import container; print(*container.host_openzfs())"')
    host = container.OpenZFSHost(*identity.split())
    assert host.distro == 'debian' and host.version == guest.sh("dpkg-query -W -f='${Version}' zfsutils-linux"), identity
    rootfs = container.ensure_rootfs(log=lambda msg: print(f'systemd tier: {msg}', file=sys.stderr), openzfs=host)
    guest.copy_tree(rootfs, str(rootfs))

    out = guest.sh(f'cd {CHECKOUT} && python3 tests/systemd/container.py smoke', timeout=900)
    facts = json.loads(out.splitlines()[-1])
    assert facts['backend'] == 'openzfs', facts
    assert facts['zfs_version']['container'] == facts['zfs_version']['host'], facts  # userland and module agree
    assert facts['zfs_version']['host'][-1].startswith('zfs-kmod-2.'), facts
    # A snapshot taken in the container is on the host's pool (same guid).
    assert facts['guid']['container'] == facts['guid']['host'] and facts['guid']['host'].isdigit(), facts
    # Nothing in the container imports, mounts or shares a pool: every ZFS unit masked, no ZFS mount in it.
    assert 'zfs-mount.service' in facts['zfs_units'] and 'zfs-import-cache.service' in facts['zfs_units'], facts
    assert set(facts['zfs_units'].values()) == {'masked'}, facts
    assert facts['zfs_mounts'] == [], facts
    assert facts['system'] in ('running', 'degraded'), facts
    assert not [p for p in guest.zpool('list', '-H', '-o', 'name').split() if p.startswith(sandbox_mod.POOL_PREFIX)]
    assert guest.pools_state() == before
