"""A route's ``matches`` and ``egress.log``, on a real mitmdump: the proxy image, the
addon, a policy compiled from a manifest, a test-owned origin that echoes what it
receives, a test resolver and a client.

Everything runs on an internal Docker network this module creates (``bbmatch-net``,
172.29.249.0/24); nothing leaves the machine. Three proxies run the same policy at
``egress.log`` 2, 1 and 0, each writing to its own log directory (mounted where the
Docker backend mounts the bottle's ``log/egress``). Every refusal follows a positive
control on the same host that must pass first, so a 403 is the matcher's doing.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from ansible_collections.botbottle.bottle.plugins.module_utils import _egress
from ansible_collections.botbottle.bottle.plugins.module_utils._policy import compile_policy
from botbottle import report
from tests.egress_lab import DNSMASQ, Stand, certificates, egress_client, proxy_files, proxy_image
from tests.helpers import ansible, require_docker, require_images
from tests.helpers import docker as _docker

pytestmark = pytest.mark.integration

require_docker()

NET = "bbmatch-net"
SUBNET = "172.29.249.0/24"
GATEWAY = "172.29.249.1"
PROXIES = {2: "172.29.249.10", 1: "172.29.249.11", 0: "172.29.249.12"}
ORIGIN, CLIENT_IP, RESOLVER_IP = "172.29.249.20", "172.29.249.30", "172.29.249.53"
NETUTILS = "bot-bottle/netutils:latest"
CONTAINERS = ("resolver", "origin", "proxy2", "proxy1", "proxy0", "client")
NAMES = ("api.allowed.test", "web.allowed.test", "a.wild.test")
SECRET_QUERY = "bbmatch-query-secret-7f3a"

MANIFEST: dict[str, Any] = {
    "egress": {
        "routes": [
            {
                "host": "api.allowed.test",
                "matches": [
                    {"paths": [{"type": "prefix", "value": "/v1"}], "methods": ["get"]},
                    {
                        "paths": [{"type": "regex", "value": "/items/[0-9]+"}],
                        "methods": ["GET", "POST"],
                    },
                    {
                        "paths": [{"type": "exact", "value": "/hdr"}],
                        "headers": [
                            {"name": "X-Team", "value": "blue"},
                            {"name": "X-Ver", "type": "regex", "value": "v[0-9]"},
                        ],
                    },
                ],
            },
            {"host": "web.allowed.test"},
            {"host": "*.wild.test", "matches": [{"methods": ["GET"]}]},
            # the test origin's address is private: a cidr route lets names resolve to it
            {"cidr": f"{ORIGIN}/32"},
        ]
    }
}


def _policy(level: int) -> Any:
    return compile_policy({"egress": {**MANIFEST["egress"], "log": level}})


STAND = Stand("bbmatch", NET, SUBNET, RESOLVER_IP, "botbottle.test=egress-matches")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    image = proxy_image()
    require_images(NETUTILS)
    STAND.remove(CONTAINERS)
    work = tmp_path_factory.mktemp("matches")
    work.chmod(0o755)
    certificates(work, "bbmatch", NAMES, [ORIGIN])
    proxy_files(work, "bbmatch")
    dnslog = work / "dnslog"
    dnslog.mkdir()
    dnslog.chmod(0o777)
    log_file = f"{_egress.CONTAINER_LOG_DIR}/{_egress.LOG_FILE_NAME}"
    for level in PROXIES:
        config = _egress.render_config(
            _policy(level), RESOLVER_IP, refused_networks=[GATEWAY], log_file=log_file
        )
        (work / f"config{level}.json").write_text(_egress.dumps_config(config))
        (work / f"config{level}.json").chmod(0o644)
        logs = work / f"log{level}"
        logs.mkdir()
        os.chown(logs, _egress.PROXY_UID, _egress.PROXY_UID)
        logs.chmod(0o700)
    STAND.create_network()
    try:
        STAND.container(
            "resolver", RESOLVER_IP, NETUTILS, *DNSMASQ, "--user=root", "--log-queries=extra",
            "--log-facility=/dnslog/queries.log", "--address=/#/",
            *[f"--address=/{name}/{ORIGIN}" for name in NAMES],
            options=["-v", f"{dnslog}:/dnslog"],
        )  # fmt: skip
        STAND.origin("origin", ORIGIN, image, work)
        for level, ip in PROXIES.items():
            STAND.proxy(
                f"proxy{level}", ip, image, work, work / f"config{level}.json",
                "-v", f"{work / f'log{level}'}:{_egress.CONTAINER_LOG_DIR}",
            )  # fmt: skip
        STAND.client(CLIENT_IP, image, work)
        STAND.wait_listening("client", *[f"{ip}:8080" for ip in PROXIES.values()], f"{ORIGIN}:443")
        yield {"work": work, "image": image}
    finally:
        if not os.environ.get("BBMATCH_KEEP"):
            STAND.remove(CONTAINERS)


def probe(kind: str, level: int = 2, **spec: Any) -> dict[str, Any]:
    return egress_client(
        "bbmatch-client", kind, **{"proxy": f"{PROXIES[level]}:8080", "ca": "/ca.pem", **spec}
    )


def req(host: str, target: str, method: str = "GET", **extra: Any) -> dict[str, Any]:
    return {"host": host, "target": target, "method": method, **extra}


def https(host: str, *requests: dict[str, Any], level: int = 2) -> list[dict[str, Any]]:
    """Requests on one CONNECT tunnel to ``host``:443; their responses."""
    result = probe("https", level, authority=f"{host}:443", requests=list(requests))
    assert result["connect"]["status"] == 200, result
    responses: list[dict[str, Any]] = result["responses"]
    assert len(responses) == len(requests), result
    return responses


def assert_passed(response: dict[str, Any], method: str, target: str) -> None:
    """Forwarded: the origin's echo shows the request as sent."""
    assert response["status"] == 200, response
    assert (response["echo"]["method"], response["echo"]["target"]) == (method, target), response


def assert_refused(response: dict[str, Any], status: int, rule: str, route: str) -> None:
    assert response["status"] == status, response
    assert ("x-bot-bottle-refused", rule) in [tuple(h) for h in response["headers"]], response
    assert f"route {route}" in response["body"], response["body"]
    assert "echo" not in response  # the origin never saw it


def log_lines(lab: dict[str, Any], level: int) -> list[dict[str, Any]]:
    path = lab["work"] / f"log{level}" / _egress.LOG_FILE_NAME
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------- controls


def test_controls_names_resolve_and_unrestricted_routes_pass_anything(
    lab: dict[str, Any],
) -> None:
    """The origin answers every name through the proxy; a route without matches admits
    any path and method (so the refusals below are the matchers' doing)."""
    [any_post] = https("web.allowed.test", req("web.allowed.test", "/admin/x", "DELETE"))
    assert_passed(any_post, "DELETE", "/admin/x")
    [wild] = https("a.wild.test", req("a.wild.test", "/anything"))
    assert_passed(wild, "GET", "/anything")


# --------------------------------------------------------------------------- paths and methods


def test_allowed_path_and_method_pass_and_others_get_403_naming_the_route(
    lab: dict[str, Any],
) -> None:
    responses = https(
        "api.allowed.test",
        req("api.allowed.test", "/v1"),  # positive controls first, on the same tunnel
        req("api.allowed.test", "/v1/repos/x"),
        req("api.allowed.test", "/v10"),  # prefix /v1 stops at a segment boundary
        req("api.allowed.test", "/admin"),
        req("api.allowed.test", "/v1/repos/x", "DELETE"),  # the right path, another method
        req("api.allowed.test", "/v1/repos/x", "get"),  # methods are case-insensitive
    )
    assert_passed(responses[0], "GET", "/v1")
    assert_passed(responses[1], "GET", "/v1/repos/x")
    for refused in responses[2:5]:
        assert_refused(refused, 403, "no-route-match", "api.allowed.test")
    assert "DELETE /v1/repos/x matches no entry" in responses[4]["body"]
    assert_passed(responses[5], "get", "/v1/repos/x")


def test_regex_paths_match_the_whole_path(lab: dict[str, Any]) -> None:
    """Full-match semantics: /items/[0-9]+ is /items/42 and nothing longer or shorter;
    the query is not part of the path."""
    responses = https(
        "api.allowed.test",
        req("api.allowed.test", "/items/42", "POST", headers=[["Content-Length", "0"]]),
        req("api.allowed.test", "/items/42?expand=1"),
        req("api.allowed.test", "/items/42/delete"),
        req("api.allowed.test", "/x/items/42"),
        req("api.allowed.test", "/items/"),
        req("api.allowed.test", "/items/42x"),
    )
    assert_passed(responses[0], "POST", "/items/42")
    assert_passed(responses[1], "GET", "/items/42?expand=1")
    for refused in responses[2:]:
        assert_refused(refused, 403, "no-route-match", "api.allowed.test")


def test_headers_must_all_match(lab: dict[str, Any]) -> None:
    good = [["X-Team", "blue"], ["X-Ver", "v2"]]
    responses = https(
        "api.allowed.test",
        req("api.allowed.test", "/hdr", headers=good),
        req("api.allowed.test", "/hdr", headers=[["x-team", "blue"], ["x-ver", "v7"]]),
        req("api.allowed.test", "/hdr", headers=[["X-Team", "red"], ["X-Ver", "v2"]]),
        req("api.allowed.test", "/hdr", headers=[["X-Team", "blue"]]),
        req("api.allowed.test", "/hdr", headers=[["X-Team", "blue"], ["X-Ver", "v2x"]]),
        req("api.allowed.test", "/hdr", headers=[*good, ["X-Team", "red"]]),
        req("api.allowed.test", "/hdr/x", headers=good),
    )
    assert_passed(responses[0], "GET", "/hdr")
    assert_passed(responses[1], "GET", "/hdr")  # header names are case-insensitive
    for refused in responses[2:]:
        assert_refused(refused, 403, "no-route-match", "api.allowed.test")


def test_ambiguous_paths_are_refused_on_routes_with_path_predicates(lab: dict[str, Any]) -> None:
    """A path an origin could read as another path is refused, not matched: a prefix
    /v1 must not admit /v1/../admin."""
    responses = https(
        "api.allowed.test",
        req("api.allowed.test", "/v1/%7Efoo"),  # control: unreserved escapes are fine
        req("api.allowed.test", "/v1/../admin"),
        req("api.allowed.test", "/v1/%2e%2E/admin"),
        req("api.allowed.test", "/v1%2Fadmin"),
        req("api.allowed.test", "/v1/..%5Cadmin"),
    )
    assert_passed(responses[0], "GET", "/v1/%7Efoo")
    for refused in responses[1:]:
        assert_refused(refused, 400, "ambiguous-path", "api.allowed.test")


def test_a_wildcard_route_is_named_by_its_zone(lab: dict[str, Any]) -> None:
    responses = https(
        "a.wild.test",
        req("a.wild.test", "/x"),
        req("a.wild.test", "/x", "POST", headers=[["Content-Length", "0"]]),
    )
    assert_passed(responses[0], "GET", "/x")
    assert_refused(responses[1], 403, "no-route-match", "*.wild.test")


def test_every_http2_stream_is_matched(lab: dict[str, Any]) -> None:
    """h2 to the proxy: each stream is checked (the probe asks for / only, which the
    unrestricted route admits and api.allowed.test's matches do not)."""
    control = probe("h2", authority="web.allowed.test:443", authorities=["web.allowed.test"])
    assert control["alpn"] == "h2" and control["streams"][0]["status"] == 200, control
    refused = probe("h2", authority="api.allowed.test:443", authorities=["api.allowed.test"])
    [stream] = refused["streams"]
    assert stream["status"] == 403, refused
    assert "route api.allowed.test" in stream["body"]


def test_plain_http_requests_are_matched_too(lab: dict[str, Any]) -> None:
    result = probe(
        "plain",
        requests=[
            req("api.allowed.test", "http://api.allowed.test/v1/x"),
            req("api.allowed.test", "http://api.allowed.test/admin"),
        ],
    )
    ok, refused = result["responses"]
    assert ok["status"] == 200 and ok["echo"]["tls"] is False, ok
    assert_refused(refused, 403, "no-route-match", "api.allowed.test")


# --------------------------------------------------------------------------- egress.log


def _traffic(level: int) -> None:
    """One allowed request (with a secret in its query) and one refused, via a proxy."""
    ok, refused = https(
        "api.allowed.test",
        req("api.allowed.test", f"/items/7?token={SECRET_QUERY}"),
        req("api.allowed.test", f"/admin?token={SECRET_QUERY}"),
        level=level,
    )
    assert_passed(ok, "GET", f"/items/7?token={SECRET_QUERY}")
    assert_refused(refused, 403, "no-route-match", "api.allowed.test")


def test_log_level_2_records_request_and_response_lines(lab: dict[str, Any]) -> None:
    _traffic(2)
    lines = log_lines(lab, 2)
    assert lines, "level 2 wrote nothing"
    assert all(line["source"] == "egress-proxy" for line in lines)
    requests = [e for e in lines if e["event"] == "request"]
    responses = [e for e in lines if e["event"] == "response"]
    refusals = [e for e in lines if e["event"] == "refused"]
    assert {
        "host": "api.allowed.test:443",
        "method": "GET",
        "path": "/items/7?[redacted]",
        "route": "api.allowed.test",
    }.items() <= requests[-1].items()
    assert responses[-1]["status"] == 200 and responses[-1]["path"] == "/items/7?[redacted]"
    assert refusals[-1]["rule"] == "no-route-match"
    assert refusals[-1]["path"] == "/admin?[redacted]"
    text = (lab["work"] / "log2" / _egress.LOG_FILE_NAME).read_text()
    assert SECRET_QUERY not in text  # queries are never logged


def test_log_level_1_records_blocks_only(lab: dict[str, Any]) -> None:
    _traffic(1)
    lines = log_lines(lab, 1)
    events = {line["event"] for line in lines}
    assert "refused" in events, lines
    assert not events & {"request", "response", "connect"}, lines
    refused = [line for line in lines if line["event"] == "refused"][-1]
    assert refused["host"] == "api.allowed.test:443" and refused["method"] == "GET"
    assert SECRET_QUERY not in json.dumps(lines)


def test_log_level_0_writes_nothing(lab: dict[str, Any]) -> None:
    _traffic(0)  # the same traffic: the matcher still refuses, the log stays empty
    assert list((lab["work"] / "log0").iterdir()) == []


def test_bottle_audit_shows_proxy_and_resolver_entries_by_source(lab: dict[str, Any]) -> None:
    """The bottle_audit module (run by Ansible) collects the resolver's refusals and the
    proxy's log into one audit log; the CLI's table marks each row's source."""
    _traffic(2)
    lookup = "import socket\ntry: socket.gethostbyname('nope.test')\nexcept OSError: pass"
    done = _docker("exec", "bbmatch-client", "python3", "-c", lookup)
    assert done.returncode == 0, done.stderr
    work = lab["work"]
    audit = work / "audit"
    args = {
        "name": "bbmatch", "backend": "docker", "audit_dir": str(audit),
        "log_path": str(work / "dnslog" / "queries.log"),
        "egress_log_path": str(work / "log2" / _egress.LOG_FILE_NAME),
    }  # fmt: skip
    collect = ("ansible", "localhost", "-m", "botbottle.bottle.bottle_audit", "-a")
    result = ansible(*collect, json.dumps(args))
    assert result.returncode == 0, result.stdout + result.stderr
    entries = [json.loads(line) for line in (audit / "bbmatch.jsonl").read_text().splitlines()]
    sources = {e["source"] for e in entries}
    assert sources == {"dnsmasq", "egress-proxy"}, entries
    assert any(e["source"] == "dnsmasq" and e["name"] == "nope.test" for e in entries)
    refused = [e for e in entries if e.get("rule") == "no-route-match"]
    assert refused and refused[-1]["name"] == "api.allowed.test"
    assert refused[-1]["path"] == "/admin?[redacted]" and refused[-1]["type"] == "GET"
    assert SECRET_QUERY not in (audit / "bbmatch.jsonl").read_text()
    lines = report.audit_lines(report.audit_rows({"localhost": entries}))
    assert "SOURCE" in lines[0]
    assert any("egress-proxy" in line and "api.allowed.test /admin?[redacted]" in line
               for line in lines)  # fmt: skip
    assert any("dnsmasq" in line and "nope.test" in line for line in lines)
    again = ansible(*collect, json.dumps(args))
    assert again.returncode == 0, again.stdout + again.stderr
    # incremental: nothing new, no change
    assert "added: 0" in again.stdout and "changed: false" in again.stdout, again.stdout


def test_the_proxies_wrote_nothing_else(lab: dict[str, Any]) -> None:
    """mitmdump itself prints no URLs (flow_detail=0): the log file is the only record."""
    for level in PROXIES:
        out = subprocess.run(
            ["docker", "logs", f"bbmatch-proxy{level}"], capture_output=True, text=True, check=False
        )
        assert SECRET_QUERY not in out.stdout + out.stderr
