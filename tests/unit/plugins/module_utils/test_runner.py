# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The timer entry point without systemd or ZFS: config, lock, state file, log rotation, window, exit codes."""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pytest

from ansible_collections.zfs.replication.plugins.module_utils import _runner
from ansible_collections.zfs.replication.plugins.module_utils._replication import TaskError
from ansible_collections.zfs.replication.plugins.module_utils._runner import (
    ConfigError,
    RunOptions,
    TaskConfig,
    TaskLock,
    main,
    read_state,
    run_task,
    write_state,
)


@dataclass
class FakeResult:
    errors: list[str] = field(default_factory=list)
    snapshots_sent: int = 2
    bytes: int | None = 4096
    changed: bool = True

    @property
    def failed(self) -> bool:
        return bool(self.errors)

    def as_dict(self) -> dict[str, Any]:
        return {'task': 'x', 'changed': self.changed, 'snapshots_sent': self.snapshots_sent, 'bytes': self.bytes,
                'errors': self.errors, 'log': ['a line'], 'plan': [{'big': 'plan'}]}


class Engine:
    """Stands in for the engine: records its calls, logs a line, returns or raises what it is given."""

    def __init__(self, result: Any = None, raises: BaseException | None = None, during=None) -> None:
        self.result = result if result is not None else FakeResult()
        self.raises = raises
        self.during = during
        self.calls: list[tuple[dict, bool]] = []

    def __call__(self, params: dict, check_mode: bool, log) -> Any:
        self.calls.append((params, check_mode))
        log('engine says hello')
        if self.during:
            self.during()
        if self.raises:
            raise self.raises
        return self.result


def config(kind: str = 'replication', name: str = 'offsite', **kw: Any) -> TaskConfig:
    return TaskConfig.from_dict({'kind': kind, 'name': name, 'params': {'source_datasets': ['tank/a']}, **kw}, 'test.json')


@pytest.fixture
def opts(tmp_path: Path) -> RunOptions:
    return RunOptions(state_dir=str(tmp_path / 'state'), log_dir=str(tmp_path / 'log'))


def state_of(opts: RunOptions, task_id: str = 'repl-offsite') -> dict[str, Any]:
    return json.loads(Path(opts.state_dir, f'{task_id}.json').read_text())


def log_of(opts: RunOptions, task_id: str = 'repl-offsite') -> str:
    return Path(opts.log_dir, f'{task_id}.log').read_text()


NOON = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


class FrozenTime:
    """Stands in for the ``time`` module inside _runner: its monotonic clock moves only when the code sleeps, and every
    sleep it asks for is recorded. ``on_sleep(n)`` runs after the n-th sleep: what happens elsewhere while it waits
    (the other run finishing). The lock's wait is then counted, never measured."""

    def __init__(self, on_sleep: Callable[[int], None] | None = None) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.on_sleep = on_sleep

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0, f'asked to sleep {seconds} s'
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep:
            self.on_sleep(len(self.sleeps))


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FrozenTime]:
    def freeze(on_sleep: Callable[[int], None] | None = None) -> FrozenTime:
        clock = FrozenTime(on_sleep)
        monkeypatch.setattr(_runner, 'time', clock)
        return clock
    return freeze

# ------------------------------------------------------------------------------------------------------------- config


def test_config_load(tmp_path: Path) -> None:
    path = tmp_path / 'repl-x.json'
    path.write_text(json.dumps({'kind': 'replication', 'name': 'x', 'params': {'a': 1}, 'depends_on': 'snaps',
                                'schedule': 'hourly', 'timezone': 'UTC'}))
    cfg = TaskConfig.load(path)
    assert (cfg.kind, cfg.name, cfg.params, cfg.depends_on, cfg.schedule, cfg.timezone) == \
        ('replication', 'x', {'a': 1}, ['snaps'], 'hourly', 'UTC')
    assert cfg.task_id == 'repl-x'
    assert config('snapshot', 'daily').task_id == 'snap-daily'


@pytest.mark.parametrize('data, message', [
    ([], 'expected a JSON object'),
    ({'kind': 'backup', 'name': 'x', 'params': {}}, "kind 'backup'"),
    ({'kind': 'snapshot', 'name': '../etc', 'params': {}}, "name '../etc'"),
    ({'kind': 'snapshot', 'name': 'x', 'params': []}, 'params must be an object'),
    ({'kind': 'replication', 'name': 'x', 'params': {}, 'depends_on': ['a b']}, 'depends_on'),
])
def test_config_errors(data: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TaskConfig.from_dict(data, 'c.json')


def test_main_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / 'bad.json'
    bad.write_text('{not json')
    assert main(['run', '--config', str(bad), '--state-dir', str(tmp_path), '--log-dir', str(tmp_path)]) == 2
    assert 'is not valid JSON' in capsys.readouterr().err
    assert main(['run', '--config', str(tmp_path / 'missing.json')]) == 2
    assert 'cannot read config' in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------------- results


def test_ok_run_writes_state_and_logs(opts: RunOptions) -> None:
    engine = Engine()
    out = io.StringIO()
    assert run_task(config(), opts, stream=out, engines={'replication': engine}, clock=lambda: NOON) == 0
    # The replication engine gets the task's state dir for its own records (a first transfer in progress).
    assert engine.calls == [({'source_datasets': ['tank/a'], 'state_dir': opts.state_dir}, False)]
    state = state_of(opts)
    assert state['result'] == 'ok'
    assert state['error'] is None
    assert (state['task'], state['kind'], state['id']) == ('offsite', 'replication', 'repl-offsite')
    assert state['last_start'] == state['last_end'] == state['last_success'] == '2026-11-28T12:00:00+00:00'
    assert (state['snapshots_sent'], state['bytes'], state['changed']) == (2, 4096, True)
    assert isinstance(state['duration'], float)
    assert 'plan' not in state['details'] and 'log' not in state['details']
    assert 'running' not in state
    # stdout (the journal) gets bare lines; the file gets time, task id and pid
    assert out.getvalue().splitlines() == ['replication task offsite: start', 'engine says hello', 'replication task offsite: ok']
    lines = log_of(opts).splitlines()
    assert len(lines) == 3
    assert lines[1].split(' ', 1)[1].startswith('repl-offsite[')
    assert lines[1].endswith(': engine says hello')


def test_failed_run_exits_1_and_keeps_last_success(opts: RunOptions) -> None:
    assert run_task(config(), opts, engines={'replication': Engine()}, clock=lambda: NOON) == 0
    later = datetime(2026, 11, 28, 13, 0, tzinfo=timezone.utc)
    engine = Engine(FakeResult(errors=['backup/a: diverged', 'backup/b: refused']))
    assert run_task(config(), opts, engines={'replication': engine}, clock=lambda: later) == 1
    state = state_of(opts)
    assert state['result'] == 'failed'
    assert state['error'] == 'backup/a: diverged; backup/b: refused'
    assert state['errors'] == ['backup/a: diverged', 'backup/b: refused']
    assert state['last_start'] == '2026-11-28T13:00:00+00:00'
    assert state['last_success'] == '2026-11-28T12:00:00+00:00'
    assert 'FAILED: backup/a: diverged' in log_of(opts)


def test_task_error_is_a_clean_failure(opts: RunOptions) -> None:
    engine = Engine(raises=TaskError('source_datasets: tank/a does not exist on localhost'))
    assert run_task(config(), opts, engines={'replication': engine}) == 1
    state = state_of(opts)
    assert state['error'] == 'source_datasets: tank/a does not exist on localhost'
    assert 'Traceback' not in log_of(opts)


def test_unexpected_exception_is_logged_with_traceback(opts: RunOptions) -> None:
    assert run_task(config(), opts, engines={'replication': Engine(raises=KeyError('boom'))}) == 1
    assert state_of(opts)['error'] == "internal error: KeyError: 'boom'"
    assert 'Traceback' in log_of(opts)


def test_real_engine_bad_params_fail_with_its_message(opts: RunOptions) -> None:
    cfg = TaskConfig.from_dict({'kind': 'replication', 'name': 'x', 'params': {'target_dataset': 'b/x', 'transport': 'local'}})
    assert run_task(cfg, opts) == 1
    assert state_of(opts, 'repl-x')['error'].startswith('source_datasets')


def test_check_mode_writes_no_state_and_no_log_file(opts: RunOptions) -> None:
    opts.check_mode = True
    engine = Engine()
    assert run_task(config(), opts, stream=io.StringIO(), engines={'replication': engine}) == 0
    assert engine.calls[0][1] is True
    assert not Path(opts.state_dir, 'repl-offsite.json').exists()
    assert not Path(opts.log_dir, 'repl-offsite.log').exists()


def test_state_says_running_during_a_run_and_keeps_the_previous_result(opts: RunOptions) -> None:
    assert run_task(config(), opts, engines={'replication': Engine()}) == 0
    seen: dict[str, Any] = {}
    engine = Engine(during=lambda: seen.update(state_of(opts)))
    assert run_task(config(), opts, engines={'replication': engine}) == 0
    assert seen['result'] == 'ok'
    assert seen['running']['pid'] > 0
    assert 'running' not in state_of(opts)


def test_sigterm_during_a_run_records_a_failure(opts: RunOptions) -> None:
    import signal

    # raise_signal delivers the signal before it returns: the handler runs inside the engine, no waiting needed
    engine = Engine(during=lambda: signal.raise_signal(signal.SIGTERM))
    assert run_task(config(), opts, engines={'replication': engine}) == 1
    assert state_of(opts)['error'] == 'stopped by signal SIGTERM'
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored


# ------------------------------------------------------------------------------------------------------------- state file


def test_write_state_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / 'repl-x.json'
    write_state(path, {'result': 'ok'})
    with pytest.raises(TypeError):
        write_state(path, {'result': object()})  # not JSON: the old file must survive whole
    assert read_state(path) == {'result': 'ok'}
    assert [p.name for p in tmp_path.iterdir()] == ['repl-x.json']
    assert oct(path.stat().st_mode & 0o777) == '0o644'


def test_read_state_tolerates_missing_and_torn_files(tmp_path: Path) -> None:
    assert read_state(tmp_path / 'none.json') == {}
    (tmp_path / 'torn.json').write_text('{"result": "o')
    assert read_state(tmp_path / 'torn.json') == {}


# ------------------------------------------------------------------------------------------------------------- lock


def test_overlapping_run_is_skipped_with_a_reason(opts: RunOptions) -> None:
    write_state(Path(opts.state_dir, 'repl-offsite.json'), {'result': 'ok', 'marker': 1})
    holder = TaskLock(Path(opts.state_dir, 'repl-offsite.lock'))
    assert holder.acquire()
    try:
        engine = Engine()
        out = io.StringIO()
        assert run_task(config(), opts, stream=out, engines={'replication': engine}) == 0
    finally:
        holder.release()
    assert engine.calls == []
    assert 'skipped: another run of this task holds' in out.getvalue()
    assert 'skipped: another run' in log_of(opts)
    assert state_of(opts) == {'result': 'ok', 'marker': 1}  # the running holder owns the state file


def test_lock_wait_serialises(opts: RunOptions, frozen: Callable[..., FrozenTime]) -> None:
    """A run that finds the lock held polls it every 0.2 s; the holder finishes during the third wait, the run then
    takes the lock and runs its engine once, after the release."""
    holder = TaskLock(Path(opts.state_dir, 'repl-offsite.lock'))
    assert holder.acquire()
    events: list[str] = []

    def other_run_finishes(waits: int) -> None:
        events.append(f'wait {waits}')
        if waits == 3:
            holder.release()
            events.append('holder released')

    clock = frozen(other_run_finishes)
    opts.lock_wait = 10
    engine = Engine(during=lambda: events.append('engine ran'))
    assert run_task(config(), opts, engines={'replication': engine}) == 0
    assert events == ['wait 1', 'wait 2', 'wait 3', 'holder released', 'engine ran']
    assert clock.sleeps == pytest.approx([0.2, 0.2, 0.2])
    assert len(engine.calls) == 1
    assert state_of(opts)['result'] == 'ok'


def test_lock_wait_gives_up_after_lock_wait_seconds(opts: RunOptions, frozen: Callable[..., FrozenTime]) -> None:
    """A holder that never finishes: the run polls until lock_wait is used up, then skips without running."""
    holder = TaskLock(Path(opts.state_dir, 'repl-offsite.lock'))
    assert holder.acquire()
    try:
        clock = frozen()
        opts.lock_wait = 1
        engine = Engine()
        out = io.StringIO()
        assert run_task(config(), opts, stream=out, engines={'replication': engine}) == 0
    finally:
        holder.release()
    assert clock.sleeps == pytest.approx([0.2] * 5)  # 1 s of waiting, in polls of 0.2 s
    assert engine.calls == []
    assert 'skipped: another run of this task holds' in out.getvalue()


def test_lock_is_exclusive_between_open_files(tmp_path: Path, frozen: Callable[..., FrozenTime]) -> None:
    a, b = TaskLock(tmp_path / 'x.lock'), TaskLock(tmp_path / 'x.lock')
    assert a.acquire()
    clock = frozen()
    assert not b.acquire(wait=0.3)
    assert clock.sleeps == pytest.approx([0.2, 0.1])  # polled for the whole wait, then gave up
    a.release()
    assert b.acquire()
    b.release()
    assert (tmp_path / 'x.lock').exists()  # never removed


def test_replication_waits_for_its_snapshot_task(opts: RunOptions, frozen: Callable[..., FrozenTime]) -> None:
    snap_lock = TaskLock(Path(opts.state_dir, 'snap-hourly.lock'))
    assert snap_lock.acquire()
    released: list[int] = []

    def snapshot_run_finishes(waits: int) -> None:
        if waits == 2:
            snap_lock.release()
            released.append(waits)

    clock = frozen(snapshot_run_finishes)
    out = io.StringIO()
    engine = Engine(during=lambda: released.append(-1))
    assert run_task(config(depends_on=['hourly']), opts, stream=out, engines={'replication': engine}) == 0
    text = out.getvalue()
    assert 'snapshot task hourly is running: waiting' in text
    assert text.index('snapshot task hourly finished') < text.index('engine says hello')
    assert released == [2, -1]  # the engine ran after the snapshot run released its lock, not before
    assert clock.sleeps == pytest.approx([0.2, 0.2])


# ------------------------------------------------------------------------------------------------------------- window


@pytest.mark.parametrize('now, runs', [
    (datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc), False),
    (datetime(2026, 11, 28, 22, 30, tzinfo=timezone.utc), True),
    (datetime(2026, 11, 29, 1, 59, tzinfo=timezone.utc), True),
])
def test_replication_outside_its_window_is_skipped(opts: RunOptions, now: datetime, runs: bool) -> None:
    cfg = config(schedule={'minute': '0', 'hour': '*', 'begin': '22:00', 'end': '02:00'}, timezone='UTC')
    engine = Engine()
    assert run_task(cfg, opts, engines={'replication': engine}, clock=lambda: now) == 0
    state = state_of(opts)
    assert bool(engine.calls) is runs
    if runs:
        assert state['result'] == 'ok'
    else:
        assert state['result'] == 'skipped'
        assert state['reason'] == 'outside the schedule\'s window 22:00-02:00 (now 12:00 UTC)'
        assert 'skipped: outside the schedule' in log_of(opts)


def test_ignore_window_and_presets_run(opts: RunOptions) -> None:
    engine = Engine()
    opts.ignore_window = True
    cfg = config(schedule={'begin': '22:00', 'end': '23:00'}, timezone='UTC')
    assert run_task(cfg, opts, engines={'replication': engine}, clock=lambda: NOON) == 0
    opts.ignore_window = False
    assert run_task(config(schedule='hourly'), opts, engines={'replication': engine}, clock=lambda: NOON) == 0
    assert len(engine.calls) == 2


# ------------------------------------------------------------------------------------------------------------- log rotation


def test_log_file_rotates_by_size_and_keeps_a_few(opts: RunOptions) -> None:
    opts.log_max_bytes = 400
    opts.log_keep = 2
    for _attempt in range(12):
        assert run_task(config(), opts, engines={'replication': Engine()}) == 0
    names = sorted(p.name for p in Path(opts.log_dir).iterdir())
    assert names == ['repl-offsite.log', 'repl-offsite.log.1', 'repl-offsite.log.2']
    assert all(p.stat().st_size <= 400 for p in Path(opts.log_dir).iterdir())


# ------------------------------------------------------------------------------------------------------------- status


def test_status_prints_states_and_flags_stale_runs(opts: RunOptions, capsys: pytest.CaptureFixture[str]) -> None:
    write_state(Path(opts.state_dir, 'repl-a.json'), {'result': 'ok'})
    write_state(Path(opts.state_dir, 'snap-b.json'), {'result': 'failed', 'running': {'pid': 2 ** 22 + 7, 'since': 'x'}})
    assert main(['status', '--state-dir', opts.state_dir]) == 0
    states = json.loads(capsys.readouterr().out)
    assert states['repl-a'] == {'result': 'ok'}
    assert states['snap-b']['running']['stale'] is True
    assert main(['status', '--state-dir', opts.state_dir, 'repl-nope']) == 2


def test_main_runs_a_task_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = Engine()
    monkeypatch.setitem(_runner.ENGINES, 'replication', engine)
    cfg = tmp_path / 'repl-x.json'
    cfg.write_text(json.dumps({'kind': 'replication', 'name': 'x', 'params': {'k': 'v'}}))
    out = io.StringIO()
    rc = main(['run', '--config', str(cfg), '--state-dir', str(tmp_path / 's'), '--log-dir', str(tmp_path / 'l')], stream=out)
    assert rc == 0
    assert engine.calls == [({'k': 'v', 'state_dir': str(tmp_path / 's')}, False)]
    assert read_state(tmp_path / 's' / 'repl-x.json')['config'] == str(cfg)


def test_snapshot_task_goes_to_the_snapshot_engine(opts: RunOptions) -> None:
    cfg = TaskConfig.from_dict({'kind': 'snapshot', 'name': 'hourly', 'params': {'bogus_option': 1}})
    assert run_task(cfg, opts) == 1
    assert 'unknown option bogus_option' in state_of(opts, 'snap-hourly')['error']


def test_release_subcommand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    snap = tmp_path / 'snap-x.json'
    snap.write_text(json.dumps({'kind': 'snapshot', 'name': 'x', 'params': {}}))
    assert main(['release', '--config', str(snap)]) == 0
    assert json.loads(capsys.readouterr().out) == {'task': 'x', 'changed': False, 'released': {}}
    bad = tmp_path / 'repl-x.json'
    bad.write_text(json.dumps({'kind': 'replication', 'name': 'x', 'params': {'transport': 'local', 'target_dataset': 'b/x'}}))
    assert main(['release', '--config', str(bad)]) == 1
    assert 'release x: source_datasets' in capsys.readouterr().err
