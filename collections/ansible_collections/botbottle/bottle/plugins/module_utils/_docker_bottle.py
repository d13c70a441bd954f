# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Plan one Docker bottle: what it should be made of, what to do about what is there.

**PRIVATE** to the botbottle.bottle collection. Pure functions only: the
``docker_bottle`` module reads the bottle through ``_docker_engine.py``, builds a
:class:`Want` with :func:`want`, asks :func:`plan` what to do and hands the
actions back to the engine, in order.

A bottle is an internal network and four containers:

* the **resolver** (``bottle-<name>-resolver``): dnsmasq with the compiler's
  lines, on the bottle network and the egress network. It checks its own
  configuration (``dnsmasq --test``) every time it starts.
* the **holder** (``bottle-<name>-net``): owns the network namespace the agent
  joins. Every time it starts -- by bot-bottle, by ``docker start``, by a
  reboot -- it loads the bottle's rules, marks the namespace sealed (the
  loopback interface's alias, which unprivileged processes can read and only
  ``NET_ADMIN`` can write), then drops every capability for good: its
  long-lived process runs as ``nobody`` with empty permitted and effective
  sets. A re-load (a changed policy, flushed rules) is a short ``docker exec``.
* the **egress proxy** (``bottle-<name>-proxy``): mitmproxy with bot-bottle's addon
  and no other, on the bottle network and the egress network; the agent's only
  way out (its rules accept the proxy's port and nothing else beyond the
  resolver and ``cidr`` routes). It holds the bottle's CA key (made once per
  bottle, in ``<state_dir>/<name>/ca``, readable by the proxy's user only); the
  agent gets the certificate alone, and the proxy variables.
* the **agent** (``bottle-<name>``): no capabilities beyond the allowlist, an
  init process as PID 1 (so ``down`` does not wait out a stop timeout), and a
  seal guard in front of its command: a static busybox waits until the
  namespace it joined is sealed, then ``exec``\\ s the command. Started in any
  order by anything, the agent never runs without its rules.

Fail closed: an action that fails leaves the agent stopped (the engine's job),
and the plan never starts the agent before the rules are loaded and read back.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.botbottle.bottle.plugins.module_utils._bottle import (
    BOTTLE_LABEL,
    COMPONENT_LABEL,
    MANAGED_LABEL,
    MANAGED_VALUE,
    POLICY_LABEL,
    SPEC_LABEL,
    STATES,
    object_name,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._docker_net import (
    bottle_addresses,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._egress import (
    AGENT_CA_BUNDLES,
    AGENT_CA_FILE,
    CA_CERT_FILE,
    CONTAINER_LOG_DIR,
    CONTAINER_TRUSTED_CA,
    LOG_FILE_NAME,
    PROXY_ENV_NAMES,
    PROXY_PORT,
    agent_proxy_env,
    dumps_config,
    dumps_secrets,
    proxy_command,
    render_config,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._policy import (
    NEVER_ROUTED,
    EgressPolicy,
    firewall_stamp,
    render_dnsmasq,
    render_firewall,
)

#: The loopback alias that marks a namespace whose rules are loaded.
SEAL = "bot-bottle-sealed"
#: Where the static busybox of the seal guard is mounted in the agent.
GUARD_BINARY = "/.bot-bottle/busybox"
#: Where the holder reads the rule files (the bottle's state directory, read-only).
RULES_DIR = "/rules"

# The holder's PID 1: load the rules (one transaction per family), seal, drop to nobody.
# setpriv's change of user clears the permitted and effective sets; no-new-privileges
# keeps them from coming back. Runs at every start of the container.
HOLDER_SCRIPT = (
    f"iptables-restore {RULES_DIR}/rules.ipv4 && "
    f"ip6tables-restore {RULES_DIR}/rules.ipv6 && "
    f"ip link set dev lo alias {SEAL} && "
    "exec setpriv --reuid=65534 --regid=65534 --clear-groups -- sleep infinity"
)
# The agent's seal guard, run by the static busybox's sh; "$@" is the agent's command.
# Busybox's sh prefers its own applets to programs of the same name, so the command is
# looked up on the image's PATH first and run by its full path: `sleep`, `sh` or `env`
# are the image's programs, never busybox's.
GUARD_SCRIPT = (
    "b=" + GUARD_BINARY + "; "
    'until read -r s < /sys/class/net/lo/ifalias && [ "$s" = \'' + SEAL + "' ]; "
    'do "$b" sleep 0.05; done; c=$1; shift; '
    'case $c in */*) ;; *) c=$("$b" which "$c") || '
    '{ echo "bot-bottle seal guard: command not found on PATH" >&2; exit 127; };; esac; '
    'exec "$c" "$@"'
)
# Reload the rules in the running holder (docker exec: a short-lived NET_ADMIN process).
RELOAD_ARGV = ("sh", "-ec", HOLDER_SCRIPT.split(" && exec ", 1)[0])
# Read the rules back: both families and the seal, in one exec.
READ_ARGV = (
    "sh",
    "-c",
    "iptables-save -t filter; echo '### ipv6'; ip6tables-save -t filter; "
    "echo '### seal'; cat /sys/class/net/lo/ifalias",
)
# The resolver checks its configuration every time it starts.
RESOLVER_ARGV = (
    "sh",
    "-ec",
    "dnsmasq --test -C /etc/bottle/dnsmasq.conf && "
    "exec dnsmasq --keep-in-foreground -C /etc/bottle/dnsmasq.conf",
)
HEALTH_NAME = "bot-bottle-health.invalid"
#: Where the Docker backend keeps its bottles' files by default (``<state_dir>/<name>``).
STATE_DIR = "/var/lib/bot-bottle/docker"
#: Below a bottle's directory: the resolver's log directory, and the proxy's inside it.
LOG_DIR = "log"
EGRESS_LOG_DIR = "log/egress"
# Bumped when the engine makes the proxy container differently for the same spec
# (2: a tmpfs for its runtime secrets), so proxies made the old way are re-made.
_PROXY_LAYOUT = 2


class PlanError(ValueError):
    """The wanted bottle cannot be described; the message says what to fix."""


# --------------------------------------------------------------------------- names


@dataclass(frozen=True)
class Names:
    """What a bottle's objects are called on a Docker host."""

    bottle: str

    @property
    def agent(self) -> str:
        return object_name(self.bottle)

    @property
    def network(self) -> str:
        return object_name(self.bottle)

    @property
    def holder(self) -> str:
        return object_name(self.bottle, "net")

    @property
    def resolver(self) -> str:
        return object_name(self.bottle, "resolver")

    @property
    def proxy(self) -> str:
        return object_name(self.bottle, "proxy")


# --------------------------------------------------------------------------- what is there


@dataclass(frozen=True)
class ContainerSeen:
    """One container as the engine reported it."""

    status: str  # created, running, exited, paused, restarting, dead
    spec: str = ""  # the botbottle.spec label
    pid: int = 0
    netns: str = ""  # readlink /proc/<pid>/ns/net, when running
    env: tuple[tuple[str, str], ...] = ()  # agent only: what the bottle set (secret)
    hardening: Mapping[str, Any] = field(default_factory=dict)  # agent only: see hardening()
    ca: str = ""  # agent and proxy: the fingerprint of the bottle CA they were made with

    @property
    def running(self) -> bool:
        return self.status == "running"


@dataclass(frozen=True)
class Seen:
    """Everything a bottle is made of, as read from the host."""

    network_subnet: str | None = None  # None: no network
    resolver: ContainerSeen | None = None
    holder: ContainerSeen | None = None
    agent: ContainerSeen | None = None
    proxy: ContainerSeen | None = None
    ca: str = ""  # fingerprint of the bottle's CA in its state directory, "" when none
    # sha256 of the runtime secrets the running proxy holds, "" when none (never shown)
    proxy_secrets: str = field(default="", repr=False)
    rules_stamp: str = ""  # the stamp loaded in both families, "" when not (or unknown)
    sealed: bool = False  # the namespace carries the seal
    files: Mapping[str, str] = field(default_factory=dict)  # name -> sha256 of content


# --------------------------------------------------------------------------- what is wanted


@dataclass(frozen=True)
class Want:
    """The bottle as it should be."""

    names: Names
    state: str
    subnet: str = ""
    addresses: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, str] = field(default_factory=dict)  # name -> content
    stamp: str = ""
    policy_hash: str = ""
    resolver_spec: str = ""
    holder_spec: str = ""
    agent_spec: str = ""
    proxy_spec: str = ""
    proxy_create: Mapping[str, Any] = field(default_factory=dict)  # for the engine
    proxy_secrets: bytes = field(default=b"", repr=False)  # the runtime secrets file (secret)
    agent_env: tuple[tuple[str, str], ...] = ()
    agent_create: Mapping[str, Any] = field(default_factory=dict)  # for the engine
    agent_hardening: Mapping[str, Any] = field(default_factory=dict)


def digest(value: Any) -> str:
    """A short stable hash of plain data (the ``botbottle.spec`` label's value)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def file_digest(content: str) -> str:
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def _cap(name: object) -> str:
    text = str(name).upper()
    return text[4:] if text.startswith("CAP_") else text


def hardening(
    host_config: Mapping[str, Any], containers: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """What confines a container, from its ``HostConfig`` as the engine reports it.

    Compared as read, not trusted from a label: a container someone re-made by hand
    with the bottle's labels but ``--cap-add NET_ADMIN`` (or ``--privileged``, a host
    namespace, a device, an extra mount) is not the bottle's agent. ``containers``
    maps container ids to names (the engine stores ``container:<id>`` as the network
    mode of a container created with ``container:<name>``). The cgroup namespace is
    not compared: ``host`` is the engine's default on cgroup v1.
    """
    network_mode = str(host_config.get("NetworkMode") or "")
    if network_mode.startswith("container:"):
        target = network_mode.split(":", 1)[1]
        network_mode = "container:" + (containers or {}).get(target, target)
    mounts = sorted(
        (str(m.get("Source", "")), str(m.get("Target", "")), bool(m.get("ReadOnly")))
        for m in host_config.get("Mounts") or []
    )
    return {
        "cap_add": sorted({_cap(c) for c in host_config.get("CapAdd") or []}),
        "cap_drop": sorted({_cap(c) for c in host_config.get("CapDrop") or []}),
        "privileged": bool(host_config.get("Privileged")),
        "security_opt": sorted(str(o) for o in host_config.get("SecurityOpt") or []),
        "network_mode": network_mode,
        "host_namespaces": sorted(
            key
            for key in ("PidMode", "IpcMode", "UTSMode", "UsernsMode")
            if str(host_config.get(key) or "") == "host"
        ),
        "devices": len(host_config.get("Devices") or []),
        "binds": sorted(str(b) for b in host_config.get("Binds") or []),
        "mounts": [list(m) for m in mounts],
        "init": bool(host_config.get("Init")),
    }


def log_files(state_dir: str, name: str) -> tuple[str, str]:
    """The resolver's query log and the egress proxy's log of bottle ``name``."""
    directory = f"{state_dir.rstrip('/')}/{name}"
    return (
        f"{directory}/{LOG_DIR}/queries.log",
        f"{directory}/{EGRESS_LOG_DIR}/{LOG_FILE_NAME}",
    )


def ca_dir(directory: str) -> str:
    """The bottle's CA directory (the proxy's ``confdir``; the key never leaves it)."""
    return f"{directory}/ca"


def agent_ca_mounts(directory: str) -> list[tuple[str, str]]:
    """(source, target) of the CA certificate in the agent: its own path and the system
    bundle's (everything the agent can reach over TLS goes through its proxy)."""
    cert = f"{ca_dir(directory)}/{CA_CERT_FILE}"
    return [(cert, AGENT_CA_FILE), *((cert, bundle) for bundle in AGENT_CA_BUNDLES)]


def agent_hardening(
    names: Names, directory: str, guard: str, settings: Mapping[str, Any]
) -> dict[str, Any]:
    """What :func:`hardening` must read on the agent bot-bottle creates."""
    mounts = [
        (f"{directory}/resolv.conf", "/etc/resolv.conf", True),
        (guard, GUARD_BINARY, True),
        *((source, target, True) for source, target in agent_ca_mounts(directory)),
        *(
            (str(m["source"]), str(m["target"]), bool(m.get("read_only")))
            for m in settings.get("mounts") or []
        ),
    ]
    return {
        "cap_add": sorted({_cap(c) for c in settings.get("capabilities") or []}),
        "cap_drop": ["ALL"],
        "privileged": False,
        "security_opt": ["no-new-privileges:true"],
        "network_mode": f"container:{names.holder}",
        "host_namespaces": [],
        "devices": 0,
        "binds": [],
        "mounts": [list(m) for m in sorted(mounts)],
        "init": True,
    }


def dnsmasq_conf(name: str, policy: EgressPolicy, upstreams: Sequence[str], resolver: str) -> str:
    """The resolver's whole configuration: the compiler's lines, then where to listen."""
    lines = [
        f"# bot-bottle: resolver of bottle {name}. It answers only the bottle's",
        "# allowlisted names; everything else, and every name below an exact name, is",
        "# NXDOMAIN, and nothing but allowlisted names is ever forwarded.",
        *render_dnsmasq(policy, upstreams),
        f"listen-address={resolver}",
        "listen-address=127.0.0.1",
        "bind-dynamic",
        "no-poll",
        "user=root",
        "group=root",
        "log-queries=extra",
        "log-facility=/var/log/bottle/queries.log",
    ]
    return "\n".join(lines) + "\n"


def resolv_conf(resolver: str) -> str:
    return (
        "# bot-bottle: the bottle's only resolver\n"
        f"nameserver {resolver}\n"
        "options ndots:0 timeout:2 attempts:2\n"
    )


def agent_argv(
    image_entrypoint: Sequence[str] | None,
    image_cmd: Sequence[str] | None,
    command: Sequence[str] | None,
) -> tuple[list[str], list[str]]:
    """(entrypoint, cmd) of the agent: the seal guard in front of what the image would run.

    The manifest's ``command`` replaces the image's CMD, as ``docker run IMAGE CMD`` does.
    """
    run = [*(image_entrypoint or []), *(command if command else (image_cmd or []))]
    if not run:
        raise PlanError(
            "the agent image has no entrypoint or command and the manifest sets none; "
            "set runtime.command"
        )
    return [GUARD_BINARY, "sh", "-c", GUARD_SCRIPT, "bottle-seal-guard"], run


def _never_routed(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return any(address.version == n.version and address in n for n, _ in NEVER_ROUTED)


def blocked_destinations(
    host_addresses: Sequence[str], subnet_pool: str, reachable: Sequence[str] = ()
) -> list[str]:
    """What a bottle's rules reject besides its gateway before any route is accepted:
    the pool every bottle network comes from (the other bottles, and the host's
    addresses on them), then the host's own addresses outside it that a ``reachable``
    network (a ``cidr`` route) covers. The others need no rule: what no route covers is
    rejected by the default deny, and loopback and link-local are rejected before any
    route. Listing them would rewrite every bottle's rules each time a container (its
    link-local veth address) or a network comes or goes on the host; listing the pool
    rather than each bottle's gateway likewise keeps them the same when bottles do."""
    pool = ipaddress.ip_network(subnet_pool) if subnet_pool else None
    routes = [ipaddress.ip_network(n, strict=False) for n in reachable]
    kept = []
    for text in host_addresses:
        address = ipaddress.ip_address(text)
        if pool is not None and address.version == pool.version and address in pool:
            continue
        if _never_routed(address):
            continue
        if any(address.version == r.version and address in r for r in routes):
            kept.append(str(address))
    return ([str(pool)] if pool is not None else []) + sorted(set(kept))


def proxy_refused(
    policy: EgressPolicy,
    host_addresses: Sequence[str],
    subnet_pool: str,
    private_networks: Sequence[str] = (),
) -> list[str]:
    """What the proxy never connects to besides the bottle's gateway and what it refuses
    anyway (loopback, link-local, metadata; private answers outside ``cidr`` routes and
    ``private_networks``): the pool, and the host's addresses an allowed name could
    otherwise lead it to -- public ones, and private ones a ``cidr`` route or a private
    network covers. Stable while containers and unrelated networks come and go."""
    pool = [str(ipaddress.ip_network(subnet_pool))] if subnet_pool else []
    routes = [ipaddress.ip_network(n, strict=False) for n in (*policy.cidrs, *private_networks)]
    kept = []
    for text in host_addresses:
        address = ipaddress.ip_address(text)
        if pool and address.version == 4 and address in ipaddress.ip_network(pool[0]):
            continue
        if _never_routed(address):
            continue
        if address.is_global or any(address.version == r.version and address in r for r in routes):
            kept.append(str(address))
    return pool + sorted(set(kept))


def want(
    *,
    name: str,
    state: str,
    policy: EgressPolicy,
    subnet: str = "",
    upstreams: Sequence[str] = (),
    egress_network: str = "",
    netutils_image_id: str = "",
    guard_binary: str = "",
    state_dir: str = "",
    agent: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    host_addresses: Sequence[str] = (),
    subnet_pool: str = "",
    proxy_image_id: str = "",
    proxy_code: str = "",
    trusted_ca: str = "",
    trusted_ca_digest: str = "",
    credentials: Mapping[str, str] | None = None,
    known_secrets: Sequence[str] = (),
    private_networks: Sequence[str] = (),
    log_minimum: int = 0,
) -> Want:
    """The wanted bottle. ``agent`` holds the agent's non-secret settings (image id,
    entrypoint and cmd as resolved, user, workdir, cpus, memory_mib, capabilities,
    mounts, labels); ``env`` its environment (secret). ``host_addresses`` are the
    host's own addresses and ``subnet_pool`` the bottle networks' pool.
    ``proxy_code`` is the host directory holding the proxy's code (named after its
    digest); ``trusted_ca`` a host CA file the proxy verifies origins against
    instead of the public roots (``trusted_ca_digest``: its content's hash).
    ``credentials`` (``token_ref`` -> value) and ``known_secrets`` are handed to the
    running proxy alone (:data:`~._egress.CONTAINER_SECRETS_DIR`). ``private_networks``
    are private CIDRs allowed names may resolve to, ``log_minimum`` the host's floor
    for the proxy's log level (see ``_egress.render_config``)."""
    if state not in STATES:
        raise PlanError(f"state {state!r} is not one of {', '.join(STATES)}")
    names = Names(name)
    if state == "absent":
        return Want(names, state)
    addresses = bottle_addresses(subnet)
    directory = f"{state_dir}/{name}"
    proxy = f"{addresses['proxy']}:{PROXY_PORT}"
    blocked = blocked_destinations(host_addresses, subnet_pool, policy.cidrs)
    rules = render_firewall(
        policy,
        addresses["resolver"],
        addresses["gateway"],
        host_addresses=blocked,
        proxy=proxy,
    )
    config = render_config(
        policy,
        addresses["resolver"],
        refused_networks=[
            addresses["gateway"],
            *proxy_refused(policy, host_addresses, subnet_pool, private_networks),
        ],
        log_file=f"{CONTAINER_LOG_DIR}/{LOG_FILE_NAME}",
        private_networks=private_networks,
        log_minimum=log_minimum,
    )
    files = {
        "dnsmasq.conf": dnsmasq_conf(name, policy, upstreams, addresses["resolver"]),
        "resolv.conf": resolv_conf(addresses["resolver"]),
        "rules.ipv4": rules["ipv4"],
        "rules.ipv6": rules["ipv6"],
        "egress.json": dumps_config(config),
    }
    proxy_create = {
        "image_id": proxy_image_id,
        "command": proxy_command(CONTAINER_TRUSTED_CA if trusted_ca else None),
        "code": proxy_code,
        "trusted_ca": trusted_ca,
    }
    proxy_spec = digest(
        {
            **proxy_create,
            "layout": _PROXY_LAYOUT,
            "trusted_ca_digest": trusted_ca_digest,
            "config": file_digest(files["egress.json"]),
            "ip": addresses["proxy"],
            "resolver": addresses["resolver"],
            "egress": egress_network,
            "dir": directory,
        }
    )
    missing = sorted({auth.token_ref for _, auth in policy.auth} - set(credentials or {}))
    if missing:
        raise PlanError(
            f"the credentials of routes with auth are missing: {', '.join(missing)}; pass them "
            "in credentials (the role reads them from the controller's environment)"
        )
    manifest_env = {str(k): str(v) for k, v in (env or {}).items()}
    reserved = sorted(set(manifest_env) & set(PROXY_ENV_NAMES))
    if reserved:
        raise PlanError(
            f"env sets {', '.join(reserved)}, which bot-bottle sets itself to send the agent "
            "through its egress proxy; remove them from the manifest's env"
        )
    agent_env = {**manifest_env, **agent_proxy_env(addresses["proxy"])}
    resolver_spec = digest(
        {
            "image": netutils_image_id,
            "argv": RESOLVER_ARGV,
            "ip": addresses["resolver"],
            "egress": egress_network,
            "dir": directory,
        }
    )
    holder_spec = digest(
        {
            "image": netutils_image_id,
            "script": HOLDER_SCRIPT,
            "ip": addresses["holder"],
            "resolver": addresses["resolver"],
            "dir": directory,
        }
    )
    settings = dict(agent or {})
    agent_spec = digest(
        {"agent": settings, "guard": guard_binary, "dir": directory, "proxy": proxy}
    )
    return Want(
        names=names,
        state=state,
        subnet=subnet,
        addresses=addresses,
        files=files,
        stamp=rules["stamp"],
        policy_hash=policy.digest,
        resolver_spec=resolver_spec,
        holder_spec=holder_spec,
        agent_spec=agent_spec,
        proxy_spec=proxy_spec,
        proxy_create=proxy_create,
        proxy_secrets=dumps_secrets(credentials or {}, known_secrets),
        agent_env=tuple(sorted(agent_env.items())),
        agent_create=settings,
        agent_hardening=agent_hardening(names, directory, guard_binary, settings),
    )


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Plan:
    """What to do, in order, and why (``changed_fields``); ``before``/``after`` for the diff."""

    actions: tuple[str, ...]
    changed_fields: tuple[str, ...]
    before: dict[str, Any]
    after: dict[str, Any]

    @property
    def changed(self) -> bool:
        return bool(self.actions)


def _container_state(seen: ContainerSeen | None) -> str:
    return "absent" if seen is None else seen.status


def describe(seen: Seen) -> dict[str, Any]:
    """The bottle as the diff shows it (no secret: env by name only)."""
    agent = seen.agent
    return {
        "network": seen.network_subnet or "absent",
        "resolver": _container_state(seen.resolver),
        "holder": _container_state(seen.holder),
        "rules": seen.rules_stamp or "not loaded",
        "sealed": seen.sealed,
        "proxy": _container_state(seen.proxy),
        "proxy_secrets": "delivered" if seen.proxy_secrets else "absent",
        "ca": seen.ca or "absent",
        "agent": _container_state(agent),
        "agent_env": sorted(k for k, _ in agent.env) if agent else [],
        "files": dict(sorted(seen.files.items())),
    }


def _after(want_: Want, agent_state: str, ca: str = "absent") -> dict[str, Any]:
    if want_.state == "absent":
        return {
            "network": "absent",
            "resolver": "absent",
            "holder": "absent",
            "rules": "not loaded",
            "sealed": False,
            "proxy": "absent",
            "proxy_secrets": "absent",
            "ca": "absent",
            "agent": "absent",
            "agent_env": [],
            "files": {},
        }
    return {
        "network": want_.subnet,
        "resolver": "running",
        "holder": "running",
        "rules": want_.stamp,
        "sealed": True,
        "proxy": "running",
        "proxy_secrets": "delivered",
        "ca": ca,
        "agent": agent_state,
        "agent_env": sorted(k for k, _ in want_.agent_env),
        "files": {k: file_digest(v) for k, v in sorted(want_.files.items())},
    }


def _plan_absent(seen: Seen) -> tuple[list[str], list[str]]:
    actions = []
    if seen.agent is not None:
        actions.append("remove_agent")
    if seen.proxy is not None:
        actions.append("remove_proxy")
    if seen.holder is not None:
        actions.append("remove_holder")
    if seen.resolver is not None:
        actions.append("remove_resolver")
    if seen.network_subnet is not None:
        actions.append("remove_network")
    if seen.files or seen.ca:
        actions.append("remove_files")
    return actions, (["state"] if actions else [])


def _plan_infrastructure(seen: Seen, want_: Want) -> tuple[list[str], list[str], bool]:
    """Files, network, resolver, holder and rules. Returns (actions, fields, new namespace)."""
    changed_files = sorted(k for k, v in want_.files.items() if seen.files.get(k) != file_digest(v))
    actions = ["write_files"] if changed_files else []
    fields = [f"file:{k}" for k in changed_files]
    if not seen.ca:
        actions.append("make_ca")
        fields.append("ca")
    network_new = seen.network_subnet != want_.subnet
    if network_new:
        if seen.network_subnet is not None:
            # another subnet: everything on the network goes with it
            actions += [a for a, c in _REMOVALS if getattr(seen, c) is not None]
            actions.append("remove_network")
        actions.append("create_network")
        fields.append("network")
    # resolver
    resolver = None if network_new else seen.resolver
    if resolver is None or resolver.spec != want_.resolver_spec:
        if resolver is not None:
            actions.append("remove_resolver")
        actions += ["create_resolver", "wait_resolver"]
        fields.append("resolver")
    elif "dnsmasq.conf" in changed_files:
        actions += ["restart_resolver", "wait_resolver"]
        fields.append("resolver_config")
    elif not resolver.running:
        actions += ["start_resolver", "wait_resolver"]
        fields.append("resolver_state")
    # holder: a new or restarted holder loads the rules itself, then seals
    holder = None if network_new else seen.holder
    new_namespace = True
    if holder is None or holder.spec != want_.holder_spec:
        if holder is not None:
            actions.append("remove_holder")
        actions += ["create_holder", "check_rules"]
        fields.append("holder")
    elif not holder.running:
        actions += ["start_holder", "check_rules"]
        fields.append("holder_state")
    else:
        new_namespace = False
        if seen.rules_stamp != want_.stamp or not seen.sealed:
            actions += ["load_rules", "check_rules"]
            fields.append("rules")
    proxy_actions, proxy_fields = _plan_proxy(seen, want_, network_new)
    return actions + proxy_actions, fields + proxy_fields, new_namespace


def _plan_proxy(seen: Seen, want_: Want, network_new: bool) -> tuple[list[str], list[str]]:
    """The proxy reads its configuration and CA once, when it starts: a change re-makes
    it. Its runtime secrets live in its memory (a tmpfs): handed over again whenever
    it (re)starts, or when they differ from what it holds."""
    proxy = None if network_new else seen.proxy
    if proxy is None or proxy.spec != want_.proxy_spec or not seen.ca or proxy.ca != seen.ca:
        return (["remove_proxy"] if proxy is not None else []) + [
            "create_proxy",
            "wait_proxy",
            "deliver_secrets",
        ], ["proxy"]
    if not proxy.running:
        return ["start_proxy", "wait_proxy", "deliver_secrets"], ["proxy_state"]
    if seen.proxy_secrets != hashlib.sha256(want_.proxy_secrets).hexdigest():
        return ["deliver_secrets"], ["proxy_secrets"]
    return [], []


_REMOVALS = (
    ("remove_agent", "agent"),
    ("remove_proxy", "proxy"),
    ("remove_holder", "holder"),
    ("remove_resolver", "resolver"),
)


def _plan_agent(
    seen: Seen, want_: Want, new_namespace: bool, network_new: bool
) -> tuple[list[str], list[str], str]:
    """The agent's actions, its fields, and the state it ends in."""
    actions: list[str] = []
    fields: list[str] = []
    agent = None if network_new else seen.agent
    run = want_.state == "started" or (
        want_.state == "present" and agent is not None and agent.running
    )
    hardened = agent is not None and dict(agent.hardening) == dict(want_.agent_hardening)
    trusted = agent is not None and bool(seen.ca) and agent.ca == seen.ca
    if (
        agent is None
        or agent.spec != want_.agent_spec
        or agent.env != want_.agent_env
        or not hardened
        or not trusted
    ):
        if agent is not None:
            actions.append("remove_agent")
            if not hardened:
                fields.append("agent_hardening")
            elif agent.spec != want_.agent_spec:
                fields.append("agent")
            elif agent.env != want_.agent_env:
                fields.append("agent_env")
            else:
                fields.append("agent_ca")
        else:
            fields.append("agent")
        actions.append("create_agent")
        if run:
            actions.append("start_agent")
        return actions, fields, "running" if run else "created"
    holder_ns = seen.holder.netns if seen.holder is not None else ""
    stale = agent.running and (new_namespace or (bool(holder_ns) and agent.netns != holder_ns))
    if run and stale:
        actions.append("restart_agent")
        fields.append("agent_namespace")
    elif run and not agent.running:
        actions.append("start_agent")
        fields.append("agent_state")
    elif not run and agent.running:
        actions.append("stop_agent")
        fields.append("agent_state")
    return actions, fields, "running" if run else _stopped(agent.status)


def _stopped(status: str) -> str:
    return status if status in ("created", "exited") else "exited"


def plan(seen: Seen, want_: Want) -> Plan:
    """What to do to make ``seen`` into ``want_``, in order."""
    before = describe(seen)
    # a CA made by this run gets its fingerprint then; the diff says so
    ca = seen.ca or "new"
    if want_.state == "absent":
        actions, fields = _plan_absent(seen)
        return Plan(tuple(actions), tuple(fields), before, _after(want_, "absent"))
    network_new = seen.network_subnet != want_.subnet
    actions, fields, new_namespace = _plan_infrastructure(seen, want_)
    agent_actions, agent_fields, agent_state = _plan_agent(seen, want_, new_namespace, network_new)
    rebuilt = actions and "remove_agent" not in actions + agent_actions
    if agent_actions and seen.agent is not None and seen.agent.running and rebuilt:
        # the agent's network is being rebuilt: stop it first, start it last (fail closed)
        actions.insert(0, "stop_agent")
        if "restart_agent" in agent_actions:
            agent_actions[agent_actions.index("restart_agent")] = "start_agent"
    actions += agent_actions
    fields += agent_fields
    return Plan(tuple(actions), tuple(fields), before, _after(want_, agent_state, ca))


def parse_rules_dump(text: str, stamp: str) -> tuple[str, bool]:
    """(loaded stamp or "", sealed) from the holder's :data:`READ_ARGV` output."""
    v4, _, rest = text.partition("### ipv6")
    v6, _, seal = rest.partition("### seal")
    marker = f'--comment "{stamp}"'
    loaded = stamp if stamp and marker in v4 and marker in v6 else ""
    if not loaded:
        found = _any_stamp(v4)
        if found and f'--comment "{found}"' in v6:
            loaded = found
    return loaded, seal.strip() == SEAL


def _any_stamp(text: str) -> str:
    for line in text.splitlines():
        start = line.find('--comment "bot-bottle-policy ')
        if start != -1:
            return line[start + len('--comment "') :].split('"', 1)[0]
    return ""


__all__ = [
    "BOTTLE_LABEL",
    "COMPONENT_LABEL",
    "GUARD_BINARY",
    "MANAGED_LABEL",
    "MANAGED_VALUE",
    "POLICY_LABEL",
    "SEAL",
    "SPEC_LABEL",
    "STATES",
    "ContainerSeen",
    "Names",
    "Plan",
    "PlanError",
    "Seen",
    "Want",
    "agent_argv",
    "agent_ca_mounts",
    "ca_dir",
    "describe",
    "digest",
    "file_digest",
    "firewall_stamp",
    "log_files",
    "parse_rules_dump",
    "plan",
    "proxy_refused",
    "want",
]
