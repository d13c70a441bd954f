"""Stand-ins for the egress proxy's surroundings, for the tests of the addon
(module_utils/_egress_addon.py): mitmproxy's objects (mitmproxy itself runs only in the
proxy image), a resolver with fixed answers, flows and TLS hellos, and a log as the
proxy writes it. ``fake_mitmproxy`` is a fixture: a test module that imports it uses it
(it is autouse)."""

from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import sys
import types
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from ansible_collections.botbottle.bottle.plugins.module_utils import _egress_addon

ADDRESSES = {
    "api.example.com": ["198.51.100.7"],
    "a.cdn.example.net": ["198.51.100.8"],
    "priv.cdn.example.net": ["10.0.0.5"],
}


class Response:
    def __init__(self, status: int, content: bytes, headers: dict[str, str]) -> None:
        self.status_code, self.content, self.headers = status, content, headers

    @classmethod
    def make(cls, status: int, content: bytes, headers: dict[str, str]) -> Response:
        return cls(status, content, headers)


class OptionsError(Exception):
    pass


@pytest.fixture(autouse=True)
def fake_mitmproxy(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """``mitmproxy.http``, ``mitmproxy.ctx`` and ``mitmproxy.exceptions`` as the addon
    uses them."""
    ctx = types.SimpleNamespace(options=types.SimpleNamespace())
    module = types.ModuleType("mitmproxy")
    module.http = types.SimpleNamespace(Response=Response)  # type: ignore[attr-defined]
    module.ctx = ctx  # type: ignore[attr-defined]
    module.exceptions = types.SimpleNamespace(OptionsError=OptionsError)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mitmproxy", module)
    return ctx


def resolve(name: str, resolver: tuple[str, int]) -> Sequence[Any]:
    assert resolver == ("172.30.0.2", 53)
    return [ipaddress.ip_address(a) for a in ADDRESSES.get(name, [])]


def log(addon: _egress_addon.EgressAddon) -> list[dict[str, Any]]:
    out = addon._out
    assert isinstance(out, io.StringIO)
    return [json.loads(line) for line in out.getvalue().splitlines()]


class Flow:
    def __init__(
        self,
        client: str = "c1",
        *,
        authority: str = "",
        host: str = "",
        port: int = 443,
        hosts: Sequence[str] = (),
        scheme: str = "https",
        http2: bool = False,
        method: str = "GET",
        path: str = "/",
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.client_conn = types.SimpleNamespace(id=client)
        fields = [(b"Host", h.encode()) for h in hosts]
        fields += [(k.encode(), v.encode()) for k, v in headers]
        self.request = types.SimpleNamespace(
            data=types.SimpleNamespace(authority=authority.encode(), host=host, port=port),
            headers=types.SimpleNamespace(fields=fields),
            is_http2=http2,
            scheme=scheme,
            method=method,
            path=path,
            http_version="HTTP/2.0" if http2 else "HTTP/1.1",
            raw_content=b"",
        )
        self.metadata: dict[str, Any] = {}
        self.response: Response | None = None
        self.killed = False
        self.messages = [types.SimpleNamespace(content=b"payload")]
        self.websocket = types.SimpleNamespace(
            messages=[types.SimpleNamespace(content=b"payload", from_client=True)]
        )

    @property
    def killable(self) -> bool:
        return not self.killed

    def kill(self) -> None:
        self.killed = True


def connect(addon: _egress_addon.EgressAddon, authority: str, client: str = "c1") -> Flow:
    flow = Flow(client, authority=authority, hosts=[authority])
    asyncio.run(addon.http_connect(flow))
    return flow


def tls(client: str, sni: str | None) -> types.SimpleNamespace:
    return types.SimpleNamespace(
        context=types.SimpleNamespace(client=types.SimpleNamespace(id=client)),
        client_hello=types.SimpleNamespace(sni=sni),
        ignore_connection=True,
        ssl_conn="context",
    )


# The proxy's log as the audit reads it (one JSON object a line: the proxy's events, a
# line of another source, and a torn last line), and the time the audit is collected.
NOW = datetime(2026, 11, 28, 13, 30, tzinfo=UTC)
PROXY_LOG = "\n".join(
    [
        json.dumps({"event": "start", "policy": "sha256:x", "source": "egress-proxy", "time": 1}),
        json.dumps(
            {
                "event": "refused",
                "host": "api.example.com:443",
                "hook": "requestheaders",
                "method": "POST",
                "path": "/admin?[redacted]",
                "reason": "POST /admin?[redacted] matches no entry ... route api.example.com",
                "rule": "no-route-match",
                "source": "egress-proxy",
                "time": 1795872000.25,
                "cookie": "never copied",
            }
        ),
        json.dumps(
            {
                "event": "refused",
                "host": "evil.test:443",
                "hook": "http_connect",
                "rule": "host-not-in-routes",
                "reason": "r",
                "source": "egress-proxy",
                "time": 1795872001,
            }
        ),
        json.dumps(
            {
                "event": "request",
                "host": "[2001:db8::1]:443",
                "method": "GET",
                "path": "/",
                "source": "egress-proxy",
                "time": 1795872002,
            }
        ),
        json.dumps(
            {
                "event": "response",
                "host": "api.example.com:443",
                "method": "GET",
                "path": "/v1",
                "status": 200,
                "source": "egress-proxy",
                "time": 1795872003,
            }
        ),
        json.dumps(
            {
                "event": "error",
                "hook": "tls_clienthello",
                "rule": "internal-error",
                "reason": "boom",
                "source": "egress-proxy",
                "time": 1795872004,
            }
        ),
        json.dumps({"event": "other", "source": "dnsmasq"}),
        '{"event": "refused", "host": "torn',
    ]
)
