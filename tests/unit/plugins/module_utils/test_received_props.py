# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Received properties: the send and receive argv that keep a source's mountpoint, canmount, setuid and devices
from applying on the target, per target capability (pure argv building; the real outcomes are tested on zfs-fuse
in tests/reliability and on OpenZFS in tests/openzfs)."""
from __future__ import annotations

import dataclasses
import subprocess
from dataclasses import dataclass, field
from typing import Any

import pytest

from ansible_collections.zfs.replication.plugins.module_utils import _zfs as z
from ansible_collections.zfs.replication.plugins.module_utils._planner import DatasetPlan, Send
from ansible_collections.zfs.replication.plugins.module_utils._preflight import Preflight
from ansible_collections.zfs.replication.plugins.module_utils._received_props import fixed_properties, read_target_local
from ansible_collections.zfs.replication.plugins.module_utils._replication import TaskError, recv_settings_note
from ansible_collections.zfs.replication.plugins.module_utils._replication_task import ReplicationTask
from ansible_collections.zfs.replication.plugins.module_utils._streams import Streams
from ansible_collections.zfs.replication.plugins.module_utils._transport import LocalHost, TransportError

OPENZFS = z.parse_version_output("zfs-2.3.2-1\nzfs-kmod-2.3.2-1\n")
LEGACY = z.LEGACY
SOURCE = z.Listing("p/a", {
    "p/a": z.Dataset("p/a", "filesystem"),
    "p/a/c": z.Dataset("p/a/c", "filesystem"),
    "p/a/vol": z.Dataset("p/a/vol", "volume"),
})


@dataclass
class Run:
    """What a run knows of both sides (OpenZFS on the source, TARGET_CAPS on the target, SOURCE listed), for the argv
    builders and the checks."""

    task: ReplicationTask
    target_caps: z.Capabilities
    src: LocalHost = field(default_factory=LocalHost)
    dst: LocalHost = field(default_factory=LocalHost)

    def streams(self) -> Streams:
        return Streams(self.task, self.src, self.dst, OPENZFS, self.target_caps, SOURCE, None)

    def preflight(self) -> Preflight:
        return Preflight(self.task, self.src, self.dst, OPENZFS, self.target_caps, lambda _line: None)


def runner(target_caps: z.Capabilities = OPENZFS, **params: Any) -> Run:
    return Run(ReplicationTask.from_params(dict({
        "name": "t", "source_datasets": ["p/a"], "target_dataset": "q/a", "transport": "local",
        "naming_schema": ["auto-%Y-%m-%d_%H-%M"], "recursive": True,
    }, **params)), target_caps)


def full(source: str = "p/a", replicate: bool = False) -> Send:
    return Send(source, "q" + source[1:], "full", "s1", None, ["s1"], replicate=replicate)


def pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


@pytest.mark.parametrize("replicate", [False, True])
def test_openzfs_receive_never_takes_mountpoint_canmount_setuid_devices(replicate):
    r = runner(replicate=replicate)
    argv = r.streams().recv_argv(full(replicate=replicate))
    assert argv[:3] == ["zfs", "recv", "-u"] and argv[-1] == "q/a"
    assert pairs(argv, "-x") == ["mountpoint"]
    assert sorted(pairs(argv, "-o")) == ["canmount=noauto", "devices=off", "setuid=off"]
    assert r.streams().send_flags(full(replicate=replicate))[:1] == (["-R"] if replicate else ["-p"])


def test_openzfs_without_properties_still_sets_the_safe_values():
    argv = runner(properties=False).streams().recv_argv(full())
    assert pairs(argv, "-x") == []  # nothing is sent that could be excluded
    assert sorted(pairs(argv, "-o")) == ["canmount=noauto", "devices=off", "setuid=off"]


def test_properties_override_is_how_a_user_asks_for_them():
    argv = runner(properties_override={"setuid": "on", "devices": "on", "canmount": "on", "mountpoint": "/srv/replica"}).streams().recv_argv(full())
    assert pairs(argv, "-x") == []
    assert sorted(pairs(argv, "-o")) == ["canmount=on", "devices=on", "mountpoint=/srv/replica", "setuid=on"]


def test_excluding_a_safe_property_does_not_give_zfs_both_x_and_o():
    """zfs recv refuses one property in both -x and -o: the safe value already ignores the source's."""
    argv = runner(properties_exclude=["setuid", "devices", "canmount", "mountpoint", "compression"]).streams().recv_argv(full())
    assert sorted(pairs(argv, "-x")) == ["compression", "mountpoint"]
    assert sorted(pairs(argv, "-o")) == ["canmount=noauto", "devices=off", "setuid=off"]


def test_a_zvol_gets_no_filesystem_properties():
    argv = runner().streams().recv_argv(full("p/a/vol"))
    assert pairs(argv, "-o") == [] and pairs(argv, "-x") == []


def test_a_resumed_receive_repeats_nothing():
    send = full()
    send.token = "1-abc"
    assert runner().streams().recv_argv(send) == ["zfs", "recv", "-u", "-s", "q/a"]


@pytest.mark.parametrize("params", [{}, {"properties_exclude": ["compression"]}, {"properties": False}])
def test_legacy_targets_never_get_the_sources_properties_in_the_stream(params):
    """No recv -x/-o there: a stream with -p would create the dataset with the source's mountpoint and canmount,
    live until a later zfs set (a kill in between leaves them). Non-replicate streams go without -p."""
    r = runner(LEGACY, **params)
    assert "-p" not in r.streams().send_flags(full())
    argv = r.streams().recv_argv(full())
    assert argv == ["zfs", "recv", "-u", "q/a"]


def test_legacy_targets_list_the_values_they_fix():
    assert fixed_properties(runner(LEGACY, properties_override={"compression": "lz4"}).task, LEGACY) == ["canmount", "compression", "devices", "setuid"]
    assert fixed_properties(runner().task, OPENZFS) == []


class Recorder(LocalHost):
    """A source host that answers zfs get with canned output and records the argv (no zfs here)."""

    def __init__(self, out: str, rc: int = 0) -> None:
        super().__init__()
        self.out, self.rc, self.calls = out, rc, []

    def run(self, argv, check=True, input_text=None):  # type: ignore[no-untyped-def,override]
        self.calls.append(list(argv))
        if check and self.rc != 0:
            raise TransportError("zfs get failed", argv, self.rc, "cannot open 'q/a': dataset does not exist\n")
        return subprocess.CompletedProcess(list(argv), self.rc, self.out, "" if self.rc == 0 else "cannot open 'p/a': dataset does not exist\n")


def test_replicate_to_a_legacy_target_refuses_a_source_mountpoint():
    r = runner(LEGACY, replicate=True)
    r.src = Recorder("p/a/c\tmountpoint\t/etc\tlocal\n")
    with pytest.raises(TaskError) as err:
        r.preflight().capabilities()
    text = str(err.value)
    assert "replicate" in text and "p/a/c" in text and "/etc" in text and "zfs inherit mountpoint" in text
    assert r.src.calls == [["zfs", "get", "-H", "-r", "-s", "local,received", "-o", "name,property,value,source", "mountpoint", "p/a"]]


@pytest.mark.parametrize("out", ["", "p/a/c\tmountpoint\tnone\tlocal\n", "p/a\tmountpoint\tlegacy\treceived\n"])
def test_replicate_to_a_legacy_target_accepts_inherited_none_or_legacy_mountpoints(out):
    r = runner(LEGACY, replicate=True)
    r.src = Recorder(out)
    r.preflight().capabilities()


def test_replicate_to_openzfs_asks_the_source_nothing():
    r = runner(replicate=True)
    r.src = Recorder("p/a/c\tmountpoint\t/etc\tlocal\n")
    r.preflight().capabilities()
    assert r.src.calls == []


# -- recv -o only where the existing target does not hold the value as its own -----------------------------------
def incremental(source: str = "p/a", **extra: Any) -> Send:
    return Send(source, "q" + source[1:], "I", "s3", "s1", ["s2", "s3"], **extra)


def held(run: Run, target_local: dict[str, dict[str, str]]) -> Streams:
    return dataclasses.replace(run.streams(), target_local=target_local)


SAFE_HELD = {"canmount": "noauto", "devices": "off", "setuid": "off"}


def test_an_incremental_into_a_target_holding_the_safe_values_sets_none_again():
    """A received value never overrides a local one: the target's own canmount=noauto/setuid=off/devices=off stay
    effective whatever the stream carries, and each -o would cost the receive a commit per snapshot."""
    streams = held(runner(), {"q/a": dict(SAFE_HELD)})
    argv = streams.recv_argv(incremental())
    assert pairs(argv, "-o") == [] and pairs(argv, "-x") == ["mountpoint"]
    assert streams.recv_settings(incremental()) == ([], sorted(SAFE_HELD.items()))
    assert recv_settings_note(streams, incremental()) == " (held on the target: canmount=noauto, devices=off, setuid=off)"


@pytest.mark.parametrize("target_local, setting", [
    ({}, ["canmount=noauto", "devices=off", "setuid=off"]),  # inherited or default: a received value would win over it
    ({"canmount": "noauto", "devices": "on", "setuid": "off"}, ["devices=off"]),  # its own value, but not the safe one
    ({"canmount": "off", "devices": "off", "setuid": "off"}, ["canmount=noauto"]),
])
def test_a_value_the_target_does_not_hold_as_its_own_is_set_again(target_local, setting):
    streams = held(runner(), {"q/a": target_local})
    assert pairs(streams.recv_argv(incremental()), "-o") == setting
    note = recv_settings_note(streams, incremental())
    assert note.startswith(f" (recv -o {', '.join(setting)}")


@pytest.mark.parametrize("send", [
    full(), full(replicate=True), incremental(force=True), incremental(token="1-abc"), incremental(replicate=True),
])
def test_full_forced_resumed_and_replicate_streams_are_never_trimmed(send):
    streams = held(runner(), {"q/a": dict(SAFE_HELD)})
    unread = runner().streams()
    assert streams.recv_argv(send) == unread.recv_argv(send)
    assert recv_settings_note(streams, send) == ""


def test_overrides_are_held_like_the_safe_values_and_unread_targets_get_everything():
    run = runner(properties_override={"compression": "lz4", "setuid": "on"})
    streams = held(run, {"q/a": {"compression": "lz4", "canmount": "noauto", "devices": "off", "setuid": "off"}})
    # setuid: the task asks for on, the target holds off: set; compression held; the safe values held.
    assert pairs(streams.recv_argv(incremental()), "-o") == ["setuid=on"]
    assert pairs(run.streams().recv_argv(incremental()), "-o") == ["compression=lz4", "setuid=on", "canmount=noauto", "devices=off"]
    assert recv_settings_note(run.streams(), incremental()) == ""  # not read: the plan says nothing new


class Target(LocalHost):
    """The target's zfs get, answered with canned output; records the argv."""

    def __init__(self, out: str = "", fail: bool = False) -> None:
        super().__init__()
        self.out, self.fail, self.calls = out, fail, []

    def run(self, argv, check=True, input_text=None):  # type: ignore[no-untyped-def,override]
        self.calls.append(list(argv))
        if self.fail:
            raise TransportError("zfs get failed", argv, 1, "cannot open 'q/a': dataset does not exist\n")
        return subprocess.CompletedProcess(list(argv), 0, self.out, "")


# zfs get -H -p -r -t filesystem,volume -s local -o name,property,value canmount,devices,setuid q/a (as OpenZFS 2.3 prints
# it: q/a/c's setuid is inherited, so not listed)
TARGET_LOCAL = "q/a\tcanmount\tnoauto\nq/a\tsetuid\toff\nq/a\tdevices\toff\nq/a/c\tdevices\toff\n"


def before(plans: list[DatasetPlan], target: Target, caps: z.Capabilities = OPENZFS, listed: bool = True,
           lines: list[str] | None = None, **params: Any) -> dict[str, dict[str, str]] | None:
    run = runner(caps, **params)
    listing = z.Listing("q/a", {"q/a": z.Dataset("q/a", "filesystem"), "q/a/c": z.Dataset("q/a/c", "filesystem")})
    return read_target_local(run.task, target, caps, listing if listed else None, plans, (lines if lines is not None else []).append)


def both(*sends: Send) -> list[DatasetPlan]:
    return [DatasetPlan(s.source, s.target, "incremental" if s.mode != "full" else "full", sends=[s]) for s in sends]


def test_the_targets_own_values_are_read_in_one_call_of_those_properties_only():
    target = Target(TARGET_LOCAL)
    got = before(both(incremental(), incremental("p/a/c")), target, properties_override={"compression": "lz4"})
    assert target.calls == [["zfs", "get", "-H", "-p", "-r", "-t", "filesystem,volume", "-s", "local", "-o", "name,property,value",
                             "canmount,compression,devices,setuid", "q/a"]]
    assert got == {"q/a": {"canmount": "noauto", "setuid": "off", "devices": "off"}, "q/a/c": {"devices": "off"}}
    streams = dataclasses.replace(runner().streams(), target_local=got)
    assert pairs(streams.recv_argv(incremental()), "-o") == []
    assert pairs(streams.recv_argv(incremental("p/a/c")), "-o") == ["canmount=noauto", "setuid=off"]


@pytest.mark.parametrize("case", ["legacy", "full", "no target", "forced", "resumed", "replicate"])
def test_nothing_is_read_where_no_incremental_goes_into_an_existing_openzfs_target(case):
    sends = {"full": full(), "forced": incremental(force=True), "resumed": incremental(token="1-abc"),
             "replicate": incremental(replicate=True)}
    target = Target(TARGET_LOCAL)
    got = before(both(sends.get(case, incremental())), target, caps=LEGACY if case == "legacy" else OPENZFS, listed=case != "no target")
    assert got is None and target.calls == []


def test_a_failed_read_leaves_every_receive_setting_everything():
    lines: list[str] = []
    assert before(both(incremental()), Target(fail=True), lines=lines) is None
    assert "every receive sets them" in lines[-1]
