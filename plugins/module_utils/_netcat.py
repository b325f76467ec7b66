# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``ssh+netcat`` transport: one stream over a plain TCP connection, set up and torn down through ssh.

One side listens (TrueNAS's "Netcat Active Side": the side that opens a port), the other connects. By default
the receiving host listens: ``nc -l ADDR PORT | check | [decompress |] zfs recv``, and the sending host connects:
``zfs send | [pv] | [compress] | nc -N ADDR PORT``. When the sending host is the active side it listens instead:
``zfs send | [pv] | [compress] | nc -N -l ADDR PORT``, and the receiving host connects: ``nc ADDR PORT | check |
[decompress |] zfs recv``. Each side is ONE POSIX sh script (run by ssh on a remote host, by ``sh -c`` in its own
session here) built by :func:`receiver_script` and :func:`sender_script`.

What the scripts guarantee:

- **A per-stream token.** The sender writes a fresh random token (:func:`new_token`) as the first bytes of the
  TCP stream; the receiver reads exactly that many bytes (``dd bs=1``: one byte per read, never past the token),
  compares them in the shell and only then starts ``[decompress |] zfs recv`` on the rest of the stream. A
  connection that does not start with the token is refused: nothing of it reaches ``zfs recv``, which never
  starts, and the receiving script ends its whole process group (``nc -l`` included).
- **The token is never on a command line.** Python writes it as the first line of each script's stdin; the
  script keeps it in an unexported shell variable and emits it with the ``printf`` builtin. ``ps`` shows
  neither the token nor anything derived from it.
- **A lifeline.** The rest of each script's stdin stays open while the stream runs. A background reader waits
  on it; end of file (the controller closed it on a failure, or died, or the ssh connection dropped) makes the
  script ``kill -TERM 0``: its whole process group (the script runs as a session leader under sshd, and in a
  session of its own here), so no ``nc -l`` or ``zfs recv`` is left behind on any failure path.

The token stops another host or user from feeding data into ``zfs recv``, whichever side listens. It does not
encrypt or authenticate the data: anyone on the path can read (or, with a position on the path, alter) the
stream, and when the sending side listens, whoever connects to its port first is sent the stream (the receive
then fails and says so). Use this transport on trusted networks only.
"""
from __future__ import annotations

import random
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

from ._executor import STATUS_MARK, PipelineError, PipelineResult, Stage, Watch, run_chains
from ._transport import Host, quote_remote

TOKEN_BYTES = 16
TOKEN_LEN = 2 * TOKEN_BYTES  # hex digits: what goes over the wire
READY_TIMEOUT = 15.0
LISTENER_NAME = "nc -l"
CHECK_NAME = "netcat token check"
REFUSED_MARK = "zr-netcat:"

# Reads the token line, then watches the rest of stdin: end of file ends the whole process group.
_PRELUDE = (
    "IFS= read -r zr_token || { echo 'zr-netcat: no stream token on stdin' >&2; exit 97; }\n"
    f'case ${{#zr_token}} in {TOKEN_LEN}) ;; *) echo "zr-netcat: the stream token is not {TOKEN_LEN} characters" >&2; exit 97 ;; esac\n'
    "exec 3<&0\n"
    "{ IFS= read -r zr_line || :; kill -TERM 0; } <&3 &\n"
    "zr_watch=$!\n"
    "exec 3<&-\n"
    # A TERM for the group (lifeline, refused token) ends the script with 143 once the pipeline has died.
    "trap 'exit 143' TERM\n"
)
_EPILOGUE = "\nzr_rc=$?\nkill \"$zr_watch\" 2>/dev/null\nexit $zr_rc\n"


def new_token() -> str:
    return secrets.token_hex(TOKEN_BYTES)


def _tagged(index: int, command: str) -> str:
    """A pipeline element that reports its exit status on stderr (POSIX sh has no pipefail)."""
    return f'{{ {command}; echo "{STATUS_MARK} {index} $?" >&2; }}'


def _nc(address: str, port: int, listen: bool, sends: bool) -> list[str]:
    """The nc argv of one side. The sending side shuts the connection down at the end of its input (``-N``), so the
    receiving side sees the end of the stream; the receiving side has nothing to send (its stdin is /dev/null)."""
    return ["nc", *(["-N"] if sends else []), *(["-l"] if listen else []), address, str(port)]


def receiver_script(address: str, port: int, receiver: Sequence[Stage], listen: bool = True) -> str:
    """``nc [-l] ADDR PORT | check token | receiver...`` as one sh script; stage indexes: nc 0, check 1, receiver 2..."""
    nc = quote_remote(_nc(address, port, listen, sends=False))
    what = "a connection to" if listen else "the stream from"
    who = "(another host or user connected first)" if listen else "(another program answered on that port)"
    refused = f"{REFUSED_MARK} refused {what} {address}:{port} that did not start with this run's stream token {who}; zfs recv was not started"
    rest = " | ".join(_tagged(i + 2, quote_remote(s.host.wrap(s.argv))) for i, s in enumerate(receiver))
    check = (
        f"zr_got=$(dd bs=1 count={TOKEN_LEN} 2>/dev/null)\n"
        'case $zr_got in\n'
        f'  "$zr_token") echo "{STATUS_MARK} 1 0" >&2 ;;\n'
        f'  *) echo {quote_remote([refused])} >&2; echo "{STATUS_MARK} 1 1" >&2; kill -TERM 0; exit 1 ;;\n'
        "esac\n"
        f"{rest}\n"
    )
    return _PRELUDE + f"{_tagged(0, nc + ' </dev/null')} | {{\n{check}}}" + _EPILOGUE


def listener_script(address: str, port: int, receiver: Sequence[Stage]) -> str:
    """The receiving side listening: ``nc -l ADDR PORT | check token | receiver...``."""
    return receiver_script(address, port, receiver, listen=True)


def sender_script(address: str, port: int, sender: Sequence[Stage], listen: bool = False) -> str:
    """``sender... | nc -N [-l] ADDR PORT`` as one sh script; the last sender stage writes the token first."""
    groups = []
    for i, s in enumerate(sender):
        command = quote_remote(s.host.wrap(s.argv))
        if i == len(sender) - 1:
            # printf is a shell builtin: the token goes into the pipe without appearing on any argv.
            command = f"printf '%s' \"$zr_token\" && {command}"
        groups.append(_tagged(i, command))
    groups.append(_tagged(len(sender), quote_remote(_nc(address, port, listen, sends=True))))
    return _PRELUDE + " | ".join(groups) + _EPILOGUE


def script_stage(host: Host, script: str, parts: Sequence[Stage]) -> Stage:
    names = " | ".join(p.name for p in parts)
    return Stage(host, ["sh", "-c", script], f"{names} on {host.label}", host.shell_command(script), list(parts))


@dataclass
class NetcatStream:
    """One stream's two sides, ready to run: ``listener`` is started first, ``connector`` once it listens."""

    listen_host: Host
    connect_host: Host
    listen_address: str
    connect_address: str
    port: int
    listener: Stage
    connector: Stage
    sender_listens: bool = False  # the sending side is the active side: the data flows from listener to connector

    @property
    def sender(self) -> Stage:
        return self.listener if self.sender_listens else self.connector

    @property
    def receiver(self) -> Stage:
        return self.connector if self.sender_listens else self.listener


def build(listen_host: Host, send_host: Host, listen_address: str, connect_address: str, port: int,
          sender: Sequence[Stage], receiver: Sequence[Stage], sender_listens: bool = False) -> NetcatStream:
    """The two sides of one stream. ``listen_host`` is the side that listens on ``listen_address``:``port``, the
    receiving host by default; with ``sender_listens`` it is the sending host (``send_host`` then equals it)."""
    recv_host = receiver[0].host if receiver else listen_host
    rparts = [
        Stage(recv_host, _nc(listen_address if not sender_listens else connect_address, port, not sender_listens, False),
              LISTENER_NAME if not sender_listens else "nc"),
        Stage(recv_host, ["dd", "bs=1", f"count={TOKEN_LEN}"], CHECK_NAME),
        *receiver,
    ]
    if sender_listens:
        sparts = [*sender, Stage(send_host, _nc(listen_address, port, True, True), LISTENER_NAME)]
        send = script_stage(send_host, sender_script(listen_address, port, sender, listen=True), sparts)
        recv = script_stage(recv_host, receiver_script(connect_address, port, receiver, listen=False), rparts)
        return NetcatStream(send_host, recv_host, listen_address, connect_address, port, send, recv, True)
    sparts = [*sender, Stage(send_host, _nc(connect_address, port, False, True), "nc")]
    return NetcatStream(
        listen_host, send_host, listen_address, connect_address, port,
        script_stage(listen_host, receiver_script(listen_address, port, receiver), rparts),
        script_stage(send_host, sender_script(connect_address, port, sender), sparts),
    )


def listener_is_remote(direction: str, active_side: str | None) -> bool:
    """Whether the remote host (the ssh host) listens: ``netcat.active_side`` says so (TrueNAS's "Netcat Active Side":
    the side that opens a port), else the receiving side listens (the remote one for push, this one for pull)."""
    if active_side is not None:
        return active_side == "remote"
    return direction == "push"


def addresses(direction: str, ssh_host: str, listen_address: str | None, connect_address: str | None,
              active_side: str | None = None) -> tuple[str, str]:
    """(listen address, connect address). The listener binds the address the other side connects to, never a wildcard
    by default: on the remote host (the ssh host) ``netcat.connect_address`` or the ssh host, on this host
    ``netcat.listen_address``, which is then required (an address of this host the other one can reach)."""
    if listener_is_remote(direction, active_side):
        connect = connect_address or ssh_host
        return listen_address or connect, connect
    if not listen_address:
        why = "when netcat.active_side is local" if active_side == "local" else "for pull over ssh+netcat"
        raise ValueError(f"netcat.listen_address is required {why}: an address of this host that the other host can reach")
    return listen_address, connect_address or listen_address


def listening_ports(host: Host) -> set[int]:
    proc = host.run(["ss", "-H", "-l", "-t", "-n"], check=False)
    ports = set()
    for line in proc.stdout.splitlines():
        cols = line.split()
        if len(cols) >= 4 and ":" in cols[3]:
            tail = cols[3].rsplit(":", 1)[1]
            if tail.isdigit():
                ports.add(int(tail))
    return ports


def pick_port(used: set[int], low: int, high: int, label: str) -> int:
    candidates = [p for p in range(low, high + 1) if p not in used]
    if not candidates:
        raise ValueError(f"netcat: no free port in {low}-{high} on {label}: widen netcat.port_min/port_max")
    return random.choice(candidates)


def wait_listening(stream: NetcatStream, listening: Callable[[Host, int], bool], running: Callable[[], bool],
                   timeout: float = READY_TIMEOUT, pause: float = 0.05) -> None:
    """Return once ``nc -l`` listens; raise when the listener ended first or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not running():
            raise PipelineError(f"nc on {stream.listen_host.label} ended before it listened on {stream.listen_address}:{stream.port}", [])
        if listening(stream.listen_host, stream.port):
            if not running():  # nc failed to bind, and the port is someone else's
                raise PipelineError(f"nc on {stream.listen_host.label} ended before it listened on {stream.listen_address}:{stream.port}", [])
            return
        time.sleep(pause)
    raise PipelineError(f"nc on {stream.listen_host.label} did not listen on {stream.listen_address}:{stream.port} within {timeout:g} s", [])


def run(stream: NetcatStream, counter: int | None, listening: Callable[[Host, int], bool], timeout: float | None = None,
        watch: Watch | None = None) -> PipelineResult:
    """Run both sides with a fresh token; a refused connection is the error that explains the failure. ``watch`` is
    told the running byte count while the stream runs."""
    timeout = READY_TIMEOUT if timeout is None else timeout
    token = new_token()
    data = (token + "\n").encode()
    try:
        return run_chains(
            [stream.listener], [stream.connector], lambda running: wait_listening(stream, listening, running, timeout),
            0 if counter is not None else None, listener_input=data, sender_input=data, data_from_listener=stream.sender_listens,
            watch=watch,
        )
    except PipelineError as exc:
        if stream.sender_listens and any(s.name == "nc" and s.rc != 0 for s in exc.stages):
            # The receiving side could not connect (or lost the connection): the token check only saw what was not there.
            raise PipelineError(f"{exc} (the sending side {stream.listen_host.label} listened on {stream.listen_address}:{stream.port}; "
                                "if another host or user connected to it first, that connection was sent the stream)", exc.stages) from exc
        check = next((s for s in exc.stages if s.name == CHECK_NAME and s.rc != 0), None)
        line = next((ln for ln in (check.stderr if check else "").splitlines() if ln.startswith(REFUSED_MARK)), None)
        if line is None:
            raise
        raise PipelineError(f"netcat on {stream.listen_host.label}: {line[len(REFUSED_MARK):].strip()}", exc.stages) from exc
