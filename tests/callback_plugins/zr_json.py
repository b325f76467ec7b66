# Copyright: zfs.replication contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Test harness only (not shipped in the collection's plugins/): ansible-core ships no JSON stdout callback,
# and ansible.posix is not installed in the test venvs.
from __future__ import annotations

DOCUMENTATION = r"""
name: zr_json
type: stdout
short_description: Whole-run JSON on stdout, for the zfs.replication test harness
description:
  - Prints one JSON document at the end of the run - plays, tasks, per-host results, stats.
  - Results keep C(diff) and C(invocation), which tests assert on.
"""

import json
import sys

from ansible.module_utils.common.json import AnsibleJSONEncoder
from ansible.plugins.callback import CallbackBase


def _result_parts(result):
    """(host name, task, result dict) on ansible-core 2.18 (TaskResult) and 2.19+ (CallbackTaskResult)."""
    host = getattr(result, 'host', None) or result._host
    task = getattr(result, 'task', None) or result._task
    data = getattr(result, 'result', None)
    if data is None:
        data = result._result
    return host.get_name(), task, dict(data)


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'stdout'
    CALLBACK_NAME = 'zr_json'

    def __init__(self, display=None):
        super().__init__(display)
        self.plays = []

    def _new_task(self, task, handler=False):
        if not self.plays:
            self.plays.append({'play': {'name': ''}, 'tasks': []})
        self.plays[-1]['tasks'].append({
            'task': {'name': task.get_name(), 'action': task.action, 'uuid': str(task._uuid), 'handler': handler},
            'hosts': {},
        })

    def v2_playbook_on_play_start(self, play):
        self.plays.append({'play': {'name': play.get_name(), 'uuid': str(play._uuid)}, 'tasks': []})

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._new_task(task)

    def v2_playbook_on_handler_task_start(self, task):
        self._new_task(task, handler=True)

    def _record(self, result, **status):
        host, task, data = _result_parts(result)
        # ansible-core 2.19+ keeps the outcome flags out of the callback's result dict: put them back.
        data['changed'] = bool(result.is_changed())
        data['failed'] = status.pop('failed', False)
        for flag in ('skipped', 'unreachable'):
            if status.pop(flag, False):
                data[flag] = True
        data.update({f'_zr_{k}': v for k, v in status.items()})
        tasks = self.plays[-1]['tasks'] if self.plays else []
        for entry in reversed(tasks):
            if entry['task']['uuid'] == str(task._uuid):
                entry['hosts'][host] = data
                return
        self._new_task(task)
        self.plays[-1]['tasks'][-1]['hosts'][host] = data

    def v2_runner_on_ok(self, result, **kwargs):
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False, **kwargs):
        self._record(result, failed=True, ignore_errors=ignore_errors)

    def v2_runner_on_skipped(self, result, **kwargs):
        self._record(result, skipped=True)

    def v2_runner_on_unreachable(self, result, **kwargs):
        self._record(result, failed=True, unreachable=True)

    def v2_playbook_on_stats(self, stats):
        summary = {host: stats.summarize(host) for host in sorted(stats.processed)}
        output = {'plays': self.plays, 'stats': summary}
        sys.stdout.write(json.dumps(output, cls=AnsibleJSONEncoder, indent=2, sort_keys=True) + '\n')
        sys.stdout.flush()
