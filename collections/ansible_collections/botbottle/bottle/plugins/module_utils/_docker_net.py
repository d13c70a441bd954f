# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Addressing of a Docker bottle's internal network.

**PRIVATE** to the botbottle.bottle collection.

Docker gives containers fixed addresses only on networks whose subnet was
configured explicitly, so bottle networks get a subnet from a pool: the
bottle's name picks a starting slot (stable across runs and hosts) and the
first slot that overlaps no existing network is taken. The resolver, the
namespace holder (whose network namespace the agent joins) and the egress proxy
take the first three host addresses that are not the gateway.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable
from typing import Any


def bottle_addresses(subnet: str, gateway: str | None = None) -> dict[str, Any]:
    """Fixed addresses of a bottle network: gateway (default: the first host), resolver,
    holder, proxy."""
    network = ipaddress.IPv4Network(subnet, strict=True)
    first = _first_hosts(network, 4)
    gw = ipaddress.IPv4Address(gateway) if gateway else (first[0] if first else None)
    if gw is None or gw not in network:
        raise ValueError(f"gateway {gateway} is outside subnet {subnet}")
    hosts = [address for address in first if address != gw]
    if len(hosts) < 3:
        raise ValueError(f"subnet {subnet} is too small for a resolver, a holder and a proxy")
    return {
        "subnet": str(network),
        "gateway": str(gw),
        "resolver": str(hosts[0]),
        "holder": str(hosts[1]),
        "proxy": str(hosts[2]),
    }


def _first_hosts(network: ipaddress.IPv4Network, count: int) -> list[ipaddress.IPv4Address]:
    found: list[ipaddress.IPv4Address] = []
    for address in network.hosts():
        found.append(address)
        if len(found) == count:
            break
    return found


def choose_subnet(name: str, pool: str, prefix: int, used: Iterable[str]) -> str:
    """A subnet of ``pool`` with ``prefix`` for bottle ``name`` overlapping nothing ``used``."""
    network = ipaddress.IPv4Network(pool, strict=True)
    if not network.prefixlen <= prefix <= 29:
        raise ValueError(f"prefix /{prefix} must lie between /{network.prefixlen} and /29")
    taken = []
    for text in used:
        try:
            taken.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            continue
    count = 2 ** (prefix - network.prefixlen)
    start = int(hashlib.sha256(name.encode("utf-8")).hexdigest(), 16) % count
    step = 2 ** (32 - prefix)
    base = int(network.network_address)
    for offset in range(count):
        slot = (start + offset) % count
        candidate = ipaddress.IPv4Network((base + slot * step, prefix))
        if not any(candidate.overlaps(other) for other in taken if other.version == 4):
            return str(candidate)
    raise ValueError(
        f"no free /{prefix} left in {pool}; "
        "set docker_bottle_subnet_pool to a larger or other range"
    )
