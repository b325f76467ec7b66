# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""bench.py --merge: a full result set built up over several runs keeps each case's own run, and is refused when
the engine, the backend or the sizes differ; the report says which run measured which case."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / 'bench'


def load(name: str):
    spec = importlib.util.spec_from_file_location(f'zr_bench_{name}', BENCH / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = load('bench')
report = load('report')

ARGS = {'datasets': 200, 'snapshots': 20, 'latency_ms': 25, 'data_mb': 500, 'planner': '10000x100',
        'growth': '50,100,200,400', 'peers': 'syncoid,pyznap,zfs-autobackup', 'reps': 3, 'peer_reps': 3, 'catchup_reps': 3}


def run(date, cases, engine='abc1234', backend='openzfs', **args):
    machine = {'date': date, 'git': f'git-{date[:10]}', 'engine': engine, 'backend': backend, 'load_at_start': 0.5}
    res = {'machine': machine, 'args': {**ARGS, **args}, 'failed': {}, 'case_seconds': {c: 10.0 for c in cases},
           'runtime_s': 100.0, 'case_runs': {c: {f: machine[f] for f in ('date', 'git', 'load_at_start')} for c in cases}}
    res.update({c: {'measured': date} for c in cases})
    return res


def test_the_cases_of_this_run_replace_the_earlier_ones_and_the_others_stay():
    first = run('2026-12-05 01:00 UTC', ['noop', 'wan', 'catchup'])
    second = run('2026-12-06 01:00 UTC', ['catchup', 'growth'], peers='pyznap')
    out = bench.merged(first, second, {'catchup', 'growth'})
    assert out['noop'] == {'measured': '2026-12-05 01:00 UTC'} and out['wan'] == {'measured': '2026-12-05 01:00 UTC'}
    assert out['catchup'] == {'measured': '2026-12-06 01:00 UTC'} and out['growth'] == {'measured': '2026-12-06 01:00 UTC'}
    assert {c: r['date'][:10] for c, r in out['case_runs'].items()} == {
        'noop': '2026-12-05', 'wan': '2026-12-05', 'catchup': '2026-12-06', 'growth': '2026-12-06'}
    assert out['machine']['date'] == '2026-12-06 01:00 UTC'
    assert out['args']['peers'] == 'syncoid,pyznap,zfs-autobackup'
    assert out['runtime_s'] == 200.0 and set(out['case_seconds']) == {'noop', 'wan', 'catchup', 'growth'}


def test_a_case_that_failed_before_and_ran_again_is_no_longer_failed():
    first = run('2026-12-05 01:00 UTC', ['noop'])
    first['failed'] = {'catchup': 'RuntimeError: x'}
    out = bench.merged(first, run('2026-12-06 01:00 UTC', ['catchup']), {'catchup'})
    assert out['failed'] == {} and 'catchup' in out and 'noop' in out


@pytest.mark.parametrize('change, named', [
    ({'engine': 'fff0000'}, 'engine commit'),
    ({'backend': 'zfs-fuse'}, 'backend'),
    ({'datasets': 50}, '--datasets'),
    ({'data_mb': 100}, '--data-mb'),
])
def test_results_of_another_engine_backend_or_size_are_refused_naming_what_differs(change, named):
    first = run('2026-12-05 01:00 UTC', ['noop'])
    machine = {k: change[k] for k in ('engine', 'backend') if k in change}
    args = {k: v for k, v in change.items() if k not in machine}
    with pytest.raises(SystemExit, match=named):
        bench.merged(first, run('2026-12-06 01:00 UTC', ['catchup'], **machine, **args), {'catchup'})


def test_runs_with_uncommitted_engine_changes_merge_with_no_other():
    first = run('2026-12-05 01:00 UTC', ['noop'], engine='abc1234+dirty')
    with pytest.raises(SystemExit, match='uncommitted changes in plugins/'):
        bench.merged(first, run('2026-12-06 01:00 UTC', ['catchup'], engine='abc1234+dirty'), {'catchup'})
    with pytest.raises(SystemExit, match='engine commit'):
        bench.merged(first, run('2026-12-06 01:00 UTC', ['catchup']), {'catchup'})


def test_the_report_names_the_run_of_each_case_only_when_there_were_several():
    one = run('2026-12-05 01:00 UTC', ['noop'])
    assert report._runs_note(one) == []
    both = bench.merged(one, run('2026-12-06 01:00 UTC', ['catchup']), {'catchup'})
    note = ' '.join(report._runs_note(both))
    assert 'Measured in 2 runs at the same engine commit abc1234' in note
    assert 'noop: 2026-12-05 01:00 UTC, commit git-2026-12-05' in note and 'catchup: 2026-12-06 01:00 UTC' in note


def test_why_a_case_stopped_short_goes_with_that_case():
    first = run('2026-12-05 01:00 UTC', ['noop', 'catchup'])
    first['stopped'] = {'catchup': 'stopped after round 1 of 3: time'}
    second = run('2026-12-06 01:00 UTC', ['catchup'])
    second['stopped'] = {'catchup': 'stopped after round 2 of 3: time', 'growth': 'not started: time'}
    out = bench.merged(first, second, {'catchup'})
    assert out['stopped'] == {'catchup': 'stopped after round 2 of 3: time'}
    assert bench.merged(first, run('2026-12-06 01:00 UTC', ['wan']), {'wan'})['stopped'] == {
        'catchup': 'stopped after round 1 of 3: time'}


def catchup_rows(ours, pyznap, syncoid=None, serial=None):
    rows = {'ours': {'time': sorted(ours)[len(ours) // 2], 'times': ours, 'calls': {'src': 204, 'dst': 205}, 'datasets': 200},
            'pyznap': {'time': sorted(pyznap)[len(pyznap) // 2], 'times': pyznap, 'calls': {'src': 601, 'dst': 801},
                       'datasets': 200}}
    if serial:
        rows['ours-serial'] = {'time': serial, 'times': [serial], 'calls': {'src': 204, 'dst': 205}, 'datasets': 200}
    if syncoid:
        rows['syncoid'] = {'time': syncoid[0], 'times': syncoid, 'calls': {'src': 402, 'dst': 801}, 'datasets': 200}
    return rows


def test_added_rounds_follow_the_earlier_ones_and_the_medians_are_over_all_of_them():
    earlier = catchup_rows([330.0, 380.0], [570.0, 600.0], syncoid=[870.0, 880.0], serial=577.0)
    now = catchup_rows([300.0], [640.0])
    first = {'date': '2026-12-07 15:20 UTC', 'git': 'aaa', 'load_at_start': 1.1, 'rounds': 2}
    rows, sittings = bench.added_rounds(earlier, [first], now, {'date': '2026-12-08 09:00 UTC', 'git': 'bbb', 'load_at_start': 1.0})
    assert rows['ours']['times'] == [330.0, 380.0, 300.0] and rows['ours']['time'] == 330.0
    assert rows['pyznap']['times'] == [570.0, 600.0, 640.0] and rows['pyznap']['time'] == 600.0
    # the tools this run left out keep their rounds, and their medians
    assert rows['syncoid']['times'] == [870.0, 880.0] and rows['syncoid']['time'] == 875.0
    assert rows['ours-serial']['times'] == [577.0] and rows['ours']['datasets'] == 200
    assert [s['rounds'] for s in sittings] == [2, 1] and sittings[1]['date'] == '2026-12-08 09:00 UTC'


def test_a_run_adding_rounds_runs_ours_the_floor_and_the_peers_that_ran_again():
    earlier = catchup_rows([330.0], [600.0], syncoid=[874.0], serial=577.0)
    earlier['zfs-autobackup'] = {'time': 1325.0, 'times': [1325.0], 'calls': {}}
    earlier['stream-floor'] = {'time': 480.0, 'times': [480.0], 'calls': {}}
    assert bench.add_round_tools(earlier, ['syncoid', 'pyznap', 'zfs-autobackup']) == ['ours', 'pyznap', 'syncoid', 'stream-floor']
    assert bench.add_round_tools(earlier, ['pyznap']) == ['ours', 'pyznap', 'stream-floor']


@pytest.mark.parametrize('merge, cases, previous, datasets, named', [
    (False, {'catchup'}, None, 200, '--merge'),
    (True, {'noop'}, None, 200, 'catchup case'),
    (True, {'catchup'}, {'noop': {}}, 200, 'no catch-up'),
    (True, {'catchup'}, {'catchup': catchup_rows([1.0], [2.0])}, 40, '200 datasets, this run\'s 40'),
])
def test_adding_rounds_is_refused_naming_why(merge, cases, previous, datasets, named):
    assert named in bench.add_rounds_refusal(merge, cases, previous, datasets, Path('r/results.json'))
    assert bench.add_rounds_refusal(True, {'catchup'}, {'catchup': catchup_rows([1.0], [2.0])}, 200, Path('x')) == ''


def test_the_catch_up_s_runs_stay_through_a_merge_that_does_not_measure_it():
    first = run('2026-12-05 01:00 UTC', ['catchup'])
    first['catchup_sittings'] = [{'date': 'a', 'rounds': 2}, {'date': 'b', 'rounds': 1}]
    assert bench.merged(first, run('2026-12-06 01:00 UTC', ['noop']), {'noop'})['catchup_sittings'] == first['catchup_sittings']
    assert 'catchup_sittings' not in bench.merged(first, run('2026-12-06 01:00 UTC', ['catchup']), {'catchup'})


def test_the_report_names_the_runs_of_the_rounds_and_each_round_s_ratio(tmp_path):
    res = run('2026-12-08 09:00 UTC', [])
    res['machine'].update({'cpu': 'QEMU', 'cores': 2, 'memory_gib': 2, 'kernel': '6.1', 'zfs': 'zfs-2.3.2', 'syncoid': '2.1.0'})
    res['catchup'] = catchup_rows([330.0, 380.0, 300.0], [570.0, 600.0, 640.0], syncoid=[870.0, 880.0], serial=577.0)
    res['catchup_sittings'] = [{'date': '2026-12-07 15:20 UTC', 'git': 'aaa', 'load_at_start': 1.1, 'rounds': 2},
                               {'date': '2026-12-08 09:00 UTC', 'git': 'bbb', 'load_at_start': 1.0, 'rounds': 1}]
    report.write(res, tmp_path)
    md = (tmp_path / 'results.md').read_text()
    assert 'The rounds come from 2 runs at the same engine commit' in md
    assert '2026-12-07 15:20 UTC (commit aaa, load 1.1): 2 round(s); 2026-12-08 09:00 UTC (commit bbb, load 1.0): 1 round(s)' in md
    assert 'Ours / pyznap in each round: 0.58, 0.63, 0.47.' in md
    assert 'Measured in the first round only: zfs.replication (parallel_transfers: 1).' in md
    assert 'Measured in fewer rounds than ours: syncoid (2 of 3).' in md
