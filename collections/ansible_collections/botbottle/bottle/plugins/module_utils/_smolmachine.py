# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Plan changes to one smolvm machine: normalise, compare, decide. No I/O here.

**PRIVATE** to the botbottle.bottle collection.

The ``smolmachine`` module reads the machine's record (``machine ls --json``
plus the state database for what ``ls`` does not show), turns the module's
parameters into the same normalised shape, and asks :func:`plan` what to do.
:func:`create_args` and :func:`update_args` turn a plan into ``smolvm machine``
arguments; the egress allow lists always come from the policy compiler
(``_policy.render_smolvm``): exact names as ``=host`` patterns, never bare, and
the deny rules that keep a machine off its host's loopback (the gateway's networks).
smolvm takes deny rules only at ``machine create`` (and ``machine update --no-net``
drops them), so a machine whose record lacks them is deleted and created again.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.botbottle.bottle.plugins.module_utils._bottle import (
    MANAGED_LABEL,
    MANAGED_VALUE,
    POLICY_LABEL,
)

# Fields `smolvm machine update` changes on a stopped machine (allow lists also live).
UPDATABLE = (
    "cpus",
    "memory_mib",
    "env",
    "workdir",
    "mounts",
    "ports",
    "network",
    "allow_hosts",
    "allow_cidrs",
)
# Fields only a new machine can change.
IMMUTABLE = ("image", "command", "labels", "storage_gib")
# Fields only a new machine can change and that no machine may run without: the plan
# re-creates the machine whatever ``recreate`` says.
REPLACE = ("deny_cidrs",)
# Fields whose change needs the machine stopped first.
NEEDS_STOP = ("cpus", "memory_mib", "env", "workdir", "mounts", "ports")
_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")


class PlanError(ValueError):
    """The desired state cannot be reached without an explicit decision."""


def normalize_image(image: str | None, hash_file: Any = None) -> str | None:
    """The image as smolvm records it.

    A directory becomes ``local-dir:<realpath>``; a local archive
    ``local:<sha256 of the file>``; a registry reference stays verbatim.
    ``hash_file(path) -> hexdigest`` may be injected for tests.
    """
    if image is None or image == "":
        return None
    local = image.startswith(("/", "./", "../")) or image.endswith(_ARCHIVE_SUFFIXES)
    if not local:
        return image
    if os.path.isdir(image):
        return "local-dir:" + os.path.realpath(image)
    digest = (hash_file or _sha256_file)(image)
    return "local:" + digest


def _sha256_file(path: str) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


@dataclass(frozen=True)
class MachineSpec:
    """A machine's configuration, normalised for comparison."""

    image: str | None = None
    command: tuple[str, ...] = ()
    cpus: int | None = None
    memory_mib: int | None = None
    storage_gib: int | None = None
    workdir: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    mounts: tuple[tuple[str, str, bool], ...] = ()
    ports: tuple[tuple[int, int], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    network: bool = False
    allow_hosts: tuple[str, ...] = ()
    allow_cidrs: tuple[str, ...] = ()
    # The deny rules (render_smolvm's deny_cidrs; the record's egress_rules).
    deny_cidrs: tuple[str, ...] = ()
    image_source: str | None = field(default=None, compare=False)
    # The compiler's CLI rendering: `machine create` (render_smolvm's cli_args, deny
    # rules included) and `machine update` (its update_args) arguments.
    egress_args: tuple[str, ...] = field(default=(), compare=False)
    egress_update_args: tuple[str, ...] = field(default=(), compare=False)

    def to_dict(self, redact_env: bool = True) -> dict[str, Any]:
        """Plain data for diffs; env values are replaced unless ``redact_env`` is false."""
        return {
            "image": self.image,
            "command": list(self.command),
            "cpus": self.cpus,
            "memory_mib": self.memory_mib,
            "storage_gib": self.storage_gib,
            "workdir": self.workdir,
            "env": {k: ("********" if redact_env else v) for k, v in self.env},
            "mounts": [{"source": s, "target": t, "read_only": ro} for s, t, ro in self.mounts],
            "ports": [{"host": h, "guest": g} for h, g in self.ports],
            "labels": dict(self.labels),
            "network": self.network,
            "allow_hosts": list(self.allow_hosts),
            "allow_cidrs": list(self.allow_cidrs),
            "deny_cidrs": list(self.deny_cidrs),
        }


def _host_key(entry: str) -> str:
    return entry.strip().lower().rstrip(".")


def _cidr_key(entry: Any) -> str:
    return str(ipaddress.ip_network(str(entry).strip(), strict=False))


def _deny_cidrs(record: Mapping[str, Any]) -> tuple[str, ...]:
    """The deny rules in a record's ``egress_rules`` (``{"cidr", "action": "deny"}``)."""
    found = set()
    for rule in record.get("egress_rules") or ():
        if isinstance(rule, Mapping) and rule.get("action") == "deny" and rule.get("cidr"):
            found.add(_cidr_key(rule["cidr"]))
    return tuple(sorted(found))


def desired_spec(
    *,
    image: str | None,
    command: Sequence[str] | None,
    cpus: int | None,
    memory_mib: int | None,
    storage_gib: int | None,
    workdir: str | None,
    env: Mapping[str, Any] | None,
    mounts: Sequence[Mapping[str, Any]] | None,
    ports: Sequence[Mapping[str, Any]] | None,
    labels: Mapping[str, Any] | None,
    smolvm_allow: Mapping[str, Any],
    policy_hash: str,
    hash_file: Any = None,
) -> MachineSpec:
    """The spec the module's parameters ask for (``smolvm_allow`` from ``render_smolvm``)."""
    all_labels = {str(k): str(v) for k, v in (labels or {}).items()}
    all_labels[MANAGED_LABEL] = MANAGED_VALUE
    all_labels[POLICY_LABEL] = policy_hash
    return MachineSpec(
        image=normalize_image(image, hash_file),
        command=tuple(str(c) for c in (command or ())),
        cpus=cpus,
        memory_mib=memory_mib,
        storage_gib=storage_gib,
        workdir=workdir or None,
        env=tuple(sorted((str(k), str(v)) for k, v in (env or {}).items())),
        mounts=tuple(
            sorted(
                (os.path.realpath(str(m["source"])), str(m["target"]), bool(m.get("read_only")))
                for m in (mounts or ())
            )
        ),
        ports=tuple(sorted((int(p["host"]), int(p["guest"])) for p in (ports or ()))),
        labels=tuple(sorted(all_labels.items())),
        network=bool(smolvm_allow.get("allow_hosts") or smolvm_allow.get("allow_cidrs")),
        allow_hosts=tuple(sorted(_host_key(h) for h in smolvm_allow.get("allow_hosts", ()))),
        allow_cidrs=tuple(sorted(str(c) for c in smolvm_allow.get("allow_cidrs", ()))),
        deny_cidrs=tuple(sorted({_cidr_key(c) for c in smolvm_allow.get("deny_cidrs", ())})),
        image_source=image or None,
        egress_args=tuple(str(a) for a in smolvm_allow.get("cli_args", ())),
        egress_update_args=tuple(str(a) for a in smolvm_allow.get("update_args", ())),
    )


def actual_spec(listing: Mapping[str, Any], record: Mapping[str, Any] | None) -> MachineSpec:
    """The spec of an existing machine, from ``machine ls --json`` and its database row."""
    record = record or {}
    cidrs = []
    for text in listing.get("allowed_cidrs") or record.get("allowed_cidrs") or ():
        cidrs.append(str(ipaddress.ip_network(str(text), strict=False)))
    hosts = listing.get("allowed_hosts") or record.get("dns_filter_hosts") or ()
    return MachineSpec(
        image=listing.get("image") or record.get("image"),
        command=tuple(str(c) for c in (listing.get("cmd") or record.get("cmd") or ())),
        cpus=listing.get("cpus", record.get("cpus")),
        memory_mib=listing.get("memory_mib", record.get("mem")),
        storage_gib=listing.get("storage_gb", record.get("storage_gb")),
        workdir=record.get("workdir") or None,
        env=tuple(sorted((str(k), str(v)) for k, v in (record.get("env") or ()))),
        mounts=tuple(
            sorted((str(m[0]), str(m[1]), bool(m[2])) for m in (record.get("mounts") or ()))
        ),
        ports=tuple(sorted((int(p[0]), int(p[1])) for p in (record.get("ports") or ()))),
        labels=tuple(
            sorted(
                (str(k), str(v))
                for k, v in (listing.get("labels") or record.get("labels") or {}).items()
            )
        ),
        network=bool(listing.get("network", record.get("network"))),
        allow_hosts=tuple(sorted(_host_key(h) for h in hosts)),
        allow_cidrs=tuple(sorted(cidrs)),
        deny_cidrs=_deny_cidrs(record),
    )


@dataclass
class Plan:
    """What to do, in order. ``actions`` is empty when nothing changes."""

    actions: list[str] = field(default_factory=list)
    changed_fields: list[str] = field(default_factory=list)
    update: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.actions)


def _differs(actual: MachineSpec, desired: MachineSpec, name: str) -> bool:
    want = getattr(desired, name)
    if name in ("cpus", "memory_mib", "storage_gib", "image") and want is None:
        return False  # not asked for: smolvm's default or whatever is there
    if name == "deny_cidrs" and not want:
        return False  # no network: nothing to deny (update --no-net drops them)
    if name == "labels":
        # The policy label records the policy at creation; allow lists are compared
        # directly, so a changed policy is an in-place update, not a new machine.
        have = {k: v for k, v in actual.labels if k != POLICY_LABEL}
        return have != {k: v for k, v in want if k != POLICY_LABEL}
    return bool(getattr(actual, name) != want)


def plan(
    actual: MachineSpec | None,
    actual_state: str | None,
    desired: MachineSpec | None,
    state: str,
    recreate: bool = False,
) -> Plan:
    """Decide the actions that take a machine from ``actual`` to ``state``/``desired``.

    ``actual_state`` is smolvm's (``created``, ``stopped``, ``running`` …).
    Raises :class:`PlanError` when fields only a new machine can change differ and
    ``recreate`` is false.
    """
    result = Plan()
    if state == "absent":
        if actual is not None:
            result.actions.append("delete")
        return result
    assert desired is not None
    running = actual_state == "running"
    if actual is None:
        result.actions.append("create")
        result.changed_fields = [
            f for f in UPDATABLE + IMMUTABLE if _differs(MachineSpec(), desired, f)
        ]
        if state == "started":
            result.actions.append("start")
        return result
    immutable = [f for f in IMMUTABLE if _differs(actual, desired, f)]
    updatable = [f for f in UPDATABLE if _differs(actual, desired, f)]
    # A machine without its deny rules must not run, and only a new machine gets
    # them: it is deleted and created (its disk is lost) whatever ``recreate`` says.
    replace = [f for f in REPLACE if _differs(actual, desired, f)]
    if immutable and not (recreate or replace):
        raise PlanError(
            "fields that only a new machine can change differ: {}; set recreate=true to "
            "delete and recreate the machine (this destroys its disk)".format(", ".join(immutable))
        )
    if replace or immutable:
        result.actions += ["delete", "create"]
        result.changed_fields = replace + immutable + updatable
        if state == "started":
            result.actions.append("start")
        return result
    if updatable:
        result.changed_fields = updatable
        if running and any(f in NEEDS_STOP for f in updatable):
            result.actions.append("stop")
            running = False
        result.actions.append("update")
        result.update = update_args(actual, desired, updatable)
    if state == "started" and not running:
        result.actions.append("start")
    elif state == "stopped" and running:
        result.actions.append("stop")
    return result


def _allow_args(spec: MachineSpec, update: bool = False) -> list[str]:
    """The compiler's egress arguments for ``machine create`` (deny rules included) or
    ``machine update``, after checking no entry is bare."""
    for host in spec.allow_hosts:
        if not host.startswith(("=", "*.")):
            raise ValueError(
                f"refusing bare allow-list entry {host!r}: smolvm would also allow every subdomain"
            )
    return list(spec.egress_update_args if update else spec.egress_args)


def _volume(mount: tuple[str, str, bool]) -> str:
    return "{}:{}{}".format(mount[0], mount[1], ":ro" if mount[2] else "")


def create_args(name: str, spec: MachineSpec) -> list[str]:
    """``smolvm machine create`` arguments (after the subcommand) for ``spec``."""
    args = ["--name", name]
    if spec.image_source:
        args += ["--image", spec.image_source]
    for key, value in spec.labels:
        args += ["--label", f"{key}={value}"]
    if spec.cpus is not None:
        args += ["--cpus", str(spec.cpus)]
    if spec.memory_mib is not None:
        args += ["--mem", str(spec.memory_mib)]
    if spec.storage_gib is not None:
        args += ["--storage", str(spec.storage_gib)]
    if spec.workdir:
        args += ["--workdir", spec.workdir]
    for key, value in spec.env:
        args += ["--env", f"{key}={value}"]
    for mount in spec.mounts:
        args += ["--volume", _volume(mount)]
    for host, guest in spec.ports:
        args += ["--port", f"{host}:{guest}"]
    args += _allow_args(spec)
    if spec.command:
        args += ["--", *spec.command]
    return args


def _env_args(actual: MachineSpec, desired: MachineSpec) -> list[str]:
    want, have = dict(desired.env), dict(actual.env)
    args: list[str] = []
    for key in have:
        if key not in want:
            args += ["--remove-env", key]
    for key, value in desired.env:
        if have.get(key) != value:
            args += ["--env", f"{key}={value}"]
    return args


def _mount_args(actual: MachineSpec, desired: MachineSpec) -> list[str]:
    args: list[str] = []
    for mount in actual.mounts:
        if mount not in desired.mounts:
            args += ["--remove-volume", f"{mount[0]}:{mount[1]}"]
    for mount in desired.mounts:
        if mount not in actual.mounts:
            args += ["--volume", _volume(mount)]
    return args


def _port_args(actual: MachineSpec, desired: MachineSpec) -> list[str]:
    args: list[str] = []
    for host, guest in actual.ports:
        if (host, guest) not in desired.ports:
            args += ["--remove-port", f"{host}:{guest}"]
    for host, guest in desired.ports:
        if (host, guest) not in actual.ports:
            args += ["--port", f"{host}:{guest}"]
    return args


def _egress_args(_actual: MachineSpec, desired: MachineSpec) -> list[str]:
    if desired.network:
        # One replacement of both lists: never a window with the union or with nothing.
        return ["--reset-allow-list", *_allow_args(desired, update=True)]
    # No routes: no network at all (smolvm refuses an empty list, which would mean
    # "everything").
    return ["--no-net"]


def update_args(actual: MachineSpec, desired: MachineSpec, fields: Sequence[str]) -> list[str]:
    """``smolvm machine update`` arguments that change ``fields`` from actual to desired."""
    args: list[str] = []
    if "cpus" in fields and desired.cpus is not None:
        args += ["--cpus", str(desired.cpus)]
    if "memory_mib" in fields and desired.memory_mib is not None:
        args += ["--mem", str(desired.memory_mib)]
    if "workdir" in fields and desired.workdir:
        args += ["--workdir", desired.workdir]
    if "env" in fields:
        args += _env_args(actual, desired)
    if "mounts" in fields:
        args += _mount_args(actual, desired)
    if "ports" in fields:
        args += _port_args(actual, desired)
    if {"allow_hosts", "allow_cidrs", "network"} & set(fields):
        args += _egress_args(actual, desired)
    return args


def egress_matches(actual: MachineSpec, desired: MachineSpec) -> bool:
    """Does the stored egress equal the compiled policy? (the fail-closed read-back)

    Networking with empty allow lists would be open egress, so it never matches; nor
    does a machine with a network that lacks the compiled deny rules.
    """
    if actual.network and not (actual.allow_hosts or actual.allow_cidrs):
        return False
    return (
        actual.network == desired.network
        and actual.allow_hosts == desired.allow_hosts
        and actual.allow_cidrs == desired.allow_cidrs
        and not _differs(actual, desired, "deny_cidrs")
    )
