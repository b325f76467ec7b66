#!/usr/bin/python
# Copyright (c) zfs.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: zfs_replication
short_description: Replicate ZFS snapshots to or from another host over SSH, or between datasets of this host
version_added: 0.1.0
description:
  - Replicates the snapshots of one or more ZFS datasets (filesystems or zvols) that match a naming schema
    to a target dataset, on another host over SSH (O(transport=ssh)) or on this host (O(transport=local)).
  - With O(direction=push) the module runs on the source host and sends to the target; with O(direction=pull) it
    runs on the target host and fetches from the source. The first run sends everything (a full stream of the
    oldest selected snapshot, then one incremental stream); later runs send only what is new.
  - Each dataset's incremental base is the newest snapshot present on both sides with the same guid; names
    alone never decide.
  - A target that has diverged (it has snapshots after the common one that the source lacks), or that shares
    no snapshot with the source, is refused with a clear error and left untouched unless O(allow_rollback) or
    O(allow_from_scratch) consents. Every destruction is decided on guids and listed in the plan, which check mode
    shows - snapshots destroyed first, a rollback to the common snapshot, what a C(zfs recv -F) replaces, and
    retention. C(zfs recv -F) is used only for a full stream into an existing target that O(allow_from_scratch)
    allows; incremental streams never use it.
  - One recursive listing per side per run, whatever the number of datasets. The data goes
    C(zfs send [| pv] [| compress] | ssh host '[mbuffer |] [decompress |] zfs recv') as an OS pipeline (with
    O(transport=ssh+netcat) over C(nc) instead of ssh, with O(transport=local) without either); Python only starts it
    and checks every stage.
  - Works with OpenZFS 2.x and with older command lines such as zfs-fuse; the capabilities of each host are
    probed once per run and reported.
author:
  - zfs.replication contributors (@zfs-replication)
extends_documentation_fragment:
  - zfs.replication.ssh
  - zfs.replication.task_run
  - zfs.replication.attributes
attributes:
  check_mode:
    support: full
    details: Lists both sides and returns the plan (per dataset, the streams it would send) without sending anything.
  diff_mode:
    support: full
    details: Shows the target's snapshot lists before and after (planned, in check mode).
  idempotent:
    support: full
    details: A run with nothing new to send reports C(changed=false).
options:
  state:
    description:
      - V(present) replicates.
      - V(absent) releases the holds this task keeps on its base snapshots (on both sides) and replicates nothing;
        use it when a task is removed, so its snapshots can be pruned again.
    type: str
    choices: [present, absent]
    default: present
  name:
    description:
      - Name of the replication task, used in logs and in the hold tag C(zfs.replication:<name>).
      - When omitted it is made from the sources and the target, like TrueNAS suggests one.
      - It names the task's lock, log and state files C(repl-<name>) in O(state_dir) and O(log_dir), the same
        files the P(zfs.replication.scheduler#role) role's timer of the task uses.
    type: str
  source_datasets:
    description:
      - Datasets or zvols on the source host whose snapshots are replicated (this host with O(direction=push) or
        O(transport=local), the O(ssh) host with O(direction=pull)).
      - With one source, O(target_dataset) is its copy. With several, each lands in
        O(target_dataset)/<last component of the source>, and O(target_dataset) is created when missing.
    type: list
    elements: str
    required: true
  target_dataset:
    description:
      - Dataset on the target host that receives the replica.
      - When it does not exist, it is created by the first receive; its parent must exist (only the last path
        component is created). A zvol cannot be the parent of a target.
    type: str
    required: true
  direction:
    description:
      - V(push) runs on the source host and sends to the host in O(ssh).
      - V(pull) runs on the target host and fetches from the host in O(ssh); O(naming_schema) (or
        O(periodic_snapshot_tasks)) is then required, as the remote snapshots are chosen by name.
    type: str
    choices: [push, pull]
    default: push
  transport:
    description:
      - V(ssh) carries the stream through the OpenSSH client (encrypted).
      - V(ssh+netcat) uses SSH for control only and sends the data over a plain TCP connection between the hosts
        (C(nc)). Faster, but the data is B(not encrypted) and not integrity-protected beyond the checksums of the ZFS
        stream itself. Anyone who can see the traffic can read it, and anyone on the path can tamper with it.
        Each stream starts with a fresh random token that the receiving side checks before C(zfs recv) starts, so
        another host or user who connects to the port first cannot feed data into the receive (the stream is
        refused, and retried with a new port and token when O(retries) allows). The token is not on any command
        line. It does not protect the data. Use this transport only on a network you trust completely.
        It needs an explicit O(netcat) port range.
      - V(local) replicates to a dataset on this host (O(direction=push) only).
    type: str
    choices: [ssh, ssh+netcat, local]
    default: ssh
  netcat:
    description:
      - Options of O(transport=ssh+netcat). One side listens (the active side, O(netcat.active_side)), the other connects.
      - Needs the OpenBSD C(nc) (options C(-l) and C(-N)) on both hosts, C(dd) on the receiving one and C(ss) on the listening one.
      - When a stream fails (or the run is stopped), both sides end their processes, and no C(nc -l) or C(zfs recv) is left behind.
    type: dict
    suboptions:
      active_side:
        description:
          - Which host opens the port (TrueNAS "Netcat Active Side"). V(local) is the host the task runs on, V(remote) the
            host in O(ssh). Unset means the receiving side listens (V(remote) for push, V(local) for pull).
          - When the sending side listens, whoever connects to its port first is sent the stream (the receive then fails
            and says so); the stream token still keeps foreign data out of C(zfs recv). Open the port range between the two
            hosts only.
          - V(local) needs O(netcat.listen_address).
        type: str
        choices: [local, remote]
      port_min:
        description: Lowest port the listening side may listen on.
        type: int
        required: true
      port_max:
        description: Highest port the listening side may listen on.
        type: int
        required: true
      listen_address:
        description:
          - Address the listening side listens on (C(nc -l) binds only this address). When the remote host listens it
            defaults to the address the other side connects to (O(netcat.connect_address), else O(ssh.host)); when this
            host listens (pull, or O(netcat.active_side=local)) it is required.
          - Set it when the other host reaches the listening one through an address it cannot bind (NAT).
        type: str
      connect_address:
        description:
          - Address the connecting side connects to. Defaults to O(ssh.host) when the remote host listens, else to
            O(netcat.listen_address).
        type: str
  recursive:
    description:
      - Also replicate every child dataset of each source, each with its own incremental base.
    type: bool
    default: false
  exclude:
    description:
      - Child datasets (and their descendants) of the sources not to replicate. Needs O(recursive=true).
    type: list
    elements: str
    default: []
  replicate:
    description:
      - Full filesystem replication. The whole tree goes in one C(zfs send -R) stream per run, with every
        snapshot between the base and the newest selected one (the selection only picks the newest), all
        properties, and descendants created on the source later. Needs O(recursive=true); O(exclude) is not allowed.
      - Every received filesystem of the tree gets C(canmount=noauto), C(setuid=off) and C(devices=off) and keeps the
        target's mountpoint, as with O(properties) (C(canmount) is set on the children after the receive).
      - To a target whose C(zfs recv) lacks C(-x)/C(-o) (such as zfs-fuse) the stream always carries the source's
        properties, so a source tree that sets a mountpoint (other than C(none) or C(legacy)) is refused before
        anything is sent; replicate it with O(replicate=false), or C(zfs inherit mountpoint) on the source.
      - Snapshots destroyed on the source are not destroyed on the target (no C(recv -F)) unless O(allow_rollback=true).
    type: bool
    default: false
  naming_schema:
    description:
      - Replicate the snapshots whose names match one of these strftime schemas, like C(auto-%Y-%m-%d_%H-%M).
      - Each schema must contain C(%Y), C(%m), C(%d), C(%H) and C(%M).
      - Required for O(direction=pull) unless O(periodic_snapshot_tasks) is given.
    type: list
    elements: str
    default: []
  also_include_naming_schema:
    description:
      - More naming schemas whose snapshots are replicated too (TrueNAS's "also include").
    type: list
    elements: str
    default: []
  periodic_snapshot_tasks:
    description:
      - Replicate the snapshots of these periodic snapshot tasks; each needs its C(naming_schema).
    type: list
    elements: dict
    default: []
  name_regex:
    description:
      - Replicate the snapshots whose names fully match this Python regular expression, instead of naming schemas.
    type: str
  only_matching_schedule:
    description:
      - Replicate only snapshots whose time (read from the name by the naming schemas) is a slot of
        O(restrict_schedule), or of O(schedule) when that is not given.
    type: bool
    default: false
  schedule:
    description:
      - The task's schedule (a preset V(hourly), V(daily), V(weekly), V(monthly), or a dict of cron fields
        C(minute), C(hour), C(dom), C(month), C(dow) and optional C(begin)/C(end) times).
      - The module uses it for O(only_matching_schedule); the scheduler role turns it into a systemd timer.
    type: raw
  restrict_schedule:
    description:
      - The schedule that O(only_matching_schedule) matches snapshot times against, when it differs from O(schedule).
      - It also restricts when the task runs (TrueNAS "Restrict Replication Schedule"), in its run window (its days and
        C(begin)..C(end); a window past midnight belongs to the day it begins on). A run of the task's timer or unit
        started outside the window sends nothing and records result C(waiting) with the next window's start, and
        the scheduler role's timer also fires at each window's start.
      - This module runs when the playbook runs it, like TrueNAS's "Run Now", so it ignores the window.
    type: raw
  snapshots:
    description:
      - Run once for these snapshots only (names after the C(@)), still subject to the selection.
    type: list
    elements: str
  timezone:
    description:
      - Time zone of the times in snapshot names without C(%z) and of the schedules (IANA name or C(UTC)).
        When omitted, the zone of the host that made the snapshots - this host with O(direction=push), the source
        host (read from its C(/etc/localtime)) with O(direction=pull).
    type: str
  properties:
    description:
      - Send dataset properties with the streams (C(zfs send -p)).
      - Whatever the source sends, received filesystems never take its C(mountpoint) (they inherit the target's,
        C(zfs recv -x mountpoint)), and get C(canmount=noauto) (no mount at boot or on C(zfs mount -a)),
        C(setuid=off) and C(devices=off), unless O(properties_override) sets them.
      - An incremental receive sets those values (and O(properties_override)'s) with C(zfs recv -o) only where the
        existing target does not already hold them as its own (local) values, which a received value never overrides
        (each C(-o) costs a commit per received snapshot). The plan shows what is set and what is held.
      - On a target whose C(zfs recv) lacks C(-x)/C(-o) (such as zfs-fuse) the streams go without C(-p), and the
        source's local properties (minus those above and O(properties_exclude)) are set after each receive,
        as local values, so a run interrupted after a receive never leaves the source's mountpoint on the target.
    type: bool
    default: true
  properties_exclude:
    description:
      - Properties not to receive (C(zfs recv -x)).
      - On a target whose command line lacks C(-x) (such as zfs-fuse) the streams go without C(-p) and the source's
        local properties, minus these, are set on the target after each receive (they show as local, not received).
        With O(replicate=true) such a target is refused, as C(send -R) always carries the properties.
    type: list
    elements: str
    default: []
  properties_override:
    description:
      - Properties to set on the received datasets (C(zfs recv -o)), whether or not O(properties) are sent.
        On older command lines they are set with C(zfs set) after each receive.
      - This is how to ask for what the replicas get by default instead of the source's values, for example
        C(mountpoint=/srv/replica), C(canmount=on), C(setuid=on) or C(devices=on).
    type: dict
    default: {}
  readonly:
    description:
      - V(set) sets C(readonly=on) on the target dataset (children inherit it) after it is received.
      - V(require) refuses to replicate into an existing target that is not read-only.
      - V(ignore) leaves the property alone.
    type: str
    choices: [set, require, ignore]
    default: set
  allow_from_scratch:
    description:
      - When the target shares no snapshot with the source (or exists without snapshots), destroy the target's
        snapshots and replace its data with a full stream (C(recv -F)). Without it such a target is refused untouched.
      - The plan lists every snapshot destroyed (checked against the guid it was planned on right before) and, with
        O(replicate), every target descendant the C(zfs recv -R -F) stream replaces.
    type: bool
    default: false
  allow_rollback:
    description:
      - When the target has snapshots newer than the common one, or was modified after it, destroy those snapshots
        (each checked against the guid it was planned on) and roll the target back to the common snapshot with
        C(zfs rollback), a step of its own in the plan, before the incremental stream. Without it such a target is
        refused untouched.
      - The incremental stream is never received with C(-F), so target snapshots taken during a transfer and (with
        O(replicate)) datasets the source no longer has are kept.
      - OpenZFS reports whether the target was written to since the common snapshot (C(written)); older command lines
        do not, so there the rollback is planned whenever something is sent.
    type: bool
    default: false
  retention_policy:
    description:
      - V(source) destroys target snapshots of the task's selection that no longer exist on the source.
      - V(custom) destroys target snapshots whose time (from the name) plus O(lifetime_value) O(lifetime_unit)
        (or the longest matching O(lifetimes) entry) has passed.
      - V(none) destroys nothing.
      - Never destroyed are the newest snapshot both sides have in common after the run (by guid, whatever its name on
        either side), held snapshots, snapshots outside the task's selection, and anything on a target that shares no
        snapshot with the source.
      - Decided on guids, on the target as it is after the run's sends; only what the logged plan listed is destroyed.
      - In pull mode without O(timezone), snapshot names are read in the source host's time zone.
    type: str
    choices: [source, custom, none]
    default: none
  lifetime_value:
    description:
      - Lifetime of target snapshots for O(retention_policy=custom).
    type: int
  lifetime_unit:
    description:
      - Unit of O(lifetime_value).
    type: str
    choices: [hour, day, week, month, year]
  lifetimes:
    description:
      - Extra lifetimes for O(retention_policy=custom), each with C(schedule), C(lifetime_value) and
        C(lifetime_unit); a snapshot whose time is a slot of the schedule lives at least that long.
    type: list
    elements: dict
    default: []
  compression:
    description:
      - Compress the stream in transit with this tool, which must exist on both hosts.
      - V(plzip) is TrueNAS's PLZIP (parallel lzip, C(plzip -c) / C(plzip -d -c)).
    type: str
    choices: [lz4, zstd, pigz, xz, plzip]
  speed_limit:
    description:
      - Limit the stream to this many bytes per second (C(pv -L) on the sending side, before compression).
    type: int
  progress_interval:
    description:
      - Every this many seconds while a stream runs, log its progress (bytes so far of the size C(zfs send -nP)
        estimated, percent, rate over the interval, ETA) and, in a timer's run, write it to the task's state file and
        metrics. C(0) turns it off. Needs C(pv) on the sending host, like the byte counts.
      - The size is estimated when a stream's first progress line is due, so a stream that ends sooner (the small
        incrementals of a catch-up) costs no estimate; its C(estimated_bytes) in the result is then null.
    type: int
    default: 30
  buffer_size:
    description:
      - Put an C(mbuffer) of this size (like C(64M)) before C(zfs recv) on the receiving side.
    type: str
  create_snapshot:
    description:
      - When a source (or, with O(recursive=true), a dataset of its tree) has no snapshot matching the task's selection,
        take one now, named by the first naming schema (C(zfs snapshot -r) for a tree), then replicate.
        TrueNAS does this when it sets up a replication of local sources without snapshots.
      - Needs O(direction=push).
    type: bool
    default: false
  auto_snapshot_task:
    description:
      - Give the sources a periodic snapshot task of their own, derived from this task (TrueNAS's replication wizard
        creates one for local sources that have none), one per source dataset, with this task's O(recursive) and
        O(exclude), its first O(naming_schema), its O(schedule) and O(timezone), and the target's lifetime with
        O(retention_policy=custom) (else 2 weeks, as TrueNAS). Unlike O(create_snapshot), which takes one snapshot
        when a run finds none, it keeps taking and pruning snapshots on the schedule.
      - It is for the P(zfs.replication.scheduler#role) role and C(playbooks/site.yml), which install that snapshot task
        (C(NAME-auto), or C(NAME-auto-LEAF) per source with several) as a timer of its own, run it before this task,
        and remove it with this task or when this option is turned off. This module only validates it; it needs
        O(direction=push), a O(schedule) and a O(naming_schema).
    type: bool
    default: false
  mount:
    description:
      - Mount the filesystems that received snapshots, after the run (not those with C(canmount=off), no mountpoint,
        or a mountpoint that came from the source, directly or from a received parent). Replicas are always
        received unmounted (C(zfs recv -u)).
      - They are mounted with C(nosuid,nodev) whatever arrived, unless O(properties_override) sets C(setuid) or
        C(devices) to C(on).
    type: bool
    default: false
  hold_base:
    description:
      - Hold the newest snapshot both sides have in common with the tag C(zfs.replication:<name>) on the source and
        the target, and move the hold forward after each successful run, so that pruning by any tool cannot
        break the incremental chain. The previous base is released once the new one is held.
    type: bool
    default: true
  large_block:
    description:
      - Send large blocks as such (C(zfs send -L)). Unset means used when both sides run OpenZFS.
    type: bool
  embed:
    description:
      - Send embedded-data blocks as such (C(zfs send -e)). Unset means used when both sides run OpenZFS.
    type: bool
  compressed:
    description:
      - Send blocks compressed as they are on disk (C(zfs send -c)). Unset means used when both sides run OpenZFS.
    type: bool
  raw:
    description:
      - Send encrypted datasets raw (C(zfs send -w)); the target stores the ciphertext and never sees the key
        (its C(keystatus) stays C(unavailable) until someone loads the key there).
      - Unset means raw for encrypted sources. V(false) sends them decrypted (the source key must be loaded).
      - OpenZFS cannot send an encrypted dataset's properties without a raw stream, so V(false) with O(properties=true)
        or O(replicate=true) over an encrypted source is refused before anything is sent.
    type: bool
  encryption:
    description:
      - Create the target encrypted with a new key (for an unencrypted source); children inherit it.
      - Applies when the task creates the target; an existing unencrypted target stays as it is.
      - Needs native encryption (OpenZFS >= 0.8) on the target.
    type: bool
    default: false
  encryption_key_format:
    description:
      - V(hex) (64 hexadecimal digits) or V(passphrase) (8 to 512 characters).
    type: str
    choices: [hex, passphrase]
    default: hex
  encryption_key:
    description:
      - The target's key. It goes to the target through the ssh connection's standard input, never on a command line.
      - Or let the first run generate a hex key and keep it on this host, with O(encryption_key_generate).
    type: str
  encryption_key_location:
    description:
      - Path on the target where the key is stored (mode 0600) and which becomes the dataset's C(keylocation).
      - When unset the key stays with the task (TrueNAS "store the key in the sending system"); the target's
        C(keylocation) is C(prompt) and the module loads the key itself when it needs to.
    type: path
  encryption_key_generate:
    description:
      - Generate the target's key instead of giving it (TrueNAS "Generate Encryption Key"). Needs O(encryption=true) and
        O(encryption_key_format=hex); O(encryption_key) must not be given.
      - The first run makes a 32-byte key with the operating system's random generator and keeps it, as 64 hexadecimal
        digits, in C(<state_dir>/keys/repl-<name>.key) on the host the module runs on (the source host with
        O(direction=push) or O(transport=local), the B(target) host with O(direction=pull)), in a directory of mode 0700,
        the file mode 0600, written atomically. Every later run reads it from there; the key is never generated again,
        and it goes to C(zfs) on standard input only, never on a command line, in the log, the result, the state file
        or the metrics. RV(encryption_key_file) and M(zfs.replication.zfs_replication_info) give the path.
      - B(Export the key and keep it safe) (a vault, a password manager); without it the replica cannot be read. The
        module never returns the key, so an ordinary run's output (at any verbosity, in registered results, in
        callbacks and job logs) cannot carry it; export it with a task of its own that reads the file with
        M(ansible.builtin.slurp) under C(no_log), as in the examples. Removing the task keeps the key file.
      - When the key file is missing and the target already exists encrypted with the task's key, the run fails, says
        where the key was expected and changes nothing; it never makes a new key, which could not unlock the target.
        Put the exported key back there (mode 0600) to go on.
      - Check mode writes no key; it reports the change a first run makes.
    type: bool
    default: false
  sudo:
    description:
      - Run the remote host's zfs commands through C(sudo -n) (TrueNAS "Use Sudo For ZFS Commands"), for an
        O(ssh.user) that is not root. Every other command there (the shell, pv, compressors, nc) runs as that user.
      - "The remote host needs a sudoers rule that lets that user run zfs without a password, such as
        C(zfsrepl ALL=(root) NOPASSWD: /usr/sbin/zfs); without one the run fails and names the rule."
      - Without sudo, a user other than root needs the permissions the task uses delegated with C(zfs allow) (the user
        guide lists them for push, pull and retention). A refused zfs command fails with the C(zfs allow) line that
        grants what it needs. Linux cannot delegate mounting, so such a user's receives stay unmounted.
      - Not with O(transport=local); use O(local_sudo).
    type: bool
    default: false
  local_sudo:
    description:
      - O(sudo) for the zfs commands on the host the task runs on (where the module or the task's timer runs).
    type: bool
    default: false
  target_access:
    description:
      - V(full) (the default) - the task's SSH key may run any command on the target, as with TrueNAS, syncoid or
        zfs-autobackup.
      - V(append_only) - for a push whose source may be compromised one day, the target's C(authorized_keys) line
        of the task's key (written by the C(ssh_trust) playbook) forces the append-only receiver
        (C(zfs-replication-receive), installed by the scheduler role on the target). It runs only what a push needs
        inside O(target_dataset) (list, C(zfs recv -u), C(recv -A), the task's holds, C(readonly=on)) and refuses the
        rest (destroy, rollback, C(recv -F), mount, other datasets, any shell), logging each refusal on the target.
        Whoever owns the source can then add snapshots to the backup but never remove one.
      - With V(append_only) the target host applies O(retention_policy=custom) itself (the scheduler role derives a
        pruning task there from the same declaration); the source never destroys anything on the target.
      - V(append_only) needs O(direction=push) and O(transport=ssh), and excludes O(allow_rollback),
        O(allow_from_scratch), O(mount), O(encryption) (send an encrypted source raw instead) and
        O(retention_policy=source) (the target cannot see the source's snapshots).
    type: str
    choices: [full, append_only]
    default: full
  retries:
    description:
      - How often a stream is retried after a transient failure (a dropped connection), with exponential backoff.
        Logical failures (a modified target, a full pool) are not retried.
    type: int
    default: 5
  retry_delay:
    description:
      - Seconds before the first retry; doubled for each further one.
    type: float
    default: 2
  parallel_transfers:
    description:
      - How many datasets are transferred at the same time (1 to 8). A dataset starts only after its parent's
        transfer has finished, and a failed first transfer of a parent skips its children; where a dataset and all
        its parents only add snapshots to targets that exist (incremental streams, nothing destroyed or rolled
        back before them; target retention after them does not count), as in a catch-up, it does not wait.
      - Unset, 4 at a time, and up to 8 while the streams are small (the last one to end moved under 64 MiB, or
        without pv took under 2 seconds, and fewer than 4 of those running have run 30 seconds), as in a catch-up
        after downtime. A small incremental stream spends most of its time waiting for the receive to commit each
        snapshot's transaction group, however long that takes on a slow host, and streams received at the same
        time share those waits; larger streams are bounded by disks and links.
        On a legacy zfs (zfs-fuse, whose one daemon is already busy at 4 receives) unset stays at 4.
      - Set V(1) to transfer one dataset at a time (TrueNAS's behaviour), for example on slow disks or links; any
        number set is never exceeded.
      - Over SSH each transfer is a session on the one shared connection; OpenSSH servers allow 10 by default
        (C(MaxSessions)); on a server that allows fewer, set a number below its limit. With
        O(transport=ssh+netcat) datasets are always transferred one at a time.
    type: int
notes:
  - Received datasets are not mounted (C(zfs recv -u)), and received filesystems get C(canmount=noauto) (set locally on
    older command lines) so that neither a boot nor C(zfs mount -a) mounts them; on OpenZFS their C(mountpoint) is not
    received either (C(recv -x mountpoint)), so a source's paths never cover the target host's. Override with
    O(properties_override) (C(canmount), C(mountpoint)) or mount with O(mount=true).
  - Byte counts need C(pv) on the sending host; without it RV(bytes) is null.
  - C(zfs recv -F) is used only with O(allow_from_scratch) or O(allow_rollback).
seealso:
  - name: OpenZFS zfs-send(8)
    description: The send command and its stream types.
    link: https://openzfs.github.io/openzfs-docs/man/master/8/zfs-send.8.html
"""

EXAMPLES = r"""
- name: Replicate tank/data and its children to the backup host
  zfs.replication.zfs_replication:
    source_datasets: [tank/data]
    target_dataset: backup/tank-data
    recursive: true
    exclude: [tank/data/scratch]
    naming_schema: ["auto-%Y-%m-%d_%H-%M"]
    ssh:
      host: backup.example.net
      user: root
      private_key_file: /root/.ssh/replication_ed25519
      known_hosts_file: /etc/zfs-replication/known_hosts
      cipher: fast

- name: Pull from a production host, keep 2 weeks of snapshots on the backup
  zfs.replication.zfs_replication:
    direction: pull
    source_datasets: [tank/db]
    target_dataset: backup/prod-db
    naming_schema: ["auto-%Y-%m-%d_%H-%M"]
    retention_policy: custom
    lifetime_value: 2
    lifetime_unit: week
    compression: zstd
    ssh:
      host: prod.example.net
      known_hosts_file: /etc/zfs-replication/known_hosts

- name: Keep a local copy on another pool
  zfs.replication.zfs_replication:
    source_datasets: [tank/vm]
    target_dataset: archive/vm
    transport: local
    naming_schema: ["daily-%Y%m%d-%H%M"]

- name: Replicate into a new encrypted dataset whose key the first run generates (kept in /var/lib/zfs-replication/keys)
  zfs.replication.zfs_replication:
    name: data-offsite
    source_datasets: [tank/data]
    target_dataset: backup/tank-data
    naming_schema: ["auto-%Y-%m-%d_%H-%M"]
    encryption: true
    encryption_key_format: hex
    encryption_key_generate: true
    ssh:
      host: backup.example.net
      known_hosts_file: /etc/zfs-replication/known_hosts
  register: offsite

- name: Export the generated key (without it the replica cannot be read)
  ansible.builtin.slurp:
    src: "{{ offsite.encryption_key_file }}"
  register: offsite_key
  no_log: true

- name: Keep it on the controller, readable by its owner only (or put it in a vault)
  ansible.builtin.copy:
    content: "{{ offsite_key.content | b64decode }}"
    dest: "{{ playbook_dir }}/keys/{{ inventory_hostname }}-data-offsite.key"
    mode: "0600"
  delegate_to: localhost
  no_log: true

- name: Show what would be sent
  zfs.replication.zfs_replication:
    source_datasets: [tank/data]
    target_dataset: backup/tank-data
    naming_schema: ["auto-%Y-%m-%d_%H-%M"]
    ssh:
      host: backup.example.net
      known_hosts_file: /etc/zfs-replication/known_hosts
  check_mode: true
  register: repl

- name: Print the plan
  ansible.builtin.debug:
    var: repl.plan
"""

RETURN = r"""
task:
  description: The task's name (given or suggested).
  returned: always
  type: str
  sample: tank-data-to-backup-tank-data
plan:
  description: Per source dataset, what the run does (or would do in check mode).
  returned: when O(state=present)
  type: list
  elements: dict
  contains:
    source:
      description: Source dataset.
      type: str
    target:
      description: Target dataset.
      type: str
    action:
      description: V(full), V(incremental), V(in_sync), V(rollback), V(no_snapshots) or V(refused).
      type: str
    destroy_before:
      description: Target snapshots destroyed before sending (only with O(allow_from_scratch) or O(allow_rollback)).
      type: list
      elements: str
    destroy_after:
      description: Target snapshots destroyed by retention after sending, each as [name, reason].
      type: list
      elements: list
    base:
      description: The incremental base (newest snapshot with the same guid on both sides), if any.
      type: str
    skipped:
      description:
        - A first transfer (no common snapshot) with O(retention_policy=custom) does not send the snapshots that the target's
          retention would destroy right after; they are listed here, each as [name, reason]. The newest selected snapshot is
          always sent (it becomes the next run's base).
      type: list
      elements: list
    sends:
      description: The streams, each with C(mode) (V(full), V(I), V(i)), C(base), C(snapshot), C(snapshots) and C(description).
      type: list
      elements: dict
    pending:
      description: Snapshot names this run creates on the target.
      type: list
      elements: str
    message:
      description: Why a dataset was refused or has nothing to send.
      type: str
  sample:
    - source: tank/data
      target: backup/tank-data
      action: incremental
      base: auto-2026-11-27_00-00
      pending: [auto-2026-11-28_00-00]
      message: ""
      sends:
        - mode: I
          base: auto-2026-11-27_00-00
          snapshot: auto-2026-11-28_00-00
          snapshots: [auto-2026-11-28_00-00]
          description: incremental -I tank/data@auto-2026-11-27_00-00 -> @auto-2026-11-28_00-00 (1 snapshots) -> backup/tank-data
datasets:
  description: Per target dataset, what was sent.
  returned: when O(state=present)
  type: dict
  sample:
    backup/tank-data:
      source: tank/data
      action: incremental
      base: auto-2026-11-27_00-00
      snapshots_sent: [auto-2026-11-28_00-00]
      destroyed: []
      attempts: 1
      bytes: 1048576
      duration: 0.84
      error: null
snapshots_sent:
  description: Number of snapshots created on the target by this run.
  returned: when O(state=present)
  type: int
  sample: 3
bytes:
  description: Bytes of stream sent (counted by C(pv)); null when C(pv) is not installed.
  returned: when O(state=present)
  type: int
  sample: 1048576
duration:
  description: Seconds the run took, listings included.
  returned: when O(state=present)
  type: float
  sample: 2.31
errors:
  description: Datasets that were refused or failed, each with the reason and the fix.
  returned: when O(state=present)
  type: list
  elements: str
log:
  description: The run's log lines (plan, streams, results).
  returned: always
  type: list
  elements: str
released:
  description: With O(state=absent), the snapshots whose hold was released, per side (C(source), C(target)).
  returned: when O(state=absent)
  type: dict
  sample: {source: [tank/data@auto-2026-11-28_00-00], target: [backup/data@auto-2026-11-28_00-00]}
lock_file:
  description: The task's lock file, when the module failed because another run of the task still held it after O(lock_wait).
  returned: when another run holds the task's lock
  type: str
  sample: /var/lib/zfs-replication/repl-offsite.lock
lock_holder:
  description: The pid of the process that held the task's lock (null when it had not written its pid yet).
  returned: when another run holds the task's lock
  type: int
  sample: 4242
encryption_key_file:
  description:
    - With O(encryption_key_generate=true), where the task's key is kept on the host the module ran on (the path, never
      the key).
  returned: when O(encryption_key_generate=true) and O(state=present)
  type: str
  sample: /var/lib/zfs-replication/keys/repl-data-offsite.key
capabilities:
  description: What the zfs command line of each side supports (C(source) and C(target)), from the probe.
  returned: when O(state=present)
  type: dict
  sample:
    source: {family: OpenZFS 2.3.2, version: 2.3.2, resumable: true, list_parsable: true}
    target: {family: "legacy zfs (no 'zfs version'; e.g. zfs-fuse)", version: null, resumable: false}
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zfs.replication.plugins.module_utils._args import SSH_SPEC
from ansible_collections.zfs.replication.plugins.module_utils._log import LOGGING_LEVEL_SPEC
from ansible_collections.zfs.replication.plugins.module_utils._replication import ReplicationTask, TaskError, release_holds
from ansible_collections.zfs.replication.plugins.module_utils._results import snapshot_diff
from ansible_collections.zfs.replication.plugins.module_utils._runner import TASK_RUN_SPEC, ConfigError, TaskBusy, run_from_module


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="present", choices=["present", "absent"]),
            name=dict(type="str"),
            source_datasets=dict(type="list", elements="str", required=True),
            target_dataset=dict(type="str", required=True),
            direction=dict(type="str", default="push", choices=["push", "pull"]),
            transport=dict(type="str", default="ssh", choices=["ssh", "ssh+netcat", "local"]),
            ssh=SSH_SPEC,
            netcat=dict(
                type="dict",
                options=dict(
                    port_min=dict(type="int", required=True),
                    port_max=dict(type="int", required=True),
                    listen_address=dict(type="str"),
                    connect_address=dict(type="str"),
                    active_side=dict(type="str", choices=["local", "remote"]),
                ),
            ),
            recursive=dict(type="bool", default=False),
            exclude=dict(type="list", elements="str", default=[]),
            replicate=dict(type="bool", default=False),
            naming_schema=dict(type="list", elements="str", default=[]),
            also_include_naming_schema=dict(type="list", elements="str", default=[]),
            periodic_snapshot_tasks=dict(type="list", elements="dict", default=[]),
            name_regex=dict(type="str"),
            only_matching_schedule=dict(type="bool", default=False),
            schedule=dict(type="raw"),
            restrict_schedule=dict(type="raw"),
            snapshots=dict(type="list", elements="str"),
            timezone=dict(type="str"),
            properties=dict(type="bool", default=True),
            properties_exclude=dict(type="list", elements="str", default=[]),
            properties_override=dict(type="dict", default={}),
            readonly=dict(type="str", default="set", choices=["set", "require", "ignore"]),
            allow_from_scratch=dict(type="bool", default=False),
            allow_rollback=dict(type="bool", default=False),
            retention_policy=dict(type="str", default="none", choices=["source", "custom", "none"]),
            lifetime_value=dict(type="int"),
            lifetime_unit=dict(type="str", choices=["hour", "day", "week", "month", "year"]),
            lifetimes=dict(type="list", elements="dict", default=[]),
            compression=dict(type="str", choices=["lz4", "zstd", "pigz", "xz", "plzip"]),
            speed_limit=dict(type="int"),
            progress_interval=dict(type="int", default=30),
            buffer_size=dict(type="str"),
            hold_base=dict(type="bool", default=True),
            create_snapshot=dict(type="bool", default=False),
            auto_snapshot_task=dict(type="bool", default=False),
            mount=dict(type="bool", default=False),
            large_block=dict(type="bool"),
            embed=dict(type="bool"),
            compressed=dict(type="bool"),
            raw=dict(type="bool"),
            encryption=dict(type="bool", default=False),
            encryption_key_format=dict(type="str", default="hex", choices=["hex", "passphrase"]),
            encryption_key=dict(type="str", no_log=True),
            encryption_key_location=dict(type="path"),
            encryption_key_generate=dict(type="bool", default=False),
            sudo=dict(type="bool", default=False),
            local_sudo=dict(type="bool", default=False),
            target_access=dict(type="str", default="full", choices=["full", "append_only"]),
            retries=dict(type="int", default=5),
            parallel_transfers=dict(type="int"),
            retry_delay=dict(type="float", default=2.0),
            logging_level=LOGGING_LEVEL_SPEC,
            **TASK_RUN_SPEC,
        ),
        required_if=[
            ("transport", "ssh", ("ssh",)),
            ("transport", "ssh+netcat", ("ssh", "netcat")),
            ("retention_policy", "custom", ("lifetime_value", "lifetimes"), True),
        ],
        required_together=[("lifetime_value", "lifetime_unit")],
        mutually_exclusive=[("name_regex", "naming_schema"), ("name_regex", "also_include_naming_schema")],
        supports_check_mode=True,
    )
    if module.params["state"] == "absent":
        try:
            module.exit_json(**release_holds(module.params, check_mode=module.check_mode))
        except TaskError as exc:
            module.fail_json(msg=str(exc), changed=False)
    try:
        # Bad input fails here, before the task's lock is taken or its history touched.
        name = ReplicationTask.from_params(module.params).name
    except TaskError as exc:
        module.fail_json(msg=str(exc), changed=False)
    # The same lock, log, state file and metrics as the task's timer (one task, one lock, one history).
    try:
        run = run_from_module("replication", name, module.params, module.check_mode)
    except TaskBusy as exc:
        module.fail_json(msg=f"replication task {name}: {exc}; nothing was changed: run it again when that run has finished, "
                             "or give a longer lock_wait", changed=False, lock_file=str(exc.lock_file), lock_holder=exc.holder)
    except ConfigError as exc:
        module.fail_json(msg=str(exc), changed=False)
    result = run.result
    if result is None:  # the engine raised: bad input found late, an unreachable host, a signal, a bug
        error = run.error
        message = run.state.get("error") or str(error)
        if error is None or isinstance(error, TaskError):
            module.fail_json(msg=message, changed=False)
        module.fail_json(msg=message, changed=False, exception="".join(traceback.format_exception(type(error), error, error.__traceback__)))
    out = result.as_dict()
    if module._diff:
        out["diff"] = snapshot_diff(result.before, result.after, "target snapshots")
    if result.failed:
        module.fail_json(msg="; ".join(result.errors), **out)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
