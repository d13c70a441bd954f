"""`bottle up/status/down` end to end: the real CLI, ansible-runner, site.yml, the
Docker example backend on this machine's dockerd.

The test creates its own egress network and answers allowlisted names with a fake
upstream bound to that network's gateway address (on this machine); no query
leaves the machine.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import bottle, docker_host, egress_network, require_docker, write_inventory
from tests.helpers import docker as _docker

pytestmark = pytest.mark.integration

NETWORK = "bbcli-egress"
SUBNET = "172.29.251.0/24"
GATEWAY = "172.29.251.1"


require_docker()


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("fleet")
    (base / "clitest.yml").write_text(
        "env:\n  TOKEN: ${BB_CLI_TOKEN}\n"
        "runtime:\n  command: [sleep, infinity]\n"
        "egress:\n  routes:\n    - host: cli.bbtest.example\n"
    )
    with egress_network(NETWORK, SUBNET, GATEWAY, base / "upstream.log") as port:
        host = docker_host(
            [{"manifest": "clitest.yml"}],
            NETWORK,
            f"{GATEWAY}#{port}",
            # `up` ends with bottle verify: its literal resolver is this test's, on this machine
            bottle_verify_resolvers=[f"{GATEWAY}#{port}"],
            bottle_verify_audit_dir=str(base / "audit"),
        )
        path = write_inventory(base / "inventory.yml", host)
        try:
            yield path
        finally:
            run("down", "-i", str(path))


SECRET = "bb-cli-secret-value-8c1f"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return bottle(*args, BB_CLI_TOKEN=SECRET)


def dig(*args: str) -> str:
    return _docker("exec", "bottle-clitest", "dig", "+time=2", "+tries=1", *args).stdout


def status(inventory: Path, code: int = 0) -> dict[str, Any]:
    proc = run("status", "-i", str(inventory), "--format", "json")
    assert proc.returncode == code, proc.stdout + proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def test_up_status_down(inventory: Path) -> None:
    up = run("up", "-i", str(inventory))
    assert up.returncode == 0, up.stdout + up.stderr
    assert "changed" in up.stdout
    assert "artifacts: " in up.stdout
    # the secret reached the agent, and nowhere else: not the output, not the artifacts
    agent_env = _docker("exec", "bottle-clitest", "printenv", "TOKEN").stdout.strip()
    assert agent_env == SECRET
    assert SECRET not in up.stdout + up.stderr
    artifacts = Path(up.stdout.split("artifacts: ", 1)[1].splitlines()[0])
    assert artifacts.is_dir()
    for path in artifacts.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(errors="replace"), path
    # positive control first, then the refusal
    assert dig("+short", "cli.bbtest.example").strip() == "192.0.2.1"
    assert "status: NXDOMAIN" in dig("x.cli.bbtest.example")

    again = run("up", "-i", str(inventory))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "ok      localhost: 0 change(s)" in again.stdout

    planned = run("up", "-i", str(inventory), "--check")
    assert planned.returncode == 0 and "0 change(s)" in planned.stdout

    [row] = status(inventory)["hosts"]["localhost"]
    assert row["bottle"] == "clitest" and row["backend"] == "docker"
    assert row["state"] == "running" and row["policy"].startswith("sha256:")

    down = run("down", "-i", str(inventory))
    assert down.returncode == 0, down.stdout + down.stderr
    assert _docker("container", "inspect", "bottle-clitest").returncode != 0
    # declared started, found absent: drift, and status says so with exit 1
    [row] = status(inventory, code=1)["hosts"]["localhost"]
    assert row["state"] == "absent" and not row["state_ok"]
    assert row["reason"] == "declared started, found absent"
    text = run("status", "-i", str(inventory))
    assert text.returncode == 1 and "DRIFT: declared started, found absent" in text.stdout


def test_a_failing_host_exits_1_and_is_named(inventory: Path, tmp_path: Path) -> None:
    """The play fails on the host (its egress network does not exist): exit 1, the host
    and the failed step named, the agent never started."""
    data = json.loads(inventory.read_text())
    data["all"]["hosts"]["localhost"]["docker_bottle_egress_network"] = "bbcli-no-such-network"
    data["all"]["hosts"]["localhost"]["bottles"] = [
        {"manifest": str(inventory.parent / "clitest.yml")}
    ]
    broken = tmp_path / "inventory.yml"
    broken.write_text(json.dumps(data))
    proc = run("up", "-i", str(broken))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED  localhost: Bring each bottle to its state:" in proc.stderr
    assert "create resolver failed" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _docker("container", "inspect", "bottle-clitest").returncode != 0


def test_an_unknown_backend_is_bad_input(inventory: Path, tmp_path: Path) -> None:
    data = json.loads(inventory.read_text())
    data["all"]["hosts"]["localhost"]["bottle_backend"] = "kubernetes"
    data["all"]["hosts"]["localhost"]["bottles"] = [
        {"manifest": str(inventory.parent / "clitest.yml")}
    ]
    broken = tmp_path / "inventory.yml"
    broken.write_text(json.dumps(data))
    proc = run("up", "-i", str(broken))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "kubernetes" in proc.stderr and "nothing was touched" in proc.stderr
    assert "Traceback" not in proc.stderr
