# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``zfs-replication-status``: every task on this host from the runner's state files, one line each (last result, when,
lag of the recovery point), and for a running task the live progress of its streams.

  zfs-replication-status                 the table, once
  zfs-replication-status --watch [SEC]   again every SEC seconds (default 5): redrawn in place on a terminal,
                                         plain blocks of lines when the output is not one (a log, a pipe)
  zfs-replication-status --json          the same as JSON, for scripts

Reads only the state files (no zfs command, no lock), so it is instant and safe while runs go on; the role installs
it next to ``zfs-replication-run``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, TextIO

from ._info import format_age
from ._lag import lag_seconds, parse_iso
from ._progress import human_bytes, human_seconds
from ._runner import DEFAULT_STATE_DIR, pid_alive, read_state

COLUMNS = ("TASK", "KIND", "LAST", "LAST RUN (UTC)", "LAG", "NOW")


def tasks(state_dir: str | os.PathLike[str], now: datetime) -> list[dict[str, Any]]:
    """One entry per state file: the task, its last run, the lag of its recovery point and, while it runs, its
    streams' progress (a run killed hard leaves ``running`` behind: shown as stale)."""
    out = []
    for path in sorted(Path(state_dir).glob("*.json")):
        state = read_state(path)
        if not state:
            continue
        running = state.get("running") if isinstance(state.get("running"), dict) else None
        newest = parse_iso(state.get("newest_replicated"))
        out.append({
            "id": path.stem, "task": state.get("task") or path.stem, "kind": state.get("kind"),
            "result": state.get("result"), "last_end": state.get("last_end"), "last_success": state.get("last_success"),
            "error": state.get("error"),
            "lag": lag_seconds(newest, now) if newest is not None else None,
            "running": None if running is None else {
                "since": running.get("since"), "pid": running.get("pid"), "stale": not pid_alive(running.get("pid")),
                "transfers": list(running.get("transfers") or [])},
        })
    return out


def _transfer_line(t: dict[str, Any]) -> str:
    size = f" of {human_bytes(t['expected_bytes'])} ({t['percent']:.0f}%)" if t.get("expected_bytes") and t.get("percent") is not None else ""
    rate = f", {human_bytes(t['rate'])}/s" if t.get("rate") is not None else ""
    eta = f", ETA {human_seconds(t['eta_seconds'])}" if t.get("eta_seconds") is not None else ""
    return f"    {t.get('dataset')}@{t.get('snapshot')}: {human_bytes(t.get('bytes') or 0)}{size}{rate}{eta}"


def render(entries: list[dict[str, Any]]) -> list[str]:
    """The table's lines, then under a running task one line per stream in flight."""
    rows = []
    for e in entries:
        run = e["running"]
        now = "-" if run is None else f"stale run (pid {run['pid']} is gone)" if run["stale"] else f"running since {run['since']}"
        rows.append(([e["task"], e["kind"] or "-", e["result"] or "-", e["last_end"] or "-",
                      format_age(e["lag"]) if e["kind"] == "replication" else "-", now],
                     [] if run is None or run["stale"] else [_transfer_line(t) for t in run["transfers"]]))
    if not rows:
        return ["no task has run on this host yet (no state files)"]
    widths = [max(len(str(c)) for c in col) for col in zip(COLUMNS, *(cells for cells, _lines in rows))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(COLUMNS, widths)).rstrip()]
    for cells, extra in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip())
        lines += extra
    return lines


def main(argv: list[str] | None = None, out: TextIO | None = None, clock: Callable[[], datetime] | None = None,
         sleep: Callable[[float], None] = time.sleep, cycles: int | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zfs-replication-status", description="The zfs.replication tasks of this host.")
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help=f"the runner's state directory (default {DEFAULT_STATE_DIR})")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--watch", nargs="?", type=float, const=5.0, metavar="SECONDS",
                        help="print again every SECONDS (default 5) until interrupted")
    args = parser.parse_args(argv)
    out = out or sys.stdout
    clock = clock or (lambda: datetime.now(timezone.utc))
    if args.watch is not None and args.watch <= 0:
        parser.error(f"--watch {args.watch:g}: give a positive number of seconds")
    if not Path(args.state_dir).is_dir():
        sys.stderr.write(f"zfs-replication-status: {args.state_dir}: no such directory (set --state-dir to the role's scheduler_state_dir)\n")
        return 2
    tty = out.isatty()
    done = 0
    try:
        while True:
            now = clock()
            entries = tasks(args.state_dir, now)
            if args.json:
                out.write(json.dumps({"time": now.isoformat(timespec="seconds"), "tasks": entries}, sort_keys=True) + "\n")
            else:
                if args.watch is not None:
                    out.write("\033[H\033[J" if tty else f"-- {now.isoformat(timespec='seconds')}\n")
                out.write("\n".join(render(entries)) + "\n")
            out.flush()
            done += 1
            if args.watch is None or (cycles is not None and done >= cycles):
                return 0
            sleep(args.watch)
    except KeyboardInterrupt:
        return 0
