# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""bench.py's catch-up rounds after the first: ours, the floor and the peers that can still be the fastest."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / 'bench'
spec = importlib.util.spec_from_file_location('zr_bench_rounds', BENCH / 'bench.py')
bench = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = bench
spec.loader.exec_module(bench)


def test_peers_over_twice_the_fastest_and_ours_serial_run_once():
    first = {'ours': 391.0, 'ours-serial': 585.0, 'syncoid': 1300.0, 'pyznap': 610.0, 'zfs-autobackup': 1150.0,
             'stream-floor': 300.0}
    assert bench.rerun_after_first(first) == ['ours', 'pyznap', 'zfs-autobackup', 'stream-floor']


def test_every_peer_within_twice_runs_again_in_order():
    first = {'ours': 40.0, 'ours-serial': 55.0, 'syncoid': 97.0, 'pyznap': 49.0, 'zfs-autobackup': 98.0, 'stream-floor': 41.0}
    assert bench.rerun_after_first(first) == ['ours', 'syncoid', 'pyznap', 'zfs-autobackup', 'stream-floor']


def test_without_peers_ours_and_the_floor_run_again():
    assert bench.rerun_after_first({'ours': 40.0, 'ours-serial': 55.0, 'stream-floor': 41.0}) == ['ours', 'stream-floor']


def test_a_round_that_would_end_past_the_time_limit_is_not_started():
    runs = {'ours': [(485.0, {})], 'pyznap': [(750.0, {})], 'stream-floor': [(400.0, {})]}
    tools = ['ours', 'pyznap', 'stream-floor']
    assert bench.round_past_deadline(runs, tools, 1000.0, None) == ''
    assert bench.round_past_deadline(runs, tools, 1000.0, 1000.0 + 1635.0) == ''
    why = bench.round_past_deadline(runs, tools, 1000.0, 1000.0 + 1634.0)
    assert 'about 1635 s' in why and '(1634 s left)' in why


def test_the_estimate_is_each_tool_s_last_round():
    runs = {'ours': [(500.0, {}), (100.0, {})], 'stream-floor': [(50.0, {}), (60.0, {})]}
    assert bench.round_past_deadline(runs, ['ours', 'stream-floor'], 0.0, 159.0)
    assert not bench.round_past_deadline(runs, ['ours', 'stream-floor'], 0.0, 160.0)
