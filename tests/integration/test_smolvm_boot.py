"""Boot-level tests of the smolmachines backend: they need a host whose /dev/kvm boots guests.

They are gated by the real boot probe (the same code as the smolvm_host_facts
module and the smolmachines_host role): on a host that cannot boot microVMs
every test here is skipped with the probe's reason. Inside a booted guest they
prove what the allow list enforces: an allowlisted exact name resolves (the
positive control), while ``<encoded>.<allowed name>``, an unlisted name and a
non-allowlisted IP literal fail; and that a bottle with a wide route reaches a
test listener on the host's LAN address but not through the gateway (the host's
loopback), and that a cidr-only bottle's DNS queries are refused by smolvm.

BOTTLE_BOOT_ALLOWED_NAME names a host the test machine's upstream resolver can
resolve (default: pypi.org); set it on hosts with a different resolver.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import smol

from ansible_collections.botbottle.bottle.plugins.module_utils._boot_probe import probe
from ansible_collections.botbottle.bottle.plugins.module_utils._policy import (
    EgressPolicy,
    build_policy,
    compile_policy,
    render_smolvm,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._smolmachine import (
    create_args,
    desired_spec,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._smolvm import SmolvmClient

pytestmark = pytest.mark.integration

CLI = os.path.join(os.path.dirname(smol.__file__), "smol-vmm")
ALLOWED = os.environ.get("BOTTLE_BOOT_ALLOWED_NAME", "pypi.org")
SECRET_LABEL = "mfrggzdfmztwq2lknnwg23tpobyxe43u"
NAME = "bottle-boot-test"


@pytest.fixture(scope="module")
def data_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("smolvm-data")


@pytest.fixture(scope="module")
def bootable(data_home: Path) -> None:
    result = probe(CLI, sys.executable, data_home=str(data_home), timeout=60)
    if not result["can_boot"]:
        pytest.skip(f"this host cannot boot microVMs (boot probe): {result['reason']}")


@contextmanager
def _running(data_home: Path, name: str, policy: EgressPolicy) -> Iterator[SmolvmClient]:
    """A bottle ``name`` with ``policy`` and nothing else (1 CPU, 512 MiB), booted;
    deleted afterwards."""
    client = SmolvmClient(CLI, str(data_home))
    spec = desired_spec(
        image=None,
        command=None,
        cpus=1,
        memory_mib=512,
        storage_gib=None,
        workdir=None,
        env=None,
        mounts=None,
        ports=None,
        labels=None,
        smolvm_allow=render_smolvm(policy),
        policy_hash=policy.digest,
    )
    client.create(create_args(name, spec))
    try:
        client.start(name)
        yield client
    finally:
        client.delete(name)


@pytest.fixture(scope="module")
def machine(bootable: None, data_home: Path) -> Iterator[SmolvmClient]:
    with _running(data_home, NAME, build_policy([ALLOWED])) as client:
        yield client


def guest(
    client: SmolvmClient, *command: str, name: str = NAME
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in bottle ``name`` (the allow-list bottle unless said)."""
    return subprocess.run(
        [client.binary, "machine", "exec", "--name", name, "--", *command],
        env=client.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_allowlisted_exact_name_resolves(machine: SmolvmClient) -> None:
    proc = guest(machine, "nslookup", ALLOWED)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Address" in proc.stdout


def test_encoded_subdomain_of_the_allowed_name_fails(machine: SmolvmClient) -> None:
    assert guest(machine, "nslookup", ALLOWED).returncode == 0  # positive control first
    proc = guest(machine, "nslookup", f"{SECRET_LABEL}.{ALLOWED}")
    assert proc.returncode != 0
    assert "NXDOMAIN" in proc.stdout + proc.stderr


def test_unlisted_name_fails(machine: SmolvmClient) -> None:
    assert guest(machine, "nslookup", ALLOWED).returncode == 0
    proc = guest(machine, "nslookup", "unlisted-name.example.net")
    assert proc.returncode != 0


def test_non_allowlisted_ip_literal_is_unreachable(machine: SmolvmClient) -> None:
    assert guest(machine, "nslookup", ALLOWED).returncode == 0
    proc = guest(machine, "nc", "-z", "-w", "3", "192.0.2.1", "80")
    assert proc.returncode != 0


# --------------------------------------------------------------------------- the host

WIDE_NAME = "bottle-boot-wide"
LEAK_NAME = "leak-check.bot-bottle.test"  # reserved (RFC 6761): never a real name


@pytest.fixture(scope="module")
def wide_machine(bootable: None, data_home: Path) -> Iterator[SmolvmClient]:
    """A cidr-only bottle with the widest route there is: only deny rules keep it off
    the host's loopback, and only the compiler's no-names pattern filters its DNS."""
    policy = compile_policy({"egress": {"routes": [{"cidr": "0.0.0.0/0", "wide": True}]}})
    with _running(data_home, WIDE_NAME, policy) as client:
        yield client


@pytest.fixture
def listener() -> Iterator[tuple[int, list[str]]]:
    """A TCP listener this test creates on every host address; the peers it accepted."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # test-created, on every address: a flow relayed to the host's loopback shows up here
    # with a 127.x peer; the guest may reach it only through the host's LAN address
    server.bind(("0.0.0.0", 0))
    server.listen(8)
    server.settimeout(0.2)
    peers: list[str] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, peer = server.accept()
            except OSError:
                continue
            peers.append(peer[0])
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], peers
    finally:
        stop.set()
        thread.join(timeout=2)
        server.close()


def _host_address() -> str | None:
    """This host's own outbound IPv4 address (a UDP connect sends nothing)."""
    probe_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe_socket.connect(("192.0.2.1", 9))
        address: str = probe_socket.getsockname()[0]
    except OSError:
        return None
    finally:
        probe_socket.close()
    return None if address.startswith("127.") else address


def test_a_wide_route_does_not_reach_the_hosts_loopback(
    wide_machine: SmolvmClient, listener: tuple[int, list[str]]
) -> None:
    port, peers = listener
    host = _host_address()
    if host is None:
        pytest.skip("no non-loopback host address for the positive control")
    reached = guest(wide_machine, "nc", "-z", "-w", "3", host, str(port), name=WIDE_NAME)
    assert reached.returncode == 0, reached.stdout + reached.stderr  # positive control
    before = list(peers)
    for gateway in ("100.96.0.1", "host.smolvm.internal"):
        proc = guest(wide_machine, "nc", "-z", "-w", "3", gateway, str(port), name=WIDE_NAME)
        assert proc.returncode != 0, f"{gateway}:{port} reached the host's loopback"
    assert [p for p in peers if p.startswith("127.")] == [p for p in before if p.startswith("127.")]


def test_a_cidr_only_bottle_filters_its_dns(wide_machine: SmolvmClient) -> None:
    proc = guest(wide_machine, "nslookup", LEAK_NAME, name=WIDE_NAME)
    assert proc.returncode != 0
    events = json.dumps(wide_machine.egress_events(WIDE_NAME))
    assert LEAK_NAME in events, "the query was not refused by smolvm's DNS filter"
