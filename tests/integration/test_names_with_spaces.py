# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every name ZFS accepts works: a dataset `.../my data` with a child `.../my data/sub dir`, replicated into
`.../Time Machine/my data`, with snapshots named by the schema `auto %Y-%m-%d_%H-%M` (a space in every name).

Real zfs-fuse pools (zfs-fuse takes spaces in names like OpenZFS), the sandbox's sshd with a checked host key, real
ansible-playbook runs of the modules and of site.yml/status.yml/log.yml, and the runner's main() for a timer's run.
Checked on the pools: snapshot names and guids on both sides, the replica's files; and the task's units, config,
state, log and metrics files.
"""
from __future__ import annotations

import contextlib
import io
import json
import secrets
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.zfs.replication.plugins.module_utils._naming import NamingSchema
from ansible_collections.zfs.replication.plugins.module_utils._runner import main
from helpers import CommandError, destroy_retrying, mounted_checksums, own_checksums, sandbox_ssh, scheduler_vars, snapshots_with_guids, zfs

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCHEMA = "auto %Y-%m-%d_%H-%M"
T1, T2, T3 = "auto 2026-11-28_10-00", "auto 2026-11-28_11-00", "auto 2026-11-28_12-00"


@pytest.fixture
def spaced(sandbox, tmp_path):
    """`SRC/my data` with `sub dir` (files in both), the target's parent `DST/Time Machine`, and the task's own dirs."""
    tag = secrets.token_hex(3)
    top_src, top_dst = f"{sandbox.src_pool}/sp{tag}", f"{sandbox.dst_pool}/sp{tag}"
    src = f"{top_src}/my data"
    zfs("create", "-p", f"{src}/sub dir")
    zfs("create", "-p", f"{top_dst}/Time Machine")
    dirs = {"state_dir": str(tmp_path / "state dir"), "log_dir": str(tmp_path / "log dir"), "metrics_dir": str(tmp_path / "metrics dir")}
    holds: list[str] = []
    yield {"tag": tag, "src": src, "child": f"{src}/sub dir", "dst": f"{top_dst}/Time Machine/my data", "dirs": dirs, "holds": holds,
           "tmp": tmp_path}
    for top in (top_src, top_dst):
        for line in zfs("get", "-H", "-p", "-r", "-o", "name,value", "userrefs", top).splitlines():
            name, refs = line.split("\t")
            if "@" in name and refs not in ("0", "-"):
                for hold in holds:
                    with contextlib.suppress(CommandError):
                        zfs("release", hold, name)
        destroy_retrying(top)


def write(dataset: str, name: str) -> None:
    mp = Path(zfs("get", "-H", "-o", "value", "mountpoint", dataset).strip())
    (mp / "some dir").mkdir(exist_ok=True)
    (mp / "some dir" / f"{name} file.bin").write_bytes(secrets.token_bytes(50_000))


def play(*tasks: dict) -> str:
    return json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": list(tasks)}])


def selected(dataset: str) -> dict[str, str]:
    """Snapshots (with guids) of the schema below DATASET: what the replica must hold."""
    return {k: v for k, v in snapshots_with_guids(dataset).items() if "@auto " in k}


def test_module_and_runner_replicate_names_with_spaces_over_ssh(sandbox, spaced, ansible_playbook):
    src, child, dst, dirs = spaced["src"], spaced["child"], spaced["dst"], spaced["dirs"]
    write(src, "one")
    write(child, "kid")
    zfs("snapshot", "-r", f"{src}@{T1}")
    zfs("snapshot", "-r", f"{src}@manual keep out")  # not of the schema: not sent
    write(src, "two")
    zfs("snapshot", "-r", f"{src}@{T2}")
    snap_name = f"sp{spaced['tag']}-hourly"
    snapshot_task = {"name": "snapshot", "zfs.replication.zfs_snapshot_task": {
        "name": snap_name, "dataset": src, "recursive": True, "naming_schema": SCHEMA, "schedule": "hourly",
        "lifetime_value": 1, "lifetime_unit": "year", **dirs}}
    params = {"source_datasets": [src], "target_dataset": dst, "recursive": True, "naming_schema": [SCHEMA], "ssh": sandbox_ssh(sandbox)}
    replication = {"name": "replicate", "zfs.replication.zfs_replication": {**params, **dirs}}

    name = f"{src}-to-{dst}".replace("/", "-").replace(" ", "-")  # suggested: the spaces become '-'
    spaced["holds"].append(f"zfs.replication:{name}")

    first = ansible_playbook(play(snapshot_task, replication))

    taken = first.task("snapshot")
    assert taken["changed"] is True
    res = first.task("replicate")
    assert res["task"] == name
    want = selected(src)
    slot = want_slot(want)  # this hour's snapshot, taken by the module: a space in its name too
    assert NamingSchema(SCHEMA).parse(slot) is not None
    assert sorted(want) == sorted(f"{d}@{s}" for d in ("", "/sub dir") for s in (T1, T2, slot))
    assert res["changed"] is True and res["snapshots_sent"] == 6
    assert snapshots_with_guids(dst) == want  # names with spaces, guids equal, the manual snapshot left out
    assert mounted_checksums(dst) == own_checksums(src) and own_checksums(src)
    assert mounted_checksums(f"{dst}/sub dir") == own_checksums(child)

    # the task's history: state, log and metrics files named by the task, the datasets inside them verbatim
    state = json.loads(Path(dirs["state_dir"], f"repl-{name}.json").read_text())
    assert (state["result"], state["snapshots_sent"]) == ("ok", 6)
    assert set(state["details"]["datasets"]) == {dst, f"{dst}/sub dir"}
    log = Path(dirs["log_dir"], f"repl-{name}.log").read_text()
    assert f"{src}/sub dir" in log and f"{dst}/sub dir" in log
    snap_log = Path(dirs["log_dir"], f"snap-{snap_name}.log").read_text()
    assert shlex.join(["zfs", "snapshot", "-r", f"{src}@{slot}"]) in snap_log, snap_log  # logged as one quoted argument

    again = ansible_playbook(play(replication))
    assert again.task("replicate")["changed"] is False
    assert snapshots_with_guids(dst) == want

    # a timer's run of the same task: the runner with the config the role writes
    write(src, "three")
    zfs("snapshot", "-r", f"{src}@{T3}")
    config = spaced["tmp"] / "config dir" / f"repl-{name}.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"kind": "replication", "name": name, "params": params}))
    out = io.StringIO()
    argv = ["run", "--config", str(config), "--state-dir", dirs["state_dir"], "--log-dir", dirs["log_dir"], "--metrics-dir", dirs["metrics_dir"]]
    assert main(argv, stream=out) == 0, out.getvalue()
    after = json.loads(Path(dirs["state_dir"], f"repl-{name}.json").read_text())
    assert (after["result"], after["snapshots_sent"]) == ("ok", 2)
    assert snapshots_with_guids(dst) == selected(src) and f"@{T3}" in selected(src) and f"/sub dir@{T3}" in selected(src)
    assert mounted_checksums(dst) == own_checksums(src)
    metrics = Path(dirs["metrics_dir"], f"zfs_replication_repl_{name.replace('-', '_').replace('.', '_')}.prom").read_text()
    samples = {(f.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(metrics) for s in f.samples}
    assert samples[("zfs_replication_last_run_snapshots_sent", (("kind", "replication"), ("task", name)))] == 2


def want_slot(want: dict[str, str]) -> str:
    """The snapshot the snapshot task took in this hour's slot (the one name not made by the test)."""
    (slot,) = {k.split("@", 1)[1] for k in want} - {T1, T2}
    return slot


def test_the_role_status_and_log_for_datasets_with_spaces(spaced, ansible_playbook):
    """site.yml with a snapshot task on `my data` (schema with a space) and a replication task without a name into
    `Time Machine/my data`: unit and file names from the task names (letters, digits, '-'), which systemd verifies;
    the runs replicate; status.yml and log.yml show the task."""
    src, dst, tmp = spaced["src"], spaced["dst"], spaced["tmp"]
    snap_name = f"sp{spaced['tag']}-hourly"
    (tmp / "units").mkdir()
    (tmp / "bin").mkdir()
    dirs = spaced["dirs"]
    inventory = json.dumps({"all": {"hosts": {"fileserver": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "zfs_replication_ssh_trust": False, **scheduler_vars(tmp),
        "scheduler_state_dir": dirs["state_dir"], "scheduler_log_dir": dirs["log_dir"], "scheduler_metrics_dir": dirs["metrics_dir"],
        "zfs_replication_run_now": True,  # the hourly snapshot task and the replication after it run at this apply
        "zfs_replication_snapshot_tasks": [{"name": snap_name, "dataset": src, "recursive": True, "naming_schema": SCHEMA,
                                            "schedule": "hourly", "lifetime_value": 1, "lifetime_unit": "week"}],
        "zfs_replication_replication_tasks": [{"source_datasets": [src], "target_dataset": dst, "transport": "local", "recursive": True,
                                               "periodic_snapshot_tasks": [snap_name]}],
    }}}})
    name = f"{src}-to-{dst}".replace("/", "-").replace(" ", "-")
    spaced["holds"].append(f"zfs.replication:{name}")
    ansible_playbook(f"- name: site\n  ansible.builtin.import_playbook: {REPO / 'playbooks' / 'site.yml'}\n", inventory_text=inventory)

    replica = snapshots_with_guids(dst)
    assert len(replica) == 2 and replica == selected(src)  # this hour's snapshot of `my data` and `sub dir`
    assert all(" " in k.split("@", 1)[1] for k in replica)
    units = sorted(p.name for p in (tmp / "units").iterdir())
    assert units == [f"zfs-replication-repl-{name}.service", f"zfs-replication-snap-{snap_name}.service",
                     f"zfs-replication-snap-{snap_name}.timer"]
    config = json.loads((tmp / "etc" / f"repl-{name}.json").read_text())
    assert (config["params"]["source_datasets"], config["params"]["target_dataset"]) == ([src], dst)
    analyze = shutil.which("systemd-analyze")
    if analyze:  # the offline check systemd itself makes on the unit files
        paths = [str(tmp / "units" / u) for u in units]
        proc = subprocess.run([analyze, "verify", *paths], capture_output=True, text=True, check=False)
        complaints = [line for line in proc.stderr.splitlines() if "zfs-replication-" in line]
        assert proc.returncode == 0 and not complaints, proc.stderr
    for kind, task in (("snap", snap_name), ("repl", name)):
        assert json.loads(Path(dirs["state_dir"], f"{kind}-{task}.json").read_text())["result"] == "ok"

    status = f"- name: status\n  ansible.builtin.import_playbook: {REPO / 'playbooks' / 'status.yml'}\n"
    table = ansible_playbook(status, inventory_text=inventory).task("Print the table", "fileserver")["zr_status_table"]
    rows = {tuple(line.split()[1:3]): line.split() for line in table[1:]}
    assert rows[(name, "replication")][3] == "ok" and rows[(name, "replication")][6] == "ok", table
    assert rows[(snap_name, "snapshot")][6] == "ok", table

    log_play = f"- name: log\n  ansible.builtin.import_playbook: {REPO / 'playbooks' / 'log.yml'}\n"
    shown = ansible_playbook(log_play, inventory_text=inventory, extravars={"task": name, "kind": "replication"})
    printed = shown.task("Print the last run's log", "fileserver")["msg"]
    assert printed[-1].endswith(f"replication task {name}: ok") and any(f"{dst}/sub dir" in line for line in printed), printed
