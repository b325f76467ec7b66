# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The bench report: in the catch-up table the stream floor (one zfs send -R -I of the tree, no tool) is a row of its
own, and the target line says where ours and the fastest peer stand against it; under the no-op table, each tool's
zfs calls by subcommand and where our run's time goes, when the run recorded them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / 'bench'
spec = importlib.util.spec_from_file_location('zr_bench_report', BENCH / 'report.py')
report = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = report
spec.loader.exec_module(report)

MACHINE = {'date': '2026-12-05 16:00 UTC', 'git': 'abc1234', 'engine': 'abc1234', 'cpu': 'AMD EPYC', 'cores': 2,
           'memory_gib': 23, 'kernel': '6.18', 'zfs_fuse_arc_max_mb': 100, 'load_at_start': 0.4, 'syncoid': '2.1.0'}
ARGS = {'datasets': 200, 'snapshots': 20, 'reps': 3, 'peer_reps': 3, 'catchup_reps': 3}


def row(t, src=204, dst=204):
    return {'time': t, 'times': [t, t + 1, t - 1], 'calls': {'src': src, 'dst': dst}}


def test_the_catch_up_floor_is_reported_with_both_ratios(tmp_path):
    res = {'machine': MACHINE, 'args': ARGS, 'catchup': {
        'ours': row(41.3), 'ours-serial': row(55.0), 'syncoid': row(80.0, 802, 1001), 'pyznap': row(49.3, 801, 801),
        'zfs-autobackup': row(290.0, 1602, 3002), 'stream-floor': row(41.5, 1, 1)}}
    report.write(res, tmp_path)
    md = (tmp_path / 'results.md').read_text()
    floor_row = next(line for line in md.splitlines() if line.startswith('| floor: one `zfs send -R -I`'))
    assert '| 41.50 |' in floor_row and '| 1.00x |' in floor_row and '| 1 / 1 |' in floor_row
    target = next(line for line in md.splitlines() if 'catch-up: 1.5x ahead' in line)
    assert 'NOT MET' in target
    assert "ours 0.84x pyznap's time" in target
    assert "the floor (one stream, no tool) is 0.84x pyznap's time and ours 1.00x the floor" in target
    assert "a tool 1.5x ahead of a peer would need that peer at 1.5x this floor or more (pyznap is at 1.19x)" in md


def test_without_a_floor_measured_the_table_has_no_floor_row(tmp_path):
    res = {'machine': MACHINE, 'args': ARGS, 'catchup': {'ours': row(30.0), 'pyznap': row(50.0, 801, 801)}}
    report.write(res, tmp_path)
    md = (tmp_path / 'results.md').read_text()
    target = next(line for line in md.splitlines() if 'catch-up: 1.5x ahead' in line)
    assert 'floor: one' not in md and '| MET |' in target and "ours 0.60x pyznap's time; pyznap 1.67x" in target


def test_tools_measured_once_are_named_under_the_table(tmp_path):
    res = {'machine': MACHINE, 'args': ARGS, 'catchup': {
        'ours': row(41.3), 'ours-serial': {**row(55.0), 'times': [55.0]}, 'pyznap': row(49.3, 801, 801),
        'zfs-autobackup': {**row(290.0, 1602, 3002), 'times': [290.0]}, 'stream-floor': row(41.5, 2, 1)}}
    report.write(res, tmp_path)
    md = (tmp_path / 'results.md').read_text()
    assert 'Measured in the first round only: zfs.replication (parallel_transfers: 1), zfs-autobackup.' in md


def noop(profile=None):
    by = {'ours': {'src': {'version': 1, 'get': 1}, 'dst': {'get': 1}},
          'pyznap': {'src': {'list': 201}, 'dst': {'get': 401, 'list': 200}}}
    via = {'floor': row(4.0, 1, 1), 'ours': {**row(4.2, 2, 1), 'calls_by_command': by['ours']},
           'pyznap': {**row(13.0, 201, 601), 'calls_by_command': by['pyznap']}}
    return {'local': via, 'ssh': via, **({'profile': profile} if profile else {})}


def test_the_no_op_shows_calls_by_subcommand_and_where_our_time_goes(tmp_path, monkeypatch):
    monkeypatch.setattr(report, '_plot_noop', lambda *_a: None)  # the plot needs matplotlib (the bench's venv)
    prof = {'python_start': 0.5, 'engine_import': 1.25, 'profiled_run': 6.0,
            'by_own_time': [['~:0(<method \'poll\' of \'select.poll\' objects>)', 2.5, 2.5], ['_zfs.py:10(parse)', 0.75, 1.0]],
            'by_cumulative_time': []}
    res = {'machine': MACHINE, 'args': {**ARGS, 'snapshots': 5}, 'noop': noop(prof)}
    report.write(res, tmp_path)
    md = (tmp_path / 'results.md').read_text().splitlines()
    assert '| local | pyznap | list 201 | get 401, list 200 |' in md
    assert '| ssh | ours | version 1, get 1 | get 1 |' in md
    line = next(x for x in md if x.startswith("Where our local no-op's 4.20 s go"))
    assert '(`python3 -c pass`) takes 0.50 s, with the engine\'s import 1.25 s' in line and 'took 6.00 s' in line
    assert '| `_zfs.py:10(parse)` | 0.750 | 1.000 |' in md
    assert any(x.startswith('## 1. No-op run, 200 datasets x 5 snapshots (FEWER SNAPSHOTS') for x in md)


def test_a_no_op_recorded_before_the_breakdown_renders_without_it(tmp_path, monkeypatch):
    monkeypatch.setattr(report, '_plot_noop', lambda *_a: None)
    res = {'machine': MACHINE, 'args': ARGS, 'noop': noop()}
    for via in ('local', 'ssh'):
        res['noop'][via] = {tool: {k: v for k, v in r.items() if k != 'calls_by_command'} for tool, r in res['noop'][via].items()}
    report.write(res, tmp_path)
    md = (tmp_path / 'results.md').read_text()
    assert 'Calls by zfs subcommand' not in md and "Where our local no-op" not in md and 'FEWER SNAPSHOTS' not in md
    assert '| local | zfs.replication (zfs-replication-run) | 4.20 | 1.05 | 1.0x | 2 / 1 |' in md


def test_a_catch_up_stopped_by_the_time_limit_says_how_many_rounds_it_has(tmp_path):
    two = {'time': 40.0, 'times': [39.0, 41.0], 'calls': {'src': 204, 'dst': 204}}
    res = {'machine': MACHINE, 'args': ARGS, 'catchup': {'ours': two, 'pyznap': {**two, 'time': 70.0}},
           'stopped': {'catchup': 'stopped after round 2 of 3: the next round would end past --time-limit'}}
    report.write(res, tmp_path)
    md = (tmp_path / 'results.md').read_text()
    assert '(local, median of 2 round(s))' in md
    assert '- case catchup stopped after round 2 of 3: the next round would end past --time-limit' in md


def test_a_catch_up_on_a_smaller_tree_of_its_own_is_marked_scaled_down(tmp_path):
    res = {'machine': MACHINE, 'args': ARGS, 'catchup': {
        'ours': {**row(30.0), 'datasets': 100}, 'pyznap': {**row(50.0, 401, 401), 'datasets': 100}}}
    report.write(res, tmp_path)
    md = (tmp_path / 'results.md').read_text()
    assert '## 3. Incremental catch-up: 5 new snapshots on 100 datasets (local, median of 3 round(s)) (SCALED DOWN from 200 datasets)' in md
    res['catchup'] = {'ours': row(30.0), 'pyznap': row(50.0, 801, 801)}  # recorded before the rows carried their size
    report.write(res, tmp_path)
    assert '5 new snapshots on 200 datasets (local, median of 3 round(s))\n' in (tmp_path / 'results.md').read_text()


def test_ours_well_over_the_catch_up_floor_is_not_put_on_the_backend(tmp_path):
    res = {'machine': MACHINE, 'args': ARGS, 'catchup': {
        'ours': row(66.0), 'pyznap': row(70.0, 801, 801), 'stream-floor': row(41.0, 1, 1)}}
    report.write(res, tmp_path)
    md = (tmp_path / 'results.md').read_text()
    assert "Ours took 1.61x as long: the time over the floor is our run's own work around the receives" in md
    assert 'set the time' not in md


def data_row(raw, stream):
    x = {'ours': stream + 0.3, 'raw': raw, 'stream': stream, 'ratio': raw / stream, 'ratio_run': raw / (stream + 0.3),
         'ours_mbps': 2000 / stream, 'raw_mbps': 2000 / raw, 'run_mbps': 2000 / (stream + 0.3), 'ratio_min': 0.9, 'ratio_max': 1.1}
    return {'full': x, 'incremental': x, 'rss_mb': 38, 'compression': 'none', 'progress_interval': 1, 'progress_lines_full': 4}


def test_the_data_path_says_who_went_first_and_whether_the_pools_were_prefilled(tmp_path):
    args = {**ARGS, 'data_mb': 2000, 'data_reps': 5}
    now = {'random-local': data_row(4.6, 4.5), 'rss_small_mb': 38, 'order': 'alternating', 'prefilled': True}
    report.write({'machine': MACHINE, 'args': args, 'data': now}, tmp_path)
    md = (tmp_path / 'results.md').read_text()
    assert 'back to back in each, who goes first alternating;' in md and 'The pool images were written in full' in md
    assert '| random | local | none | full | 444.4 | 434.8 | 1.02 (0.90-1.10) |' in md
    # a set measured before either: the raw pipeline went first, on sparse images
    report.write({'machine': MACHINE, 'args': args, 'data': {'random-local': data_row(4.6, 5.4), 'rss_small_mb': 38}}, tmp_path)
    md = (tmp_path / 'results.md').read_text()
    assert 'back to back in each, the raw pipeline first;' in md and 'written in full' not in md
    target = next(line for line in md.splitlines() if line.startswith('| data path'))
    assert target.startswith('| data path: >= 0.95 of the raw pipeline | NOT MET | worst stream ratio 0.85')


def test_the_no_op_repetitions_are_counted_from_its_rows_not_this_runs_args(tmp_path, monkeypatch):
    # with --merge the no-op may come from an earlier run (3 of ours, 1 of each peer) than this one (--peer-reps 3)
    monkeypatch.setattr(report, '_plot_noop', lambda res, outdir: None)
    once = {'time': 16.0, 'times': [16.0], 'calls': {'src': 201, 'dst': 601}}
    side = {'ours': row(5.0, 2, 1), 'module': row(7.0, 2, 1), 'floor': row(7.1, 1, 1), 'pyznap': once,
            'syncoid': {**once, 'time': 17.0}, 'zfs-autobackup': {**once, 'time': 44.0}}
    res = {'machine': MACHINE, 'args': ARGS, 'noop': {'local': side, 'ssh': side}}
    report.write(res, tmp_path)
    md = (tmp_path / 'results.md').read_text()
    assert "Medians of 3 repetitions for zfs.replication and the floor, 1 for each peer's no-op;" in md


def test_a_set_merged_from_several_runs_gives_its_cases_times_not_the_sum_of_every_run(tmp_path):
    # runtime_s of a merged set sums every run merged into it, also one whose case a later run measured again
    runs = {'catchup': {'date': '2026-12-07 15:20 UTC', 'git': 'aaa1111', 'load_at_start': 1.1},
            'data': {'date': '2026-12-07 20:36 UTC', 'git': 'bbb2222', 'load_at_start': 1.2}}
    res = {'machine': MACHINE, 'args': ARGS, 'runtime_s': 15000.0, 'case_runs': runs,
           'case_seconds': {'setup': 0.0, 'catchup': 6900.0, 'data': 1740.0},
           'catchup': {'ours': row(30.0), 'pyznap': row(50.0, 801, 801)}}
    report.write(res, tmp_path)
    md = (tmp_path / 'results.md').read_text()
    assert 'Total runtime' not in md
    assert "Its cases took 144.0 min in 2 runs" in md and 'catchup 115.0, data 29.0 min.' in md
    one = {**res, 'case_runs': {'catchup': runs['catchup']}}
    report.write(one, tmp_path)
    assert 'Total runtime 250.0 min.' in (tmp_path / 'results.md').read_text()


def test_the_latency_case_says_what_the_link_added_to_each_tool(tmp_path, monkeypatch):
    # a 50x not met: the report shows where the peer's time over the link goes, not only the verdict
    monkeypatch.setattr(report, '_plot_noop', lambda res, outdir: None)
    ssh = {'ours': row(20.0, 2, 2), 'floor': row(31.0, 1, 1), 'pyznap': row(322.0, 201, 601)}
    wan = {'ours': row(21.0, 2, 2), 'floor': row(34.0, 1, 1), 'pyznap': row(402.0, 201, 601)}
    res = {'machine': MACHINE, 'args': {**ARGS, 'latency_ms': 25}, 'noop': {'local': ssh, 'ssh': ssh}, 'wan': wan}
    report.write(res, tmp_path)
    md = (tmp_path / 'results.md').read_text()
    assert "added to each tool's loopback ssh no-op: ours +1.0 s; pyznap +80.0 s (0.100 s per zfs call)." in md
    assert "Of pyznap's 402.0 s, 322.0 s are what it takes over loopback ssh" in md
    assert 'needs a run of 8.04 s, and ours over loopback ssh takes 20.00 s' in md
    del res['noop']
    report.write(res, tmp_path)
    assert 'added to each' not in (tmp_path / 'results.md').read_text()
