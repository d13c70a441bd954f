"""The proxy checks' client (module_utils/_proxy_check.py) on loopback: what it sends
and how it reports what came back. It judges nothing (_probe.evaluate does)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from dnslib import QTYPE, RR, A, DNSRecord

from ansible_collections.botbottle.bottle.plugins.module_utils import _proxy_check


def test_the_dns_query_asks_for_the_a_records_of_the_name() -> None:
    query = DNSRecord.parse(_proxy_check.dns_query("api.example.test", 0x1234))
    assert query.header.id == 0x1234 and query.header.rd == 1
    assert str(query.q.qname) == "api.example.test." and query.q.qtype == QTYPE.A


def test_the_answers_are_the_ipv4_addresses_of_the_response() -> None:
    query = DNSRecord.parse(_proxy_check.dns_query("api.example.test", 7))
    reply = query.reply()
    reply.add_answer(RR("api.example.test", QTYPE.A, rdata=A("198.51.100.7"), ttl=60))
    reply.add_answer(RR("api.example.test", QTYPE.A, rdata=A("198.51.100.8"), ttl=60))
    assert _proxy_check.dns_answers(bytes(reply.pack()), 7) == (
        "NOERROR",
        ["198.51.100.7", "198.51.100.8"],
    )
    nx = query.reply()
    nx.header.rcode = 3
    assert _proxy_check.dns_answers(bytes(nx.pack()), 7) == ("NXDOMAIN", [])


def test_a_response_to_another_query_is_refused() -> None:
    reply = DNSRecord.parse(_proxy_check.dns_query("a.test", 7)).reply()
    try:
        _proxy_check.dns_answers(bytes(reply.pack()), 8)
    except ValueError as exc:
        assert "not the response" in str(exc)
    else:
        raise AssertionError("a response to another query was accepted")


@contextmanager
def _proxy(answer: bytes) -> Iterator[tuple[str, list[bytes]]]:
    """A loopback "proxy" that reads one request head and sends ``answer``."""
    server = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            seen.append(data)
            conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}", seen
    finally:
        thread.join(5)
        server.close()


def _spec(proxy: str) -> dict[str, object]:
    return {"proxy": proxy, "port": 443, "timeout": 2.0}


def test_a_refused_literal_connect_reports_the_proxys_rule() -> None:
    answer = (
        b"HTTP/1.1 403 Forbidden\r\nx-bot-bottle-refused: ip-not-covered\r\n"
        b"content-length: 0\r\n\r\n"
    )
    with _proxy(answer) as (proxy, seen):
        out = _proxy_check.literal(_spec(proxy), "198.51.100.7")
    assert out == {
        "address": "198.51.100.7",
        "outcome": "connect-refused",
        "status": 403,
        "rule": "ip-not-covered",
    }
    assert seen[0].startswith(b"CONNECT 198.51.100.7:443 HTTP/1.1\r\n")


def test_an_accepted_literal_connect_is_a_tunnel() -> None:
    with _proxy(b"HTTP/1.1 200 Connection established\r\n\r\n") as (proxy, _seen):
        out = _proxy_check.literal(_spec(proxy), "198.51.100.7")
    assert out["outcome"] == "tunnel" and out["status"] == 200 and out["rule"] == ""


def test_direct_connections_report_how_they_ended() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    try:
        assert _proxy_check.direct("127.0.0.1", port, 2.0)["outcome"] == "connected"
    finally:
        server.close()
    closed = _proxy_check.direct("127.0.0.1", port, 2.0)
    assert closed["outcome"] == "refused" and closed["address"] == "127.0.0.1"


def test_an_unreachable_proxy_is_said_so() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.close()
    spec = {**_spec(f"127.0.0.1:{port}"), "host": "api.example.test", "ca": "/nonexistent"}
    out = _proxy_check.exchange(spec, "api.example.test")
    assert out["outcome"] == "proxy-unreachable" and "ConnectionRefusedError" in out["error"]


def test_the_request_is_the_planned_method_path_and_headers_after_host() -> None:
    spec = {
        "method": "HEAD",
        "path": "/api/bottle-verify-x",
        "headers": [["user-agent", "agent/1.0"], ["connection", "close"], ["x-v", "2"]],
    }
    assert _proxy_check.request_head(spec, "api.example.test") == (
        b"HEAD /api/bottle-verify-x HTTP/1.1\r\nHost: api.example.test\r\n"
        b"user-agent: agent/1.0\r\nconnection: close\r\nx-v: 2\r\n\r\n"
    )
    # without them (an older spec): GET with the verifier's own User-Agent
    assert _proxy_check.request_head({"path": "/p"}, "other.test") == (
        b"GET /p HTTP/1.1\r\nHost: other.test\r\n"
        b"User-Agent: bottle-verify\r\nConnection: close\r\n\r\n"
    )
