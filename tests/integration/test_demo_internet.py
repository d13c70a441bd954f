"""The demo's stand-in for the internet (role demo_internet) on a real dockerd.

The role runs with the example bottles on its own internal network (``bbdi-net``,
172.29.252.0/24, containers ``bbdi-*``); throw-away clients on that network, whose only
resolver is the stand-in's, check what it answers. Nothing leaves the machine: the
resolver forwards nothing and the network is internal.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, ansible, docker, require_docker

pytestmark = pytest.mark.integration

require_docker()

NET, PREFIX = "bbdi-net", "bbdi"
SUBNET, RESOLVER, ORIGIN = "172.29.252.0/24", "172.29.252.53", "172.29.252.80"
NETUTILS, PYTHON = "bot-bottle/netutils:latest", "bot-bottle/egress-proxy:latest"
EXAMPLES = ROOT / "examples" / "bottles"
ALL = [str(EXAMPLES / "base.yml"), str(EXAMPLES / "web-dev.md")]

CLIENT = """
import socket, ssl, sys, urllib.request
ca, name = sys.argv[1], sys.argv[2]
context = ssl.create_default_context(cafile=ca or None)
try:
    body = urllib.request.urlopen(f"https://{name}/hello", context=context, timeout=10).read()
    print("OK " + body.decode())
except Exception as exc:
    print(f"ERROR {type(exc).__name__}: {exc}")
"""


def _cleanup() -> None:
    for name in ("resolver", "origin"):
        docker("rm", "-f", f"{PREFIX}-{name}")
    docker("network", "rm", NET)


def _ensure_images() -> None:
    for image, playbook in (
        (NETUTILS, "netutils_image.yml"),
        (PYTHON, "egress_proxy_image.yml"),
    ):
        if docker("image", "inspect", image).returncode != 0:
            done = ansible("ansible-playbook", f"tests/integration/playbooks/{playbook}")
            assert done.returncode == 0, done.stdout + done.stderr


def _role(state_dir: Path, *args: str, manifests: list[str] = ALL, **extra: Any) -> dict[str, Any]:
    """Run the role; returns the play's recap counts and the facts it set."""
    variables = {
        "demo_internet_test_manifests": manifests,
        "demo_internet_network": NET,
        "demo_internet_subnet": SUBNET,
        "demo_internet_resolver_address": RESOLVER,
        "demo_internet_origin_address": ORIGIN,
        "demo_internet_name_prefix": PREFIX,
        "demo_internet_state_dir": str(state_dir),
        **extra,
    }
    done = ansible(
        "ansible-playbook",
        "tests/integration/playbooks/demo_internet.yml",
        "-e",
        json.dumps(variables),
        *args,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    recap = re.search(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+)", done.stdout)
    assert recap, done.stdout
    facts = re.search(
        r"demo_internet_facts=(\{.*\})'?\s*$", done.stdout.replace("\n        ", " "), re.M
    )
    assert facts, done.stdout
    return {"changed": int(recap.group(2)), "facts": json.loads(facts.group(1)), "out": done.stdout}


def _dig(name: str, qtype: str = "A") -> tuple[str, list[str]]:
    """Ask the stand-in's resolver from a throw-away container: (status, answers)."""
    done = docker(
        "run", "--rm", "--network", NET, "--dns", RESOLVER, NETUTILS,
        "dig", "+time=2", "+tries=1", name, qtype,
    )  # fmt: skip
    status = re.search(r"status: (\w+)", done.stdout)
    assert status, done.stdout + done.stderr
    answers = re.findall(rf"^[^;\s]\S*\s+\d+\s+IN\s+{qtype}\s+(\S+)$", done.stdout, re.M)
    return status.group(1), answers


def _get(name: str, ca: Path | None) -> str:
    """GET https://NAME/hello from a throw-away python3 client on the network."""
    mounts = ["-v", f"{ca}:/ca.pem:ro"] if ca else []
    done = docker(
        "run", "--rm", "--network", NET, "--dns", RESOLVER, *mounts, PYTHON,
        "python3", "-c", CLIENT, "/ca.pem" if ca else "", name,
    )  # fmt: skip
    return done.stdout.strip() + done.stderr.strip()


def _sans(state_dir: Path) -> str:
    done = subprocess.run(
        [
            "openssl",
            "x509",
            "-noout",
            "-ext",
            "subjectAltName",
            "-in",
            str(state_dir / "origin" / "cert.pem"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    _ensure_images()
    _cleanup()
    yield tmp_path_factory.mktemp("demo-internet") / "state"
    _cleanup()


@pytest.fixture(scope="module")
def up(state_dir: Path) -> dict[str, Any]:
    planned = _role(state_dir, "--check")
    assert planned["changed"] > 0
    assert not state_dir.exists(), "check mode wrote the state folder"
    assert docker("network", "inspect", NET).returncode != 0, "check mode made the network"
    first = _role(state_dir)
    assert first["changed"] > 0
    return first


def test_facts_and_idempotence(up: dict[str, Any], state_dir: Path) -> None:
    facts = up["facts"]
    assert facts["resolver"] == RESOLVER
    assert facts["ca"] == str(state_dir / "ca" / "ca.pem")
    assert facts["names"]["exact"] == ["api.anthropic.com", "registry.npmjs.org"]
    assert facts["names"]["zones"] == ["githubusercontent.com"]
    assert _role(state_dir)["changed"] == 0
    assert _role(state_dir, "--check")["changed"] == 0


def test_network_is_internal_and_the_ca_key_private(up: dict[str, Any], state_dir: Path) -> None:
    network = json.loads(docker("network", "inspect", NET).stdout)[0]
    assert network["Internal"] is True
    assert network["Labels"].get("botbottle.demo-internet") == PREFIX
    assert (state_dir / "ca" / "ca.key").stat().st_mode & 0o777 == 0o600
    assert (state_dir.stat().st_mode & 0o777) == 0o700


def test_resolver_answers_only_the_demo_names(up: dict[str, Any]) -> None:
    assert _dig("api.anthropic.com") == ("NOERROR", [ORIGIN])
    assert _dig("registry.npmjs.org") == ("NOERROR", [ORIGIN])
    assert _dig("raw.githubusercontent.com") == ("NOERROR", [ORIGIN])
    assert _dig("a.b.githubusercontent.com") == ("NOERROR", [ORIGIN])
    assert _dig("githubusercontent.com")[0] == "NXDOMAIN"  # a zone's apex is not in it
    assert _dig("x.api.anthropic.com")[0] == "NXDOMAIN"  # nothing below an exact name
    assert _dig("example.com")[0] == "NXDOMAIN"  # unlisted, and never forwarded
    assert _dig("pypi.org")[0] == "NXDOMAIN"


def test_origin_serves_https_with_the_demo_ca(up: dict[str, Any], state_dir: Path) -> None:
    ca = state_dir / "ca" / "ca.pem"
    for name in ("api.anthropic.com", "registry.npmjs.org", "raw.githubusercontent.com"):
        got = _get(name, ca)
        assert got.startswith(f"OK bot-bottle demo internet: served {name} "), got
    # the positive control above is trusted only through the demo CA
    assert "CERTIFICATE_VERIFY_FAILED" in _get("api.anthropic.com", None)
    # an unlisted name does not even resolve
    assert "ERROR URLError" in _get("example.com", ca)


def test_changed_names_reissue_the_certificate_and_reload_the_resolver(
    up: dict[str, Any], state_dir: Path
) -> None:
    assert "DNS:registry.npmjs.org" in _sans(state_dir)
    fewer = _role(state_dir, manifests=ALL[:1])
    assert fewer["changed"] > 0
    assert fewer["facts"]["names"] == {
        "exact": ["api.anthropic.com"],
        "zones": [],
        "sans": ["api.anthropic.com"],
    }
    assert "registry.npmjs.org" not in _sans(state_dir)
    assert _dig("registry.npmjs.org")[0] == "NXDOMAIN"
    got = _get("api.anthropic.com", state_dir / "ca" / "ca.pem")
    assert got.startswith("OK bot-bottle demo internet: served api.anthropic.com"), got
    assert _role(state_dir)["changed"] > 0  # back to every example name
    assert _dig("registry.npmjs.org") == ("NOERROR", [ORIGIN])


def test_absent_removes_everything_it_made(up: dict[str, Any], state_dir: Path) -> None:
    gone = _role(state_dir, demo_internet_state="absent")
    assert gone["changed"] > 0
    assert gone["facts"] == {"resolver": "", "ca": "", "names": {}}
    for name in ("resolver", "origin"):
        assert docker("container", "inspect", f"{PREFIX}-{name}").returncode != 0
    assert docker("network", "inspect", NET).returncode != 0
    assert not state_dir.exists()
    assert _role(state_dir, demo_internet_state="absent")["changed"] == 0
    # a network of that name the role did not make is left alone
    assert docker("network", "create", "--internal", NET).returncode == 0
    try:
        _role(state_dir, demo_internet_state="absent")
        assert docker("network", "inspect", NET).returncode == 0
    finally:
        docker("network", "rm", NET)
