# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""bench/results/results.md and the PNG plots from results.json."""
from __future__ import annotations

PEERS = ('syncoid', 'pyznap', 'zfs-autobackup')


def _progress_note(data: dict) -> list[str]:
    """The data case's line on live progress: at what interval our runs read and logged it."""
    rows = [row for row in data.values() if isinstance(row, dict) and row.get('progress_interval')]
    if not rows:
        return []
    every, lines = rows[0]['progress_interval'], max(row.get('progress_lines_full', 0) for row in rows)
    return [f"Our task runs with progress_interval {every} s: while a stream runs, the engine reads pv's count and logs a "
            f"progress line every {every} s (our longest full stream logged {lines}), so these ratios include what live "
            "progress costs.", '']


def _noop_reps(res):
    """How many repetitions the no-op's medians are of, counted from its rows: with --merge the no-op may come from an
    earlier run than this one, whose --reps and --peer-reps it does not share."""
    a, noop = res['args'], (res.get('noop') or {}).get('local') or {}
    ours = len(noop.get('ours', {}).get('times') or []) or a['reps']
    peers = sorted({len(noop[p].get('times') or []) for p in PEERS if p in noop})
    peers = '/'.join(map(str, peers)) if peers else a.get('peer_reps', 1)
    return f"Medians of {ours} repetitions for zfs.replication and the floor, {peers} for each peer's no-op; "


def _merged_runs(res):
    """How many runs measured the set's cases (bench.py --merge): more than one by their dates, else 1."""
    runs = (res.get('case_runs') or {}).values()
    return len({r.get('date') for r in runs}) if len({(r.get('date'), r.get('git')) for r in runs}) > 1 else 1


def _runtime(res):
    """The runtime sentence: one run's wall time, or for a set built over several runs (bench.py --merge) the time of
    the cases it holds (runtime_s there sums every merged run, also those whose cases a later run replaced)."""
    n = _merged_runs(res)
    if n < 2:
        return f"Total runtime {res.get('runtime_s', 0) / 60:.1f} min."
    cases = {k: v for k, v in (res.get('case_seconds') or {}).items() if k in res['case_runs']}
    return (f"Its cases took {sum(cases.values()) / 60:.1f} min in {n} runs "
            "(each run also built its trees and, on OpenZFS, booted its guest): " +
            ', '.join(f"{k} {v / 60:.1f}" for k, v in cases.items()) + " min.")


def _runs_note(res):
    """When the cases were measured in more than one run (bench.py --merge), which run measured which."""
    n = _merged_runs(res)
    if n < 2:
        return []
    each = '; '.join(f"{case}: {r.get('date')}, commit {r.get('git')}, load {r.get('load_at_start') or 0:.1f}"
                     for case, r in res['case_runs'].items())
    return [f"Measured in {n} runs at the same engine commit "
            f"{res['machine'].get('engine')} (the last commit that changed plugins/), with the same sizes: {each}. "
            "Each table's ratios come from one run.", '']


def _plain_vs_stream(anatomy):
    """(plain pipelines 4 at once / one stream, whether the stream is then no floor: under 0.9x) from the anatomy's
    medians; None without both steps."""
    t = (anatomy or {}).get('time', {})
    if not (t.get('stream') and t.get('plain4')):
        return None
    x = t['plain4'] / t['stream']
    return x, x < 0.9


def _against_floor(ours, fastest, peer, anatomy=None):
    """What ours at OURS times the catch-up's one-stream floor says, the fastest peer (FASTEST) being at PEER times it.
    When the run's anatomy (3b) found plain per-dataset pipelines faster than one stream, the stream is no floor."""
    plain = _plain_vs_stream(anatomy)
    if plain and plain[1]:
        return (f"Ours took {ours:.2f}x as long. The one stream is not a floor for a tool that receives datasets at once: in "
                f"3b plain per-dataset pipelines 4 at once received such a catch-up in {plain[0]:.2f}x the "
                "one-stream time, and 3b shows what our pipeline's parts and our run add over them.")
    if ours < 0.9:
        return f"Ours, with its receives running at once, took {ours:.2f}x as long: receives running together share the backend's commits."
    if ours <= 1.15:
        return (f"Ours, with its receives running at once, took {ours:.2f}x as long: here the backend's receives, not the tools, "
                "set the time, and a tool 1.5x ahead of a peer would need that peer at 1.5x this floor or more "
                f"({fastest} is at {peer:.2f}x).")
    return (f"Ours took {ours:.2f}x as long: the time over the floor is our run's own work around the receives (its "
            "listings, processes, holds and verification).")


def _anatomy(an):
    """Section 3b: the catch-up's anatomy (bench.py case_anatomy), a table of its steps and what they say."""
    t, runs = an['time'], an['runs']
    base = t.get('plain4')
    L = [f"## 3b. Where a catch-up's time goes: 5 new snapshots on {an['datasets']} datasets, one step at a time", '',
         "Each row is a round of 5 new snapshots on every dataset of a tree of its own, received into one target: by one "
         "stream of the whole tree, by plain per-dataset pipelines, then with our pipeline's parts added one at a time, "
         "then by our run. After each round both sides keep only their newest snapshot, so every round receives and lists "
         f"the same. Median of {len(next(iter(runs.values())))} pass(es); CPU busy: the share of all CPUs' time busy during "
         "the round" + ("; target txgs: the transaction groups the target pool committed" if any(
             r.get('txgs') is not None for rr in runs.values() for r in rr) else '') + '.', '',
         '| step | what it adds | wall time (s) | each pass (s) | x plain 4 at once | CPU busy | target txgs | zfs calls |',
         '|---|---|---|---|---|---|---|---|']
    for step in an['steps']:
        k = step['key']
        rr = runs[k]
        txgs = '/'.join(str(r['txgs']) for r in rr) if rr and rr[0].get('txgs') is not None else '-'
        busy = '/'.join(f"{r['busy']:.0%}" for r in rr)
        rel = f"{t[k] / base:.2f}x" if base else '-'
        each = ', '.join(f"{r['time']:.1f}" for r in rr)
        L.append(f"| {k} | {step['adds']} | {t[k]:.2f} | {each} | {rel} | {busy} | {txgs} | {_calls(rr[-1]['calls'])} |")
    if an.get('ours_pipeline'):
        L += ['', f"Our run's pipeline for one of these datasets, from its log: `{an['ours_pipeline']}`."]
    L += ['', *_anatomy_reading(an), '']
    if an.get('ours_trace'):
        L += _trace(an['ours_trace'])
    return L


def _trace(tr):
    """Our run traced (bench.py trace_ours): its wall time in four parts, and the commands it waited for outside its
    pipelines."""
    L = [f"Our run once more, traced (logging_level debug, untimed; {tr['wall']:.2f} s): {tr['outside']:.2f} s outside its "
         f"log (interpreter start, import, exit), {tr['before']:.2f} s before its first pipeline, {tr['pipelines']:.2f} s "
         f"from the first pipeline's start to the last one's end ({tr['transfers']} transfers), {tr['after']:.2f} s after "
         "it. The commands it waited for outside the pipelines (start from its first log line, seconds):", '',
         '| start (s) | took (s) | exit | command |', '|---|---|---|---|']
    L += [f"| {start:.2f} | {took:.2f} | {rc} | `{command}` |" for start, took, rc, command in tr['calls']]
    return [*L, '']


def _anatomy_reading(an):
    """What the anatomy's medians say: is the one-stream row a floor, what our pipeline's parts and our run add."""
    t = an['time']
    out = []
    plain = _plain_vs_stream(an)
    if plain:
        out.append(f"Plain per-dataset pipelines 4 at once took {plain[0]:.2f}x the one-stream time"
                   + (": the one-stream row is not a floor for a tool that receives datasets at once; the plain pipelines "
                      "are." if plain[1] else ": here the one stream is about as fast as receiving datasets at once."))
    keys = [s['key'] for s in an['steps']]
    if 'plain4' in t and 'pv' in t:
        # plain4, then each part our pipeline adds (plain8 is a width, not a part)
        chain = [k for k in keys[keys.index('plain4'):keys.index('pv') + 1] if k != 'plain8']
        parts = [f"{k} {t[k] - t[prev]:+.1f} s" for prev, k in zip(chain, chain[1:])]
        out.append(f"Our pipeline 4 at once (pv row) took {t['pv'] / t['plain4']:.2f}x the plain one; each step's change over "
                   f"the one before (noisy where under a few seconds): {', '.join(parts)}.")
    if 'lean' in t and 'plain8' in t:
        out.append(f"Our pipeline as our run sends it here (lean row: no recv -o, 8 at once) took "
                   f"{t['lean'] / t['plain8']:.2f}x the plain one 8 at once.")
    bare = 'lean' if 'lean' in t else 'pv'
    if bare in t and 'ours' in t:
        out.append(f"Our run took {t['ours'] - t[bare]:+.1f} s over its own pipelines run bare ({bare} row, "
                   f"{t['ours'] / t[bare]:.2f}x): its listings, plan, hold moves, verification and its Python process.")
    return [' '.join(out)] if out else []


def _link_cost(wan, ssh, fastest, ms):
    """Where the time over the delaying proxy goes: what the link added to each tool's loopback ssh no-op of the same
    set (per zfs call for the peers), and what 50x ahead of the fastest peer would need. [] without the ssh no-op."""
    if not ssh or any(t not in ssh for t in ('ours', fastest)):
        return []

    def added(t):
        s = wan[t]['time'] - ssh[t]['time']
        calls = wan[t]['calls']['src'] + wan[t]['calls']['dst']
        return f"{t} {s:+.1f} s" + (f" ({s / calls:.3f} s per zfs call)" if t != 'ours' and calls else '')

    each = '; '.join(added(t) for t in ('ours', *PEERS) if t in wan and t in ssh)
    return [f"What the {ms:.0f} ms-each-way link added to each tool's loopback ssh no-op: {each}. Of {fastest}'s "
            f"{wan[fastest]['time']:.1f} s, {ssh[fastest]['time']:.1f} s are what it takes over loopback ssh, its calls' own work; 50x "
            f"ahead of it needs a run of {wan[fastest]['time'] / 50:.2f} s, and ours over loopback ssh takes "
            f"{ssh['ours']['time']:.2f} s (the listing: see the no-op's profile).", '']


def _calls(c):
    return f"{c['src']} / {c['dst']}"


def _ok(flag):
    return 'MET' if flag else 'NOT MET'


def write(res, outdir):
    m, a = res['machine'], res['args']
    openzfs = m.get('backend') == 'openzfs'
    if openzfs:
        backend = (f"{m.get('zfs', 'OpenZFS')} in a Debian 12 guest, {m.get('guest', 'qemu')}: every zfs call and every process "
                   "start is many times slower than on real hardware, so only the ratios between tools of this run count")
    else:
        backend = f"zfs-fuse with its ARC capped at {m['zfs_fuse_arc_max_mb']} MB (/etc/zfs/zfsrc max-arc-size)"
    L = [f"# Benchmark results, {'OpenZFS' if openzfs else 'zfs-fuse'} ({m['date']})", '',
         f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, kernel {m['kernel']}; {backend}; load average at start "
         f"{m['load_at_start']:.1f} (shared machine: compare ratios within this run, not absolute times across runs). "
         f"Commit {m['git']}; syncoid {m['syncoid']}, pyznap 1.6.0, zfs-autobackup 3.3. {_noop_reps(res)}"
         f"the catch-up's rounds as its table says. {_runtime(res)}", '']
    L += _runs_note(res)
    targets = []
    if 'noop' in res:
        scaled = f" (SCALED DOWN from 200 datasets with --datasets {a['datasets']})" if a['datasets'] < 200 else ''
        if a['snapshots'] < 20:
            scaled += (f" (FEWER SNAPSHOTS than the 20 of the full size, --snapshots {a['snapshots']}: our run and the "
                       "floor list every snapshot, the peers' calls are mostly per dataset, so fewer snapshots favour us)")
        L += [f"## 1. No-op run, {a['datasets']} datasets x {a['snapshots']} snapshots{scaled}", '',
              '| side | tool | wall time (s) | x floor | vs ours | zfs calls src / dst |', '|---|---|---|---|---|---|']
        for via in ('local', 'ssh'):
            r = res['noop'][via]
            fl, ours = r['floor']['time'], r['ours']['time']
            peers = [p for p in PEERS if p in r]
            for tool in ('floor', 'ours', 'module', *peers):
                if tool not in r:
                    continue
                t = r[tool]['time']
                label = {'ours': 'zfs.replication (zfs-replication-run)', 'module': 'zfs.replication (ansible-playbook)',
                         'floor': 'floor: one recursive listing per side'}.get(tool, tool)
                L.append(f"| {via} | {label} | {t:.2f} | {t / fl:.2f} | {t / ours:.1f}x | {_calls(r[tool]['calls'])} |")
            fastest = min(peers, key=lambda p: r[p]['time'])
            calls = max(r['ours']['calls'].values())
            targets += [
                (f'no-op {via}: zfs calls per side <= 4, constant', _ok(calls <= 4), f"{_calls(r['ours']['calls'])} at {a['datasets']} datasets"),
                (f'no-op {via}: within 1.5x of the floor', _ok(ours <= 1.5 * fl), f'{ours / fl:.2f}x ({ours:.2f} s vs {fl:.2f} s)'),
            ]
            if via == 'local':
                factor = 10 if openzfs else 5
                targets.append((f'no-op local: >= {factor}x faster than the fastest peer', _ok(r[fastest]['time'] / ours >= factor),
                                f"{r[fastest]['time'] / ours:.1f}x vs {fastest}"))
        L.append('')
        L += _calls_by_command(res['noop'])
        L += _profile(res['noop'].get('profile'), res['noop']['local']['ours']['time'])
    if 'wan' in res:
        r = res['wan']
        L += [f"## 2. No-op over a {a['latency_ms']:.0f} ms-each-way proxy", '',
              '| tool | wall time (s) | peer / ours | zfs calls src / dst |', '|---|---|---|---|']
        peers = [p for p in PEERS if p in r]
        for tool in ('floor', 'ours', *peers):
            L.append(f"| {tool} | {r[tool]['time']:.2f} | {r[tool]['time'] / r['ours']['time']:.1f}x | {_calls(r[tool]['calls'])} |")
        fastest = min(peers, key=lambda p: r[p]['time'])
        targets.append(('no-op over latency: >= 50x faster than the fastest peer', _ok(r[fastest]['time'] / r['ours']['time'] >= 50),
                        f"{r[fastest]['time'] / r['ours']['time']:.1f}x vs {fastest}"))
        L.append('')
        L += _link_cost(r, (res.get('noop') or {}).get('ssh'), fastest, a['latency_ms'])
    if 'catchup' in res:
        r = res['catchup']
        reps = len(r['ours'].get('times', ())) or a.get('catchup_reps', 1)  # fewer than asked when --time-limit stopped it
        n = r['ours'].get('datasets', a['datasets'])  # --catchup-datasets (a run from before it: the no-op's tree)
        scaled = ' (SCALED DOWN from 200 datasets)' if n < 200 else ''
        L += [f"## 3. Incremental catch-up: 5 new snapshots on {n} datasets (local, median of {reps} round(s)){scaled}", '',
              '| tool | wall time (s) | each round (s) | peer / ours | zfs calls |', '|---|---|---|---|---|']
        label = {'ours': 'zfs.replication (parallel_transfers unset: auto)', 'ours-serial': 'zfs.replication (parallel_transfers: 1)',
                 'stream-floor': 'floor: one `zfs send -R -I` of the tree, no tool'}
        peers = [p for p in PEERS if p in r]
        for tool in ('ours', 'ours-serial', *peers, 'stream-floor'):
            if tool in r:
                each = ', '.join(f'{t:.1f}' for t in r[tool].get('times', [r[tool]['time']]))
                rel = r[tool]['time'] / r['ours']['time']
                L.append(f"| {label.get(tool, tool)} | {r[tool]['time']:.2f} | {each} | {rel:.2f}x | {_calls(r[tool]['calls'])} |")
        rounds = {t: len(r[t].get('times', ())) for t in r}
        once = [label.get(t, t) for t in r if rounds[t] == 1 < rounds['ours']]
        fewer = [f"{label.get(t, t)} ({rounds[t]} of {rounds['ours']})" for t in r if 1 < rounds[t] < rounds['ours']]
        if once or fewer:
            L += ['', ' '.join(filter(None, (
                f"Measured in the first round only: {', '.join(once)}." if once else '',
                f"Measured in fewer rounds than ours: {', '.join(fewer)}." if fewer else '',
                "After the first round only ours, the floor and the peers within twice the fastest peer's first-round time run "
                "again: the target compares ours with the fastest peer, and a peer over twice its time cannot be the fastest"
                + ("; a run that adds rounds (--add-rounds) may leave slower peers out." if len(res.get('catchup_sittings') or ()) > 1
                   else "."))))]
        fastest = min(peers, key=lambda p: r[p]['time'])
        sittings = res.get('catchup_sittings') or []
        if len(sittings) > 1:
            each = '; '.join(f"{x.get('date')} (commit {x.get('git')}, load {x.get('load_at_start') or 0:.1f}): "
                             f"{x.get('rounds')} round(s)" for x in sittings)
            L += ['', f"The rounds come from {len(sittings)} runs at the same engine commit, each adding rounds to the earlier "
                  f"(--add-rounds): {each}. A round measures its tools one after the other in one run, so each round's ratios "
                  "are of one run; the medians are over every round."]
        per_round = [o / p for o, p in zip(r['ours'].get('times', ()), r[fastest].get('times', ()))]
        if len(per_round) > 1:
            L += ['', f"Ours / {fastest} in each round: {', '.join(f'{x:.2f}' for x in per_round)}."]
        ratio = r['ours']['time'] / r[fastest]['time']
        floor = ''
        if 'stream-floor' in r:
            f = r['stream-floor']['time']
            floor = f"; the floor (one stream, no tool) is {f / r[fastest]['time']:.2f}x {fastest}'s time and ours {r['ours']['time'] / f:.2f}x the floor"
            L += ['', "The floor row is what receiving these snapshots costs the backend with no tool around it: one `zfs send -R -I` "
                  "stream of the whole tree from the newest common snapshot, no listing, no hold, no verification, two processes "
                  "(it needs every dataset to carry the same snapshots, which this tree does). "
                  + _against_floor(r['ours']['time'] / f, fastest, r[fastest]['time'] / f, res.get('anatomy'))]
        targets.append(('catch-up: 1.5x ahead of every peer (ours <= 0.67x the fastest)', _ok(ratio <= 0.67),
                        f"ours {ratio:.2f}x {fastest}'s time; " + ', '.join(f"{p} {r[p]['time'] / r['ours']['time']:.2f}x" for p in peers) + floor))
        L.append('')
    if 'anatomy' in res:
        L += _anatomy(res['anatomy'])
    if 'data' in res:
        r = res['data']
        scaled_data = f" (SCALED DOWN from 500 MB with --data-mb {a['data_mb']})" if a['data_mb'] < 500 else ''
        if a.get('data_reps', a['reps']) < 5:
            scaled_data += f" (only {a.get('data_reps', a['reps'])} repetitions: too few to judge a few percent)"
        L += [f"## 4. Data path: {a['data_mb']} MB per stream" + scaled_data, '',
              ('' if openzfs else f"zfs-fuse ARC capped at {m['zfs_fuse_arc_max_mb']} MB. ")
              + "ssh cipher aes128-gcm for both; compressible data over ssh with zstd for both.", '',
              "Ours: the stream's own time from the run's log (the pipeline, started on the task's shared ssh connection), and "
              "the whole run (Python start, probe, both listings, plan, stream, verification listing). Raw: the shell "
              "pipeline's wall time (including its own ssh handshake).", '',
              *_progress_note(r),
              f"Medians of {a.get('data_reps', a['reps'])} repetitions, ours and the raw pipeline back to back in each"
              + (", who goes first alternating" if r.get('order') == 'alternating' else ", the raw pipeline first")
              + "; stream / raw is the ratio of the medians, with the lowest and highest ratio of a single repetition."
              + (" The pool images were written in full before the pools were made: a first write into a sparse image's "
                 "region costs several times a later one." if r.get('prefilled') else ''), '',
              '| data | via | compressor | phase | ours stream MB/s | raw MB/s | stream / raw (min-max) | whole run MB/s | whole run / raw |',
              '|---|---|---|---|---|---|---|---|---|']
        worst = worst_run = 9.0
        for key, row in r.items():
            if not isinstance(row, dict):
                continue
            kind, via = key.split('-')
            for phase in ('full', 'incremental'):
                x = row[phase]
                worst = min(worst, x['ratio'])
                spread = f" ({x['ratio_min']:.2f}-{x['ratio_max']:.2f})" if 'ratio_min' in x else ''
                L.append(f"| {kind} | {via} | {row['compression']} | {phase} | {x['ours_mbps']:.1f} | {x['raw_mbps']:.1f} | {x['ratio']:.2f}{spread} "
                         f"| {x['run_mbps']:.1f} | {x['ratio_run']:.2f} |")
                worst_run = min(worst_run, x['ratio_run'])
        rss = [row['rss_mb'] for row in r.values() if isinstance(row, dict) and row.get('rss_mb')]
        L += ['', f"Our process's peak RSS: {r.get('rss_small_mb') or 0:.0f} MB for a 1 MB stream, {max(rss) if rss else 0:.0f} MB for "
              f"{a['data_mb']} MB streams.", '']
        targets.append(('data path: >= 0.95 of the raw pipeline', _ok(worst >= 0.95),
                        f'worst stream ratio {worst:.2f} (whole run incl. listings: worst {worst_run:.2f})'))
        if rss and r.get('rss_small_mb'):
            targets.append(('peak memory flat in data size', _ok(max(rss) <= r['rss_small_mb'] * 1.2 + 5),
                            f"{r['rss_small_mb']:.0f} MB (1 MB) vs {max(rss):.0f} MB ({a['data_mb']} MB)"))
    if 'planner' in res:
        pl = res['planner']
        L += [f"## 5. Planner scale: synthetic listings {a['planner']} (datasets x snapshots) per side", '',
              "Both listings are parsed as `list_tree` parses a zfs pipe (streamed line by line, `cat` in zfs's place), then "
              "planned by `_planner.plan`; each format in a fresh process, whose peak RSS is reported.", '',
              '| listing format | parse both sides (s) | plan, in sync (s) | plan, 1 new snapshot per dataset (s) | peak RSS (MB) |',
              '|---|---|---|---|---|']
        names = {'list': 'OpenZFS `zfs list -Hp` (1 line per object)', 'get': 'legacy `zfs get -Hp` (1 line per property)'}
        for fmt, p in pl.items():
            L.append(f"| {names.get(fmt, fmt)} | {p['parse']:.2f} | {p['plan_noop']:.2f} | {p['plan_incremental']:.2f} | {p['rss_mb']:.0f} |")
        L.append('')
        p = pl['list']
        plan_s = max(p['plan_noop'], p['plan_incremental'])
        targets.append(('planner: < 2 s', _ok(plan_s < 2), f"plan {plan_s:.2f} s (+ parsing both listings {p['parse']:.2f} s), OpenZFS format"))
        rss = max(x['rss_mb'] for x in pl.values())
        targets.append(('planner: < 500 MB', _ok(rss < 500), f"{rss:.0f} MB peak RSS with both listings and the plan"))
    if 'growth' in res:
        g = res['growth']
        L += [f"## 6. No-op cost growth (local), us vs the fastest peer ({g['peer']})", '', '![growth](growth.png)', '',
              f"| datasets | floor (s) | ours (s) | {g['peer']} (s) |", '|---|---|---|---|']
        for n, pt in sorted(g['points'].items(), key=lambda kv: int(kv[0])):
            L.append(f"| {n} | {pt['floor']:.2f} | {pt['ours']:.2f} | {pt[g['peer']]:.2f} |")
        L.append('')
        _plot_growth(g, outdir, a['snapshots'])
    if 'noop' in res:
        _plot_noop(res, outdir)
        L += ['![no-op](noop.png)', '']
    L[len(L):] = ['## Targets', '', '| target | result | measured |', '|---|---|---|'] + [f'| {t} | {ok} | {why} |' for t, ok, why in targets] + ['']
    notes = list(res.get('notes') or [])
    notes += [f'case {name} FAILED and is missing above: {why}' for name, why in (res.get('failed') or {}).items()]
    notes += [f'case {name} {why}' for name, why in (res.get('stopped') or {}).items()]
    if res.get('case_seconds'):
        notes.append('time per case (s): ' + ', '.join(f'{k} {v:.0f}' for k, v in res['case_seconds'].items()))
    if notes:
        L += ['## Notes', ''] + [f'- {n}' for n in notes] + ['']
    (outdir / 'results.md').write_text('\n'.join(L))


def _calls_by_command(noop):
    """Where each tool's zfs calls of the no-op go, by subcommand and side (runs from before this was recorded: none)."""
    rows = []
    for via in ('local', 'ssh'):
        for tool, r in noop.get(via, {}).items():
            by = r.get('calls_by_command')
            if by:
                rows.append(f"| {via} | {tool} | " + ' | '.join(
                    ', '.join(f'{cmd} {n}' for cmd, n in sorted(by[side].items(), key=lambda kv: -kv[1])) or '-'
                    for side in ('src', 'dst')) + ' |')
    if not rows:
        return []
    return ['Calls by zfs subcommand (the last repetition of each):', '', '| side | tool | source | target |',
            '|---|---|---|---|', *rows, '']


def _profile(prof, ours_time):
    """Where our local no-op's time goes (bench.profile_ours)."""
    if not prof:
        return []
    L = [f"Where our local no-op's {ours_time:.2f} s go: the interpreter's start alone (`python3 -c pass`) takes "
         f"{prof['python_start']:.2f} s, with the engine's import {prof['engine_import']:.2f} s; one run under cProfile "
         f"(which slows it) took {prof['profiled_run']:.2f} s, its functions with the most time of their own:", '',
         '| function | own time (s) | cumulative (s) |', '|---|---|---|']
    L += [f'| `{name}` | {tt:.3f} | {ct:.3f} |' for name, tt, ct in prof['by_own_time']]
    return [*L, '']


def _plt():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def _plot_growth(g, outdir, snapshots=20):
    plt = _plt()
    pts = sorted(g['points'].items(), key=lambda kv: int(kv[0]))
    xs = [int(n) for n, _p in pts]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (('ours', 'zfs.replication'), (g['peer'], g['peer']), ('floor', 'floor (1 listing per side)')):
        ax.plot(xs, [p[key] for _n, p in pts], marker='o', label=label)
    ax.set_xlabel(f'datasets ({snapshots} snapshots each)')
    ax.set_ylabel('no-op wall time (s), local')
    ax.legend()
    ax.grid(alpha=.3)
    fig.tight_layout()
    fig.savefig(outdir / 'growth.png', dpi=100)


def _plot_noop(res, outdir):
    plt = _plt()
    vias = [v for v in ('local', 'ssh') if v in res['noop']] + (['wan'] if 'wan' in res else [])
    tools = ['floor', 'ours', 'module', *PEERS]
    fig, ax = plt.subplots(figsize=(8, 4))
    w = 0.8 / len(tools)
    for i, tool in enumerate(tools):
        vals = [(res['noop'][v] if v != 'wan' else res['wan']).get(tool, {}).get('time', 0) for v in vias]
        ax.bar([j + i * w for j in range(len(vias))], vals, w, label=tool)
    ax.set_xticks([j + 0.4 - w / 2 for j in range(len(vias))], vias)
    ax.set_ylabel('no-op wall time (s)')
    ax.set_yscale('log')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(outdir / 'noop.png', dpi=100)
