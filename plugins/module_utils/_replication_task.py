# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A replication task's configuration: TrueNAS's replication task fields, validated.

Every check raises TaskError with a message that names the field and the fix; nothing runs
before the whole task is valid.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ._lifetime import Lifetime, LifetimeError, longest
from ._naming import NamingSchema, NamingSchemaError
from ._planner import PlanTask, Selection, TargetRetention
from ._schedule import Schedule, ScheduleError
from ._transport import SSHConnection
from ._tz import zone
from ._zfs import is_within, validate_dataset, validate_snapname

TASK_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\Z")
PROPERTY_RE = re.compile(r"^[a-z][a-z0-9_]*(:[A-Za-z0-9_.:-]+)?\Z|^[a-z0-9_.-]+:[A-Za-z0-9_.:-]+\Z")
SIZE_RE = re.compile(r"^[1-9][0-9]*[KMG]?\Z")
# Datasets transferred at once; each is an ssh session on the shared connection (OpenSSH MaxSessions defaults to 10).
MAX_PARALLEL_TRANSFERS = 8
COMPRESSORS = {
    # tool: (compress argv, decompress argv)
    "lz4": (["lz4", "-q", "-c"], ["lz4", "-q", "-d", "-c"]),
    "zstd": (["zstd", "-q", "-c", "-T0"], ["zstd", "-q", "-d", "-c"]),
    "pigz": (["pigz", "-c"], ["pigz", "-d", "-c"]),
    "xz": (["xz", "-c", "-T0"], ["xz", "-d", "-c"]),
    "plzip": (["plzip", "-q", "-c"], ["plzip", "-q", "-d", "-c"]),  # TrueNAS's PLZIP (parallel lzip)
}
NETCAT_ACTIVE_SIDES = ("local", "remote")


class TaskError(Exception):
    """The task is invalid or cannot run; the message names the field and the fix."""


@dataclass
class NetcatOptions:
    port_min: int
    port_max: int
    listen_address: str | None = None  # where the listening (active) side listens
    connect_address: str | None = None  # where the connecting (passive) side connects
    active_side: str | None = None  # local | remote: which side listens (TrueNAS "Netcat Active Side"); None: the receiving one


@dataclass
class ReplicationTask:
    name: str
    source_datasets: list[str]
    target_dataset: str
    naming_schema: list[str] = field(default_factory=list)
    also_include_naming_schema: list[str] = field(default_factory=list)
    periodic_snapshot_tasks: list[dict[str, Any]] = field(default_factory=list)
    name_regex: str | None = None
    only_matching_schedule: bool = False
    schedule: dict[str, Any] | str | None = None
    restrict_schedule: dict[str, Any] | str | None = None
    snapshots: list[str] | None = None
    direction: str = "push"
    transport: str = "ssh"
    ssh: SSHConnection | None = None
    netcat: NetcatOptions | None = None
    recursive: bool = False
    exclude: list[str] = field(default_factory=list)
    replicate: bool = False
    properties: bool = True
    properties_exclude: list[str] = field(default_factory=list)
    properties_override: dict[str, str] = field(default_factory=dict)
    readonly: str = "set"
    allow_from_scratch: bool = False
    allow_rollback: bool = False
    retention_policy: str = "none"
    lifetime_value: int | None = None
    lifetime_unit: str | None = None
    lifetimes: list[dict[str, Any]] = field(default_factory=list)
    compression: str | None = None
    speed_limit: int | None = None
    progress_interval: int = 30
    buffer_size: str | None = None
    retries: int = 5
    retry_delay: float = 2.0
    parallel_transfers: int | None = None  # None: auto (_admission)
    timezone: str | None = None
    hold_base: bool = True
    create_snapshot: bool = False
    auto_snapshot_task: bool = False  # the role derives a snapshot task from this task (_auto_snapshot)
    mount: bool = False
    large_block: bool | None = None
    embed: bool | None = None
    compressed: bool | None = None
    raw: bool | None = None
    encryption: bool = False
    encryption_key_format: str = "hex"
    encryption_key: str | None = None
    encryption_key_location: str | None = None
    encryption_key_generate: bool = False  # _keys: a hex key made by the first run, kept on the host that runs the engine
    sudo: bool = False  # the remote host's zfs commands through sudo -n (TrueNAS: Use Sudo For ZFS Commands)
    local_sudo: bool = False  # the same on the host that runs the engine
    target_access: str = "full"  # append_only: the target's key runs only the append-only receiver (_receiver)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ReplicationTask:
        """Build and validate a task from module parameters or a timer's config file."""
        p = {k: v for k, v in params.items() if v is not None}
        conn = None
        ssh = p.get("ssh")
        if p.get("transport", "ssh") in ("ssh", "ssh+netcat"):
            if not ssh or not ssh.get("host"):
                raise TaskError(
                    f"ssh.host is required when transport={p.get('transport', 'ssh')}: give the other host, or use transport=local"
                )
            conn = SSHConnection(
                host=str(ssh["host"]),
                port=int(ssh.get("port") or 22),
                user=ssh.get("user"),
                private_key_file=ssh.get("private_key_file"),
                known_hosts_file=ssh.get("known_hosts_file"),
                host_key_checking=ssh.get("host_key_checking") or "strict",
                cipher=ssh.get("cipher") or "standard",
                connect_timeout=int(ssh.get("connect_timeout") or 10),
            )
        nc = None
        if p.get("netcat"):
            n = p["netcat"]
            nc = NetcatOptions(
                port_min=int(n.get("port_min") or 0),
                port_max=int(n.get("port_max") or 0),
                listen_address=n.get("listen_address"),
                connect_address=n.get("connect_address"),
                active_side=n.get("active_side") or None,
            )
        task = cls(
            name=p.get("name") or "",
            source_datasets=list(p.get("source_datasets") or []),
            target_dataset=p.get("target_dataset") or "",
            naming_schema=list(p.get("naming_schema") or []),
            also_include_naming_schema=list(p.get("also_include_naming_schema") or []),
            periodic_snapshot_tasks=list(p.get("periodic_snapshot_tasks") or []),
            name_regex=p.get("name_regex") or None,
            only_matching_schedule=bool(p.get("only_matching_schedule", False)),
            schedule=p.get("schedule"),
            restrict_schedule=p.get("restrict_schedule"),
            snapshots=list(p["snapshots"]) if p.get("snapshots") else None,
            direction=p.get("direction") or "push",
            transport=p.get("transport") or "ssh",
            ssh=conn,
            netcat=nc,
            recursive=bool(p.get("recursive", False)),
            exclude=list(p.get("exclude") or []),
            replicate=bool(p.get("replicate", False)),
            properties=bool(p.get("properties", True)),
            properties_exclude=list(p.get("properties_exclude") or []),
            properties_override={str(k): str(v) for k, v in (p.get("properties_override") or {}).items()},
            readonly=p.get("readonly") or "set",
            allow_from_scratch=bool(p.get("allow_from_scratch", False)),
            allow_rollback=bool(p.get("allow_rollback", False)),
            retention_policy=p.get("retention_policy") or "none",
            lifetime_value=p.get("lifetime_value"),
            lifetime_unit=p.get("lifetime_unit"),
            lifetimes=list(p.get("lifetimes") or []),
            compression=p.get("compression") or None,
            speed_limit=p.get("speed_limit"),
            progress_interval=30 if p.get("progress_interval") is None else p["progress_interval"],
            buffer_size=p.get("buffer_size") or None,
            retries=int(p.get("retries", 5)),
            retry_delay=float(p.get("retry_delay", 2.0)),
            parallel_transfers=None if p.get("parallel_transfers") is None else int(p["parallel_transfers"]),
            timezone=p.get("timezone") or None,
            hold_base=bool(p.get("hold_base", True)),
            create_snapshot=bool(p.get("create_snapshot", False)),
            auto_snapshot_task=bool(p.get("auto_snapshot_task", False)),
            mount=bool(p.get("mount", False)),
            large_block=p.get("large_block"),
            embed=p.get("embed"),
            compressed=p.get("compressed"),
            raw=p.get("raw"),
            encryption=bool(p.get("encryption", False)),
            encryption_key_format=p.get("encryption_key_format") or "hex",
            encryption_key=p.get("encryption_key"),
            encryption_key_location=p.get("encryption_key_location") or None,
            encryption_key_generate=bool(p.get("encryption_key_generate", False)),
            sudo=bool(p.get("sudo", False)),
            local_sudo=bool(p.get("local_sudo", False)),
            target_access=p.get("target_access") or "full",
        )
        if not task.name:
            task.name = suggest_name(task)
        task.validate()
        return task

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        if not TASK_NAME_RE.match(self.name):
            raise TaskError(f"name {self.name!r}: use letters, digits and _ . - (at most 100 characters)")
        self._validate_datasets()
        self._validate_transport()
        self._validate_selection()
        self._validate_properties()
        self._validate_retention()
        if self.compression is not None and self.compression not in COMPRESSORS:
            raise TaskError(f"compression {self.compression!r}: use one of {', '.join(COMPRESSORS)} (or leave it unset)")
        if self.speed_limit is not None and int(self.speed_limit) <= 0:
            raise TaskError(f"speed_limit {self.speed_limit!r}: give a positive number of bytes per second, or leave it unset for no limit")
        if not isinstance(self.progress_interval, int) or isinstance(self.progress_interval, bool) or self.progress_interval < 0:
            raise TaskError(f"progress_interval {self.progress_interval!r}: give whole seconds between progress lines (default 30), or 0 for none")
        if self.buffer_size is not None and not SIZE_RE.match(str(self.buffer_size)):
            raise TaskError(f"buffer_size {self.buffer_size!r}: give a size like 64M (digits and K, M or G)")
        if self.retries < 0:
            raise TaskError(f"retries {self.retries}: use 0 (no retry) or more")
        if self.retry_delay < 0:
            raise TaskError("retry_delay must be 0 or more seconds")
        if self.parallel_transfers is not None and not 1 <= self.parallel_transfers <= MAX_PARALLEL_TRANSFERS:
            raise TaskError(
                f"parallel_transfers {self.parallel_transfers}: use 1 (one dataset at a time) to {MAX_PARALLEL_TRANSFERS}, or leave it "
                "unset (4, up to 8 while the streams are small); OpenSSH servers allow 10 sessions per connection (MaxSessions)"
            )
        if self.readonly not in ("set", "require", "ignore"):
            raise TaskError(f"readonly {self.readonly!r}: use set, require or ignore")
        self._validate_encryption()
        self._validate_target_access()
        if self.create_snapshot and self.direction != "push":
            raise TaskError("create_snapshot takes snapshots of local sources: it needs direction push")
        if self.create_snapshot and not (self.naming_schema or self.periodic_snapshot_tasks):
            raise TaskError("create_snapshot names the new snapshot with the task's naming_schema: give one")
        if self.auto_snapshot_task:
            self._validate_auto_snapshot_task()
        if self.replicate and self.exclude:
            raise TaskError("exclude cannot be used with replicate (full filesystem replication sends the whole tree with zfs send -R)")
        if self.replicate and not self.recursive:
            raise TaskError("replicate (full filesystem replication) needs recursive: true")

    def _validate_target_access(self) -> None:
        """append_only: the push's key may only receive into the target (the receiver refuses the rest), so the
        task may not need anything else there."""
        if self.target_access not in ("full", "append_only"):
            raise TaskError(f"target_access {self.target_access!r}: use full or append_only")
        if self.target_access == "full":
            return
        why = "target_access append_only"
        if self.direction != "push":
            raise TaskError(f"{why} restricts the key a push source holds for its target; a pull task's target is this host "
                            "and its source key already cannot change the target: remove target_access")
        if self.transport != "ssh":
            raise TaskError(f"{why} needs transport ssh: with ssh+netcat the stream bypasses the receiver (a plain TCP port "
                            "the receiver cannot check), and a local target has no key to restrict")
        refused = [
            (self.allow_rollback, "allow_rollback", "a rollback"),
            (self.allow_from_scratch, "allow_from_scratch", "zfs recv -F"),
            (self.mount, "mount", "zfs mount"),
            (self.encryption, "encryption", "putting the key on the target (send an encrypted source raw instead: it arrives "
                                            "encrypted, no key needed)"),
        ]
        for on, field_name, what in refused:
            if on:
                raise TaskError(f"{field_name}: true needs {what} on the target, which {why} never lets the source do: "
                                f"set {field_name}: false, or target_access: full")
        if self.retention_policy == "source":
            raise TaskError(f"retention_policy source with {why}: the target's retention runs on the target host, which cannot "
                            "see the source's snapshots; use retention_policy custom (lifetime_value/lifetime_unit) or none")

    def _validate_auto_snapshot_task(self) -> None:
        """The snapshot task derived from this one (_auto_snapshot) snapshots the local sources on the task's schedule,
        named by its first naming schema."""
        if self.direction != "push":
            raise TaskError("auto_snapshot_task snapshots the sources on the host that runs the task: it needs direction push "
                            "(for pull, declare the snapshot task on the source host and select its snapshots with naming_schema)")
        if not self.schedule:
            raise TaskError("auto_snapshot_task runs its snapshot task on the replication's schedule: give schedule "
                            "(like schedule: hourly), or declare the snapshot task and name it in periodic_snapshot_tasks")
        if not self.naming_schema:
            raise TaskError("auto_snapshot_task names its snapshots with the first naming_schema: give one "
                            "(like naming_schema: ['auto-%Y-%m-%d_%H-%M'])")

    def _validate_encryption(self) -> None:
        if not self.encryption:
            if self.encryption_key_generate:
                raise TaskError("encryption_key_generate needs encryption: true (it generates the key of a new encrypted target): "
                                "set encryption: true, or remove encryption_key_generate")
            if self.encryption_key or self.encryption_key_location:
                raise TaskError("encryption_key and encryption_key_location need encryption: true")
            return
        if self.encryption_key_generate:
            if self.encryption_key:
                raise TaskError("encryption_key_generate and encryption_key exclude each other: give the key in encryption_key, "
                                "or remove it to have the first run generate one")
            if self.encryption_key_format != "hex":
                raise TaskError(f"encryption_key_generate makes a hex key, not a {self.encryption_key_format}: set "
                                "encryption_key_format: hex, or give your passphrase in encryption_key instead")
        if self.raw:
            raise TaskError("encryption (a new key on the target) and raw (keep the source's encryption) exclude each other: choose one")
        if self.replicate:
            raise TaskError("encryption cannot be combined with replicate (zfs send -R): replicate the datasets one by one instead")
        if self.encryption_key_format not in ("hex", "passphrase"):
            raise TaskError(f"encryption_key_format {self.encryption_key_format!r}: use hex or passphrase")
        key = self.encryption_key or ""
        if self.encryption_key_format == "hex" and not self.encryption_key_generate and not re.fullmatch(r"[0-9a-fA-F]{64}", key):
            raise TaskError("encryption_key: a hex key is 64 hexadecimal digits (32 bytes), e.g. from `openssl rand -hex 32`; "
                            "or set encryption_key_generate: true to have the first run generate one")
        if self.encryption_key_format == "passphrase" and not 8 <= len(key) <= 512:
            raise TaskError("encryption_key: a passphrase has 8 to 512 characters")
        if "\n" in key or "\x00" in key:
            raise TaskError("encryption_key must be one line")
        loc = self.encryption_key_location
        if loc is not None and not re.fullmatch(r"/[A-Za-z0-9_./:+-]+", loc):
            raise TaskError(
                f"encryption_key_location {loc!r}: give an absolute path on the target host (letters, digits and _ . / : + -), "
                "or leave it unset to keep the key with the task"
            )

    def _validate_datasets(self) -> None:
        if not self.source_datasets:
            raise TaskError("source_datasets: give at least one dataset to replicate")
        for i, src in enumerate(self.source_datasets):
            _valid(src, f"source_datasets[{i}]")
        _valid(self.target_dataset, "target_dataset")
        if "/" not in self.target_dataset:
            raise TaskError(
                f"target_dataset {self.target_dataset!r} is a pool: replicate into a dataset inside it, like {self.target_dataset}/backup"
            )
        if len(self.source_datasets) != len(set(self.source_datasets)):
            raise TaskError("source_datasets lists a dataset twice")
        for a in self.source_datasets:
            for b in self.source_datasets:
                if a != b and is_within(a, b):
                    raise TaskError(f"source_datasets overlap: {a} is inside {b}; use recursive on {b} instead")
        leaves = [s.rsplit("/", 1)[-1] for s in self.source_datasets]
        if len(self.source_datasets) > 1 and len(leaves) != len(set(leaves)):
            raise TaskError(
                "source_datasets: several sources end in the same name and would land in the same "
                f"{self.target_dataset}/<name>: use one task per source"
            )
        if self.transport == "local":
            for src in self.source_datasets:
                if is_within(self.target_dataset, src):
                    raise TaskError(f"target_dataset {self.target_dataset} is inside source {src}: choose a target outside the source tree")
                if is_within(src, self.target_dataset):
                    raise TaskError(f"source {src} is inside target_dataset {self.target_dataset}: choose a target outside the source tree")
        if self.exclude and not self.recursive:
            raise TaskError("exclude needs recursive: true (excluded datasets are children of a recursive source)")
        for i, ex in enumerate(self.exclude):
            _valid(ex, f"exclude[{i}]")
            if not any(is_within(ex, s) and ex != s for s in self.source_datasets):
                raise TaskError(f"exclude[{i}] {ex} is not a child of any of source_datasets: list children of the sources only")

    def _validate_transport(self) -> None:
        if self.direction not in ("push", "pull"):
            raise TaskError(f"direction {self.direction!r}: use push or pull")
        if self.transport not in ("ssh", "ssh+netcat", "local"):
            raise TaskError(f"transport {self.transport!r}: use ssh, ssh+netcat or local")
        if self.transport == "local" and self.direction == "pull":
            raise TaskError("direction pull needs transport ssh or ssh+netcat: a local replication is a push")
        if self.transport == "local" and self.sudo:
            raise TaskError("sudo is for the remote host's zfs commands and transport local has none: use local_sudo")
        if self.ssh is not None:
            try:
                self.ssh.validate()
            except ValueError as exc:
                raise TaskError(str(exc)) from exc
        if self.transport == "ssh+netcat":
            nc = self.netcat
            if nc is None or not nc.port_min or not nc.port_max:
                raise TaskError(
                    "transport ssh+netcat sends the data UNENCRYPTED over a plain TCP connection: opt in explicitly with "
                    "netcat.port_min and netcat.port_max (the port range the receiving side may listen on)"
                )
            if not 1024 <= nc.port_min <= nc.port_max <= 65535:
                raise TaskError(f"netcat port range {nc.port_min}-{nc.port_max}: use 1024 <= port_min <= port_max <= 65535")
            for fname in ("listen_address", "connect_address"):
                value = getattr(nc, fname)
                if value is not None:
                    try:
                        SSHConnection(host=value).validate()
                    except ValueError as exc:
                        raise TaskError(f"netcat.{fname} {value!r} is not a valid address") from exc
            if nc.active_side is not None and nc.active_side not in NETCAT_ACTIVE_SIDES:
                raise TaskError(f"netcat.active_side {nc.active_side!r}: use local (this host listens) or remote (the ssh host listens), "
                                "or leave it unset for the receiving side")
            if self.direction == "pull" and nc.active_side is None and not nc.listen_address:
                raise TaskError("netcat.listen_address is required for pull over ssh+netcat: an address of this host that the source can reach")
            if nc.active_side == "local" and not nc.listen_address:
                raise TaskError("netcat.listen_address is required with netcat.active_side: local: an address of this host that the "
                                f"{'target' if self.direction == 'push' else 'source'} host can reach")
        elif self.netcat is not None:
            raise TaskError("netcat options need transport: ssh+netcat")

    def _validate_selection(self) -> None:
        if self.direction == "pull" and not (self.naming_schema or self.periodic_snapshot_tasks):
            raise TaskError(
                "naming_schema is required for direction pull: the source is remote, so name the snapshots to "
                "replicate with a naming schema like auto-%Y-%m-%d_%H-%M"
            )
        if not (self.naming_schema or self.also_include_naming_schema or self.periodic_snapshot_tasks or self.name_regex):
            raise TaskError(
                "naming_schema: give at least one naming schema (like auto-%Y-%m-%d_%H-%M), periodic_snapshot_tasks, or a name_regex"
            )
        if self.name_regex and (self.naming_schema or self.also_include_naming_schema or self.periodic_snapshot_tasks):
            raise TaskError("name_regex replaces naming schemas: give either name_regex or naming_schema/also_include_naming_schema/periodic_snapshot_tasks")
        if self.only_matching_schedule and self.name_regex:
            raise TaskError("only_matching_schedule needs naming schemas to read snapshot times: it cannot be used with name_regex")
        if self.only_matching_schedule and not (self.restrict_schedule or self.schedule):
            raise TaskError("only_matching_schedule needs schedule (or restrict_schedule): the schedule whose slots the snapshot times must match")
        for i, name in enumerate(self.snapshots or []):
            try:
                validate_snapname(name, f"snapshots[{i}]")
            except ValueError as exc:
                raise TaskError(str(exc)) from None
        for i, t in enumerate(self.periodic_snapshot_tasks):
            if not isinstance(t, dict) or not t.get("naming_schema"):
                raise TaskError(f"periodic_snapshot_tasks[{i}] needs naming_schema (the snapshot task's schema)")
        self.selection()  # validates schemas, regex and schedule

    def _validate_properties(self) -> None:
        for i, prop in enumerate(self.properties_exclude):
            if not PROPERTY_RE.match(prop):
                raise TaskError(f"properties_exclude[{i}] {prop!r} is not a property name")
        for prop, value in self.properties_override.items():
            if not PROPERTY_RE.match(prop):
                raise TaskError(f"properties_override: {prop!r} is not a property name")
            if "\n" in value or "\x00" in value:
                raise TaskError(f"properties_override.{prop}: the value must be one line")
        both = set(self.properties_exclude) & set(self.properties_override)
        if both:
            raise TaskError(f"properties_exclude and properties_override both name {', '.join(sorted(both))}: keep it in one of them")

    def _validate_retention(self) -> None:
        if self.retention_policy not in ("source", "custom", "none"):
            raise TaskError(f"retention_policy {self.retention_policy!r}: use source, custom or none")
        if self.retention_policy == "custom":
            if self.lifetime_value is None and not self.lifetimes:
                raise TaskError("retention_policy custom needs lifetime_value and lifetime_unit (or lifetimes)")
            if self.name_regex:
                raise TaskError("retention_policy custom reads snapshot times from naming schemas: it cannot be used with name_regex")
        self.lifetime_rules()

    # ------------------------------------------------------------------ derived objects
    def schemas(self) -> list[NamingSchema]:
        texts = [("naming_schema", i, s) for i, s in enumerate(self.naming_schema)]
        texts += [("also_include_naming_schema", i, s) for i, s in enumerate(self.also_include_naming_schema)]
        texts += [("periodic_snapshot_tasks", i, t["naming_schema"]) for i, t in enumerate(self.periodic_snapshot_tasks)]
        out = []
        for fname, i, text in texts:
            try:
                out.append(NamingSchema(text))
            except NamingSchemaError as exc:
                raise TaskError(f"{fname}[{i}]: {exc}") from exc
        return out

    def selection(self) -> Selection:
        regex = None
        if self.name_regex:
            try:
                regex = re.compile(self.name_regex)
            except re.error as exc:
                raise TaskError(f"name_regex {self.name_regex!r} is not a valid regular expression: {exc}") from exc
        schedule = None
        if self.only_matching_schedule:
            spec = self.restrict_schedule or self.schedule
            fname = "restrict_schedule" if self.restrict_schedule else "schedule"
            try:
                schedule = Schedule.from_spec(spec, timezone=self.timezone)  # type: ignore[arg-type]
            except ScheduleError as exc:
                raise TaskError(f"{fname}: {exc}") from exc
        return Selection(
            naming_schemas=self.schemas(),
            name_regex=regex,
            schedule=schedule,
            names=frozenset(self.snapshots) if self.snapshots else None,
        )

    def lifetime_rules(self) -> tuple[Lifetime | None, list[tuple[Schedule, Lifetime]]]:
        base = None
        if self.lifetime_value is not None or self.lifetime_unit is not None:
            try:
                base = Lifetime(self.lifetime_value, self.lifetime_unit or "")  # type: ignore[arg-type]
            except LifetimeError as exc:
                raise TaskError(str(exc)) from exc
        rules = []
        for i, item in enumerate(self.lifetimes):
            try:
                sched = Schedule.from_spec(item.get("schedule") or "hourly", timezone=self.timezone)
                rules.append((sched, Lifetime(item.get("lifetime_value"), item.get("lifetime_unit") or "")))
            except (ScheduleError, LifetimeError) as exc:
                raise TaskError(f"lifetimes[{i}]: {exc}") from exc
        return base, rules

    def retention(self, now: datetime, on_target: bool = False) -> TargetRetention:
        """The target retention a run applies. append_only: none from the source (the target host applies the task's
        retention itself, ``on_target``)."""
        if self.target_access == "append_only" and not on_target:
            return TargetRetention("none", None, now)
        if self.retention_policy != "custom":
            return TargetRetention(self.retention_policy, None, now)
        base, rules = self.lifetime_rules()
        schemas = self.schemas()
        tz = zone(self.timezone, "timezone")

        def expires(name: str, _now: datetime) -> datetime | None:
            for schema in schemas:
                when = schema.parse(name)
                if when is None:
                    continue
                if when.tzinfo is None:
                    when = when.replace(tzinfo=tz)
                candidates = [lt for sched, lt in rules if sched.matches(when)]
                if base is not None:
                    candidates.append(base)
                if not candidates:
                    return None  # no lifetime applies to this snapshot: keep it
                return longest(candidates, when).expires(when)
            return None

        return TargetRetention("custom", expires, now)

    def plan_task(self, now: datetime) -> PlanTask:
        return PlanTask(
            sources=list(self.source_datasets),
            target=self.target_dataset,
            selection=self.selection(),
            recursive=self.recursive,
            exclude=list(self.exclude),
            readonly=self.readonly,
            allow_from_scratch=self.allow_from_scratch,
            allow_rollback=self.allow_rollback,
            replicate=self.replicate,
            hold_base=self.hold_base,
            retention=self.retention(now),
        )


def _valid(name: str, field_name: str) -> None:
    try:
        validate_dataset(name, field_name)
    except ValueError as exc:
        raise TaskError(str(exc)) from exc


def suggest_name(task: ReplicationTask) -> str:
    """Like TrueNAS: sources and destination, e.g. ``tank-data-to-backup-data``."""
    src = ",".join(task.source_datasets)
    raw = f"{src}-to-{task.target_dataset}"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", raw).strip("-.")
    return name[:100] or "replication"
