# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run `run_replication(params)` (JSON on stdin) once in this process: one stdout line per engine log line (flushed), then
`ZR-RESULT <json>` or `ZR-ERROR <json message>`. The reliability tier kills this process at chosen points."""
from __future__ import annotations

import json
import sys

from ansible_collections.zfs.replication.plugins.module_utils._replication import TaskError, run_replication


def main() -> int:
    params = json.loads(sys.stdin.read())

    def log(line: str) -> None:
        print(line, flush=True)

    try:
        result = run_replication(params, log=log)
    except TaskError as exc:
        print("ZR-ERROR " + json.dumps(str(exc)), flush=True)
        return 2
    print("ZR-RESULT " + json.dumps(result.as_dict(), default=str), flush=True)
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
