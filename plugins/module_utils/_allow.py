# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Non-root replication: which `zfs allow` permissions a zfs command needs, and what to tell a user it was refused to.

A dedicated user replicates with permissions delegated by `zfs allow` (syncoid's and zrepl's way) or runs zfs through
`sudo -n` (TrueNAS's "Use Sudo For ZFS Commands"). When ZFS answers "permission denied", the error names the command's
permissions and the `zfs allow` line that grants them; when sudo refuses, it names the sudoers rule. The permission
names and their dependencies are zfs-allow(8)'s: create, destroy, rollback, snapshot and receive also need mount.
Linux cannot delegate mounting itself, so a non-root user's receives stay unmounted (`zfs recv -u`, which we use).
"""
from __future__ import annotations

import re
from collections.abc import Sequence

# The permissions each zfs subcommand we run needs, beside those of the properties it sets.
_NEEDS = {
    "send": ("send",),
    "recv": ("receive", "create", "mount"),
    "receive": ("receive", "create", "mount"),
    "snapshot": ("snapshot", "mount"),
    "destroy": ("destroy", "mount"),
    "rollback": ("rollback", "mount"),
    "hold": ("hold",),
    "release": ("release",),
    "create": ("create", "mount"),
    "mount": ("mount",),
    "load-key": ("load-key",),
    "change-key": ("change-key",),
    "set": (),
    "inherit": (),
}
# What to delegate to a dedicated user, per side of a replication task (docs/user-guide.md, "Non-root"): grant it on
# the source dataset (or a parent) on the sending host, on the target's parent on the receiving host.
DELEGATION = {
    # zfs send, and the task's hold on the newest common snapshot (hold_base). create_snapshot adds snapshot.
    "source": ("send", "hold", "release", "snapshot", "mount"),
    # zfs recv -u with our -o/-x (canmount, setuid, devices, mountpoint), the hold, retention (destroy), rollback
    # (allow_rollback), readonly=on on the target root, user properties. With properties: true, every property the
    # source sends (a local one, such as compression or recordsize) needs its own permission too.
    "target": ("receive", "create", "mount", "hold", "release", "destroy", "rollback", "canmount", "setuid", "devices",
               "mountpoint", "readonly", "userprop"),
    # encryption: the target made an encryption root with the task's key, and loaded with it.
    "target_encryption": ("encryption", "keyformat", "keylocation", "load-key"),
}
# The options of those subcommands that take a value (the value is not the dataset operand); the others are flags
# (send -L, recv -d, destroy -d are flags).
_VALUED = {"recv": {"-o", "-x"}, "receive": {"-o", "-x"}, "create": {"-o"}, "send": {"-t"}, "load-key": {"-L"}}
# zfs recv sets the properties a stream carries one by one and names each it may not set.
_PROPERTY_REFUSED = re.compile(r"cannot receive (\S+) property on \S+: permission denied")
# What sudo -n prints when it will not run the command without a password or a rule.
_SUDO_REFUSED = ("a password is required", "a terminal is required", "is not allowed to execute",
                 "not in the sudoers file", "may not run sudo")


def _prop(name_value: str) -> str:
    name = name_value.split("=", 1)[0]
    return "userprop" if ":" in name else name


def needed(argv: Sequence[str]) -> tuple[list[str], str | None]:
    """(permissions, dataset) for a zfs ARGV: what `zfs allow` must grant, and on which dataset (the file system
    part of the last operand). ([], None) for commands that need no permission (list, get) or are not zfs."""
    args = [str(a) for a in argv]
    if args[:2] == ["sudo", "-n"]:
        args = args[2:]
    if len(args) < 2 or args[0] != "zfs" or args[1] not in _NEEDS:
        return [], None
    sub, rest = args[1], args[2:]
    perms = list(_NEEDS[sub])
    operands: list[str] = []
    i = 0
    while i < len(rest):
        a = rest[i]
        if a in _VALUED.get(sub, ()) and i + 1 < len(rest):
            if a == "-o" and sub in ("recv", "receive", "create"):
                perms.append(_prop(rest[i + 1]))
            i += 2
            continue
        if not a.startswith("-"):
            operands.append(a)
        i += 1
    if sub in ("set", "inherit") and operands:
        perms += [_prop(operands[0])]
        operands = operands[1:]
    if sub in ("hold", "release") and operands:
        operands = operands[1:]  # the tag
    if sub == "recv" and "-A" in rest:
        perms = ["receive"]
    dataset = operands[-1].split("@", 1)[0] if operands else None
    return sorted(set(perms), key=perms.index), dataset


def hint(argv: Sequence[str], stderr: str, user: str, host: str, sudo: bool) -> str:
    """What to do about a refused zfs command, or "" when ``stderr`` is not a refusal."""
    low = stderr.lower()
    if sudo and any(s in low for s in _SUDO_REFUSED):
        return (f"sudo on {host} would not run zfs for {user} without a password: add a sudoers rule such as "
                f"'{user} ALL=(root) NOPASSWD: /usr/sbin/zfs' there, or turn sudo off and delegate with zfs allow")
    if "permission denied" not in low:
        return ""
    perms, dataset = needed(argv)
    if not perms or not dataset:
        return ""
    perms += [_prop(p) for p in _PROPERTY_REFUSED.findall(stderr) if _prop(p) not in perms]
    return (f"{user} on {host} lacks a zfs permission this needs: grant it with "
            f"'zfs allow -u {user} {','.join(perms)} {dataset}' (or on a parent, which covers its descendants), "
            "or run zfs through sudo (sudo/local_sudo)")


def delegation_wanted(side: str, encryption: bool = False, properties: Sequence[str] = ()) -> list[str]:
    """The permissions to delegate for SIDE (source or target) of a task: DELEGATION's, plus the encryption ones
    for an encrypted target, plus the PROPERTIES the source sends (properties: true). ValueError for a bad side."""
    if side not in ("source", "target"):
        raise ValueError(f"side {side!r}: use source (the sending side) or target (the receiving side)")
    wanted = list(DELEGATION[side])
    if encryption and side == "target":
        wanted += DELEGATION["target_encryption"]
    for prop in properties:
        perm = _prop(str(prop))
        if perm not in wanted:
            wanted.append(perm)
    return wanted


def delegated(allow_output: str, user: str) -> set[str]:
    """The permissions `zfs allow DATASET` (its output) shows as delegated to USER for the dataset and its
    descendants: the "Local+Descendent" sections of the dataset and of its ancestors."""
    granted: set[str] = set()
    section = ""
    for line in allow_output.splitlines():
        if not line.strip() or line.startswith("----"):
            continue
        if not line[0].isspace():
            section = line.strip().rstrip(":")
            continue
        parts = line.split()
        if section.startswith("Local+Descendent") and len(parts) == 3 and parts[:2] == ["user", user]:
            granted.update(parts[2].split(","))
    return granted
