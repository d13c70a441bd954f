"""Every decision of the egress proxy (module_utils/_egress.py), without mitmproxy."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import socketserver
import stat
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dnslib import AAAA, CNAME, QTYPE, RCODE, RR, A, DNSRecord

from ansible_collections.botbottle.bottle.plugins.module_utils import _egress
from ansible_collections.botbottle.bottle.plugins.module_utils._egress import (
    Authority,
    ConfigError,
    RefusedError,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._policy import build_policy

POLICY = build_policy(
    ["api.example.com", "xn--bcher-kva.example"],
    ["cdn.example.net"],
    ["203.0.113.0/24", "10.20.0.0/16", "2001:db8:5::/48"],
    log=1,
)
CONFIG = _egress.config_from_dict(
    _egress.render_config(POLICY, "172.30.0.2", refused_networks=["172.30.0.1", "10.20.9.0/24"])
)
V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address


def refused(call: Any, *args: Any, **kwargs: Any) -> RefusedError:
    with pytest.raises(RefusedError) as info:
        call(*args, **kwargs)
    return info.value


# --------------------------------------------------------------------------- authorities


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("api.example.com:443", Authority("api.example.com", 443)),
        ("API.Example.COM.:443", Authority("api.example.com", 443)),
        ("bücher.example:443", Authority("xn--bcher-kva.example", 443)),
        ("xn--BCHER-kva.example:1", Authority("xn--bcher-kva.example", 1)),
        ("203.0.113.7:65535", Authority("203.0.113.7", 65535, V4("203.0.113.7"))),
        ("[2001:DB8::1]:443", Authority("2001:db8::1", 443, V6("2001:db8::1"))),
        ("0x7f.0.0.1:80", Authority("0x7f.0.0.1", 80)),  # a name (which no route allows)
    ],
)
def test_authorities_are_canonical(raw: str, expected: Authority) -> None:
    assert _egress.parse_authority(raw) == expected


def test_default_port_is_used_only_when_the_port_is_absent() -> None:
    assert _egress.parse_authority("api.example.com", 443).port == 443
    assert _egress.parse_authority("[2001:db8::1]", 80).port == 80
    assert _egress.parse_authority("api.example.com:8443", 443).port == 8443
    assert "no port" in refused(_egress.parse_authority, "api.example.com").reason


def test_netloc_brackets_ipv6_only() -> None:
    assert _egress.parse_authority("[2001:db8::1]:443").netloc == "[2001:db8::1]:443"
    assert _egress.parse_authority("api.example.com:443").netloc == "api.example.com:443"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("api.example.com\x00.evil.test:443", "control character '\\x00'"),
        ("api.example.com\r\n:443", "control character"),
        ("api.example.com\x7f:443", "control character"),
        ("api .example.com:443", "space"),
        ("api.example.com%2e:443", "'%'"),
        ("[fe80::1%25eth0]:443", "'%'"),
        ("api.example.com:0", "port 0 is not a port"),
        ("api.example.com:00", "port 0 is not a port"),
        ("api.example.com:0443", "without leading zeros"),
        ("api.example.com:65536", "from 1 to 65535"),
        ("api.example.com:+443", "from 1 to 65535"),
        ("api.example.com:", "from 1 to 65535"),
        ("api.example.com:443:1", "in brackets"),
        ("2001:db8::1:443", "in brackets"),
        ("[2001:db8::1:443", "'[' without ']'"),
        ("[2001:db8::1]443", "follows the IPv6 address"),
        ("[203.0.113.7]:443", "not an IPv6 address"),
        ("1.2.3:443", "not a dotted-quad"),
        ("127.1:443", "not a dotted-quad"),
        ("010.0.0.1:443", "not a dotted-quad"),
        (":443", "the host is empty"),
        (".:443", "the host is empty"),
        ("a..b:443", "not a valid DNS label"),
        ("_dmarc.cdn.example.net:443", "not a valid DNS label"),
        ("user@api.example.com:443", "not a valid DNS label"),
        ("-a.example:443", "not a valid DNS label"),
        ("\udcff.example:443", "no IDNA A-label form"),
        ("a" * 64 + ".example:443", "not a valid DNS label"),
    ],
)
def test_malformed_authorities_are_refused_saying_why(raw: str, why: str) -> None:
    exc = refused(_egress.parse_authority, raw)
    assert exc.status == 400
    assert exc.rule == _egress.BAD_AUTHORITY
    assert why in exc.reason


def test_sni_parses_like_a_host_without_port() -> None:
    assert _egress.parse_sni("API.example.com.") == Authority("api.example.com", 0)
    for bad in ("api.example.com:443", "[::1]", "a b", "a\x00b"):
        assert refused(_egress.parse_sni, bad).status == 400


# --------------------------------------------------------------------------- routes


@pytest.mark.parametrize(
    "name",
    ["api.example.com", "a.cdn.example.net", "a.b.c.cdn.example.net", "xn--bcher-kva.example"],
)
def test_names_in_the_routes_pass(name: str) -> None:
    _egress.check_destination(CONFIG, _egress.parse_authority(f"{name}:443"))


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("evil.test", ""),
        ("example.com", ""),
        ("www.example.com", ""),
        ("x.api.example.com", "api.example.com is an exact route"),
        ("cdn.example.net", "*.cdn.example.net allows the names below cdn.example.net"),
        ("evilcdn.example.net", ""),
        ("cdn.example.net.evil.test", ""),
        ("api.example.com.evil.test", ""),
    ],
)
def test_names_outside_the_routes_are_refused_naming_the_rule(name: str, hint: str) -> None:
    exc = refused(_egress.check_destination, CONFIG, _egress.parse_authority(f"{name}:443"))
    assert (exc.status, exc.rule) == (403, _egress.HOST_NOT_IN_ROUTES)
    assert exc.reason.startswith(f"host {name} is not in the bottle's routes")
    assert hint in exc.reason


def test_connect_target_parses_then_checks() -> None:
    assert _egress.connect_target(CONFIG, "API.example.com:443").host == "api.example.com"
    assert refused(_egress.connect_target, CONFIG, "api.example.com").status == 400
    assert refused(_egress.connect_target, CONFIG, "evil.test:443").status == 403


@pytest.mark.parametrize("address", ["203.0.113.9", "10.20.1.1", "2001:db8:5::7"])
def test_ip_literals_covered_by_a_cidr_route_pass(address: str) -> None:
    _egress.check_ip(CONFIG, ipaddress.ip_address(address))


@pytest.mark.parametrize(
    ("address", "rule", "words"),
    [
        ("198.51.100.1", _egress.IP_NOT_COVERED, "not covered by a cidr route"),
        ("2001:db8:6::1", _egress.IP_NOT_COVERED, "not covered by a cidr route"),
        ("127.0.0.1", _egress.NEVER_REACHED, "loopback"),
        ("::1", _egress.NEVER_REACHED, "loopback"),
        ("169.254.169.254", _egress.NEVER_REACHED, "metadata"),
        ("fe80::1", _egress.NEVER_REACHED, "link-local"),
        ("::ffff:127.0.0.1", _egress.NEVER_REACHED, "IPv4-mapped"),
        ("172.30.0.1", _egress.NEVER_REACHED, "gateway or the host"),
        ("10.20.9.3", _egress.NEVER_REACHED, "gateway or the host"),  # inside a cidr route
    ],
)
def test_ip_literals_outside_cidr_routes_or_never_routed_are_refused(
    address: str, rule: str, words: str
) -> None:
    exc = refused(_egress.check_ip, CONFIG, ipaddress.ip_address(address))
    assert (exc.status, exc.rule) == (403, rule)
    assert words in exc.reason


def test_a_wide_route_opens_no_never_routed_network() -> None:
    wide = build_policy(cidrs=["0.0.0.0/0", "::/0"])
    config = _egress.config_from_dict(_egress.render_config(wide, "172.30.0.2"))
    _egress.check_ip(config, V4("198.51.100.1"))
    for address in ("127.0.0.1", "169.254.169.254", "::1", "::ffff:127.0.0.1", "100.100.100.200"):
        exc = refused(_egress.check_ip, config, ipaddress.ip_address(address))
        assert exc.rule == _egress.NEVER_REACHED


# --------------------------------------------------------------------------- answers


def test_public_and_covered_answers_pass_and_the_first_is_pinned() -> None:
    answers = [V4("198.51.100.7"), V4("203.0.113.8")]
    assert _egress.choose_address(CONFIG, "api.example.com", answers) == answers[0]
    assert _egress.choose_address(CONFIG, "api.example.com", [V4("10.20.3.4")]) == V4("10.20.3.4")
    assert _egress.choose_address(CONFIG, "x", [V6("2606:4700::1")]) == V6("2606:4700::1")


@pytest.mark.parametrize(
    ("address", "rule", "words"),
    [
        ("10.1.2.3", _egress.PRIVATE_ANSWER, "private (RFC 1918)"),
        ("172.16.0.1", _egress.PRIVATE_ANSWER, "private (RFC 1918)"),
        ("192.168.1.1", _egress.PRIVATE_ANSWER, "private (RFC 1918)"),
        ("100.64.0.1", _egress.PRIVATE_ANSWER, "CGNAT"),
        ("fd00::1", _egress.PRIVATE_ANSWER, "unique local"),
        ("64:ff9b::a00:1", _egress.PRIVATE_ANSWER, "NAT64"),
        ("2002:a00:1::1", _egress.PRIVATE_ANSWER, "6to4"),
        ("224.0.0.1", _egress.PRIVATE_ANSWER, "multicast"),
        ("127.0.0.1", _egress.NEVER_REACHED, "loopback"),
        ("0.0.0.0", _egress.NEVER_REACHED, "unspecified"),
        ("169.254.169.254", _egress.NEVER_REACHED, "metadata"),
        ("fd00:ec2::254", _egress.NEVER_REACHED, "metadata"),
        ("172.30.0.1", _egress.NEVER_REACHED, "gateway or the host"),
    ],
)
def test_closed_answers_are_refused_naming_the_range(address: str, rule: str, words: str) -> None:
    exc = refused(
        _egress.choose_address, CONFIG, "api.example.com", [ipaddress.ip_address(address)]
    )
    assert (exc.status, exc.rule) == (403, rule)
    assert exc.reason.startswith(f"host api.example.com resolved to {address}, which is")
    assert words in exc.reason


def test_one_closed_answer_refuses_the_name_and_none_is_502() -> None:
    mixed = [V4("198.51.100.7"), V4("127.0.0.1")]
    assert refused(_egress.choose_address, CONFIG, "a", mixed).rule == _egress.NEVER_REACHED
    exc = refused(_egress.choose_address, CONFIG, "a", [])
    assert (exc.status, exc.rule) == (502, _egress.NO_ADDRESS)


# --------------------------------------------------------------------------- one identity

TUNNEL = Authority("api.example.com", 443)
IP_TUNNEL = Authority("203.0.113.9", 443, V4("203.0.113.9"))


def test_sni_must_name_the_connect_host() -> None:
    _egress.check_sni(TUNNEL, "api.example.com")
    _egress.check_sni(TUNNEL, "API.example.com.")
    exc = refused(_egress.check_sni, TUNNEL, "a.cdn.example.net")
    assert exc.rule == _egress.SNI_MISMATCH
    assert exc.reason == "SNI a.cdn.example.net does not match CONNECT api.example.com"
    assert refused(_egress.check_sni, TUNNEL, None).rule == _egress.SNI_MISSING
    assert refused(_egress.check_sni, TUNNEL, "").rule == _egress.SNI_MISSING
    assert refused(_egress.check_sni, TUNNEL, "a b").rule == _egress.SNI_MISMATCH


def test_an_ip_literal_tunnel_carries_no_sni() -> None:
    _egress.check_sni(IP_TUNNEL, None)
    assert refused(_egress.check_sni, IP_TUNNEL, "api.example.com").rule == _egress.SNI_ON_IP


def target(tunnel: Authority | None, **kwargs: Any) -> Authority:
    values: dict[str, Any] = {
        "scheme": "https",
        "url_host": "api.example.com",
        "url_port": 443,
        "host_headers": ["api.example.com"],
        "authority": "",
    }
    values.update(kwargs)
    return _egress.request_target(CONFIG, tunnel, **values)


def test_requests_in_a_tunnel_name_the_tunnel() -> None:
    assert target(TUNNEL) == TUNNEL
    assert target(TUNNEL, host_headers=["API.example.com.:443"]) == TUNNEL
    assert target(TUNNEL, host_headers=[], authority="api.example.com") == TUNNEL  # HTTP/2
    assert target(IP_TUNNEL, url_host="203.0.113.9", host_headers=["203.0.113.9"]) == IP_TUNNEL


@pytest.mark.parametrize(
    ("kwargs", "status", "rule", "words"),
    [
        ({"host_headers": ["a.cdn.example.net"]}, 421, _egress.HOST_MISMATCH,
         "Host a.cdn.example.net does not match the TLS SNI and CONNECT host api.example.com:443"),
        ({"host_headers": ["api.example.com:8443"]}, 421, _egress.HOST_MISMATCH, "8443"),
        ({"host_headers": [], "authority": "a.cdn.example.net"}, 421, _egress.HOST_MISMATCH,
         "the request's authority a.cdn.example.net does not match"),
        ({"authority": "a.cdn.example.net"}, 421, _egress.HOST_MISMATCH, "authority"),
        ({"host_headers": ["api.example.com", "api.example.com"]}, 400, _egress.HOST_HEADERS,
         "2 Host headers"),
        ({"host_headers": []}, 400, _egress.HOST_HEADERS, "no Host header"),
        ({"host_headers": ["api.example.com\x00x"]}, 400, _egress.BAD_AUTHORITY, "control"),
        ({"scheme": "http", "host_headers": ["evil.test"]}, 421, _egress.HOST_MISMATCH,
         "does not match CONNECT api.example.com:443"),
    ],
)  # fmt: skip
def test_requests_naming_another_host_in_a_tunnel_are_refused(
    kwargs: dict[str, Any], status: int, rule: str, words: str
) -> None:
    exc = refused(target, TUNNEL, **kwargs)
    assert (exc.status, exc.rule) == (status, rule)
    assert words in exc.reason


def test_plain_http_requests_are_checked_like_connect() -> None:
    plain = {"scheme": "http", "url_port": 80}
    assert target(None, **plain) == Authority("api.example.com", 80)
    assert target(None, **plain, url_host="203.0.113.9", host_headers=["203.0.113.9"]).ip
    exc = refused(target, None, **plain, url_host="evil.test", host_headers=["evil.test"])
    assert exc.rule == _egress.HOST_NOT_IN_ROUTES
    exc = refused(target, None, **plain, host_headers=["a.cdn.example.net"])
    assert (exc.status, exc.rule) == (400, _egress.URL_HOST_MISMATCH)
    assert "the request URL's host api.example.com:80 does not match Host" in exc.reason
    exc = refused(target, None, **plain, url_host="::1", host_headers=["[::1]"])
    assert exc.rule == _egress.NEVER_REACHED


def test_https_without_connect_is_refused() -> None:
    exc = refused(target, None)
    assert (exc.status, exc.rule) == (400, _egress.HTTPS_WITHOUT_CONNECT)


# --------------------------------------------------------------------------- config


def test_config_round_trips_and_is_canonical(tmp_path: Path) -> None:
    data = _egress.render_config(POLICY, "172.30.0.2", ["172.30.0.1"], "/var/log/egress.jsonl")
    assert data["resolver"] == "172.30.0.2#53"
    assert data["refused_networks"] == ["172.30.0.1/32"]
    assert data["policy"] == POLICY.to_dict()
    path = tmp_path / "config.json"
    path.write_text(_egress.dumps_config(data))
    config = _egress.load_config(str(path))
    assert config.policy == POLICY and config.policy.digest == POLICY.digest
    assert config.resolver == ("172.30.0.2", 53)
    assert config.log_file == "/var/log/egress.jsonl"
    assert _egress.dumps_config(data).endswith("}\n")
    assert _egress.render_config(POLICY, "2001:db8::53#5353")["resolver"] == "2001:db8::53#5353"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"extra": 1}, "unknown keys ['extra']"),
        ({"format": 1}, "format: expected 3"),
        ({"policy": None}, "policy: expected the compiled policy"),
        (
            {"policy": {**POLICY.to_dict(), "exact_hosts": ["evil.test"]}},
            "does not match its routes",
        ),
        ({"policy": {**POLICY.to_dict(), "exact_hosts": ["1.2.3.4"]}}, "policy:"),
        ({"resolver": "dns.example"}, "resolver:"),
        ({"resolver": 53}, "resolver: expected"),
        ({"refused_networks": "10.0.0.0/8"}, "refused_networks: expected a list"),
        ({"refused_networks": ["x"]}, "'x' is not an address"),
        ({"log": {"file": "relative.log"}}, "log.file"),
        ({"log": {"level": 2}}, "log: expected"),
    ],
)
def test_bad_configs_are_refused_naming_the_key(change: dict[str, Any], words: str) -> None:
    data = {**_egress.render_config(POLICY, "172.30.0.2"), **change}
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        _egress.config_from_dict(data)


def test_unreadable_configs_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.json: cannot read"):
        _egress.load_config(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match=r"bad\.json: cannot read"):
        _egress.load_config(str(tmp_path / "bad.json"))
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ConfigError, match=r"list\.json: the configuration must be"):
        _egress.load_config(str(tmp_path / "list.json"))


# --------------------------------------------------------------------------- DNS


def reply(name: str, qtype: str, qid: int, records: list[RR], rcode: int = 0) -> bytes:
    query = DNSRecord.question(name, qtype)
    query.header.id = qid
    answer = query.reply()
    answer.header.rcode = rcode
    for record in records:
        answer.add_answer(record)
    return bytes(answer.pack())


def test_queries_are_well_formed() -> None:
    parsed = DNSRecord.parse(_egress.dns_query("api.example.com", _egress.QTYPE_AAAA, 4660))
    assert parsed.header.id == 4660 and parsed.header.rd == 1
    assert str(parsed.q.qname) == "api.example.com." and parsed.q.qtype == QTYPE.AAAA


def test_answers_follow_the_cname_chain() -> None:
    packet = reply(
        "API.example.com",
        "A",
        7,
        [
            RR("api.example.com", QTYPE.CNAME, rdata=CNAME("edge.cdn.example.net"), ttl=5),
            RR("other.example", QTYPE.A, rdata=A("192.0.2.66"), ttl=5),
            RR("edge.cdn.example.net", QTYPE.A, rdata=A("198.51.100.7"), ttl=5),
            RR("edge.cdn.example.net", QTYPE.A, rdata=A("198.51.100.8"), ttl=5),
        ],
    )
    assert _egress.dns_answers(packet, 7, "api.example.com", _egress.QTYPE_A) == [
        V4("198.51.100.7"),
        V4("198.51.100.8"),
    ]
    six = reply(
        "api.example.com", "AAAA", 8, [RR("api.example.com", QTYPE.AAAA, rdata=AAAA("2001:db8::1"))]
    )
    assert _egress.dns_answers(six, 8, "api.example.com", _egress.QTYPE_AAAA) == [V6("2001:db8::1")]
    empty = reply("api.example.com", "A", 9, [])
    assert _egress.dns_answers(empty, 9, "api.example.com", _egress.QTYPE_A) == []


@pytest.mark.parametrize(
    ("packet", "words"),
    [
        (reply("api.example.com", "A", 1, []), "not the answer to this query"),  # id 1 != 2
        (reply("api.example.com", "A", 2, [], rcode=RCODE.NXDOMAIN), "NXDOMAIN"),
        (reply("api.example.com", "A", 2, [], rcode=RCODE.SERVFAIL), "SERVFAIL"),
        (reply("other.example", "A", 2, []), "another question"),
        (reply("api.example.com", "AAAA", 2, []), "another question"),
        (b"\x00\x02\x81", "shorter than a DNS header"),
        (reply("api.example.com", "A", 2, [RR("api.example.com", QTYPE.A, rdata=A("1.2.3.4"))])
         [:-2], "ends inside"),
        (_egress.dns_query("api.example.com", 1, 2), "not the answer"),  # QR not set
        (struct.pack("!HHHHHH", 2, 0x8180, 1, 0, 0, 0) + b"\xc0\x0c", "compression loops"),
        (struct.pack("!HHHHHH", 2, 0x8180, 2, 0, 0, 0), "2 questions"),
    ],
)  # fmt: skip
def test_bad_answers_are_errors(packet: bytes, words: str) -> None:
    with pytest.raises(_egress.DnsError, match=words):
        _egress.dns_answers(packet, 2, "api.example.com", _egress.QTYPE_A)


def test_truncated_answers_ask_for_tcp() -> None:
    packet = bytearray(reply("api.example.com", "A", 3, []))
    packet[2] |= 0x02
    with pytest.raises(_egress.DnsTruncatedError):
        _egress.dns_answers(bytes(packet), 3, "api.example.com", _egress.QTYPE_A)


class _Resolver:
    """A loopback resolver for resolve(): answers from ``table``; ``truncate`` names get
    TC over UDP and the answer over TCP."""

    def __init__(self) -> None:
        self.table: dict[str, list[RR]] = {}
        self.truncate: set[str] = set()
        self.nxdomain: set[str] = set()
        self.silent: set[str] = set()
        self.tcp_queries = 0

    def answer(self, data: bytes, tcp: bool) -> bytes | None:
        query = DNSRecord.parse(data)
        name = str(query.q.qname).rstrip(".")
        if name in self.silent:
            return None
        response = query.reply()
        if name in self.nxdomain:
            response.header.rcode = RCODE.NXDOMAIN
        elif name in self.truncate and not tcp:
            response.header.tc = 1
        else:
            for record in self.table.get(name, []):
                if record.rtype == query.q.qtype:
                    response.add_answer(record)
        return bytes(response.pack())


@pytest.fixture
def resolver() -> Iterator[tuple[_Resolver, tuple[str, int]]]:
    state = _Resolver()

    class UDP(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            data, sock = self.request
            answer = state.answer(data, tcp=False)
            if answer is not None:
                sock.sendto(answer, self.client_address)

    class TCP(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            (length,) = struct.unpack("!H", self.request.recv(2))
            state.tcp_queries += 1
            answer = state.answer(self.request.recv(length), tcp=True) or b""
            self.request.sendall(struct.pack("!H", len(answer)) + answer)

    udp = socketserver.ThreadingUDPServer(("127.0.0.1", 0), UDP)
    port = udp.server_address[1]
    tcp = socketserver.ThreadingTCPServer(("127.0.0.1", port), TCP)
    for server in (udp, tcp):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state, ("127.0.0.1", port)
    for server in (udp, tcp):
        server.shutdown()
        server.server_close()


def test_resolve_asks_a_then_aaaa_and_falls_back_to_tcp(
    resolver: tuple[_Resolver, tuple[str, int]],
) -> None:
    state, address = resolver
    state.table["four.example"] = [RR("four.example", QTYPE.A, rdata=A("198.51.100.4"))]
    state.table["six.example"] = [RR("six.example", QTYPE.AAAA, rdata=AAAA("2001:db8::6"))]
    state.table["big.example"] = [RR("big.example", QTYPE.A, rdata=A("198.51.100.9"))]
    state.truncate.add("big.example")
    assert _egress.resolve("four.example", address) == [V4("198.51.100.4")]
    assert _egress.resolve("six.example", address) == [V6("2001:db8::6")]
    assert _egress.resolve("none.example", address) == []
    assert _egress.resolve("big.example", address) == [V4("198.51.100.9")]
    assert state.tcp_queries == 1


def test_resolver_failures_are_502_naming_the_resolver(
    resolver: tuple[_Resolver, tuple[str, int]],
) -> None:
    state, address = resolver
    state.nxdomain.add("gone.example")
    state.silent.add("slow.example")
    exc = refused(_egress.resolve, "gone.example", address)
    assert (exc.status, exc.rule) == (502, _egress.RESOLVER_FAILED)
    assert f"through the bottle's resolver 127.0.0.1#{address[1]}: NXDOMAIN" in exc.reason
    exc = refused(_egress.resolve, "slow.example", address, timeout=0.3)
    assert "did not answer in time" in exc.reason


def test_resolve_ignores_datagrams_with_another_id(
    resolver: tuple[_Resolver, tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, address = resolver
    state.table["four.example"] = [RR("four.example", QTYPE.A, rdata=A("198.51.100.4"))]
    real = socket.socket.recv
    calls = {"n": 0}

    def recv(self: socket.socket, size: int) -> bytes:
        calls["n"] += 1
        if calls["n"] == 1:
            return b"\xff\xff" + b"\x00" * 10  # a stray datagram: wrong id
        return real(self, size)

    monkeypatch.setattr(socket.socket, "recv", recv)
    assert _egress.resolve("four.example", address) == [V4("198.51.100.4")]


# --------------------------------------------------------------------------- CA


def test_ensure_ca_makes_the_confdir_once(tmp_path: Path) -> None:
    confdir = tmp_path / "ca"
    made = _egress.ensure_ca(str(confdir), "bot-bottle egress CA (unit)")
    assert made.changed and made.fingerprint.startswith("sha256:")
    combined = (confdir / _egress.CA_FILE).read_bytes()
    cert = (confdir / _egress.CA_CERT_FILE).read_bytes()
    assert b"PRIVATE KEY" in combined and cert in combined and b"PRIVATE" not in cert
    assert b"DH PARAMETERS" in (confdir / _egress.DHPARAM_FILE).read_bytes()
    assert stat.S_IMODE((confdir / _egress.CA_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(confdir.stat().st_mode) == 0o700
    assert sorted(p.name for p in confdir.iterdir()) == sorted(
        [_egress.CA_FILE, _egress.CA_CERT_FILE, _egress.DHPARAM_FILE]
    )
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-text", "-in", str(confdir / _egress.CA_CERT_FILE)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "CA:TRUE, pathlen:0" in text and "Certificate Sign, CRL Sign" in text
    assert "CN = bot-bottle egress CA (unit)" in text
    again = _egress.ensure_ca(str(confdir), "another name")
    assert not again.changed and again.fingerprint == made.fingerprint
    assert again.cert_pem == made.cert_pem == cert.decode()


def test_ensure_ca_remakes_an_inconsistent_confdir(tmp_path: Path) -> None:
    confdir = tmp_path / "ca"
    first = _egress.ensure_ca(str(confdir), "one")
    other = _egress.ensure_ca(str(tmp_path / "other"), "two")
    (confdir / _egress.CA_CERT_FILE).write_text(other.cert_pem)  # key and cert disagree
    assert _egress.read_ca(str(confdir)) is None
    remade = _egress.ensure_ca(str(confdir), "one")
    assert remade.changed and remade.fingerprint not in (first.fingerprint, other.fingerprint)


def test_ensure_ca_check_mode_writes_nothing(tmp_path: Path) -> None:
    state = _egress.ensure_ca(str(tmp_path / "ca"), "x", check_mode=True)
    assert state.changed and state.cert_pem == ""
    assert not (tmp_path / "ca").exists()


def test_ensure_ca_reports_openssl_failures(tmp_path: Path) -> None:
    def failing(argv: list[str], **_: Any) -> subprocess.CompletedProcess[bytes]:
        return subprocess.CompletedProcess(argv, 1, b"", b"no entropy")

    with pytest.raises(RuntimeError, match="openssl req failed: no entropy"):
        _egress.ensure_ca(str(tmp_path / "ca"), "x", run=failing)
    assert os.listdir(tmp_path / "ca") == []


@pytest.mark.parametrize("name", ["", "a\nb", "x" * 65, "evil $ENV", "a=b"])
def test_ca_common_names_are_plain(name: str) -> None:
    with pytest.raises(ValueError, match="common name"):
        _egress.ca_openssl_config(name)


def test_ca_files_insist_on_a_key_and_a_certificate(tmp_path: Path) -> None:
    made = _egress.ensure_ca(str(tmp_path / "ca"), "x")
    key = (tmp_path / "ca" / _egress.CA_FILE).read_bytes().split(b"-----BEGIN CERTIFICATE")[0]
    cert = made.cert_pem.encode()
    files = _egress.ca_files(key, cert)
    assert files[_egress.CA_CERT_FILE] == cert and files[_egress.CA_FILE] == key + cert
    with pytest.raises(ValueError):
        _egress.ca_files(cert, cert)
    with pytest.raises(ValueError):
        _egress.ca_files(key, key + cert)
    with pytest.raises(ValueError):
        _egress.fingerprint(b"nothing")


# --------------------------------------------------------------------------- container


def test_proxy_command_is_mitmdump_with_the_addon_built_in() -> None:
    argv = _egress.proxy_command()
    assert argv[:4] == ["python3", "-P", "-m", _egress.ADDON_MODULE]
    joined = " ".join(argv)
    for option in (
        "--mode regular",
        "--listen-host 0.0.0.0",
        "--listen-port 8080",
        f"confdir={_egress.CONTAINER_CONFDIR}",
        "connection_strategy=lazy",
        "http3=false",
        "onboarding=false",
        f"bb_egress_config={_egress.CONTAINER_CONFIG}",
    ):
        assert option in joined
    assert "-s" not in argv and "ssl_insecure" not in joined
    assert argv[-1] != "ssl_verify_upstream_trusted_ca=/x"
    assert _egress.proxy_command("/x")[-1] == "ssl_verify_upstream_trusted_ca=/x"


def test_proxy_code_files_are_the_four_modules_at_their_collection_path() -> None:
    files = _egress.proxy_code_files()
    here = Path(_egress.__file__).parent
    prefix = "ansible_collections/botbottle/bottle/plugins/module_utils/"
    assert sorted(files) == [
        prefix + n for n in ("_dlp.py", "_egress.py", "_egress_addon.py", "_policy.py")
    ]
    for rel, source in files.items():
        assert source == (here / rel.rsplit("/", 1)[1]).read_text()
    assert prefix.replace("/", ".") + "_egress_addon" == _egress.ADDON_MODULE


def test_the_code_imports_from_a_plain_folder(tmp_path: Path) -> None:
    """Written below a folder on PYTHONPATH (as mounted in the container), the three
    files import each other with no collection loader and no ansible installed."""
    for rel, source in _egress.proxy_code_files().items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(source)
    code = (
        "import sys, json\n"
        f"from {_egress.ADDON_MODULE.rsplit('.', 1)[0]} import _egress_addon\n"
        "assert 'ansible' not in sys.modules and 'mitmproxy' not in sys.modules\n"
        "print(json.dumps(_egress_addon._egress.__file__))\n"
    )
    done = subprocess.run(
        ["python3", "-I", "-c", f"import sys; sys.path[:0] = [{str(tmp_path)!r}]\n" + code],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout).startswith(str(tmp_path))


# --------------------------------------------------------------------------- private networks


def test_private_networks_admit_answers_for_names_never_literals_or_refused_ranges() -> None:
    plain = build_policy(["intranet.example"])
    data = _egress.render_config(
        plain,
        "172.30.0.2",
        refused_networks=["172.30.0.1", "172.30.0.0/16"],
        private_networks=["10.9.0.0/16", "172.30.5.0/24"],
    )
    assert data["private_networks"] == ["10.9.0.0/16", "172.30.5.0/24"]
    config = _egress.config_from_dict(data)
    # the control: without the setting the same answer is refused as private
    closed = _egress.config_from_dict(_egress.render_config(plain, "172.30.0.2"))
    exc = refused(_egress.check_answer, closed, "intranet.example", V4("10.9.1.2"))
    assert exc.rule == _egress.PRIVATE_ANSWER
    _egress.check_answer(config, "intranet.example", V4("10.9.1.2"))
    # a literal in the network is still refused: only names are admitted
    assert refused(_egress.check_ip, config, V4("10.9.1.2")).rule == _egress.IP_NOT_COVERED
    # refused networks win over private ones, and other private ranges stay closed
    exc = refused(_egress.check_answer, config, "intranet.example", V4("172.30.5.9"))
    assert exc.rule == _egress.NEVER_REACHED
    exc = refused(_egress.check_answer, config, "intranet.example", V4("10.10.0.1"))
    assert exc.rule == _egress.PRIVATE_ANSWER


@pytest.mark.parametrize(
    "network", ["127.0.0.0/8", "169.254.0.0/16", "0.0.0.0/0", "::1/128", "10.0.0.1/8", "x"]
)
def test_private_networks_never_include_never_routed_ranges(network: str) -> None:
    with pytest.raises(_egress.ConfigError, match="private_networks"):
        _egress.render_config(build_policy(["a.example"]), "172.30.0.2", private_networks=[network])


def test_the_hosts_log_floor_raises_the_manifests_level_never_lowers_it() -> None:
    quiet, loud = build_policy(["a.example"]), build_policy(["a.example"], log=2)
    assert _egress.config_from_dict(_egress.render_config(quiet, "172.30.0.2")).log_level == 0
    floored = _egress.config_from_dict(_egress.render_config(quiet, "172.30.0.2", log_minimum=1))
    assert floored.log_level == 1 and floored.policy == quiet  # the policy is unchanged
    kept = _egress.config_from_dict(_egress.render_config(loud, "172.30.0.2", log_minimum=1))
    assert kept.log_level == 2
    for bad in (3, -1, True, "1"):
        with pytest.raises(_egress.ConfigError, match=r"log\.minimum"):
            _egress.render_config(quiet, "172.30.0.2", log_minimum=bad)  # type: ignore[arg-type]
