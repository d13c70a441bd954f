"""A route's ``matches`` (compiled by the policy compiler, decided by the proxy's pure
functions), the proxy's log lines and their way into the audit. How ``bottle validate``
reports a bad ``matches`` and how ``bottle audit`` shows the proxy's records are tested
with the CLI (tests/unit/test_cli_validate.py and test_report.py in the repository)."""

from __future__ import annotations

import asyncio
import io
import json
import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.botbottle.bottle.plugins.module_utils import _egress, _egress_addon
from ansible_collections.botbottle.bottle.plugins.module_utils._audit import parse_egress
from ansible_collections.botbottle.bottle.plugins.module_utils._audit_store import egress_source
from ansible_collections.botbottle.bottle.plugins.module_utils._policy import (
    PolicyError,
    build_policy,
    compile_matches,
    compile_policy,
    policy_from_dict,
    request_path,
    route_for,
)
from ansible_collections.botbottle.bottle.tests.unit.plugins.module_utils.egress_fakes import (
    PROXY_LOG,
    Flow,
    Response,
    connect,
    resolve,
)

ROUTES: list[dict[str, Any]] = [
    {
        "host": "api.example.com",
        "matches": [
            {"paths": [{"type": "prefix", "value": "/v1"}], "methods": ["get", "HEAD"]},
            {"paths": [{"type": "regex", "value": "/items/[0-9]+"}], "methods": ["POST"]},
            {
                "paths": [{"type": "exact", "value": "/hdr"}],
                "headers": [
                    {"name": "X-Team", "value": "blue"},
                    {"name": "X-Ver", "type": "regex", "value": "v[0-9]"},
                ],
            },
        ],
    },
    {"host": "*.example.com", "matches": [{"methods": ["GET"]}]},
    {"host": "*.deep.example.com"},
    {"host": "open.example.com"},
    {"cidr": "203.0.113.0/24"},
]


def _policy(*routes: dict[str, Any], log: int = 0) -> Any:
    return compile_policy({"egress": {"routes": list(routes or ROUTES), "log": log}})


def _config(policy: Any = None) -> _egress.EgressConfig:
    return _egress.config_from_dict(_egress.render_config(policy or _policy(), "172.30.0.2"))


# --------------------------------------------------------------------------- compiler


def test_routes_are_found_by_the_compilers_host_matching_most_specific_first() -> None:
    policy = _policy()
    assert route_for(policy, "api.example.com") == "api.example.com"
    assert route_for(policy, "API.Example.com.") == "api.example.com"
    assert route_for(policy, "x.example.com") == "*.example.com"
    assert route_for(policy, "a.b.example.com") == "*.example.com"
    assert route_for(policy, "a.deep.example.com") == "*.deep.example.com"
    assert route_for(policy, "x.api.example.com") == "*.example.com"  # below, not the exact
    assert route_for(policy, "open.example.com") == "open.example.com"
    assert route_for(policy, "example.com") is None
    assert route_for(policy, "evil.test") is None
    assert policy.matches_for("*.deep.example.com") is None  # no matches: any request
    assert policy.matches_for("open.example.com") is None


def test_matches_are_normalised_into_the_policy_and_its_hash() -> None:
    policy = _policy()
    http = policy.to_dict()["http"]
    assert set(http) == {"api.example.com", "*.example.com"}
    assert http["*.example.com"] == [{"methods": ["GET"]}]
    first = http["api.example.com"]
    assert {"paths": [{"type": "prefix", "value": "/v1"}], "methods": ["GET", "HEAD"]} in first
    assert {
        "headers": [
            {"name": "x-team", "type": "exact", "value": "blue"},
            {"name": "x-ver", "type": "regex", "value": "v[0-9]"},
        ],
        "paths": [{"type": "exact", "value": "/hdr"}],
    } in first
    again = policy_from_dict(policy.to_dict())
    assert again == policy and again.digest == policy.digest
    other = _policy(*[{**ROUTES[0], "matches": [{"methods": ["GET"]}]}, *ROUTES[1:]])
    assert other.digest != policy.digest  # the matches are part of what the hash says
    # a policy without matches keeps the hash it had before matches existed
    plain = compile_policy({"egress": {"routes": [{"host": "a.example"}]}})
    assert plain.digest == build_policy(["a.example"]).digest
    assert plain.to_dict()["http"] == {}


def test_routes_of_one_host_are_one_route() -> None:
    restricted = {"host": "a.example", "matches": [{"methods": ["GET"]}]}
    more = {"host": "a.example", "matches": [{"methods": ["PUT"]}]}
    policy = _policy(restricted, more)
    [entries] = [m for k, m in policy.http if k == "a.example"]
    assert {m.methods for m in entries} == {("GET",), ("PUT",)}
    # a route of that host without matches admits everything
    assert _policy(restricted, {"host": "a.example"}).matches_for("a.example") is None
    assert _policy({"host": "a.example"}, restricted).matches_for("a.example") is None
    # duplicates collapse
    assert len(_policy(restricted, restricted).http[0][1]) == 1


@pytest.mark.parametrize(
    ("matches", "path", "words"),
    [
        (
            [{"paths": [{"type": "regex", "value": "/a/(b"}]}],
            "$.egress.routes[0].matches[0].paths[0].value",
            "route 0 (host a.example): '/a/(b' is not a valid regular expression",
        ),
        (
            [{"methods": ["GET"]}, {"headers": [{"name": "X", "type": "regex", "value": "["}]}],
            "$.egress.routes[0].matches[1].headers[0].value",
            "is not a valid regular expression",
        ),
        ([{"paths": [{"type": "prefix", "value": "v1"}]}], ".paths[0].value", "starts with '/'"),
        (
            [{"paths": [{"type": "exact", "value": "/a/../b"}]}],
            ".paths[0].value",
            "can never match a request",
        ),
        (
            [{"paths": [{"type": "exact", "value": "/%7Ea"}]}],
            ".paths[0].value",
            "canonical form '/~a'",
        ),
        ([{"paths": [{"type": "glob", "value": "/a"}]}], ".paths[0].type", "expected one of"),
        ([{"methods": ["GET /"]}], ".methods[0]", "is not an HTTP method"),
        ([{"headers": [{"name": "X Y", "value": "1"}]}], ".headers[0].name", "header name"),
        ([{"paths": []}], ".matches[0].paths", "non-empty list"),
        ([], "$.egress.routes[0].matches", "non-empty list"),
        ([{"path": [{"type": "exact", "value": "/"}]}], ".matches[0]", "unknown keys ['path']"),
    ],
)
def test_bad_matches_are_refused_naming_the_route_and_key(
    matches: list[Any], path: str, words: str
) -> None:
    with pytest.raises(PolicyError) as caught:
        _policy({"host": "a.example", "matches": matches})
    assert caught.value.path.endswith(path), caught.value.path
    assert words in caught.value.message
    assert caught.value.message.startswith("route 0 (host a.example): ")


def test_policy_from_dict_refuses_http_rules_for_routes_it_does_not_have() -> None:
    data = _policy().to_dict()
    with pytest.raises(ValueError, match="not a route of this policy"):
        policy_from_dict({**data, "http": {"evil.test": [{"methods": ["GET"]}]}})
    with pytest.raises(ValueError, match="not a route of this policy"):
        policy_from_dict({**data, "http": {"*.api.example.com": [{"methods": ["GET"]}]}})
    with pytest.raises(ValueError, match="expected a mapping"):
        policy_from_dict({**data, "http": [1]})


# --------------------------------------------------------------------------- semantics


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/", "/"),
        ("/v1/x?q=1&r=/../", "/v1/x"),
        ("/v1/%7Efoo", "/v1/~foo"),
        ("/a%2db", "/a-b"),
        ("/a%20b", "/a%20b"),
        ("/a%3fb", "/a%3Fb"),
        ("*", "*"),
        ("/a//b", "/a//b"),
    ],
)
def test_request_path_is_canonical(target: str, expected: str) -> None:
    assert request_path(target) == expected


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ("/v1/../admin", "'.' or '..' segment"),
        ("/v1/./x", "'.' or '..' segment"),
        ("/v1/%2e%2E/admin", "'.' or '..' segment"),
        ("/v1/..", "'.' or '..' segment"),
        ("/v1%2fadmin", "encoded '/'"),
        ("/v1%5Cadmin", "encoded '/'"),
        ("/v1\\admin", "holds '\\\\'"),
        ("/v1#x", "holds '#'"),
        ("/a%zz", "broken percent escape"),
        ("/a%4", "broken percent escape"),
        ("/a b", "holds ' '"),
        ("/caf\u00e9", "holds"),
        ("v1/x", "does not start with '/'"),
        ("http://a.example/x", "does not start with '/'"),
    ],
)
def test_ambiguous_request_paths_are_refused(target: str, words: str) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        request_path(target)


@pytest.mark.parametrize(
    ("kind", "value", "yes", "no"),
    [
        ("exact", "/v1", ["/v1"], ["/v1/", "/v10", "/v", "/V1"]),
        ("prefix", "/v1", ["/v1", "/v1/", "/v1/a/b"], ["/v10", "/v", "/x/v1"]),
        ("prefix", "/v1/", ["/v1/", "/v1/a"], ["/v1", "/v10"]),
        ("prefix", "/", ["/", "/anything"], []),
        ("regex", "/items/[0-9]+", ["/items/1", "/items/42"], ["/items/42/x", "/x/items/4"]),
        ("regex", "/items/[0-9]+", [], ["/items/", "/items/4x", "/items/4\n"]),
        ("regex", "/a|/b", ["/a", "/b"], ["/ab", "/a/b", "/bb"]),  # alternation is anchored
    ],
)
def test_path_predicates(kind: str, value: str, yes: list[str], no: list[str]) -> None:
    [entry] = compile_matches([{"paths": [{"type": kind, "value": value}]}])
    for path in yes:
        assert entry.matches("GET", path, []), path
    for path in no:
        assert not entry.matches("GET", path, []), path


def test_method_and_header_predicates() -> None:
    [entry] = compile_matches(
        [
            {
                "methods": ["get", "POST"],
                "headers": [
                    {"name": "X-Team", "value": "blue"},
                    {"name": "x-ver", "type": "regex", "value": "v[0-9]"},
                ],
            }
        ]
    )
    good = [("x-team", "blue"), ("X-Ver", "v2")]
    assert entry.matches("GET", "/", good) and entry.matches("post", "/", good)
    assert not entry.matches("DELETE", "/", good)
    assert not entry.matches("GET", "/", [("X-Team", "blue")])  # a header is missing
    assert not entry.matches("GET", "/", [("X-Team", "Blue"), ("X-Ver", "v2")])  # exact
    assert not entry.matches("GET", "/", [("X-Team", "blue"), ("X-Ver", "v2x")])  # full match
    assert not entry.matches("GET", "/", [*good, ("X-Team", "red")])  # every copy must match
    [anything] = compile_matches([{}])
    assert anything.matches("BREW", "/pot", [])


# --------------------------------------------------------------------------- check_request


def _check(host: str, method: str, path: str, headers: list[tuple[str, str]] | None = None) -> Any:
    target = _egress.parse_authority(f"{host}:443")
    return _egress.check_request(_config(), target, method=method, path=path, headers=headers or [])


def test_check_request_admits_what_an_entry_admits_and_names_the_route_otherwise() -> None:
    assert _check("api.example.com", "GET", "/v1/x?a=1") == "api.example.com"
    assert _check("api.example.com", "POST", "/items/7") == "api.example.com"
    assert _check("api.example.com", "GET", "/hdr", [("X-Team", "blue"), ("X-Ver", "v1")])
    assert _check("x.example.com", "GET", "/any") == "*.example.com"
    assert _check("a.deep.example.com", "DELETE", "/../x") == "*.deep.example.com"  # no matches
    ip = _egress.parse_authority("203.0.113.9:443")
    assert _egress.check_request(_config(), ip, method="PUT", path="/", headers=[]) is None
    for host, method, path, route in (
        ("api.example.com", "GET", "/v10", "api.example.com"),
        ("api.example.com", "DELETE", "/v1/x", "api.example.com"),
        ("api.example.com", "POST", "/items/7/x", "api.example.com"),
        ("api.example.com", "GET", "/hdr", "api.example.com"),
        ("x.example.com", "POST", "/", "*.example.com"),
    ):
        with pytest.raises(_egress.RefusedError) as caught:
            _check(host, method, path + "?secret=1")
        assert (caught.value.status, caught.value.rule) == (403, _egress.NO_ROUTE_MATCH)
        assert f"route {route}" in caught.value.reason
        assert f"{method} {path}?[redacted]" in caught.value.reason
        assert "secret" not in caught.value.reason


def test_check_request_refuses_ambiguous_paths_only_where_paths_are_matched() -> None:
    with pytest.raises(_egress.RefusedError) as caught:
        _check("api.example.com", "GET", "/v1/%2e%2e/admin")
    assert (caught.value.status, caught.value.rule) == (400, _egress.AMBIGUOUS_PATH)
    assert "route api.example.com" in caught.value.reason
    assert _check("x.example.com", "GET", "/v1/../x") == "*.example.com"  # methods only


# --------------------------------------------------------------------------- config


def test_the_config_carries_the_matches_and_refuses_a_tampered_copy() -> None:
    data = _egress.render_config(_policy(), "172.30.0.2")
    assert data["format"] == _egress.CONFIG_FORMAT == 3
    assert data["policy"]["http"]["*.example.com"] == [{"methods": ["GET"]}]
    assert _egress.config_from_dict(json.loads(_egress.dumps_config(data))).policy == _policy()
    tampered = json.loads(json.dumps(data))
    tampered["policy"]["http"]["*.example.com"] = [{"methods": ["GET", "POST"]}]
    with pytest.raises(_egress.ConfigError, match="does not match its routes"):
        _egress.config_from_dict(tampered)
    bad_regex = json.loads(json.dumps(data))
    bad_regex["policy"]["http"]["*.example.com"] = [{"paths": [{"type": "regex", "value": "("}]}]
    with pytest.raises(_egress.ConfigError, match=r"policy: .*not a valid regular expression"):
        _egress.config_from_dict(bad_regex)
    with pytest.raises(_egress.ConfigError, match="another version of bot-bottle"):
        _egress.config_from_dict({**data, "format": 1})


# --------------------------------------------------------------------------- log lines


def test_log_levels() -> None:
    for event, lowest in (
        ("refused", 1),
        ("error", 1),
        ("start", 1),
        ("request", 2),
        ("response", 2),
        ("connect", 2),
        ("websocket_message", 2),
    ):
        assert _egress.log_line(0, event, {}, now=1.0) is None  # 0 writes nothing
        for level in (1, 2):
            line = _egress.log_line(level, event, {"host": "a:443"}, now=1.5)
            if level < lowest:
                assert line is None, (event, level)
            else:
                assert line is not None
                assert json.loads(line) == {
                    "event": event,
                    "host": "a:443",
                    "source": "egress-proxy",
                    "time": 1.5,
                }


def test_secrets_and_queries_never_reach_a_log_line() -> None:
    secret = "s3cr3t-token-value"
    line = _egress.log_line(
        2,
        "refused",
        {
            "reason": f"Host {secret}.x.example does not match",
            "path": _egress.log_target(f"/p/{secret}?token={secret}"),
            "nested": [{"v": f"a{secret}b"}],
            "status": 403,
        },
        now=0.0,
        secrets=[secret, "s3cr3t", ""],
    )
    assert line is not None and "s3cr3t" not in line
    entry = json.loads(line)
    assert entry["path"] == "/p/[redacted]?[redacted]"
    assert entry["reason"] == "Host [redacted].x.example does not match"
    assert entry["nested"] == [{"v": "a[redacted]b"}] and entry["status"] == 403
    assert _egress.log_target("/a/b") == "/a/b"
    assert _egress.log_target("/a?") == "/a"
    assert _egress.redact("abc", []) == "abc"


# --------------------------------------------------------------------------- the addon


@pytest.fixture(autouse=True)
def fake_mitmproxy(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("mitmproxy")
    module.http = types.SimpleNamespace(Response=Response)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mitmproxy", module)


def _addon(log: int, log_file: str | None = None) -> _egress_addon.EgressAddon:
    addon = _egress_addon.EgressAddon(resolve=resolve, out=io.StringIO())
    policy = _policy(
        {
            "host": "api.example.com",
            "matches": [{"paths": [{"type": "prefix", "value": "/v1"}], "methods": ["GET"]}],
        },
        log=log,
    )
    addon.config = _egress.config_from_dict(
        _egress.render_config(policy, "172.30.0.2", log_file=log_file)
    )
    return addon


def _lines(addon: _egress_addon.EgressAddon) -> list[dict[str, Any]]:
    assert isinstance(addon._out, io.StringIO)
    return [json.loads(line) for line in addon._out.getvalue().splitlines()]


def _inner(method: str, path: str, **extra: Any) -> Flow:
    return Flow(host="api.example.com", port=443, hosts=["api.example.com"], method=method,
                path=path, **extra)  # fmt: skip


def test_the_addon_answers_403_for_a_request_no_entry_admits() -> None:
    addon = _addon(2)
    connect(addon, "api.example.com:443")
    good = _inner("GET", "/v1/x?k=1")
    asyncio.run(addon.requestheaders(good))
    assert good.response is None and good.request.data.host == "198.51.100.7"
    for method, path in (("GET", "/admin"), ("POST", "/v1/x")):
        bad = _inner(method, path + "?k=1")
        asyncio.run(addon.requestheaders(bad))
        assert bad.response is not None and bad.response.status_code == 403
        assert bad.response.headers["x-bot-bottle-refused"] == "no-route-match"
        assert b"route api.example.com" in bad.response.content
        assert bad.request.data.host == "api.example.com"  # never pointed anywhere
        asyncio.run(addon.request(bad))  # the answer stands
        assert bad.response.status_code == 403
    good.response = Response(204, b"", {})
    asyncio.run(addon.response(good))
    refused_flow = _inner("GET", "/admin")
    refused_flow.metadata["bb_egress_refused"] = "no-route-match"
    refused_flow.response = Response(403, b"", {})
    # the proxy's own answer is logged once, as the refusal
    asyncio.run(addon.response(refused_flow))
    events = [(e["event"], e.get("path"), e.get("rule") or e.get("status")) for e in _lines(addon)]
    assert events == [
        ("connect", None, None),
        ("request", "/v1/x?[redacted]", None),
        ("refused", "/admin?[redacted]", "no-route-match"),
        ("refused", "/v1/x?[redacted]", "no-route-match"),
        ("response", "/v1/x?[redacted]", 204),
    ]
    request_line = _lines(addon)[1]
    assert request_line["route"] == "api.example.com"
    assert request_line["host"] == "api.example.com:443"
    assert request_line["http_version"] == "HTTP/1.1"


def test_the_addon_writes_the_log_file_at_levels_1_and_2_and_nothing_at_0(
    tmp_path: Path,
) -> None:
    for level in (0, 1, 2):
        path = tmp_path / f"egress{level}.jsonl"
        addon = _addon(level, str(path))
        addon.configure  # noqa: B018  (configure is mitmproxy's; the config is set above)
        connect(addon, "api.example.com:443")
        for target in ("/v1/ok", "/admin"):
            asyncio.run(addon.requestheaders(_inner("GET", target)))
        if level == 0:
            assert not path.exists()
            continue
        events = [json.loads(line)["event"] for line in path.read_text().splitlines()]
        expected = ["refused"] if level == 1 else ["connect", "request", "refused"]
        assert events == expected, (level, events)


def test_the_addon_redacts_its_secrets_and_survives_an_unwritable_log(tmp_path: Path) -> None:
    addon = _addon(2)
    addon.secrets = ("v1-secret",)
    connect(addon, "api.example.com:443")
    asyncio.run(addon.requestheaders(_inner("GET", "/v1/v1-secret")))
    assert "v1-secret" not in addon._out.getvalue()  # type: ignore[union-attr]
    assert any(e.get("path") == "/v1/[redacted]" for e in _lines(addon))
    broken = _addon(2, str(tmp_path / "missing-dir" / "egress.jsonl"))
    connect(broken, "api.example.com:443")
    flow = _inner("GET", "/admin")
    asyncio.run(broken.requestheaders(flow))
    assert flow.response is not None and flow.response.status_code == 403  # still decided


# --------------------------------------------------------------------------- audit


def test_proxy_log_lines_become_audit_records_marked_by_source() -> None:
    found = parse_egress(PROXY_LOG.splitlines())
    assert [(r.name, r.qtype, r.verdict, r.source) for r in found] == [
        ("api.example.com", "POST", "no-route-match", "egress-proxy"),
        ("evil.test", "CONNECT", "host-not-in-routes", "egress-proxy"),
        ("2001:db8::1", "GET", "forwarded", "egress-proxy"),
        ("api.example.com", "GET", "200", "egress-proxy"),
        ("?", "TLS", "internal-error", "egress-proxy"),
    ]
    assert found[0].time == "2026-11-28T13:20:00Z"
    detail = dict(found[0].detail)
    assert detail["path"] == "/admin?[redacted]" and detail["rule"] == "no-route-match"
    assert "cookie" not in detail and "hook" not in detail


def test_a_missing_proxy_log_is_no_entries(tmp_path: Path) -> None:
    source = egress_source(str(tmp_path / "none.jsonl"))
    assert source({}) == ([], {})
