# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every plugin's DOCUMENTATION, EXAMPLES and RETURN are YAML that parses, with the documented options a filter's
function takes. ansible-doc renders modules in scripts/test; filters had no such check, and a ': ' in a plain scalar
only showed as an ansible-lint message that did not fail the run."""
from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[4]
PLUGINS = sorted(p for kind in ("modules", "filter") for p in (ROOT / "plugins" / kind).glob("*.py") if p.name != "__init__.py")


def docs(path: Path) -> dict[str, str]:
    """The plugin's DOCUMENTATION, EXAMPLES and RETURN strings, read without importing it."""
    out = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                and node.targets[0].id in ("DOCUMENTATION", "EXAMPLES", "RETURN") and isinstance(node.value, ast.Constant):
            out[node.targets[0].id] = node.value.value
    return out


@pytest.mark.parametrize("path", PLUGINS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_documentation_parses(path: Path) -> None:
    found = docs(path)
    assert "DOCUMENTATION" in found, f"{path.name}: no DOCUMENTATION"
    for name, text in found.items():
        assert yaml.safe_load(text) is not None, f"{path.name}: {name} is empty"


@pytest.mark.parametrize("path", [p for p in PLUGINS if p.parent.name == "filter"], ids=lambda p: p.name)
def test_a_filters_documented_options_are_its_arguments(path: Path) -> None:
    doc = yaml.safe_load(docs(path)["DOCUMENTATION"])
    module = importlib.import_module(f"ansible_collections.zfs.replication.plugins.filter.{path.stem}")
    func = module.FilterModule().filters()[doc["name"]]
    params = inspect.signature(func).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # passes its options on (scheduler_secret_configs -> scheduler_tasks, checked there)
    documented = [o for o in doc.get("options", {}) if o != "_input"]
    assert set(documented) <= set(list(params)[1:]), (documented, list(params))
