"""What smolvm lets a bottle reach on its host, pinned at record level (issue 13 item 4).

README "The egress proxy and smolmachines" explains, from smolvm's source, why the egress
proxy is not used on smolmachines: a guest reaches the host only through its gateway
address, which smolvm relays to the host's loopback, and the allow list holds addresses
without ports. The tests here pin the parts of that which the pinned smolvm shows without
booting a guest (its CLI and its records), so a smolvm bump that changes them fails here.
The two gaps the README listed (a route covering the gateway reached the host's loopback;
a cidr-only bottle had no DNS filter) are closed by the compiler, and proven here on real
records: every machine with a network is created with deny rules for the gateway, and a
cidr-only bottle gets a host pattern that never resolves.

Nothing here boots a VM or touches the network: every test gets its own XDG_DATA_HOME.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
import smol

from ansible_collections.botbottle.bottle.plugins.module_utils._policy import (
    SMOLVM_GATEWAY_NETWORKS,
    SMOLVM_NO_NAMES,
    compile_policy,
    render_smolvm,
    smolvm_deny_cidrs,
)
from ansible_collections.botbottle.bottle.plugins.plugin_utils._enforcement import gateway_routes

pytestmark = pytest.mark.integration

CLI = os.path.join(os.path.dirname(smol.__file__), "smol-vmm")
# The gateway of smolvm's default guest link (crates/smolvm-network/src/lib.rs,
# GuestNetworkConfig::default; `--guest-subnet` help of 1.32.2: "the default 100.96.0.0/30").
GATEWAY_V4 = "100.96.0.1"
GATEWAY_V6 = "fd53:4d00::1"


def smolvm(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "machine", *args],
        env={**os.environ, "XDG_DATA_HOME": str(data), "SMOL_CLOUD_TOKEN": ""},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def record(data: Path, name: str) -> dict[str, Any]:
    """The machine's row in smolvm's own database, opened read-only."""
    db = data / "smolvm" / "server" / "smolvm.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT data FROM vms WHERE name = ?", (name,)).fetchone()
    assert row is not None, f"no record for {name}"
    loaded: dict[str, Any] = json.loads(row[0])
    return loaded


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


def test_the_gateway_is_an_address_entry_and_ports_are_refused(data: Path) -> None:
    """An allow-list entry that admits the gateway admits all of it: no port can be given."""
    made = smolvm(data, "create", "--name", "gw", "--allow-cidr", f"{GATEWAY_V4}/32")
    assert made.returncode == 0, made.stderr
    stored = record(data, "gw")
    assert stored["allowed_cidrs"] == [f"{GATEWAY_V4}/32"]
    assert not stored.get("dns_filter_hosts")
    for entry in (f"{GATEWAY_V4}:3128", f"{GATEWAY_V4}/32:3128"):
        refused = smolvm(data, "create", "--name", "gw-port", "--allow-cidr", entry)
        assert refused.returncode == 2, (entry, refused.stdout)
        assert "invalid CIDR" in refused.stderr, refused.stderr
    assert smolvm(data, "status", "--name", "gw-port", "--json").returncode != 0


def test_deny_rules_are_stored_at_create_and_update_has_none(data: Path) -> None:
    made = smolvm(
        data,
        "create",
        "--name",
        "deny",
        "--allow-cidr",
        "203.0.113.0/24",
        "--deny-cidr",
        "100.96.0.0/16",
        "--deny-cidr",
        "fd53:4d00::/64",
    )
    assert made.returncode == 0, made.stderr
    assert record(data, "deny")["egress_rules"] == [
        {"cidr": "100.96.0.0/16", "action": "deny"},
        {"cidr": "fd53:4d00::/64", "action": "deny"},
    ]
    update = smolvm(data, "update", "--name", "deny", "--deny-cidr", "198.51.100.0/24")
    assert update.returncode == 2
    assert "--deny-cidr" in update.stderr, update.stderr
    assert len(record(data, "deny")["egress_rules"]) == 2  # unchanged


def test_a_cidr_only_allow_list_stores_no_dns_filter(data: Path) -> None:
    """smolvm filters DNS only when the list holds host entries (egress.rs dns_filter_active):
    a record made with CIDRs alone has none, so every query would go upstream."""
    made = smolvm(data, "create", "--name", "cidr-only", "--allow-cidr", "203.0.113.0/24")
    assert made.returncode == 0, made.stderr
    stored = record(data, "cidr-only")
    assert stored["allowed_cidrs"] == ["203.0.113.0/24"]
    assert stored.get("dns_filter_hosts") is None


def test_a_cidr_only_bottle_gets_a_dns_filter(data: Path) -> None:
    """The compiler adds a name that never resolves, so smolvm's DNS filter is on."""
    allow = render_smolvm(compile_policy({"egress": {"routes": [{"cidr": "203.0.113.0/24"}]}}))
    assert allow["allow_hosts"] == ["=" + SMOLVM_NO_NAMES]
    made = smolvm(data, "create", "--name", "cidr-only", *allow["cli_args"])
    assert made.returncode == 0, made.stderr
    stored = record(data, "cidr-only")
    assert stored["allowed_cidrs"] == ["203.0.113.0/24"]
    assert stored["dns_filter_hosts"] == ["=" + SMOLVM_NO_NAMES]
    # the same list survives an in-place update (what the module does on a policy change)
    update = smolvm(
        data, "update", "--name", "cidr-only", "--reset-allow-list", *allow["update_args"]
    )
    assert update.returncode == 0, update.stderr
    assert record(data, "cidr-only")["dns_filter_hosts"] == ["=" + SMOLVM_NO_NAMES]


def _denied(stored: dict[str, Any]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [
        ipaddress.ip_network(rule["cidr"])
        for rule in stored.get("egress_rules") or ()
        if rule.get("action") == "deny"
    ]


@pytest.mark.parametrize(
    ("route", "gateway"),
    [
        ({"cidr": f"{GATEWAY_V4}/32"}, GATEWAY_V4),
        ({"cidr": GATEWAY_V6}, GATEWAY_V6),
        ({"cidr": "0.0.0.0/0", "wide": True}, GATEWAY_V4),
        ({"cidr": "::/0", "wide": True}, GATEWAY_V6),
        ({"cidr": "203.0.113.0/24"}, GATEWAY_V4),
    ],
    ids=["gateway-v4", "gateway-v6", "wide-v4", "wide-v6", "other"],
)
def test_no_route_reaches_the_gateway(data: Path, route: dict[str, Any], gateway: str) -> None:
    """Every compiled machine is created with deny rules for the gateway's networks and
    the host's loopback, which smolvm checks before any allow (1.32.2 --help); a route
    that is not wide and overlaps the gateway is also refused by the validator."""
    manifest = {"egress": {"routes": [route]}}
    allow = render_smolvm(compile_policy(manifest))
    made = smolvm(data, "create", "--name", "reach", *allow["cli_args"])
    assert made.returncode == 0, made.stderr
    stored = record(data, "reach")
    denied = _denied(stored)
    for address in (gateway, "127.0.0.1", "::1"):
        ip = ipaddress.ip_address(address)
        assert any(ip in net for net in denied), f"{route}: nothing denies {address}"
    assert sorted(map(str, denied)) == sorted(
        str(ipaddress.ip_network(c)) for c in smolvm_deny_cidrs()
    )
    refused = gateway_routes(manifest, "smolmachines")
    overlaps = any(
        ipaddress.ip_network(route["cidr"]).overlaps(net)
        for net in SMOLVM_GATEWAY_NETWORKS
        if net.version == ipaddress.ip_network(route["cidr"]).version
    )
    assert bool(refused) == (overlaps and not route.get("wide")), refused
