"""Running the project's Ansible tools from tests, the way a user would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.fake_upstream import serve

ROOT = Path(__file__).resolve().parents[1]


def ansible(tool: str, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """Run ``ansible-playbook``/``ansible-doc``/… of this virtualenv from the project root,
    with the project's ansible.cfg and no colours."""
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
        **extra_env,
    )
    return subprocess.run(
        [str(Path(sys.executable).parent / tool), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )


#: ``ansible``/``ansible-playbook`` options that run on this machine, with its system Python.
ON_LOCALHOST = (
    "-i", "localhost,", "-c", "local", "-e", "ansible_python_interpreter=/usr/bin/python3",
)  # fmt: skip


def run_module(
    args: dict[str, Any], *, check: bool = False, module: str = "docker_bottle"
) -> dict[str, Any]:
    """One call of ``botbottle.bottle.<module>`` through ``ansible`` (ad hoc on this
    machine, JSON callback; ``check``: with ``--check --diff``); returns its result."""
    mode = ["--check", "--diff"] if check else []
    proc = ansible(
        "ansible", "localhost", *ON_LOCALHOST, "-m", f"botbottle.bottle.{module}",
        "-a", json.dumps(args), *mode,
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="json",
    )  # fmt: skip
    data = json.loads(proc.stdout)
    result: dict[str, Any] = data["plays"][0]["tasks"][0]["hosts"]["localhost"]
    return result


def bottle(*args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """Run this virtualenv's ``bottle`` command as a user would: no stdin, no BOTTLE_DEBUG,
    ``extra_env`` added to the environment (the host variables bottles copy into their env)."""
    env = {k: v for k, v in os.environ.items() if k != "BOTTLE_DEBUG"}
    env.update(extra_env)
    return subprocess.run(
        [str(Path(sys.executable).parent / "bottle"), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )


def docker(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI; never raises on a non-zero exit."""
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False)


def require_docker() -> None:
    """Skip the calling test module when no Docker engine answers; in CI, fail instead
    (.ci/run starts dockerd through scripts/dockerd, so a missing engine is a CI bug)."""
    if shutil.which("docker") is not None and docker("info").returncode == 0:
        return
    if os.environ.get("CI"):
        raise RuntimeError("Docker does not answer; .ci/run must start dockerd (scripts/dockerd)")
    pytest.skip("Docker does not answer here (run scripts/dockerd)", allow_module_level=True)


NETUTILS_IMAGE = "bot-bottle/netutils:latest"
PROXY_IMAGE = "bot-bottle/egress-proxy:latest"
_IMAGE_PLAYBOOKS = {
    NETUTILS_IMAGE: "tests/integration/playbooks/netutils_image.yml",
    PROXY_IMAGE: "tests/integration/playbooks/egress_proxy_image.yml",
}


def require_images(*images: str) -> None:
    """Build the local images a test module uses when they are missing (the roles'
    own builds, as a bottle's bring-up would do), so a module does not depend on an
    earlier one having brought a bottle up."""
    for image in images or tuple(_IMAGE_PLAYBOOKS):
        if docker("image", "inspect", image).returncode == 0:
            continue
        done = ansible("ansible-playbook", _IMAGE_PLAYBOOKS[image])
        assert done.returncode == 0, f"building {image} failed:\n{done.stdout[-3000:]}"


def _remove_network(network: str) -> None:
    """Remove a test-owned network and the containers an interrupted run left on it
    (its bottles' resolvers and proxies are attached to it)."""
    attached = docker(
        "network", "inspect", "-f", "{{range .Containers}}{{.Name}} {{end}}", network
    ).stdout.split()
    if attached:
        docker("rm", "-f", *attached)
    docker("network", "rm", network)


@contextmanager
def egress_network(network: str, subnet: str, gateway: str, log: Path) -> Iterator[int]:
    """A test-owned internal Docker network whose gateway (this machine) runs a fake
    upstream resolver (tests/fake_upstream.py): the bottles' only "internet". Yields the
    resolver's port; removes both afterwards. Nothing here reaches an outside address."""
    _remove_network(network)  # left over by an interrupted run
    created = docker("network", "create", "--internal", "--subnet", subnet, network)
    assert created.returncode == 0, created.stderr
    port, servers = serve(gateway, 0, log)
    try:
        yield port
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()  # type: ignore[attr-defined]
        docker("network", "rm", network)


def docker_host(
    bottles: list[dict[str, Any]], network: str, upstream: str, **extra: Any
) -> dict[str, Any]:
    """Host variables of this machine as a Docker bottle host (local connection), with the
    test's egress network and fake upstream (``ADDRESS#PORT``) as its only resolver."""
    return {
        "ansible_connection": "local",
        "ansible_python_interpreter": "/usr/bin/python3",
        "bottle_backend": "docker",
        "bottles": bottles,
        "docker_bottle_upstream_dns": [upstream],
        "docker_bottle_egress_network": network,
        "docker_bottle_agent_image": "bot-bottle/netutils:latest",
        **extra,
    }


def write_inventory(path: Path, host: dict[str, Any]) -> Path:
    """An inventory of one host, ``localhost``, with ``host``'s variables."""
    path.write_text(json.dumps({"all": {"hosts": {"localhost": host}}}))
    return path


def with_net_admin(container: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (a program of the netutils image) in ``container``'s network namespace
    from a throw-away container holding NET_ADMIN only: how a test reads a bottle's rules,
    or plants the weakness an attacker with NET_ADMIN would."""
    return docker(
        "run", "--rm", "--network", f"container:{container}", "--cap-drop", "ALL",
        "--cap-add", "NET_ADMIN", "--entrypoint", argv[0], "bot-bottle/netutils:latest",
        *argv[1:],
    )  # fmt: skip
