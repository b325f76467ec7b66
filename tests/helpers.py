# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Small helpers for tests that look at the real state of the system (the zfs CLI, files on disk)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from sandbox import ZFS, ZPOOL


class CommandError(AssertionError):
    pass


def _run(argv: list[str], input: str | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, input=input, check=False,
                          stdin=None if input is not None else subprocess.DEVNULL, timeout=300)
    if proc.returncode != 0:
        raise CommandError(f'{" ".join(argv)} exited {proc.returncode}: {proc.stderr.strip()}')
    return proc.stdout


def zfs(*args: str) -> str:
    """Run the real `zfs` CLI; return its stdout, raise CommandError (with stderr) when it fails."""
    return _run([ZFS, *args])


def zpool(*args: str) -> str:
    return _run([ZPOOL, *args])


def snapshots_with_guids(dataset: str) -> dict[str, str]:
    """{snapshot name relative to DATASET: guid} for DATASET and its descendants.

    Keys look like '@snap' or '/child@snap', so the same replica on another pool compares equal.
    Uses `zfs get -H -p` because zfs-fuse's `zfs list` has no -p and abbreviates guids.
    """
    out = zfs('get', '-H', '-p', '-r', '-o', 'name,property,value', 'guid', dataset)
    result = {}
    for line in out.splitlines():
        name, _prop, value = line.split('\t')
        if '@' in name:
            result[name[len(dataset):]] = value
    return result


def tree_checksums(mountpoint: str | os.PathLike[str]) -> dict[str, str]:
    """{relative path: sha256} of every regular file under MOUNTPOINT (symlinks as 'link:TARGET'; .zfs skipped)."""
    root = Path(mountpoint)
    sums = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not (Path(dirpath) == root and d == '.zfs'))
        # os.walk lists symlinks to directories with the directories and does not follow them.
        for name in [d for d in dirnames if Path(dirpath, d).is_symlink()]:
            dirnames.remove(name)
            filenames.append(name)
        for name in filenames:
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            if path.is_symlink():
                sums[rel] = f'link:{os.readlink(path)}'
            elif path.is_file():
                digest = hashlib.sha256()
                with open(path, 'rb') as f:
                    for chunk in iter(lambda: f.read(1 << 20), b''):
                        digest.update(chunk)
                sums[rel] = digest.hexdigest()
    return sums
