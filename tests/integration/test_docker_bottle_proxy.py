"""A Docker bottle's egress proxy, seen from the agent: issue 13's proof list.

The bottle is brought up by the ``docker_bottle`` module (as ``bottle up`` does) with
routes ``host: api.allowed.test``, ``host: "*.wild.test"`` and ``cidr: ORIGIN_A/32``.
The cidr route is there because this test's stand-in for the internet is an RFC 1918
network: the proxy refuses private answers that no cidr route covers, so the one
origin address the allowed names resolve to is covered, and ORIGIN_B is not.

The stand-in (network ``bbdproxy-egress``, 172.29.243.0/24, internal; nothing leaves
the machine): a test dnsmasq (the bottle's only upstream) that maps every test name to
an origin, two HTTPS origins (``tests/egress_origin.py``, certificate from a test CA
the proxy trusts through ``egress_trusted_ca``) that echo what they receive, and an
"outside" client that is not behind the bottle's firewall. Every probe of an attack
runs inside the agent (``docker exec``; the agent image is the egress-proxy image, for
its Python and ``h2``, with ``tests/`` mounted read-only), so it has exactly the
agent's network namespace, environment, user and trust store. Every attack follows a
positive control that must pass first, and the control test shows each refused name
resolving and its origin answering without the proxy, so each refusal is the proxy's
(or the firewall's) doing. Every container has an explicit ``--dns``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.botbottle.bottle.plugins.module_utils import _egress
from ansible_collections.botbottle.bottle.plugins.module_utils._docker_net import (
    bottle_addresses,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._policy import build_policy
from tests.egress_lab import DNSMASQ, TESTS_DIR, Stand, certificates, egress_client, ip_on
from tests.helpers import ROOT, bottle, require_docker, require_images, run_module
from tests.helpers import docker as _docker

pytestmark = pytest.mark.integration

require_docker()

NAME = "bbdproxy"
AGENT, HOLDER, PROXY_CONTAINER = f"bottle-{NAME}", f"bottle-{NAME}-net", f"bottle-{NAME}-proxy"
NET = "bbdproxy-egress"
SUBNET = "172.29.243.0/24"  # 172.29.250.0/24 is molecule docker_example's
GATEWAY = "172.29.243.1"
RESOLVER, ORIGIN_A, ORIGIN_B, OUTSIDE_IP = (
    "172.29.243.53",
    "172.29.243.20",
    "172.29.243.21",
    "172.29.243.30",
)
SUBNET_POOL = "172.28.240.0/24"  # the bottle network's /28 (the default pool is shared)
STATE = Path("/var/lib/bot-bottle/test-docker-proxy")
NETUTILS = "bot-bottle/netutils:latest"
PROXY_IMAGE = "bot-bottle/egress-proxy:latest"
LAB_CONTAINERS = ("resolver", "origin-a", "origin-b", "outside")
AGENT_CA = _egress.AGENT_CA_FILE

#: The stand-in's resolver (dnsmasq ``address=``: each name and every name below it).
DNS = {
    "api.allowed.test": ORIGIN_A,  # and sub.api.allowed.test
    "sibling.allowed.test": ORIGIN_A,
    "wild.test": ORIGIN_A,  # x.wild.test and every other name below
    "other.test": ORIGIN_A,
    "priv.wild.test": ORIGIN_B,
    "loop.wild.test": "127.0.0.1",
}
CERT_NAMES = [
    "api.allowed.test",
    "*.api.allowed.test",
    "*.allowed.test",
    "*.wild.test",
    "other.test",
]
POLICY = build_policy(["api.allowed.test"], ["wild.test"], [f"{ORIGIN_A}/32"], log=1)


STAND = Stand("bbdproxy", NET, SUBNET, RESOLVER, "botbottle.test=docker-bottle-proxy")


def _cleanup() -> None:
    run_module({"name": NAME, "state": "absent", "state_dir": str(STATE)})
    STAND.remove(LAB_CONTAINERS)


def bottle_args(work: Path) -> dict[str, Any]:
    return {
        "name": NAME,
        "state": "started",
        "policy": POLICY.to_dict(),
        "upstream_dns": [RESOLVER],
        "egress_network": NET,
        "egress_trusted_ca": str(work / "test-ca.pem"),
        "netutils_image": NETUTILS,
        "proxy_image": PROXY_IMAGE,
        # the agent runs the proxy image for its python3 and h2 (the probes' client)
        "image": PROXY_IMAGE,
        "command": ["sleep", "infinity"],
        "mounts": [{"source": str(ROOT / "tests"), "target": "/tests", "read_only": True}],
        "state_dir": str(STATE),
        "subnet_pool": SUBNET_POOL,
    }


@dataclass(frozen=True)
class Lab:
    work: Path
    proxy_ip: str  # on the bottle network (the agent's side)
    proxy_egress_ip: str  # on the egress network (what the origins see)
    result: dict[str, Any]

    @property
    def proxy(self) -> str:
        return f"{self.proxy_ip}:{_egress.PROXY_PORT}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The stand-in for the internet, then the bottle through the module."""
    require_images(NETUTILS, PROXY_IMAGE)
    _cleanup()  # what an interrupted run left
    work = tmp_path_factory.mktemp("docker-proxy")
    work.chmod(0o755)
    try:
        certificates(work, "bbdproxy", CERT_NAMES, [ORIGIN_A, ORIGIN_B])
        STAND.create_network()
        STAND.container(
            "resolver", RESOLVER, NETUTILS, *DNSMASQ, "--log-queries", "--log-facility=-",
            *[f"--address=/{name}/{address}" for name, address in DNS.items()],
            dns="127.0.0.1",
        )  # fmt: skip
        for name, ip in (("origin-a", ORIGIN_A), ("origin-b", ORIGIN_B)):
            STAND.origin(name, ip, PROXY_IMAGE, work)
        STAND.container(
            "outside", OUTSIDE_IP, PROXY_IMAGE, "sleep", "infinity",
            options=["-v", f"{TESTS_DIR}:/tests:ro", "-v", f"{work}/test-ca.pem:/test-ca.pem:ro"],
        )  # fmt: skip
        STAND.wait_listening("outside", f"{ORIGIN_A}:443", f"{ORIGIN_B}:443")
        result = run_module(bottle_args(work))
        assert result.get("failed") is not True, result
        assert result["actions"][-2:] == ["create_agent", "start_agent"], result
        yield Lab(
            work=work,
            proxy_ip=ip_on(PROXY_CONTAINER, AGENT),
            proxy_egress_ip=ip_on(PROXY_CONTAINER, NET),
            result=result,
        )
    finally:
        if not os.environ.get("BBDPROXY_KEEP"):
            _cleanup()


def _exec(container: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return _docker("exec", container, *argv)


def agent(lab: Lab, kind: str, **spec: Any) -> dict[str, Any]:
    """A probe from the agent, through its proxy, trusting the bottle CA it was given."""
    return egress_client(AGENT, kind, **{"proxy": lab.proxy, "ca": AGENT_CA, **spec})


def https(lab: Lab, authority: str, *requests: dict[str, Any], **spec: Any) -> dict[str, Any]:
    host = authority.rsplit(":", 1)[0].strip("[]")
    return agent(lab, "https", authority=authority, requests=list(requests) or [get(host)], **spec)


def get(host: Any, **extra: Any) -> dict[str, Any]:
    return {"host": host, "target": "/", **extra}


def assert_ok(lab: Lab, result: dict[str, Any], sni: str | None) -> dict[str, Any]:
    """Through: CONNECT 200, HTTP 200, and the origin's echo says the request came from
    the proxy's egress side with the expected SNI."""
    assert result["connect"]["status"] == 200, result
    response = result["responses"][0]
    assert response["status"] == 200, result
    echo: dict[str, Any] = response["echo"]
    assert echo["sni"] == sni and echo["peer"] == lab.proxy_egress_ip, echo
    return echo


def assert_refused(answer: dict[str, Any], status: int, rule: str, words: str) -> None:
    assert answer["status"] == status, answer
    assert ("x-bot-bottle-refused", rule) in [tuple(h) for h in answer["headers"]], answer
    assert words in answer["body"], answer["body"]


def proxy_log(lab: Lab) -> list[dict[str, Any]]:
    path = STATE / NAME / "log" / "egress" / _egress.LOG_FILE_NAME
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.startswith("{")]


def outside_get(address: str, sni: str) -> dict[str, Any]:
    """Straight to an origin from the stand-in's own network (no proxy, no firewall)."""
    return egress_client(
        "bbdproxy-outside",
        "direct",
        address=address,
        sni=sni,
        ca="/test-ca.pem",
        requests=[get(sni)],
    )


# --------------------------------------------------------------------------- controls


def test_the_stand_in_answers_every_name_without_the_proxy(lab: Lab) -> None:
    """The control for every refusal below: each name the tests use resolves in the
    stand-in's resolver, and its origin answers it over TLS, from outside the bottle."""
    names = [*DNS, "x.wild.test", "sub.api.allowed.test"]
    code = (
        f"import socket,json\nprint(json.dumps({{n: socket.gethostbyname(n) for n in {names!r}}}))"
    )
    resolved = json.loads(_exec("bbdproxy-outside", "python3", "-c", code).stdout)
    assert {n: resolved[n] for n in DNS} == DNS
    assert resolved["x.wild.test"] == resolved["sub.api.allowed.test"] == ORIGIN_A
    for name in ["api.allowed.test", "x.wild.test", "other.test", "sibling.allowed.test"]:
        echo = outside_get(f"{ORIGIN_A}:443", name)["responses"][0]["echo"]
        assert echo["sni"] == name and echo["peer"] == OUTSIDE_IP, echo
    assert outside_get(f"{ORIGIN_A}:443", "sub.api.allowed.test")["responses"][0]["status"] == 200
    assert outside_get(f"{ORIGIN_B}:443", "priv.wild.test")["responses"][0]["status"] == 200


def test_the_proxy_is_the_fourth_address_on_both_networks(lab: Lab) -> None:
    subnet = _docker(
        "network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}}", AGENT
    ).stdout.strip()
    assert ipaddress.ip_network(subnet).subnet_of(ipaddress.ip_network(SUBNET_POOL))
    assert lab.proxy_ip == bottle_addresses(subnet)["proxy"]
    assert lab.proxy_egress_ip and ipaddress.ip_address(lab.proxy_egress_ip) in (
        ipaddress.ip_network(SUBNET)
    )
    # the agent itself is on the bottle network only (the holder's namespace)
    shown = "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}"
    assert _docker("inspect", "-f", shown, HOLDER).stdout.split() == [AGENT]


# --------------------------------------------------------------------------- the agent


def test_the_agent_has_the_proxy_variables_and_the_bottle_ca_only(lab: Lab) -> None:
    """Its environment sends it through the proxy and trusts the bottle CA; the CA's
    certificate is mounted, its key is nowhere the agent can read (and, as the control,
    the same search finds the key in the proxy, which needs it)."""
    env = dict(
        line.split("=", 1) for line in _exec(AGENT, "env").stdout.splitlines() if "=" in line
    )
    expected = _egress.agent_proxy_env(lab.proxy_ip)
    assert sorted(expected) == sorted(_egress.PROXY_ENV_NAMES)
    assert {k: env.get(k) for k in expected} == expected
    assert env["HTTPS_PROXY"] == f"http://{lab.proxy_ip}:8080"

    host_ca = STATE / NAME / "ca"
    cert = (host_ca / _egress.CA_CERT_FILE).read_text()
    key_file = (host_ca / _egress.CA_FILE).read_text()
    assert "PRIVATE KEY" in key_file  # control: the key exists, and this is it
    for path in (AGENT_CA, *_egress.AGENT_CA_BUNDLES):
        seen = _exec(AGENT, "cat", path).stdout
        assert seen == cert and "PRIVATE KEY" not in seen, path
        assert [kind for kind, _ in _egress.pem_blocks(seen.encode())] == ["CERTIFICATE"], path
    key_body = [line for line in key_file.splitlines() if line and "-----" not in line]
    needle = key_body[1] if len(key_body) > 1 else key_body[0]
    search = (
        "import os,sys\n"
        "needle=sys.argv[1].encode(); found=[]\n"
        "for root, dirs, files in os.walk('/'):\n"
        "    if root == '/': dirs[:] = [d for d in dirs if d not in ('proc','sys','dev')]\n"
        "    for f in files:\n"
        "        p=os.path.join(root,f)\n"
        "        try:\n"
        "            if os.path.isfile(p) and os.path.getsize(p) < 4_000_000:\n"
        "                with open(p,'rb') as h:\n"
        "                    if needle in h.read(): found.append(p)\n"
        "        except OSError: pass\n"
        "print('\\n'.join(found))\n"
    )
    in_proxy = _exec(PROXY_CONTAINER, "python3", "-c", search, needle).stdout.split()
    assert f"{_egress.CONTAINER_CONFDIR}/{_egress.CA_FILE}" in in_proxy  # the control
    assert _exec(AGENT, "python3", "-c", search, needle).stdout.split() == []
    assert needle not in json.dumps(env)
    mounts = json.loads(_docker("inspect", "-f", "{{json .Mounts}}", AGENT).stdout)
    sources = [m["Source"] for m in mounts]
    assert str(host_ca / _egress.CA_FILE) not in sources and str(host_ca) not in sources


def test_allowed_exact_and_wildcard_hosts_work_with_the_agents_own_settings(lab: Lab) -> None:
    """An ordinary client that is given nothing but the agent's environment (urllib:
    proxy from HTTPS_PROXY, trust from SSL_CERT_FILE / the system bundle) reaches both
    allowed hosts; the origin sees the proxy, the name as SNI and Host."""
    answer = egress_client(
        AGENT, "env", urls=["https://api.allowed.test/", "https://x.wild.test/a?b=1"]
    )
    assert answer["proxies"]["https"] == f"http://{lab.proxy_ip}:8080", answer
    exact, wildcard = answer["responses"]
    for response, name in ((exact, "api.allowed.test"), (wildcard, "x.wild.test")):
        assert response.get("status") == 200, answer
        echo = response["echo"]
        assert echo["sni"] == name and ["Host", name] in echo["headers"], echo
        assert echo["peer"] == lab.proxy_egress_ip and echo["local"] == ORIGIN_A, echo
    assert wildcard["echo"]["target"] == "/a?b=1"
    # the same with the explicit client (CONNECT, TLS with the bottle CA)
    assert_ok(lab, https(lab, "api.allowed.test:443"), "api.allowed.test")
    assert_ok(lab, https(lab, "x.wild.test:443"), "x.wild.test")


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("authority", "words"),
    [
        ("other.test:443", "host other.test is not in the bottle's routes"),
        ("sibling.allowed.test:443", "host sibling.allowed.test is not in the bottle's routes"),
        ("sub.api.allowed.test:443", "api.allowed.test is an exact route"),
    ],
    ids=["unlisted", "sibling", "subdomain-of-exact"],
)
def test_hosts_outside_the_routes_get_403_naming_the_rule(
    lab: Lab, authority: str, words: str
) -> None:
    assert_ok(lab, https(lab, "api.allowed.test:443"), "api.allowed.test")
    assert_refused(https(lab, authority)["connect"], 403, "host-not-in-routes", words)


def test_ip_literal_connect_is_refused(lab: Lab) -> None:
    """The covered origin address passes (the cidr route: the control), an address no
    route covers is 403, and loopback and the host are never reached."""
    assert_ok(lab, https(lab, f"{ORIGIN_A}:443", get(ORIGIN_A), sni=ORIGIN_A), None)
    refused = https(lab, f"{ORIGIN_B}:443", sni=ORIGIN_B)["connect"]
    assert_refused(refused, 403, "ip-not-covered", f"IP address {ORIGIN_B} is not covered")
    assert_refused(https(lab, "127.0.0.1:8080")["connect"], 403, "never-reached", "loopback")
    # the host's address on the egress network: no route covers it, so it is refused as
    # any literal (a route covering it would not open it: the proxy's configuration then
    # lists it as never reached: the collection's
    # tests/unit/plugins/module_utils/test_docker_bottle_plan.py)
    assert_refused(https(lab, f"{GATEWAY}:443")["connect"], 403, "ip-not-covered", GATEWAY)


@pytest.mark.parametrize(
    ("authority", "rule", "words"),
    [
        ("priv.wild.test:443", "private-answer", f"{ORIGIN_B}, which is private (RFC 1918)"),
        ("loop.wild.test:8080", "never-reached", "127.0.0.1, which is loopback"),
    ],
    ids=["private", "loopback"],
)
def test_a_name_answered_with_a_closed_address_is_refused(
    lab: Lab, authority: str, rule: str, words: str
) -> None:
    assert_ok(lab, https(lab, "x.wild.test:443"), "x.wild.test")
    assert_refused(https(lab, authority)["connect"], 403, rule, words)


# --------------------------------------------------------------------------- one identity


def test_sni_must_match_the_connect_host(lab: Lab) -> None:
    assert_ok(lab, https(lab, "api.allowed.test:443", sni="api.allowed.test"), "api.allowed.test")
    result = https(lab, "api.allowed.test:443", sni="x.wild.test")
    assert result["connect"]["status"] == 200, result
    assert "tls_error" in result or "error" in result["responses"][0], result
    assert "echo" not in json.dumps(result.get("responses", [])), result
    assert any(
        e.get("rule") == "sni-mismatch" and "x.wild.test" in e.get("reason", "")
        for e in proxy_log(lab)
    ), proxy_log(lab)[-5:]


def test_host_must_match_sni(lab: Lab) -> None:
    """One connection: the right Host passes, then another allowed host is 421."""
    result = https(lab, "api.allowed.test:443", get("api.allowed.test"), get("x.wild.test"))
    assert result["responses"][0]["status"] == 200, result
    assert_refused(
        result["responses"][1],
        421,
        "host-mismatch",
        "Host x.wild.test does not match the TLS SNI and CONNECT host api.allowed.test:443",
    )


def test_http2_second_host_on_a_reused_connection_is_refused(lab: Lab) -> None:
    result = agent(
        lab,
        "h2",
        authority="api.allowed.test:443",
        authorities=["api.allowed.test", "x.wild.test", "api.allowed.test"],
    )
    assert result["alpn"] == "h2", result
    first, second, third = result["streams"]
    assert first["status"] == 200 and json.loads(first["body"])["sni"] == "api.allowed.test"
    assert second["status"] == 421 and "does not match" in second["body"], result
    assert "sni" not in second["body"], result  # never reached the origin
    assert third["status"] == 200, result


# --------------------------------------------------------------------------- not HTTP, no proxy


def test_a_raw_non_http_tls_stream_is_closed(lab: Lab) -> None:
    assert_ok(lab, https(lab, "api.allowed.test:443"), "api.allowed.test")
    result = agent(lab, "raw", authority="api.allowed.test:443", tls=True)
    assert result["connect"]["status"] == 200, result
    assert result.get("closed") is True, result
    assert '"sni"' not in result.get("received", ""), result


def test_a_direct_connection_around_the_proxy_fails(lab: Lab) -> None:
    """From outside the bottle the origins, the stand-in's resolver and the gateway
    answer (the controls); from the agent, without the proxy, nothing opens, not even
    the origin address the cidr route covers (the bottle network has no route out)."""
    targets = [f"{ORIGIN_A}:443", f"{ORIGIN_A}:80", f"{ORIGIN_B}:443", f"{RESOLVER}:53"]
    for address in targets:
        assert egress_client("bbdproxy-outside", "tcp", address=address)["connected"], address
    assert_ok(lab, https(lab, "api.allowed.test:443"), "api.allowed.test")
    for address in [*targets, f"{lab.proxy_egress_ip}:8080"]:
        # 2 s: ten times what the outside controls take on this bridge
        answer = egress_client(AGENT, "tcp", address=address, timeout=2)
        assert answer["connected"] is False, (address, answer)
    # the proxy's own port is all the agent reaches on its network, besides its resolver
    assert egress_client(AGENT, "tcp", address=lab.proxy)["connected"]


def test_a_connection_the_firewall_refuses_fails_at_once(lab: Lab) -> None:
    """The reset the holder's rules send back reaches the agent (it leaves over lo):
    a tool that ignores the proxy fails at once instead of hanging."""
    assert egress_client(AGENT, "tcp", address=lab.proxy)["connected"]  # the control
    answer = egress_client(AGENT, "tcp", address=f"{ORIGIN_B}:443", timeout=2)
    assert "ConnectionRefusedError" in answer.get("error", ""), answer


# --------------------------------------------------------------------------- the manifest


def test_a_key_the_docker_backend_does_not_enforce_is_refused_with_exit_2(
    tmp_path: Path,
) -> None:
    """Through the installed ``bottle`` command (the unit tests in tests/unit/test_cli.py
    and the collection's test_enforced.py cover every key and backend in process)."""
    base = "egress:\n  routes:\n    - host: api.allowed.test\n"
    (tmp_path / "plain.yml").write_text(base)
    (tmp_path / "disk.yml").write_text(base + "runtime:\n  storage_gib: 20\n")
    ok = bottle("validate", str(tmp_path / "plain.yml"), "--backend", "docker")
    assert ok.returncode == 0, ok.stdout + ok.stderr  # the control
    refused = bottle("validate", str(tmp_path / "disk.yml"), "--backend", "docker")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "disk.yml" in refused.stderr and "$.runtime.storage_gib" in refused.stderr
    assert "not enforced by the docker backend" in refused.stderr
