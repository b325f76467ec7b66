# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run commands on the local host or on a remote host through the OpenSSH client.

A host turns an argv into the argv to execute locally: unchanged for the local host,
``ssh [options] destination -- 'quoted argv'`` for a remote one. The remote argv is
quoted exactly once, for the remote user's shell, with :func:`shlex.join`.
"""
from __future__ import annotations

import getpass
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from ._allow import hint as allow_hint
from ._log import command_started, show, trace_line
from ._receiver_protocol import PIPELINE, WHICH

# OpenSSH's "fast" choice: AES-GCM runs at line rate on CPUs with AES-NI.
FAST_CIPHER = "aes128-gcm@openssh.com"
# \Z, not $: $ also matches before a trailing newline ("host\n" would pass).
CIPHER_RE = re.compile(r"^[A-Za-z0-9@._-]+(,[A-Za-z0-9@._-]+)*\Z")
HOST_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z")
IPV6_RE = re.compile(r"^[0-9A-Fa-f:.]+\Z")
USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\Z")
C_LOCALE = {"LC_ALL": "C", "LANGUAGE": "C"}
T = TypeVar("T")
A = TypeVar("A")
B = TypeVar("B")


class TransportError(Exception):
    """A command could not be run or returned an error."""

    def __init__(self, message: str, argv: Sequence[str] | None = None, rc: int | None = None, stderr: str = ""):
        super().__init__(message)
        self.argv = list(argv) if argv else []
        self.rc = rc
        self.stderr = stderr


class ConnectionFailed(TransportError):
    """ssh could not reach or authenticate to the host (transient or configuration)."""


@dataclass(frozen=True)
class SSHConnection:
    """How to reach a remote host. Field names follow the module's ``ssh`` option."""

    host: str
    port: int = 22
    user: str | None = None
    private_key_file: str | None = None
    known_hosts_file: str | None = None
    host_key_checking: str = "strict"  # strict | accept_new
    cipher: str = "standard"  # standard | fast | an OpenSSH cipher name
    connect_timeout: int = 10

    def validate(self) -> None:
        """Raise ValueError naming the field for anything that must not reach a command line."""
        if not self.host or not (HOST_RE.match(self.host) or (":" in self.host and IPV6_RE.match(self.host))):
            raise ValueError(f"ssh.host {self.host!r} is not a valid host name or address: use a DNS name or an IP address")
        if not 1 <= int(self.port) <= 65535:
            raise ValueError(f"ssh.port {self.port!r} is out of range: use 1-65535")
        if self.user is not None and not USER_RE.match(self.user):
            raise ValueError(f"ssh.user {self.user!r} is not a valid user name")
        if self.host_key_checking not in ("strict", "accept_new"):
            raise ValueError(f"ssh.host_key_checking {self.host_key_checking!r}: use strict or accept_new")
        if self.cipher not in ("standard", "fast") and not CIPHER_RE.match(self.cipher):
            raise ValueError(f"ssh.cipher {self.cipher!r}: use standard, fast or an OpenSSH cipher name")
        for field in ("private_key_file", "known_hosts_file"):
            value = getattr(self, field)
            if value is not None and (not value or any(ord(c) < 32 or ord(c) == 127 for c in value)):
                raise ValueError(f"ssh.{field} {value!r} is not a usable path: give a non-empty path without control "
                                 "characters (newline, carriage return, tab)")
        if int(self.connect_timeout) < 1:
            raise ValueError("ssh.connect_timeout must be at least 1 second")

    @property
    def label(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user + '@' if self.user else ''}{host}:{self.port}"


# The engine runs under the systemd timer without Ansible, so it cannot use
# AnsibleModule.run_command: these two functions are the only places that start processes.
# At logging_level debug both log each command (see _log).
def run_process(cmd: Sequence[str], *, check: bool = False, **kwargs: Any) -> subprocess.CompletedProcess:
    started = command_started(cmd)
    proc = subprocess.run(cmd, check=check, **kwargs)  # pylint: disable=ansible-bad-function
    if started is not None:
        started.ended(proc.returncode)
    return proc


def start_process(cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen:
    command_started(cmd, detached=True)
    return subprocess.Popen(cmd, **kwargs)  # pylint: disable=ansible-bad-function


def quote_remote(argv: Sequence[str]) -> str:
    """Quote an argv once for the remote POSIX shell."""
    return shlex.join([str(a) for a in argv])


# sudo never asks (-n): a run under a timer has nobody to answer a password prompt, so a missing sudoers rule fails
# at once with sudo's own message (see _allow.hint).
SUDO = ("sudo", "-n")


class Host:
    """Somewhere commands run: the local host or a host reached by ssh. With ``sudo``, its zfs commands run through
    ``sudo -n`` (TrueNAS's "Use Sudo For ZFS Commands"); every other command runs as the connecting user."""

    label = "local"
    is_local = True
    sudo = False

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """``argv`` as this host runs it: a zfs command through sudo when the host uses sudo."""
        argv = [str(a) for a in argv]
        return [*SUDO, *argv] if self.sudo and argv[:1] == ["zfs"] else argv

    def command(self, argv: Sequence[str]) -> list[str]:
        """The local argv that runs ``argv`` on this host."""
        return self.wrap(argv)

    @property
    def user(self) -> str:
        """Who runs the commands on this host (for messages)."""
        try:
            return getpass.getuser()
        except (KeyError, OSError):
            return f"uid {os.getuid()}"

    def refusal_hint(self, argv: Sequence[str], stderr: str) -> str:
        """What to do when ``argv`` was refused here (a zfs allow permission, a sudoers rule); "" otherwise."""
        return allow_hint(argv, stderr, self.user, self.label, self.sudo)

    def refusal_suffix(self, argv: Sequence[str], stderr: str) -> str:
        """``"; "`` and refusal_hint's advice, to end an error message with; "" when there is none."""
        advice = self.refusal_hint(argv, stderr)
        return f"; {advice}" if advice else ""

    def run(self, argv: Sequence[str], check: bool = True, input_text: str | None = None) -> subprocess.CompletedProcess:
        """Run ``argv`` on this host. ``input_text`` (secrets go here, never on argv) is its stdin."""
        return self._run(self.command(argv), argv, check, input_text)

    def run_script(self, script: str, check: bool = True, input_text: str | None = None) -> subprocess.CompletedProcess:
        """Run an already-quoted POSIX sh script on this host."""
        return self._run(self.shell_command(script), ["sh", "-c", script], check, input_text)

    def _run(self, cmd: list[str], argv: Sequence[str], check: bool, input_text: str | None) -> subprocess.CompletedProcess:
        try:
            proc = run_process(
                cmd,
                input=input_text,
                stdin=subprocess.DEVNULL if input_text is None else None,
                capture_output=True,
                env=command_env(),
                text=True,
                check=False,
            )
        except OSError as exc:
            raise TransportError(f"{self.label}: cannot run {argv[0]}: {exc}", argv) from exc
        self.check_connection(proc.returncode, proc.stderr, argv)
        if check and proc.returncode != 0:
            raise TransportError(
                f"{self.label}: {quote_remote(argv)} failed (exit {proc.returncode}): {proc.stderr.strip()}"
                + self.refusal_suffix(argv, proc.stderr),
                argv,
                proc.returncode,
                proc.stderr,
            )
        return proc

    def stream(self, argv: Sequence[str], consume: Callable[[Iterable[str]], T]) -> tuple[int, T | None, str]:
        """Run ``argv`` on this host and hand its stdout lines to ``consume`` as they arrive.

        Large outputs (a listing of a whole fleet) are never held in memory as one text. Returns
        (exit status, what ``consume`` returned or None when the command failed, stderr). An error
        raised by ``consume`` stands only when the command itself succeeded.
        """
        t0 = time.monotonic()
        with tempfile.TemporaryFile() as errf:
            try:
                proc = start_process(
                    self.command(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errf,
                    env=command_env(), text=True, close_fds=True,
                )
            except OSError as exc:
                raise TransportError(f"{self.label}: cannot run {argv[0]}: {exc}", argv) from exc
            stdout = proc.stdout
            if stdout is None:  # pragma: no cover - stdout=PIPE always gives one
                raise TransportError(f"{self.label}: no output pipe for {argv[0]}", argv)
            result: T | None = None
            failure: Exception | None = None
            try:
                try:
                    result = consume(stdout)
                except Exception as exc:  # noqa: BLE001  (re-raised below unless the command failed on its own)
                    failure = exc
                for _unused in stdout:  # let the command finish writing whatever consume left, and exit by itself
                    pass
                rc = proc.wait()
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            finally:
                stdout.close()
            errf.seek(0)
            stderr = errf.read().decode("utf-8", "replace")
        trace_line(f"debug: exit {rc} after {time.monotonic() - t0:.3f}s: {show(self.command(argv))}")
        self.check_connection(rc, stderr, argv)
        if rc != 0:
            return rc, None, stderr
        if failure is not None:
            raise failure
        return rc, result, stderr

    def check_connection(self, rc: int, stderr: str, argv: Sequence[str]) -> None:
        """Raise ConnectionFailed when ``rc``/``stderr`` say the transport itself failed."""

    def which(self, program: str) -> bool:
        return shutil.which(program) is not None

    def missing(self, programs: Sequence[str]) -> list[str]:
        """The programs of ``programs`` that are not in this host's PATH."""
        return [p for p in programs if not self.which(p)]

    def shell_command(self, script: str) -> list[str]:
        """The local argv that runs an already-quoted shell script on this host."""
        return ["sh", "-c", script]

    def pipeline_command(self, argvs: Sequence[Sequence[str]]) -> list[str] | None:
        """The local argv that runs ``argvs`` as a pipeline on this host without a shell script, for a host that
        runs no shell (an append-only target); None: this host runs the executor's shell pipeline."""
        return None

    def close(self) -> None:
        pass

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalHost(Host):
    def __init__(self, sudo: bool = False):
        self.sudo = sudo


def command_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(C_LOCALE)
    return env


def explain_ssh_failure(conn: SSHConnection, stderr: str) -> str:
    """Turn ssh's complaint into a message that names the field and the fix."""
    text = stderr.strip()
    if "Host key verification failed" in text or "No ED25519 host key is known" in text or "host key for" in text.lower():
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
            return (
                f"ssh: the host key of {conn.label} has CHANGED and does not match ssh.known_hosts_file "
                f"({conn.known_hosts_file or 'ssh default'}); refusing to connect. Verify the host and update the file."
            )
        return (
            f"ssh: the host key of {conn.label} is not in ssh.known_hosts_file "
            f"({conn.known_hosts_file or 'ssh default'}): add the host's key to that file "
            "(verify it out of band), or set ssh.host_key_checking=accept_new to trust it on first use"
        )
    # Before "Permission denied": ssh ignores a key with loose permissions, then authentication fails.
    if "UNPROTECTED PRIVATE KEY FILE" in text or "bad permissions" in text:
        return f"ssh: ssh.private_key_file {conn.private_key_file} has loose permissions: chmod 600 it. ssh said: {text}"
    if "Permission denied" in text:
        return (
            f"ssh: {conn.label} refused authentication: check ssh.user and ssh.private_key_file "
            f"({conn.private_key_file or 'ssh default'}) and the remote authorized_keys. ssh said: {text}"
        )
    if "Connection refused" in text or "timed out" in text or "No route to host" in text or "Could not resolve" in text:
        return f"ssh: cannot reach {conn.label}: check ssh.host and ssh.port. ssh said: {text}"
    return f"ssh to {conn.label} failed: {text}"


SSH_ERROR_HINTS = (
    "ssh:", "Host key", "host key", "Permission denied", "Connection", "connection", "port ", "Could not resolve",
    "UNPROTECTED PRIVATE KEY", "bad permissions", "Control socket", "mux_client", "kex_exchange", "banner exchange",
    "No route to host", "Broken pipe",
)


def looks_like_ssh_error(stderr: str) -> bool:
    text = stderr.strip()
    return not text or any(h in text for h in SSH_ERROR_HINTS)


class SSHHost(Host):
    """A host reached with the OpenSSH client. One master connection is shared by every command."""

    is_local = False

    def __init__(self, conn: SSHConnection, control_dir: str | None = None, sudo: bool = False):
        conn.validate()
        self.conn = conn
        self.sudo = sudo
        self.label = conn.label
        self._own_dir = control_dir is None
        self.control_dir = control_dir or tempfile.mkdtemp(prefix="zr-ssh-")
        self._which: dict[str, bool] = {}

    @property
    def user(self) -> str:
        return self.conn.user or "the ssh user"

    def ssh_options(self) -> list[str]:
        c = self.conn
        opts = [
            "-o", "BatchMode=yes",
            "-o", f"StrictHostKeyChecking={'accept-new' if c.host_key_checking == 'accept_new' else 'yes'}",
            "-o", f"ConnectTimeout={int(c.connect_timeout)}",
            "-o", "ServerAliveInterval=15",
            "-o", "ServerAliveCountMax=4",
            "-o", "ControlMaster=auto",
            "-o", f"ControlPath={self.control_dir}/%C",
            "-o", "ControlPersist=60",
            "-p", str(int(c.port)),
        ]
        if c.known_hosts_file:
            opts += ["-o", f"UserKnownHostsFile={c.known_hosts_file}"]
        if c.private_key_file:
            opts += ["-i", c.private_key_file, "-o", "IdentitiesOnly=yes"]
        if c.user:
            opts += ["-l", c.user]
        if c.cipher == "fast":
            opts += ["-c", FAST_CIPHER]
        elif c.cipher != "standard":
            opts += ["-c", c.cipher]
        return opts

    def command(self, argv: Sequence[str]) -> list[str]:
        return ["ssh", *self.ssh_options(), self.conn.host, "--", quote_remote(self.wrap(argv))]

    def shell_command(self, script: str) -> list[str]:
        """The local argv that runs an already-quoted shell script on this host."""
        return ["ssh", *self.ssh_options(), self.conn.host, "--", script]

    def check_connection(self, rc: int, stderr: str, argv: Sequence[str]) -> None:
        # ssh exits 255 when the connection itself failed; the remote command's own exit
        # status is passed through otherwise (and a remote command may exit 255 too: then
        # its stderr is not ssh's).
        if rc == 255 and looks_like_ssh_error(stderr):
            raise ConnectionFailed(explain_ssh_failure(self.conn, stderr), argv, rc, stderr)

    def missing(self, programs: Sequence[str]) -> list[str]:
        """One round trip for all of ``programs``: those not in the remote PATH."""
        unknown = [p for p in programs if p not in self._which]
        if unknown:
            script = "; ".join(f"command -v {shlex.quote(p)} >/dev/null 2>&1 || echo {shlex.quote(p)}" for p in unknown)
            proc = run_process(
                self.shell_command(script), capture_output=True, text=True, env=command_env(), check=False,
            )
            self.check_connection(proc.returncode, proc.stderr, ["sh", "-c", script])
            absent = set(proc.stdout.split())
            for p in unknown:
                self._which[p] = p not in absent
        return [p for p in programs if not self._which[p]]

    def which(self, program: str) -> bool:
        return not self.missing([program])

    def close(self) -> None:
        if os.path.exists(self.control_dir):
            run_process(
                ["ssh", *self.ssh_options(), "-O", "exit", self.conn.host],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=command_env(), check=False,
            )
            if self._own_dir:
                shutil.rmtree(self.control_dir, ignore_errors=True)


class AppendOnlyHost(SSHHost):
    """A push target whose key runs only the append-only receiver (``target_access: append_only``, _receiver).

    Single commands go as before (one argv, quoted once: the receiver splits it back); a receive pipeline goes as
    ``zfs-replication-pipeline JSON`` and the tool check as ``zfs-replication-which``. A shell script is never sent:
    the receiver would refuse it."""

    def shell_command(self, script: str) -> list[str]:
        raise TransportError(
            f"{self.label}: target_access append_only: the target's key runs only the append-only receiver, which runs no "
            f"shell script ({script[:60]!r}...)"
        )

    def pipeline_command(self, argvs: Sequence[Sequence[str]]) -> list[str] | None:
        request = json.dumps([[str(a) for a in argv] for argv in argvs], separators=(",", ":"))
        return ["ssh", *self.ssh_options(), self.conn.host, "--", quote_remote([PIPELINE, request])]

    def missing(self, programs: Sequence[str]) -> list[str]:
        # Asked at least once per run, even when the stream needs no tool there: the answer proves the key's forced
        # command is the receiver (a plain key would run anything, and the task would believe it append-only).
        unknown = [p for p in programs if p not in self._which] or ([] if "zfs" in self._which else ["zfs"])
        if unknown:
            argv = [WHICH, *unknown]
            proc = run_process(self.command(argv), capture_output=True, text=True, env=command_env(), check=False)
            self.check_connection(proc.returncode, proc.stderr, argv)
            if proc.returncode != 0:
                raise TransportError(
                    f"{self.label}: target_access append_only: the target did not answer {WHICH} (exit {proc.returncode}): "
                    f"{proc.stderr.strip()}. Is the task's key in its authorized_keys with the receiver as its forced command "
                    "(playbooks/ssh_trust.yml)?", argv, proc.returncode, proc.stderr)
            absent = set(proc.stdout.split())
            for p in unknown:
                self._which[p] = p not in absent
        return [p for p in programs if not self._which[p]]


def both_sides(first: Callable[[], A], second: Callable[[], B]) -> tuple[A, B]:
    """Run two independent steps at once (one per side: two hosts, or two pools); an error of ``first`` wins, as it
    would in sequence."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        a, b = pool.submit(first), pool.submit(second)
        return a.result(), b.result()
