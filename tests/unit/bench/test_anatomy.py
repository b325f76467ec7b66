# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The bench's catch-up anatomy: its steps add our pipeline's parts one at a time (only what the backend has), the
per-dataset pipelines it runs really send every dataset into its own target and fail when one fails, and the report
says whether the one-stream row is a floor."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / 'bench'


def load(name, file):
    spec = importlib.util.spec_from_file_location(name, BENCH / file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = load('zr_bench_anatomy', 'bench.py')
report = load('zr_bench_anatomy_report', 'report.py')


def test_openzfs_steps_add_our_flags_one_at_a_time_up_to_our_pipeline():
    steps = {k: (width, send, recv, pv) for k, _adds, width, send, recv, pv in bench.anatomy_steps(True)}
    assert list(steps) == ['stream', 'plain1', 'plain4', 'plain8', 'resumable', 'flags', 'props', 'safe', 'pv', 'lean', 'ours']
    assert steps['plain4'] == (4, [], [], False)
    assert steps['resumable'][2] == ['-s']
    assert steps['props'][1] == ['-L', '-e', '-c', '-p']
    # pv: every part our pipeline can have (a first full, or a target that does not hold the values); lean: what our
    # run logs for a filesystem whose target holds the safe values as its own
    assert steps['pv'] == (4, ['-L', '-e', '-c', '-p'],
                           ['-s', '-x', 'mountpoint', '-o', 'canmount=noauto', '-o', 'devices=off', '-o', 'setuid=off'], True)
    assert steps['lean'] == (8, ['-L', '-e', '-c', '-p'], ['-s', '-x', 'mountpoint'], True)


def test_zfs_fuse_steps_leave_out_what_it_lacks():
    steps = {k: (send, recv, pv) for k, _adds, _w, send, recv, pv in bench.anatomy_steps(False)}
    assert list(steps) == ['stream', 'plain1', 'plain4', 'plain8', 'pv', 'ours']
    assert steps['pv'] == ([], [], True)


def fake_tools(tmp_path, fail_on=''):
    """A zfs that logs its argv (and fails a recv into FAIL_ON), a pv that copies: on PATH first."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    log = tmp_path / 'calls'
    (bin_dir / 'zfs').write_text(f'#!/bin/sh\necho "$*" >> {log}\n'
                                 f'if [ "$1" = recv ]; then cat >/dev/null; for a; do [ "$a" = "{fail_on}" ] && exit 1; done; '
                                 'else echo stream; fi\nexit 0\n')
    (bin_dir / 'pv').write_text('#!/bin/sh\ncat\n')
    for f in ('zfs', 'pv'):
        (bin_dir / f).chmod(0o755)
    return {'PATH': f'{bin_dir}:/usr/bin:/bin'}, log


def test_pipelines_send_every_dataset_into_its_own_target(tmp_path):
    env, log = fake_tools(tmp_path)
    children = [f'p/t/d{i:03d}' for i in range(1, 6)]
    argv = bench.anatomy_pipelines('p/t', 'q/ours/t', children, 'zb-1', 'zb-2', 4, ['-L'], ['-s'], True)
    assert subprocess.run(argv, env=env, check=False).returncode == 0
    calls = log.read_text().splitlines()
    # the parent's pipeline first (its send and recv start together: either may log first), then the children's
    assert sorted(calls[:2]) == ['recv -u -s q/ours/t', 'send -L -I @zb-1 p/t@zb-2']
    assert sorted(calls[2:]) == sorted([f'send -L -I @zb-1 {c}@zb-2' for c in children]
                                       + [f'recv -u -s q/ours/t/{c[4:]}' for c in children])


def test_pipelines_fail_when_one_receive_fails(tmp_path):
    env, log = fake_tools(tmp_path, fail_on='q/ours/t/d002')
    argv = bench.anatomy_pipelines('p/t', 'q/ours/t', ['p/t/d001', 'p/t/d002', 'p/t/d003'], 'a', 'b', 2, [], [], False)
    assert subprocess.run(argv, env=env, check=False).returncode != 0
    assert 'recv -u q/ours/t/d002' in log.read_text().splitlines()


def anatomy(times):
    steps = [{'key': k, 'adds': f'adds {k}'} for k in times]
    runs = {k: [{'time': t, 'calls': {'src': 41, 'dst': 41}, 'busy': 0.87, 'txgs': 300}] for k, t in times.items()}
    return {'datasets': 40, 'steps': steps, 'runs': runs, 'time': dict(times),
            'ours_pipeline': 'zfs send -p -L -e -c -I a@1 a@2 | pv -n -b -f -i 5 | zfs recv -u -s b'}


def test_report_says_the_one_stream_row_is_no_floor_and_what_each_step_adds(tmp_path):
    times = {'stream': 103.4, 'plain1': 90.6, 'plain4': 43.6, 'plain8': 41.9, 'resumable': 50.0, 'flags': 56.4,
             'props': 72.0, 'safe': 73.0, 'pv': 75.0, 'ours': 100.0}
    md = '\n'.join(report._anatomy(anatomy(times)))
    assert '| plain4 | adds plain4 | 43.60 | 43.6 | 1.00x | 87% | 300 | 41 / 41 |' in md
    assert '| stream | adds stream | 103.40 | 103.4 | 2.37x |' in md
    assert 'Plain per-dataset pipelines 4 at once took 0.42x the one-stream time: the one-stream row is not a floor' in md
    assert 'resumable +6.4 s, flags +6.4 s, props +15.6 s, safe +1.0 s, pv +2.0 s' in md
    assert 'Our run took +25.0 s over its own pipelines run bare (pv row, 1.33x)' in md
    times['lean'] = 50.0
    md = '\n'.join(report._anatomy(anatomy(times)))
    assert 'Our pipeline as our run sends it here (lean row: no recv -o, 8 at once) took 1.19x the plain one 8 at once' in md
    assert 'Our run took +50.0 s over its own pipelines run bare (lean row, 2.00x)' in md
    assert '`zfs send -p -L -e -c -I a@1 a@2 | pv -n -b -f -i 5 | zfs recv -u -s b`' in md


def test_report_where_one_stream_is_as_fast(tmp_path):
    md = '\n'.join(report._anatomy(anatomy({'stream': 10.0, 'plain1': 12.0, 'plain4': 9.5, 'plain8': 9.6, 'pv': 9.8,
                                            'ours': 11.0})))
    assert 'here the one stream is about as fast as receiving datasets at once' in md
    assert 'pv +0.3 s' in md


def test_the_catch_up_floor_is_no_floor_when_the_anatomy_found_pipelines_faster():
    an = anatomy({'stream': 100.0, 'plain1': 90.0, 'plain4': 42.0, 'plain8': 41.0, 'pv': 70.0, 'ours': 95.0})
    said = report._against_floor(1.06, 'pyznap', 1.36, an)
    assert 'The one stream is not a floor' in said and '0.42x the one-stream time' in said
    assert 'backend' not in said
    # without an anatomy (or where one stream is as fast) the reading is the one-stream one
    assert 'the backend\'s receives, not the tools, set the time' in report._against_floor(1.06, 'pyznap', 1.36)
