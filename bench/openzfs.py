# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""bench/run --backend openzfs: the same cases on OpenZFS 2.3, in the qemu guest the test suite boots
(tests/openzfs/vm.py), with every tool installed in the guest.

The guest has no network: what it needs is fetched here and copied in. Debian's sanoid (syncoid) and the few
packages it adds to the guest's image come from `apt-get download`; pyznap, zfs-autobackup and ansible-core (the
module case; the newest release for the guest's Python 3.11) as wheels from `pip download` with the bench venv's
Python 3.11. The checkout's tracked files go to /root/zr-bench/src; bench/bench.py runs there with its own
sandbox, which on a host with OpenZFS makes its pools with `zpool create` on image files. Its progress lines are
printed here as they come; results.json comes back to bench/results-openzfs/ (or --results), where the report and
plots are written with the bench venv's matplotlib.

The guest runs in software emulation (TCG): absolute times are many times a real machine's; only the ratios of
one run mean anything, and the report says so.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'tests' / 'openzfs'))
sys.path.insert(0, str(ROOT / 'bench'))

import vm  # noqa: E402

import bench  # noqa: E402

CACHE = Path(os.environ.get('ZR_CACHE_DIR', '/var/cache/zfs-replication')) / 'bench'
HOST_PYTHON = CACHE / 'venv' / 'bin' / 'python'  # Python 3.11, as the guest's: its pip picks the guest's wheels
GUEST = '/root/zr-bench'
GUEST_VENV = '/var/cache/zfs-replication/bench/venv'  # where bench.py looks for the peers, as on the host
# sanoid and what it needs that the guest image lacks (Debian 12); dpkg -i in the guest names anything missing.
DEBS = ('sanoid', 'libcapture-tiny-perl', 'libconfig-inifiles-perl', 'lzop', 'liblzo2-2')
RESULTS = ROOT / 'bench' / 'results-openzfs'


def say(*a: object) -> None:
    print(*a, flush=True)


def pin(package: str) -> str:
    """PACKAGE==version as tests/requirements-oldest.txt pins it (the ansible-core line that runs on Python 3.11)."""
    text = (ROOT / 'tests' / 'requirements-oldest.txt').read_text()
    found = re.search(rf'^{re.escape(package)}==\S+', text, re.M)
    if not found:
        raise SystemExit(f'tests/requirements-oldest.txt pins no {package}')
    return found.group(0)


def wheels() -> Path:
    specs = ['pyznap==1.6.0', 'zfs-autobackup==3.3', pin('ansible-core')]
    key = hashlib.sha256(' '.join(sorted(specs)).encode()).hexdigest()[:16]
    directory = CACHE / 'guest-wheels' / key
    if not (directory / '.complete').exists():
        directory.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(HOST_PYTHON), '-m', 'pip', 'download', '--only-binary=:all:', '-q', '-d', str(directory), *specs],
                       check=True, timeout=900)
        (directory / '.complete').write_text('')
    return directory


def debs() -> Path:
    key = hashlib.sha256(' '.join(DEBS).encode()).hexdigest()[:16]
    directory = CACHE / 'guest-debs' / key
    if not (directory / '.complete').exists():
        directory.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(['apt-get', 'download', *DEBS], cwd=directory, capture_output=True, text=True, check=False, timeout=900)
        if proc.returncode != 0:
            subprocess.run(['apt-get', 'update', '-qq'], check=True, timeout=900)
            subprocess.run(['apt-get', 'download', *DEBS], cwd=directory, check=True, timeout=900)
        (directory / '.complete').write_text('')
    return directory


def copy_in(guest: vm.VM, tar_argv: list[str], dest: str) -> None:
    """Pipe TAR_ARGV's archive (on stdout) into DEST in the guest."""
    try:
        guest.untar(tar_argv, dest)
    except vm.VMError as exc:
        raise SystemExit(str(exc)) from None


def ship(guest: vm.VM) -> None:
    files = subprocess.run(['git', '-C', str(ROOT), 'ls-files', '-z'], capture_output=True, check=True).stdout
    listing = CACHE / 'guest-files.lst'
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_bytes(files)
    copy_in(guest, ['tar', '-C', str(ROOT), '--null', '-T', str(listing), '-cf', '-'], f'{GUEST}/src')
    # The guest gets no .git: the commit and the engine's last commit (bench.py --merge compares it) go as files.
    for name, value in (('commit', bench.git_commit()), ('engine', bench.engine_commit())):
        guest.run(f'printf %s {shlex.quote(value)} > {GUEST}/{name}')
    copy_in(guest, ['tar', '-C', str(debs()), '-cf', '-', '.'], f'{GUEST}/debs')
    copy_in(guest, ['tar', '-C', str(wheels()), '-cf', '-', '.'], f'{GUEST}/wheels')
    # No service of sanoid's starts in the guest (policy-rc.d, as in the image's build): only syncoid is used.
    guest.run("printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d")
    guest.run(f'dpkg -i {GUEST}/debs/*.deb >/dev/null && rm -f /usr/sbin/policy-rc.d', timeout=900)
    guest.run(f'python3 -m venv {GUEST_VENV} && PIP_NO_INDEX=1 PIP_FIND_LINKS={GUEST}/wheels {GUEST_VENV}/bin/pip install -q '
              f'--disable-pip-version-check pyznap zfs-autobackup ansible-core', timeout=1800)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--results', default=str(RESULTS))
    ap.add_argument('--memory', default='3072', help="the guest's memory in MiB")
    ap.add_argument('--smp', type=int, default=2, help="the guest's vCPUs")
    ap.add_argument('--disk', default='24G', help="the guest's disk for the pool images (sparse)")
    ours, rest = ap.parse_known_args(argv)
    results = Path(ours.results)
    t0 = time.monotonic()
    say('bench: OpenZFS guest: building the image unless cached, then booting it (about 1 min)')
    vm.build_with_progress()
    guest = vm.start(memory=ours.memory, smp=ours.smp, disk_size=ours.disk, tie_to_parent=True)
    try:
        say(f'bench: guest up after {time.monotonic() - t0:.0f} s; copying the checkout, syncoid, pyznap, zfs-autobackup and ansible-core in')
        # The sandbox's pool images go to /var/tmp: on the guest's root file system (about 1 GB free) 200 datasets
        # with four targets' snapshots fill it and suspend the pools. A file system of its own on the first pool
        # disk (a sparse file here) holds them.
        guest.run(f'mkfs.ext4 -q -F {shlex.quote(guest.disks[0])} && mount {shlex.quote(guest.disks[0])} /var/tmp')
        ship(guest)
        zfs = guest.run('zfs version | head -1').stdout.strip()
        say(f'bench: guest ready ({zfs}) after {time.monotonic() - t0:.0f} s; running bench/bench.py there')
        if '--merge' in rest and (results / 'results.json').exists():  # the earlier cases, for bench.py to keep
            copy_in(guest, ['tar', '-C', str(results), '-cf', '-', 'results.json'], f'{GUEST}/results')
        command = (f'cd {GUEST}/src && ZB_ANSIBLE_VENV={GUEST_VENV} ZB_GIT=$(cat {GUEST}/commit) ZB_ENGINE=$(cat {GUEST}/engine) '
                   f'python3 bench/bench.py --no-report --results {GUEST}/results {shlex.join(rest)}')
        proc = subprocess.Popen(guest.ssh_argv(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end='', flush=True)
        rc = proc.wait()
        got = guest.run(f'cat {GUEST}/results/results.json', check=False)
        if got.returncode != 0:
            say(f'bench: no results.json in the guest (bench.py exited {rc})')
            return rc or 1
        res = json.loads(got.stdout)
    finally:
        guest.stop()
    host = subprocess.run(['nproc'], capture_output=True, text=True, check=False).stdout.strip()
    res['machine']['guest'] = (f'qemu TCG (software emulation), {ours.smp} vCPUs and {ours.memory} MiB on a host with '
                               f'{host} cores')
    results.mkdir(parents=True, exist_ok=True)
    (results / 'results.json').write_text(json.dumps(res, indent=1, default=str))
    import report
    report.write(res, results)
    say((results / 'results.md').read_text())
    return rc


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
