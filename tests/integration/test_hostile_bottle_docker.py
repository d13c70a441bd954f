"""Hostile manifests against a real bottle on the Docker example backend.

- A ``cidr`` route that covers the bottle's gateway and the host's other addresses
  (``172.16.0.0/12`` and a ``wide`` ``0.0.0.0/0``) still leaves the host
  unreachable: the rules reject the gateway and the host's addresses before any
  route is accepted. The positive control is the same connection from an
  unprotected container, which must succeed first.
- A manifest asking for NET_ADMIN, in any spelling, never produces an agent: the
  run stops at validation (exit 2) and no container exists; a capability the
  allowlist admits reaches the agent normalised (``cap_chown`` -> ``CHOWN``).

Traffic goes only to a listener this test runs on the host's address on its own
Docker network, and to containers it created.
"""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    bottle,
    docker_host,
    egress_network,
    require_docker,
    with_net_admin,
    write_inventory,
)
from tests.helpers import docker as _docker

pytestmark = pytest.mark.integration

NETWORK = "bbhostile-egress"
SUBNET = "172.29.248.0/24"
GATEWAY = "172.29.248.1"
NAME = "hostiletest"
IMAGE = "bot-bottle/netutils:latest"

require_docker()


class _Accept(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(b"host-service\n")


@pytest.fixture(scope="module")
def listener() -> Iterator[int]:
    """A TCP service on every host address (the gateways too): what the agent must not reach."""
    server = socketserver.ThreadingTCPServer(("0.0.0.0", 0), _Accept)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _inventory(base: Path, port: int, manifest: str) -> Path:
    host = docker_host([{"manifest": manifest}], NETWORK, f"{GATEWAY}#{port}", bottle_verify=False)
    return write_inventory(base / f"inventory-{Path(manifest).stem}.yml", host)


@pytest.fixture(scope="module")
def wide_bottle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("hostile")
    (base / f"{NAME}.yml").write_text(
        "runtime:\n  command: [sleep, infinity]\n  capabilities: [cap_chown]\n"
        "egress:\n  routes:\n    - host: ok.bbtest.example\n"
        "    - cidr: 172.16.0.0/12\n    - cidr: 0.0.0.0/0\n      wide: true\n"
    )
    with egress_network(NETWORK, SUBNET, GATEWAY, base / "upstream.log") as port:
        inventory = _inventory(base, port, f"{NAME}.yml")
        try:
            up = bottle("up", "-i", str(inventory))
            assert up.returncode == 0, up.stdout + up.stderr
            yield inventory
        finally:
            bottle("down", "-i", str(inventory))


def _bottle_gateway() -> str:
    inspect = _docker("network", "inspect", f"bottle-{NAME}")
    assert inspect.returncode == 0, inspect.stderr
    [network] = json.loads(inspect.stdout)
    gateway: str = network["IPAM"]["Config"][0]["Gateway"]
    return gateway


def _connect_from(where: list[str], address: str, port: int) -> bool:
    """Whether a TCP connection from ``where`` (docker args) reaches address:port."""
    script = f"exec 3<>/dev/tcp/{address}/{port} && head -c 12 <&3"
    proc = _docker(*where, "timeout", "5", "bash", "-c", script)
    return proc.returncode == 0 and proc.stdout.startswith("host-service")


def test_a_wide_route_does_not_open_the_host(wide_bottle: Path, listener: int) -> None:
    gateway = _bottle_gateway()
    # positive control: the host's service answers an unprotected container, on both
    # the bottle's gateway and the host's address on the egress network
    outside = ["run", "--rm", "--network", NETWORK, "--dns", GATEWAY, IMAGE]
    assert _connect_from(outside, GATEWAY, listener), "control: host service unreachable"
    free = ["run", "--rm", "--network", f"bottle-{NAME}", "--dns", GATEWAY, IMAGE]
    assert _connect_from(free, gateway, listener), "control: bottle gateway unreachable"
    # the agent, whose routes cover both addresses, reaches neither
    agent = ["exec", f"bottle-{NAME}"]
    assert not _connect_from(agent, gateway, listener)
    assert not _connect_from(agent, GATEWAY, listener)
    # the loaded rules say why: the host's addresses are rejected before the routes
    saved = with_net_admin(f"bottle-{NAME}-net", "iptables-save").stdout.splitlines()
    accept = saved.index("-A OUTPUT -d 172.16.0.0/12 -j ACCEPT")
    assert (
        saved.index(f"-A OUTPUT -d {gateway}/32 -j REJECT --reject-with icmp-port-unreachable")
        < accept
    )
    assert (
        saved.index(f"-A OUTPUT -d {GATEWAY}/32 -j REJECT --reject-with icmp-port-unreachable")
        < accept
    )
    assert (
        saved.index("-A OUTPUT -d 169.254.0.0/16 -j REJECT --reject-with icmp-port-unreachable")
        < accept
    )


def test_an_allowed_capability_reaches_the_agent_normalised(wide_bottle: Path) -> None:
    inspect = _docker("inspect", f"bottle-{NAME}", "--format", "{{json .HostConfig.CapAdd}}")
    assert json.loads(inspect.stdout) in (["CHOWN"], ["CAP_CHOWN"])


@pytest.mark.parametrize("spelling", ["NET_ADMIN", "CAP_NET_ADMIN", "cap_net_admin"])
def test_net_admin_in_any_spelling_never_makes_an_agent(
    tmp_path: Path, listener: int, spelling: str
) -> None:
    name = "capattempt"
    (tmp_path / f"{name}.yml").write_text(
        f"runtime:\n  command: [sleep, infinity]\n  capabilities: [{spelling}]\n"
        "egress:\n  routes:\n    - host: ok.bbtest.example\n"
    )
    inventory = _inventory(tmp_path, listener, f"{name}.yml")
    up = bottle("up", "-i", str(inventory))
    assert up.returncode == 2, up.stdout + up.stderr
    assert (
        f"{name}.yml" in up.stdout + up.stderr and "NET_ADMIN is refused" in up.stdout + up.stderr
    )
    assert "Traceback" not in up.stdout + up.stderr
    assert _docker("inspect", f"bottle-{name}").returncode != 0  # nothing was created
