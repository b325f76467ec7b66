# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""target_access: append_only on each backend: the push's key is in the backend sshd's authorized_keys with
`restrict` and the append-only receiver as its forced command (as playbooks/ssh_trust.yml writes it). Pushes through
that key work (full, incremental, and on OpenZFS a resumed stream and a raw encrypted one); the same key used by hand
for anything else is refused, nothing on the target changes (guids before == after) and the receiver logs it."""
from __future__ import annotations

import contextlib
import json
import secrets
import shlex
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from scenario_helpers import held, message, over_ssh, parent, snaps

SCHEMA_SNAP = "auto-2026-11-28_{:02d}-00"


@dataclass
class RestrictedKey:
    path: str  # the private key, on the backend's host
    log: str  # the receiver's log file there
    comment: str


@contextlib.contextmanager
def restricted_key(backend, root: str, task: str) -> Iterator[RestrictedKey]:
    """A new key on the backend's host, authorized for its sshd with the receiver as its forced command."""
    tag = secrets.token_hex(4)
    key = RestrictedKey(f"/tmp/zr-ao-{tag}", f"/tmp/zr-ao-{tag}.log", f"zr-append-only-{tag}")
    receiver = (f"{backend.python()} -m {backend.engine_import()}._receiver --root {shlex.quote(root)} "
                f"--tag zfs.replication:{task} --log {key.log}")
    assert '"' not in receiver, receiver
    keys = shlex.quote(backend.authorized_keys())
    options = shlex.quote(f'restrict,command="{receiver}"')
    backend.sh(f"ssh-keygen -q -t ed25519 -N '' -C {key.comment} -f {key.path}\n"
               f"printf '%s %s\\n' {options} \"$(cut -d' ' -f1,2 {key.path}.pub)\" >> {keys}")
    try:
        yield key
    finally:
        backend.sh(f"grep -vF \"$(cut -d' ' -f2 {key.path}.pub)\" {keys} > {keys}.zr-new || true; "
                   f"cat {keys}.zr-new > {keys}; rm -f {keys}.zr-new {key.path} {key.path}.pub {key.log}")


def by_hand(backend, key: RestrictedKey, command: str | None, stdin: str = "") -> tuple[int, str]:
    """(exit status, stderr) of COMMAND sent with the restricted key, as someone holding the key would; STDIN, a shell
    pipeline's start ("zfs send ... |"), feeds it."""
    return by_hand_all(backend, key, [(command, stdin)])[0]


def by_hand_all(backend, key: RestrictedKey, attempts: list[tuple[str | None, str]]) -> list[tuple[int, str]]:
    """by_hand for each (COMMAND, STDIN) of ATTEMPTS, in one round trip to the backend's host (a guest's costs ~1 s)."""
    ssh = backend.ssh()
    argv = ["ssh", "-T", "-i", key.path, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={ssh['known_hosts_file']}", "-p", str(ssh["port"]), "-l", ssh["user"], ssh["host"]]
    script = []
    for i, (command, stdin) in enumerate(attempts):
        one = argv + (["--", command] if command is not None else [])
        script.append(f"if {stdin or '</dev/null'} {shlex.join(one)} >/dev/null 2>/tmp/zr-ao-err; then rc=0; else rc=$?; fi; "
                      f"echo '=== {i}' $rc; cat /tmp/zr-ao-err")
    out = backend.sh("\n".join(script))
    results: list[tuple[int, str]] = []
    for block in out.split("=== ")[1:]:
        head, _nl, err = block.partition("\n")
        results.append((int(head.split()[1]), err))
    assert len(results) == len(attempts), out
    return results


def hostile(root: str, dst: str, snapshot: str, every: bool = True) -> list[str]:
    """What a source's owner could try with the key. Not EVERY: one of each kind (destroy, rollback, recv -F, outside
    the root, a path traversal, a mountpoint, a shell, smuggling with ; $() newline and quotes): the receiver's
    checks do not depend on the ZFS under it, each attempt costs a few seconds on the emulated guest."""
    attempts = [
        f"zfs destroy -r {dst}",
        f"zfs destroy {snapshot}",
        f"zfs rollback -r {dst}@{SCHEMA_SNAP.format(10)}",
        f"zfs recv -u -F {dst}",
        f"zfs recv -u {parent(root)}/outside-{secrets.token_hex(2)}",
        f"zfs recv -u {root}/../escape",
        f"zfs set mountpoint=/ {dst}",
        f"zfs set readonly=off {dst}",
        f"zfs rename {dst} {root}/renamed",
        f"zfs mount {dst}",
        f"sh -c 'zfs destroy -r {dst}'",
        f"zfs list -H -o name {dst}; zfs destroy -r {dst}",
        f"zfs list -H -o name {dst} && zfs destroy -r {dst}",
        f"zfs list -H -o name $(zfs destroy -r {dst})",
        f"zfs list -H -o name \"{dst}\" '`zfs destroy -r {dst}`'",
        f"zfs list -H -o name {dst}\nzfs destroy -r {dst}",
        f"zfs release zfs.replication:another-task {snapshot}",
        "cat /etc/shadow",
    ]
    kinds = {0, 2, 3, 4, 5, 6, 10, 11, 13, 14, 15}  # destroy, rollback, recv -F, outside, .., mountpoint, sh, ;, $(), quotes, newline
    return attempts if every else [a for i, a in enumerate(attempts) if i in kinds]


def test_append_only_push_works_and_the_key_can_do_nothing_else(backend):
    src, dst = backend.pair("ao")
    root = parent(dst)
    task = f"ao-{secrets.token_hex(3)}"
    backend.write(src, "one")
    backend.zfs("snapshot", f"{src}@{SCHEMA_SNAP.format(10)}")
    backend.write(src, "two")
    backend.zfs("snapshot", f"{src}@{SCHEMA_SNAP.format(11)}")
    with restricted_key(backend, root, task) as key:
        p = over_ssh(backend, src, dst, name=task, ssh={"private_key_file": key.path}, target_access="append_only",
                     retention_policy="custom", lifetime_value=1, lifetime_unit="hour")

        first = backend.engine(p)
        assert first.ok, str(first)
        assert first.result["snapshots_sent"] == 2
        assert any("target_access append_only" in line and "applied by the target host" in line for line in first.log), str(first)
        assert backend.snapshots_with_guids(dst) == backend.snapshots_with_guids(src)
        assert backend.checksums(dst) == backend.checksums(src)
        assert backend.prop(dst, "readonly") == "on"

        backend.write(src, "three")
        backend.zfs("snapshot", f"{src}@{SCHEMA_SNAP.format(12)}")
        inc = backend.engine(p)
        assert inc.ok, str(inc)
        assert inc.dataset(dst)["snapshots_sent"] == [SCHEMA_SNAP.format(12)]
        # retention_policy custom (1 hour, names from 2026-11-28) is the target host's job: nothing destroyed from here
        assert snaps(backend, dst) == [SCHEMA_SNAP.format(h) for h in (10, 11, 12)]
        assert backend.snapshots_with_guids(dst) == backend.snapshots_with_guids(src)
        assert backend.checksums(dst) == backend.checksums(src)
        # The base is held, and only it (the hold moved through the key: hold and release of the task's own tag).
        assert held(backend, dst) == {f"{dst}@{SCHEMA_SNAP.format(12)}": 1}

        before = (backend.snapshots_with_guids(root), backend.datasets_under(backend.dst_pool))
        snapshot = f"{dst}@{SCHEMA_SNAP.format(11)}"
        attempts = hostile(root, dst, snapshot, every=backend.name == "zfs-fuse")
        stream = f"zfs send {shlex.quote(src + '@' + SCHEMA_SNAP.format(10))} |"
        # Each hostile command, a login without a command, and a real stream with recv -F (refused before it is read).
        answers = by_hand_all(backend, key, [(c, "") for c in attempts] + [(None, ""), (f"zfs recv -u -F {dst}", stream)])
        for command, (rc, err) in zip(attempts, answers):
            assert rc == 126 and "zfs-replication-receive: refused" in err, (command, rc, err)
        rc, err = answers[-2]
        assert rc == 126 and "no command" in err, (rc, err)
        rc, err = answers[-1]
        assert rc == 126 and "recv -F" in err, (rc, err)
        after = (backend.snapshots_with_guids(root), backend.datasets_under(backend.dst_pool))
        assert after == before

        logged = backend.sh(f"cat {key.log}")
        refusals = [line for line in logged.splitlines() if "refused" in line]
        assert len(refusals) == len(attempts) + 2, logged
        assert any("zfs destroy -r" in line for line in refusals) and any("receive:" in line for line in logged.splitlines())

        # The task's own runs still work after all that, and a later run finds nothing to do.
        again = backend.engine(p)
        assert again.ok and again.result["changed"] is False, str(again)


@pytest.mark.backends("openzfs", reason="resumable receives (zfs recv -s) and raw encrypted sends are OpenZFS features")
def test_append_only_resumes_an_interrupted_receive_and_sends_encrypted_raw(backend):
    src, dst = backend.pair("aor")
    root = parent(dst)
    task = f"aor-{secrets.token_hex(3)}"
    backend.write(src, "one")
    backend.zfs("snapshot", f"{src}@{SCHEMA_SNAP.format(10)}")
    enc_src, enc_dst = f"{src}/enc", f"{root}/enc"
    backend.sh(f"echo zr-passphrase-123 | zfs create -o encryption=on -o keyformat=passphrase {shlex.quote(enc_src)}")
    backend.write(enc_src, "secret")
    backend.zfs("snapshot", f"{enc_src}@{SCHEMA_SNAP.format(10)}")
    with restricted_key(backend, root, task) as key:
        p = over_ssh(backend, src, dst, name=task, ssh={"private_key_file": key.path}, target_access="append_only")
        first = backend.engine(p)
        assert first.ok, str(first)

        # An incremental cut after 300 kB: the target keeps a resume token.
        backend.write(src, "big", size=3_000_000)
        backend.zfs("snapshot", f"{src}@{SCHEMA_SNAP.format(11)}")
        cut = backend.sh(f"zfs send -i {SCHEMA_SNAP.format(10)} {src}@{SCHEMA_SNAP.format(11)} | head -c 300000 "
                         f"| zfs recv -u -s -x mountpoint {dst} 2>&1 || true")
        token = backend.prop(dst, "receive_resume_token")
        assert token not in ("", "-"), cut
        resumed = backend.engine(p)
        assert resumed.ok, str(resumed)
        assert any("resum" in line for line in resumed.log), str(resumed)
        assert backend.prop(dst, "receive_resume_token") in ("", "-")
        assert backend.snapshots_with_guids(dst) == {k: v for k, v in backend.snapshots_with_guids(src).items() if k.startswith("@")}
        assert backend.checksums(dst) == backend.checksums(src)

        enc = backend.engine(over_ssh(backend, enc_src, enc_dst, name=task, ssh={"private_key_file": key.path},
                                      target_access="append_only"))
        assert enc.ok, str(enc)
        assert backend.snapshots_with_guids(enc_dst) == backend.snapshots_with_guids(enc_src)
        assert backend.prop(enc_dst, "encryption") != "off"
        assert backend.prop(enc_dst, "keystatus") == "unavailable"  # raw: the target never had the key
        # A source's owner sends by hand a stream whose dataset carries mountpoint=/mnt/zr-evil and canmount=on, as a
        # receive pipeline without -x: the receiver excludes the mountpoint itself, the replica stays under the root.
        evil = f"{src}/evil"
        backend.zfs("create", "-o", "mountpoint=/mnt/zr-evil", evil)
        backend.zfs("snapshot", f"{evil}@{SCHEMA_SNAP.format(10)}")
        request = shlex.join(["zfs-replication-pipeline", json.dumps([["zfs", "recv", "-u", f"{root}/evil"]])])
        rc, err = by_hand(backend, key, request, stdin=f"zfs send -p {shlex.quote(evil + '@' + SCHEMA_SNAP.format(10))} |")
        assert rc == 0, err
        mountpoint, source = backend.zfs("get", "-H", "-o", "value,source", "mountpoint", f"{root}/evil").strip().split("\t")
        assert not mountpoint.startswith("/mnt/zr-evil") and source != "received", (mountpoint, source)
        backend.zfs("unmount", evil)

        logged = backend.sh(f"cat {key.log}")
        assert "refused" not in logged, logged


@pytest.mark.backends("zfs-fuse", reason="the engine's refusal before anything is sent does not depend on the ZFS under it")
def test_append_only_target_that_refuses_the_command_fails_clearly(backend):
    """The task says append_only but the key is a plain one: the receiver's tool check is not answered, and the run
    fails naming the forced command, having changed nothing."""
    src, dst = backend.pair("aon")
    backend.zfs("snapshot", f"{src}@{SCHEMA_SNAP.format(10)}")
    run = backend.engine(over_ssh(backend, src, dst, target_access="append_only"))
    assert run.failed
    assert "zfs-replication-which" in message(run) and "forced command" in message(run), str(run)
    assert backend.datasets_under(parent(dst)) == [parent(dst)]
