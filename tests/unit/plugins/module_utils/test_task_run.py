# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One task, one lock, one history: a module's run and the timer's run of a task share lock, log, state and metrics.

Pure logic with a stand-in engine (the real engine on real ZFS is in tests/integration/test_task_lock.py).
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.zfs.replication.plugins.module_utils._replication import TaskError
from ansible_collections.zfs.replication.plugins.module_utils._runner import (
    TASK_RUN_SPEC,
    ConfigError,
    RunOptions,
    TaskBusy,
    TaskConfig,
    TaskLock,
    execute_task,
    main,
    run_from_module,
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
        return {'changed': self.changed, 'snapshots_sent': self.snapshots_sent, 'bytes': self.bytes, 'errors': self.errors,
                'log': ['a line'], 'plan': []}


class Engine:
    """Stands in for the engine: records its calls, logs a line, returns or raises what it is given."""

    def __init__(self, result: Any = None, raises: BaseException | None = None) -> None:
        self.result = result if result is not None else FakeResult()
        self.raises = raises
        self.calls: list[tuple[dict, bool]] = []

    def __call__(self, params: dict, check_mode: bool, log) -> Any:
        self.calls.append((params, check_mode))
        log('engine says hello')
        if self.raises:
            raise self.raises
        return self.result


def config(kind: str = 'replication', name: str = 'offsite') -> TaskConfig:
    return TaskConfig.from_dict({'kind': kind, 'name': name, 'params': {'source_datasets': ['tank/a']}}, 'test.json')


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, str]:
    return {'state_dir': str(tmp_path / 'state'), 'log_dir': str(tmp_path / 'log'), 'metrics_dir': str(tmp_path / 'metrics')}


def module_params(dirs: dict[str, str], lock_wait: float = 0.3, **engine_params: Any) -> dict[str, Any]:
    """What AnsibleModule hands over: the engine's options and the task-run options, all of them."""
    return {'source_datasets': ['tank/a'], **engine_params, **dirs, 'lock_wait': lock_wait}


def state_of(dirs: dict[str, str], task_id: str = 'repl-offsite') -> dict[str, Any]:
    return json.loads(Path(dirs['state_dir'], f'{task_id}.json').read_text())


def log_lines(dirs: dict[str, str], task_id: str = 'repl-offsite') -> list[str]:
    """The log file's lines without the time, task id and pid prefix."""
    return [line.split(': ', 1)[1] for line in Path(dirs['log_dir'], f'{task_id}.log').read_text().splitlines()]


def test_execute_task_hands_back_the_engines_result_and_records_the_run(dirs: dict[str, str]) -> None:
    result = FakeResult(snapshots_sent=3)
    engine = Engine(result)
    opts = RunOptions(**dirs)
    run = execute_task(config(), opts, engines={'replication': engine})
    assert run.result is result
    assert run.error is None
    assert run.status == 0
    assert run.state['result'] == 'ok' and run.state['snapshots_sent'] == 3
    assert state_of(dirs) == run.state
    assert log_lines(dirs) == ['replication task offsite: start', 'engine says hello', 'replication task offsite: ok']
    assert Path(dirs['metrics_dir'], 'zfs_replication_repl_offsite.prom').exists()


def test_execute_task_hands_back_what_the_engine_raised(dirs: dict[str, str]) -> None:
    error = TaskError('source_datasets: tank/a does not exist on localhost')
    run = execute_task(config(), RunOptions(**dirs), engines={'replication': Engine(raises=error)})
    assert run.result is None
    assert run.error is error
    assert run.status == 1
    assert state_of(dirs)['error'] == str(error)


def test_a_module_run_and_a_timer_run_share_lock_log_state_and_metrics(
        dirs: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ansible_collections.zfs.replication.plugins.module_utils import _runner

    engine = Engine(FakeResult(snapshots_sent=2))
    monkeypatch.setitem(_runner.ENGINES, 'replication', engine)
    run = run_from_module('replication', 'offsite', module_params(dirs, name='offsite'), check_mode=False)
    assert run.status == 0 and run.state['snapshots_sent'] == 2
    # The engine gets the task's options and the task's state dir (its own records live there), whoever runs it.
    assert engine.calls[0] == ({'source_datasets': ['tank/a'], 'name': 'offsite', 'state_dir': dirs['state_dir']}, False)
    first = state_of(dirs)
    assert first['result'] == 'ok' and first['id'] == 'repl-offsite' and first['last_success']

    engine.result = FakeResult(snapshots_sent=5)
    cfg = tmp_path / 'repl-offsite.json'
    cfg.write_text(json.dumps({'kind': 'replication', 'name': 'offsite', 'params': {'source_datasets': ['tank/a']}}))
    argv = ['run', '--config', str(cfg), '--state-dir', dirs['state_dir'], '--log-dir', dirs['log_dir'], '--metrics-dir', dirs['metrics_dir']]
    assert main(argv, stream=io.StringIO()) == 0
    second = state_of(dirs)
    assert second['snapshots_sent'] == 5 and second['last_start'] >= first['last_start']
    assert log_lines(dirs).count('replication task offsite: start') == 2
    metrics = Path(dirs['metrics_dir'], 'zfs_replication_repl_offsite.prom').read_text()
    assert 'zfs_replication_last_run_snapshots_sent{task="offsite",kind="replication"} 5' in metrics
    assert sorted(p.name for p in Path(dirs['state_dir']).iterdir()) == ['repl-offsite.json', 'repl-offsite.lock']


def test_a_module_run_fails_when_the_lock_stays_held(dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from ansible_collections.zfs.replication.plugins.module_utils import _runner

    engine = Engine()
    monkeypatch.setitem(_runner.ENGINES, 'replication', engine)
    write_state(Path(dirs['state_dir'], 'repl-offsite.json'), {'result': 'ok', 'marker': 1})
    holder = TaskLock(Path(dirs['state_dir'], 'repl-offsite.lock'))
    assert holder.acquire()
    try:
        with pytest.raises(TaskBusy) as caught:
            run_from_module('replication', 'offsite', module_params(dirs, lock_wait=0.3), check_mode=False)
    finally:
        holder.release()
    lock_file = str(Path(dirs['state_dir'], 'repl-offsite.lock'))
    assert caught.value.lock_file == Path(lock_file)
    assert caught.value.holder == os.getpid()
    message = str(caught.value)
    assert lock_file in message and f'pid {os.getpid()}' in message and 'lock_wait' in message
    assert engine.calls == []
    assert state_of(dirs) == {'result': 'ok', 'marker': 1}  # the running holder owns the state file
    assert log_lines(dirs)[-1].startswith('replication task offsite: FAILED: another run of this task holds')


def test_the_timer_still_skips_when_the_lock_stays_held(dirs: dict[str, str]) -> None:
    holder = TaskLock(Path(dirs['state_dir'], 'repl-offsite.lock'))
    assert holder.acquire()
    out = io.StringIO()
    try:
        assert run_task(config(), RunOptions(**dirs), stream=out, engines={'replication': Engine()}) == 0
    finally:
        holder.release()
    assert f'(pid {os.getpid()})' in out.getvalue() and 'skipped: another run of this task holds' in out.getvalue()


def test_check_mode_takes_no_lock_and_writes_nothing(dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from ansible_collections.zfs.replication.plugins.module_utils import _runner

    engine = Engine()
    monkeypatch.setitem(_runner.ENGINES, 'replication', engine)
    run = run_from_module('replication', 'offsite', module_params(dirs), check_mode=True)
    assert run.status == 0 and run.result is engine.result
    assert engine.calls[0][1] is True
    assert not any(Path(d).exists() for d in dirs.values())  # no lock, state, log or metrics file, not even a directory


def test_check_mode_plans_while_a_run_holds_the_lock(dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from ansible_collections.zfs.replication.plugins.module_utils import _runner

    engine = Engine()
    monkeypatch.setitem(_runner.ENGINES, 'replication', engine)
    holder = TaskLock(Path(dirs['state_dir'], 'repl-offsite.lock'))
    assert holder.acquire()
    try:
        run = run_from_module('replication', 'offsite', module_params(dirs, lock_wait=0), check_mode=True)
    finally:
        holder.release()
    assert run.status == 0 and len(engine.calls) == 1


def test_a_module_run_ignores_the_window_and_dependencies(dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The module runs when it is told to: the playbook, not the timer, decided when."""
    from ansible_collections.zfs.replication.plugins.module_utils import _runner

    engine = Engine()
    monkeypatch.setitem(_runner.ENGINES, 'replication', engine)
    narrow = {'minute': '0', 'hour': '*', 'begin': '03:00', 'end': '03:01'}
    run = run_from_module('replication', 'offsite', module_params(dirs, schedule=narrow), check_mode=False)
    assert run.state['result'] == 'ok' and len(engine.calls) == 1


@pytest.mark.parametrize(('change', 'message'), [
    ({'lock_wait': -1}, 'lock_wait -1'),
    ({'state_dir': 'relative/state'}, "state_dir 'relative/state'"),
    ({'log_dir': ''}, "log_dir ''"),
    ({'metrics_dir': 'm'}, "metrics_dir 'm'"),
])
def test_bad_task_run_options_are_refused_before_anything_runs(
        dirs: dict[str, str], change: dict[str, Any], message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from ansible_collections.zfs.replication.plugins.module_utils import _runner

    engine = Engine()
    monkeypatch.setitem(_runner.ENGINES, 'replication', engine)
    with pytest.raises(ConfigError, match=message):
        run_from_module('replication', 'offsite', {**module_params(dirs), **change}, check_mode=False)
    assert engine.calls == []
    assert not Path(dirs['state_dir']).exists()


def test_a_bad_task_name_is_refused_naming_the_field(dirs: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"name 'a b': use letters, digits and _ \. -"):
        run_from_module('snapshot', 'a b', module_params(dirs), check_mode=False)
    assert not Path(dirs['state_dir']).exists()


def test_unwritable_state_dir_is_a_clear_error(tmp_path: Path, dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from ansible_collections.zfs.replication.plugins.module_utils import _runner

    monkeypatch.setitem(_runner.ENGINES, 'replication', Engine())
    blocker = tmp_path / 'file'
    blocker.write_text('')
    with pytest.raises(ConfigError, match=r'state_dir .*file/state.*: set state_dir'):
        run_from_module('replication', 'offsite', {**module_params(dirs), 'state_dir': str(blocker / 'state')}, check_mode=False)


def test_task_run_spec_is_what_the_modules_take() -> None:
    assert set(TASK_RUN_SPEC) == {'state_dir', 'log_dir', 'metrics_dir', 'lock_wait'}
    assert TASK_RUN_SPEC['state_dir']['default'] == '/var/lib/zfs-replication'
    assert TASK_RUN_SPEC['log_dir']['default'] == '/var/log/zfs-replication'
    assert TASK_RUN_SPEC['lock_wait'] == {'type': 'float', 'default': 600.0}
