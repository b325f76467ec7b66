# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The README's set-up on the machines users have: stock Debian 12 and 13, no pyenv.

Each distribution is a debootstrap root (minbase + python3, nothing else: no python3-venv, no pip), built once per
recipe and cached as $ZR_CACHE_DIR/distro-roots-<recipe hash>/<suite>. Every test works on a throwaway overlay of it,
entered with chroot in a private mount namespace (its own /proc, the host's /dev, the checkout bound in read-only,
the host's DNS and TLS trust for the Debian archive and PyPI),
and runs the checkout's own scripts there: `scripts/select-python` (which interpreter and which pinned ansible-core)
and `scripts/bootstrap --demo --venvs-only` (the demo's Python side: the distribution's venv package from the
Debian archive, then venv-demo with ansible-core from PyPI). No ZFS, ssh or test-tier packages are involved.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get('ZR_CACHE_DIR', '/var/cache/zfs-replication'))
MIRROR = os.environ.get('ZR_DEBIAN_MIRROR', 'http://deb.debian.org/debian')
SUITES = ('bookworm', 'trixie')  # Debian 12 (Python 3.11 only), Debian 13 (Python 3.13 only)
PACKAGES = ('python3',)
# Run in each new root (chroot) after debootstrap; changing it changes the cache key. The apt lists go, as on a
# machine that has not run apt-get update lately: bootstrap must fetch them itself.
POST_INSTALL = r"""
set -e
printf '127.0.0.1 localhost\n::1 localhost ip6-localhost\n' > /etc/hosts
apt-get clean
rm -rf /var/lib/apt/lists/*
"""
RECIPE_VERSION = 1
CHROOT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'


def recipe_hash() -> str:
    recipe = '\n'.join([str(RECIPE_VERSION), ','.join(SUITES), MIRROR, ','.join(PACKAGES), POST_INSTALL])
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def _run(argv: list[str], *, timeout: float, **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise RuntimeError(f'{shlex.join(argv)} exited {proc.returncode}:\n{proc.stderr[-4000:] or proc.stdout[-4000:]}')
    return proc


def ensure_root(suite: str) -> Path:
    """The cached root of SUITE for the current recipe; built (about 90 s) when missing. Safe against parallel runs."""
    top = CACHE_DIR / f'distro-roots-{recipe_hash()}'
    root = top / suite
    done = top / f'{suite}.complete'
    if done.exists():
        return root
    top.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / 'distro-roots.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building the same root: wait for it
        if done.exists():
            return root
        if not shutil.which('debootstrap'):
            raise RuntimeError('debootstrap is not installed: run scripts/bootstrap')
        building = top / f'.building-{suite}'
        shutil.rmtree(building, ignore_errors=True)
        t0 = time.monotonic()
        _run(['debootstrap', '--variant=minbase', f'--include={",".join(PACKAGES)}', suite, str(building), MIRROR],
             timeout=1800)
        _run(['chroot', str(building), '/bin/sh', '-c', POST_INSTALL], timeout=300,
             env={'PATH': CHROOT_PATH, 'LC_ALL': 'C'})
        # Roots of older recipes only take disk space.
        for old in CACHE_DIR.glob('distro-roots-*'):
            if old != top and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
        building.rename(root)
        done.write_text(f'built in {time.monotonic() - t0:.0f} s\n')
    return root


MATRIX = {'venv-latest': ('3.12', 'tests/requirements-latest.txt'), 'venv-middle': ('3.13', 'tests/requirements-middle.txt'),
          'venv-oldest': ('3.11', 'tests/requirements-oldest.txt')}
# What the README promises: each distribution's only python3, with the newest pinned ansible-core that supports it.
DEMO_EXPECTED = {'bookworm': ('3.11', 'tests/requirements-oldest.txt'),  # only ansible-core 2.19 runs on 3.11
                 'trixie': ('3.13', 'tests/requirements-latest.txt')}


def pin(requirements: str) -> str:
    found = re.findall(r'^ansible-core==([0-9.]+)\s*$', (REPO / requirements).read_text(), re.M)
    assert len(found) == 1, requirements
    return found[0]


@dataclass
class Machine:
    """A throwaway machine: the cached root of SUITE (never written) under an overlay of this machine's changes."""

    suite: str
    lower: Path
    upper: Path  # what the machine changed (or a test put there)

    def path(self, name: str) -> Path:
        """NAME (absolute, inside the machine) as the host sees it when not entered."""
        changed = self.upper / name.lstrip('/')
        return changed if changed.exists() else self.lower / name.lstrip('/')


def in_root(machine: Machine, command: str, *, timeout: float = 900, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run COMMAND (bash) in MACHINE as root, in private mount and pid namespaces; the checkout is /src (read-only)."""
    setup = r"""
set -e
mount --make-rprivate /
root=$1
mkdir -p "$root"
mount -t overlay overlay -o "lowerdir=$4,upperdir=$5,workdir=$6" "$root"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mkdir -p "$root/src"
mount --bind "$2" "$root/src"
mount -o remount,bind,ro "$root/src"
# This machine's network settings, as any machine on its network has them: DNS, and the TLS trust pip is told to
# use (a proxy's CA may be in it; the local CAs too, for when ca-certificates comes in and rebuilds the bundle).
cp /etc/resolv.conf "$root/etc/resolv.conf"
if [ -f /etc/pip.conf ]; then cp /etc/pip.conf "$root/etc/pip.conf"; fi
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$root/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
fi
if [ -d /usr/local/share/ca-certificates ]; then
    mkdir -p "$root/usr/local/share/ca-certificates"
    cp -a /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
fi
shift 6
exec chroot "$root" /usr/bin/env -i "$@"
"""
    assignments = {'PATH': CHROOT_PATH, 'HOME': '/root', 'LC_ALL': 'C.UTF-8', **(env or {})}
    base = machine.upper.parent
    argv = ['unshare', '--mount', '--pid', '--fork', '--kill-child', '/bin/sh', '-c', setup, 'in-root', str(base / 'merged'),
            str(REPO), '-', str(machine.lower), str(machine.upper), str(base / 'work'),
            *(f'{k}={v}' for k, v in assignments.items()), '/bin/bash', '-c', command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)


def assignments(stdout: str) -> dict[str, str]:
    """select-python's KEY=VALUE lines (printf %q quoting: '' for empty, plain paths otherwise)."""
    pairs = dict(line.split('=', 1) for line in stdout.splitlines() if line.startswith('ZR_'))
    return {k: '' if v == "''" else v for k, v in pairs.items()}


@pytest.fixture(scope='module', params=SUITES)
def distro(request: pytest.FixtureRequest) -> tuple[str, Path]:
    return request.param, ensure_root(request.param)


@pytest.fixture
def machine(distro: tuple[str, Path], tmp_path: Path):
    """A throwaway machine of the suite's release (its cached root under an overlay): stock, without pyenv."""
    suite, cached = distro
    base = tmp_path / suite
    for name in ('upper', 'work'):
        (base / name).mkdir(parents=True)
    root = Machine(suite, cached, base / 'upper')
    proc = in_root(root, 'python3 -c "import sys; print(\'%d.%d\' % sys.version_info[:2])"; command -v pyenv || true; '
                         'ls -d /root/.pyenv 2>/dev/null || true; python3 -c "import ensurepip" 2>/dev/null && echo ensurepip || true')
    assert proc.returncode == 0, proc.stderr
    # Stock: one python3, no pyenv anywhere, and no python3-venv (so no ensurepip).
    assert proc.stdout.split() == [DEMO_EXPECTED[suite][0]], proc.stdout
    yield suite, root
    shutil.rmtree(base, ignore_errors=True)


def test_select_python_takes_the_distributions_python3_with_the_newest_ansible_core_supporting_it(machine):
    suite, root = machine
    version, requirements = DEMO_EXPECTED[suite]
    proc = in_root(root, '/src/scripts/select-python demo')
    assert proc.returncode == 0, proc.stderr
    assert assignments(proc.stdout) == {'ZR_PYTHON': '/usr/bin/python3', 'ZR_PYTHON_VERSION': version,
                                        'ZR_REQUIREMENTS': f'/src/{requirements}', 'ZR_ANSIBLE_CORE': pin(requirements),
                                        'ZR_VENV_PACKAGE': f'python{version}-venv'}
    assert f"/usr/bin/python3 (Python {version}, the distribution's python3) with ansible-core {pin(requirements)}" in proc.stderr


def test_select_python_for_the_test_matrix_uses_the_distributions_version_or_names_what_to_install(machine):
    suite, root = machine
    have = DEMO_EXPECTED[suite][0]
    for venv, (version, requirements) in MATRIX.items():
        proc = in_root(root, f'/src/scripts/select-python {venv}')
        if version == have:
            assert proc.returncode == 0, proc.stderr
            assert assignments(proc.stdout)['ZR_PYTHON'] == f'/usr/bin/python{version}'
            assert assignments(proc.stdout)['ZR_ANSIBLE_CORE'] == pin(requirements)
        else:
            assert proc.returncode == 1, (venv, proc.stdout, proc.stderr)
            assert proc.stdout == ''
            for words in (f'{venv} (ansible-core {pin(requirements)}', f'needs Python {version}', f'pyenv install {version}',
                          f'apt-get install python{version} python{version}-venv'):
                assert words in proc.stderr, (words, proc.stderr)


def test_bootstrap_for_the_test_matrix_names_every_missing_python_and_installs_nothing(machine):
    suite, root = machine
    have = DEMO_EXPECTED[suite][0]
    proc = in_root(root, '/src/scripts/bootstrap --venvs-only')
    assert proc.returncode == 1, proc.stdout + proc.stderr
    missing = [venv for venv, (version, _req) in MATRIX.items() if version != have]
    for venv in missing:
        assert f'{venv} (ansible-core {pin(MATRIX[venv][1])}: sanity and unit tests) needs Python {MATRIX[venv][0]}' in proc.stderr
    assert 'nothing was installed' in proc.stderr
    assert not root.path('/var/cache/zfs-replication').exists()
    assert not root.path(f'/usr/share/doc/python{have}-venv').exists()


def test_bootstrap_demo_builds_venv_demo_from_the_distributions_python3(machine):
    suite, root = machine
    version, requirements = DEMO_EXPECTED[suite]
    core = pin(requirements)
    proc = in_root(root, '/src/scripts/bootstrap --demo --venvs-only')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f'installing Debian packages: python{version}-venv\n' in proc.stdout
    assert 'venv-demo: built in' in proc.stdout
    venv = '/var/cache/zfs-replication/venv-demo'

    # The venv runs on the distribution's interpreter with the pinned ansible-core, and that ansible-core's own
    # support matrix (ansible-test's CONTROLLER_PYTHON_VERSIONS) lists this Python for the controller.
    probe = ('import os, sys, ansible.release; from ansible_test._util.target.common import constants; '
             'print(os.path.realpath(sys._base_executable), ansible.release.__version__, '
             '"%d.%d" % sys.version_info[:2] in constants.CONTROLLER_PYTHON_VERSIONS)')
    out = in_root(root, f'{venv}/bin/python -c {shlex.quote(probe)}')
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [f'/usr/bin/python{version}', core, 'True']
    # It works as a controller: a real module run on this machine.
    ping = in_root(root, f'{venv}/bin/ansible localhost -c local -m ansible.builtin.ping')
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert '"ping": "pong"' in ping.stdout

    # Only the Python side was installed: no ZFS, no sshd.
    dpkg = in_root(root, "dpkg-query -W -f='${Package} ${Status}\\n' zfs-fuse openssh-server python" + version + '-venv 2>/dev/null; true')
    installed = [line.split()[0] for line in dpkg.stdout.splitlines() if line.endswith(' install ok installed')]
    assert installed == [f'python{version}-venv'], dpkg.stdout

    # A second run changes nothing.
    marker = root.path(f'{venv}/.requirements.sha256')
    before = marker.stat().st_mtime_ns
    again = in_root(root, '/src/scripts/bootstrap --demo --venvs-only')
    assert again.returncode == 0, again.stdout + again.stderr
    assert f'venv-demo: up to date (Python {version}.' in again.stdout
    assert 'installing' not in again.stdout
    assert marker.stat().st_mtime_ns == before

    # pyenv, when present, comes first for the test matrix (now that this interpreter can build venvs); the demo keeps
    # the distribution's python3. The pyenv build is the distribution's binary copied into a pyenv layout.
    matrix_venv = next(name for name, (v, _req) in MATRIX.items() if v == version)
    pyenv_python = f'/opt/pyenv/versions/{version}.99/bin/python'
    (root.upper / pyenv_python.lstrip('/')).parent.mkdir(parents=True)
    shutil.copy2(root.path(f'/usr/bin/python{version}'), root.upper / pyenv_python.lstrip('/'))
    picked = {}
    for what in (matrix_venv, 'demo'):
        proc = in_root(root, f'/src/scripts/select-python {what}', env={'PYENV_ROOT': '/opt/pyenv'})
        assert proc.returncode == 0, proc.stderr
        picked[what] = assignments(proc.stdout)['ZR_PYTHON']
    assert picked == {matrix_venv: pyenv_python, 'demo': '/usr/bin/python3'}


def test_the_controller_python_table_matches_the_installed_ansible_core_releases():
    """scripts/select-python's CONTROLLER_PYTHONS is what each pinned release's ansible-test declares."""
    table = dict(re.findall(r'^\s*\[(\d+\.\d+)\]="([^"]+)"', (REPO / 'scripts/select-python').read_text(), re.M))
    probe = ('import ansible.release; from ansible_test._util.target.common import constants; '
             'print(ansible.release.__version__, *constants.CONTROLLER_PYTHON_VERSIONS)')
    for venv, (_version, requirements) in MATRIX.items():
        python = CACHE_DIR / venv / 'bin/python'
        assert python.exists(), f'{python} is missing: run scripts/bootstrap'
        version, *controller = _run([str(python), '-c', probe], timeout=60).stdout.split()
        assert version == pin(requirements), f'{venv} has ansible-core {version}, {requirements} pins {pin(requirements)}'
        minor = version.rsplit('.', 1)[0]
        assert table.get(minor, '').split() == controller, (minor, table.get(minor), controller)


if __name__ == '__main__':  # build the cached roots ahead of a test run
    for name in SUITES:
        print(ensure_root(name))
