# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The first full transfer: what a cut one left, what the run does with it, and the record across runs (pure logic;
the zfs side is a scripted host)."""
from __future__ import annotations

import json
import subprocess

import pytest

from ansible_collections.zfs.replication.plugins.module_utils._executor import PipelineError, PipelineResult, StageResult
from ansible_collections.zfs.replication.plugins.module_utils._first_full import (
    FirstFulls,
    Leftover,
    decide,
    leftover_in,
    prepare_retry,
    settle,
)
from ansible_collections.zfs.replication.plugins.module_utils._holds import Holds, hold_tag
from ansible_collections.zfs.replication.plugins.module_utils._planner import DatasetPlan, Plan, Send
from ansible_collections.zfs.replication.plugins.module_utils._replication import DatasetResult
from ansible_collections.zfs.replication.plugins.module_utils._replication_task import ReplicationTask
from ansible_collections.zfs.replication.plugins.module_utils._streams import Streams
from ansible_collections.zfs.replication.plugins.module_utils._target_changes import TargetChanges
from ansible_collections.zfs.replication.plugins.module_utils._target_keys import TargetKeys
from ansible_collections.zfs.replication.plugins.module_utils._transfer import Transfer
from ansible_collections.zfs.replication.plugins.module_utils._transport import LocalHost
from ansible_collections.zfs.replication.plugins.module_utils._zfs import LEGACY, Dataset, Listing, Snapshot, parse_version_output

OPENZFS = parse_version_output("zfs-2.3.2-1\n")
T = "q/a"


def transfer_for(task: ReplicationTask, dst, source: Listing | None = None) -> Transfer:
    """A run's Transfer as the run makes it for a first full stream (the target not listed: it did not exist), the
    target a scripted host, OpenZFS on both sides, retries without waiting."""
    def quiet(_line: str) -> None:
        pass

    streams = Streams(task, LocalHost(), dst, OPENZFS, OPENZFS, source, None, log=quiet)
    changes = TargetChanges(dst, OPENZFS, Holds(hold_tag(task.name), streams.src, dst, quiet), quiet)
    return Transfer(task, streams, TargetKeys(task, dst, [task.target_dataset], quiet), FirstFulls(None, task.name, quiet), changes,
                    quiet, lambda _s: None)


def listing(*datasets: Dataset) -> Listing:
    return Listing(datasets[0].name, {d.name: d for d in datasets})


@pytest.mark.parametrize(("left", "ours", "action"), [
    (Leftover(False), True, "resend"),
    (Leftover(False), False, "resend"),
    (Leftover(True, token="1-abc"), True, "resume"),
    (Leftover(True, token="1-abc"), False, "resume"),  # a token is never destroyed, whoever made it
    (Leftover(True), True, "discard"),
    (Leftover(True), False, "refuse"),  # an empty dataset this task did not make: the planner refuses it
    (Leftover(True, snapshots=1), True, "kept"),
    (Leftover(True, children=1), True, "kept"),
])
def test_decide(left, ours, action):
    assert decide(left, ours) == action


def test_leftover_in_reads_token_snapshots_and_children():
    ds = Dataset(T, "filesystem", props={"receive_resume_token": "1-abc"})
    assert leftover_in(listing(ds), T) == Leftover(True, "1-abc", 0, 0)
    ds = Dataset(T, "filesystem", props={"receive_resume_token": "-"}, snapshots=[Snapshot(T, "s1", "1", 1)])
    assert leftover_in(listing(ds, Dataset(T + "/c", "filesystem")), T) == Leftover(True, "", 1, 1)
    assert leftover_in(None, T) == Leftover(False)
    assert leftover_in(listing(Dataset("q", "filesystem")), T) == Leftover(False)


class ScriptedHost:
    """A host whose `zfs list/get` answers from ``states`` (one per listing, the last repeats) and whose `zfs destroy`
    answers from ``destroys`` (stderr per call, '' = success)."""

    label = "target"

    def __init__(self, states: list[Leftover], destroys: list[str] = (), token: str = "", guids: dict[str, str] | None = None) -> None:
        self.states, self.destroys, self.token = list(states), list(destroys), token
        self.guids = guids or {}  # snapshot -> guid answered by `zfs get guid SNAPSHOT`
        self.calls: list[list[str]] = []

    def _state(self) -> Leftover:
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]

    def stream(self, argv, consume):
        self.calls.append(list(argv))
        left = self._state()
        if not left.exists:
            return 1, None, f"cannot open '{T}': dataset does not exist"
        objects = [(T, "filesystem", {"receive_resume_token": left.token or "-"})]
        objects += [(f"{T}@s{i}", "snapshot", {}) for i in range(left.snapshots)]
        objects += [(f"{T}/c{i}", "filesystem", {}) for i in range(left.children)]
        if argv[1] == "list":  # OpenZFS: zfs list -H -p -o name,COLUMNS
            columns = argv[argv.index("-o") + 1].split(",")
            base = {"guid": "1", "createtxg": "1", "userrefs": "0"}
            lines = ["\t".join(name if c == "name" else kind if c == "type" else {**base, **props}.get(c, "-") for c in columns)
                     for name, kind, props in objects]
        else:  # legacy: zfs get -H -p -o name,property,value (no resume token)
            lines = [f"{name}\t{p}\t{v}" for name, kind, _props in objects for p, v in (("type", kind), ("guid", "1"), ("createtxg", "1"))]
        return 0, consume(lines), ""

    def run(self, argv, check=True, input_text=None):
        self.calls.append(list(argv))
        if argv[:2] == ["zfs", "destroy"]:
            err = self.destroys.pop(0) if self.destroys else ""
            return subprocess.CompletedProcess(argv, 1 if err else 0, "", err)
        if argv[:2] == ["zfs", "get"] and "receive_resume_token" in argv:
            return subprocess.CompletedProcess(argv, 0, (self.token or "-") + "\n", "")
        if argv[:2] == ["zfs", "get"] and "guid" in argv and argv[-1] in self.guids:
            return subprocess.CompletedProcess(argv, 0, f"{argv[-1]}\t{self.guids[argv[-1]]}\n", "")
        if argv[:2] == ["zfs", "get"]:  # dataset_type: the target is gone
            return subprocess.CompletedProcess(argv, 1, "", "dataset does not exist")
        return subprocess.CompletedProcess(argv, 0, "", "")


def destroyed(host: ScriptedHost) -> int:
    return sum(1 for c in host.calls if c[:2] == ["zfs", "destroy"])


def test_settle_discards_our_empty_leftover_retrying_while_busy():
    host = ScriptedHost([Leftover(True)], destroys=["cannot destroy 'q/a': dataset is busy"] * 2 + [""])
    pauses: list[float] = []
    lines: list[str] = []
    out = settle(host, LEGACY, T, True, pauses.append, lines.append, "why")
    assert out.action == "discarded"
    assert destroyed(host) == 3 and pauses == [0.5, 1.0]
    assert host.calls[-1] == ["zfs", "destroy", T]  # never -r: it has no snapshots and no children


def test_settle_resumes_a_token_that_appears_while_the_receive_saves_its_state():
    host = ScriptedHost([Leftover(True), Leftover(True, token="1-abc")], destroys=["dataset is busy"])
    out = settle(host, OPENZFS, T, True, lambda s: None, lambda s: None, "why")
    assert (out.action, out.token) == ("resume", "1-abc")
    assert destroyed(host) == 1


def test_settle_never_destroys_a_token_or_someone_elses_dataset():
    for left, ours in ((Leftover(True, token="1-abc"), True), (Leftover(True), False), (Leftover(True, snapshots=2), True)):
        host = ScriptedHost([left])
        settle(host, OPENZFS, T, ours, lambda s: None, lambda s: None, "why")
        assert destroyed(host) == 0


def test_settle_gives_up_with_the_reason_when_it_stays_busy():
    host = ScriptedHost([Leftover(True)], destroys=["cannot destroy 'q/a': dataset is busy"] * 20)
    out = settle(host, LEGACY, T, True, lambda s: None, lambda s: None, "why")
    assert out.action == "stuck" and "busy" in out.reason


def full() -> Send:
    return Send("p/a", T, "full", "s1", None, ["s1"])


def test_retry_of_our_first_full_resumes_its_token():
    send = full()
    assert prepare_retry(send, ScriptedHost([Leftover(True, token="1-abc")]), OPENZFS, True, True, lambda s: None, lambda s: None) is None
    assert send.token == "1-abc" and send.describe().startswith("resume")


def test_retry_of_our_first_full_discards_the_empty_leftover_and_resends():
    send = full()
    host = ScriptedHost([Leftover(True)], destroys=["dataset is busy", ""])
    assert prepare_retry(send, host, LEGACY, False, True, lambda s: None, lambda s: None) is None
    assert send.token is None and send.mode == "full" and destroyed(host) == 2
    # zfs-fuse may tear it down by itself while it says busy: then nothing is left to destroy.
    host = ScriptedHost([Leftover(True), Leftover(False)], destroys=["dataset is busy"])
    assert prepare_retry(full(), host, LEGACY, False, True, lambda s: None, lambda s: None) is None
    assert destroyed(host) == 1


def test_retry_stops_when_the_leftover_cannot_be_removed():
    host = ScriptedHost([Leftover(True)], destroys=["dataset is busy"] * 20)
    why = prepare_retry(full(), host, LEGACY, False, True, lambda s: None, lambda s: None)
    assert why is not None and "could not be removed" in why and "busy" in why


def test_retry_of_a_full_into_an_existing_target_never_destroys_it():
    host = ScriptedHost([Leftover(True)])
    assert prepare_retry(full(), host, LEGACY, False, False, lambda s: None, lambda s: None) is None
    assert destroyed(host) == 0


def test_retry_of_an_incremental_resumes_one_snapshot_or_aborts_several():
    one = Send("p/a", T, "I", "s2", "s1", ["s2"])
    assert prepare_retry(one, ScriptedHost([Leftover(True)], token="1-xyz"), OPENZFS, True, False, lambda s: None, lambda s: None) is None
    assert one.token == "1-xyz"
    many = Send("p/a", T, "I", "s3", "s1", ["s2", "s3"])
    host = ScriptedHost([Leftover(True)], token="1-xyz")
    assert prepare_retry(many, host, OPENZFS, True, False, lambda s: None, lambda s: None) is None
    assert many.token is None and ["zfs", "recv", "-A", T] in host.calls


def test_a_full_resent_into_a_target_that_appeared_late_is_read_again_and_resumed():
    """The target was still absent when the cut was settled (its receive was saving state on a slow host), so the
    retry sent the full again and zfs recv refused it: the run reads the target again and resumes the token."""
    task = ReplicationTask.from_params({"name": "t", "source_datasets": ["p/a"], "target_dataset": T, "transport": "local",
                                        "naming_schema": ["auto-%Y-%m-%d_%H-%M"], "retries": 3, "retry_delay": 1})
    runner = transfer_for(task, ScriptedHost([Leftover(False)] * 4 + [Leftover(True, token="1-abc")]))
    cut = PipelineError("cut", [StageResult("ssh", "target", ["ssh"], 255, "Connection closed")])
    exists = PipelineError("refused", [StageResult("zfs recv", "target", ["zfs", "recv"], 1,
                                                   f"cannot receive new filesystem stream: destination '{T}' exists\n"
                                                   "must specify -F to overwrite it")])
    outcomes = [cut, exists, PipelineResult([], 1.0, 10)]
    streams: list[str] = []

    def run_stream(send, expected=None):
        streams.append(send.describe())
        out = outcomes.pop(0)
        if isinstance(out, Exception):
            raise out
        return out

    runner.run_stream = run_stream
    res = DatasetResult("p/a", T, "full", None)
    send = full()
    assert runner.send_with_retries(send, res).bytes == 10
    assert res.attempts == 3 and send.token == "1-abc" and res.resumed
    assert streams[0].startswith("full") and streams[1].startswith("full") and streams[2].startswith("resume")
    assert destroyed(runner.streams.dst) == 0


def scripted_streams(outcomes: list):
    """A stand-in for Transfer.run_stream: each call raises or returns the next of OUTCOMES."""
    def run_stream(send, expected=None):
        out = outcomes.pop(0)
        if isinstance(out, Exception):
            raise out
        return out
    return run_stream


def test_a_stream_that_arrived_before_its_connection_dropped_is_not_sent_again():
    """A multiplexed ssh session may drain the stream into zfs recv after the client was killed: the target then holds
    the snapshot with the source's guid, and the run goes on instead of resending (refused on every retry)."""
    task = ReplicationTask.from_params({"name": "t", "source_datasets": ["p/a"], "target_dataset": T, "transport": "local",
                                        "naming_schema": ["auto-%Y-%m-%d_%H-%M"], "retries": 3, "retry_delay": 1})
    source = listing(Dataset("p/a", "filesystem", snapshots=[Snapshot("p/a", "s1", "42", 1)]))
    cut = PipelineError("cut", [StageResult("ssh", "target", ["ssh"], 255, "Connection closed")])
    for guid, arrived in (("42", True), ("7", False)):
        runner = transfer_for(task, ScriptedHost([Leftover(True, snapshots=1)], guids={f"{T}@s1": guid}), source)
        runner.run_stream = scripted_streams([cut, PipelineResult([], 1.0, 10)])
        res = DatasetResult("p/a", T, "full", None)
        out = runner.send_with_retries(full(), res)
        # Arrived: one attempt, nothing sent again. A snapshot of that name with another guid is not ours: retried.
        assert (res.attempts, out.bytes) == ((1, None) if arrived else (2, 10))
        assert destroyed(runner.streams.dst) == 0


def test_a_refused_full_that_was_not_resent_after_a_cut_is_not_retried():
    task = ReplicationTask.from_params({"name": "t", "source_datasets": ["p/a"], "target_dataset": T, "transport": "local",
                                        "naming_schema": ["auto-%Y-%m-%d_%H-%M"], "retries": 3})
    runner = transfer_for(task, ScriptedHost([Leftover(True)]))
    exists = PipelineError("refused", [StageResult("zfs recv", "target", ["zfs", "recv"], 1, f"destination '{T}' exists")])

    def run_stream(send, expected=None):
        raise exists

    runner.run_stream = run_stream
    res = DatasetResult("p/a", T, "full", None)
    with pytest.raises(PipelineError):
        runner.send_with_retries(full(), res)
    assert res.attempts == 1 and destroyed(runner.streams.dst) == 0


# ---------------------------------------------------------------------------------------------------- across runs
def test_record_is_written_before_and_cleared_after(tmp_path):
    ff = FirstFulls(str(tmp_path / "state"), "t1", lambda s: None)
    ff.start(T, "p/a@s1", "123", "target")
    data = json.loads((tmp_path / "state" / "repl-t1.first-full.json").read_text())
    assert data["targets"][T]["source"] == "p/a@s1" and data["targets"][T]["guid"] == "123"
    assert FirstFulls(str(tmp_path / "state"), "t2", lambda s: None).get(T) is None  # keyed by task
    ff.clear(T)
    assert not (tmp_path / "state" / "repl-t1.first-full.json").exists()


def test_an_unwritable_state_dir_is_a_warning_not_a_failure(tmp_path):
    (tmp_path / "file").write_text("")
    lines: list[str] = []
    FirstFulls(str(tmp_path / "file"), "t", lines.append).start(T, "p/a@s1", "1", "target")
    assert any("cannot record the first transfer" in line for line in lines)


def test_next_run_discards_a_recorded_leftover_and_plans_it_again(tmp_path):
    ff = FirstFulls(str(tmp_path), "t", lambda s: None)
    ff.start(T, "p/a@s1", "1", "target")
    before = listing(Dataset(T, "filesystem"))
    host = ScriptedHost([Leftover(True)], destroys=["dataset is busy", ""])
    assert ff.recover(before, host, LEGACY, False, lambda s: None) is True
    assert destroyed(host) == 2 and ff.get(T) is None
    the_plan = Plan([DatasetPlan("p/a", T, "full", sends=[full()])])
    ff.annotate(the_plan)
    assert "was cut" in the_plan.datasets[0].message and the_plan.datasets[0].action == "full"


def test_next_run_with_a_stuck_leftover_says_what_happened_and_what_clears_it(tmp_path):
    ff = FirstFulls(str(tmp_path), "t", lambda s: None)
    ff.start(T, "p/a@s1", "1", "target")
    host = ScriptedHost([Leftover(True)], destroys=["cannot destroy 'q/a': dataset is busy"] * 20)
    assert ff.recover(listing(Dataset(T, "filesystem")), host, LEGACY, False, lambda s: None) is False
    refused = Plan([DatasetPlan("p/a", T, "refused", message="target q/a exists and has no snapshots ... allow_from_scratch")])
    ff.annotate(refused)
    msg = refused.datasets[0].message
    assert "first transfer of this task" in msg and "busy" in msg and f"zfs destroy {T}" in msg and "allow_from_scratch" not in msg
    assert ff.get(T) is not None  # the next run tries again


def test_next_run_leaves_an_unrecorded_empty_target_to_the_planner(tmp_path):
    ff = FirstFulls(str(tmp_path), "t", lambda s: None)
    host = ScriptedHost([Leftover(True)])
    assert ff.recover(listing(Dataset(T, "filesystem")), host, LEGACY, False, lambda s: None) is False
    refused = Plan([DatasetPlan("p/a", T, "refused", message="unrelated")])
    ff.annotate(refused)
    assert refused.datasets[0].message == "unrelated" and destroyed(host) == 0


def test_record_of_a_completed_or_vanished_target_is_dropped(tmp_path):
    ff = FirstFulls(str(tmp_path), "t", lambda s: None)
    ff.start(T, "p/a@s1", "1", "target")
    ff.start("q/b", "p/b@s1", "2", "target")
    done = listing(Dataset("q", "filesystem"), Dataset(T, "filesystem", snapshots=[Snapshot(T, "s1", "1", 1)]))
    assert ff.recover(done, ScriptedHost([Leftover(False)]), LEGACY, False, lambda s: None) is False
    assert ff.records() == {}


def test_check_mode_changes_nothing_and_shows_resume_and_resend(tmp_path):
    ff = FirstFulls(str(tmp_path), "t", lambda s: None)
    ff.start(T, "p/a@s1", "1", "target")
    ff.start("q/r", "p/r@s1", "2", "target")
    before = listing(Dataset("q", "filesystem"), Dataset(T, "filesystem"),
                     Dataset("q/r", "filesystem", props={"receive_resume_token": "1-abc"}))
    host = ScriptedHost([Leftover(True)])
    assert ff.recover(before, host, LEGACY, True, lambda s: None) is False
    assert destroyed(host) == 0 and set(ff.records()) == {T, "q/r"}
    visible = ff.visible(before)
    assert visible is not None and T not in visible.datasets and "q/r" in visible.datasets
    the_plan = Plan([DatasetPlan("p/a", T, "full", sends=[full()]), DatasetPlan("p/r", "q/r", "refused", message="unrelated")])
    ff.annotate(the_plan)
    assert the_plan.datasets[0].action == "full" and "destroyed and the stream sent again" in the_plan.datasets[0].message
    assert the_plan.datasets[1].action == "resume" and "resume" in the_plan.datasets[1].message
