# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Real test parts on this machine: file-backed pools and an sshd on 127.0.0.1.

The pools are made with the host's own OpenZFS when it has it (the zfs kernel module is loaded), otherwise with
zfs-fuse, which is then started here. Either way they are named zrs<4 hex>src/dst, their images and mountpoints live
in the sandbox's work directory, and nothing is ever read from or written to any other pool.

Standard library only, so that pytest's conftest, the benchmarks and a person at a shell can use it:

    python tests/sandbox.py up      # bring a sandbox up, print its description (JSON), leave it running
    python tests/sandbox.py env     # print it as shell `export` lines (eval "$(python tests/sandbox.py env)")
    python tests/sandbox.py down    # tear it down (pools destroyed, sshd stopped)

`up` remembers its directory in /tmp/zr-sandbox-last; `--dir DIR` (or ZR_SANDBOX_DIR) picks one.
Only loopback addresses are ever used.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import collection_deps  # tests/collection_deps.py, beside this file (pip and PyPI only at its first use)

ZFS = shutil.which('zfs') or '/usr/sbin/zfs'
ZPOOL = shutil.which('zpool') or '/usr/sbin/zpool'
SSHD = '/usr/sbin/sshd'
POOL_PREFIX = 'zrs'  # every sandbox pool is named zrs<4 hex><role>
OWNER_PROPERTY = 'zr:sandbox-owner'  # user property on a pool's root dataset: "<pid> <workdir>"
LAST_LINK = Path('/tmp/zr-sandbox-last')
_DAEMONS: list[subprocess.Popen[bytes]] = []  # keep our daemons' Popen objects (no 'still running' warnings)


class SandboxError(RuntimeError):
    pass


class PoolBusy(SandboxError):
    """zfs-fuse still says 'busy' after the retries.

    Seen after interrupted send/receive pipelines: with no client process left, the daemon keeps some datasets
    open, and only a restart of zfs-fuse releases them (cachefile=none: the pool is then forgotten).
    """


def _run(argv: list[str], *, check: bool = True, timeout: float = 60, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL if input is None else None,
                          input=input, check=False)
    if check and proc.returncode != 0:
        raise SandboxError(f'{" ".join(argv)} exited {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}')
    return proc


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child is not alive for our purposes.
    with contextlib.suppress(OSError):
        if Path(f'/proc/{pid}/stat').read_text().rsplit(') ', 1)[1].startswith('Z'):
            return False
    return True


def _children(pid: int) -> list[int]:
    """Direct children of PID (from /proc)."""
    kids = []
    for stat in Path('/proc').glob('[0-9]*/stat'):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(') ', 1)[1].split()[1]) == pid:
                kids.append(int(stat.parent.name))
    return kids


def _wait_pid_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not _pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


# ----------------------------------------------------------------------------------------------------------------
# zfs-fuse
# ----------------------------------------------------------------------------------------------------------------

def native_openzfs() -> bool:
    """True when this host runs OpenZFS itself: its kernel module is loaded and `zfs version` names it."""
    if not Path('/sys/module/zfs').is_dir():
        return False
    try:
        proc = _run([ZFS, 'version'], check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and 'zfs-kmod' in proc.stdout


def zfs_fuse_answers(timeout: float = 10) -> bool:
    """True when ZFS answers `zpool list` (the zfs-fuse daemon, or the host's OpenZFS)."""
    try:
        return _run([ZPOOL, 'list', '-H', '-o', 'name'], check=False, timeout=timeout).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def ensure_zfs_fuse(log_path: str | os.PathLike[str] | None = None, timeout: float = 30) -> int | None:
    """Start the zfs-fuse daemon unless one answers already; wait until `zpool list` answers.

    Returns the pid of the daemon this call started, or None when one was already running.
    """
    if zfs_fuse_answers():
        return None
    binary = shutil.which('zfs-fuse') or '/usr/sbin/zfs-fuse'
    if not os.access(binary, os.X_OK):
        raise SandboxError('zfs-fuse is not installed: run scripts/bootstrap')
    log = Path(log_path) if log_path else Path('/tmp/zr-zfs-fuse.log')
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, 'ab') as out:
        # Own session, no inherited stdio: the daemon must not hold a CI runner's pipes open.
        proc = subprocess.Popen([binary, '--no-daemon', '--no-kstat-mount'], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    _DAEMONS.append(proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SandboxError(f'zfs-fuse exited with {proc.returncode} at start; see {log}')
        if zfs_fuse_answers(timeout=5):
            return proc.pid
        time.sleep(0.2)
    raise SandboxError(f'zfs-fuse (pid {proc.pid}) did not answer `zpool list` within {timeout:.0f} s; see {log}')


def stop_zfs_fuse(pid: int, timeout: float = 30) -> None:
    """Stop a zfs-fuse daemon that we started (by its pid only)."""
    if not _pid_alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    if not _wait_pid_gone(pid, timeout):
        os.kill(pid, signal.SIGKILL)
        _wait_pid_gone(pid, 5)


def list_pools() -> list[str]:
    return _run([ZPOOL, 'list', '-H', '-o', 'name']).stdout.split()


def create_pool(name: str, size: str = '512M', *, directory: str | os.PathLike[str], prefill: bool = False) -> Path:
    """Create a file-backed pool NAME; its image lives in DIRECTORY, its mountpoint is DIRECTORY/mnt/NAME.

    cachefile=none keeps the daemon from re-importing it after a crash; the explicit mountpoint keeps it off /NAME.
    PREFILL writes the whole image first (zeros, synced): the pool's first write into a region of a sparse image is
    several times slower than a later one (the file system, and a virtual disk under it, allocate it then), which
    the benchmark must not time. Returns the pool's mountpoint.
    """
    directory = Path(directory).resolve()
    image = directory / f'{name}.img'
    mountpoint = directory / 'mnt' / name
    mountpoint.parent.mkdir(parents=True, exist_ok=True)
    image.unlink(missing_ok=True)
    _run(['truncate', '-s', size, str(image)])
    if prefill:
        mib = image.stat().st_size // (1024 * 1024)
        _run(['dd', 'if=/dev/zero', f'of={image}', 'bs=1M', f'count={mib}', 'conv=notrunc,fsync', 'status=none'], timeout=1800)
    _run([ZPOOL, 'create', '-o', 'cachefile=none', '-m', str(mountpoint), name, str(image)])
    _run([ZFS, 'set', f'{OWNER_PROPERTY}={os.getpid()} {directory}', name])
    return mountpoint


def destroy_pool(name: str, attempts: int = 20, delay: float = 0.5) -> None:
    """Destroy a pool, retrying while zfs-fuse says the dataset is busy. Quiet when the pool does not exist."""
    last = ''
    for _attempt in range(attempts):
        if name not in list_pools():
            return
        proc = _run([ZPOOL, 'destroy', '-f', name], check=False)
        if proc.returncode == 0:
            return
        last = proc.stderr.strip()
        time.sleep(delay)
    error = PoolBusy if 'busy' in last else SandboxError
    raise error(f'could not destroy pool {name}: {last}')


def _owner_alive(owner: str) -> bool:
    """Is the sandbox that owns a pool still in use? OWNER is its "<pid> <workdir>" property value.

    In use: the creating process runs (a pytest session), or the sandbox's state file still names a running
    sshd (`sandbox.py up` exits at once but leaves its sandbox up until `down`).
    """
    pid_text, _sep, workdir = owner.partition(' ')
    if pid_text.isdigit() and _pid_alive(int(pid_text)):
        return True
    state = Path(workdir, 'state.json')
    if not workdir or not state.exists():
        return False
    try:
        sshd_pid = int(json.loads(state.read_text())['ssh']['pid'])
    except (OSError, ValueError, KeyError, TypeError):
        return True  # a state file we cannot read: not ours to judge
    return _pid_alive(sshd_pid)


def cleanup_stale_pools(prefix: str = POOL_PREFIX) -> list[str]:
    """Destroy pools named PREFIX* left by sandboxes that are gone (killed runs).

    Only pools that carry our owner property are considered; a live owner (another test session, a sandbox
    brought up with `sandbox.py up`) keeps its pools.
    """
    destroyed = []
    for name in list_pools():
        if not name.startswith(prefix):
            continue
        owner = _run([ZFS, 'get', '-H', '-o', 'value', OWNER_PROPERTY, name], check=False).stdout.strip()
        if not owner or owner == '-' or _owner_alive(owner):
            continue
        try:
            destroy_pool(name, attempts=2)
        except PoolBusy as exc:  # leaked inside the daemon: skip it rather than fail every later session
            warnings.warn(f'stale {exc} (restarting zfs-fuse releases it)', RuntimeWarning, stacklevel=2)
            continue
        destroyed.append(name)
        workdir = owner.partition(' ')[2]
        if workdir:
            Path(workdir, f'{name}.img').unlink(missing_ok=True)
    return destroyed


# ----------------------------------------------------------------------------------------------------------------
# sshd on loopback
# ----------------------------------------------------------------------------------------------------------------

def free_port(host: str = '127.0.0.1') -> int:
    """A TCP port on HOST that nothing listens on right now."""
    for _attempt in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if not port_accepts(host, port, timeout=0.2):
            return port
    raise SandboxError('no free port found on 127.0.0.1')


def port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class Sshd:
    """An sshd of our own on 127.0.0.1 with its own host key, client key, authorized_keys and known_hosts."""

    host = '127.0.0.1'
    user = 'root'

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory).resolve()
        self.host_key = self.dir / 'ssh_host_ed25519_key'
        self.private_key = self.dir / 'id_ed25519'
        self.authorized_keys = self.dir / 'authorized_keys'
        self.known_hosts = self.dir / 'known_hosts'
        self.config = self.dir / 'sshd_config'
        self.pidfile = self.dir / 'sshd.pid'
        self.log = self.dir / 'sshd.log'
        self.control_path = self.dir / 'cm-%C'
        self.port = 0
        self.pid: int | None = None

    # The options a client needs to reach this sshd the way users run ssh: host key checked, our key only.
    def ssh_options(self) -> list[str]:
        return ['-F', '/dev/null', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=yes',
                '-o', f'UserKnownHostsFile={self.known_hosts}', '-o', 'IdentitiesOnly=yes', '-i', str(self.private_key),
                '-p', str(self.port)]

    def ssh_argv(self, *remote: str, control_master: bool = True) -> list[str]:
        """argv for `ssh ... root@127.0.0.1 REMOTE...` (a shared ControlMaster connection by default)."""
        argv = ['ssh', *self.ssh_options()]
        if control_master:
            argv += ['-o', 'ControlMaster=auto', '-o', f'ControlPath={self.control_path}', '-o', 'ControlPersist=60']
        return [*argv, f'{self.user}@{self.host}', *remote]

    def ansible_host_vars(self) -> dict[str, str]:
        """Inventory variables that point Ansible's ssh connection at this sshd."""
        return {
            'ansible_host': self.host,
            'ansible_port': str(self.port),
            'ansible_user': self.user,
            'ansible_ssh_private_key_file': str(self.private_key),
            'ansible_ssh_common_args': f'-o StrictHostKeyChecking=yes -o UserKnownHostsFile={self.known_hosts} '
                                       '-o IdentitiesOnly=yes',
        }

    def _write_files(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for key in (self.host_key, self.private_key):
            if not key.exists():
                _run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', f'zr-sandbox-{key.name}', '-f', str(key)])
            key.chmod(0o600)
        self.authorized_keys.write_text(Path(f'{self.private_key}.pub').read_text())
        self.authorized_keys.chmod(0o600)
        sftp = next((p for p in ('/usr/lib/openssh/sftp-server', '/usr/libexec/openssh/sftp-server') if os.path.exists(p)),
                    'internal-sftp')
        self.config.write_text('\n'.join([
            f'ListenAddress {self.host}',
            f'Port {self.port}',
            f'HostKey {self.host_key}',
            f'PidFile {self.pidfile}',
            f'AuthorizedKeysFile {self.authorized_keys}',
            'PermitRootLogin prohibit-password',
            'PubkeyAuthentication yes',
            'PasswordAuthentication no',
            'KbdInteractiveAuthentication no',
            'UsePAM no',
            # The sandbox files live in /tmp, which is world-writable.
            'StrictModes no',
            # bash sources ~/.bashrc for commands run by sshd only while SHLVL < 2 at its start (it counts
            # itself first). Root's ~/.bashrc here runs `pyenv init` (~200 ms per remote command): skip it.
            'SetEnv SHLVL=1',
            'PermitUserEnvironment no',
            'UseDNS no',
            # Ansible and parallel tests open many sessions over one ControlMaster connection.
            'MaxSessions 64',
            'MaxStartups 64:30:128',
            'X11Forwarding no',
            'PrintMotd no',
            'LogLevel INFO',
            f'Subsystem sftp {sftp}',
            '',
        ]))

    def start(self, timeout: float = 15) -> None:
        Path('/run/sshd').mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
        last_error = ''
        for _attempt in range(5):  # the port may be taken between our check and sshd's bind: try another
            self.port = free_port(self.host)
            self._write_files()
            _run([SSHD, '-t', '-f', str(self.config)])
            with open(self.log, 'ab') as out:
                proc = subprocess.Popen([SSHD, '-D', '-e', '-f', str(self.config)], stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and proc.poll() is None and not port_accepts(self.host, self.port):
                time.sleep(0.05)
            if proc.poll() is None and port_accepts(self.host, self.port):
                self.pid = proc.pid
                _DAEMONS.append(proc)
                break
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
            last_error = self.log.read_text(errors='replace')[-2000:]
        else:
            raise SandboxError(f'sshd did not start: {last_error}')
        host_pub = Path(f'{self.host_key}.pub').read_text().split()
        self.known_hosts.write_text(f'[{self.host}]:{self.port} {host_pub[0]} {host_pub[1]}\n')
        self.verify()

    def verify(self) -> None:
        """One real login the way tests and users log in: host key verified, our key only."""
        proc = _run(self.ssh_argv('true', control_master=False), check=False, timeout=30)
        if proc.returncode != 0:
            raise SandboxError(f'ssh to the sandbox sshd on port {self.port} failed: {proc.stderr.strip()}')

    def stop(self, timeout: float = 10) -> None:
        # Close the shared connection first so no ssh master outlives the sandbox.
        if self.port:
            _run(['ssh', '-F', '/dev/null', '-p', str(self.port), '-o', f'ControlPath={self.control_path}', '-O', 'exit',
                  f'{self.user}@{self.host}'], check=False, timeout=10)
        pid = self.pid
        if pid is None and self.pidfile.exists():
            pid = int(self.pidfile.read_text().split()[0])
        if pid is None or not _pid_alive(pid):
            return
        # Only our own sshd: the pid must still run our config (pids get reused).
        with contextlib.suppress(OSError):
            if str(self.config) not in Path(f'/proc/{pid}/cmdline').read_bytes().decode(errors='replace'):
                return
        # Connections outlive the listener: end its per-connection children too (ControlPersist masters of
        # Ansible or of the tests would otherwise keep them for a minute).
        for child in [*_children(pid), pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)
        if not _wait_pid_gone(pid, timeout):
            os.kill(pid, signal.SIGKILL)
            _wait_pid_gone(pid, 5)
        self.pid = None


# ----------------------------------------------------------------------------------------------------------------
# The whole sandbox
# ----------------------------------------------------------------------------------------------------------------

class Sandbox:
    """Two file-backed pools (src_pool, dst_pool) + an sshd on 127.0.0.1, in one work directory.

    ZFS is the host's OpenZFS when it has it (``zfs`` is then 'openzfs'), otherwise zfs-fuse, started when needed.
    """

    def __init__(self, workdir: str | os.PathLike[str] | None = None, pool_size: str | None = None,
                 stop_zfs_fuse: bool = False, prefill: bool = False) -> None:
        default = os.environ.get('ZR_SANDBOX_DIR') or f'/tmp/zr-sandbox-{os.getpid()}'
        self.workdir = Path(workdir or default).resolve()
        self.pool_size = pool_size
        self.stop_zfs_fuse = stop_zfs_fuse
        self.prefill = prefill  # create_pool's prefill: the pool images written in full first (the benchmark)
        self.prefix = f'{POOL_PREFIX}{secrets.token_hex(2)}'
        self.src_pool = f'{self.prefix}src'
        self.dst_pool = f'{self.prefix}dst'
        self.mountpoints: dict[str, str] = {}
        self.sshd = Sshd(self.workdir / 'ssh')
        self.zfs_fuse_pid: int | None = None
        self.zfs = ''  # 'openzfs' (the host's own) or 'zfs-fuse', decided by up()
        self.state_file = self.workdir / 'state.json'

    def up(self) -> Sandbox:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.zfs = 'openzfs' if native_openzfs() else 'zfs-fuse'
            # OpenZFS keeps at least 128 MiB of a pool back (its slop space): 1 GiB (a sparse image) leaves the tests
            # the room 512 MiB leaves them on zfs-fuse.
            self.pool_size = self.pool_size or ('1G' if self.zfs == 'openzfs' else '512M')
            if self.zfs == 'zfs-fuse':
                self.zfs_fuse_pid = ensure_zfs_fuse(self.workdir / 'zfs-fuse.log')
            cleanup_stale_pools()
            for pool in (self.src_pool, self.dst_pool):
                self.mountpoints[pool] = str(create_pool(pool, self.pool_size, directory=self.workdir, prefill=self.prefill))
            self.sshd.start()
        except BaseException:
            self.down()
            raise
        self.state_file.write_text(json.dumps(self.describe(), indent=2) + '\n')
        return self

    def down(self) -> None:
        errors = []
        try:
            self.sshd.stop()
        except Exception as exc:  # keep tearing down the rest
            errors.append(f'sshd: {exc}')
        busy = []
        for pool in (self.src_pool, self.dst_pool):
            try:
                if zfs_fuse_answers():
                    destroy_pool(pool)
            except PoolBusy as exc:
                busy.append(str(exc))
            except Exception as exc:
                errors.append(f'{pool}: {exc}')
        if self.stop_zfs_fuse and self.zfs_fuse_pid:
            stop_zfs_fuse(self.zfs_fuse_pid)  # also releases what the daemon leaked: nothing is left behind
        elif busy:
            # zfs-fuse's leak, not a failure of the code under test; a daemon we did not start is not ours to
            # restart. The pool is left (its image file goes) and the leak is reported.
            warnings.warn(f'zfs-fuse keeps datasets busy, pool left in the daemon: {"; ".join(busy)}', RuntimeWarning,
                          stacklevel=2)
        for pool in (self.src_pool, self.dst_pool):
            (self.workdir / f'{pool}.img').unlink(missing_ok=True)
        self.state_file.unlink(missing_ok=True)
        if errors:
            raise SandboxError('; '.join(errors))

    def __enter__(self) -> Sandbox:
        return self.up()

    def __exit__(self, *exc_info: object) -> None:
        self.down()

    def describe(self) -> dict[str, object]:
        s = self.sshd
        return {
            'workdir': str(self.workdir),
            'prefix': self.prefix,
            'src_pool': self.src_pool,
            'dst_pool': self.dst_pool,
            'mountpoints': self.mountpoints,
            'zfs': self.zfs,
            'zfs_fuse_pid': self.zfs_fuse_pid,
            'stop_zfs_fuse': self.stop_zfs_fuse,
            'ssh': {'host': s.host, 'port': s.port, 'user': s.user, 'private_key': str(s.private_key),
                    'known_hosts': str(s.known_hosts), 'pid': s.pid, 'dir': str(s.dir)},
        }

    def env(self) -> dict[str, str]:
        s = self.sshd
        return {'ZR_SRC_POOL': self.src_pool, 'ZR_DST_POOL': self.dst_pool, 'ZR_SSH_HOST': s.host,
                'ZR_SSH_PORT': str(s.port), 'ZR_SSH_USER': s.user, 'ZR_SSH_KEY': str(s.private_key),
                'ZR_SSH_KNOWN_HOSTS': str(s.known_hosts), 'ZR_SANDBOX_DIR': str(self.workdir)}

    @classmethod
    def from_state(cls, workdir: str | os.PathLike[str]) -> Sandbox:
        state = json.loads(Path(workdir, 'state.json').read_text())
        sb = cls(state['workdir'], stop_zfs_fuse=state['stop_zfs_fuse'])
        sb.prefix, sb.src_pool, sb.dst_pool = state['prefix'], state['src_pool'], state['dst_pool']
        sb.mountpoints = state['mountpoints']
        sb.zfs_fuse_pid = state['zfs_fuse_pid']
        sb.zfs = state.get('zfs', 'zfs-fuse')
        sb.sshd = Sshd(state['ssh']['dir'])
        sb.sshd.port, sb.sshd.pid = state['ssh']['port'], state['ssh']['pid']
        return sb


# ----------------------------------------------------------------------------------------------------------------
# The collection as Ansible wants to find it
# ----------------------------------------------------------------------------------------------------------------

COPY_EXCLUDES = ('.git', 'tests/output', '__pycache__', '*.pyc', '.pytest_cache', '.ruff_cache', '.mypy_cache',
                 '.hypothesis', '*.tar.gz', 'bench/results')


def _excluded(root: Path, directory: str, names: list[str]) -> set[str]:
    """The NAMES in DIRECTORY that COPY_EXCLUDES leaves out (a pattern with a '/' is a path from ROOT)."""
    rel = Path(directory).relative_to(root)
    return {n for n in names for pattern in COPY_EXCLUDES
            if fnmatch.fnmatch(str(rel / n) if '/' in pattern else n, pattern)}


def _tracked_files(root: Path) -> list[str] | None:
    """The checkout's tracked files plus untracked, not-ignored ones; None when ROOT is not a git checkout or git is
    not installed (a demo host may have neither git nor rsync)."""
    if not (root / '.git').exists() or not shutil.which('git'):
        return None
    listing = subprocess.run(['git', '-C', str(root), 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
                             capture_output=True, check=False)
    if listing.returncode != 0:
        return None
    return [n for n in listing.stdout.decode().split('\0') if n and (root / n).exists()]


def prepare_collection(root: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Copy the checkout ROOT to DEST/ansible_collections/zfs/replication and return DEST.

    In a git checkout: the tracked files plus untracked, not-ignored ones (work in progress counts), nothing else.
    Otherwise the whole tree minus .git, tests/output and caches. DEST is the value for ANSIBLE_COLLECTIONS_PATH;
    the copy is a real directory, so ansible-test can run from inside it. The dependency collections
    (tests/collection_deps.py) are copied to DEST too.
    """
    root, dest = Path(root).resolve(), Path(dest).resolve()
    target = dest / 'ansible_collections' / 'zfs' / 'replication'
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    names = _tracked_files(root)
    if names is not None and shutil.which('rsync'):
        subprocess.run(['rsync', '-a', '--from0', '--files-from=-', f'{root}/', f'{target}/'],
                       input='\0'.join(names).encode(), check=True)
    elif names is not None:
        for name in names:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, target / name, follow_symlinks=False)
    else:  # not a git checkout (or no git): the tree minus what is never part of the collection
        shutil.rmtree(target)
        shutil.copytree(root, target, symlinks=True, ignore=lambda d, names: _excluded(root, d, names))
    # The collections galaxy.yml depends on (ansible.posix), beside ours as `ansible-galaxy collection install` puts them.
    collection_deps.install_into(dest)
    return dest


# ----------------------------------------------------------------------------------------------------------------
# Command line (for the demo and for poking around by hand)
# ----------------------------------------------------------------------------------------------------------------

def _state_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    if os.environ.get('ZR_SANDBOX_DIR'):
        return Path(os.environ['ZR_SANDBOX_DIR'])
    if LAST_LINK.is_symlink():
        return LAST_LINK.resolve()
    raise SystemExit('no sandbox directory: pass --dir or set ZR_SANDBOX_DIR')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('action', choices=('up', 'down', 'env'))
    parser.add_argument('--dir', help='sandbox directory (default: $ZR_SANDBOX_DIR, /tmp/zr-sandbox-<pid> for up, '
                                      'the last one brought up for down/env)')
    parser.add_argument('--pool-size', help='each pool image (default: 1G on OpenZFS, 512M on zfs-fuse)')
    parser.add_argument('--stop-zfs-fuse', action='store_true', help='at down, stop zfs-fuse if up started it')
    args = parser.parse_args(argv)

    if args.action == 'up':
        sb = Sandbox(args.dir, pool_size=args.pool_size, stop_zfs_fuse=args.stop_zfs_fuse).up()
        # The sshd was started in its own session: it outlives this process until `down`.
        with contextlib.suppress(OSError):
            LAST_LINK.unlink(missing_ok=True)
            LAST_LINK.symlink_to(sb.workdir)
        print(json.dumps(sb.describe(), indent=2))
        return 0

    workdir = _state_dir(args.dir)
    if not (workdir / 'state.json').exists():
        raise SystemExit(f'no running sandbox in {workdir}')
    sb = Sandbox.from_state(workdir)
    if args.action == 'env':
        for key, value in sb.env().items():
            print(f'export {key}={shlex.quote(value)}')
        return 0
    sb.down()
    shutil.rmtree(sb.workdir, ignore_errors=True)
    if LAST_LINK.is_symlink() and LAST_LINK.resolve() == sb.workdir:
        LAST_LINK.unlink()
    print(f'sandbox {sb.workdir} is down')
    return 0


if __name__ == '__main__':
    sys.exit(main())
