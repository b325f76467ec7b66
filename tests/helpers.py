# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Small helpers for tests that look at the real state of the system (the zfs CLI, files on disk)."""

from __future__ import annotations

import ast
import contextlib
import hashlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

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


def prop(dataset: str, name: str) -> str:
    """The value of one property (`zfs get -H -o value`)."""
    return zfs('get', '-H', '-o', 'value', name, dataset).strip()


def mountpoint(dataset: str) -> str:
    return prop(dataset, 'mountpoint')


def datasets_under(root: str) -> list[str]:
    """ROOT and its descendant filesystems."""
    return zfs('list', '-H', '-o', 'name', '-r', '-t', 'filesystem', root).splitlines()  # one name a line: names may have spaces


def own_checksums(dataset: str) -> dict[str, str]:
    """Checksums of one dataset's files (child datasets mounted below it are left out)."""
    children = {c[len(dataset) + 1:].split('/')[0] for c in datasets_under(dataset) if c != dataset}
    sums = tree_checksums(mountpoint(dataset))
    return {k: v for k, v in sums.items() if k.split('/')[0] not in children}


def mounted_checksums(dataset: str) -> dict[str, str]:
    """Checksums of a replica's own files: mounts it (replicas are received unmounted), reads, unmounts again."""
    was_mounted = prop(dataset, 'mounted') == 'yes'
    if not was_mounted:
        zfs('mount', dataset)
    path = mountpoint(dataset)
    try:
        return own_checksums(dataset)
    finally:
        if not was_mounted:
            zfs('unmount', dataset)
            # zfs leaves the empty directory behind; inside a parent's mountpoint it would stop the parent
            # from mounting later ("directory is not empty").
            with contextlib.suppress(OSError):
                os.rmdir(path)


def dataset_exists(dataset: str) -> bool:
    try:
        zfs('get', '-H', '-o', 'value', 'type', dataset)
    except CommandError:
        return False
    return True


def held(dataset: str) -> dict[str, int]:
    """{snapshot (full name): userrefs} of the held snapshots of DATASET and its descendants."""
    out = zfs('get', '-H', '-p', '-r', '-o', 'name,value', 'userrefs', dataset)
    return {n: int(v) for n, v in (line.split('\t') for line in out.splitlines()) if '@' in n and v.isdigit() and int(v) > 0}


def release_holds(dataset: str, tags: Iterable[str]) -> None:
    """Release hold TAGS wherever they are below DATASET (zfs-fuse has no `zfs holds`: try each held snapshot)."""
    tags = list(tags)
    for full in held(dataset) if tags else ():
        for tag in tags:
            with contextlib.suppress(CommandError):
                zfs('release', tag, full)


def destroy_retrying(dataset: str, timeout: float = 20, tags: Iterable[str] = ()) -> None:
    """Release hold TAGS (our tasks' `zfs.replication:NAME`), then zfs destroy -r, retried: zfs-fuse says "dataset
    is busy" for a moment after an unmount, a send or a receive. A dataset still busy at the end is left behind
    with a warning (a teardown must not fail the test it ends; the pool goes at the end of the session)."""
    import time
    import warnings

    if not dataset_exists(dataset):
        return
    release_holds(dataset, tags)
    deadline = time.monotonic() + timeout
    while True:
        try:
            zfs('destroy', '-r', dataset)
            return
        except CommandError as exc:
            if 'does not exist' in str(exc):
                return
            if time.monotonic() > deadline:
                warnings.warn(f'teardown: {dataset} left behind: {exc}', RuntimeWarning, stacklevel=2)
                return
            time.sleep(0.5)


# ---------------------------------------------------------------------------------------- the collection's own docs
REPO_ROOT = Path(__file__).resolve().parents[1]


def _string_constant(path: Path, name: str, cls: str | None = None) -> str:
    tree = ast.parse(path.read_text())
    body = tree.body
    if cls:
        body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls).body
    for node in body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f'{path}: no {name}')


def module_options(module: str) -> dict[str, Any]:
    """The module's documented options, doc fragments of this collection merged in."""
    import yaml  # only the unit tiers read the docs; yaml comes with ansible-core

    doc = yaml.safe_load(_string_constant(REPO_ROOT / 'plugins' / 'modules' / f'{module}.py', 'DOCUMENTATION'))
    options = dict(doc.get('options') or {})
    for fragment in doc.get('extends_documentation_fragment') or []:
        if fragment.startswith('zfs.replication.'):
            path = REPO_ROOT / 'plugins' / 'doc_fragments' / f'{fragment.split(".")[-1]}.py'
            options.update(yaml.safe_load(_string_constant(path, 'DOCUMENTATION', 'ModuleDocFragment')).get('options') or {})
    return options


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released): a listener may take it, ssh to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sandbox_ssh(sandbox: Any, port: int | None = None) -> dict[str, Any]:
    """The task's ``ssh`` option for the sandbox's sshd (root, its key, its verified host key), or another PORT."""
    return {"host": "127.0.0.1", "port": port or sandbox.sshd.port, "user": "root", "private_key_file": str(sandbox.sshd.private_key),
            "known_hosts_file": str(sandbox.sshd.known_hosts)}


def warning_lines(result: Any) -> list[str]:
    """The [WARNING] and [DEPRECATION WARNING] lines of an ansible-playbook run (a PlaybookResult)."""
    return [line for line in (result.stdout + result.stderr).splitlines()
            if "[WARNING]" in line or "[DEPRECATION WARNING]" in line]


def changed_tasks(result: Any) -> list[str]:
    """'TASK NAME (HOST)' for every task result of a PlaybookResult that reported changed."""
    return [f"{t['task']['name']} ({h})" for t in result.tasks_run for h, r in t["hosts"].items() if r.get("changed")]


def scheduler_vars(root: str | os.PathLike[str], config_dir: str = 'etc') -> dict[str, Any]:
    """The scheduler role's variables for a run without systemd, every path under ROOT (units written, not started);
    the engine runs on this Python. A caller adds or overrides the rest (metrics, state and log elsewhere)."""
    root = Path(root)
    return {
        'scheduler_systemd': False,
        'scheduler_python': sys.executable,
        'scheduler_engine_dir': str(root / 'engine'),
        'scheduler_launcher': str(root / 'bin' / 'zfs-replication-run'),
        'scheduler_config_dir': str(root / config_dir),
        'scheduler_state_dir': str(root / 'state'),
        'scheduler_log_dir': str(root / 'log'),
        'scheduler_unit_dir': str(root / 'units'),
    }
