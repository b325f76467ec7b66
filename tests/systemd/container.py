# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A real systemd for the role's timers: a debootstrap rootfs booted with systemd-nspawn.

Standard library only. The rootfs is built once and cached under ${ZR_CACHE_DIR:-/var/cache/zfs-replication}
in a directory named after the hash of its recipe; every boot uses ``--volatile=overlay``, so the cache stays
clean and each boot starts from the same state (no timer catching up on a run missed by an earlier boot).

Inside the container:

* ZFS is the host's: on a host without ZFS, its zfs-fuse daemon (the rootfs has the zfs-fuse package, its own
  daemon masked, and the host's socket directory /run/zfs is bound in); on a host that runs OpenZFS, its kernel
  module (the rootfs has zfsutils-linux at the host's exact version, from the host's distribution release, every
  ZFS unit masked, and /dev/zfs is bound in). Either way ``zfs`` in the container manages the host's pools and
  nothing in the container imports, mounts or shares a pool at boot;
* an sshd (the rootfs's ssh.service) listens on a free 127.0.0.1 port with a host key and an authorized key
  made for this boot, so Ansible reaches it the way it reaches any host, host key verified;
* ``exec()`` runs commands through nsenter into the container's namespaces.

Hybrid cgroups on these machines: nspawn is started from a cgroup of its own under
/sys/fs/cgroup/{systemd,unified}/NAME (without that it cannot set up the container's cgroups), removed after.

    python tests/systemd/container.py build     # build (or find) the cached rootfs, print its path
    python tests/systemd/container.py build-openzfs DISTRO SUITE VERSION
                                                # the rootfs of a host that runs OpenZFS (e.g. debian bookworm
                                                # 2.3.2-1~bpo12+1), built here for a host that cannot fetch it
    python tests/systemd/container.py shell     # boot one and open a shell inside (exit to stop it)
    python tests/systemd/container.py smoke     # boot one on a sandbox of its own, print what it sees (JSON)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sandbox  # noqa: E402  tests/sandbox.py: the sandbox's pools, and whether this host runs OpenZFS

CACHE_DIR = Path(os.environ.get('ZR_CACHE_DIR', '/var/cache/zfs-replication'))
MIRROR = os.environ.get('ZR_DEBIAN_MIRROR', 'http://deb.debian.org/debian')
SUITE = 'bookworm'
PACKAGES = ('systemd', 'systemd-sysv', 'dbus', 'python3', 'openssh-server', 'zfs-fuse', 'pv', 'tzdata')
# Run inside the new rootfs (chroot) after debootstrap. Changing the recipe changes the cache key.
POST_INSTALL = r"""
set -e
# The host's zfs-fuse daemon serves the container (its socket is bound in): never start one here.
rm -f /etc/systemd/system/*.wants/zfs-fuse.service
ln -sf /dev/null /etc/systemd/system/zfs-fuse.service
# debootstrap leaves these out or copies the host's.
printf '127.0.0.1 localhost\n::1 localhost ip6-localhost\n' > /etc/hosts
echo zr-systemd > /etc/hostname
ln -sf /usr/share/zoneinfo/Etc/UTC /etc/localtime
echo Etc/UTC > /etc/timezone
# Each boot brings its own host key (bound in); none baked into the image.
rm -f /etc/ssh/ssh_host_*
# Nothing to do in a test container, and slow or noisy there.
for unit in e2scrub_reap.service e2scrub_all.timer apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer \
            fstrim.timer systemd-timesyncd.service getty@tty1.service console-getty.service; do
    ln -sf /dev/null "/etc/systemd/system/$unit"
done
mkdir -p /root/.ssh && chmod 700 /root/.ssh
apt-get clean
rm -rf /var/lib/apt/lists/*
"""
RECIPE_VERSION = 1

# On a host that runs OpenZFS: the rootfs is of the host's distribution release, and its zfsutils-linux is the
# host's version exactly (userland and kernel module must agree), from that release's archive (backports included).
# Every ZFS unit is masked and the mount generator removed: the host owns its pools; the container only runs zfs.
OPENZFS_ARCHIVES = {  # the mirror debootstrap uses, the components, the apt sources (mirror, suite)
    'debian': ('http://deb.debian.org/debian', 'main contrib',
               (('http://deb.debian.org/debian', '{suite}'), ('http://deb.debian.org/debian', '{suite}-updates'),
                ('http://deb.debian.org/debian-security', '{suite}-security'),
                ('http://deb.debian.org/debian', '{suite}-backports'))),
    'ubuntu': ('http://archive.ubuntu.com/ubuntu', 'main universe',
               (('http://archive.ubuntu.com/ubuntu', '{suite}'), ('http://archive.ubuntu.com/ubuntu', '{suite}-updates'),
                ('http://security.ubuntu.com/ubuntu', '{suite}-security'))),
}
OPENZFS_POST_INSTALL = r"""
set -e
: > /etc/apt/sources.list
# Every suite at the same priority (backports too): the pinned version decides, and its dependencies follow it.
: > /etc/apt/preferences.d/zr-suites
echo "$ZR_SOURCES" | while read -r mirror suite; do
    echo "deb $mirror $suite $ZR_COMPONENTS" >> /etc/apt/sources.list
    printf 'Package: *\nPin: release n=%s\nPin-Priority: 500\n\n' "$suite" >> /etc/apt/preferences.d/zr-suites
done
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
mount -t proc proc /proc
trap 'umount /proc' EXIT
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "zfsutils-linux=$ZR_ZFS_VERSION"
rm -f /usr/sbin/policy-rc.d
for unit in /lib/systemd/system/zfs* /usr/lib/systemd/system/zfs*; do
    [ -e "$unit" ] && ln -sf /dev/null "/etc/systemd/system/$(basename "$unit")"
done
rm -f /lib/systemd/system-generators/zfs-mount-generator /usr/lib/systemd/system-generators/zfs-mount-generator
"""


# What the tier's tests apply in the container (declaration in extravars), over the container's sshd; pipelining
# keeps each task to one ssh round trip.
ROLE_PLAYBOOK = """
- name: Apply the scheduler role
  hosts: zrsystemd
  gather_facts: false
  roles:
    - role: zfs.replication.scheduler
"""
PIPELINING = {'ANSIBLE_PIPELINING': '1'}


def role_dirs(name: str) -> dict[str, str]:
    """The scheduler role's engine, launcher, config, state and log paths of a test of its own (zr-NAME), so that
    the tests sharing the container never see each other's units and files."""
    return {'scheduler_engine_dir': f'/usr/local/lib/zr-{name}', 'scheduler_launcher': f'/usr/local/sbin/zr-{name}-run',
            'scheduler_status_command': f'/usr/local/sbin/zr-{name}-status',
            'scheduler_config_dir': f'/etc/zr-{name}/tasks', 'scheduler_state_dir': f'/var/lib/zr-{name}',
            'scheduler_log_dir': f'/var/log/zr-{name}'}


def remove_role_install(ansible_playbook, container: Container, inventory_text: str, dirs: dict[str, str]) -> None:
    """Declared is actual: an empty declaration removes the units, configs and state a test installed with DIRS
    (role_dirs); then the engine, launcher, logs and directories go too."""
    ansible_playbook(ROLE_PLAYBOOK, extravars={**dirs, 'scheduler_snapshot_tasks': [], 'scheduler_replication_tasks': []},
                     inventory_text=inventory_text, env=PIPELINING)
    container.exec('rm', '-rf', *[dirs[k] for k in ('scheduler_engine_dir', 'scheduler_launcher', 'scheduler_status_command', 'scheduler_log_dir')],
                   str(Path(dirs['scheduler_config_dir']).parent), dirs['scheduler_state_dir'])


class ContainerError(RuntimeError):
    pass


class OpenZFSHost(NamedTuple):
    """What the rootfs of a host that runs OpenZFS is made of: its distribution (os-release ID), release codename
    and zfsutils-linux version."""
    distro: str
    suite: str
    version: str


def host_openzfs() -> OpenZFSHost | None:
    """This host's OpenZFS (its kernel module loaded and `zfs version` naming it), or None: then the container
    uses zfs-fuse. Raises ContainerError when the host runs OpenZFS that no package archive can match."""
    if not sandbox.native_openzfs():
        return None
    release = dict(line.split('=', 1) for line in Path('/etc/os-release').read_text().splitlines() if '=' in line)
    distro, suite = release.get('ID', '').strip('"'), release.get('VERSION_CODENAME', '').strip('"')
    if distro not in OPENZFS_ARCHIVES or not suite:
        raise ContainerError(f'this host runs OpenZFS on {distro or "an unknown distribution"} {suite}: the systemd '
                             f'tier builds its container for {" or ".join(OPENZFS_ARCHIVES)} hosts only')
    version = _run(['dpkg-query', '-W', '-f=${Version}', 'zfsutils-linux'], check=False).stdout.strip()
    if not version:
        raise ContainerError('this host runs OpenZFS but not from the zfsutils-linux package: the systemd tier\'s '
                             'container needs the same userland at the same version; install it from your distribution')
    return OpenZFSHost(distro, suite, version)


def recipe_hash(openzfs: OpenZFSHost | None = None) -> str:
    recipe = '\n'.join([str(RECIPE_VERSION), SUITE, MIRROR, ','.join(PACKAGES), POST_INSTALL])
    if openzfs is not None:
        recipe = '\n'.join([recipe, 'openzfs', *openzfs, OPENZFS_POST_INSTALL])
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def _run(argv: list[str], *, timeout: float = 600, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
    if check and proc.returncode != 0:
        raise ContainerError(f'{" ".join(argv)} exited {proc.returncode}:\n{proc.stderr[-4000:] or proc.stdout[-4000:]}')
    return proc


def ensure_rootfs(log=print, openzfs: OpenZFSHost | None = None) -> Path:
    """The cached rootfs for the current recipe; built (about 70-90 s) when missing. Safe against parallel runs.
    OPENZFS: the rootfs of a host that runs that OpenZFS (host_openzfs()) instead of zfs-fuse's."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    family = 'systemd-rootfs-' if openzfs is None else 'systemd-rootfs-openzfs-'
    root = CACHE_DIR / f'{family}{recipe_hash(openzfs)}'
    done = root / '.zr-complete'
    if done.exists():
        return root
    with open(CACHE_DIR / 'systemd-rootfs.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building the same rootfs: wait for it
        if done.exists():
            return root
        for missing in ('debootstrap', 'systemd-nspawn', 'nsenter'):
            if not shutil.which(missing):
                raise ContainerError(f'{missing} is not installed: run scripts/bootstrap')
        building = CACHE_DIR / f'.building-{root.name}'
        shutil.rmtree(building, ignore_errors=True)
        t0 = time.monotonic()
        log(f'building the systemd rootfs {root.name} with debootstrap (a few minutes, once)')
        env = {'PATH': '/usr/sbin:/usr/bin:/sbin:/bin', 'LC_ALL': 'C'}
        if openzfs is None:
            _run(['debootstrap', '--variant=minbase', f'--include={",".join(PACKAGES)}', SUITE, str(building), MIRROR],
                 timeout=1800)
        else:
            mirror, components, sources = OPENZFS_ARCHIVES[openzfs.distro]
            packages = [p for p in PACKAGES if p != 'zfs-fuse']
            _run(['debootstrap', '--variant=minbase', f'--include={",".join(packages)}', openzfs.suite, str(building),
                  mirror], timeout=1800)
            try:
                _run(['chroot', str(building), '/bin/sh', '-c', OPENZFS_POST_INSTALL], timeout=900,
                     env={**env, 'ZR_COMPONENTS': components, 'ZR_ZFS_VERSION': openzfs.version,
                          'ZR_SOURCES': '\n'.join(f'{m} {s.format(suite=openzfs.suite)}' for m, s in sources)})
            except ContainerError as exc:
                raise ContainerError(f'the container for this OpenZFS host needs zfsutils-linux {openzfs.version} from '
                                     f'{mirror} ({openzfs.suite}): {exc}') from None
        _run(['chroot', str(building), '/bin/sh', '-c', POST_INSTALL], timeout=300, env=env)
        # Older rootfs builds (other recipes) of the same kind only take disk space; the other kind's may be booted
        # (the OpenZFS guest's test builds one for the guest while the zfs-fuse lane boots its own).
        for old in CACHE_DIR.glob('systemd-rootfs-*'):
            if old != root and old.is_dir() and old.name.startswith('systemd-rootfs-openzfs-') == (openzfs is not None):
                shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
        building.rename(root)
        done.write_text(f'built in {time.monotonic() - t0:.0f} s\n')
        log(f'built {root} in {time.monotonic() - t0:.0f} s')
    return root


def free_port() -> int:
    for _attempt in range(50):
        with socket.socket() as s:
            s.bind(('127.0.0.1', 0))
            port = s.getsockname()[1]
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(('127.0.0.1', port)) != 0:
                return port
    raise ContainerError('no free port on 127.0.0.1')


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path('/proc').glob('[0-9]*/stat'):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(') ', 1)[1].split()[1]) == pid:
                kids.append(int(stat.parent.name))
    return kids


# Hybrid hierarchies (these machines): the named systemd one and the unified one; a unified-only host (cgroup v2,
# a stock systemd host): its root.
CGROUP_ROOTS = ((Path('/sys/fs/cgroup/systemd'), Path('/sys/fs/cgroup/unified'))
                if Path('/sys/fs/cgroup/systemd').is_dir() else (Path('/sys/fs/cgroup'),))


class Container:
    """One boot of the cached rootfs. Use as a context manager: boot() ... stop()."""

    def __init__(self, workdir: str | os.PathLike[str], rootfs: Path | None = None, name: str | None = None,
                 openzfs: OpenZFSHost | None = None) -> None:
        self.workdir = Path(workdir).resolve()
        self.rootfs = rootfs
        self.openzfs = openzfs  # host_openzfs() of this host: the rootfs was built for it and /dev/zfs is bound in
        self.name = name or f'zrsd{secrets.token_hex(3)}'
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader = 0  # pid of the container's systemd, as seen from the host
        self.client_key = self.workdir / 'id_ed25519'
        self.known_hosts = self.workdir / 'known_hosts'
        self.log = self.workdir / 'nspawn.log'
        self.cgroups = [r / self.name for r in CGROUP_ROOTS if r.is_dir()]

    # ----------------------------------------------------------------------------------------------- lifecycle

    def _write_files(self) -> None:
        run_dir = self.workdir / 'run'
        run_dir.mkdir(parents=True, exist_ok=True)
        host_key = run_dir / 'ssh_host_ed25519_key'
        for key in (host_key, self.client_key):
            if not key.exists():
                _run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', f'{self.name}-{key.name}', '-f', str(key)])
        (run_dir / 'authorized_keys').write_text(Path(f'{self.client_key}.pub').read_text())
        (run_dir / 'sshd.conf').write_text('\n'.join([
            'ListenAddress 127.0.0.1',
            f'Port {self.port}',
            'HostKey /zr-run/ssh_host_ed25519_key',
            'AuthorizedKeysFile /zr-run/authorized_keys',
            'PermitRootLogin prohibit-password',
            'PasswordAuthentication no',
            'KbdInteractiveAuthentication no',
            'StrictModes no',
            'UseDNS no',
            'MaxSessions 64',
            'MaxStartups 64:30:128',
            '',
        ]))
        pub = Path(f'{host_key}.pub').read_text().split()
        self.known_hosts.write_text(f'[127.0.0.1]:{self.port} {pub[0]} {pub[1]}\n')

    def _enter_cgroups(self) -> None:  # runs in the child between fork and exec
        for cg in self.cgroups:
            (cg / 'cgroup.procs').write_text(str(os.getpid()))

    def boot(self, timeout: float = 60) -> Container:
        if self.rootfs is None:
            self.rootfs = ensure_rootfs(openzfs=self.openzfs)
        if self.openzfs is not None:
            zfs_bind = '--bind=/dev/zfs'
            if not Path('/dev/zfs').exists():
                raise ContainerError('/dev/zfs does not exist: load the zfs kernel module (modprobe zfs)')
        else:
            zfs_bind = '--bind=/run/zfs:/run/zfs'
            if not Path('/run/zfs').is_dir():
                raise ContainerError('/run/zfs does not exist: start zfs-fuse first (the sandbox fixture does)')
        self.port = free_port()
        self._write_files()
        for cg in self.cgroups:
            cg.mkdir(exist_ok=True)
        argv = ['systemd-nspawn', '-D', str(self.rootfs), '-b', '-M', self.name, '--register=no', '--keep-unit',
                '--console=passive', '--volatile=overlay', zfs_bind,
                f'--bind-ro={self.workdir / "run"}:/zr-run',
                f'--bind-ro={self.workdir / "run" / "sshd.conf"}:/etc/ssh/sshd_config.d/zr-test.conf']
        with open(self.log, 'ab') as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, close_fds=True, preexec_fn=self._enter_cgroups)
        deadline = time.monotonic() + timeout
        state = ''
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise ContainerError(f'systemd-nspawn exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}')
                if not self.leader:
                    kids = _children(self.proc.pid)
                    self.leader = kids[0] if kids else 0
                if self.leader:
                    state = self.exec('systemctl', 'is-system-running', check=False, timeout=10).stdout.strip()
                    if state in ('running', 'degraded') and self._ssh_answers():
                        return self
                time.sleep(0.2)
            raise ContainerError(f'container did not come up within {timeout:.0f} s (state {state!r}):\n'
                                 f'{self.log.read_text()[-3000:]}')
        except BaseException:
            self.stop()
            raise

    def _ssh_answers(self) -> bool:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(('127.0.0.1', self.port)) != 0:
                return False
        return self.ssh('true', check=False, timeout=15).returncode == 0

    def stop(self, timeout: float = 30) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            # nspawn turns SIGTERM into an orderly poweroff of the container's systemd.
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.proc = None
        self.leader = 0
        for cg in self.cgroups:
            if cg.exists():
                for d in sorted((p for p in cg.rglob('*') if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                    with contextlib.suppress(OSError):
                        d.rmdir()
                with contextlib.suppress(OSError):
                    cg.rmdir()

    def __enter__(self) -> Container:
        return self.boot()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ----------------------------------------------------------------------------------------------- inside

    def exec(self, *argv: str, check: bool = True, timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ARGV inside the container (its mount, pid, uts, ipc namespaces), as root, with a plain environment."""
        if not self.leader:
            raise ContainerError('container is not running')
        cmd = ['nsenter', '-t', str(self.leader), '-m', '-p', '-u', '-i', '--',
               'env', '-i', 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'LC_ALL=C.UTF-8',
               'SYSTEMD_PAGER=', 'SYSTEMD_COLORS=0', *argv]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise ContainerError(f'in container: {" ".join(argv)} exited {proc.returncode}:\n{proc.stderr[-4000:]}'
                                 f'\n{proc.stdout[-2000:]}')
        return proc

    def ssh_options(self) -> list[str]:
        return ['-F', '/dev/null', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=yes',
                '-o', f'UserKnownHostsFile={self.known_hosts}', '-o', 'IdentitiesOnly=yes', '-i', str(self.client_key),
                '-p', str(self.port)]

    def ssh(self, *remote: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return _run(['ssh', *self.ssh_options(), 'root@127.0.0.1', *remote], check=check, timeout=timeout)

    def ansible_host_vars(self) -> dict[str, str]:
        return {
            'ansible_host': '127.0.0.1',
            'ansible_port': str(self.port),
            'ansible_user': 'root',
            'ansible_connection': 'ssh',
            'ansible_python_interpreter': '/usr/bin/python3',
            'ansible_ssh_private_key_file': str(self.client_key),
            'ansible_ssh_common_args': f'-F /dev/null -o StrictHostKeyChecking=yes -o UserKnownHostsFile={self.known_hosts} '
                                       '-o IdentitiesOnly=yes',
        }


def smoke(workdir: Path) -> dict[str, object]:
    """Boot a container on a sandbox of its own (tests/sandbox.py: two pools, this host's ZFS) and return what it
    sees: `zfs version` inside and out, a snapshot taken inside as the host sees it (guid), the ZFS units' states,
    the ZFS mounts in its mount namespace and its system state. The sandbox is gone afterwards."""
    facts: dict[str, object] = {}
    box = sandbox.Sandbox(workdir / 'sandbox')
    box.up()
    try:
        dataset = f'{box.src_pool}/smoke'
        _run([sandbox.ZFS, 'create', dataset])
        with Container(workdir / 'container', openzfs=host_openzfs()) as c:
            facts['backend'] = box.zfs
            if box.zfs == 'openzfs':  # zfs-fuse has no `zfs version`
                facts['zfs_version'] = {'host': _run([sandbox.ZFS, 'version']).stdout.split(),
                                        'container': c.exec('zfs', 'version').stdout.split()}
            c.exec('zfs', 'snapshot', f'{dataset}@in-container')
            guid = ('get', '-H', '-p', '-o', 'value', 'guid', f'{dataset}@in-container')
            facts['guid'] = {'container': c.exec('zfs', *guid).stdout.strip(), 'host': _run([sandbox.ZFS, *guid]).stdout.strip()}
            units = c.exec('systemctl', 'list-unit-files', '--no-legend', '--no-pager', 'zfs*').stdout.split('\n')
            facts['zfs_units'] = dict(line.split()[:2] for line in units if line.strip())
            facts['zfs_mounts'] = [line for line in c.exec('cat', '/proc/self/mounts').stdout.splitlines() if line.split()[2:3] == ['zfs']]
            facts['system'] = c.exec('systemctl', 'is-system-running', check=False).stdout.strip()
    finally:
        box.down()
    return facts


def main(argv: list[str]) -> int:
    action = argv[1] if len(argv) > 1 else 'build'
    if action == 'build':
        print(ensure_rootfs(openzfs=host_openzfs()))
        return 0
    if action == 'build-openzfs' and len(argv) == 5:
        print(ensure_rootfs(openzfs=OpenZFSHost(*argv[2:5])))
        return 0
    if action == 'smoke':
        workdir = Path(f'/tmp/zr-systemd-smoke-{os.getpid()}')
        workdir.mkdir()
        try:
            print(json.dumps(smoke(workdir)))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return 0
    if action == 'shell':
        workdir = Path(f'/tmp/zr-systemd-shell-{os.getpid()}')
        workdir.mkdir()
        with Container(workdir, openzfs=host_openzfs()) as c:
            print(f'container {c.name} up; ssh: ssh {" ".join(c.ssh_options())} root@127.0.0.1', flush=True)
            subprocess.run(['nsenter', '-t', str(c.leader), '-m', '-p', '-u', '-i', '--', '/bin/bash', '-l'], check=False)
        shutil.rmtree(workdir, ignore_errors=True)
        return 0
    print(__doc__)
    return 2


if __name__ == '__main__':
    sys.exit(main(sys.argv))
