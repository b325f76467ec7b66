# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""restrict_schedule as a run window: the decision (inside, before, after, across midnight, days of the week, zones),
the next window's start, the timer's OnCalendar= for window starts, and what the runner does with a fixed clock."""
from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ansible_collections.zfs.replication.plugins.filter.scheduler_tasks import scheduler_tasks
from ansible_collections.zfs.replication.plugins.module_utils._runner import RunOptions, TaskConfig, render_metrics, run_task
from ansible_collections.zfs.replication.plugins.module_utils._schedule import RunWindow, ScheduleError

UTC = timezone.utc
NIGHT = {'minute': '0', 'hour': '*', 'begin': '22:00', 'end': '06:00'}
FRIDAY_NIGHT = {**NIGHT, 'end': '02:00', 'dow': 'fri'}
OFFICE = {'begin': '08:00', 'end': '18:00', 'dow': 'mon-fri'}


def at(text: str, tz: Any = UTC) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=tz)


def window(spec: Any, tz: str | None = 'UTC') -> RunWindow:
    w = RunWindow.from_spec(spec, timezone=tz)
    assert w is not None
    return w


# 2026-12-04 is a Friday.
@pytest.mark.parametrize('spec, now, inside, next_start', [
    (OFFICE, '2026-12-04T12:00', True, '2026-12-07T08:00'),       # inside (Friday noon); the next window is Monday's
    (OFFICE, '2026-12-04T07:59', False, '2026-12-04T08:00'),      # before today's window
    (OFFICE, '2026-12-04T08:00', True, '2026-12-07T08:00'),       # begin is inside
    (OFFICE, '2026-12-04T18:00', True, '2026-12-07T08:00'),       # end is inside (minute granularity)
    (OFFICE, '2026-12-04T18:01', False, '2026-12-07T08:00'),      # after the window: Saturday and Sunday are closed
    (OFFICE, '2026-12-05T12:00', False, '2026-12-07T08:00'),      # a Saturday
    (NIGHT, '2026-12-04T21:59', False, '2026-12-04T22:00'),       # across midnight: before
    (NIGHT, '2026-12-04T23:30', True, '2026-12-05T22:00'),
    (NIGHT, '2026-12-05T03:00', True, '2026-12-05T22:00'),        # the morning part
    (NIGHT, '2026-12-05T06:01', False, '2026-12-05T22:00'),       # after
    (FRIDAY_NIGHT, '2026-12-05T01:30', True, '2026-12-11T22:00'),  # Saturday 01:30 belongs to Friday's window
    (FRIDAY_NIGHT, '2026-12-04T01:30', False, '2026-12-04T22:00'),  # Friday 01:30 belongs to Thursday's: closed
    (FRIDAY_NIGHT, '2026-12-05T02:01', False, '2026-12-11T22:00'),
    ('weekly', '2026-12-06T15:00', True, '2026-12-13T00:00'),      # weekly: all of Sunday
    ('weekly', '2026-12-07T00:00', False, '2026-12-13T00:00'),
    ({'dom': '1', 'begin': '01:00', 'end': '03:00'}, '2026-12-31T02:00', False, '2027-01-01T01:00'),
])
def test_decision_and_next_window(spec: Any, now: str, inside: bool, next_start: str) -> None:
    w = window(spec)
    assert w.contains(at(now)) is inside
    assert w.next_start(at(now)) == at(next_start)


def test_windows_that_never_close_are_none() -> None:
    assert RunWindow.from_spec(None) is None
    assert RunWindow.from_spec('hourly') is None and RunWindow.from_spec('daily') is None  # every day, all day
    assert RunWindow.from_spec({'begin': '10:00', 'end': '10:00'}) is None                 # begin == end: the whole day
    assert RunWindow.from_spec({'hour': '1', 'minute': '5'}) is None                       # hour/minute pick snapshots only


def test_time_zone_and_dst() -> None:
    berlin = ZoneInfo('Europe/Berlin')
    w = window(NIGHT, 'Europe/Berlin')
    assert w.contains(at('2026-07-01T21:30'))       # 23:30 in Berlin (UTC+2)
    assert not w.contains(at('2026-07-01T19:30'))   # 21:30 in Berlin
    assert w.next_start(at('2026-07-01T12:00')) == datetime(2026, 7, 1, 22, 0, tzinfo=berlin)
    # A window opening at a wall time the spring-forward change skips opens when the clock jumps (03:00 CEST).
    skipped = window({'begin': '02:30', 'end': '05:00'}, 'Europe/Berlin')
    start = skipped.next_start(at('2026-03-29T00:00'))  # 01:00 in Berlin, the night of the change
    assert start.astimezone(UTC) == at('2026-03-29T01:00') and not skipped.contains(at('2026-03-28T23:00'))
    assert w.describe() == '22:00-06:00 (Europe/Berlin)'
    assert window(FRIDAY_NIGHT, None).describe() == '22:00-02:00 on dow fri (local time)'


def test_oncalendar_fires_at_window_starts() -> None:
    assert window(OFFICE).to_oncalendar() == ['Mon..Fri *-*-* 08:00:00 UTC']
    assert window(FRIDAY_NIGHT, None).to_oncalendar() == ['Fri *-*-* 22:00:00']
    assert window('weekly', None).to_oncalendar() == ['Sun *-*-* 00:00:00']


def test_bad_window_names_the_field() -> None:
    with pytest.raises(ScheduleError, match=r"schedule.begin '25:00' is not a time of day"):
        RunWindow.from_spec({'begin': '25:00', 'end': '02:00'})
    with pytest.raises(ScheduleError, match=r"schedule.minute '61' is out of range 0-59"):
        RunWindow.from_spec({'minute': '61', 'begin': '22:00', 'end': '02:00'})


def test_a_window_without_a_slot_of_minute_and_hour_is_still_a_window() -> None:
    # minute defaults to 0: 09:01-09:31 holds none of its slots, yet it is a run window of half an hour
    w = window({'begin': '09:01', 'end': '09:31'})
    assert w.contains(at('2026-12-04T09:15')) and not w.contains(at('2026-12-04T09:32'))
    assert w.next_start(at('2026-12-04T09:32')) == at('2026-12-05T09:01')
    assert w.to_oncalendar() == ['*-*-* 09:01:00 UTC']


# ------------------------------------------------------------------------------------------------------------- plan


SNAP = {'name': 'hourly', 'dataset': 'tank/data', 'schedule': 'hourly', 'lifetime_value': 2, 'lifetime_unit': 'week'}
REPL = {'name': 'offsite', 'source_datasets': ['tank/data'], 'target_dataset': 'backup/data', 'transport': 'local',
        'periodic_snapshot_tasks': ['hourly']}


def test_the_plan_gives_a_restricted_replication_a_timer_at_window_starts() -> None:
    entries = {e['id']: e for e in scheduler_tasks([SNAP], replication_tasks=[{**REPL, 'restrict_schedule': NIGHT, 'timezone': 'UTC'}])}
    repl = entries['repl-offsite']
    assert repl['timer'] == 'zfs-replication-repl-offsite.timer' and repl['oncalendar'] == ['*-*-* 22:00:00 UTC']
    assert 'zfs-replication-repl-offsite.service' in entries['snap-hourly']['wants']  # still runs after each snapshot run
    own = scheduler_tasks([SNAP], replication_tasks=[{**REPL, 'schedule': {'minute': '30', 'hour': '12'}, 'restrict_schedule': OFFICE}])
    assert own[1]['oncalendar'] == ['*-*-* 12:30:00', 'Mon..Fri *-*-* 08:00:00']
    plain = scheduler_tasks([SNAP], replication_tasks=[{**REPL, 'restrict_schedule': 'hourly'}])
    assert plain[1]['timer'] is None  # a window that never closes needs no timer


def test_the_plan_refuses_a_bad_window() -> None:
    from ansible.errors import AnsibleFilterError

    with pytest.raises(AnsibleFilterError, match=r"replication task 'offsite': restrict_schedule: schedule.dow 'fryday'"):
        scheduler_tasks([SNAP], replication_tasks=[{**REPL, 'restrict_schedule': {'dow': 'fryday'}}])


# ------------------------------------------------------------------------------------------------------------- runner


class Engine:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, params: dict, check_mode: bool, log: Any) -> Any:
        self.calls += 1
        return None


def restricted(spec: Any = None) -> TaskConfig:
    return TaskConfig.from_dict({'kind': 'replication', 'name': 'offsite', 'timezone': 'UTC',
                                 'params': {'source_datasets': ['tank/a'], 'restrict_schedule': spec or NIGHT}}, 'test.json')


def test_runner_outside_the_window_waits_and_says_until_when(tmp_path: Path) -> None:
    opts = RunOptions(state_dir=str(tmp_path / 'state'), log_dir=str(tmp_path / 'log'), metrics_dir=str(tmp_path / 'metrics'))
    engine, out = Engine(), io.StringIO()
    assert run_task(restricted(), opts, stream=out, engines={'replication': engine}, clock=lambda: at('2026-12-04T12:00')) == 0
    assert engine.calls == 0
    state = json.loads(Path(opts.state_dir, 'repl-offsite.json').read_text())
    why = 'outside restrict_schedule window 22:00-06:00 (UTC); next window starts at 2026-12-04T22:00+00:00'
    assert (state['result'], state['reason'], state['next_window'], state['error']) == ('waiting', why, '2026-12-04T22:00:00+00:00', None)
    assert out.getvalue().splitlines() == ['replication task offsite: start', f'replication task offsite: waiting: {why}']
    metrics = Path(opts.metrics_dir, 'zfs_replication_repl_offsite.prom').read_text()
    assert 'zfs_replication_next_window_timestamp_seconds{task="offsite",kind="replication"} 1796421600' in metrics
    assert 'zfs_replication_last_run_result{task="offsite",kind="replication",result="waiting"} 1' in metrics

    # Inside the window it runs; a Run Now (--ignore-window, the module) runs whenever it is asked.
    assert run_task(restricted(), opts, engines={'replication': engine}, clock=lambda: at('2026-12-04T23:00')) == 0
    assert engine.calls == 1 and json.loads(Path(opts.state_dir, 'repl-offsite.json').read_text())['result'] == 'ok'
    opts.ignore_window = True
    assert run_task(restricted(), opts, engines={'replication': engine}, clock=lambda: at('2026-12-04T12:00')) == 0
    assert engine.calls == 2
    assert 'zfs_replication_next_window' not in render_metrics({'task': 'x', 'kind': 'replication', 'result': 'ok',
                                                                'next_window': '2026-12-04T22:00:00+00:00'}, at('2026-12-04T12:00'))


def test_runner_with_a_bad_window_fails_naming_the_field(tmp_path: Path) -> None:
    opts = RunOptions(state_dir=str(tmp_path / 'state'), log_dir=str(tmp_path / 'log'))
    engine = Engine()
    assert run_task(restricted({'begin': '7pm'}), opts, engines={'replication': engine}, clock=lambda: at('2026-12-04T12:00')) == 1
    state = json.loads(Path(opts.state_dir, 'repl-offsite.json').read_text())
    assert engine.calls == 0 and state['error'].startswith("restrict_schedule: schedule.begin '7pm' is not a time of day")
