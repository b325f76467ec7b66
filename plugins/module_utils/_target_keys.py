# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The key of a target the task encrypts (``encryption: true``): TrueNAS's "Encryption" of a replication.

The key is the task's ``encryption_key``, or with ``encryption_key_generate`` one made by the first run and kept on
the host that runs the task (_keys). A new encrypted target root is created by its full stream with
``zfs recv -o encryption=on -o keyformat=... -o keylocation=file://KEYFILE``: :meth:`TargetKeys.prepare` puts the key
in that file on the target (stdin, never argv), :meth:`TargetKeys.finish` removes a temporary one and leaves the
target asking for its key (``keylocation=prompt``); :meth:`TargetKeys.load` loads the key of an existing encrypted
target before non-raw streams go into it.
"""
from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

from ._keys import KeyStoreError, keyed_targets, obtain_key
from ._planner import Plan, Send
from ._replication_task import ReplicationTask, TaskError
from ._transport import Host
from ._zfs import Listing, dataset_type


@dataclass
class TargetKeys:
    task: ReplicationTask
    dst: Host
    target_roots: Sequence[str]  # the target datasets the task's sources land in: only those are created encrypted
    log: Callable[[str], None]
    key_file: str | None = None  # encryption_key_generate: where the key is kept on this host
    generated: str | None = None  # that key, once obtained
    new: bool = False  # this run generated the key (in check mode: would)

    @property
    def key(self) -> str:
        """The new target's key: the task's encryption_key, or the one generated and kept on this host."""
        return self.task.encryption_key or self.generated or ""

    def obtain(self, target: Listing | None, check_mode: bool) -> None:
        """encryption_key_generate: read the task's key on this host, or make and keep it (first run). A missing key
        with a target this task already encrypted is the run's error, before anything changes; never a new key."""
        if self.key_file is None:
            return
        try:
            key, generated = obtain_key(self.key_file, keyed_targets(target, self.task.target_dataset), check_mode, self.log)
        except KeyStoreError as exc:
            raise TaskError(str(exc)) from exc
        self.generated = key
        self.new = generated or key is None

    def prepare(self, send: Send, target: Listing | None) -> None:
        """A new encrypted target root: put the key in a file on the target for zfs recv -o keylocation=file://.
        ``target``: the target listing the run planned on."""
        t = self.task
        if not t.encryption or send.mode != "full" or send.target not in self.target_roots:
            return
        if target is not None and target.get(send.target) is not None and not send.force:
            return
        if t.encryption_key_location:
            path = t.encryption_key_location
            script = f"umask 077; mkdir -p {shlex.quote(path.rsplit('/', 1)[0] or '/')}; cat > {shlex.quote(path)}"
            self.dst.run_script(script, input_text=self.key)
            send.key_file = path
        else:
            proc = self.dst.run_script("umask 077; f=$(mktemp); cat > \"$f\"; echo \"$f\"", input_text=self.key)
            send.key_file = proc.stdout.strip()
            send.key_is_temp = True
        self.log(f"  {send.target} is created encrypted (keyformat={t.encryption_key_format})")

    def finish(self, send: Send) -> None:
        if not send.key_file or not send.key_is_temp:
            return
        # The key stays with the task: the target asks for it (keylocation=prompt) when it is loaded.
        if dataset_type(self.dst, send.target) is not None:
            self.dst.run(["zfs", "set", "keylocation=prompt", send.target], check=False)
        self.dst.run(["rm", "-f", send.key_file], check=False)
        send.key_file = None

    def load(self, the_plan: Plan, target: Listing | None) -> None:
        """Non-raw streams into an encrypted target need its key loaded."""
        if not self.task.encryption or target is None:
            return
        for d in the_plan.datasets:
            ds = target.get(d.target)
            if not d.sends or ds is None or ds.props.get("keystatus") != "unavailable":
                continue
            if ds.props.get("encryptionroot") not in (d.target, None):
                continue
            self.log(f"load-key {d.target} on {self.dst.label}")
            if self.task.encryption_key_location:
                self.dst.run(["zfs", "load-key", d.target])
            else:
                self.dst.run(["zfs", "load-key", "-L", "prompt", d.target], input_text=self.key)
