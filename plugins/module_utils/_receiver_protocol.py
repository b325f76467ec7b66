# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The two requests an append-only target's receiver (_receiver) takes besides single zfs commands. Apart from it, so
that the engine's side (_transport.AppendOnlyHost) does not load the receiver itself."""
from __future__ import annotations

WHICH = "zfs-replication-which"  # WHICH PROGRAM...: the missing ones, a line each
PIPELINE = "zfs-replication-pipeline"  # PIPELINE JSON: a list of argv lists, filters then zfs recv
