# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An OpenZFS 2.x guest for the conformance tier: Debian bookworm + zfs-dkms in qemu (TCG); ZR_OPENZFS=2.3 (default,
from bookworm-backports) or 2.1 (bookworm's own).

Standard library only. Needs root, debootstrap, qemu-system-x86 and e2fsprogs on the host (scripts/bootstrap).

    python3 tests/openzfs/vm.py build    # build the image unless the cache has it (~11 min cold, mostly DKMS)
    python3 tests/openzfs/vm.py start    # boot it (~1 min), print the state JSON, leave it running
    python3 tests/openzfs/vm.py ssh CMD  # run CMD in the last started guest
    python3 tests/openzfs/vm.py stop     # power it off and remove its run directory
    python3 tests/openzfs/vm.py path     # print the image's cache directory (built or not); `status`: as JSON
    python3 tests/openzfs/vm.py prune    # remove the cached images of other (older) recipes

The image lives in $ZR_VM_CACHE (default /var/cache/zfs-replication/openzfs-vm)/<hash of the recipe>/: kernel,
initrd, the raw ext4 root filesystem, the root login key and the guest's sshd host key. Change anything in RECIPE
or in the build functions and the hash changes, so the next run builds a new image. The root filesystem is
booted copy-on-write (qemu `snapshot=on`): it is the same at every boot. Each started guest gets a run directory
with two sparse pool disks (guest: /dev/disk/by-id/virtio-zrpool0 and ...-zrpool1), the serial console log, the
ssh ControlMaster socket and state.json; `stop` removes it. SSH goes to 127.0.0.1:<free port> (qemu user
networking, `restrict=on`: the guest reaches nothing but its forwarded port) with the host key checked.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import hashlib
import inspect
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CACHE_ROOT = Path(os.environ.get('ZR_VM_CACHE') or '/var/cache/zfs-replication/openzfs-vm')
LAST_LINK = Path('/tmp/zr-openzfs-vm-last')
MIRROR = 'http://deb.debian.org/debian'
SECURITY_MIRROR = 'http://deb.debian.org/debian-security'

# The OpenZFS releases the guest can carry: ZR_OPENZFS picks one (default 2.3, what CI runs). 2.3 is the newest
# Debian offers (bookworm-backports); 2.1 is bookworm's own 2.1.11, what Debian 12 and Ubuntu 22.04 users have.
OPENZFS_RELEASES = {
    '2.3': {'zfs_suite': 'bookworm-backports', 'zfs_version_prefix': '2.3.'},
    '2.1': {'zfs_suite': 'bookworm', 'zfs_version_prefix': '2.1.'},
}
OPENZFS_RELEASE = os.environ.get('ZR_OPENZFS') or '2.3'
if OPENZFS_RELEASE not in OPENZFS_RELEASES:
    raise SystemExit(f'ZR_OPENZFS={OPENZFS_RELEASE}: not a release the guest can carry; use one of '
                     f'{", ".join(sorted(OPENZFS_RELEASES))}')

# Everything that decides what the image contains. The hash of this (plus the build functions' source) names the
# cache directory. The kernel version is resolved at build time (what linux-image-amd64 depends on then).
# The stream tools are the ones the engine's pipelines may use on a host (netcat, mbuffer, the compressors).
# systemd-container: the guest is a host that runs OpenZFS, where the systemd tier boots its container (nspawn).
RECIPE = {
    'suite': 'bookworm',
    'variant': 'minbase',
    'components': 'main,contrib',
    'base_packages': ['initramfs-tools', 'systemd-sysv', 'udev', 'openssh-server', 'iproute2', 'python3', 'python3-venv', 'sudo',
                      'pv', 'kmod', 'procps', 'netcat-openbsd', 'mbuffer', 'lz4', 'zstd', 'pigz', 'xz-utils',
                      'plzip', 'systemd-container'],
    'zfs_packages': ['zfs-dkms', 'zfsutils-linux'],
    **OPENZFS_RELEASES[OPENZFS_RELEASE],
    'rootfs_min_bytes': 3 << 30,
    'hostname': 'zrvm',
}

QEMU = shutil.which('qemu-system-x86_64') or '/usr/bin/qemu-system-x86_64'
POOL_DISKS = ('zrpool0', 'zrpool1')
GUEST_USER = 'root'
GUEST_KEX = 'curve25519-sha256,curve25519-sha256@libssh.org'  # see start()


class VMError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f'openzfs-vm: {msg}', file=sys.stderr, flush=True)


def _run(argv: list[str], *, check: bool = True, timeout: float | None = 600, capture: bool = True,
         env: dict[str, str] | None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=capture, text=True, timeout=timeout, env=env, input=input,
                          stdin=subprocess.DEVNULL if input is None else None, check=False)
    if check and proc.returncode != 0:
        detail = ((proc.stderr or '') + (proc.stdout or '')).strip()[-3000:] if capture else '(output above)'
        raise VMError(f'{shlex.join(argv)} exited {proc.returncode}: {detail}')
    return proc


# ----------------------------------------------------------------------------------------------------------------
# Build
# ----------------------------------------------------------------------------------------------------------------

def recipe_hash() -> str:
    h = hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode())
    for fn in (_build_rootfs, _configure_guest, _make_image):  # what decides the image's content
        h.update(inspect.getsource(fn).encode())
    return h.hexdigest()[:16]


def image_dir() -> Path:
    return CACHE_ROOT / recipe_hash()


def is_built(directory: Path | None = None) -> bool:
    return ((directory or image_dir()) / 'image.json').exists()


def _chroot_env() -> dict[str, str]:
    return {'PATH': '/usr/sbin:/usr/bin:/sbin:/bin', 'HOME': '/root', 'LC_ALL': 'C.UTF-8', 'LANG': 'C.UTF-8',
            'DEBIAN_FRONTEND': 'noninteractive', 'DEBCONF_NONINTERACTIVE_SEEN': 'true', 'TERM': 'dumb'}


class _Mounts:
    """proc/sys/dev mounted into the chroot for apt and DKMS; always unmounted again (lazily if busy)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.done: list[Path] = []

    def __enter__(self) -> _Mounts:
        for fstype, src, dst, opts in (('proc', 'proc', 'proc', []), ('sysfs', 'sys', 'sys', []),
                                       (None, '/dev', 'dev', ['--bind']), (None, '/dev/pts', 'dev/pts', ['--bind'])):
            target = self.root / dst
            target.mkdir(parents=True, exist_ok=True)
            argv = ['mount', *opts, src, str(target)] if fstype is None else ['mount', '-t', fstype, src, str(target)]
            _run(argv)
            self.done.append(target)
        return self

    def __exit__(self, *exc: object) -> None:
        for target in reversed(self.done):
            if _run(['umount', str(target)], check=False).returncode != 0:
                _run(['umount', '-l', str(target)], check=False)
        self.done.clear()


def _chroot(root: Path, script: str, logf, timeout: float = 3600) -> None:
    """Run a shell script in the chroot, output to the build log."""
    logf.write(f'\n### chroot: {script}\n')
    logf.flush()
    proc = subprocess.run(['chroot', str(root), '/bin/sh', '-ec', script], stdin=subprocess.DEVNULL, stdout=logf,
                          stderr=subprocess.STDOUT, env=_chroot_env(), timeout=timeout, check=False)
    if proc.returncode != 0:
        raise VMError(f'in the chroot, `{script[:200]}` exited {proc.returncode}; see {logf.name}')


def _build_rootfs(root: Path, logf) -> str:
    """debootstrap + kernel + base packages + OpenZFS from backports. Returns the kernel version."""
    r = RECIPE
    logf.write('### debootstrap\n')
    logf.flush()
    proc = subprocess.run(['debootstrap', f'--variant={r["variant"]}', f'--components={r["components"]}', r['suite'],
                           str(root), MIRROR], stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                          timeout=1800, check=False, env={**os.environ, 'LC_ALL': 'C'})
    if proc.returncode != 0:
        raise VMError(f'debootstrap exited {proc.returncode}; see {logf.name}')
    suite = r['suite']
    (root / 'etc/apt/sources.list').write_text(
        f'deb {MIRROR} {suite} main contrib\n'
        f'deb {MIRROR} {suite}-updates main contrib\n'
        f'deb {SECURITY_MIRROR} {suite}-security main contrib\n'
        f'deb {MIRROR} {suite}-backports main contrib\n')
    # Maintainer scripts must not start daemons in the chroot.
    policy = root / 'usr/sbin/policy-rc.d'
    policy.write_text('#!/bin/sh\nexit 101\n')
    policy.chmod(0o755)
    (root / 'etc/apt/apt.conf.d/90zr').write_text(
        'Acquire::Retries "5";\nDpkg::Use-Pty "false";\n')
    (root / 'etc/dpkg/dpkg.cfg.d/90zr-nodoc').write_text(
        'path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\npath-exclude /usr/share/man/*\n'
        'path-exclude /usr/share/locale/*\npath-include /usr/share/locale/locale.alias\n')
    # The image must not depend on the build host's name resolution config at boot; in the chroot apt needs it.
    shutil.copy('/etc/resolv.conf', root / 'etc/resolv.conf')
    with _Mounts(root):
        _chroot(root, 'apt-get update -qq', logf)
        kver = _run(['chroot', str(root), 'sh', '-c',
                     "apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: linux-image-\\(.*\\)$/\\1/p' | head -1"],
                    env=_chroot_env()).stdout.strip()
        if not kver:
            raise VMError('could not resolve the kernel version linux-image-amd64 depends on')
        logf.write(f'### kernel {kver}\n')
        pkgs = [f'linux-image-{kver}', f'linux-headers-{kver}', *r['base_packages']]
        _chroot(root, f'apt-get install -y -q {shlex.join(pkgs)}', logf)
        # DKMS builds the module for every kernel with headers. No recommends here: with `-t bookworm-backports` they
        # would pull linux-headers-amd64 of backports (a second kernel) and double the DKMS build.
        _chroot(root, f'apt-get install -y -q --no-install-recommends -t {r["zfs_suite"]} '
                      f'{shlex.join(r["zfs_packages"])}', logf)
        kernels = sorted(p.name for p in (root / 'lib/modules').iterdir())
        if kernels != [kver]:
            raise VMError(f'the image has kernels {kernels}, expected only {kver}')
        modules = list((root / 'lib/modules' / kver).rglob('zfs.ko*'))
        if not modules:
            raise VMError(f'DKMS did not produce zfs.ko for {kver}; see {logf.name}')
        version = _run(['chroot', str(root), 'dpkg-query', '-W', '-f=${Version}', 'zfsutils-linux'],
                       env=_chroot_env()).stdout.strip()
        if not version.startswith(r['zfs_version_prefix']):
            raise VMError(f'zfsutils-linux {version} is not {r["zfs_version_prefix"]}x')
        _chroot(root, f'depmod -a {kver} && update-initramfs -u -k {kver}', logf)
        _chroot(root, 'apt-get clean && rm -rf /var/lib/apt/lists/* /var/lib/dkms/zfs/*/build', logf)
    return kver


def _configure_guest(root: Path, keys: Path) -> None:
    r = RECIPE
    (root / 'etc/hostname').write_text(f'{r["hostname"]}\n')
    (root / 'etc/hosts').write_text(f'127.0.0.1 localhost\n127.0.1.1 {r["hostname"]}\n::1 localhost ip6-localhost\n')
    (root / 'etc/fstab').write_text('LABEL=zrroot / ext4 rw,errors=remount-ro 0 1\n')  # not /dev/vdX: disk order
    (root / 'etc/resolv.conf').unlink(missing_ok=True)
    (root / 'etc/resolv.conf').write_text('')  # the guest resolves nothing (restricted user networking)
    network = root / 'etc/systemd/network/80-zr-dhcp.network'
    network.parent.mkdir(parents=True, exist_ok=True)
    network.write_text('[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\nLinkLocalAddressing=no\n')
    wants = root / 'etc/systemd/system/multi-user.target.wants'
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / 'systemd-networkd.service'
    if not link.exists():
        link.symlink_to('/lib/systemd/system/systemd-networkd.service')
    # Nothing waits for "online"; timers that would run apt or fstrim during tests are masked.
    for unit in ('systemd-networkd-wait-online.service', 'apt-daily.timer', 'apt-daily-upgrade.timer',
                 'e2scrub_all.timer', 'fstrim.timer', 'man-db.timer', 'dpkg-db-backup.timer',
                 'systemd-timesyncd.service'):
        masked = root / 'etc/systemd/system' / unit
        masked.unlink(missing_ok=True)
        masked.symlink_to('/dev/null')
    # sshd: our host key only, root by key only, many sessions over one master connection.
    for old in (root / 'etc/ssh').glob('ssh_host_*'):
        old.unlink()
    shutil.copy(keys / 'ssh_host_ed25519_key', root / 'etc/ssh/ssh_host_ed25519_key')
    shutil.copy(keys / 'ssh_host_ed25519_key.pub', root / 'etc/ssh/ssh_host_ed25519_key.pub')
    (root / 'etc/ssh/ssh_host_ed25519_key').chmod(0o600)
    (root / 'etc/ssh/sshd_config.d/zr.conf').write_text('\n'.join([
        'HostKey /etc/ssh/ssh_host_ed25519_key',
        'PermitRootLogin prohibit-password',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'UseDNS no',
        'MaxSessions 64',
        'MaxStartups 64:30:128',
        '']))
    ssh_dir = root / 'root/.ssh'
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / 'authorized_keys').write_text((keys / 'id_ed25519.pub').read_text())
    (ssh_dir / 'authorized_keys').chmod(0o600)
    # Load the module at boot too (zfsutils' zfs-load-module.service does it when the zfs units are enabled).
    (root / 'etc/modules-load.d/zfs.conf').write_text('zfs\n')
    (root / 'usr/sbin/policy-rc.d').unlink(missing_ok=True)


def _make_image(root: Path, image: Path) -> None:
    used = int(_run(['du', '-sxb', str(root)]).stdout.split()[0])
    size = max(RECIPE['rootfs_min_bytes'], used + (1536 << 20))
    size = (size + (1 << 20) - 1) // (1 << 20) << 20
    image.unlink(missing_ok=True)
    _run(['truncate', '-s', str(size), str(image)])
    _run(['mkfs.ext4', '-q', '-F', '-L', 'zrroot', '-d', str(root), str(image)], timeout=1800)


def build(force: bool = False) -> Path:
    """Build the image into the cache unless it is there. Returns its directory. Safe to run concurrently."""
    final = image_dir()
    if is_built(final) and not force:
        return final
    if os.geteuid() != 0:
        raise VMError('building the image needs root (debootstrap, chroot, mount)')
    for tool in ('debootstrap', 'mkfs.ext4', 'ssh-keygen', 'chroot'):
        if not shutil.which(tool) and not os.path.exists(f'/usr/sbin/{tool}'):
            raise VMError(f'{tool} is missing: run scripts/bootstrap')
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(CACHE_ROOT / f'{final.name}.lock', 'w') as lockf:
        fcntl.flock(lockf, fcntl.LOCK_EX)  # another run building the same recipe: wait for it
        if is_built(final) and not force:
            return final
        t0 = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix=f'{final.name}.build-', dir=CACHE_ROOT))
        root = work / 'root'
        build_log = CACHE_ROOT / f'{final.name}.build.log'
        log(f'building the OpenZFS guest image in {final} (about 11 min; log: {build_log})')
        try:
            with open(build_log, 'w') as logf:
                _run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'zr-openzfs-vm-root',
                      '-f', str(work / 'id_ed25519')])
                _run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'zr-openzfs-vm-host',
                      '-f', str(work / 'ssh_host_ed25519_key')])
                kver = _build_rootfs(root, logf)
                _configure_guest(root, work)
                shutil.copy(root / 'boot' / f'vmlinuz-{kver}', work / 'vmlinuz')
                shutil.copy(root / 'boot' / f'initrd.img-{kver}', work / 'initrd.img')
                zfs_version = _run(['chroot', str(root), 'dpkg-query', '-W', '-f=${Version}', 'zfsutils-linux'],
                                   env=_chroot_env()).stdout.strip()
                log(f'making rootfs.img (kernel {kver}, zfs {zfs_version})')
                _make_image(root, work / 'rootfs.img')
            shutil.rmtree(root)
            (work / 'ssh_host_ed25519_key').unlink()  # the guest has it; the client needs only the public half
            meta = {'recipe': RECIPE, 'hash': final.name, 'kernel': kver, 'zfs': zfs_version,
                    'built': time.strftime('%Y-%m-%dT%H:%M:%S%z'), 'build_seconds': round(time.monotonic() - t0)}
            (work / 'image.json').write_text(json.dumps(meta, indent=2) + '\n')
            shutil.move(str(build_log), work / 'build.log')
            if final.exists():
                shutil.rmtree(final)
            work.rename(final)
        except BaseException:
            if root.exists():
                # Never rmtree through a live mount.
                for sub in ('dev/pts', 'dev', 'sys', 'proc'):
                    _run(['umount', '-l', str(root / sub)], check=False)
            for _attempt in range(3):  # killed package scripts may still be writing for a moment
                shutil.rmtree(work, ignore_errors=True)
                if not work.exists():
                    break
                time.sleep(2)
            raise
        log(f'image built in {time.monotonic() - t0:.0f} s: {final}')
        return final


def prune() -> list[Path]:
    """Remove cached images of other recipes (~1.2 GB each) unless a build of theirs holds the lock."""
    removed = []
    if not CACHE_ROOT.is_dir():
        return removed
    current = image_dir().name
    for entry in sorted(CACHE_ROOT.iterdir()):
        name = entry.name.split('.', 1)[0]
        if name == current or not entry.is_dir():
            continue
        with open(CACHE_ROOT / f'{name}.lock', 'a') as lockf:
            try:
                fcntl.flock(lockf, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # being built right now
            shutil.rmtree(entry, ignore_errors=True)
            (CACHE_ROOT / f'{name}.build.log').unlink(missing_ok=True)
        (CACHE_ROOT / f'{name}.lock').unlink(missing_ok=True)
        removed.append(entry)
    return removed


# ----------------------------------------------------------------------------------------------------------------
# Run
# ----------------------------------------------------------------------------------------------------------------

def free_port(host: str = '127.0.0.1') -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG: qemu ends when the process that started it dies
    os.setsid()


class VM:
    """A started guest. Build one with start(); VM.load(run_dir) re-attaches to one started elsewhere."""

    def __init__(self, state: dict) -> None:
        self.state = state
        self.run_dir = Path(state['run_dir'])
        self.port: int = state['port']
        self.host: str = state['host']
        self.user: str = state['user']
        self.private_key: str = state['private_key']
        self.known_hosts: str = state['known_hosts']
        self.pid: int = state['pid']
        self.disks: list[str] = state['disks']
        self.console_log = Path(state['console_log'])
        self._proc: subprocess.Popen | None = None

    @classmethod
    def load(cls, run_dir: str | os.PathLike[str]) -> VM:
        return cls(json.loads(Path(run_dir, 'state.json').read_text()))

    # --- ssh ------------------------------------------------------------------------------------------------
    def ssh_options(self, control: bool = True) -> list[str]:
        opts = ['-F', '/dev/null', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=yes',
                '-o', f'UserKnownHostsFile={self.known_hosts}', '-o', 'IdentitiesOnly=yes', '-i', self.private_key,
                '-o', 'ConnectTimeout=20', '-o', 'ServerAliveInterval=15', '-o', 'ServerAliveCountMax=8',
                '-o', 'LogLevel=ERROR', '-p', str(self.port)]
        if control:
            opts += ['-o', 'ControlMaster=auto', '-o', f'ControlPath={self.run_dir}/cm-%C', '-o', 'ControlPersist=300']
        return opts

    def ssh_argv(self, command: str, control: bool = True) -> list[str]:
        return ['ssh', *self.ssh_options(control), f'{self.user}@{self.host}', command]

    def run(self, command: str | list[str], *, check: bool = True, timeout: float = 600, input: str | None = None,
            control: bool = True) -> subprocess.CompletedProcess[str]:
        """Run COMMAND in the guest (a shell string, or an argv that is quoted once for the remote shell)."""
        if not isinstance(command, str):
            command = shlex.join(command)
        proc = subprocess.run(self.ssh_argv(command, control), capture_output=True, text=True, timeout=timeout,
                              input=input, stdin=subprocess.DEVNULL if input is None else None, check=False)
        if check and proc.returncode != 0:
            raise VMError(f'guest: `{command}` exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()}')
        return proc

    def untar(self, tar_argv: list[str], directory: str, *, replace: bool = False, timeout: float = 1800) -> None:
        """Unpack the archive TAR_ARGV writes to its stdout into DIRECTORY in the guest (emptied first with REPLACE),
        streamed over the shared connection: nothing of it is held in memory here."""
        target = shlex.quote(directory)
        clear = f'rm -rf {target} && ' if replace else ''
        with subprocess.Popen(tar_argv, stdout=subprocess.PIPE) as tar:
            proc = subprocess.run(self.ssh_argv(f'{clear}mkdir -p {target} && tar -xpf - -C {target}'), stdin=tar.stdout,
                                  capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0 or tar.returncode != 0:
            raise VMError(f'copying into the guest ({directory}) failed: {proc.stderr.strip()}')

    def ansible_host_vars(self) -> dict[str, str]:
        return {
            'ansible_host': self.host,
            'ansible_port': str(self.port),
            'ansible_user': self.user,
            'ansible_connection': 'ssh',
            'ansible_ssh_private_key_file': self.private_key,
            'ansible_ssh_common_args': f'-F /dev/null -o StrictHostKeyChecking=yes '
                                       f'-o UserKnownHostsFile={self.known_hosts} -o IdentitiesOnly=yes',
            'ansible_python_interpreter': '/usr/bin/python3',
        }

    def console_tail(self, lines: int = 40) -> str:
        try:
            text = self.console_log.read_text(errors='replace')
        except OSError:
            return '(no console log)'
        return '\n'.join(text.splitlines()[-lines:])

    def alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        with contextlib.suppress(OSError):
            if Path(f'/proc/{self.pid}/stat').read_text().rsplit(') ', 1)[1].startswith('Z'):
                return False
            return str(self.run_dir) in Path(f'/proc/{self.pid}/cmdline').read_bytes().decode(errors='replace')
        return False

    def _wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=0.5)
            else:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(self.pid, os.WNOHANG)
                time.sleep(0.5)
            if not self.alive():
                return True
        return not self.alive()

    def stop(self, timeout: float = 60, remove: bool = True) -> None:
        """Power the guest off (kill qemu after TIMEOUT s) and remove the run directory."""
        if self.alive():
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.run('systemctl poweroff --no-block', check=False, timeout=20)
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run(['ssh', '-F', '/dev/null', '-o', f'ControlPath={self.run_dir}/cm-%C', '-p', str(self.port),
                                '-O', 'exit', f'{self.user}@{self.host}'], capture_output=True, timeout=10, check=False)
            if not self._wait_gone(timeout):
                log(f'guest did not power off within {timeout:.0f} s: stopping qemu (pid {self.pid})')
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGTERM)
                if not self._wait_gone(10):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.pid, signal.SIGKILL)
                    self._wait_gone(10)
        if remove:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                if LAST_LINK.is_symlink() and LAST_LINK.resolve() == self.run_dir.resolve():
                    LAST_LINK.unlink()


def cleanup_stale(prefix: str = 'zr-ozfs-') -> list[Path]:
    """Remove run directories in /tmp whose qemu is gone (a killed test run); their pool disks are sparse files."""
    removed = []
    for state_file in Path('/tmp').glob(f'{prefix}*/state.json'):
        with contextlib.suppress(OSError, ValueError, KeyError):
            vm = VM(json.loads(state_file.read_text()))
            if not vm.alive():
                shutil.rmtree(vm.run_dir, ignore_errors=True)
                removed.append(vm.run_dir)
    return removed


def start(run_dir: str | os.PathLike[str] | None = None, *, disk_size: str = '1G', boot_timeout: float | None = None,
          tie_to_parent: bool = False, memory: str = '2048', smp: int = 1) -> VM:
    """Boot the cached image (build() first). Returns a VM whose sshd answers and whose zfs module is loaded.

    One vCPU by default: on this two-core machine, beside the suite's other lanes, a two-vCPU guest did the same work
    no faster and burned about half as much host CPU again (cross-vCPU TLB flushes and IPIs are costly under TCG, and
    its rcu_preempt thread alone took a fifth of a vCPU); the host's CPU is what the suite's lanes share."""
    img = image_dir()
    if not is_built(img):
        raise VMError(f'no image in {img}: run `{sys.executable} {__file__} build` first')
    if not os.access(QEMU, os.X_OK):
        raise VMError(f'{QEMU} is missing: run scripts/bootstrap')
    if boot_timeout is None:
        boot_timeout = float(os.environ.get('ZR_VM_BOOT_TIMEOUT') or 300)
    meta = json.loads((img / 'image.json').read_text())
    cleanup_stale()
    run = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix='zr-ozfs-', dir='/tmp'))
    run.mkdir(parents=True, exist_ok=True)
    run = run.resolve()
    # ssh wants the private key 0600 and owned by us; keep a copy per run so the cache can stay read-only.
    key = run / 'id_ed25519'
    shutil.copy(img / 'id_ed25519', key)
    key.chmod(0o600)
    host_pub = (img / 'ssh_host_ed25519_key.pub').read_text().split()
    disks = []
    for name in POOL_DISKS:
        path = run / f'{name}.img'
        _run(['truncate', '-s', disk_size, str(path)])
        disks.append(path)
    console = run / 'console.log'
    last_err = ''
    for _attempt in range(3):  # the port can be taken between our check and qemu's bind: pick another
        port = free_port()
        known_hosts = run / 'known_hosts'
        known_hosts.write_text(f'[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n')
        argv = [QEMU, '-name', 'zr-openzfs', '-accel', 'tcg', '-smp', str(smp), '-m', memory,
                '-display', 'none', '-vga', 'none', '-monitor', 'none', '-serial', f'file:{console}', '-no-reboot',
                '-kernel', str(img / 'vmlinuz'), '-initrd', str(img / 'initrd.img'),
                '-append', 'console=ttyS0 root=LABEL=zrroot rw quiet systemd.show_status=1 net.ifnames=0',
                # The root file system is copy-on-write (changes go to a temporary file): the cache stays clean.
                '-drive', f'file={img / "rootfs.img"},if=none,id=root,format=raw,snapshot=on',
                '-device', 'virtio-blk-pci,drive=root,serial=zrroot',
                '-netdev', f'user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22',
                '-device', 'virtio-net-pci,netdev=n0',
                '-pidfile', str(run / 'qemu.pid')]
        for name, path in zip(POOL_DISKS, disks):
            argv += ['-drive', f'file={path},if=none,id={name},format=raw,cache=unsafe,discard=unmap',
                     '-device', f'virtio-blk-pci,drive={name},serial={name}']
        with open(run / 'qemu.log', 'ab') as qlog:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=qlog, stderr=subprocess.STDOUT,
                                    close_fds=True, preexec_fn=_set_pdeathsig if tie_to_parent else os.setsid)
        time.sleep(1)
        if proc.poll() is None:
            break
        last_err = (run / 'qemu.log').read_text(errors='replace')[-2000:]
    else:
        raise VMError(f'qemu did not start: {last_err}')
    state = {
        'run_dir': str(run), 'host': '127.0.0.1', 'port': port, 'user': GUEST_USER, 'private_key': str(key),
        'known_hosts': str(known_hosts), 'pid': proc.pid, 'console_log': str(console), 'image': str(img),
        'kernel': meta['kernel'], 'zfs_package': meta['zfs'],
        'disks': [f'/dev/disk/by-id/virtio-{name}' for name in POOL_DISKS], 'disk_files': [str(d) for d in disks],
        'started': time.time(),
    }
    vm = VM(state)
    vm._proc = proc
    (run / 'state.json').write_text(json.dumps(state, indent=2) + '\n')
    try:
        t0 = time.monotonic()
        deadline = t0 + boot_timeout
        while True:
            if not vm.alive():
                raise VMError(f'qemu exited ({proc.returncode}) during boot:\n{(run / "qemu.log").read_text(errors="replace")[-2000:]}'
                              f'\n--- console tail ---\n{vm.console_tail()}')
            try:
                probe = vm.run('true', check=False, timeout=30, control=False)
                if probe.returncode == 0:
                    break
                last_err = probe.stderr.strip()
            except subprocess.TimeoutExpired:
                last_err = 'ssh timed out'
            if time.monotonic() > deadline:
                raise VMError(f'guest ssh did not answer within {boot_timeout:.0f} s (last: {last_err})'
                              f'\n--- console tail ({console}) ---\n{vm.console_tail()}')
            time.sleep(2)
        boot_s = time.monotonic() - t0
        # Key exchange: sshd offers curve25519 only. OpenSSH's default first choice, sntrup761x25519, costs about
        # 1.5 s of the 3 s a connection takes under TCG, and the engine opens connections on the guest's loopback
        # in every ssh scenario. Set per boot (the root file system is copy-on-write), so the cached image stays
        # as built; the first connection above still negotiated the default.
        vm.run(f'printf "%s\\n" "KexAlgorithms {GUEST_KEX}" > /etc/ssh/sshd_config.d/zr-kex.conf && systemctl reload ssh')
        vm.run('modprobe zfs && udevadm settle -t 60 && for d in ' + ' '.join(shlex.quote(d) for d in vm.disks)
               + '; do test -b "$d" || { echo "missing $d" >&2; exit 1; }; done')
        state['zfs_version'] = vm.run('zfs version').stdout.strip().splitlines()
        state['boot_seconds'] = round(boot_s, 1)
        (run / 'state.json').write_text(json.dumps(state, indent=2) + '\n')
        vm.state = state
    except BaseException:
        vm.stop(timeout=5, remove=False)
        raise
    return vm


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------

def build_with_progress(force: bool = False, every: float = 60) -> Path:
    """build(), printing a line per minute (CI runners kill jobs that stay silent for long)."""
    done = threading.Event()
    build_log = CACHE_ROOT / f'{image_dir().name}.build.log'

    def heartbeat() -> None:
        t0 = time.monotonic()
        while not done.wait(every):
            with contextlib.suppress(OSError):
                lines = [ln for ln in build_log.read_text(errors='replace').splitlines() if ln.strip()]
                log(f'still building ({time.monotonic() - t0:.0f} s): {lines[-1][:140] if lines else ""}')

    thread = threading.Thread(target=heartbeat, daemon=True)
    thread.start()
    try:
        return build(force=force)
    finally:
        done.set()


def _last_run_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    if os.environ.get('ZR_VM_RUN_DIR'):
        return Path(os.environ['ZR_VM_RUN_DIR'])
    if LAST_LINK.is_symlink():
        return LAST_LINK.resolve()
    raise SystemExit('no run directory: pass --run-dir or set ZR_VM_RUN_DIR')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('action', choices=('build', 'start', 'stop', 'ssh', 'path', 'status', 'prune'))
    parser.add_argument('command', nargs='*', help='for ssh: the command to run in the guest')
    parser.add_argument('--run-dir', help='start: where to put the run files (default: a new /tmp/zr-ozfs-*); '
                                          'stop/ssh: which guest (default: the last started)')
    parser.add_argument('--force', action='store_true', help='build: rebuild even when cached')
    args = parser.parse_args(argv)
    try:
        if args.action == 'path':
            print(image_dir())
        elif args.action == 'status':
            d = image_dir()
            print(json.dumps({'image': str(d), 'ready': is_built(d), 'hash': d.name,
                              **(json.loads((d / 'image.json').read_text()) if is_built(d) else {})}, indent=2))
        elif args.action == 'build':
            print(build_with_progress(force=args.force))
        elif args.action == 'prune':
            for path in prune():
                print(f'removed {path}')
        elif args.action == 'start':
            build_with_progress()
            vm = start(args.run_dir)
            with contextlib.suppress(OSError):
                LAST_LINK.unlink(missing_ok=True)
                LAST_LINK.symlink_to(vm.run_dir)
            print(json.dumps(vm.state, indent=2))
        elif args.action == 'ssh':
            vm = VM.load(_last_run_dir(args.run_dir))
            proc = subprocess.run(vm.ssh_argv(shlex.join(args.command) if len(args.command) > 1
                                              else ' '.join(args.command)), check=False)
            return proc.returncode
        elif args.action == 'stop':
            run_dir = _last_run_dir(args.run_dir)
            if not (run_dir / 'state.json').exists():
                raise SystemExit(f'no started guest in {run_dir}')
            VM.load(run_dir).stop()
            print(f'guest in {run_dir} stopped')
    except VMError as e:
        log(f'ERROR: {e}')
        build_log = CACHE_ROOT / f'{image_dir().name}.build.log'
        if args.action in ('build', 'start') and build_log.exists():
            tail = build_log.read_text(errors='replace').splitlines()[-60:]
            log(f'--- tail of {build_log} ---\n' + '\n'.join(tail))
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
