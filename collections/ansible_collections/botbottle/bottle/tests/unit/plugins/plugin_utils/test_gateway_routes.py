"""smolmachines refuses a ``cidr`` route that would reach the host through smolvm's gateway
(plugin_utils/_enforcement.py ``gateway_routes``).

smolvm relays a flow to its guest gateway (100.96.0.1 / fd53:4d00::1) to the host's
loopback at the same port, so a route covering the gateway asks for the host. Every
smolmachine with a network denies the gateway's networks (``render_smolvm``'s deny
rules); the validator also refuses, for smolmachines, a route that overlaps them without
being wide. A wide route (``wide: true``) covers the gateway unavoidably and is kept off
it by the deny rules. How ``bottle validate`` and ``bottle plan`` report the refusal
(file, line, route and key; exit 2) is tested with the CLI (tests/unit/test_cli_validate.py
in the repository).
"""

from __future__ import annotations

import pytest

from ansible_collections.botbottle.bottle.plugins.plugin_utils._enforcement import gateway_routes


@pytest.mark.parametrize(
    "routes",
    [
        [{"cidr": "0.0.0.0/0", "wide": True}],
        [{"cidr": "::/0", "wide": True}],
        [{"cidr": "100.97.0.0/16"}, {"cidr": "203.0.113.0/24"}, {"host": "a.example"}],
        [{"cidr": "fd53:4d00:0:1::/64"}],
    ],
)
def test_wide_routes_and_other_networks_pass(routes: list[dict[str, object]]) -> None:
    manifest = {"egress": {"routes": routes}}
    assert gateway_routes(manifest, "smolmachines") == []
    assert gateway_routes(manifest, "auto") == []


def test_only_smolmachines_refuses() -> None:
    manifest = {"egress": {"routes": [{"cidr": "100.96.0.1/32"}]}}
    [found] = gateway_routes(manifest, "smolmachines")
    assert found.parts == ("egress", "routes", 0, "cidr") and found.value == "100.96.0.0/16"
    assert gateway_routes(manifest, "auto") == [found]
    assert gateway_routes(manifest, "docker") == []
    # malformed routes are the compiler's to refuse, not this check's
    assert gateway_routes({"egress": {"routes": [{"cidr": "bogus"}, "x", {}]}}, "auto") == []
