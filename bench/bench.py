# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Side-by-side benchmarks: zfs.replication vs syncoid, pyznap, zfs-autobackup and the raw pipeline.

Run through bench/run (it installs the peers). Everything is measured in ONE run on the same pools;
results are medians of --reps repetitions, and ratios between tools of the same run are what counts.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import pstats
import shlex
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'tests'))

import sandbox  # noqa: E402

CACHE = Path(os.environ.get('ZR_CACHE_DIR', '/var/cache/zfs-replication'))
VENV = CACHE / 'bench' / 'venv'
ANSIBLE_VENV = Path(os.environ.get('ZB_ANSIBLE_VENV') or CACHE / 'venv-latest')  # the module case's ansible-playbook
SHIMS = ROOT / 'bench' / 'shims'
RESULTS = ROOT / 'bench' / 'results'
ZFS = '/usr/sbin/zfs'
SCHEMA = 'zb-%Y%m%d%H%M%S'
BASE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
CIPHER = 'aes128-gcm@openssh.com'
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()


def sh(argv, check=True, **kw):
    p = subprocess.run(argv, capture_output=True, text=True, check=False, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f'{shlex.join(argv) if isinstance(argv, list) else argv}: rc {p.returncode}: {p.stderr[-2000:]}')
    return p


def say(*a):
    print(*a, flush=True)


# ------------------------------------------------------------------------------------------------------------
# sandbox: sshd with the counting shims first in PATH on the remote side
# ------------------------------------------------------------------------------------------------------------
class BenchSshd(sandbox.Sshd):
    remote_log = ''

    def _write_files(self):
        super()._write_files()
        text = self.config.read_text().replace(
            'SetEnv SHLVL=1', f'SetEnv SHLVL=1 ZB_SIDE=remote ZB_LOG={self.remote_log} PATH={SHIMS}:{BASE_PATH}')
        self.config.write_text(text)


class Proxy:
    """A TCP proxy on 127.0.0.1 that delays every chunk by DELAY seconds in each direction (bandwidth kept)."""

    def __init__(self, target_port, delay):
        self.delay, self.target = delay, target_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _addr = self.sock.accept()
            except OSError:
                return
            u = socket.create_connection(('127.0.0.1', self.target))
            for s in (c, u):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._pipe(c, u)
            self._pipe(u, c)

    def _pipe(self, a, b):
        import queue
        q: queue.Queue = queue.Queue()

        def reader():
            while True:
                try:
                    data = a.recv(65536)
                except OSError:
                    data = b''
                q.put((time.monotonic() + self.delay, data))
                if not data:
                    return

        def writer():
            while True:
                due, data = q.get()
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                if not data:
                    with contextlib.suppress(OSError):
                        b.shutdown(socket.SHUT_WR)
                    return
                try:
                    b.sendall(data)
                except OSError:
                    return

        threading.Thread(target=reader, daemon=True).start()
        threading.Thread(target=writer, daemon=True).start()


class Bench:
    def __init__(self, args):
        self.args = args
        self.progress_interval = args.progress_interval
        self.stopped: dict = {}  # case: why it stopped short or did not start (--time-limit)
        self.dir = Path(f'/var/tmp/zr-bench-{os.getpid()}')
        self.dir.mkdir(parents=True, exist_ok=True)
        self.local_log = self.dir / 'zfs-local.log'
        self.remote_log = self.dir / 'zfs-remote.log'
        self.sb = sandbox.Sandbox(self.dir, pool_size=args.pool_size, prefill=args.prefill)
        BenchSshd.remote_log = str(self.remote_log)
        self.sb.sshd = BenchSshd(self.dir / 'ssh')
        self.results: dict = {'notes': []}
        self.tree = self.dir / 'tree'
        (self.tree / 'ansible_collections' / 'zfs').mkdir(parents=True, exist_ok=True)
        link = self.tree / 'ansible_collections' / 'zfs' / 'replication'
        if not link.exists():
            link.symlink_to(ROOT)
        self.env = dict(os.environ, PATH=f'{SHIMS}:{BASE_PATH}', ZB_LOG=str(self.local_log), ZB_SIDE='local')
        self.env.pop('PYENV_VERSION', None)
        # bytecode cached as an installed engine's is (a shell with this set made every run of ours compile the
        # engine's sources again; the peers' packages were compiled at install)
        self.env.pop('PYTHONDONTWRITEBYTECODE', None)
        self.env.update(ANSIBLE_COLLECTIONS_PATH=str(self.tree), ANSIBLE_HOST_KEY_CHECKING='True', ANSIBLE_NOCOLOR='1',
                        ANSIBLE_LOCAL_TEMP=str(self.dir / 'ansible-tmp'), ANSIBLE_REMOTE_TEMP=str(self.dir / 'ansible-tmp'))

    @property
    def openzfs(self):
        """The sandbox runs on OpenZFS (the guest, or a host that runs it), not zfs-fuse."""
        return self.sb.zfs == 'openzfs'

    # -- setup -----------------------------------------------------------------------------------------------
    def up(self):
        self.sb.up()
        self.S, self.D = self.sb.src_pool, self.sb.dst_pool
        s = self.sb.sshd
        self.ssh_port = s.port
        self.proxy = Proxy(s.port, self.args.latency_ms / 1000.0)
        hostpub = Path(f'{s.host_key}.pub').read_text().split()
        self.known_hosts = self.dir / 'known_hosts_all'
        self.known_hosts.write_text(f'[127.0.0.1]:{s.port} {hostpub[0]} {hostpub[1]}\n[127.0.0.1]:{self.proxy.port} {hostpub[0]} {hostpub[1]}\n')
        self.env['ZB_KNOWN_HOSTS'] = str(self.known_hosts)
        self.key = str(s.private_key)
        # the remote side's PATH really is the shims'
        out = sh(['ssh', *s.ssh_options(), '-o', f'UserKnownHostsFile={self.known_hosts}', 'root@127.0.0.1', 'command -v zfs'], env=self.env).stdout
        assert out.strip() == f'{SHIMS}/zfs', out

    def down(self):
        try:
            self.sb.down()
        except Exception as exc:  # noqa: BLE001
            say(f'teardown: {exc}')
        else:
            sh(['rm', '-rf', str(self.dir)], check=False)

    def zfs(self, *a, check=True):
        return sh([ZFS, *a], check=check)

    def build_tree(self, name, n, snaps):
        """SRC/name with n datasets (root + n-1 children) and `snaps` snapshots each (zfs snapshot -r)."""
        root = f'{self.S}/{name}'
        # OpenZFS: not mounted (-u): nothing reads their files, and in the emulated guest each mount costs seconds of
        # systemd's mount-unit work; zfs-fuse has no -u (its mounts are cheap)
        unmounted = ['-u'] if self.openzfs else []
        self.zfs('create', *unmounted, '-o', 'compression=off', root)
        for i in range(1, n):
            self.zfs('create', *unmounted, f'{root}/d{i:03d}')
        for _i in range(snaps):
            self.snap(root)
        return root

    _snapno = 0

    def snap(self, root):
        Bench._snapno += 1
        name = time.strftime('zb-%Y%m%d%H%M%S', time.gmtime(T0 + 3600 * Bench._snapno))
        self.zfs('snapshot', '-r', f'{root}@{name}')
        return name

    def snapshots(self, ds):
        """DS@NAME of each of DS's snapshots, oldest first (by createtxg)."""
        return self.zfs('list', '-H', '-o', 'name', '-t', 'snapshot', '-s', 'createtxg', '-d', '1', ds).stdout.split()

    def newest_snapshot(self, ds):
        """DS@NAME of DS's newest snapshot (by createtxg)."""
        return self.snapshots(ds)[-1]

    def seed(self, root, target, props=()):
        """Put target in sync with root in one send -R stream (same guids as a replication would give); PROPS
        (prop=value) set on every received dataset by the receive itself (recv -o: OpenZFS)."""
        last = self.newest_snapshot(root)
        self.zfs('create', '-p', target.rsplit('/', 1)[0], check=False)
        opts = ''.join(f' -o {p}' for p in props)
        p = subprocess.run(f'{ZFS} send -R {last} | {ZFS} recv -u{opts} {target}', shell=True, capture_output=True, text=True, check=False)
        if p.returncode:
            raise RuntimeError(p.stderr)

    # -- running tools ------------------------------------------------------------------------------------
    def our_params(self, root, target, via, **extra):
        # zfs-autobackup's selection property stays on the source: on zfs-fuse (no recv -x/-o) our copies of the
        # source's properties are local values, and zfs-autobackup would take our target for a source of its own
        p = {'name': 'bench', 'source_datasets': [root], 'target_dataset': target, 'recursive': True,
             'naming_schema': [SCHEMA], 'transport': 'local' if via == 'local' else 'ssh',
             'properties_exclude': [f"autobackup:{root.rsplit('/', 1)[1]}"]}
        if via != 'local':
            port = self.proxy.port if via == 'wan' else self.ssh_port
            p['ssh'] = {'host': '127.0.0.1', 'port': port, 'user': 'root', 'private_key_file': self.key,
                        'known_hosts_file': str(self.known_hosts), 'cipher': 'fast'}
        p.update(extra)
        return p

    def cmd(self, tool, root, target, via, **extra):
        """argv (or shell string) that replicates root -> target with TOOL once."""
        port = self.proxy.port if via == 'wan' else self.ssh_port
        if tool == 'stream-floor':  # no tool: one zfs send -R -I of the whole tree from the target's newest snapshot
            # plain zfs: through the shims on PATH, so its two calls are counted as every tool's are
            base = self.newest_snapshot(target).split('@')[1]
            return f"zfs send -R -I @{base} {self.newest_snapshot(root)} | zfs recv -u {target}"
        if tool == 'ours-serial':  # the same engine, one dataset at a time (parallel_transfers: 1)
            return self.cmd('ours', root, target, via, name='bench-serial', parallel_transfers=1, **extra)
        if tool == 'ours':
            cfg = self.dir / f'cfg-{abs(hash((root, target, via, json.dumps(extra, sort_keys=True))))}.json'
            params = self.our_params(root, target, via, **extra)
            cfg.write_text(json.dumps({'kind': 'replication', 'name': params['name'], 'params': params}))
            code = (f'import sys,resource,os; sys.path.insert(0, {str(self.tree)!r}); '
                    'from ansible_collections.zfs.replication.plugins.module_utils._runner import main; rc = main(); '
                    'open(os.environ["ZB_RSS"], "w").write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)) '
                    'if os.environ.get("ZB_RSS") else None; sys.exit(rc)')
            return ['/usr/bin/python3', '-c', code, 'run', '--config', str(cfg), '--state-dir', str(self.dir / 'state'),
                    '--log-dir', str(self.dir / 'logs')]
        if tool == 'module':
            pb = self.dir / f'pb-{via}.yml'
            params = self.our_params(root, target, via, **extra)
            pb.write_text(json.dumps([{'hosts': 'localhost', 'gather_facts': False, 'tasks': [
                {'zfs.replication.zfs_replication': params}]}]))
            return [str(ANSIBLE_VENV / 'bin' / 'ansible-playbook'), '-i', 'localhost,', '-c', 'local',
                    '-e', 'ansible_python_interpreter=/usr/bin/python3', str(pb)]
        if tool == 'syncoid':
            argv = ['syncoid', '-r', '--no-sync-snap', '--quiet']
            if extra.get('compress'):
                argv.append(f'--compress={extra["compress"]}')
            else:
                argv.append('--compress=none')
            if via == 'local':
                return [*argv, root, target]
            return [*argv, f'--sshkey={self.key}', f'--sshport={port}', f'--sshcipher={CIPHER}',
                    '--sshoption=StrictHostKeyChecking=yes', f'--sshoption=UserKnownHostsFile={self.known_hosts}',
                    root, f'root@127.0.0.1:{target}']
        if tool == 'pyznap':
            conf = self.dir / 'pyznap.conf'
            conf.touch()
            dest = target if via == 'local' else f'ssh:{port}:root@127.0.0.1:{target}'
            argv = [str(VENV / 'bin' / 'pyznap'), '--config', str(conf), 'send', '-s', root, '-d', dest, '-c', 'none']
            return argv + (['-i', self.key] if via != 'local' else [])
        if tool == 'zfs-autobackup':
            name = root.rsplit('/', 1)[1]
            argv = [str(VENV / 'bin' / 'zfs-autobackup'), '--no-snapshot', '--allow-empty', '--no-holds', '--exclude-received',
                    '--rollback', '--no-thinning', '--strip-path', '1', '--snapshot-format', SCHEMA]
            if via != 'local':
                cfg = self.dir / f'ssh-config-{port}'
                cfg.write_text(f'Host 127.0.0.1\n  Port {port}\n  IdentityFile {self.key}\n  IdentitiesOnly yes\n'
                               f'  StrictHostKeyChecking yes\n  UserKnownHostsFile {self.known_hosts}\n  Ciphers {CIPHER}\n')
                argv += ['--ssh-config', str(cfg), '--ssh-target', 'root@127.0.0.1']
            return [*argv, name, target.rsplit('/', 1)[0]]
        raise ValueError(tool)

    def timed(self, argv, label=''):
        for f in (self.local_log, self.remote_log):
            f.write_text('')
        rss = self.dir / 'rss'
        rss.unlink(missing_ok=True)
        env = dict(self.env, ZB_RSS=str(rss))
        t = time.monotonic()
        p = subprocess.run(argv, capture_output=True, text=True, env=env, shell=isinstance(argv, str), check=False)
        dt = time.monotonic() - t
        if p.returncode != 0:
            raise RuntimeError(f'{label}: rc {p.returncode}: {(p.stderr or p.stdout)[-1500:]}')
        by_command: dict = {'src': {}, 'dst': {}}  # zfs subcommand -> calls, per side: where a tool's calls go
        for f in (self.local_log, self.remote_log):
            for line in f.read_text().splitlines():
                side, _tab, args = line.partition('\t')
                key = 'dst' if side == 'remote' or self.D in args else 'src'
                command = args.split(' ', 1)[0]
                by_command[key][command] = by_command[key].get(command, 0) + 1
        calls = {key: sum(n.values()) for key, n in by_command.items()}
        return dt, calls, (int(rss.read_text()) // 1024 if rss.exists() else None), p, by_command

    def median_run(self, argv, reps, label):
        runs = [self.timed(argv, label) for _i in range(reps)]
        ts = [r[0] for r in runs]
        return {'time': statistics.median(ts), 'times': [round(x, 2) for x in ts], 'calls': runs[-1][1],
                'calls_by_command': runs[-1][4]}

    def profile_ours(self, root, target):
        """Where our local no-op's time goes: the interpreter's start, the engine's import (medians of 3), and one
        run under cProfile (which slows it): the functions with the most time of their own and the most in all."""
        start = self.median_run(['/usr/bin/python3', '-c', 'pass'], 3, 'python start')['time']
        imp = self.median_run(['/usr/bin/python3', '-c', f'import sys; sys.path.insert(0, {str(self.tree)!r}); '
                               'import ansible_collections.zfs.replication.plugins.module_utils._runner'], 3, 'engine import')['time']
        argv = self.cmd('ours', root, target, 'local')
        stats_file = self.dir / 'ours.prof'
        # cProfile.run writes the statistics also when the run ends by sys.exit
        code = f'import cProfile; cProfile.run({argv[2]!r}, {str(stats_file)!r})'
        dt = self.timed([argv[0], '-c', code, *argv[3:]], 'ours under cProfile')[0]
        stats = pstats.Stats(str(stats_file)).stats
        rows = [(f'{Path(f).name}:{line}({fn})', tt, ct) for (f, line, fn), (_cc, _nc, tt, ct, _callers) in stats.items()]

        def top(col):
            return [[name, round(tt, 3), round(ct, 3)] for name, tt, ct in sorted(rows, key=lambda r: -r[col])[:12]]
        return {'python_start': start, 'engine_import': imp, 'profiled_run': round(dt, 2),
                'by_own_time': top(1), 'by_cumulative_time': top(2)}

    def floor(self, root, target, via, reps):
        cols = 'type,guid,createtxg,userrefs,readonly'
        src = [ZFS, 'get', '-H', '-p', '-r', '-o', 'name,property,value', cols, root]
        dst = [ZFS, 'get', '-H', '-p', '-r', '-o', 'name,property,value', cols, target]
        if via != 'local':
            port = self.proxy.port if via == 'wan' else self.ssh_port
            dst = ['ssh', '-F', '/dev/null', '-i', self.key, '-p', str(port), '-o', f'UserKnownHostsFile={self.known_hosts}',
                   '-o', 'StrictHostKeyChecking=yes', '-c', CIPHER, 'root@127.0.0.1', shlex.join(['zfs', *dst[1:]])]
        ts = []
        for _i in range(reps):
            t = time.monotonic()
            sh(src)
            sh(dst, env=self.env)
            ts.append(time.monotonic() - t)
        return {'time': statistics.median(ts), 'times': [round(x, 2) for x in ts], 'calls': {'src': 1, 'dst': 1}}

    # -- cases ----------------------------------------------------------------------------------------------
    def target_for(self, tool, tree):
        return f'{self.D}/{tool.replace("-", "")}/{tree}' if tool != 'module' else f'{self.D}/ours/{tree}'

    def prepare_noop(self, tree, tools):
        root = f'{self.S}/{tree}'
        # What our own first (full) run leaves on each received filesystem: canmount=noauto, setuid=off, devices=off;
        # without them the first incremental run sets them.
        safe = ('canmount=noauto', 'setuid=off', 'devices=off')

        def seed(tool):
            target = self.target_for(tool, tree)
            ours = tool in ('ours', 'ours-serial')
            self.seed(root, target, safe if ours and self.openzfs else ())
            if ours and not self.openzfs:
                for ds in self.zfs('list', '-H', '-o', 'name', '-r', '-t', 'filesystem', target).stdout.split():
                    for prop in safe:  # zfs-fuse: one property per zfs set, no recv -o
                        self.zfs('set', prop, ds)

        # OpenZFS: every target at once. Each received snapshot waits for a transaction group, and receives running
        # together share them (in the emulated guest one send -R of 200 x 20 snapshots takes over 15 minutes alone).
        # zfs-fuse: one after the other (its one daemon is busy at four receives, and has failed under more).
        missing = [t for t in tools if t != 'module' and self.zfs('list', self.target_for(t, tree), check=False).returncode != 0]
        self.each_tool(seed, missing)
        # nothing to warm up for the module (ours' target) and the stream floor (no state and no no-op)
        warm = [t for t in tools if t not in ('module', 'stream-floor')]
        if 'zfs-autobackup' in warm:
            self.zfs('set', f'autobackup:{tree}=true', root)

        def warm_up(tool):
            dt = self.timed(self.cmd(tool, root, self.target_for(tool, tree), 'local'), f'warm-up {tool} {tree}')[0]
            say(f'  setup {tree}: {tool} target seeded, warm-up run {dt:.1f} s')

        # OpenZFS: every tool's warm-up at once too (untimed; in the emulated guest one after the other took 25 min
        # at 200 datasets, each peer's run mostly its processes' start-up); zfs-fuse: one after the other, as above
        self.each_tool(warm_up, warm)

    def each_tool(self, fn, tools):
        """fn(tool) for every tool: all at once on OpenZFS, one after the other on zfs-fuse (prepare_noop says why)."""
        with ThreadPoolExecutor(max(1, len(tools)) if self.openzfs else 1) as pool:
            list(pool.map(fn, tools))

    def case_noop(self, tree, tools, vias, reps, profile=False):
        root = f'{self.S}/{tree}'
        out = {}
        if profile:
            out['profile'] = self.profile_ours(root, self.target_for('ours', tree))
            say(f"  no-op {tree} local profile: python start {out['profile']['python_start']:.2f} s, engine import "
                f"{out['profile']['engine_import']:.2f} s, a run under cProfile {out['profile']['profiled_run']:.2f} s")
        for via in vias:
            out[via] = {'floor': self.floor(root, self.target_for('ours', tree), via, reps)}
            for tool in tools:
                r = reps if tool in ('ours', 'module') else self.args.peer_reps
                out[via][tool] = self.median_run(self.cmd(tool, root, self.target_for(tool, tree), via), r, f'{tool} {via}')
                say(f'  no-op {tree} {via:5s} {tool:15s} {out[via][tool]["time"]:7.2f} s  zfs calls {out[via][tool]["calls"]}')
            say(f'  no-op {tree} {via:5s} {"floor":15s} {out[via]["floor"]["time"]:7.2f} s')
        return out

    def case_catchup(self, tree, datasets, tools, via, reps, deadline=None):
        """REPS rounds: 5 new snapshots on every dataset, then each tool catches its own target up (median per tool).
        After the first round only ours, the floor and the peers within twice the fastest peer's time run again (see
        rerun_after_first): the target compares ours with the fastest peer, and in the OpenZFS guest one round of
        every tool takes about an hour. Each row carries the tree's DATASETS (--catchup-datasets). A round after the
        first that would end past DEADLINE (time.monotonic()) is not started (round_past_deadline): the rounds measured
        so far stand, and self.stopped says why."""
        root = f'{self.S}/{tree}'
        runs: dict = {tool: [] for tool in tools}
        for rnd in range(reps):
            if rnd == 1:
                tools = rerun_after_first({t: r[0][0] for t, r in runs.items()})
            why = round_past_deadline(runs, tools, time.monotonic(), deadline) if rnd else ''
            if why:
                self.stopped['catchup'] = f'stopped after round {rnd} of {reps}: {why}'
                say(f'  catch-up {tree} {via}: {self.stopped["catchup"]}')
                break
            for _i in range(5):
                self.snap(root)
            for tool in tools:
                dt, calls, _rss, _p, _by = self.timed(self.cmd(tool, root, self.target_for(tool, tree), via), f'catch-up {tool}')
                runs[tool].append((dt, calls))
                say(f'  catch-up {tree} {via} round {rnd + 1}/{reps} {tool:15s} {dt:7.2f} s  zfs calls {calls}')
                if tool == 'ours-serial' and reps > 1:
                    self.release_holds(root, tree, via, 'ours-serial')
        return {tool: {'time': statistics.median(t for t, _c in r), 'times': [round(t, 2) for t, _c in r], 'calls': r[-1][1],
                       'datasets': datasets} for tool, r in runs.items()}

    def case_anatomy(self, tree, datasets, reps):
        """Where a catch-up's time goes: REPS passes over ANATOMY_STEPS, each step a round of 5 new snapshots on every
        dataset of TREE received into one target, by one `zfs send -R -I` stream, by plain per-dataset pipelines one,
        four and eight at once, then with our pipeline's flags and stages added one step at a time, and by our run.
        After each round every side keeps only its newest snapshot, so each round lists and receives the same. OpenZFS:
        the target pool's transaction groups per round; the share of CPU time busy. Our run's logged pipeline is kept
        to check the steps' mirror of it."""
        root = f'{self.S}/{tree}'
        target = self.target_for('ours', tree)
        steps = anatomy_steps(self.openzfs)
        out: dict = {'datasets': datasets, 'steps': [{'key': k, 'adds': adds} for k, adds, *_r in steps],
                     'runs': {k: [] for k, *_r in steps}}
        children = self.zfs('list', '-H', '-o', 'name', '-d', '1', '-t', 'filesystem', root).stdout.split()[1:]
        self.release_holds(root, tree, 'local', 'ours')  # the warm-up's holds: keep_newest destroys what is older
        for rnd in range(reps):
            for key, _adds, width, send, recv, pv in steps:
                base = self.newest_snapshot(target).split('@')[1]
                for _i in range(5):
                    self.snap(root)
                if key in ('ours', 'stream'):  # the catch-up case's own commands for ours and its floor row
                    argv = self.cmd({'stream': 'stream-floor'}.get(key, key), root, target, 'local')
                else:
                    last = self.newest_snapshot(root).split('@')[1]
                    argv = anatomy_pipelines(root, target, children, base, last, width, send, recv, pv)
                txg0, cpu0 = pool_txg(self.D), cpu_times()
                dt, calls, _rss, _p, _by = self.timed(argv, f'anatomy {key}')
                txg1, cpu1 = pool_txg(self.D), cpu_times()
                busy = (cpu1[0] - cpu0[0]) / max(1, (cpu1[0] - cpu0[0]) + (cpu1[1] - cpu0[1]))
                out['runs'][key].append({'time': round(dt, 2), 'calls': calls, 'busy': round(busy, 2),
                                         'txgs': None if txg0 is None or txg1 is None else txg1 - txg0})
                say(f'  anatomy {tree} pass {rnd + 1}/{reps} {key:10s} {dt:7.2f} s  zfs calls {calls}  CPU busy {busy:.0%}'
                    + ('' if txg0 is None else f'  target txgs {txg1 - txg0}'))
                if key == 'ours':
                    out['ours_pipeline'] = self.logged_pipeline()
                    self.release_holds(root, tree, 'local', 'ours')
                self.keep_newest(root, target)
        out['time'] = {k: statistics.median(r['time'] for r in runs) for k, runs in out['runs'].items()}
        if self.args.anatomy_trace:
            out['ours_trace'] = self.trace_ours(tree, root, target)
        return out

    def trace_ours(self, tree, root, target):
        """One more round, untimed: 5 new snapshots received by our run at logging_level debug, its log's times in
        milliseconds. Where its wall time goes: before its first pipeline, the pipelines, after the last, and outside
        its log (interpreter start, import, exit); each command it waited for, with its start and duration."""
        logs = self.dir / 'logs'
        sizes = {f: f.stat().st_size for f in logs.glob('*.log')}
        for _i in range(5):
            self.snap(root)
        argv = self.cmd('ours', root, target, 'local', logging_level='debug')
        runner = 'from ansible_collections.zfs.replication.plugins.module_utils._runner import main; '
        if runner not in argv[2]:
            raise RuntimeError(f"anatomy trace: our run's command no longer imports main as expected: {argv[2]}")
        argv[2] = argv[2].replace(runner, 'from ansible_collections.zfs.replication.plugins.module_utils import _runner; '
                                  '_runner._iso_time = lambda record, datefmt=None: "%.3f" % record.created; main = _runner.main; ')
        dt = self.timed(argv, 'anatomy ours traced')[0]
        lines = [ln for f in sorted(logs.glob('*.log')) for ln in f.read_bytes()[sizes.get(f, 0):].decode().splitlines()]
        self.release_holds(root, tree, 'local', 'ours')
        self.keep_newest(root, target)
        return trace_summary(lines, dt)

    def logged_pipeline(self):
        """The last pipeline our run logged (its `$ zfs send ... | zfs recv ...` line), without the log line's prefix."""
        lines = [ln for f in sorted((self.dir / 'logs').glob('*.log')) for ln in f.read_text().splitlines() if '$ zfs send' in ln]
        return lines[-1].split('$ ', 1)[1] if lines else ''

    def keep_newest(self, root, target):
        """Destroy every snapshot but the newest on ROOT's and TARGET's trees (recursive snapshots: one name each)."""
        for ds in (root, target):
            for name in self.snapshots(ds)[:-1]:
                self.zfs('destroy', '-r', name)

    def release_holds(self, root, tree, via, tool):
        """Release TOOL's (ours or ours-serial) holds on ROOT and its target, untimed, as removing that task would
        (zfs-replication-run release). ours-serial runs once in the catch-up (rerun_after_first): its holds (a task of
        its own, on the same source) would stay on that round's newest snapshots, which ours moves away from, and every
        later release of ours would name them (the listing's userrefs cannot tell whose hold it is): a source
        replicated by two tasks, not the catch-up of one. The anatomy releases ours's before it destroys older
        snapshots."""
        argv = self.cmd(tool, root, self.target_for(tool, tree), via)
        argv = [*argv[:argv.index('run')], 'release', '--config', argv[argv.index('--config') + 1]]
        p = subprocess.run(argv, capture_output=True, text=True, env=self.env, check=False)
        if p.returncode != 0:
            raise RuntimeError(f'releasing {tool}\'s holds: rc {p.returncode}: {(p.stderr or p.stdout)[-1500:]}')

    def write_data(self, ds, mb, kind, tag):
        mnt = self.zfs('get', '-H', '-o', 'value', 'mountpoint', ds).stdout.strip()
        path = f'{mnt}/{tag}.bin'
        if kind == 'random':
            sh(['dd', 'if=/dev/urandom', f'of={path}', 'bs=1M', f'count={mb}', 'status=none'])
        else:  # text-like data: zstd -3 gets ~4-6x
            sh(['bash', '-c', f'seq 1 1000000000 | head -c {mb * 1024 * 1024} > {path}'])
        sh(['sync'])

    def case_data(self, mb, reps):
        out = {}
        for kind in ('random', 'text'):
            ds = f'{self.S}/data-{kind}'
            self.zfs('create', '-o', 'compression=off', ds)
            self.write_data(ds, mb, kind, 'a')
            self.zfs('snapshot', f'{ds}@zb-20260101000000')
            self.write_data(ds, mb, kind, 'b')
            self.zfs('snapshot', f'{ds}@zb-20260101010000')
            for via in ('local', 'ssh'):
                comp = 'zstd' if (kind == 'text' and via == 'ssh') else None
                target = f'{self.D}/data-{kind}'
                res = {'ours': {'full': [], 'incremental': [], 'rss': []}, 'raw': {'full': [], 'incremental': []},
                       'stream': {'full': [], 'incremental': []}, 'progress_lines': []}
                for rep in range(reps):
                    # who goes first alternates: a drift over the repetitions (the pools filling, the page cache)
                    # weighs on both alike
                    for who in (('raw', 'ours') if rep % 2 == 0 else ('ours', 'raw')):
                        self.destroy(target)
                        if who == 'ours':
                            # progress_interval as the bench's --progress-interval (1 s: the engine reads pv's count
                            # and logs a progress line every second, the most often it can be asked to)
                            extra = {'progress_interval': self.progress_interval, **({'compression': comp} if comp else {})}
                            # full: only the first snapshot is selected via a name regex; then incremental
                            a = self.cmd('ours', ds, target, via, name_regex='zb-20260101000000', naming_schema=[], hold_base=False, **extra)
                            dt, _c, rss, _p, _by = self.timed(a, 'ours full')
                            res['ours']['full'].append(dt)
                            res['stream']['full'].append(self.last_stream_seconds())
                            res['progress_lines'].append(self.last_progress_lines())
                            res['ours']['rss'].append(rss)
                            b = self.cmd('ours', ds, target, via, hold_base=False, **extra)
                            dt, _c, rss, _p, _by = self.timed(b, 'ours incremental')
                            res['ours']['incremental'].append(dt)
                            res['stream']['incremental'].append(self.last_stream_seconds())
                            res['ours']['rss'].append(rss)
                        else:
                            full = self.raw_pipeline(f'{ZFS} send {ds}@zb-20260101000000', target, via, comp)
                            inc = self.raw_pipeline(f'{ZFS} send -I @zb-20260101000000 {ds}@zb-20260101010000', target, via, comp)
                            res['raw']['full'].append(self.timed(full, 'raw full')[0])
                            res['raw']['incremental'].append(self.timed(inc, 'raw incremental')[0])
                row = {}
                for phase in ('full', 'incremental'):
                    o, r = statistics.median(res['ours'][phase]), statistics.median(res['raw'][phase])
                    st = statistics.median(res['stream'][phase])
                    # each repetition's raw run and ours ran back to back: their ratio per repetition shows the noise
                    each = sorted(rt / t for rt, t in zip(res['raw'][phase], res['stream'][phase]))
                    row[phase] = {'ours': o, 'raw': r, 'stream': st, 'ratio': r / st, 'ratio_run': r / o,
                                  'ours_mbps': mb / st, 'raw_mbps': mb / r, 'run_mbps': mb / o,
                                  'ratio_min': each[0], 'ratio_max': each[-1], 'reps': len(each),
                                  'times': {k: [round(x, 2) for x in res[k][phase]] for k in ('stream', 'ours', 'raw')}}
                    say(f'  data {kind:6s} {via:5s} {phase:11s} ours stream {st:6.2f} s ({mb / st:5.1f} MB/s), whole run {o:6.2f} s'
                        f'  raw {r:6.2f} s ({mb / r:5.1f} MB/s)  ratio {r / st:.2f} (whole run {r / o:.2f})')
                row['rss_mb'] = max(x for x in res['ours']['rss'] if x) if any(res['ours']['rss']) else None
                row['compression'] = comp or 'none'
                row['progress_interval'] = self.progress_interval
                row['progress_lines_full'] = max(res['progress_lines'])  # logged by our longest full stream
                out[f'{kind}-{via}'] = row
            self.destroy(f'{self.D}/data-{kind}')
            self.destroy(ds)  # its snapshots hold 2 x --data-mb: the next kind's need the room (retried while busy)
        out['order'] = 'alternating'  # who went first in a repetition (earlier runs: the raw pipeline, always)
        out['prefilled'] = self.sb.prefill
        # memory flat in data size: our peak RSS for a tiny stream vs the big ones
        ds = f'{self.S}/data-small'
        self.zfs('create', '-o', 'compression=off', ds)
        self.write_data(ds, 1, 'random', 'a')
        self.zfs('snapshot', f'{ds}@zb-20260101000000')
        _dt, _c, rss, _p, _by = self.timed(self.cmd('ours', ds, f'{self.D}/data-small', 'ssh', hold_base=False), 'ours small')
        out['rss_small_mb'] = rss
        return out

    def last_stream_seconds(self):
        """The duration of the stream our last run reported ("done TARGET@SNAP: N bytes in X.XXs" in its log):
        the pipeline alone, without the probe, listings, plan and verification around it."""
        logs = sorted((self.dir / 'logs').glob('*.log'), key=lambda f: f.stat().st_mtime)
        done = [ln for ln in logs[-1].read_text().splitlines() if ': done ' in ln and ' bytes in ' in ln]
        return float(done[-1].rsplit(' in ', 1)[1].rstrip('s'))

    def last_progress_lines(self):
        """How many progress lines ("progress TARGET@SNAP: ...") our last run logged while its stream ran."""
        logs = sorted((self.dir / 'logs').glob('*.log'), key=lambda f: f.stat().st_mtime)
        lines = logs[-1].read_text().splitlines()  # every run of the task appends to it: count from the last start
        start = max((i for i, ln in enumerate(lines) if ln.endswith(': start')), default=0)
        return sum(1 for ln in lines[start:] if ':   progress ' in ln)

    def raw_pipeline(self, send, target, via, comp):
        recv = f'zfs recv -u {target}'
        if via == 'local':
            return f'{send} | {recv}'
        c = ' | zstd -q -c -T0' if comp else ''
        d = 'zstd -q -d -c | ' if comp else ''
        ssh = (f'ssh -F /dev/null -i {self.key} -p {self.ssh_port} -o UserKnownHostsFile={self.known_hosts} '
               f'-o StrictHostKeyChecking=yes -c {CIPHER} root@127.0.0.1')
        return f'{send}{c} | {ssh} {shlex.quote(d + recv)}'

    def destroy(self, ds):
        for _i in range(20):
            p = self.zfs('destroy', '-r', ds, check=False)
            if p.returncode == 0 or 'does not exist' in p.stderr:
                return
            time.sleep(0.5)
        raise RuntimeError(f'cannot destroy {ds}: {p.stderr}')


def round_past_deadline(runs, tools, now, deadline):
    """Why one more catch-up round of TOOLS, each as long as its last round in RUNS (tool: [(seconds, calls)]), would
    end past DEADLINE (time.monotonic() seconds, None for no limit); '' when it fits."""
    if deadline is None:
        return ''
    estimate = sum(runs[t][-1][0] for t in tools)
    if now + estimate <= deadline:
        return ''
    return (f'the next round (about {estimate:.0f} s, each tool as long as its last round) would end past --time-limit '
            f'({max(0.0, deadline - now):.0f} s left)')


def rerun_after_first(first):
    """The catch-up tools (name: first round's seconds, in their order) that run the rounds after the first: ours, the
    floor, and each peer whose first round took at most twice the fastest peer's (one slower than that cannot be the
    fastest; its one round stands, and the report says so). ours-serial, which no target judges, runs once."""
    ours = ('ours', 'ours-serial', 'stream-floor')
    fastest = min((s for t, s in first.items() if t not in ours), default=0)
    return [t for t, s in first.items() if t in ('ours', 'stream-floor') or (t not in ours and s <= 2 * fastest)]


def add_round_tools(catchup, peers):
    """The tools of a run that adds rounds to the earlier CATCHUP (results.json's rows): those that ran its rounds after
    the first (rerun_after_first of its first round), less the peers not in PEERS (--peers may leave slower ones out)."""
    again = rerun_after_first({t: r.get('times', [r['time']])[0] for t, r in catchup.items()})
    return [t for t in again if t in ('ours', 'stream-floor') or t in peers]


def add_rounds_refusal(merge, cases, previous, datasets, path):
    """Why a run cannot add catch-up rounds (--add-rounds) to PREVIOUS (the results.json at PATH, None when there is
    none), this run measuring CASES on a catch-up tree of DATASETS; '' when it can."""
    if not merge:
        return 'it needs --merge'
    if 'catchup' not in cases:
        return 'it needs the catchup case in --cases'
    if 'catchup' not in (previous or {}):
        return f'{path} holds no catch-up to add rounds to'
    earlier = previous['catchup']['ours'].get('datasets')
    if earlier != datasets:
        return f"the earlier catch-up's tree has {earlier} datasets, this run's {datasets} (--catchup-datasets)"
    return ''


def added_rounds(catchup, sittings, now, sitting):
    """CATCHUP (an earlier run's rows, measured in SITTINGS: [{date, git, load_at_start, rounds}]) with NOW's rounds (this
    run's rows, measured in SITTING: {date, git, load_at_start}) after its own, per tool, and the medians over all of
    them; returns (rows, sittings). Each round measures its tools one after the other in one run, so each round's ratios
    are of one run; a tool this run left out keeps its earlier rounds."""
    rows = {}
    for tool in dict.fromkeys([*catchup, *now]):
        before, after = catchup.get(tool, {}), now.get(tool, {})
        times = [*before.get('times', [before['time']] if before else []), *after.get('times', [])]
        rows[tool] = {'time': statistics.median(times), 'times': times, 'calls': (after or before)['calls'],
                      'datasets': (before or after).get('datasets')}
    return rows, [*sittings, {**sitting, 'rounds': len(now['ours']['times'])}]


PLANNER_CODE = r'''
import sys, time, resource, json
from datetime import datetime, timezone
sys.path.insert(0, sys.argv[1])
from ansible_collections.zfs.replication.plugins.module_utils import _zfs, _planner
from ansible_collections.zfs.replication.plugins.module_utils._transport import LocalHost
from ansible_collections.zfs.replication.plugins.module_utils._replication_task import ReplicationTask
fmt, src_file, dst_file = sys.argv[2], sys.argv[3], sys.argv[4]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
caps = _zfs.parse_version_output("zfs-2.3.2-1") if fmt == "list" else _zfs.LEGACY
def listing(root, path):
    # exactly what list_tree does with the zfs pipe, with cat in zfs's place
    if fmt == "list":
        cols = ("name",) + _zfs.list_columns(caps)
        rc, lst, err = LocalHost().stream(["cat", path], lambda lines: _zfs.parse_list_lines(root, lines, cols))
    else:
        rc, lst, err = LocalHost().stream(["cat", path], lambda lines: _zfs.parse_get_lines(root, lines))
    assert rc == 0, err
    return lst
t = time.monotonic(); src = listing("src/t", src_file); dst = listing("dst/t", dst_file); t_parse = time.monotonic() - t
task = ReplicationTask.from_params({"name": "bench", "source_datasets": ["src/t"], "target_dataset": "dst/t", "recursive": True,
                                     "naming_schema": ["zb-%Y%m%d%H%M%S"], "transport": "local"})
t = time.monotonic(); p = _planner.plan(task.plan_task(datetime.now(timezone.utc)), src, dst); t_plan = time.monotonic() - t
assert all(d.action == "in_sync" for d in p.datasets), p.datasets[0]
# a second plan with the newest snapshot missing on the target: one incremental per dataset
for ds in dst.datasets.values():
    ds.snapshots.pop()
t = time.monotonic(); p2 = _planner.plan(task.plan_task(datetime.now(timezone.utc)), src, dst); t_plan2 = time.monotonic() - t
sends = sum(len(d.sends) for d in p2.datasets)
assert sends == len(p2.datasets), sends
print(json.dumps({"format": fmt, "parse": t_parse, "plan_noop": t_plan, "plan_incremental": t_plan2, "datasets": len(p.datasets),
                  "snapshots": src.snapshot_count(), "sends": sends,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_base_mb": base / 1024}))
'''


def write_listing(path, root, n, m, fmt):
    """A synthetic recursive listing of n datasets x m snapshots, as OpenZFS `zfs list -Hp` or legacy `zfs get -Hp` prints it.

    Every dataset has the same snapshot names (zfs snapshot -r) and its own guids; both sides share guids."""
    with open(path, 'w') as f:
        for d in range(n):
            name = root if d == 0 else f'{root}/d{d:05d}'
            # name type guid createtxg userrefs readonly receive_resume_token encryption keystatus encryptionroot
            rows = [(name, 'filesystem', 10**12 + d, d + 1, '-', 'off', '-', 'off', '-', '-')]
            for s in range(m):
                sn = f'{name}@zb-2026{1 + s // 2400 % 12:02d}{1 + s // 96 % 28:02d}{s // 4 % 24:02d}{s % 4 * 15:02d}00'
                rows.append((sn, 'snapshot', 10**15 + d * 1000 + s, 100 + s, '0', '-', '-', 'off', '-', '-'))
            for r in rows:
                if fmt == 'list':
                    f.write('\t'.join(map(str, r)) + '\n')
                else:
                    for prop, value in zip(('type', 'guid', 'createtxg', 'userrefs', 'readonly'), r[1:6]):
                        f.write(f'{r[0]}\t{prop}\t{value}\n')


def case_planner(workdir, tree, n, m):
    """Synthetic listings through the engine's streaming parser and the real planner, each format in a fresh
    process (its peak RSS is the listings' and the plan's own)."""
    out = {}
    for fmt in ('list', 'get'):
        src, dst = workdir / f'planner-src.{fmt}', workdir / f'planner-dst.{fmt}'
        write_listing(src, 'src/t', n, m, fmt)
        write_listing(dst, 'dst/t', n, m, fmt)
        out[fmt] = json.loads(sh(['/usr/bin/python3', '-c', PLANNER_CODE, str(tree), fmt, str(src), str(dst)]).stdout)
        src.unlink()
        dst.unlink()
    return out


def machine_facts():
    arc = next((ln.split('=')[1].strip() for ln in Path('/etc/zfs/zfsrc').read_text().splitlines()
                if ln.strip().startswith('max-arc-size')), '?') if Path('/etc/zfs/zfsrc').exists() else '?'
    cpu = next((ln.split(':', 1)[1].strip() for ln in Path('/proc/cpuinfo').read_text().splitlines() if ln.startswith('model name')), '?')
    mem = int(Path('/proc/meminfo').read_text().split()[1]) // 1024 // 1024
    native = sandbox.native_openzfs()
    zfs = sh([ZFS, 'version'], check=False).stdout.split('\n')[0] if native else 'zfs-fuse'
    return {'date': datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC'), 'cpu': cpu, 'cores': os.cpu_count(),
            'memory_gib': mem, 'kernel': platform.release(), 'zfs_fuse_arc_max_mb': arc,
            'backend': 'openzfs' if native else 'zfs-fuse', 'zfs': zfs,
            'load_at_start': os.getloadavg()[0],
            'syncoid': sh(['syncoid', '--version'], check=False).stdout.split('\n')[0].split()[-1],
            'git': os.environ.get('ZB_GIT') or git_commit(),
            'engine': os.environ.get('ZB_ENGINE') or engine_commit()}


# The catch-up's anatomy (case_anatomy): (key, what the step adds, datasets at once, zfs send flags, zfs recv flags,
# pv between them). From the plain pipeline to ours's own, one part at a time, as our run builds it for this tree
# (properties sent, filesystems, progress counted on the sender); the report prints our run's logged pipeline beside.
# zfs-fuse has no recv -s, -x or -o and no send -L, -e or -c (our run sends without -p there): those steps are left out.
def anatomy_steps(openzfs):
    steps = [('stream', 'one `zfs send -R -I` stream of the tree, no tool (the catch-up floor row)', 0, [], [], False),
             ('plain1', 'a plain `zfs send -I` into `zfs recv -u` per dataset, one at a time', 1, [], [], False),
             ('plain4', "the same, 4 datasets at once (our run's width until its streams prove small)", 4, [], [], False),
             ('plain8', 'the same, 8 at once', 8, [], [], False)]
    send, recv = [], []
    if openzfs:
        for key, adds, s, r in (('resumable', '+ recv -s (resumable)', [], ['-s']),
                                ('flags', '+ send -L -e -c, recv -x mountpoint', ['-L', '-e', '-c'], ['-x', 'mountpoint']),
                                ('props', '+ send -p (properties)', ['-p'], []),
                                ('safe', '+ recv -o canmount=noauto -o devices=off -o setuid=off',
                                 [], ['-o', 'canmount=noauto', '-o', 'devices=off', '-o', 'setuid=off'])):
            send, recv = send + s, recv + r
            steps.append((key, adds, 4, send, recv, False))
    steps.append(('pv', '+ pv counting the stream: our pipeline with all its parts, 4 at once', 4, send, recv, True))
    if openzfs:
        # What our run sends into targets that hold the safe values as their own (no recv -o), as wide as it goes once
        # its streams prove small.
        steps.append(('lean', 'our pipeline as our run sends it here: no recv -o (the targets hold those values as their '
                              'own), 8 at once', 8, ['-L', '-e', '-c', '-p'], ['-s', '-x', 'mountpoint'], True))
    steps.append(('ours', 'our run (zfs-replication-run: listings, plan, these pipelines, holds, verification)', 0, [], [], False))
    return steps


def anatomy_pipelines(root, target, children, base, last, width, send, recv, pv):
    """A bash command (argv): ROOT's pipeline, then CHILDREN's WIDTH at once (xargs -P), each `zfs send SEND -I @BASE
    DS@LAST [| pv] | zfs recv -u RECV DS'` through the shims on PATH; exits non-zero when any pipeline failed."""
    mid = ' | pv -n -b -f -i 5 2>/dev/null' if pv else ''
    s, r = ' '.join(send), ' '.join(recv)

    def pipe(src, dst):
        return f'zfs send {s} -I @{base} {src}@{last}{mid} | zfs recv -u {r} {dst}'
    one = pipe('"$1"', '"$2"')
    pairs = ' '.join(f'{shlex.quote(c)} {shlex.quote(target + c[len(root):])}' for c in children)
    script = (f'set -eo pipefail; {pipe(shlex.quote(root), shlex.quote(target))}; '
              f'printf "%s %s\\n" {pairs} | xargs -P {width} -n 2 bash -c {shlex.quote("set -eo pipefail; " + one)} sh')
    return ['bash', '-c', script]


def trace_summary(lines, wall):
    """From a run's log lines `SECONDS.MS TASK[PID]: MESSAGE` at logging_level debug (bench trace_ours): the seconds
    before its first pipeline, of its pipelines (from their `done` lines), after the last one and outside the log, and
    every command it waited for (its `debug: exit RC after Ns: COMMAND` line) as [start, seconds, exit status, command],
    the start counted from the run's first line."""
    events = []
    for line in lines:
        stamp, _sp, rest = line.partition(' ')
        message = rest.partition(': ')[2]
        with contextlib.suppress(ValueError):
            events.append((float(stamp), message))
    if not events:
        return {}
    t0, end = events[0][0], events[-1][0]
    pipes, calls = [], []
    for t, msg in events:
        if msg.startswith('done ') and ' bytes in ' in msg:
            took = float(msg.rsplit(' in ', 1)[1].rstrip('s'))
            pipes.append((t - took, t))
        elif msg.startswith('debug: exit ') and ' after ' in msg:
            rc, _a, rest = msg[len('debug: exit '):].partition(' after ')
            took, _c, command = rest.partition('s: ')
            calls.append([round(t - float(took) - t0, 2), float(took), rc, command[:160]])
    first, last = (min(a for a, _b in pipes), max(b for _a, b in pipes)) if pipes else (end, end)
    return {'before': round(first - t0, 2), 'pipelines': round(last - first, 2), 'after': round(end - last, 2),
            'outside': round(wall - (end - t0), 2), 'wall': round(wall, 2), 'transfers': len(pipes),
            'calls': sorted(calls)}


def pool_txg(pool):
    """POOL's current transaction group (OpenZFS's txgs kstat), None without it (zfs-fuse)."""
    try:
        return int(Path(f'/proc/spl/kstat/zfs/{pool}/txgs').read_text().splitlines()[-1].split()[0])
    except (OSError, IndexError, ValueError):
        return None


def cpu_times():
    """(busy, idle) jiffies of all CPUs so far (/proc/stat)."""
    f = [int(x) for x in Path('/proc/stat').read_text().split('\n', 1)[0].split()[1:]]
    return sum(f) - f[3] - f[4], f[3] + f[4]


def git_commit():
    """The checkout's commit (short)."""
    return sh(['git', '-C', str(ROOT), 'rev-parse', '--short', 'HEAD'], check=False).stdout.strip()


def engine_commit():
    """The last commit that changed the collection's code (plugins/): cases measured at different commits can be put
    together (--merge) only when this is the same. Uncommitted changes there make it COMMIT+dirty: what ran is no
    commit's engine, and such a run merges with no other."""
    commit = sh(['git', '-C', str(ROOT), 'log', '-1', '--format=%h', '--', 'plugins'], check=False).stdout.strip()
    dirty = sh(['git', '-C', str(ROOT), 'status', '--porcelain', '--', 'plugins'], check=False).stdout.strip()
    return f'{commit}+dirty' if dirty else commit


CASES = ('noop', 'wan', 'catchup', 'anatomy', 'growth', 'data', 'planner')
SIZES = ('datasets', 'snapshots', 'latency_ms', 'data_mb', 'planner', 'growth')


def refuse_merge(previous, res):
    """Exit with the reasons when PREVIOUS (an earlier results.json) cannot take this run's cases: another engine
    commit, backend or size. RES needs only its `machine` and `args`, so a run checks this before it measures."""
    why = []
    if previous['machine'].get('engine') != res['machine']['engine']:
        why.append(f"its engine commit is {previous['machine'].get('engine')!r}, this run's {res['machine']['engine']!r}")
    elif str(res['machine']['engine']).endswith('+dirty'):
        why.append(f"both ran with uncommitted changes in plugins/ ({res['machine']['engine']}): not one engine for sure")
    if previous['machine'].get('backend') != res['machine']['backend']:
        why.append(f"its backend is {previous['machine'].get('backend')!r}, this run's {res['machine']['backend']!r}")
    why += [f"its --{k.replace('_', '-')} is {previous['args'].get(k)!r}, this run's {res['args'][k]!r}"
            for k in SIZES if previous['args'].get(k) != res['args'][k]]
    if why:
        raise SystemExit('bench: --merge: the earlier results.json cannot be merged with this run: ' + '; '.join(why)
                         + '. Run every case again without --merge, or with the same sizes at that commit.')


def case_run(results, case):
    """The run that measured CASE in RESULTS (a results.json): its `case_runs` entry, or the run's own date, commit and
    load for a results.json from before case_runs."""
    return (results.get('case_runs') or {}).get(case) or {f: results['machine'].get(f) for f in ('date', 'git', 'load_at_start')}


def merged(previous, res, ran):
    """RES (this run: the cases in RAN) put over PREVIOUS (an earlier results.json of the same engine commit and sizes):
    the cases this run measured replace the earlier ones, the others stay, and `case_runs` says which run measured
    each (date, commit, load). A run too long for one sitting (the OpenZFS guest's full set) is built up this way."""
    refuse_merge(previous, res)
    out = {k: v for k, v in previous.items() if k in CASES and k not in ran}
    runs = {k: case_run(previous, k) for k in out}
    out.update({k: v for k, v in res.items() if k not in CASES or k in ran})
    out['case_runs'] = {**runs, **{k: v for k, v in res['case_runs'].items() if k in ran}}
    out['args'] = {**previous['args'], **res['args'], 'peers': ','.join(
        dict.fromkeys(previous['args'].get('peers', '').split(',') + res['args']['peers'].split(',')))}
    out['failed'] = {**{k: v for k, v in (previous.get('failed') or {}).items() if k not in ran}, **res['failed']}
    out['case_seconds'] = {**{k: v for k, v in (previous.get('case_seconds') or {}).items() if k not in ran},
                           **res['case_seconds']}
    out['stopped'] = {**{k: v for k, v in (previous.get('stopped') or {}).items() if k not in ran},
                      **{k: v for k, v in (res.get('stopped') or {}).items() if k in ran}}
    if 'catchup' not in ran and previous.get('catchup_sittings'):  # the catch-up's rounds came from several runs
        out['catchup_sittings'] = previous['catchup_sittings']
    out['runtime_s'] = (previous.get('runtime_s') or 0) + res['runtime_s']
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--datasets', type=int, default=200)
    ap.add_argument('--snapshots', type=int, default=20)
    ap.add_argument('--reps', type=int, default=3)
    ap.add_argument('--peer-reps', type=int, default=3, help='repetitions for the peers (slow: 20-120 s per no-op)')
    ap.add_argument('--catchup-reps', type=int, default=3, help='catch-up rounds (5 new snapshots each); medians')
    ap.add_argument('--data-mb', type=int, default=None,
                    help='size of each data-path stream (default 2000 on zfs-fuse, where 500 MB streams take about 1 s and '
                         'the noise hides a 5%% gap; 500 on OpenZFS, in the slow guest)')
    ap.add_argument('--data-reps', type=int, default=5,
                    help='repetitions of each data-path stream, ours and the raw pipeline back to back (min/median/max)')
    ap.add_argument('--progress-interval', type=int, default=1,
                    help="our task's progress_interval in the data case (default 1 s: progress read and logged every second)")
    ap.add_argument('--catchup-datasets', type=int, default=0, metavar='N',
                    help='the catch-up on a tree of its own with N datasets (0: on the no-op tree of --datasets); in the '
                         'OpenZFS guest a full catch-up of 200 datasets does not fit a sitting; the report marks it')
    ap.add_argument('--anatomy-datasets', type=int, default=40, metavar='N',
                    help="the catch-up's anatomy (where its time goes, step by step) on a tree of N datasets")
    ap.add_argument('--anatomy-reps', type=int, default=2, help="passes over the anatomy's steps (medians)")
    ap.add_argument('--anatomy-trace', action='store_true',
                    help="after the anatomy's passes, one more round of our run, traced (untimed): where its time goes")
    ap.add_argument('--growth', default='50,100,200,400')
    ap.add_argument('--latency-ms', type=float, default=25)
    ap.add_argument('--pool-size', default=None,
                    help='each pool image (default 4G, and room for two snapshots of --data-mb above 500; see --prefill)')
    ap.add_argument('--prefill', action=argparse.BooleanOptionalAction, default=None,
                    help="write the pool images in full before the pools are made (default on zfs-fuse; the OpenZFS guest's "
                         "emulated disk would take long): a write into a sparse image's new region measured about 9x slower "
                         "than into a written one here, and the data path's first repetitions paid it")
    ap.add_argument('--planner', default='10000x100')
    ap.add_argument('--cases', default='noop,wan,catchup,anatomy,data,planner,growth')
    ap.add_argument('--results', default=str(RESULTS), help='where results.json (and, unless --no-report, the report) go')
    ap.add_argument('--no-report', action='store_true', help='write results.json only (bench/openzfs.py reports on the host)')
    ap.add_argument('--peers', default='syncoid,pyznap,zfs-autobackup',
                    help='the peers to measure (a shorter list is for trying a change; committed results have all three)')
    ap.add_argument('--time-limit', type=float, default=0, metavar='MINUTES',
                    help='start no case, and no catch-up round after the first, that would end past this many minutes '
                         'from the start (a round is estimated from the last one; a case is started while time is left): '
                         'what was measured stands and the report says what stopped short. 0: no limit')
    ap.add_argument('--merge', action='store_true',
                    help="keep the cases of the results.json already in --results that this run does not measure (same "
                         "engine commit and sizes, else refused): a full set built up over several runs")
    ap.add_argument('--add-rounds', action='store_true',
                    help="with --merge: this run's catch-up rounds are added to those of the results.json in --results "
                         "(same engine commit, sizes and --catchup-datasets) instead of replacing them, the medians taken "
                         "over all; only the tools that ran its rounds after the first run again (ours, the floor, the "
                         "peers within twice the fastest; --peers may leave some out). In the OpenZFS guest three rounds "
                         "of every tool do not fit a sitting")
    args = ap.parse_args()
    native = sandbox.native_openzfs()  # the OpenZFS guest (or host): smaller streams, sparse pool images
    if args.data_mb is None:
        args.data_mb = 500 if native else 2000
    if args.prefill is None:
        args.prefill = not native
    if args.pool_size is None:
        args.pool_size = '4G' if args.data_mb <= 500 else f'{4 + math.ceil(2 * args.data_mb / 1024)}G'
    cases = set(args.cases.split(','))
    unknown = cases - set(CASES)
    if unknown:
        ap.error(f"--cases: no case {', '.join(sorted(unknown))}; the cases are {','.join(CASES)}")
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    deadline = t_start + args.time_limit * 60 if args.time_limit > 0 else None
    res = {'machine': machine_facts(), 'args': vars(args)}
    previous = None
    if args.merge and (results / 'results.json').exists():
        previous = json.loads((results / 'results.json').read_text())
        refuse_merge(previous, res)  # before anything is measured
        say(f"bench: --merge: keeping {', '.join(k for k in CASES if k in previous and k not in cases) or 'no case'} "
            f"of the run of {previous['machine']['date']}")
    if args.add_rounds:
        why = add_rounds_refusal(args.merge, cases, previous, args.catchup_datasets or args.datasets, results / 'results.json')
        if why:
            ap.error(f'--add-rounds: {why}; run the catch-up without --add-rounds to measure it anew')
    say(f'bench: {json.dumps(res["machine"])}')
    if 'planner' in cases:
        n, m = map(int, args.planner.split('x'))
        work = Path(f'/var/tmp/zr-bench-{os.getpid()}')
        tree = work / 'tree'
        (tree / 'ansible_collections' / 'zfs').mkdir(parents=True, exist_ok=True)
        if not (tree / 'ansible_collections' / 'zfs' / 'replication').exists():
            (tree / 'ansible_collections' / 'zfs' / 'replication').symlink_to(ROOT)
        res['planner'] = case_planner(work, tree, n, m)
        say(f'planner {n}x{m}: {res["planner"]}')
    bench = Bench(args)
    peers = args.peers.split(',')
    res['failed'], res['case_seconds'] = {}, {}
    run_facts = {f: res['machine'][f] for f in ('date', 'git', 'load_at_start')}
    res['case_runs'] = {name: run_facts for name in CASES if name in cases}

    def case(name, fn):
        """Run one case; a failure is recorded with its reason and the other cases still run."""
        if name not in cases:
            return
        if deadline is not None and time.monotonic() >= deadline:
            bench.stopped[name] = 'not started: the --time-limit had passed'
            say(f'CASE {name} not started: the --time-limit had passed')
            return
        t = time.monotonic()
        try:
            res[name] = fn()
        except Exception as exc:  # noqa: BLE001
            res['failed'][name] = f'{type(exc).__name__}: {exc}'[-2000:]
            say(f'CASE {name} FAILED: {res["failed"][name]}')
        res['case_seconds'][name] = round(time.monotonic() - t, 1)

    def growth():
        noop = res.get('noop') or (previous or {}).get('noop') or {}
        fastest = min(peers, key=lambda p: noop.get('local', {}).get(p, {}).get('time', 1e9))
        out = {'peer': fastest, 'points': {}}
        for n in map(int, args.growth.split(',')):
            t = f't{n}'
            if n == args.datasets and noop:
                nl = noop['local']
                out['points'][n] = {k: nl[k]['time'] for k in ('ours', fastest, 'floor')}
                continue
            if bench.zfs('list', f'{bench.S}/{t}', check=False).returncode != 0:
                bench.build_tree(t, n, args.snapshots)
            bench.prepare_noop(t, ['ours', fastest])
            r = bench.case_noop(t, ['ours', fastest], ['local'], max(1, args.reps - 1))['local']
            out['points'][n] = {k: r[k]['time'] for k in ('ours', fastest, 'floor')}
            # the tree stays: its newest snapshots carry our task's hold, and each no-op lists only its own tree
        return out

    def catchup():
        """The catch-up case; with --add-rounds its rounds go after the earlier run's (added_rounds)."""
        now = bench.case_catchup(ctree, cn, catchup_tools, 'local', args.catchup_reps, deadline)
        if not args.add_rounds:
            return now
        earlier = previous.get('catchup_sittings') or [
            {**case_run(previous, 'catchup'), 'rounds': len(previous['catchup']['ours'].get('times', [0]))}]
        rows, res['catchup_sittings'] = added_rounds(previous['catchup'], earlier, now, run_facts)
        return rows

    try:
        bench.up()
        tree = f't{args.datasets}'
        t = time.monotonic()
        tools = ['ours', 'module', *peers]
        catchup_tools = ['ours', 'ours-serial', *peers, 'stream-floor']
        if args.add_rounds:
            catchup_tools = add_round_tools(previous['catchup'], peers)
        # the catch-up's tree: the no-op's, or one of its own (c<N>, not a growth tree: it gains 5 snapshots a round)
        cn = args.catchup_datasets or args.datasets
        ctree = tree if cn == args.datasets else f'c{cn}'
        prepare: dict = {}  # tree: its tools; growth builds its own trees (and takes this size's point from noop)
        if cases & {'noop', 'wan'}:
            prepare[tree] = tools
        if 'catchup' in cases:
            prepare[ctree] = list(dict.fromkeys(prepare.get(ctree, []) + catchup_tools))
        atree = f'a{args.anatomy_datasets}'  # the anatomy's own: its rounds keep only each side's newest snapshot
        if 'anatomy' in cases:
            prepare[atree] = ['ours']
        sizes = {tree: args.datasets, ctree: cn, atree: args.anatomy_datasets}  # ctree may be tree: then cn is its size
        for name, names in prepare.items():
            n = sizes[name]
            say(f'building {name}: {n} datasets x {args.snapshots} snapshots')
            bench.build_tree(name, n, args.snapshots)
            bench.prepare_noop(name, names)
        res['case_seconds']['setup'] = round(time.monotonic() - t, 1)
        case('noop', lambda: bench.case_noop(tree, tools, ['local', 'ssh'], args.reps, profile=True))
        case('wan', lambda: bench.case_noop(tree, ['ours', *peers], ['wan'], args.reps)['wan'])
        case('catchup', catchup)
        case('anatomy', lambda: bench.case_anatomy(atree, args.anatomy_datasets, args.anatomy_reps))
        case('growth', growth)
        case('data', lambda: bench.case_data(args.data_mb, args.data_reps))
    finally:
        res['runtime_s'] = time.monotonic() - t_start
        res['stopped'] = bench.stopped
        measured = {c for c in cases if c in res or c in res['failed']}  # not the cases the time limit left out
        res['case_runs'] = {k: v for k, v in res['case_runs'].items() if k in measured}
        if previous is not None:
            res = merged(previous, res, measured)
        (results / 'results.json').write_text(json.dumps(res, indent=1, default=str))
        bench.down()
    if not args.no_report:
        import report
        report.write(res, results)
        say((results / 'results.md').read_text())
    return 1 if res['failed'] else 0


if __name__ == '__main__':
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
