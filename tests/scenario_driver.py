# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run the replication engine once, where the ZFS under test is: on this host (zfs-fuse) or inside the OpenZFS guest,
where tests/backends.py installs the engine as the package the role installs (`zfs_replication_engine`).

Input on stdin (JSON): {"params": {...module options...}, "check_mode": false, "now": "ISO time or null",
"pause_after": "a log line's start or null"}, or the module options alone. The reliability tier kills this process at
chosen points; where the engine has little left to do after a line, `pause_after` holds the run there (the logging
thread sleeps once it has printed the line) so that the kill lands after that step and before the next one.
Output: one line per engine log line (flushed, so a test can act on progress), then `ZR-RESULT <json>` or
`ZR-ERROR <json message>`. Exit 0 ok, 1 the run failed, 2 the task was refused before running.
"""
from __future__ import annotations

import json
import sys
import time
from datetime import datetime

try:  # the engine as the role installs it on a host (the guest)
    from zfs_replication_engine._replication import TaskError, run_replication
except ImportError:  # this checkout, through the collection import root the test conftest sets up
    from ansible_collections.zfs.replication.plugins.module_utils._replication import TaskError, run_replication

PAUSE = 60  # seconds a paused run waits for the kill; a run not killed by then goes on, and its case fails as not injected


def main() -> int:
    request = json.loads(sys.stdin.read())
    if not isinstance(request.get("params"), dict):
        request = {"params": request}
    now = datetime.fromisoformat(request["now"]) if request.get("now") else None
    pause_after = request.get("pause_after")

    def log(line: str) -> None:
        print(line, flush=True)
        if pause_after and line.strip().startswith(pause_after):
            time.sleep(PAUSE)

    try:
        result = run_replication(request["params"], check_mode=bool(request.get("check_mode")), log=log, now=now)
    except TaskError as exc:
        print("ZR-ERROR " + json.dumps(str(exc)), flush=True)
        return 2
    print("ZR-RESULT " + json.dumps(result.as_dict(), default=str), flush=True)
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
