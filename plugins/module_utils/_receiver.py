# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The append-only receiver: the forced command of a push task's key on its target (``target_access: append_only``).

sshd runs it for every command the key asks for, with that command in ``SSH_ORIGINAL_COMMAND``. It parses the
command as the argv the engine sends (:func:`shlex.split`, then a strict check of every word: no shell ever reads
it) and runs only what a push needs inside the task's target roots:

* ``zfs version``; ``zfs list``/``get``/``holds`` of the roots and what is below them, and of their parents on their
  own (no -r: the rest of the pool stays unlisted);
* ``zfs recv -u`` (only as a pipeline, below) into a root or below it, with ``-s``, ``-x PROP`` and ``-o PROP=VALUE`` that cannot mount or
  expose anything (never ``-F``); ``zfs recv -A`` (abort an interrupted receive) there;
* ``zfs hold``/``release`` of the task's own tag on snapshots there; ``zfs create`` of a root or a dataset below it;
  ``zfs set`` of the protective values the engine sets (readonly=on, canmount=noauto, ...);
* ``zfs-replication-which PROGRAM...``: which of the stream's filters (pv, mbuffer, decompressors) are missing;
* ``zfs-replication-pipeline JSON``: a receive pipeline (filters, then ``zfs recv``), each stage checked as above and
  run here with :mod:`subprocess`, each stage's exit status reported on stderr as the engine's shell pipeline does.

Everything else (destroy, rollback, recv -F, rename, mount, a dataset outside the roots, another program, a shell)
is refused: a message on stderr, exit status 126, and a line in the log and in syslog. Standard library only.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence

from ._receiver_protocol import PIPELINE, WHICH

REFUSED = 126
# What may stand before zfs recv in a receive pipeline: the engine's buffer, counter and decompressors
# (_replication_task.COMPRESSORS' second argv of each tool; a unit test keeps the two the same).
DECOMPRESSORS = (
    ["lz4", "-q", "-d", "-c"],
    ["zstd", "-q", "-d", "-c"],
    ["pigz", "-d", "-c"],
    ["xz", "-d", "-c"],
    ["plzip", "-q", "-d", "-c"],
)
FILTER_PROGRAMS = frozenset({"pv", "mbuffer", *(argv[0] for argv in DECOMPRESSORS)})
# Names ZFS accepts for datasets and snapshot parts (letters, digits, space and _ - . :), nothing a path or a shell
# would read differently; "." and ".." components are refused separately.
_COMPONENT = re.compile(r"^[A-Za-z0-9_.: -]+\Z")
_PROP = re.compile(r"^[a-z][a-z0-9_]*(:[a-z0-9_.:-]+)?\Z|^[a-z0-9_.-]+:[a-z0-9_.:-]+\Z")
_PROP_LIST = re.compile(r"^[a-z0-9_.:-]+(,[a-z0-9_.:-]+)*\Z")
_NUMBER = re.compile(r"^[0-9]{1,12}\Z")
_SIZE = re.compile(r"^[0-9]{1,12}[kKmMgG]?\Z")
# zfs recv -o / zfs set values the engine sends that can neither mount a replica nor expose it
# (a compromised source must not be able to mount a replica over /etc or share it).
SAFE_VALUES = {
    "canmount": {"noauto", "off"},
    "readonly": {"on"},
    "setuid": {"off"},
    "devices": {"off"},
    "exec": {"off"},
    "mountpoint": {"none", "legacy"},
    "keylocation": {"prompt"},
    "sharenfs": {"off"},
    "sharesmb": {"off"},
}
# Properties a receive may never take a value for other than SAFE_VALUES' (everything else in -o is a plain
# dataset property such as compression or a user property, which changes no path).
# origin: a receive as a clone of a snapshot elsewhere would pin that snapshot (it could no longer be destroyed).
GUARDED = frozenset({*SAFE_VALUES, "encryption", "keyformat", "zoned", "overlay", "snapdev", "volmode", "origin"})


class Refused(Exception):
    """The command is not one a push to these roots needs."""


class Receiver:
    def __init__(self, roots: Sequence[str], tags: Sequence[str], log_file: str | None = None):
        self.roots = [r.rstrip("/") for r in roots]
        self.tags = list(tags)
        self.log_file = log_file

    # -- names ---------------------------------------------------------------------------------------------------
    @staticmethod
    def _check_name(name: str) -> tuple[str, str | None]:
        """(dataset, snapshot part or None) of a well-formed name; Refused otherwise."""
        if "#" in name or name.count("@") > 1:
            raise Refused(f"{name!r} is not a dataset or snapshot name this receiver accepts")
        dataset, _at, snap = name.partition("@")
        parts = dataset.split("/")
        if any(p in ("", ".", "..") or not _COMPONENT.match(p) for p in parts) or (_at and not _COMPONENT.match(snap)):
            raise Refused(f"{name!r} is not a valid dataset name (letters, digits, space and _ - . : only; no . or .. part)")
        return dataset, (snap if _at else None)

    def inside(self, name: str, snapshot: bool | None = None) -> str:
        """``name`` when it is a root or below one (``snapshot``: True must be a snapshot, False must not be)."""
        dataset, snap = self._check_name(name)
        if snapshot is True and snap is None or snapshot is False and snap is not None:
            raise Refused(f"{name!r}: a {'snapshot' if snapshot else 'dataset'} name is expected here")
        if not any(dataset == r or dataset.startswith(r + "/") for r in self.roots):
            raise Refused(f"{name} is outside the target root{'s' if len(self.roots) > 1 else ''} {', '.join(self.roots)}")
        return name

    def readable(self, name: str, recursive: bool) -> str:
        """``name`` when it is inside a root, or a parent of one read on its own (the engine reads the type and the
        encryption of the root's parent; a recursive read there would list the rest of the pool)."""
        dataset, _snap = self._check_name(name)
        if any(r != dataset and r.startswith(dataset + "/") for r in self.roots):
            if recursive:
                raise Refused(f"{name} is a parent of the target root: it may be read only on its own (no -r or -d)")
            return name
        return self.inside(name)

    # -- zfs verbs -----------------------------------------------------------------------------------------------
    def check_zfs(self, argv: list[str]) -> list[str]:
        """``argv`` (``zfs VERB ...``, maybe after ``sudo -n``) when it is allowed; Refused otherwise."""
        words = argv[2:] if argv[:2] == ["sudo", "-n"] else argv
        if words[:1] != ["zfs"] or len(words) < 2:
            raise Refused(f"{words[0] if words else '(nothing)'}: only zfs and the stream's filters run here")
        verb, args = words[1], words[2:]
        check = {
            "version": self._version, "list": self._read, "get": self._read, "holds": self._holds,
            "recv": self._recv, "receive": self._recv, "hold": self._hold, "release": self._hold,
            "create": self._create, "set": self._set,
        }.get(verb)
        if check is None:
            raise Refused(f"zfs {verb} is not allowed: this key may only receive into {', '.join(self.roots)}"
                          " (destroy, rollback, rename, mount and the like are done on the target host itself)")
        check(verb, args)
        return argv

    def _version(self, verb: str, args: list[str]) -> None:
        if args:
            raise Refused("zfs version takes no arguments here")

    def _read(self, verb: str, args: list[str]) -> None:
        flags = {"-H": False, "-p": False, "-r": False, "-d": True, "-t": True, "-o": True, "-s": True, "-S": True}
        operands = self._options(verb, args, flags)
        if verb == "get":
            if not operands:
                raise Refused("zfs get needs a property list")
            if not _PROP_LIST.match(operands[0]):
                raise Refused(f"zfs get: {operands[0]!r} is not a property list")
            operands = operands[1:]
        if not operands:
            raise Refused(f"zfs {verb} needs a dataset inside {', '.join(self.roots)} (a listing of every pool is not allowed)")
        recursive = "-r" in args or "-d" in args
        for name in operands:
            self.readable(name, recursive)

    def _holds(self, verb: str, args: list[str]) -> None:
        operands = self._options(verb, args, {"-H": False, "-p": False, "-r": False})
        if not operands:
            raise Refused("zfs holds needs snapshots")
        for name in operands:
            self.inside(name, snapshot=True)

    def _hold(self, verb: str, args: list[str]) -> None:
        operands = self._options(verb, args, {"-r": False})
        if len(operands) < 2:
            raise Refused(f"zfs {verb} needs the task's tag and snapshots")
        if operands[0] not in self.tags:
            raise Refused(f"zfs {verb}: tag {operands[0]!r} is not this key's task's ({', '.join(self.tags)})")
        for name in operands[1:]:
            self.inside(name, snapshot=True)

    def _create(self, verb: str, args: list[str]) -> None:
        if len(args) != 1:
            raise Refused("zfs create takes one dataset here, without options")
        self.inside(args[0], snapshot=False)

    def _set(self, verb: str, args: list[str]) -> None:
        assignments = [a for a in args if "=" in a]
        names = args[len(assignments):]
        if not assignments or not names or any("=" in n for n in names):
            raise Refused("zfs set takes PROPERTY=VALUE... DATASET... here")
        for a in assignments:
            prop, _eq, value = a.partition("=")
            if value not in SAFE_VALUES.get(prop, ()):
                raise Refused(f"zfs set {a}: only {self._safe_list()} may be set through this key")
        for name in names:
            self.inside(name, snapshot=False)

    @staticmethod
    def _safe_list() -> str:
        return ", ".join(f"{p}={v}" for p, vs in sorted(SAFE_VALUES.items()) for v in sorted(vs))

    def _recv(self, verb: str, args: list[str]) -> None:
        if args[:1] == ["-A"]:
            if len(args) != 2:
                raise Refused("zfs recv -A takes one dataset")
            self.inside(args[1], snapshot=False)
            return
        seen: set[str] = set()
        i = 0
        while i < len(args) and args[i].startswith("-"):
            flag = args[i]
            if flag in ("-u", "-s"):
                seen.add(flag)
                i += 1
            elif flag in ("-o", "-x") and i + 1 < len(args):
                self._recv_property(flag, args[i + 1])
                i += 2
            elif flag == "-F":
                raise Refused("zfs recv -F may destroy snapshots and datasets on the target: not through this key")
            else:
                raise Refused(f"zfs recv {flag} is not allowed here")
        if "-u" not in seen:
            raise Refused("zfs recv without -u would mount the replica: not through this key")
        if len(args) - i != 1:
            raise Refused("zfs recv takes one target dataset")
        self.inside(args[i], snapshot=False)

    def _recv_property(self, flag: str, word: str) -> None:
        prop, eq, value = word.partition("=")
        if not _PROP.match(prop):
            raise Refused(f"zfs recv {flag} {word!r}: not a property name")
        if flag == "-x":
            if eq:
                raise Refused(f"zfs recv -x {word!r}: -x takes a property name")
            return
        if not eq:
            raise Refused(f"zfs recv -o {word!r}: -o takes PROPERTY=VALUE")
        if prop in GUARDED and value not in SAFE_VALUES.get(prop, ()):
            raise Refused(f"zfs recv -o {word}: {prop} may only be received as {', '.join(sorted(SAFE_VALUES.get(prop, ()))) or '(nothing)'}"
                          " through this key")
        if any(ord(c) < 32 for c in value):
            raise Refused(f"zfs recv -o {prop}: control characters in the value")

    @staticmethod
    def _options(verb: str, args: list[str], flags: dict[str, bool]) -> list[str]:
        """The operands after ``flags`` (True: takes a value, which must be a property list or a number)."""
        i = 0
        while i < len(args) and args[i].startswith("-"):
            flag = args[i]
            if flag not in flags:
                raise Refused(f"zfs {verb} {flag} is not allowed here")
            if flags[flag]:
                if i + 1 >= len(args):
                    raise Refused(f"zfs {verb} {flag} needs a value")
                value = args[i + 1]
                if not (_PROP_LIST.match(value) if flag != "-d" else _NUMBER.match(value)):
                    raise Refused(f"zfs {verb} {flag} {value!r} is not a valid value")
                i += 2
            else:
                i += 1
        return args[i:]

    # -- filters -------------------------------------------------------------------------------------------------
    @staticmethod
    def check_filter(argv: list[str]) -> list[str]:
        if argv in DECOMPRESSORS:
            return argv
        prog, args = (argv[0] if argv else ""), argv[1:]
        if prog == "pv":
            i = 0
            while i < len(args):
                if args[i] in ("-n", "-b", "-f", "-q"):
                    i += 1
                elif args[i] in ("-i", "-L") and i + 1 < len(args) and _NUMBER.match(args[i + 1]):
                    i += 2
                else:
                    raise Refused(f"pv {args[i]} is not allowed here")
            return argv
        if prog == "mbuffer":
            if len(args) == 5 and args[:4] == ["-q", "-s", "128k", "-m"] and _SIZE.match(args[4]):
                return argv
            raise Refused("mbuffer takes -q -s 128k -m SIZE here")
        raise Refused(f"{prog or '(nothing)'}: only zfs and the stream's filters ({', '.join(sorted(FILTER_PROGRAMS))}) run here")

    def check_pipeline(self, stages: object) -> list[list[str]]:
        well_formed = isinstance(stages, list) and stages and all(
            isinstance(s, list) and s and all(isinstance(w, str) for w in s) for s in stages)
        if not well_formed:
            raise Refused(f"{PIPELINE} takes a JSON list of argv lists")
        *filters, last = stages
        for argv in filters:
            self.check_filter(argv)
        words = last[2:] if last[:2] == ["sudo", "-n"] else last
        if words[:2] not in (["zfs", "recv"], ["zfs", "receive"]) or words[2:3] == ["-A"]:
            raise Refused(f"{PIPELINE}: the last stage must be zfs recv")
        self.check_zfs(last)
        return stages

    # -- the request ---------------------------------------------------------------------------------------------
    def parse(self, command: str | None) -> tuple[str, list[list[str]]]:
        """("zfs" | "which" | "pipeline", argvs) for an allowed command; Refused otherwise."""
        if not command:
            raise Refused("no command: this key only receives replication streams (an interactive login is not allowed)")
        if any(ord(c) < 32 and c != "\t" for c in command):
            raise Refused("control characters (a newline?) in the command")
        try:
            words = shlex.split(command)
        except ValueError as exc:
            raise Refused(f"the command cannot be split into words: {exc}") from None
        if not words:
            raise Refused("empty command")
        if words[0] == WHICH:
            bad = [w for w in words[1:] if w not in FILTER_PROGRAMS and w != "zfs"]
            if bad or len(words) < 2:
                raise Refused(f"{WHICH} answers for {', '.join(sorted(FILTER_PROGRAMS | {'zfs'}))} only")
            return "which", [words[1:]]
        if words[0] == PIPELINE:
            if len(words) != 2:
                raise Refused(f"{PIPELINE} takes one JSON argument")
            try:
                stages = json.loads(words[1])
            except ValueError as exc:
                raise Refused(f"{PIPELINE}: not JSON: {exc}") from None
            return "pipeline", self.check_pipeline(stages)
        argv = self.check_zfs(words)
        zfs = argv[argv.index("zfs"):]
        if zfs[1] in ("recv", "receive") and zfs[2:3] != ["-A"]:
            # Only as a pipeline, where -x mountpoint is added and the receive is logged (without_mountpoint).
            raise Refused(f"a receive comes as {PIPELINE} only")
        return "zfs", [argv]

    @staticmethod
    def without_mountpoint(argv: list[str]) -> list[str]:
        """``argv`` (a checked zfs recv) with ``-x mountpoint`` added where the stream's mountpoint is not already
        excluded or overridden and this host's zfs can exclude it (OpenZFS answers ``zfs version``): whatever a
        source puts in its stream, no replica ever takes a path from it. An older command line has no recv -x: there
        the engine sends no properties and -u keeps the receive from mounting anything."""
        if any(w in ("mountpoint", ) or w.startswith("mountpoint=") for w in argv):
            return argv
        zfs = argv.index("zfs")
        probe = subprocess.run([*argv[:zfs], "zfs", "version"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,  # pylint: disable=ansible-bad-function
                               stderr=subprocess.DEVNULL, check=False)
        if probe.returncode != 0:
            return argv
        return [*argv[:-1], "-x", "mountpoint", argv[-1]]

    def log(self, line: str) -> None:
        client = (os.environ.get("SSH_CLIENT") or "local").split(" ")[0]
        what = f"{','.join(self.tags)} from {client}: {line}"
        text = f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} zfs-replication-receive[{os.getpid()}] {what}"
        try:  # syslog is absent on some platforms; the file still gets the line
            import syslog  # pylint: disable=import-outside-toplevel

            syslog.openlog("zfs-replication-receive", syslog.LOG_PID, syslog.LOG_AUTH)
            syslog.syslog(syslog.LOG_WARNING, what)
        except (ImportError, OSError):
            pass
        if self.log_file:
            try:
                with open(self.log_file, "a", encoding="utf-8") as f:
                    f.write(text + "\n")
            except OSError as exc:
                sys.stderr.write(f"zfs-replication-receive: cannot write {self.log_file}: {exc}\n")

    def serve(self, command: str | None) -> int:
        try:
            kind, argvs = self.parse(command)
        except Refused as exc:
            self.log(f"refused {command!r}: {exc}")
            sys.stderr.write(f"zfs-replication-receive: refused: {exc}\n")
            return REFUSED
        if kind == "which":
            from shutil import which  # pylint: disable=import-outside-toplevel

            sys.stdout.write("".join(f"{p}\n" for p in argvs[0] if which(p) is None))
            return 0
        if kind == "zfs":
            return run([argvs[0]])[0]
        argvs[-1] = self.without_mountpoint(argvs[-1])
        self.log(f"receive: {shlex.join(argvs[-1])}")
        statuses = run(argvs)
        for i, rc in enumerate(statuses):
            sys.stderr.write(f"zr-status {i} {rc}\n")
        return max(statuses, key=lambda rc: rc != 0)


def run(argvs: list[list[str]]) -> list[int]:
    """Run ``argvs`` as a pipeline between this process's stdin and stdout (no shell); their exit statuses."""
    procs: list[subprocess.Popen] = []
    stdin = None
    try:
        for i, argv in enumerate(argvs):
            last = i == len(argvs) - 1
            try:
                proc = subprocess.Popen(argv, stdin=stdin, stdout=None if last else subprocess.PIPE)  # pylint: disable=consider-using-with,ansible-bad-function
            except OSError as exc:
                sys.stderr.write(f"zfs-replication-receive: cannot run {argv[0]}: {exc}\n")
                procs_rc = [p.wait() for p in procs]
                return procs_rc + [127] * (len(argvs) - len(procs))
            if stdin is not None:
                stdin.close()  # the next stage holds it now
            stdin = proc.stdout
            procs.append(proc)
        return [p.wait() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="zfs-replication-receive", description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--root", action="append", required=True, help="a target root the key may receive into (repeatable)")
    ap.add_argument("--tag", action="append", required=True, help="a task's hold tag, zfs.replication:TASK (repeatable)")
    ap.add_argument("--log", help="append refusals and receives to this file (syslog gets them too)")
    args = ap.parse_args(argv)
    receiver = Receiver(args.root, args.tag, args.log)
    for root in receiver.roots:
        try:
            receiver._check_name(root)  # pylint: disable=protected-access
        except Refused as exc:
            sys.stderr.write(f"zfs-replication-receive: --root {root!r}: {exc}\n")
            return 2
    return receiver.serve(os.environ.get("SSH_ORIGINAL_COMMAND"))


if __name__ == "__main__":
    raise SystemExit(main())
