"""Data-loss prevention on a real mitmdump (issue 14 item 3, Proof): the egress proxy
image, the addon and :mod:`._dlp`, against a test-owned HTTPS origin that echoes what
it receives.

Everything runs on an internal Docker network this module creates (``bbdlp-net``,
172.29.238.0/24) with every container's resolver set to the test's dnsmasq; nothing
leaves the machine, and every name is a ``.test`` name. The proxy gets the bottle's
secret the way the Docker backend hands it over (a ``secrets.json`` in
``/run/bot-bottle``) and logs at ``egress.log: 1`` to a file, the audit log. Each
attack follows a positive control that must pass first.
"""

from __future__ import annotations

import base64
import gzip
import ipaddress
import json
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from ansible_collections.botbottle.bottle.plugins.module_utils import _dlp, _egress
from ansible_collections.botbottle.bottle.plugins.module_utils._policy import compile_policy
from tests.egress_lab import DNSMASQ, Stand, certificates, egress_client, proxy_files
from tests.helpers import require_docker

pytestmark = pytest.mark.integration

require_docker()

NET = "bbdlp-net"
SUBNET = "172.29.238.0/24"
GATEWAY = "172.29.238.1"
PROXY_IP, OFF_IP = "172.29.238.10", "172.29.238.11"
ORIGIN_IP, CLIENT_IP, RESOLVER_IP = "172.29.238.20", "172.29.238.30", "172.29.238.53"
PROXY, PROXY_OFF = f"{PROXY_IP}:8080", f"{OFF_IP}:8080"
IMAGE = "bot-bottle/egress-proxy:latest"
NETUTILS = "bot-bottle/netutils:latest"
CONTAINERS = ("resolver", "origin", "proxy", "off", "client")

#: the bottle's secret (an env value it was given); long enough to be used (8+ bytes)
SECRET = "bb-dlp-Secret-7f3a9c2e41d8b605"
CERT_NAMES = ["api.dlp.test", "scrub.dlp.test", "*.zone.dlp.test"]


def manifest_egress(dlp: dict[str, Any] | None = None) -> dict[str, Any]:
    egress: dict[str, Any] = {
        "log": 1,
        "routes": [
            {"host": "api.dlp.test"},
            {"host": "scrub.dlp.test", "dlp": {"outbound_on_match": "redact"}},
            {"host": "*.zone.dlp.test"},
        ],
    }
    if dlp is not None:
        egress["dlp"] = dlp
    return {"egress": egress}


def _stand(prefix: str, net: str, subnet: str) -> Stand:
    return Stand(prefix, net, subnet, RESOLVER_IP, "botbottle.test=egress-dlp")


def _proxy(stand: Stand, work: Path, *, name: str, ip: str, policy_egress: Any) -> Path:
    """One proxy: its own configuration (policy and log file) and runtime secrets."""
    own = work / name
    (own / "log").mkdir(parents=True)
    (own / "log").chmod(0o777)
    (own / "run").mkdir()
    (own / "run").chmod(0o755)
    secrets = own / "run" / _egress.SECRETS_FILE_NAME
    secrets.write_bytes(_egress.dumps_secrets({}, [SECRET]))
    secrets.chmod(0o644)
    policy = compile_policy(policy_egress)
    log_file = f"{_egress.CONTAINER_LOG_DIR}/{_egress.LOG_FILE_NAME}"
    config = _egress.render_config(
        policy,
        RESOLVER_IP,
        refused_networks=[GATEWAY],
        log_file=log_file,
        private_networks=[str(ipaddress.ip_network(ip + "/24", strict=False))],
    )
    (own / "config.json").write_text(_egress.dumps_config(config))
    (own / "config.json").chmod(0o644)
    stand.proxy(
        name, ip, IMAGE, work, own / "config.json",
        "-v", f"{own / 'run'}:{_egress.CONTAINER_SECRETS_DIR}:ro",
        "-v", f"{own / 'log'}:{_egress.CONTAINER_LOG_DIR}",
    )  # fmt: skip
    return own / "log" / _egress.LOG_FILE_NAME


def start_lab(
    work: Path, prefix: str = "bbdlp", net: str = NET, subnet: str = SUBNET
) -> dict[str, Any]:
    """Resolver, origin, a proxy with DLP (defaults) and one with it off, and a client.
    The benchmark runs the same lab (benchmarks/bench.py, section dlp)."""
    stand = _stand(prefix, net, subnet)
    stand.remove(CONTAINERS)
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)
    certificates(work, "bbdlp", CERT_NAMES)
    proxy_files(work, "bbdlp")
    stand.create_network()
    stand.container("resolver", RESOLVER_IP, NETUTILS, *DNSMASQ, "--address=/dlp.test/" + ORIGIN_IP)
    stand.origin("origin", ORIGIN_IP, IMAGE, work)
    off = manifest_egress({"outbound_detectors": False})
    logs = {
        "on": _proxy(stand, work, name="proxy", ip=PROXY_IP, policy_egress=manifest_egress()),
        "off": _proxy(stand, work, name="off", ip=OFF_IP, policy_egress=off),
    }
    stand.client(CLIENT_IP, IMAGE, work)
    stand.wait_listening("client", PROXY, PROXY_OFF, f"{ORIGIN_IP}:443")
    return {"work": work, "logs": logs, "prefix": prefix, "net": net, "subnet": subnet}


def stop_lab(lab: dict[str, Any]) -> None:
    _stand(lab["prefix"], lab["net"], lab["subnet"]).remove(CONTAINERS)


def probe(kind: str, proxy: str = PROXY, prefix: str = "bbdlp", **spec: Any) -> dict[str, Any]:
    return egress_client(f"{prefix}-client", kind, **{"proxy": proxy, "ca": "/ca.pem", **spec})


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    found = start_lab(tmp_path_factory.mktemp("dlp"))
    try:
        yield found
    finally:
        if not os.environ.get("BBDLP_KEEP"):
            stop_lab(found)


def send(
    host: str,
    target: str = "/",
    *,
    method: str = "GET",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    proxy: str = PROXY,
) -> dict[str, Any]:
    """One HTTPS request through the proxy; its answer (``echo``: what the origin got)."""
    request: dict[str, Any] = {"host": host, "target": target, "method": method}
    request["headers"] = headers or []
    if body:
        request["body_b64"] = base64.b64encode(body).decode()
    result = probe("https", proxy=proxy, authority=f"{host}:443", requests=[request])
    assert result["connect"]["status"] == 200, result
    answer: dict[str, Any] = result["responses"][0]
    return answer


def assert_passed(answer: dict[str, Any]) -> dict[str, Any]:
    assert answer.get("status") == 200 and "echo" in answer, answer
    echo: dict[str, Any] = answer["echo"]
    return echo


def assert_blocked(answer: dict[str, Any], rule: str = _dlp.REASON_BLOCKED) -> None:
    assert answer.get("status") == 403, answer
    assert ("x-bot-bottle-refused", rule) in [tuple(h) for h in answer["headers"]], answer
    assert SECRET not in answer["body"]


def audit(lab: dict[str, Any], which: str = "on") -> list[dict[str, Any]]:
    path: Path = lab["logs"][which]
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def _png() -> bytes:
    """A real (small, noisy) PNG: what an agent uploads as a screenshot."""
    width = height = 48
    rows = b"".join(
        b"\0" + bytes(((x * 7 + y * 13) ^ (x * y)) & 0xFF for x in range(width * 3))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack("!I", len(data)) + body + struct.pack("!I", zlib.crc32(body))

    header = struct.pack("!IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


# --------------------------------------------------------------------------- controls


def test_benign_requests_pass(lab: dict[str, Any]) -> None:
    """Positive and false-positive controls: a plain request, an ordinary JSON API call,
    a base64 image in JSON, a gzip body and a WebSocket message all reach the origin."""
    echo = assert_passed(send("api.dlp.test", "/v1/items?page=2&q=hello"))
    assert echo["target"] == "/v1/items?page=2&q=hello" and echo["sni"] == "api.dlp.test"
    ordinary = json.dumps(
        {
            "model": "some-model-2025-01",
            "messages": [{"role": "user", "content": "Summarise the build log, please."}],
            "request_id": "3f2b8c1e-9a7d-4c55-b1e0-2d6f8a9c0b13",
            "commit": "9fceb02d0ae598e95dc970b74767f19372d61af8",
        }
    ).encode()
    json_headers = [("Content-Type", "application/json")]
    echo = assert_passed(
        send("api.dlp.test", "/v1/chat", method="POST", headers=json_headers, body=ordinary)
    )
    assert echo["body"] == ordinary.decode()
    image = json.dumps({"name": "shot.png", "data": base64.b64encode(_png()).decode()}).encode()
    assert len(image) > 4000
    assert_passed(send("api.dlp.test", "/upload", method="POST", headers=json_headers, body=image))
    gz = gzip.compress(b'{"note": "nothing to see"}')
    assert_passed(
        send("api.dlp.test", "/gz", method="POST", headers=[("Content-Encoding", "gzip")], body=gz)
    )
    ws = probe("ws", authority="api.dlp.test:443", message="hello")
    assert ws["message"] == "echo:hello", ws
    ok = probe(
        "https", authority="files.zone.dlp.test:443", requests=[{"host": "files.zone.dlp.test"}]
    )
    assert ok["connect"]["status"] == 200 and ok["responses"][0]["status"] == 200, ok
    assert not [line for line in audit(lab) if line["event"] == "dlp"]


def test_dlp_off_lets_the_secret_through(lab: dict[str, Any]) -> None:
    """The control for every block below: the same request with DLP switched off
    (egress.dlp outbound_detectors: false) reaches the origin with the secret."""
    echo = assert_passed(send("api.dlp.test", f"/?key={SECRET}", proxy=PROXY_OFF))
    assert SECRET in echo["target"]


# --------------------------------------------------------------------------- blocks

B64 = base64.b64encode(f"user:{SECRET}".encode()).decode()
EVERY_BYTE = "".join(f"%{b:02X}" for b in SECRET.encode())
CASES: dict[str, dict[str, Any]] = {
    "query": {"target": f"/search?q={SECRET}"},
    "header": {"headers": [("X-Api-Key", SECRET)]},
    "json body": {
        "method": "POST",
        "headers": [("Content-Type", "application/json")],
        "body": json.dumps({"config": {"token": SECRET}}).encode(),
    },
    "base64": {"headers": [("Authorization", f"Basic {B64}")]},
    "hex": {"method": "POST", "body": f"blob={SECRET.encode().hex()}".encode()},
    "double url encoding": {"target": "/?d=" + quote(EVERY_BYTE, safe="")},
    "gzip body": {
        "method": "POST",
        "headers": [("Content-Encoding", "gzip"), ("Content-Type", "text/plain")],
        "body": gzip.compress(f"leak {SECRET} here".encode()),
    },
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_bottle_secret_is_blocked(lab: dict[str, Any], case: str) -> None:
    spec = dict(CASES[case])
    target = spec.pop("target", "/")
    before = len(audit(lab))
    assert_blocked(send("api.dlp.test", target, **spec))
    hits = [line for line in audit(lab)[before:] if line["event"] == "dlp"]
    assert len(hits) == 1 and hits[0]["action"] == "block", hits
    assert hits[0]["detector"] == "known_secrets", hits
    assert hits[0]["preview"] == f"bottle-secret-1({len(SECRET)} chars)"


def test_a_websocket_message_with_the_secret_is_blocked(lab: dict[str, Any]) -> None:
    ok = probe("ws", authority="api.dlp.test:443", message="fine")
    assert ok["message"] == "echo:fine", ok
    blocked = probe("ws", authority="api.dlp.test:443", message=f'{{"k":"{SECRET}"}}')
    assert blocked.get("upgrade", {}).get("status") == 101, blocked
    # dropped: the origin never echoes it, the agent is told instead
    assert blocked["message"] == "bot-bottle egress proxy: message refused (dlp-blocked)", blocked
    hit = [line for line in audit(lab) if line["event"] == "dlp"][-1]
    assert hit["surface"] == "websocket" and hit["action"] == "block", hit


def test_a_label_under_an_allowed_wildcard_zone_is_blocked(lab: dict[str, Any]) -> None:
    name = f"{SECRET.encode().hex()}.zone.dlp.test"
    result = probe("https", authority=f"{name}:443", requests=[{"host": name}])
    assert result["connect"]["status"] == 403, result
    hit = [line for line in audit(lab) if line["event"] == "dlp"][-1]
    assert hit["surface"] == "host" and hit["action"] == "block", hit


def test_redact_forwards_the_request_with_the_secret_replaced(lab: dict[str, Any]) -> None:
    echo = assert_passed(
        send(
            "scrub.dlp.test",
            f"/notes?k={SECRET}",
            method="POST",
            headers=[("X-Note", f"token {SECRET}"), ("Content-Type", "text/plain")],
            body=f"the value is {SECRET}.".encode(),
        )
    )
    seen = json.dumps(echo)
    assert SECRET not in seen
    assert echo["target"] == "/notes?k=[REDACTED]"
    assert ["X-Note", "token [REDACTED]"] in echo["headers"]
    assert echo["body"] == "the value is [REDACTED]."
    hit = [line for line in audit(lab) if line["event"] == "dlp"][-1]
    assert hit["action"] == "redact" and hit["route"] == "scrub.dlp.test", hit


def test_the_audit_log_shows_each_block_with_the_value_redacted(lab: dict[str, Any]) -> None:
    """Runs last: every block above is an event dlp line at egress.log 1, and neither the
    secret nor any encoding the tests sent appears in the file."""
    lines = audit(lab)
    hits = [line for line in lines if line["event"] == "dlp"]
    surfaces = {(h["surface"], h["action"]) for h in hits}
    for expected in [
        ("url", "block"),
        ("header:x-api-key", "block"),
        ("header:authorization", "block"),
        ("body", "block"),
        ("websocket", "block"),
        ("host", "block"),
    ]:
        assert expected in surfaces, surfaces
    assert all(h["source"] == "egress-proxy" for h in hits)
    text = lab["logs"]["on"].read_text()
    for form in (SECRET, B64, SECRET.encode().hex(), EVERY_BYTE, quote(EVERY_BYTE, safe="")):
        assert form not in text
    assert "bottle-secret-1(" in text
