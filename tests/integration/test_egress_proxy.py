"""The egress proxy on a real mitmdump: the image the role builds, the addon, the
bottle's CA, against test-owned HTTPS origins, a test resolver and a client.

Everything runs on an internal Docker network this module creates
(``bbproxy-net``, 172.29.244.0/24) with every container's resolver set to the test's
dnsmasq (``bot-bottle/netutils``); nothing leaves the machine. The origins answer
every name the tests use (their certificate, from a test CA the proxy trusts, covers
them all) and the resolver maps every name to an address where something listens, so
each refusal is the proxy's doing: every attack follows a positive control that must
pass first, and names and addresses are shown reachable without the proxy.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.botbottle.bottle.plugins.module_utils import _egress
from ansible_collections.botbottle.bottle.plugins.module_utils._policy import build_policy
from tests.egress_lab import (
    DNSMASQ,
    TESTS_DIR,
    UPSTREAM_CA,
    Stand,
    certificates,
    egress_client,
    proxy_files,
    proxy_image,
    proxy_options,
    run,
)
from tests.helpers import ROOT, ansible, require_docker, require_images
from tests.helpers import docker as _docker

pytestmark = pytest.mark.integration

require_docker()

NET = "bbproxy-net"
SUBNET = "172.29.244.0/24"
GATEWAY = "172.29.244.1"
PROXY_IP, FAULTY_IP = "172.29.244.10", "172.29.244.11"
ORIGIN_A, ORIGIN_B = "172.29.244.20", "172.29.244.21"
CLIENT_IP, RESOLVER_IP, LIAR_IP = "172.29.244.30", "172.29.244.53", "172.29.244.54"
PROXY, FAULTY = f"{PROXY_IP}:8080", f"{FAULTY_IP}:8080"
NETUTILS = "bot-bottle/netutils:latest"
CONTAINERS = ("resolver", "liar", "origin-a", "origin-b", "proxy", "faulty", "client")

#: name -> address in the test resolver (dnsmasq also answers names below each).
DNS = {
    "api.allowed.test": ORIGIN_A,
    "web.allowed.test": ORIGIN_A,
    "wild.test": ORIGIN_A,
    "other.test": ORIGIN_A,
    "priv.wild.test": ORIGIN_B,
    "loop.wild.test": "127.0.0.1",
    "meta.wild.test": "169.254.169.254",
    "gw.wild.test": GATEWAY,
}
CERT_NAMES = [
    "api.allowed.test",
    "*.api.allowed.test",
    "web.allowed.test",
    "wild.test",
    "*.wild.test",
    "*.b.wild.test",
    "other.test",
]
POLICY = build_policy(["api.allowed.test"], ["wild.test"], [f"{ORIGIN_A}/32"], log=2)


STAND = Stand("bbproxy", NET, SUBNET, RESOLVER_IP, "botbottle.test=egress-proxy")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Resolver, two origins, the proxy, a faulty proxy and a client on one network."""
    started = time.monotonic()
    image = proxy_image()
    build_seconds = time.monotonic() - started
    require_images(NETUTILS)
    STAND.remove(CONTAINERS)
    work = tmp_path_factory.mktemp("egress")
    work.chmod(0o755)
    certificates(work, "bbproxy", CERT_NAMES, [ORIGIN_A, ORIGIN_B])
    ca = proxy_files(work, "bbproxy")
    config = _egress.render_config(POLICY, RESOLVER_IP, refused_networks=[GATEWAY])
    (work / "config.json").write_text(_egress.dumps_config(config))
    (work / "config.json").chmod(0o644)
    STAND.create_network()
    try:
        STAND.container(
            "resolver", RESOLVER_IP, NETUTILS, *DNSMASQ, "--log-queries", "--log-facility=-",
            "--address=/nx.wild.test/",
            *[f"--address=/{name}/{address}" for name, address in DNS.items()],
        )  # fmt: skip
        # the proxies' own resolver lies: every name is origin B. The addon asks the
        # bottle's resolver (RESOLVER_IP, from its configuration) and pins what it
        # checked, so the lie must never be where a request lands.
        STAND.container("liar", LIAR_IP, NETUTILS, *DNSMASQ, f"--address=/#/{ORIGIN_B}")
        for name, ip in (("origin-a", ORIGIN_A), ("origin-b", ORIGIN_B)):
            STAND.origin(name, ip, image, work)
        config = work / "config.json"
        STAND.proxy("proxy", PROXY_IP, image, work, config, dns=LIAR_IP)
        faulty = _egress.proxy_command(UPSTREAM_CA)
        faulty[:4] = ["python3", "-P", "/tests/egress_faulty_proxy.py"]
        STAND.proxy(
            "faulty", FAULTY_IP, image, work, config, "-v", f"{TESTS_DIR}:/tests:ro",
            argv=faulty, dns=LIAR_IP,
        )  # fmt: skip
        STAND.client(CLIENT_IP, image, work, "-v", f"{work / 'test-ca.pem'}:/test-ca.pem:ro")
        STAND.wait_listening(
            "client", PROXY, FAULTY, f"{ORIGIN_A}:443", f"{ORIGIN_B}:443", f"{ORIGIN_A}:80"
        )
        yield {"image": image, "work": work, "ca": ca, "build_seconds": build_seconds}
    finally:
        if not os.environ.get("BBPROXY_KEEP"):
            STAND.remove(CONTAINERS)


def probe(kind: str, proxy: str = PROXY, **spec: Any) -> dict[str, Any]:
    """Run one probe of tests/egress_client.py in the client container."""
    return egress_client("bbproxy-client", kind, **{"proxy": proxy, "ca": "/ca.pem", **spec})


def get(host: str, **extra: Any) -> dict[str, Any]:
    return {"host": host, "target": "/", **extra}


def https(authority: str, *requests: dict[str, Any], **spec: Any) -> dict[str, Any]:
    host = authority.rsplit(":", 1)[0].strip("[]")
    return probe("https", authority=authority, requests=list(requests) or [get(host)], **spec)


def assert_ok(result: dict[str, Any], sni: str | None) -> dict[str, Any]:
    """A request that went through: CONNECT 200, HTTP 200, and the origin's echo says it
    came from the proxy with the expected SNI."""
    assert result["connect"]["status"] == 200, result
    response = result["responses"][0]
    assert response["status"] == 200, result
    echo: dict[str, Any] = response["echo"]
    assert echo["sni"] == sni, echo
    assert echo["peer"] in (PROXY_IP, FAULTY_IP), echo
    return echo


def assert_refused(answer: dict[str, Any], status: int, rule: str, words: str) -> None:
    assert answer["status"] == status, answer
    assert ("x-bot-bottle-refused", rule) in [tuple(h) for h in answer["headers"]], answer
    assert words in answer["body"], answer["body"]


def proxy_log() -> list[dict[str, Any]]:
    done = _docker("logs", "bbproxy-proxy")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


# --------------------------------------------------------------------------- controls


def test_names_resolve_and_origins_answer_without_the_proxy(lab: dict[str, Any]) -> None:
    """The control for every refusal below: each name resolves in the test resolver, and
    both origins answer straight from the client for every name the tests use."""
    names = ["api.allowed.test", "web.allowed.test", "x.api.allowed.test", "other.test"]
    code = (
        "import socket,json\n"
        f"print(json.dumps({{n: socket.gethostbyname(n) for n in {names + list(DNS)!r}}}))"
    )
    done = _docker("exec", "bbproxy-client", "python3", "-c", code)
    resolved = json.loads(done.stdout)
    assert resolved["x.api.allowed.test"] == ORIGIN_A
    assert {n: resolved[n] for n in DNS} == DNS
    for sni in ["other.test", "web.allowed.test", "x.api.allowed.test", "wild.test"]:
        direct = probe(
            "direct", address=f"{ORIGIN_A}:443", sni=sni, ca="/test-ca.pem", requests=[get(sni)]
        )
        assert direct["responses"][0]["echo"]["sni"] == sni
    direct = probe(
        "direct",
        address=f"{ORIGIN_B}:443",
        sni="priv.wild.test",
        ca="/test-ca.pem",
        requests=[get("priv.wild.test")],
    )
    assert direct["responses"][0]["status"] == 200


def test_allowed_exact_host(lab: dict[str, Any]) -> None:
    echo = assert_ok(https("api.allowed.test:443"), "api.allowed.test")
    assert ["Host", "api.allowed.test"] in echo["headers"]


def test_the_proxy_connects_to_the_address_it_checked(lab: dict[str, Any]) -> None:
    """The proxy container's own resolver says origin B for every name; the request
    still lands on origin A, the address the bottle's resolver gave and the addon
    checked (and the upstream SNI is the name, not the address)."""
    code = "import socket; print(socket.gethostbyname('api.allowed.test'))"
    own = _docker("exec", "bbproxy-proxy", "python3", "-c", code)
    assert own.stdout.strip() == ORIGIN_B, own
    echo = assert_ok(https("api.allowed.test:443"), "api.allowed.test")
    assert echo["local"] == ORIGIN_A, echo
    plain = probe("plain", requests=[get("api.allowed.test", target="http://api.allowed.test/")])
    assert plain["responses"][0]["echo"]["local"] == ORIGIN_A


def test_allowed_wildcard_hosts_at_any_depth(lab: dict[str, Any]) -> None:
    assert_ok(https("a.wild.test:443"), "a.wild.test")
    assert_ok(https("a.b.wild.test:443"), "a.b.wild.test")


def test_authority_spelling_is_canonicalised(lab: dict[str, Any]) -> None:
    """Upper case and one trailing dot name the same host (and the upstream SNI is the
    canonical name)."""
    result = https("API.Allowed.TEST.:443", get("api.allowed.test"), sni="api.allowed.test")
    assert_ok(result, "api.allowed.test")


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("authority", "words"),
    [
        ("other.test:443", "host other.test is not in the bottle's routes"),
        ("web.allowed.test:443", "host web.allowed.test is not in the bottle's routes"),
        ("x.api.allowed.test:443", "api.allowed.test is an exact route"),
        ("wild.test:443", "*.wild.test allows the names below wild.test, not wild.test itself"),
    ],
    ids=["unlisted", "sibling", "subdomain-of-exact", "wildcard-apex"],
)
def test_hosts_outside_the_routes_get_403_naming_the_rule(
    lab: dict[str, Any], authority: str, words: str
) -> None:
    assert_ok(https("api.allowed.test:443"), "api.allowed.test")
    result = https(authority)
    assert_refused(result["connect"], 403, "host-not-in-routes", words)


@pytest.mark.parametrize(
    "authority",
    [
        "api.allowed.test\x00.evil.test:443",
        "api.allowed.test:0",
        "api.allowed.test:0443",
        "api.allowed.test%2e:443",
        "[::1:443",
        "1.2.3:443",
    ],
    ids=["nul", "port-zero", "leading-zero", "percent", "bracket", "short-ipv4"],
)
def test_malformed_authorities_are_refused(lab: dict[str, Any], authority: str) -> None:
    assert_ok(https("api.allowed.test:443"), "api.allowed.test")
    result = https(authority)
    assert result.get("connect", {}).get("status") in (400, 403), result
    assert "responses" not in result


# --------------------------------------------------------------------------- IP literals


def test_ip_literal_connect_needs_a_cidr_route(lab: dict[str, Any]) -> None:
    result = https(f"{ORIGIN_A}:443", get(ORIGIN_A), sni=ORIGIN_A)
    assert_ok(result, None)  # an IP literal tunnel carries no SNI, upstream neither
    refused = https(f"{ORIGIN_B}:443", sni=ORIGIN_B)
    assert_refused(
        refused["connect"], 403, "ip-not-covered", f"IP address {ORIGIN_B} is not covered"
    )
    for authority, words in (
        ("127.0.0.1:8080", "loopback"),
        ("[::1]:8080", "loopback"),
        ("169.254.169.254:80", "metadata"),
        (f"{GATEWAY}:80", "gateway"),
    ):
        answer = https(authority)["connect"]
        assert_refused(answer, 403, "never-reached", words)


# --------------------------------------------------------------------------- resolved answers


@pytest.mark.parametrize(
    ("authority", "rule", "words"),
    [
        ("priv.wild.test:443", "private-answer", f"{ORIGIN_B}, which is private (RFC 1918)"),
        ("loop.wild.test:8080", "never-reached", "127.0.0.1, which is loopback"),
        ("meta.wild.test:80", "never-reached", "169.254.169.254, which is the cloud metadata"),
        ("gw.wild.test:80", "never-reached", f"{GATEWAY}, which is a network this bottle"),
        ("nx.wild.test:443", "resolver-failed", "NXDOMAIN"),
    ],
    ids=["private", "loopback", "metadata", "gateway", "nxdomain"],
)
def test_names_resolving_to_closed_addresses_are_refused(
    lab: dict[str, Any], authority: str, rule: str, words: str
) -> None:
    assert_ok(https("a.wild.test:443"), "a.wild.test")
    answer = https(authority)["connect"]
    assert_refused(answer, 502 if rule == "resolver-failed" else 403, rule, words)


# --------------------------------------------------------------------------- one identity


@pytest.mark.parametrize(
    "sni", ["a.wild.test", "evil.test", None], ids=["other-allowed", "unlisted", "none"]
)
def test_sni_must_match_the_connect_host(lab: dict[str, Any], sni: str | None) -> None:
    assert_ok(https("api.allowed.test:443", sni="api.allowed.test"), "api.allowed.test")
    result = https("api.allowed.test:443", sni=sni)
    assert result["connect"]["status"] == 200
    assert "tls_error" in result or "error" in result["responses"][0], result
    rule = "sni-missing" if sni is None else "sni-mismatch"
    assert any(e.get("rule") == rule for e in proxy_log())


def test_host_must_match_sni_and_connect(lab: dict[str, Any]) -> None:
    """On one connection: the right Host passes, another allowed host is 421, so is an
    absolute-form target naming another host (origins prefer it to Host), and two Host
    headers are 400."""
    result = https(
        "api.allowed.test:443",
        get("api.allowed.test"),
        get("a.wild.test"),
        get("api.allowed.test", target="https://a.wild.test/"),
        get(["api.allowed.test", "api.allowed.test"]),
    )
    assert result["responses"][0]["status"] == 200, result
    assert_refused(
        result["responses"][1],
        421,
        "host-mismatch",
        "Host a.wild.test does not match the TLS SNI and CONNECT host api.allowed.test:443",
    )
    assert_refused(result["responses"][2], 421, "host-mismatch", "authority a.wild.test does")
    assert_refused(result["responses"][3], 400, "host-headers", "2 Host headers")


def test_http2_second_host_on_a_reused_connection_is_refused(lab: dict[str, Any]) -> None:
    result = probe(
        "h2",
        authority="api.allowed.test:443",
        authorities=["api.allowed.test", "a.wild.test", "api.allowed.test"],
    )
    assert result["alpn"] == "h2", result
    first, second, third = result["streams"]
    assert first["status"] == 200, result
    assert json.loads(first["body"])["sni"] == "api.allowed.test"
    assert second["status"] == 421 and "does not match" in second["body"], result
    assert third["status"] == 200, result


# --------------------------------------------------------------------------- not HTTP


def test_non_http_inside_connect_is_closed(lab: dict[str, Any]) -> None:
    """Raw bytes after TLS (and without TLS) never reach the origin."""
    assert_ok(https("api.allowed.test:443"), "api.allowed.test")
    for authority, tls in (("api.allowed.test:443", True), ("api.allowed.test:80", False)):
        result = probe("raw", authority=authority, tls=tls)
        assert result["connect"]["status"] == 200, result
        assert result.get("closed") is True, result
        assert '"sni"' not in result.get("received", ""), result


def test_tls_straight_to_the_proxy_is_closed(lab: dict[str, Any]) -> None:
    code = (
        "import socket,ssl\n"
        f"s=socket.create_connection(({PROXY_IP!r},8080),timeout=5)\n"
        "c=ssl.create_default_context(); c.check_hostname=False; c.verify_mode=ssl.CERT_NONE\n"
        "try:\n"
        "    t=c.wrap_socket(s,server_hostname='api.allowed.test'); print('handshake')\n"
        "except (OSError, ssl.SSLError) as e: print('closed', e)\n"
    )
    done = _docker("exec", "bbproxy-client", "python3", "-c", code)
    assert done.stdout.startswith("closed"), done.stdout + done.stderr


# --------------------------------------------------------------------------- plain HTTP


def test_plain_http_is_policed_the_same_way(lab: dict[str, Any]) -> None:
    ok = probe("plain", requests=[get("api.allowed.test", target="http://api.allowed.test/")])
    echo = ok["responses"][0]["echo"]
    assert echo["tls"] is False and echo["peer"] == PROXY_IP, ok
    cases = [
        (get("other.test", target="http://other.test/"), 403, "host-not-in-routes"),
        (get("other.test", target="http://api.allowed.test/"), 400, "url-host-mismatch"),
        (get("api.allowed.test", target="https://api.allowed.test/"), 400, "https-without-connect"),
        (get(ORIGIN_B, target=f"http://{ORIGIN_B}/"), 403, "ip-not-covered"),
        (get("priv.wild.test", target="http://priv.wild.test/"), 403, "private-answer"),
    ]
    for request, status, rule in cases:
        answer = probe("plain", requests=[request])["responses"][0]
        assert_refused(answer, status, rule, "")
    covered = probe("plain", requests=[get(ORIGIN_A, target=f"http://{ORIGIN_A}/")])
    assert covered["responses"][0]["status"] == 200


# --------------------------------------------------------------------------- WebSocket


def test_websocket_on_an_allowed_route_works(lab: dict[str, Any]) -> None:
    result = probe("ws", authority="api.allowed.test:443", message="hello")
    assert result["upgrade"]["status"] == 101, result
    assert result["message"] == "echo:hello", result


# --------------------------------------------------------------------------- fail closed


@pytest.mark.parametrize("where", ["connect", "sni", "request"])
def test_an_exception_in_the_addon_closes_the_flow(lab: dict[str, Any], where: str) -> None:
    assert_ok(https("ok.wild.test:443", proxy=FAULTY), "ok.wild.test")
    host = f"fault-{where}.wild.test"
    result = https(f"{host}:443", proxy=FAULTY)
    got_through = result.get("connect", {}).get("status") == 200 and any(
        r.get("status") == 200 for r in result.get("responses", [])
    )
    assert not got_through, result
    logs = _docker("logs", "bbproxy-faulty").stdout
    assert "injected fault in" in logs and '"rule": "internal-error"' in logs


def test_decisions_are_logged_with_their_rule(lab: dict[str, Any]) -> None:
    https("api.allowed.test:443")
    https("other.test:443")
    events = proxy_log()
    assert any(e["event"] == "start" and e["policy"] == POLICY.digest for e in events)
    assert any(e["event"] == "connect" and e["host"] == "api.allowed.test:443" for e in events)
    assert any(
        e["event"] == "refused"
        and e["rule"] == "host-not-in-routes"
        and "other.test" in e["reason"]
        for e in events
    )


def test_the_proxy_does_not_start_without_a_valid_configuration(lab: dict[str, Any]) -> None:
    work: Path = lab["work"]
    bad = work / "bad-config.json"
    data = json.loads((work / "config.json").read_text())
    data["policy"]["exact_hosts"].append("evil.test")  # the hash no longer matches
    bad.write_text(json.dumps(data))
    bad.chmod(0o644)
    done = run(
        "docker", "run", "--rm", "--network", NET, "--dns", RESOLVER_IP,
        *proxy_options(work, bad), lab["image"], *_egress.proxy_command(), check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "does not match its routes" in done.stdout + done.stderr


# --------------------------------------------------------------------------- the image


def test_the_image_role_is_idempotent_and_check_mode_safe(lab: dict[str, Any]) -> None:
    extra = []
    if os.environ.get("PIP_CERT"):
        extra = ["-e", f"egress_proxy_image_pip_cert={os.environ['PIP_CERT']}"]
    for mode in ([], ["--check", "--diff"]):
        done = ansible(
            "ansible-playbook", "tests/integration/playbooks/egress_proxy_image.yml", *extra, *mode
        )
        assert done.returncode == 0, done.stdout
        assert re.search(r"changed=0\s", done.stdout), done.stdout
        assert f"egress_proxy_image_ref={lab['image']}" in done.stdout
    missing = "bot-bottle/egress-proxy-checkmode"
    done = ansible(
        "ansible-playbook",
        "tests/integration/playbooks/egress_proxy_image.yml",
        "--check",
        "-e",
        f"egress_proxy_image_name={missing}",
    )
    assert done.returncode == 0, done.stdout
    assert re.search(r"changed=1\s", done.stdout), done.stdout  # "would be built"
    assert _docker("image", "ls", "-q", missing).stdout.strip() == ""


def test_latency_through_the_proxy(lab: dict[str, Any]) -> None:
    """Measured figures (printed, and written to .cache/egress-proxy-bench.json): HTTPS
    GETs on the test origin through the proxy and straight, kept-alive and new."""
    result = probe(
        "bench",
        authority="api.allowed.test:443",
        address=f"{ORIGIN_A}:443",
        direct_ca="/test-ca.pem",
        count=200,
    )
    result["image_build_seconds"] = round(lab["build_seconds"], 1)
    (ROOT / ".cache").mkdir(exist_ok=True)
    (ROOT / ".cache" / "egress-proxy-bench.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    assert result["proxy_keepalive"]["p50_ms"] < 250
