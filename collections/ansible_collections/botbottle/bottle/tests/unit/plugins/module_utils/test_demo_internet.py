"""The demo's stand-in for the internet: names, addresses, configurations
(module_utils/_demo_internet.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.botbottle.bottle.plugins.filter.demo_internet import (
    demo_internet as demo_internet_filter,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._demo_internet import (
    demo_addresses,
    demo_internet,
    demo_names,
    origin_cert_conf,
    resolver_conf,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._policy import build_policy
from ansible_collections.botbottle.bottle.plugins.plugin_utils._manifest import resolve


def bottle(
    exact: list[str], zones: tuple[str, ...] = (), cidrs: tuple[str, ...] = ()
) -> dict[str, Any]:
    return {"name": "b", "policy": build_policy(exact, zones, cidrs).to_dict()}


def test_names_of_several_bottles_are_merged_normalised_and_sorted() -> None:
    names = demo_names(
        [
            bottle(["api.anthropic.com"]),
            bottle(
                ["Registry.NPMJS.org.", "api.anthropic.com"],
                ("githubusercontent.com",),
                ("203.0.113.0/24",),
            ),
        ]
    )
    assert names == {
        "exact": ["api.anthropic.com", "registry.npmjs.org"],
        "zones": ["githubusercontent.com"],
        "sans": ["api.anthropic.com", "registry.npmjs.org", "*.githubusercontent.com"],
    }


def test_names_accept_bare_policies() -> None:
    policy = build_policy(["pypi.org"]).to_dict()
    assert demo_names([policy])["exact"] == ["pypi.org"]


def test_names_are_checked_by_the_compiler() -> None:
    with pytest.raises(ValueError, match="IP address"):
        demo_names([{"policy": {"exact_hosts": ["192.0.2.1"]}}])


def test_no_host_route_is_an_error() -> None:
    with pytest.raises(ValueError, match="no host routes"):
        demo_names([bottle([], (), ("203.0.113.0/24",))])
    with pytest.raises(ValueError, match="no host routes"):
        demo_names([])


def test_addresses() -> None:
    assert demo_addresses("172.29.253.0/24", "172.29.253.53", "172.29.253.80") == {
        "subnet": "172.29.253.0/24",
        "gateway": "172.29.253.1",
        "ip_range": "172.29.253.128/25",
        "resolver": "172.29.253.53",
        "origin": "172.29.253.80",
    }


@pytest.mark.parametrize(
    ("subnet", "resolver", "origin", "message"),
    [
        ("172.29.253.0/29", "172.29.253.2", "172.29.253.3", "too small"),
        ("172.29.253.1/24", "172.29.253.53", "172.29.253.80", "host bits"),
        ("172.29.253.0/24", "172.29.253.200", "172.29.253.80", "lower half"),
        ("172.29.253.0/24", "172.29.254.53", "172.29.253.80", "lower half"),
        ("172.29.253.0/24", "172.29.253.1", "172.29.253.80", "gateway"),
        ("172.29.253.0/24", "172.29.253.0", "172.29.253.80", "gateway"),
        ("172.29.253.0/24", "172.29.253.53", "172.29.253.53", "both"),
        ("fd00::/64", "fd00::53", "fd00::80", "IPv4"),
    ],
)
def test_address_errors(subnet: str, resolver: str, origin: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        demo_addresses(subnet, resolver, origin)


def test_resolver_conf_answers_only_the_names_and_forwards_nothing() -> None:
    names = demo_names(
        [bottle(["api.anthropic.com", "raw.githubusercontent.com"], ("githubusercontent.com",))]
    )
    lines = resolver_conf(names, "10.0.0.53", "10.0.0.80").splitlines()
    body = [line for line in lines if not line.startswith("#")]
    assert "no-resolv" in body and "no-hosts" in body
    assert not [line for line in body if line.startswith(("server=", "resolv-file"))]
    assert "listen-address=10.0.0.53" in body
    answers = [line for line in body if line.startswith("address=")]
    assert answers == [
        "address=/api.anthropic.com/10.0.0.80",
        "address=/*.api.anthropic.com/",
        # below raw.githubusercontent.com the zone answers: no NXDOMAIN line for it
        "address=/raw.githubusercontent.com/10.0.0.80",
        "address=/*.githubusercontent.com/10.0.0.80",
        "address=/#/",
    ]


def test_resolver_conf_exact_name_equal_to_a_zone() -> None:
    names = demo_names([bottle(["example.com"], ("example.com",))])
    answers = [
        line
        for line in resolver_conf(names, "10.0.0.53", "10.0.0.80").splitlines()
        if line.startswith("address=")
    ]
    assert answers == [
        "address=/example.com/10.0.0.80",
        "address=/*.example.com/10.0.0.80",
        "address=/#/",
    ]


def test_cert_conf_lists_every_name() -> None:
    names = demo_names([bottle(["api.anthropic.com"], ("githubusercontent.com",))])
    conf = origin_cert_conf(names)
    assert "subjectAltName = DNS:api.anthropic.com, DNS:*.githubusercontent.com" in conf
    assert "CA:FALSE" in conf and "serverAuth" in conf
    with pytest.raises(ValueError, match="at least one name"):
        origin_cert_conf({"sans": []})


def test_everything_in_one_value_and_the_filter_wraps_errors() -> None:
    bottles = [bottle(["api.anthropic.com"])]
    value = demo_internet(bottles, "172.29.253.0/24", "172.29.253.53", "172.29.253.80")
    assert set(value) == {"names", "addresses", "resolver_conf", "cert_conf"}
    assert "address=/api.anthropic.com/172.29.253.80" in value["resolver_conf"]
    assert (
        demo_internet_filter(bottles, "172.29.253.0/24", "172.29.253.53", "172.29.253.80") == value
    )
    with pytest.raises(AnsibleFilterError, match=r"demo_internet: .*lower half"):
        demo_internet_filter(bottles, "172.29.253.0/24", "172.29.253.253", "172.29.253.80")


def test_examples_serve_their_hosts() -> None:
    """The demo inventory's bottles: every exact host and the wildcard zone."""
    examples = Path(__file__).resolve().parents[8] / "examples" / "bottles"  # the checkout's
    bottles = [resolve(examples / "base.yml"), resolve(examples / "web-dev.md")]
    names = demo_names([{"policy": b.policy.to_dict()} for b in bottles])
    assert names["exact"] == ["api.anthropic.com", "registry.npmjs.org"]
    assert names["zones"] == ["githubusercontent.com"]
