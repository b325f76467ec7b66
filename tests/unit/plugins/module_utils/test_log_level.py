# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""logging_level values and the DEBUG command trace (_log)."""
from __future__ import annotations

import logging

import pytest

from ansible_collections.zfs.replication.plugins.module_utils import _log
from ansible_collections.zfs.replication.plugins.module_utils._transport import run_process


@pytest.mark.parametrize("value,level", [(None, logging.INFO), ("default", logging.INFO), ("debug", logging.DEBUG),
                                         ("info", logging.INFO), ("warning", logging.WARNING), ("error", logging.ERROR),
                                         ("DEBUG", logging.DEBUG)])
def test_levels(value, level):
    assert _log.level_of(value) == level


def test_a_bad_level_names_the_field_and_the_choices():
    with pytest.raises(_log.LoggingLevelError, match=r"logging_level 'loud': use one of default, debug, info, warning, error"):
        _log.level_of("loud")


def test_secret_looking_arguments_are_redacted():
    argv = ["zfs", "create", "-o", "keylocation=file:///k", "-o", "encryption_key=abc", "-opassword=x", "StrictHostKeyChecking=yes"]
    assert _log.redact(argv) == ["zfs", "create", "-o", "keylocation=file:///k", "-o", "encryption_key=<redacted>",
                                 "-opassword=<redacted>", "StrictHostKeyChecking=yes"]


def test_commands_are_traced_only_while_a_run_traces():
    lines: list[str] = []
    run_process(["true"])
    with _log.tracing(lines.append):
        run_process(["sh", "-c", "exit 3"])
    run_process(["true"])
    assert lines[0] == "debug: run: sh -c 'exit 3'"
    assert lines[1].startswith("debug: exit 3 after ") and lines[1].endswith("s: sh -c 'exit 3'")
    assert len(lines) == 2
