"""``bottle validate`` and ``bottle plan`` refuse what the collection's checks refuse: exit
2, and one line naming the file (its line where known), the route and the key. The checks
themselves are tested with the collection (its tests/unit/plugins/).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from ansible_collections.botbottle.bottle.plugins.plugin_utils._enforcement import GATEWAY_FIX
from botbottle import cli

# --------------------------------------------------------------------------- smolvm's gateway
# smolmachines refuses a ``cidr`` route that would reach the host through smolvm's guest
# gateway (100.96.0.1 / fd53:4d00::1, relayed to the host's loopback), unless it is wide.


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


# --------------------------------------------------------------------------- route auth


def test_the_cli_refuses_a_bad_auth_with_exit_2_naming_file_route_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ok.yml").write_text(
        "egress:\n  routes:\n    - host: git.example.com\n"
        "      auth: {scheme: token, token_ref: FORGE}\n"
    )
    (tmp_path / "twice.yml").write_text(
        "egress:\n  routes:\n    - host: git.example.com\n"
        "      auth: {scheme: token, token_ref: FORGE}\n"
        "    - host: git.example.com\n"
        "      auth: {scheme: Bearer, token_ref: OTHER}\n"
    )
    assert cli.main(["validate", str(tmp_path / "ok.yml"), "--backend", "docker"]) == 0
    assert cli.main(["validate", str(tmp_path / "twice.yml"), "--backend", "docker"]) == 2
    err = capsys.readouterr().err
    assert "twice.yml" in err and "$.egress.routes[1].auth" in err, err
    assert "route 1 (host git.example.com)" in err, err


# --------------------------------------------------------------------------- route matches


def test_bad_matches_name_the_file_route_and_key_at_validation(tmp_path: Path) -> None:
    (tmp_path / "bad.yml").write_text(
        "egress:\n  routes:\n    - host: a.example\n"
        "      matches: [{paths: [{type: regex, value: '/x/(y'}]}]\n"
    )
    err = io.StringIO()
    code = cli.main(
        ["validate", str(tmp_path / "bad.yml"), "--backend", "docker"], io.StringIO(), err
    )
    assert code == cli.EXIT_INVALID
    assert "bad.yml" in err.getvalue()
    assert "$.egress.routes[0].matches[0].paths[0].value" in err.getvalue()
    assert "is not a valid regular expression" in err.getvalue()
