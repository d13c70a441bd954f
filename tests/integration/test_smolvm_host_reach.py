"""What smolvm lets a bottle reach on its host, pinned at record level (issue 13 item 4).

README "The egress proxy and smolmachines" explains, from smolvm's source, why the egress
proxy is not used on smolmachines: a guest reaches the host only through its gateway
address, which smolvm relays to the host's loopback, and the allow list holds addresses
without ports. The tests here pin the parts of that which the pinned smolvm shows without
booting a guest (its CLI and its records), so a smolvm bump that changes them fails here.
The two gaps the README lists are strict xfails: whoever closes one sees the test pass and
must drop the marker (and the README paragraph).

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
    PolicyError,
    compile_policy,
    render_smolvm,
)

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
    """smolvm filters DNS only when the list holds host entries (egress.rs dns_filter_active)."""
    policy = compile_policy({"egress": {"routes": [{"cidr": "203.0.113.0/24"}]}})
    allow = render_smolvm(policy)
    assert allow["allow_hosts"] == []
    made = smolvm(data, "create", "--name", "cidr-only", *allow["cli_args"])
    assert made.returncode == 0, made.stderr
    stored = record(data, "cidr-only")
    assert stored["allowed_cidrs"] == ["203.0.113.0/24"]
    assert stored.get("dns_filter_hosts") is None


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="README gap: a cidr-only smolmachines bottle's DNS is not filtered by smolvm",
)
def test_gap_a_cidr_only_bottle_gets_a_dns_filter() -> None:
    allow = render_smolvm(compile_policy({"egress": {"routes": [{"cidr": "203.0.113.0/24"}]}}))
    assert allow["allow_hosts"], "no host entry, so smolvm forwards every DNS query upstream"


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="README gap: a cidr route covering smolvm's gateway reaches the host's loopback",
)
@pytest.mark.parametrize(
    ("route", "gateway"),
    [
        ({"cidr": f"{GATEWAY_V4}/32"}, GATEWAY_V4),
        ({"cidr": GATEWAY_V6}, GATEWAY_V6),
        ({"cidr": "0.0.0.0/0", "wide": True}, GATEWAY_V4),
    ],
    ids=["gateway-v4", "gateway-v6", "wide"],
)
def test_gap_no_route_reaches_the_gateway(route: dict[str, Any], gateway: str) -> None:
    try:
        allow = render_smolvm(compile_policy({"egress": {"routes": [route]}}))
    except PolicyError:
        return  # refused by the compiler: closed
    args = allow["cli_args"]
    denied = [
        ipaddress.ip_network(v)
        for f, v in zip(args[0::2], args[1::2], strict=True)
        if f == "--deny-cidr"
    ]
    address = ipaddress.ip_address(gateway)
    assert any(address in net for net in denied), f"{route} admits {gateway} and nothing denies it"
