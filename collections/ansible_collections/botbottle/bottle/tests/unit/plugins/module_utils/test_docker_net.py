"""Addressing of Docker bottle networks (module_utils/_docker_net.py)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.botbottle.bottle.plugins.module_utils._docker_net import (
    bottle_addresses,
    choose_subnet,
)


def test_addresses_default_gateway_is_first_host() -> None:
    assert bottle_addresses("172.30.9.80/28") == {
        "subnet": "172.30.9.80/28",
        "gateway": "172.30.9.81",
        "resolver": "172.30.9.82",
        "holder": "172.30.9.83",
        "proxy": "172.30.9.84",
    }


def test_addresses_skip_an_explicit_gateway() -> None:
    addr = bottle_addresses("10.0.0.0/29", "10.0.0.2")
    assert (addr["resolver"], addr["holder"], addr["proxy"]) == ("10.0.0.1", "10.0.0.3", "10.0.0.4")


@pytest.mark.parametrize(
    ("subnet", "gateway", "message"),
    [
        ("10.0.0.0/30", None, "too small"),
        ("10.0.0.0/28", "10.0.1.1", "outside"),
        ("10.0.0.1/28", None, "host bits"),
    ],
)
def test_addresses_errors(subnet: str, gateway: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bottle_addresses(subnet, gateway)


def test_choose_subnet_is_stable_and_in_the_pool() -> None:
    first = choose_subnet("dev", "172.30.0.0/16", 28, [])
    assert first == choose_subnet("dev", "172.30.0.0/16", 28, ["10.0.0.0/8"])
    net = ipaddress.ip_network(first)
    assert net.prefixlen == 28
    assert net.subnet_of(ipaddress.ip_network("172.30.0.0/16"))  # type: ignore[arg-type]


def test_choose_subnet_skips_used_ranges() -> None:
    first = choose_subnet("dev", "172.30.0.0/24", 28, [])
    second = choose_subnet("dev", "172.30.0.0/24", 28, [first])
    assert second != first
    # a wide network overlapping the whole pool leaves nothing
    with pytest.raises(ValueError, match=r"no free /28 left in 172\.30\.0\.0/24"):
        choose_subnet("dev", "172.30.0.0/24", 28, ["172.16.0.0/12"])


def test_choose_subnet_ignores_garbage_and_ipv6() -> None:
    assert choose_subnet("x", "172.30.0.0/24", 28, ["nonsense", "2001:db8::/32"])


@pytest.mark.parametrize("prefix", [8, 30])
def test_choose_subnet_prefix_bounds(prefix: int) -> None:
    with pytest.raises(ValueError, match="must lie between"):
        choose_subnet("x", "172.30.0.0/16", prefix, [])


@given(
    st.lists(
        st.sampled_from(["a", "b", "c", "d", "e", "f", "g", "h"]),
        min_size=1,
        max_size=16,
        unique=True,
    )
)
def test_allocating_in_turn_never_overlaps(names: list[str]) -> None:
    used: list[str] = []
    for name in names:
        subnet = choose_subnet(name, "172.30.0.0/24", 28, used)
        assert not any(ipaddress.ip_network(subnet).overlaps(ipaddress.ip_network(u)) for u in used)
        used.append(subnet)
