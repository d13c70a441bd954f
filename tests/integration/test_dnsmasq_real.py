"""The compiler's dnsmasq lines, run in a real dnsmasq against a fake upstream.

Everything listens on loopback; dnsmasq gets ``no-resolv`` from the compiler and
never sees the machine's resolver. Each blocked-name probe is preceded by a
positive control (the allowlisted name resolves through the same dnsmasq), and
the fake upstream's log proves what crossed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dnslib import RCODE, DNSLabel, DNSRecord

from ansible_collections.botbottle.bottle.plugins.module_utils._policy import (
    allows_name,
    build_policy,
    render_dnsmasq,
)
from ansible_collections.botbottle.bottle.tests.unit.plugins.module_utils.dns_semantics import (
    dnsmasq_outcome,
)
from botbottle.cli import main
from tests.fake_upstream import serve

pytestmark = pytest.mark.integration

DNSMASQ = shutil.which("dnsmasq") or (
    "/usr/sbin/dnsmasq" if Path("/usr/sbin/dnsmasq").exists() else None
)
if DNSMASQ is None:
    if os.environ.get("CI"):
        raise RuntimeError("dnsmasq is not installed; .ci/run must install dnsmasq-base")
    pytest.skip("dnsmasq is not installed (apt-get install dnsmasq-base)", allow_module_level=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        port: int = udp.getsockname()[1]
    return port


def query(port: int, name: str, qtype: str = "A", tcp: bool = False, timeout: float = 3) -> str:
    """Ask the resolver on 127.0.0.1:port; return the RCODE name ('NOERROR', 'NXDOMAIN')."""
    request = DNSRecord.question(name, qtype)
    reply = DNSRecord.parse(request.send("127.0.0.1", port, tcp=tcp, timeout=timeout))
    return str(RCODE.get(reply.header.rcode))


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    log = tmp_path / "upstream.log"
    port, servers = serve("127.0.0.1", 0, log)
    yield port, log
    for server in servers:
        server.shutdown()
        server.server_close()  # type: ignore[attr-defined]


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Iterator[Callable[[list[str]], int]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(lines: list[str]) -> int:
        port = _free_port()
        conf = tmp_path / (f"dnsmasq-{port}.conf")
        conf.write_text(
            "\n".join(
                [
                    *lines,
                    "listen-address=127.0.0.1",
                    "bind-interfaces",
                    f"port={port}",
                    "cache-size=0",
                    "log-queries",
                    "log-facility=-",
                    "user=root",
                ]
            )
            + "\n"
        )
        check = subprocess.run(
            [DNSMASQ, "--test", "-C", str(conf)], capture_output=True, text=True, check=False
        )
        assert check.returncode == 0, check.stderr
        proc = subprocess.Popen(
            [DNSMASQ, "-k", "-C", str(conf), "--pid-file="],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                query(port, "ready.invalid", timeout=0.2)
                return port
            except (OSError, TimeoutError):
                time.sleep(0.1)
        raise AssertionError(f"dnsmasq did not start on port {port}")

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


def _upstream_names(log: Path) -> set[str]:
    return {line.split()[2].lower() for line in log.read_text().splitlines() if line.strip()}


def test_plan_lines_make_subdomains_of_an_exact_name_nxdomain(
    tmp_path: Path,
    upstream: tuple[int, Path],
    dnsmasq: Callable[[list[str]], int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The issue's acceptance case, end to end through `bottle plan --format json`."""
    up_port, log = upstream
    manifest = tmp_path / "probe.yml"
    manifest.write_text("egress:\n  routes:\n    - host: api.example.com\n")
    code = main(
        [
            "plan",
            str(manifest),
            "--backend",
            "docker",
            "--format",
            "json",
            "--upstream-dns",
            f"127.0.0.1#{up_port}",
        ]
    )
    assert code == 0
    plan = json.loads(capsys.readouterr().out)
    lines = plan["bottles"][0]["render"]["docker"]["dnsmasq"]
    port = dnsmasq(lines)

    # positive control: the exact name resolves (UDP and TCP) and reaches the upstream
    assert query(port, "api.example.com") == "NOERROR"
    assert query(port, "api.example.com", tcp=True) == "NOERROR"
    assert "api.example.com" in _upstream_names(log)

    secret = "mfrggzdfmztwq2lknnwg23tpobyxe43u"  # base32 of a fake secret
    for name in [
        "x.api.example.com",
        secret + ".api.example.com",
        "a.b.api.example.com",
        "example.com",
        "xapi.example.com",
        "attacker.example.net",
    ]:
        for qtype in ["A", "AAAA", "TXT", "NULL", "MX", "CNAME", "ANY"]:
            assert query(port, name, qtype) == "NXDOMAIN", (name, qtype)
        assert query(port, name, "TXT", tcp=True) == "NXDOMAIN", name
    assert _upstream_names(log) == {"api.example.com"}


CASES = [
    build_policy(["api.example.com", "x.api.example.com"]),
    build_policy(["api.example.com"], ["example.com"]),
    build_policy(["example.org"], ["example.org"]),
    build_policy(["a.cdn.example"], ["cdn.example", "deep.cdn.example"]),
    build_policy([], ["example.net"]),
]
NAMES = [
    "api.example.com",
    "x.api.example.com",
    "y.x.api.example.com",
    "example.com",
    "a.example.com",
    "xapi.example.com",
    "example.org",
    "a.example.org",
    "b.a.example.org",
    "cdn.example",
    "a.cdn.example",
    "q.a.cdn.example",
    "deep.cdn.example",
    "z.deep.cdn.example",
    "example.net",
    "w.example.net",
    "EXAMPLE.NET",
    "W.Example.Net",
]


@pytest.mark.parametrize(
    "policy", CASES, ids=lambda p: "+".join([*p.exact_hosts, *("*." + z for z in p.wildcard_zones)])
)
def test_real_dnsmasq_agrees_with_the_policy_and_the_model(
    policy,
    upstream: tuple[int, Path],
    dnsmasq: Callable[[list[str]], int],  # type: ignore[no-untyped-def]
) -> None:
    up_port, log = upstream
    lines = render_dnsmasq(policy, [f"127.0.0.1#{up_port}"])
    port = dnsmasq(lines)
    allowed = {n.lower() for n in NAMES if allows_name(policy, n)}
    assert allowed, "each case needs a positive control"
    for name in NAMES:
        expected = "NOERROR" if allows_name(policy, name) else "NXDOMAIN"
        assert query(port, name) == expected, name
        model = dnsmasq_outcome(lines, name)
        assert model == ("forward" if expected == "NOERROR" else "nxdomain"), name
    assert _upstream_names(log) == allowed


EDGE_LABELS = [b"_dmarc", b"a b", b"\x00", b"\xff\xfe", b"#", b"caf\xc3\xa9", b"UP_per"]


def _query_labels(port: int, labels: list[bytes], tcp: bool = False) -> str:
    request = DNSRecord.question("placeholder.invalid", "A")
    request.q.qname = DNSLabel(labels)
    reply = request.send("127.0.0.1", port, tcp=tcp, timeout=3)
    assert reply[:2] == request.pack()[:2], "a reply to another query"
    return str(RCODE.get(reply[3] & 0x0F))  # the header only: dnslib cannot parse every label


def test_real_dnsmasq_and_the_compiler_agree_on_odd_labels(
    upstream: tuple[int, Path],
    dnsmasq: Callable[[list[str]], int],
) -> None:
    """Labels a host name cannot hold, below a wildcard zone and below an exact name.

    The resolver forwards any label below a wildcard zone; allows_name says the same
    (a name there is data in a tunnel the plan already warns about). Below an exact
    name both refuse.
    """
    up_port, log = upstream
    policy = build_policy(["api.example.com"], ["zone.example"])
    port = dnsmasq(render_dnsmasq(policy, [f"127.0.0.1#{up_port}"]))
    assert query(port, "ok.zone.example") == "NOERROR"  # positive control
    assert query(port, "api.example.com") == "NOERROR"  # positive control
    for label in EDGE_LABELS:
        for parent in ([b"zone", b"example"], [b"api", b"example", b"com"], [b"other", b"example"]):
            labels = [label, *parent]
            text = b".".join(labels).decode("latin-1")
            expected = "NOERROR" if allows_name(policy, text) else "NXDOMAIN"
            assert (parent[0] == b"zone") == (expected == "NOERROR"), text
            for tcp in (False, True):
                assert _query_labels(port, labels, tcp) == expected, (text, tcp)
    forwarded = [line for line in log.read_text().splitlines() if "zone.example" in line]
    assert len(forwarded) >= len(EDGE_LABELS) * 2
    assert not any(
        "api.example.com" in line and line.split()[2] != "api.example.com"
        for line in log.read_text().splitlines()
    )
