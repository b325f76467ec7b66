# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The collection as Galaxy users get it: built from a checkout full of test, lint and type-check caches, the tarball
holds the collection and none of the caches; installed with `ansible-galaxy collection install` (plus ansible.posix,
its dependency, from tests/collection_deps.py since there is no Galaxy here), `ansible-playbook zfs.replication.site`
replicates on the sandbox (the demo's inventory) under the newest and the oldest supported ansible-core, with no
warning printed.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import tarfile
from pathlib import Path

import collection_deps
import pytest

import sandbox as sandbox_mod
from helpers import snapshots_with_guids, zfs

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("ZR_CACHE_DIR") or "/var/cache/zfs-replication")
VENVS = ("venv-latest", "venv-oldest")  # ansible-core 2.21 and 2.19 (tests/requirements-*.txt)

# What a test run, a lint or a type check leaves in a checkout: (path, content). None of it may ship.
JUNK = {
    ".pytest_cache/v/cache/lastfailed": "{}",
    ".hypothesis/examples/0a1b2c/3d4e5f": "x",
    ".mypy_cache/3.12/plugins/module_utils/_zfs.data.json": "{}",
    ".ruff_cache/0.17.5/1234567890": "x",
    ".ansible/collections/ansible_collections/.keep": "",
    "tests/.pytest_cache/README.md": "x",
    "tests/unit/.hypothesis/unicode_data/15.0.0/charmap.json.gz": "x",
    "plugins/module_utils/.mypy_cache/CACHEDIR.TAG": "x",
    "plugins/module_utils/__pycache__/_zfs.cpython-312.pyc": "x",
    "tests/unit/__pycache__/test_planner.cpython-312-pytest-9.2.0.pyc": "x",
    "tests/output/junit/python3.12-units.xml": "<x/>",
    "tests/output/.tmp/sanity/x": "x",
    "bench/results/results.md": "x",
    "changelogs/.plugin-cache.yaml": "x",
    ".coverage": "x",
    "zfs-replication-0.0.1.tar.gz": "x",
}
JUNK_PARTS = {".pytest_cache", ".hypothesis", ".mypy_cache", ".ruff_cache", ".ansible", "__pycache__", ".plugin-cache.yaml",
              ".coverage", "bench", "scripts", ".ci", ".git"}


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL, timeout=900, **kwargs)
    assert proc.returncode == 0, f"$ {' '.join(argv)}\nrc={proc.returncode}\n{proc.stderr[-4000:]}\n{proc.stdout[-8000:]}"
    return proc


def warnings_in(text: str) -> list[str]:
    """Every warning or deprecation line: none is allowed, whatever it is about."""
    return [line for line in text.splitlines() if "[WARNING]" in line or "[DEPRECATION WARNING]" in line]


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tarball `ansible-galaxy collection build` makes from a copy of the checkout after a test run."""
    work = tmp_path_factory.mktemp("build")
    checkout = sandbox_mod.prepare_collection(REPO, work / "src") / "ansible_collections" / "zfs" / "replication"
    for rel, content in JUNK.items():
        (checkout / rel).parent.mkdir(parents=True, exist_ok=True)
        (checkout / rel).write_text(content)
    galaxy = CACHE / "venv-latest" / "bin" / "ansible-galaxy"
    proc = run([str(galaxy), "collection", "build", "--output-path", str(work / "out"), str(checkout)], cwd=work)
    assert not warnings_in(proc.stdout + proc.stderr), proc.stdout + proc.stderr
    (built,) = (work / "out").glob("zfs-replication-*.tar.gz")
    return built


def test_tarball_ships_the_collection_and_no_caches(tarball: Path) -> None:
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("MANIFEST.json"))
    shipped_junk = [n for n in names if JUNK_PARTS & set(Path(n).parts) or n.endswith((".pyc", ".tar.gz"))
                    or n.startswith("tests/output")]
    assert not shipped_junk, shipped_junk
    for required in ("README.md", "CHANGELOG.rst", "meta/runtime.yml", "requirements.yml", "changelogs/changelog.yaml",
                     "LICENSES/GPL-3.0-or-later.txt", "plugins/modules/zfs_replication.py", "roles/scheduler/tasks/main.yml",
                     "playbooks/site.yml", "playbooks/ssh_trust.yml", "MANIFEST.json", "FILES.json"):
        assert required in names, f"{required} is not in {tarball.name}"
    for directory in ("plugins", "roles", "playbooks", "docs"):
        assert any(n.startswith(f"{directory}/") for n in names), f"{directory}/ is not in {tarball.name}"
    assert manifest["collection_info"]["dependencies"] == {"ansible.posix": ">=1.5.0,<3.0.0"}
    # Every relative link of the README points at a file the tarball holds (links that work on Galaxy too).
    readme = (REPO / "README.md").read_text()
    links = [target.split("#")[0] for target in re.findall(r"\]\(([^)\s]+)\)", readme)
             if "://" not in target and not target.startswith(("#", "mailto:"))]
    broken = [link for link in links if link not in names and not any(n.startswith(f"{link.rstrip('/')}/") for n in names)]
    assert links and not broken, f"README links to files the tarball does not hold: {broken}"


def test_changelog_lints() -> None:
    run([str(CACHE / "venv-latest" / "bin" / "antsibull-changelog"), "lint"], cwd=REPO)


def demo_inventory(sandbox, root: Path, python: str, src: str, dst: str) -> dict:
    """The inventory scripts/demo builds: "fileserver" snapshots SRC and pushes it to "backup" over the sandbox sshd."""
    sshd_dir = sandbox.sshd.dir
    local = {"ansible_connection": "local", "ansible_python_interpreter": python}
    return {"all": {
        "vars": {"scheduler_systemd": False, "scheduler_python": python, "scheduler_engine_dir": str(root / "engine"),
                 "scheduler_launcher": str(root / "bin" / "zfs-replication-run"), "scheduler_config_dir": str(root / "etc"),
                 "scheduler_state_dir": str(root / "state"), "scheduler_log_dir": str(root / "log"),
                 "scheduler_unit_dir": str(root / "units"), "scheduler_metrics_dir": str(root / "metrics"),
                 "zfs_replication_run_now": True,
                 "zfs_replication_snapshot_task_defaults": {"naming_schema": "auto-%Y-%m-%d_%H-%M", "schedule": "hourly",
                                                            "lifetime_value": 2, "lifetime_unit": "week"},
                 "zfs_replication_replication_task_defaults": {
                     "recursive": True,
                     "ssh": {"user": sandbox.sshd.user, "private_key_file": str(root / "keys" / "replication_ed25519"),
                             "known_hosts_file": str(root / "keys" / "known_hosts"), "cipher": "fast"}}},
        "hosts": {
            "fileserver": {**local, "zfs_replication_ssh_from": "127.0.0.1",
                           "zfs_replication_snapshot_tasks": [{"name": "projects-hourly", "dataset": src, "recursive": True}],
                           "zfs_replication_replication_tasks": [{
                               "name": "projects-to-backup", "source_datasets": [src], "target_dataset": dst,
                               "periodic_snapshot_tasks": ["projects-hourly"],
                               "ssh": {"host": sandbox.sshd.host, "port": sandbox.sshd.port}}]},
            "backup": {**local, "zfs_replication_ssh_address": sandbox.sshd.host, "zfs_replication_ssh_port": sandbox.sshd.port,
                       "zfs_replication_ssh_host_key_file": f"{sshd_dir}/ssh_host_ed25519_key.pub",
                       "zfs_replication_authorized_keys_file": str(sandbox.sshd.authorized_keys)}}}}


@pytest.mark.parametrize("venv", VENVS)
def test_installed_tarball_runs_site_by_fqcn(sandbox, tarball: Path, tmp_path: Path, venv: str) -> None:
    bin_dir = CACHE / venv / "bin"
    collections = tmp_path / "collections"
    run([str(bin_dir / "ansible-galaxy"), "collection", "install", "--no-deps", "-p", str(collections), str(tarball)],
        cwd=tmp_path)
    collection_deps.install_into(collections)  # what the install would fetch from Galaxy: ansible.posix
    tag = secrets.token_hex(3)
    src, dst_parent = f"{sandbox.src_pool}/pkg{tag}", f"{sandbox.dst_pool}/pkg{tag}"
    for dataset in (src, f"{src}/web", f"{src}/db", dst_parent):
        zfs("create", dataset)
    for dataset in (src, f"{src}/web", f"{src}/db"):
        Path(zfs("get", "-H", "-o", "value", "mountpoint", dataset).strip(), "data.bin").write_bytes(os.urandom(200_000))
    root = tmp_path / "root"
    for sub in ("bin", "units"):
        (root / sub).mkdir(parents=True)
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps(demo_inventory(sandbox, root, str(bin_dir / "python"), src, f"{dst_parent}/projects")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_NOCOLOR="1", ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"),
               ANSIBLE_CONFIG=str(tmp_path / "ansible.cfg"))
    (tmp_path / "ansible.cfg").write_text("[defaults]\n")  # none of the checkout's or the user's settings
    authorized_before = sandbox.sshd.authorized_keys.read_text()
    try:
        proc = run([str(bin_dir / "ansible-playbook"), "-i", str(inventory), "zfs.replication.site"], cwd=tmp_path, env=env)
    finally:
        sandbox.sshd.authorized_keys.write_text(authorized_before)
    assert not warnings_in(proc.stdout + proc.stderr), proc.stdout + proc.stderr
    assert "failed=0" in proc.stdout and "unreachable=0" in proc.stdout
    # Replicated: the snapshot the snapshot task took is on the target with the same guid, for the whole tree.
    source = snapshots_with_guids(src)
    assert len(source) == 3 and snapshots_with_guids(f"{dst_parent}/projects") == source
