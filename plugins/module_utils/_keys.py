# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The generated encryption key of a replication task (``encryption_key_generate``, TrueNAS "Generate Encryption Key").

The first run makes a 32-byte key with the OS's CSPRNG (:func:`secrets.token_hex`) and keeps it, as 64 hexadecimal
digits and a newline, in ``STATE_DIR/keys/repl-NAME.key`` on the host that runs the engine (the source for push, the
target for pull): the directory mode 0700, the file 0600, both the runner's (root's). Every later run reads it back.

Invariants:

* A key file is never replaced. It is written once, atomically: a temporary file in the same directory (0600 from
  the start), flushed to disk, then linked to its name with ``os.link``, which fails when a key is already there, so
  a concurrent writer's key wins and the loser reads it back.
* A missing key file with a target this task already encrypted (an encryption root at or below ``target_dataset``)
  is an error that says where the key was expected; no new key is made, since it could never unlock that target.
* The key is returned to the caller only, which passes it on standard input; this file's messages name the path,
  never the key. Check mode writes nothing.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
import tempfile
from pathlib import Path
from typing import Callable

from ._first_full import DEFAULT_STATE_DIR
from ._zfs import Listing, is_within

KEY_DIR = "keys"
KEY_BYTES = 32
HEX_KEY_RE = re.compile(r"[0-9a-f]{64}")


class KeyStoreError(Exception):
    """The generated key cannot be used or kept; the message names the path and the fix, never the key."""


def key_path(state_dir: str | os.PathLike[str] | None, task_name: str) -> Path:
    """Where task ``task_name`` keeps its generated key: next to its state (repl-NAME.json), in a root-only directory."""
    return Path(state_dir or DEFAULT_STATE_DIR, KEY_DIR, f"repl-{task_name}.key")


def generate_key() -> str:
    """A new hex key: 32 bytes from the OS's CSPRNG, as 64 lowercase hexadecimal digits."""
    return secrets.token_hex(KEY_BYTES)


def keyed_targets(listing: Listing | None, target_dataset: str) -> list[str]:
    """The encryption roots in the target ``listing`` whose key is this task's: at or below ``target_dataset``.

    A target encrypted under a parent's key (an encryption root above ``target_dataset``) is not unlocked by the
    task's key, so it does not count. Listings without encryption properties (zfs-fuse) have none."""
    if listing is None:
        return []
    roots = {ds.props.get("encryptionroot", "-") for ds in listing.datasets.values()
             if ds.props.get("encryption", "off") not in ("off", "-", "")}
    return sorted(r for r in roots if r not in ("-", "") and is_within(r, target_dataset))


def read_key(path: Path) -> str | None:
    """The key kept in ``path`` (None when there is no file). Refuses a file others can read or that holds no hex key."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise KeyStoreError(f"encryption_key_generate: {path} is not a regular file: put the task's key file there (mode 0600)")
    if st.st_mode & 0o077:
        raise KeyStoreError(
            f"encryption_key_generate: the key file {path} can be read by others (mode {stat.S_IMODE(st.st_mode):04o}): "
            f"make it root's alone (chmod 600 {path}) and check who may have copied it"
        )
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyStoreError(f"encryption_key_generate: cannot read the key file {path}: {exc}") from exc
    if not HEX_KEY_RE.fullmatch(text.lower()):
        raise KeyStoreError(
            f"encryption_key_generate: {path} does not hold a hex key (64 hexadecimal digits): restore the task's key "
            "there from your export (mode 0600); a new key would not unlock the target"
        )
    return text.lower()


def _private_dir(directory: Path) -> None:
    """``directory`` exists, is a directory of this user's, and is mode 0700 (made so when it was looser)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o700)
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise KeyStoreError(f"encryption_key_generate: {directory} is not a directory: it holds the tasks' generated keys")
    if st.st_uid != os.geteuid():
        raise KeyStoreError(f"encryption_key_generate: {directory} belongs to uid {st.st_uid}, not to the user the task runs as: "
                            "the keys directory must be this user's alone (mode 0700)")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(directory, 0o700)  # mkdir's mode is cut by the umask, and a looser directory exposes the key's name


def store_key(path: Path, key: str) -> bool:
    """Keep ``key`` in ``path`` unless a key is there already. True when this call wrote it.

    Atomic and never replacing: the key is written to a 0600 temporary file next to ``path``, synced, and linked to
    ``path``; when ``path`` exists by then the link fails and the temporary file goes (the caller reads the one there).
    """
    if not HEX_KEY_RE.fullmatch(key):
        raise ValueError("internal: only a generated hex key is stored")
    _private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # 0600, whatever the umask
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(key + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the new name survives a crash right after the run
    finally:
        os.close(dir_fd)
    return True


def obtain_key(path: Path, keyed: list[str], check_mode: bool, log: Callable[[str], None]) -> tuple[str | None, bool]:
    """The task's key: read from ``path``, or generated and kept there when there is none yet.

    ``keyed``: the target's encryption roots this task's key must unlock (:func:`keyed_targets`); with a missing key
    file they make this a KeyStoreError, never a new key. In check mode nothing is written and the key is None when it
    would be generated. Returns (key, generated by this call).
    """
    key = read_key(path)
    if key is not None:
        return key, False
    if keyed:
        raise KeyStoreError(
            f"encryption_key_generate: the key of {', '.join(keyed)} is missing: it was expected in {path} on this host. "
            f"Nothing was changed. Restore the task's key there (64 hexadecimal digits, mode 0600, directory mode 0700) from "
            "your export of it; a new key cannot unlock the existing target (to start over without its data, destroy the "
            "target and run again)"
        )
    if check_mode:
        log(f"encryption_key_generate: a new key would be generated and kept in {path} (check mode: nothing written)")
        return None, False
    try:
        written = store_key(path, generate_key())
    except OSError as exc:
        raise KeyStoreError(f"encryption_key_generate: cannot keep the new key in {path}: {exc.strerror or exc}: "
                            "the task's state_dir must be writable by the user it runs as") from exc
    key = read_key(path)
    if key is None:
        raise KeyStoreError(f"encryption_key_generate: the key file {path} disappeared right after it was written")
    if written:
        log(f"encryption_key_generate: generated the target's key and kept it in {path} (export it: without it the "
            "replica cannot be read)")
    return key, written


__all__ = ["KeyStoreError", "generate_key", "key_path", "keyed_targets", "obtain_key", "read_key", "store_key"]
