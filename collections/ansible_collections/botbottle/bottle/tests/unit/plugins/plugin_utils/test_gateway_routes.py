"""smolmachines refuses a ``cidr`` route that would reach the host through smolvm's gateway.

smolvm relays a flow to its guest gateway (100.96.0.1 / fd53:4d00::1) to the host's
loopback at the same port, so a route covering the gateway asks for the host. Every
smolmachine with a network denies the gateway's networks (``render_smolvm``'s deny
rules); the validator also refuses, for smolmachines, a route that overlaps them without
being wide, naming the file, its line, the route and the key (exit 2). A wide route
(``wide: true``) covers the gateway unavoidably and is kept off it by the deny rules.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from ansible_collections.botbottle.bottle.plugins.plugin_utils._enforcement import (
    GATEWAY_FIX,
    gateway_routes,
)
from botbottle import cli


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


GATEWAY = """\
egress:
  routes:
    - host: api.example.com
    - cidr: {cidr}
"""


@pytest.mark.parametrize(
    ("cidr", "gateway"),
    [
        ("100.96.0.1/32", "100.96.0.0/16"),
        ("100.96.0.1", "100.96.0.0/16"),
        ("100.64.0.0/10", "100.96.0.0/16"),
        ("fd53:4d00::1", "fd53:4d00::/64"),
        ("fd53::/16", "fd53:4d00::/64"),
    ],
)
def test_validate_refuses_a_route_to_the_gateway_for_smolmachines(
    tmp_path: Path, cidr: str, gateway: str
) -> None:
    (tmp_path / "host.yml").write_text(GATEWAY.format(cidr=cidr))
    for extra in ([], ["--backend", "smolmachines"]):
        code, out, err = run("validate", str(tmp_path / "host.yml"), *extra)
        assert code == cli.EXIT_INVALID, err
        [line] = _errors(err)
        assert "host.yml:4: $.egress.routes[1].cidr: route 1 (cidr " in line
        assert f"'cidr' overlaps {gateway}, the network of smolvm's guest gateway" in line
        assert "relays to the host's loopback: the smolmachines backend refuses it" in line
        assert f"(fix: {GATEWAY_FIX})" in line
        assert "ok  host" not in out
        assert "Traceback" not in out + err
    # on Docker 100.96.0.0/16 is an ordinary network
    code, out, err = run("validate", str(tmp_path / "host.yml"), "--backend", "docker")
    assert code == cli.EXIT_OK and "ok  host" in out, err


def test_plan_json_names_the_route(tmp_path: Path) -> None:
    (tmp_path / "host.yml").write_text(GATEWAY.format(cidr="100.96.0.1/32"))
    code, out, _ = run("plan", str(tmp_path), "--backend", "smolmachines", "--format", "json")
    assert code == cli.EXIT_INVALID
    data = json.loads(out)
    assert data["valid"] is False and data["bottles"] == []
    [error] = data["errors"]
    assert error["path"] == "$.egress.routes[1].cidr" and error["line"] == 4
    assert error["file"].endswith("host.yml") and error["fix"] == GATEWAY_FIX


def test_a_route_inherited_from_a_parent_names_the_parent(tmp_path: Path) -> None:
    (tmp_path / "parent.yml").write_text(GATEWAY.format(cidr="100.96.0.1/32"))
    (tmp_path / "child.yml").write_text(
        "extends: parent\negress:\n  routes:\n    - cidr: 203.0.113.0/24\n"
    )
    code, _, err = run("validate", str(tmp_path / "child.yml"), "--backend", "smolmachines")
    assert code == cli.EXIT_INVALID
    [line] = _errors(err)
    assert "parent.yml:4: $.egress.routes[1].cidr: route 1 (cidr 100.96.0.1/32)" in line


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
