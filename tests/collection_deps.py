# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collections zfs.replication depends on (galaxy.yml `dependencies`), for tests and the demo, without Galaxy.

This machine reaches PyPI but not Galaxy. The `ansible` community package on PyPI bundles the collections it ships
(ansible_collections/ansible/posix among them), so the wheel of one pinned release is downloaded once with pip and
only the collections we need are extracted into a cache directory. Later runs use the cache and need no network.

    python tests/collection_deps.py      # make sure the cache is there; print the collections path

Standard library only (tests/sandbox.py and scripts use it). Concurrent callers are serialized by a lock file.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

# The community package release whose bundled collections we test with: ansible 14.5.0 ships ansible.posix 2.2.2,
# inside the range galaxy.yml and requirements.yml declare (>=1.5.0,<3.0.0).
ANSIBLE_PACKAGE = 'ansible==14.5.0'
COLLECTIONS = ('ansible/posix',)
CACHE_ROOT = Path(os.environ.get('ZR_CACHE_DIR') or '/var/cache/zfs-replication')


class CollectionDepsError(RuntimeError):
    pass


def cache_dir() -> Path:
    """Where the extracted collections of ANSIBLE_PACKAGE live (a value for ANSIBLE_COLLECTIONS_PATH)."""
    return CACHE_ROOT / 'collection-deps' / ANSIBLE_PACKAGE.replace('==', '-')


def _complete(path: Path) -> bool:
    return all((path / 'ansible_collections' / name / 'MANIFEST.json').is_file() for name in COLLECTIONS)


def _download_wheel(directory: Path) -> Path:
    # Only the wheel's collections are unpacked: the package's own Python floor (3.12 for ansible 14) does not apply
    # to the demo's venv on a distribution python3.11.
    argv = [sys.executable, '-m', 'pip', 'download', '--quiet', '--no-deps', '--only-binary=:all:', '--ignore-requires-python',
            '--disable-pip-version-check', '--dest', str(directory), ANSIBLE_PACKAGE]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL, timeout=900)
    wheels = sorted(directory.glob('ansible-*.whl'))
    if proc.returncode != 0 or not wheels:
        raise CollectionDepsError(f'could not download {ANSIBLE_PACKAGE} from PyPI to get {", ".join(COLLECTIONS)} '
                                  f'({" ".join(argv)} exited {proc.returncode}): {proc.stderr.strip()[-2000:]}')
    return wheels[0]


def _extract(wheel: Path, dest: Path) -> None:
    prefixes = tuple(f'ansible_collections/{name}/' for name in COLLECTIONS)
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.namelist() if m.startswith(prefixes)]
        if not members:
            raise CollectionDepsError(f'{wheel.name} has none of {", ".join(COLLECTIONS)}')
        for member in members:
            archive.extract(member, dest)


def collections_path() -> Path:
    """A directory with ansible_collections/<each of COLLECTIONS>, downloading and extracting them once."""
    final = cache_dir()
    if _complete(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / '.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _complete(final):  # another process finished it while we waited
            return final
        with tempfile.TemporaryDirectory(dir=final.parent, prefix='.download-') as tmp:
            staging = Path(tmp, 'tree')
            _extract(_download_wheel(Path(tmp)), staging)
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)
    return final


def install_into(collections_dir: str | os.PathLike[str]) -> list[Path]:
    """Copy the dependency collections into COLLECTIONS_DIR/ansible_collections/ (what `ansible-galaxy collection
    install` of our requirements.yml would leave there). Returns the collection directories."""
    source = collections_path() / 'ansible_collections'
    installed = []
    for name in COLLECTIONS:
        target = Path(collections_dir, 'ansible_collections', name)
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source / name, target, symlinks=True)
        installed.append(target)
    return installed


def versions() -> dict[str, str]:
    """{'ansible.posix': '2.2.2', ...} of the cached collections (from their MANIFEST.json)."""
    out = {}
    for name in COLLECTIONS:
        manifest = json.loads((collections_path() / 'ansible_collections' / name / 'MANIFEST.json').read_text())
        out[name.replace('/', '.')] = manifest['collection_info']['version']
    return out


if __name__ == '__main__':
    print(collections_path())
