# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The demo's stand-in for the internet: which names it serves, where, and how.

**PRIVATE** to the botbottle.bottle collection. DEMO ONLY.

The role ``demo_internet`` runs, on one internal Docker network, a resolver
(dnsmasq) that answers only the demo bottles' allowlisted names, all with the
address of one HTTPS origin, and that origin, whose certificate comes from the
role's own CA. This module turns the bottles' compiled policies into those
names, checks the addresses, and renders the resolver's configuration and the
certificate request's configuration. Pure functions, standard library only.

Name semantics follow the policy compiler: ``host: api.example.com`` is that
name only (names below it are NXDOMAIN); ``host: "*.example.com"`` is every name
below ``example.com`` at any depth, never ``example.com`` itself. A TLS wildcard
(``*.example.com``) covers one label only, so the origin's certificate serves
``a.example.com`` but not ``a.b.example.com``; the resolver answers both.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from ansible_collections.botbottle.bottle.plugins.module_utils._policy import (
    policy_from_dict,
)

#: The certificate's subject; the SANs are what TLS clients check.
ORIGIN_COMMON_NAME = "bot-bottle demo internet origin"


def _policy_of(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    """A bottle entry (``bottle_manifest`` lookup item, with ``policy``) or a policy dict."""
    policy = entry.get("policy", entry)
    if not isinstance(policy, Mapping):
        raise ValueError(f"expected a bottle with a compiled policy, got {type(policy).__name__}")
    return policy


def demo_names(bottles: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """The names the stand-in serves for ``bottles`` (their exact hosts and wildcard zones,
    normalised by the compiler): ``exact``, ``zones`` and the certificate's ``sans``."""
    exact: set[str] = set()
    zones: set[str] = set()
    for entry in bottles:
        if not isinstance(entry, Mapping):
            raise ValueError(f"expected a bottle mapping, got {type(entry).__name__}")
        policy = policy_from_dict(_policy_of(entry))
        exact.update(policy.exact_hosts)
        zones.update(policy.wildcard_zones)
    if not exact and not zones:
        raise ValueError("the bottles have no host routes: the stand-in would serve no name")
    exact_sorted = sorted(exact)
    zones_sorted = sorted(zones)
    return {
        "exact": exact_sorted,
        "zones": zones_sorted,
        "sans": exact_sorted + [f"*.{zone}" for zone in zones_sorted],
    }


def demo_addresses(subnet: str, resolver: str, origin: str) -> dict[str, str]:
    """Check the stand-in's network: ``subnet`` (IPv4), its gateway (the first host), the
    range Docker hands out to other containers (the upper half) and the two fixed
    addresses, which must lie in the lower half, apart from the gateway and each other."""
    if ":" in subnet:
        raise ValueError(f"subnet {subnet} must be an IPv4 network")
    network = ipaddress.IPv4Network(subnet, strict=True)
    if network.prefixlen > 28:
        raise ValueError(f"subnet {subnet} is too small; use a /28 or larger")
    lower, upper = network.subnets(prefixlen_diff=1)
    gateway = next(network.hosts())
    fixed: dict[str, ipaddress.IPv4Address] = {}
    for role, text in (("resolver", resolver), ("origin", origin)):
        address = ipaddress.IPv4Address(text)
        if address not in lower:
            raise ValueError(
                f"{role} address {text} must lie in {lower}, the lower half of {subnet} "
                f"(Docker hands out {upper} to other containers)"
            )
        if address in (gateway, network.network_address):
            raise ValueError(f"{role} address {text} is the network's own address or gateway")
        fixed[role] = address
    if fixed["resolver"] == fixed["origin"]:
        raise ValueError(f"the resolver and the origin both have the address {resolver}")
    return {
        "subnet": str(network),
        "gateway": str(gateway),
        "ip_range": str(upper),
        "resolver": str(fixed["resolver"]),
        "origin": str(fixed["origin"]),
    }


def resolver_conf(names: Mapping[str, Sequence[str]], listen: str, origin: str) -> str:
    """dnsmasq's whole configuration: the demo names answer ``origin``; names below an
    exact name, a zone's apex and every other name are NXDOMAIN; nothing is forwarded."""
    lines = [
        "# bot-bottle demo internet (DEMO ONLY): answers the demo bottles' names with the",
        "# stand-in origin's address, NXDOMAIN for every other name; it forwards nothing.",
        "no-resolv",
        "no-hosts",
        "no-poll",
        f"listen-address={listen}",
        "bind-interfaces",
        "user=root",
        "group=root",
        "pid-file=",
        "log-queries",
        "log-facility=-",
    ]
    zones = tuple(names.get("zones", ()))
    for name in names.get("exact", ()):
        lines.append(f"address=/{name}/{origin}")
        if not any(name == zone or name.endswith("." + zone) for zone in zones):
            lines.append(f"address=/*.{name}/")  # NXDOMAIN below it, unless a zone answers
    for zone in names.get("zones", ()):
        lines.append(f"address=/*.{zone}/{origin}")
    lines.append("address=/#/")
    return "\n".join(lines) + "\n"


def origin_cert_conf(names: Mapping[str, Sequence[str]]) -> str:
    """OpenSSL ``req`` configuration for the origin's certificate (section ``v3_origin``)."""
    sans = ", ".join(f"DNS:{name}" for name in names.get("sans", ()))
    if not sans:
        raise ValueError("the origin's certificate needs at least one name")
    return "\n".join(
        [
            "# bot-bottle demo internet (DEMO ONLY): the origin's certificate request",
            "[req]",
            "prompt = no",
            "distinguished_name = dn",
            "x509_extensions = v3_origin",
            "",
            "[dn]",
            f"CN = {ORIGIN_COMMON_NAME}",
            "",
            "[v3_origin]",
            "basicConstraints = critical, CA:FALSE",
            "keyUsage = critical, digitalSignature",
            "extendedKeyUsage = serverAuth",
            "subjectKeyIdentifier = hash",
            "authorityKeyIdentifier = keyid",
            f"subjectAltName = {sans}",
            "",
        ]
    )


def demo_internet(
    bottles: Sequence[Mapping[str, Any]], subnet: str, resolver: str, origin: str
) -> dict[str, Any]:
    """Everything the role needs in one value: ``names``, ``addresses``, ``resolver_conf``
    and ``cert_conf``."""
    names = demo_names(bottles)
    addresses = demo_addresses(subnet, resolver, origin)
    return {
        "names": names,
        "addresses": addresses,
        "resolver_conf": resolver_conf(names, addresses["resolver"], addresses["origin"]),
        "cert_conf": origin_cert_conf(names),
    }
