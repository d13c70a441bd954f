"""The egress addon's adaptation of mitmproxy hooks, with stand-ins for mitmproxy's
objects (egress_fakes.py: mitmproxy itself runs only in the proxy image; the integration
tests run the real one). What matters here: decisions reach the flow, every upstream
connection is one a checked request approved, and any exception closes instead of
passing."""

from __future__ import annotations

import asyncio
import io
import json
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.botbottle.bottle.plugins.module_utils import _egress, _egress_addon
from ansible_collections.botbottle.bottle.plugins.module_utils._policy import build_policy
from ansible_collections.botbottle.bottle.tests.unit.plugins.module_utils.egress_fakes import (
    Flow,
    OptionsError,
    connect,
    fake_mitmproxy,
    log,
    resolve,
    tls,
)

__all__ = ["fake_mitmproxy"]  # the stand-in mitmproxy, autouse here

POLICY = build_policy(["api.example.com"], ["cdn.example.net"], ["203.0.113.0/24"], log=2)


@pytest.fixture
def addon() -> Iterator[_egress_addon.EgressAddon]:
    out = io.StringIO()
    instance = _egress_addon.EgressAddon(resolve=resolve, out=out)
    instance.config = _egress.config_from_dict(_egress.render_config(POLICY, "172.30.0.2"))
    yield instance


def request(addon: _egress_addon.EgressAddon, flow: Flow) -> Flow:
    asyncio.run(addon.requestheaders(flow))
    asyncio.run(addon.request(flow))
    return flow


def server(client: str, host: str, port: int) -> types.SimpleNamespace:
    return types.SimpleNamespace(
        client=types.SimpleNamespace(id=client),
        server=types.SimpleNamespace(address=(host, port), sni=None, error=None),
    )


def test_an_allowed_tunnel_is_pinned_and_its_requests_go_to_the_checked_address(
    addon: _egress_addon.EgressAddon,
) -> None:
    flow = connect(addon, "api.example.com:443")
    assert flow.response is None and not flow.killed
    hello = tls("c1", "api.example.com")
    addon.tls_clienthello(hello)
    assert hello.ignore_connection is False
    addon.tls_start_client(hello)
    assert hello.ssl_conn == "context"
    inner = request(
        addon, Flow(host="api.example.com", port=443, hosts=["api.example.com"], scheme="https")
    )
    assert inner.response is None and not inner.killed
    assert (inner.request.data.host, inner.request.data.port) == ("198.51.100.7", 443)
    data = server("c1", "198.51.100.7", 443)
    addon.server_connect(data)
    assert data.server.error is None and data.server.sni == "api.example.com"
    start = types.SimpleNamespace(
        context=types.SimpleNamespace(client=types.SimpleNamespace(id="c1")),
        conn=data.server,
        ssl_conn="upstream",
    )
    addon.tls_start_server(start)
    assert start.ssl_conn == "upstream"
    events = [e["event"] for e in log(addon)]
    assert events == ["connect", "request"]


def test_refusals_are_answers_naming_the_rule(addon: _egress_addon.EgressAddon) -> None:
    flow = connect(addon, "evil.test:443")
    assert flow.response is not None and flow.response.status_code == 403
    assert flow.response.headers["x-bot-bottle-refused"] == "host-not-in-routes"
    assert b"host evil.test is not in the bottle's routes" in flow.response.content
    private = connect(addon, "priv.cdn.example.net:443", client="c2")
    assert private.response is not None
    assert private.response.headers["x-bot-bottle-refused"] == "private-answer"
    spoof = Flow("c3", authority="api.example.com:443", hosts=["a.cdn.example.net:443"])
    asyncio.run(addon.http_connect(spoof))
    assert spoof.response is not None and spoof.response.status_code == 400
    assert [e["rule"] for e in log(addon)] == [
        "host-not-in-routes",
        "private-answer",
        "host-mismatch",
    ]


def test_one_connect_per_client_connection(addon: _egress_addon.EgressAddon) -> None:
    connect(addon, "api.example.com:443")
    again = connect(addon, "a.cdn.example.net:443")
    assert again.response is not None and again.response.status_code == 400
    assert again.response.headers["x-bot-bottle-refused"] == "second-connect"
    h2 = Flow("c9", authority="api.example.com:443", http2=True)
    asyncio.run(addon.http_connect(h2))
    assert h2.response is not None and h2.response.status_code == 400


@pytest.mark.parametrize("sni", ["a.cdn.example.net", None])
def test_a_wrong_sni_gets_no_tls_and_no_upstream(
    addon: _egress_addon.EgressAddon, sni: str | None
) -> None:
    connect(addon, "api.example.com:443")
    hello = tls("c1", sni)
    addon.tls_clienthello(hello)
    addon.tls_start_client(hello)
    assert hello.ssl_conn is None
    data = server("c1", "api.example.com", 443)
    addon.server_connect(data)
    assert data.server.error


def test_tls_without_connect_is_refused(addon: _egress_addon.EgressAddon) -> None:
    hello = tls("c5", "api.example.com")
    addon.tls_clienthello(hello)
    addon.tls_start_client(hello)
    assert hello.ssl_conn is None


def test_requests_naming_another_host_are_refused_without_closing_the_connection(
    addon: _egress_addon.EgressAddon,
) -> None:
    connect(addon, "api.example.com:443")
    bad = request(addon, Flow(host="a.cdn.example.net", port=443, hosts=["a.cdn.example.net"]))
    assert bad.response is not None and bad.response.status_code == 421
    assert bad.request.data.host == "a.cdn.example.net"  # never re-pointed
    good = request(addon, Flow(host="api.example.com", port=443, hosts=["api.example.com"]))
    assert good.response is None


def test_only_approved_upstream_connections_open(addon: _egress_addon.EgressAddon) -> None:
    connect(addon, "api.example.com:443")
    for address in (("api.example.com", 443), ("198.51.100.7", 443), ("198.51.100.8", 443)):
        data = server("c1", *address)
        addon.server_connect(data)
        assert data.server.error and "no checked request approved" in data.server.error
    flow = Flow(host="api.example.com", port=443, hosts=["api.example.com"])
    flow.metadata["bb_egress_target"] = "api.example.com:443"
    asyncio.run(addon.request(flow))  # requestheaders never ran: not approved
    assert flow.response is not None and flow.response.status_code == 403


def test_plain_http_requests_resolve_check_and_pin(addon: _egress_addon.EgressAddon) -> None:
    flow = request(
        addon,
        Flow("p1", host="a.cdn.example.net", port=80, hosts=["a.cdn.example.net"], scheme="http"),
    )
    assert flow.response is None
    assert flow.request.data.host == "198.51.100.8"
    data = server("p1", "198.51.100.8", 80)
    addon.server_connect(data)
    assert data.server.error is None
    literal = request(
        addon, Flow("p1", host="203.0.113.5", port=80, hosts=["203.0.113.5"], scheme="http")
    )
    assert literal.response is None and literal.request.data.host == "203.0.113.5"
    https = request(addon, Flow("p1", host="api.example.com", port=443, hosts=["api.example.com"]))
    assert https.response is not None and https.response.status_code == 400


@pytest.mark.parametrize("hook", ["tcp_start", "tcp_message", "udp_start", "dns_request"])
def test_non_http_is_killed_and_closes_the_client_connection(
    addon: _egress_addon.EgressAddon, hook: str
) -> None:
    connect(addon, "api.example.com:443")
    flow = Flow()
    getattr(addon, hook)(flow)
    assert flow.killed
    if hook == "tcp_message":
        assert flow.messages[-1].content == b""
    data = server("c1", "198.51.100.7", 443)
    addon.server_connect(data)
    assert data.server.error and "non-HTTP traffic inside CONNECT api.example.com:443" in (
        data.server.error
    )


def boom(*_: Any, **__: Any) -> Any:
    raise RuntimeError("boom")


def test_an_exception_while_connecting_kills_the_flow(
    addon: _egress_addon.EgressAddon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(addon, "_resolve", boom)
    flow = connect(addon, "api.example.com:443")
    assert flow.killed and flow.response is None
    data = server("c1", "198.51.100.7", 443)
    addon.server_connect(data)
    assert data.server.error and "internal error" in data.server.error
    assert log(addon)[-1]["rule"] == "internal-error"


def test_an_exception_in_a_request_kills_it_and_the_connection(
    addon: _egress_addon.EgressAddon, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect(addon, "api.example.com:443")
    real = _egress.request_target
    monkeypatch.setattr(_egress, "request_target", boom)
    flow = Flow(host="api.example.com", port=443, hosts=["api.example.com"])
    asyncio.run(addon.requestheaders(flow))
    assert flow.killed
    monkeypatch.setattr(_egress, "request_target", real)
    later = request(addon, Flow(host="api.example.com", port=443, hosts=["api.example.com"]))
    assert later.response is not None and later.response.status_code == 500


def test_an_exception_at_the_client_hello_withholds_tls(
    addon: _egress_addon.EgressAddon, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect(addon, "api.example.com:443")
    monkeypatch.setattr(_egress, "check_sni", boom)
    hello = tls("c1", "api.example.com")
    addon.tls_clienthello(hello)
    addon.tls_start_client(hello)
    assert hello.ssl_conn is None


def test_exceptions_in_connection_hooks_fail_closed(addon: _egress_addon.EgressAddon) -> None:
    broken = types.SimpleNamespace(context=None, ssl_conn="context", conn=None)
    addon.tls_start_client(broken)
    assert broken.ssl_conn is None
    broken.ssl_conn = "upstream"
    addon.tls_start_server(broken)
    assert broken.ssl_conn is None
    data = types.SimpleNamespace(client=None, server=types.SimpleNamespace(error=None))
    addon.server_connect(data)
    assert data.server.error and "internal error" in data.server.error


def test_upstream_tls_with_another_sni_is_withheld(addon: _egress_addon.EgressAddon) -> None:
    connect(addon, "api.example.com:443")
    request(addon, Flow(host="api.example.com", port=443, hosts=["api.example.com"]))
    start = types.SimpleNamespace(
        context=types.SimpleNamespace(client=types.SimpleNamespace(id="c1")),
        conn=types.SimpleNamespace(address=("198.51.100.7", 443), sni="a.cdn.example.net"),
        ssl_conn="upstream",
    )
    addon.tls_start_server(start)
    assert start.ssl_conn is None


def test_websockets_pass_and_an_exception_kills_them(addon: _egress_addon.EgressAddon) -> None:
    flow = Flow()
    flow.metadata["bb_egress_target"] = "api.example.com:443"
    asyncio.run(addon.websocket_message(flow))
    assert not flow.killed
    broken = Flow()
    broken.client_conn = None  # type: ignore[assignment]
    asyncio.run(addon.websocket_message(broken))
    assert broken.killed


def test_without_a_configuration_everything_is_refused(addon: _egress_addon.EgressAddon) -> None:
    addon.config = None
    flow = connect(addon, "api.example.com:443")
    assert flow.response is not None and flow.response.status_code == 503


def test_configure_loads_the_file_or_stops_the_proxy(
    tmp_path: Path, fake_mitmproxy: types.SimpleNamespace
) -> None:
    path = tmp_path / "config.json"
    path.write_text(_egress.dumps_config(_egress.render_config(POLICY, "172.30.0.2")))
    addon = _egress_addon.EgressAddon(out=io.StringIO())
    loader = types.SimpleNamespace(options={})
    loader.add_option = lambda name, typ, default, help: loader.options.update({name: default})
    addon.load(loader)
    assert loader.options == {"bb_egress_config": _egress.CONTAINER_CONFIG}
    fake_mitmproxy.options.bb_egress_config = str(path)
    addon.configure({"bb_egress_config"})
    assert addon.config is not None and addon.config.policy == POLICY
    assert log(addon)[0] == {
        "event": "start",
        "policy": POLICY.digest,
        "source": "egress-proxy",
        "time": log(addon)[0]["time"],
    }
    path.write_text("{}")
    with pytest.raises(OptionsError, match="format"):
        addon.configure({"bb_egress_config"})
    assert addon.config is None
    addon.configure({"connection_strategy"})  # other options change nothing


def test_log_levels_and_log_file(addon: _egress_addon.EgressAddon, tmp_path: Path) -> None:
    quiet = _egress.config_from_dict(
        _egress.render_config(
            build_policy(["api.example.com"], log=1),
            "172.30.0.2",
            log_file=str(tmp_path / "e.jsonl"),
        )
    )
    addon.config = quiet
    connect(addon, "api.example.com:443")  # allowed: level 2, not logged
    connect(addon, "evil.test:443", client="c2")
    lines = (tmp_path / "e.jsonl").read_text().splitlines()
    assert [json.loads(line)["rule"] for line in lines] == ["host-not-in-routes"]
    assert json.loads(lines[0])["host"] == "evil.test:443"  # what the audit shows


def test_client_state_is_dropped_on_disconnect(addon: _egress_addon.EgressAddon) -> None:
    connect(addon, "api.example.com:443")
    assert "c1" in addon.clients
    addon.client_disconnected(types.SimpleNamespace(id="c1"))
    assert addon.clients == {}
