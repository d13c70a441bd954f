"""The collection's plugins and site.yml, run by real ansible-playbook."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.botbottle.bottle.plugins.module_utils._policy import (
    build_policy,
    render_dnsmasq,
    render_firewall,
    render_smolvm,
)
from tests.helpers import ansible

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")


def playbook(*args: str) -> subprocess.CompletedProcess[str]:
    return ansible("ansible-playbook", *args)


def test_filters_render_exactly_what_the_compiler_renders(tmp_path: Path) -> None:
    out = tmp_path / "render.json"
    proc = playbook("tests/integration/playbooks/filters.yml", "-e", f"render_out={out}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    policy = build_policy(["api.example.com"], ["cdn.example"], ["203.0.113.0/24"])
    assert data["policy"] == policy.to_dict()
    assert data["smolvm"] == render_smolvm(policy)
    assert data["dnsmasq"] == render_dnsmasq(policy, ["192.0.2.53"])
    assert data["firewall"] == render_firewall(policy, "10.89.0.2", "10.89.0.1")


def test_validation_play_compiles_each_hosts_bottles() -> None:
    proc = playbook("botbottle.bottle.validate", "-i", "examples/inventory/local.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "web-dev: policy sha256:" in proc.stdout
    assert "base: policy sha256:" in proc.stdout
    assert "*.githubusercontent.com" in proc.stdout


def test_validation_play_takes_the_bottles_the_cli_resolved_as_data(tmp_path: Path) -> None:
    # what the bottle CLI hands over (fleet.run_playbook): host -> bottle records; the play
    # shows them without resolving again, and a manifest's text is never templated
    records = [
        {
            "name": "handed",
            "policy": {"hash": "sha256:handed", "exact_hosts": ["{{ 6 * 7 }}.example"]}
            | {"wildcard_zones": [], "cidrs": []},
            "warnings": [],
        }
    ]
    handoff = tmp_path / "resolved.json"
    handoff.write_text(json.dumps({"localhost": records}))
    proc = playbook(
        "botbottle.bottle.validate",
        "-i",
        "examples/inventory/local.yml",
        "-e",
        f"bottle_resolved_file={handoff}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "handed: policy sha256:handed; exact {{ 6 * 7 }}.example" in proc.stdout
    assert "42.example" not in proc.stdout
    assert "web-dev: policy" not in proc.stdout  # the inventory's manifests were not read


def test_site_stops_before_any_host_on_an_invalid_manifest(tmp_path: Path) -> None:
    (tmp_path / "good.yml").write_text("egress: {routes: [{host: a.example}]}\n")
    (tmp_path / "bad.yml").write_text("egress: {routes: [{hots: a.example}]}\n")
    bottles = [{"manifest": str(tmp_path / "good.yml")}, {"manifest": str(tmp_path / "bad.yml")}]
    proc = playbook(
        "site.yml", "-i", "examples/inventory/local.yml", "-e", json.dumps({"bottles": bottles})
    )
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "$.egress.routes[0].hots: unknown key 'hots'" in out
    assert "did you mean 'host'?" in out
    assert "Traceback" not in out
    # the first play failed: the bring-up play never started
    assert "Bring each host's bottles" not in out


def test_site_refuses_a_key_the_hosts_backend_does_not_enforce(tmp_path: Path) -> None:
    (tmp_path / "scoped.yml").write_text(
        "egress:\n"
        "  routes:\n"
        "    - host: api.github.com\n"
        "      matches: [{paths: [{type: prefix, value: /repos/our-org/}]}]\n"
    )
    bottles = [{"manifest": str(tmp_path / "scoped.yml")}]
    proc = playbook(
        "site.yml",
        "-i",
        "examples/inventory/local.yml",  # bottle_backend: auto, either backend
        "-e",
        json.dumps({"bottles": bottles}),
    )
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "scoped.yml:4: $.egress.routes[0].matches: route 0 (host api.github.com)" in out
    # auto may use smolmachines, which has no egress proxy; docker's enforces it
    assert "'matches' is not enforced by the smolmachines backend" in out
    assert "the docker backend's egress proxy enforces matches" in out
    assert "Traceback" not in out
    assert "Bring each host's bottles" not in out  # stopped before any host
    # removing the bottle (bottle down) needs nothing enforced
    down = playbook(
        "botbottle.bottle.validate",
        "-i",
        "examples/inventory/local.yml",
        "-e",
        json.dumps({"bottles": bottles, "bottle_state_override": "absent"}),
    )
    assert down.returncode == 0, down.stdout + down.stderr
