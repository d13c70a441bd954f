# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The egress policy compiler: the one place that decides what a bottle may reach.

**PRIVATE** to the botbottle.bottle collection and the ``botbottle`` package; the
public surface is the functions and classes without a leading underscore.

A merged bottle manifest's ``egress.routes`` is turned into a backend-neutral
:class:`EgressPolicy`, which is rendered for each backend:

* :func:`render_smolvm` -- smolvm allow lists (``=host`` for exact names,
  ``*.zone`` for wildcard zones, CIDRs). A bare smolvm entry would admit the host
  *and every subdomain*, so bare entries are never produced.
* :func:`render_dnsmasq` -- dnsmasq lines: no default upstream, NXDOMAIN for
  everything not allowlisted, and for every exact name a ``server=/*.name/``
  line so that ``<anything>.name`` is NXDOMAIN too.
* :func:`render_firewall` -- iptables-restore / ip6tables-restore rule sets for
  the Docker example backend's agent network namespace.

Semantics, the same for every backend:

* ``host: api.example.com`` is that exact name only;
* ``host: "*.example.com"`` is every name below ``example.com`` at any depth,
  but not ``example.com`` itself;
* names are case-insensitive, a trailing dot is ignored, IDNs must be in
  A-label (``xn--``) form, IP literals and CIDRs go in ``cidr``.

This file is shipped to managed hosts by Ansible: standard library only.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

POLICY_FORMAT = 1
"""Bumped whenever the compiled representation (and so the hash) changes meaning."""

_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_UPSTREAM_RE = re.compile(r"^(?P<ip>[0-9A-Fa-f:.]+)(?:#(?P<port>[0-9]{1,5}))?$")
_MAX_NAME = 253
_LOG_LEVELS = (0, 1, 2)


class PolicyError(ValueError):
    """A route cannot be compiled. ``path`` is the JSON path of the offending value."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def normalize_name(raw: str) -> str:
    """Return the canonical form of a DNS name, or raise ``ValueError`` saying why.

    Lower-cases, strips one trailing dot and checks LDH labels (A-label IDNs pass,
    Unicode does not). IP literals are rejected: they belong in ``cidr``.
    """
    if not isinstance(raw, str):
        raise ValueError(f"expected a host name string, got {type(raw).__name__}")
    name = raw.strip()
    if name != raw:
        raise ValueError(f"host name {raw!r} has surrounding white space")
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise ValueError("host name is empty")
    if _is_ip_literal(name):
        raise ValueError(
            f"{raw!r} is an IP address, not a host name; put IP literals and CIDRs in 'cidr'"
        )
    if not name.isascii():
        raise ValueError(
            f"{raw!r} is not ASCII; write IDNs in A-label form ({_a_label_hint(name)})"
        )
    name = name.lower()
    if len(name) > _MAX_NAME:
        raise ValueError(f"host name is {len(name)} characters long; the limit is 253")
    for label in name.split("."):
        if not _LABEL_RE.match(label):
            raise ValueError(
                f"label {label!r} of {raw!r} is not a valid DNS label "
                "(letters, digits and inner hyphens, 1-63 characters)"
            )
    if name.replace(".", "").isdigit():
        raise ValueError(f"{raw!r} looks like an IP address; put it in 'cidr'")
    return name


def normalize_cidr(raw: str) -> str:
    """Return ``raw`` as a canonical network (host bits cleared, bare IP -> /32 or /128)."""
    if not isinstance(raw, str):
        raise ValueError(f"expected a CIDR string, got {type(raw).__name__}")
    try:
        net = ipaddress.ip_network(raw.strip(), strict=False)
    except ValueError:
        raise ValueError(
            f"{raw!r} is not an IP address or CIDR (for example 203.0.113.7 or 2001:db8::/32)"
        ) from None
    return str(net)


def _is_ip_literal(text: str) -> bool:
    candidate = text.strip("[]")
    try:
        ipaddress.ip_network(candidate, strict=False)
    except ValueError:
        return False
    return True


def _a_label_hint(name: str) -> str:
    try:
        return "for example {!r}".format(name.encode("idna").decode("ascii").lower())
    except UnicodeError:
        return "xn--..."


@dataclass(frozen=True)
class EgressPolicy:
    """Backend-neutral egress policy of one bottle. All tuples are sorted and unique."""

    exact_hosts: tuple[str, ...] = ()
    wildcard_zones: tuple[str, ...] = ()
    cidrs: tuple[str, ...] = ()
    log: int = 0
    digest: str = field(default="", compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The policy as plain data (the ``policy`` object of ``bottle plan --format json``)."""
        return {
            "format": POLICY_FORMAT,
            "exact_hosts": list(self.exact_hosts),
            "wildcard_zones": list(self.wildcard_zones),
            "cidrs": list(self.cidrs),
            "log": self.log,
            "hash": self.digest,
        }


def _digest(exact: Sequence[str], zones: Sequence[str], cidrs: Sequence[str], log: int) -> str:
    payload = json.dumps(
        {
            "format": POLICY_FORMAT,
            "exact": list(exact),
            "zones": list(zones),
            "cidrs": list(cidrs),
            "log": log,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return "sha256:" + hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _cidr_sort_key(text: str) -> tuple[int, int, int]:
    net = ipaddress.ip_network(text)
    return (net.version, int(net.network_address), net.prefixlen)


def build_policy(
    exact_hosts: Sequence[str] = (),
    wildcard_zones: Sequence[str] = (),
    cidrs: Sequence[str] = (),
    log: int = 0,
) -> EgressPolicy:
    """Make a normalised policy (sorted, de-duplicated, hashed) from its parts.

    Raises ``ValueError`` for a bad name or CIDR.
    """
    exact = sorted({normalize_name(h) for h in exact_hosts})
    zones = sorted({normalize_name(z) for z in wildcard_zones})
    nets = sorted({normalize_cidr(c) for c in cidrs}, key=_cidr_sort_key)
    if log not in _LOG_LEVELS:
        raise ValueError(f"log must be 0, 1 or 2, got {log!r}")
    return EgressPolicy(
        exact_hosts=tuple(exact),
        wildcard_zones=tuple(zones),
        cidrs=tuple(nets),
        log=log,
        digest=_digest(exact, zones, nets, log),
    )


def compile_policy(manifest: Mapping[str, Any]) -> EgressPolicy:
    """Compile a *merged* manifest's ``egress`` section into an :class:`EgressPolicy`.

    Each route has either ``host`` (an exact name, or ``*.zone`` for a wildcard)
    or ``cidr``. Raises :class:`PolicyError` naming the route's JSON path.
    """
    egress = manifest.get("egress") or {}
    if not isinstance(egress, Mapping):
        raise PolicyError("$.egress", "expected a mapping with 'routes' and 'log'")
    routes = egress.get("routes") or []
    if not isinstance(routes, Sequence) or isinstance(routes, (str, bytes)):
        raise PolicyError("$.egress.routes", "expected a list of routes")
    exact: list[str] = []
    zones: list[str] = []
    cidrs: list[str] = []
    for index, route in enumerate(routes):
        path = f"$.egress.routes[{index}]"
        if not isinstance(route, Mapping):
            raise PolicyError(path, "expected a mapping with 'host' or 'cidr'")
        has_host, has_cidr = "host" in route, "cidr" in route
        if has_host == has_cidr:
            raise PolicyError(path, "a route needs exactly one of 'host' or 'cidr'")
        if has_cidr:
            try:
                cidrs.append(normalize_cidr(route["cidr"]))
            except ValueError as exc:
                raise PolicyError(path + ".cidr", str(exc)) from None
            continue
        host = route["host"]
        try:
            if isinstance(host, str) and host.startswith("*."):
                zones.append(normalize_name(host[2:]))
            else:
                exact.append(normalize_name(host))
        except ValueError as exc:
            raise PolicyError(path + ".host", str(exc)) from None
    log = egress.get("log", 0)
    if isinstance(log, bool) or log not in _LOG_LEVELS:
        raise PolicyError("$.egress.log", f"expected 0, 1 or 2, got {log!r}")
    return build_policy(exact, zones, cidrs, log)


def policy_from_dict(data: Mapping[str, Any]) -> EgressPolicy:
    """Rebuild a policy from :meth:`EgressPolicy.to_dict` output (re-normalised, re-hashed)."""
    return build_policy(
        data.get("exact_hosts", ()),
        data.get("wildcard_zones", ()),
        data.get("cidrs", ()),
        int(data.get("log", 0)),
    )


def _in_zone(name: str, zone: str) -> bool:
    """True when ``name`` is strictly below ``zone``."""
    return name.endswith("." + zone)


def allows_name(policy: EgressPolicy, name: str) -> bool:
    """The reference semantics: may a bottle with ``policy`` resolve ``name``?"""
    try:
        canonical = normalize_name(name)
    except ValueError:
        return False
    if canonical in policy.exact_hosts:
        return True
    return any(_in_zone(canonical, zone) for zone in policy.wildcard_zones)


def warnings(policy: EgressPolicy) -> list[str]:
    """Human-readable warnings about what a policy leaves open."""
    return [
        f"route '*.{zone}' forwards every name below {zone} to the upstream resolver: "
        "anything the bottle can encode in a name (for example "
        f"<base32-secret>.{zone}) leaves as a DNS query, a tunnel through that zone; "
        "list the exact host names instead if you can"
        for zone in policy.wildcard_zones
    ]


# --------------------------------------------------------------------------- smolvm


def render_smolvm(policy: EgressPolicy) -> dict[str, Any]:
    """smolvm allow lists for the policy.

    ``allow_hosts`` is the stored form (SDK ``allow_hosts`` / record
    ``dns_filter_hosts``); ``cli_args`` is the equivalent ``smolvm machine
    create/update`` arguments (``--allow-host-pattern`` never resolves names at
    create time, unlike ``--allow-host``).
    """
    hosts = ["=" + name for name in policy.exact_hosts]
    hosts += ["*." + zone for zone in policy.wildcard_zones]
    cli_args: list[str] = []
    for name in policy.exact_hosts:
        cli_args += ["--allow-host-pattern", name]
    for zone in policy.wildcard_zones:
        cli_args += ["--allow-host-pattern", "*." + zone]
    for cidr in policy.cidrs:
        cli_args += ["--allow-cidr", cidr]
    return {
        "allow_hosts": hosts,
        "allow_cidrs": list(policy.cidrs),
        "network": bool(hosts or policy.cidrs),
        "cli_args": cli_args,
    }


# --------------------------------------------------------------------------- dnsmasq


def normalize_upstream(raw: str) -> str:
    """Check a dnsmasq upstream (``ip`` or ``ip#port``) and return it canonical."""
    match = _UPSTREAM_RE.match(raw.strip()) if isinstance(raw, str) else None
    if match is None:
        raise ValueError(f"upstream {raw!r} is not 'IP' or 'IP#PORT'")
    try:
        address = ipaddress.ip_address(match.group("ip"))
    except ValueError:
        raise ValueError(f"upstream {raw!r} is not an IP address") from None
    port = match.group("port")
    if port is not None and not 0 < int(port) < 65536:
        raise ValueError(f"upstream {raw!r} has port outside 1-65535")
    return str(address) + (f"#{int(port)}" if port else "")


def render_dnsmasq(policy: EgressPolicy, upstreams: Sequence[str]) -> list[str]:
    """dnsmasq configuration lines implementing the policy's name rules.

    Never produces a blanket ``server=`` (non-A record types would escape), nor
    the ``/*name/`` suffix form (it matches ``xname``).
    """
    ups = [normalize_upstream(u) for u in upstreams]
    if not ups:
        raise ValueError("at least one upstream resolver is needed")
    lines = [
        f"# bot-bottle egress policy {policy.digest}",
        "no-resolv",
        "no-hosts",
        "address=/#/",
    ]
    for name in policy.exact_hosts:
        if any(_in_zone(name, zone) for zone in policy.wildcard_zones):
            continue  # the wildcard line below already forwards it and its subdomains
        lines += [f"server=/{name}/{up}" for up in ups]
        if name not in policy.wildcard_zones:
            lines.append(f"server=/*.{name}/")
    for zone in policy.wildcard_zones:
        if any(_in_zone(zone, outer) for outer in policy.wildcard_zones):
            continue  # nested in a wider wildcard
        lines += [f"server=/*.{zone}/{up}" for up in ups]
    return lines


# --------------------------------------------------------------------------- firewall


# Bumped whenever render_firewall's output changes for the same policy, so that bottles
# running older rules get the new ones on the next run (their stamp no longer matches).
_RULES_VERSION = 2


def firewall_stamp(policy: EgressPolicy) -> str:
    """The comment of the no-op rule that stamps a loaded rule set with its policy hash.

    ``iptables-save`` shows it, so a re-run can tell "these rules are loaded" by
    looking for it in both families (each restore is one transaction: the stamp
    is there only if every rule of that family is).
    """
    return f"bot-bottle-policy {policy.digest} rules-{_RULES_VERSION}"


def render_firewall(
    policy: EgressPolicy,
    resolver_ipv4: str,
    gateway_ipv4: str | None = None,
    embedded_dns: str = "127.0.0.11",
) -> dict[str, str]:
    """iptables-restore and ip6tables-restore input for a Docker bottle's netns.

    Loaded as one transaction per family (replacing the ``filter`` table of the
    agent's network namespace, which Docker leaves empty). DNS (UDP and TCP 53)
    may reach only ``resolver_ipv4``; Docker's embedded resolver is rejected on
    every port (its port 53 is DNATed to a random high port before the filter
    table sees it, so only an address match works); DNS over TLS/QUIC (853) is
    rejected; the network gateway (the Docker host) is unreachable. CIDR routes are
    accepted. Everything else is rejected (default deny): the bottle network is
    internal, but the host answers on every one of its addresses, so without the
    final rule an agent could reach host services on the host's other networks
    (found by ``bottle verify``'s literal-address checks). IPv6 likewise: loopback
    and IPv6 CIDR routes only.
    """
    resolver = str(ipaddress.IPv4Address(resolver_ipv4))
    embedded = str(ipaddress.IPv4Address(embedded_dns))
    stamp = f'-A OUTPUT -m comment --comment "{firewall_stamp(policy)}"'
    v4 = [
        f"# bot-bottle egress policy {policy.digest}",
        "*filter",
        ":INPUT ACCEPT [0:0]",
        ":FORWARD DROP [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        ":BOTTLE_DNS - [0:0]",
        stamp,
        "-A OUTPUT -o lo -d 127.0.0.1/32 -j ACCEPT",
        f"-A OUTPUT -d {embedded}/32 -p tcp -j REJECT --reject-with tcp-reset",
        f"-A OUTPUT -d {embedded}/32 -j REJECT --reject-with icmp-port-unreachable",
        "-A OUTPUT -p udp -m udp --dport 53 -j BOTTLE_DNS",
        "-A OUTPUT -p tcp -m tcp --dport 53 -j BOTTLE_DNS",
        "-A OUTPUT -p tcp -m tcp --dport 853 -j REJECT --reject-with tcp-reset",
        "-A OUTPUT -p udp -m udp --dport 853 -j REJECT --reject-with icmp-port-unreachable",
    ]
    v4 += [
        f"-A OUTPUT -d {resolver}/32 -p udp -m udp --dport 53 -j ACCEPT",
        f"-A OUTPUT -d {resolver}/32 -p tcp -m tcp --dport 53 -j ACCEPT",
    ]
    v4 += [f"-A OUTPUT -d {c} -j ACCEPT" for c in policy.cidrs if ":" not in c]
    if gateway_ipv4 is not None:
        gateway = str(ipaddress.IPv4Address(gateway_ipv4))
        v4 += [
            f"-A OUTPUT -d {gateway}/32 -p tcp -j REJECT --reject-with tcp-reset",
            f"-A OUTPUT -d {gateway}/32 -j REJECT --reject-with icmp-port-unreachable",
        ]
    v4 += [
        "-A OUTPUT -p tcp -j REJECT --reject-with tcp-reset",
        "-A OUTPUT -j REJECT --reject-with icmp-port-unreachable",
        f"-A BOTTLE_DNS -d {resolver}/32 -j RETURN",
        "-A BOTTLE_DNS -p tcp -j REJECT --reject-with tcp-reset",
        "-A BOTTLE_DNS -j REJECT --reject-with icmp-port-unreachable",
        "COMMIT",
    ]
    v6 = [
        f"# bot-bottle egress policy {policy.digest}",
        "*filter",
        ":INPUT ACCEPT [0:0]",
        ":FORWARD DROP [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        stamp,
        "-A OUTPUT -o lo -d ::1/128 -j ACCEPT",
        "-A OUTPUT -p tcp -m tcp --dport 53 -j REJECT --reject-with tcp-reset",
        "-A OUTPUT -p udp -m udp --dport 53 -j REJECT --reject-with icmp6-port-unreachable",
        "-A OUTPUT -p tcp -m tcp --dport 853 -j REJECT --reject-with tcp-reset",
        "-A OUTPUT -p udp -m udp --dport 853 -j REJECT --reject-with icmp6-port-unreachable",
    ]
    v6 += [f"-A OUTPUT -d {c} -j ACCEPT" for c in policy.cidrs if ":" in c]
    v6 += [
        "-A OUTPUT -p tcp -j REJECT --reject-with tcp-reset",
        "-A OUTPUT -j REJECT --reject-with icmp6-port-unreachable",
        "COMMIT",
    ]
    return {
        "ipv4": "\n".join(v4) + "\n",
        "ipv6": "\n".join(v6) + "\n",
        "stamp": firewall_stamp(policy),
    }
