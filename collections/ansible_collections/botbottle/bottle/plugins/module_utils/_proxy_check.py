# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The client of ``bottle verify``'s egress proxy checks: what an agent would try.

**PRIVATE** to the botbottle.bottle collection. Standard library only and no import
from the collection: the ``bottle_probe`` module runs this file's source with
``python3 -I -c SOURCE SPEC`` in a throw-away container of the egress proxy's image
that joins the agent's network namespace (:func:`._probe.proxy_run_argv`), and
prints one JSON object. It observes; it decides nothing (:func:`._probe.evaluate`
judges what it saw). ``SPEC`` is the JSON object :func:`._probe.plan_proxy_checks`
builds: ``proxy`` (``ADDRESS:PORT``), ``ca`` (the bottle CA file), ``resolver`` (the
bottle's resolver address), ``host`` and ``port`` (the allowed host), ``other`` (an
unlisted name, the fronting Host), ``method``, ``path`` and ``headers`` (the request,
one its route's ``matches`` admit), ``literals`` (IP literals to CONNECT after the
allowed host's own address) and ``timeout`` (seconds per step).

In order, so that each attack follows its positive control:

* ``resolved``: the allowed host's IPv4 addresses from the bottle's resolver (one
  UDP query, to the address given: the container's resolv.conf is not read);
* ``allowed``: CONNECT host:port through the proxy, TLS with SNI host verified
  against the bottle CA, ``method`` ``path`` with ``Host: host`` and ``headers``;
* ``mismatch``: the same, with ``Host: other``;
* ``direct``: a TCP connection to the first resolved address, port ``port``, without
  the proxy;
* ``literals``: CONNECT to the first resolved address, then to each of ``literals``.

A refusal of the proxy is told by its ``x-bot-bottle-refused`` header (the rule).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import ssl
import struct
import sys
from typing import Any

REFUSED_HEADER = "x-bot-bottle-refused"
DEFAULT_HEADERS = (("User-Agent", "bottle-verify"), ("Connection", "close"))


def dns_query(name: str, ident: int) -> bytes:
    """A recursive DNS query for the A records of ``name``."""
    labels = b"".join(
        bytes([len(part)]) + part.encode("ascii") for part in name.rstrip(".").split(".")
    )
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + b"\x00\x00\x01\x00\x01"


def _skip_name(data: bytes, offset: int) -> int:
    while True:
        length = data[offset]
        if length & 0xC0 == 0xC0:
            return offset + 2
        if length == 0:
            return offset + 1
        offset += 1 + length


def dns_answers(data: bytes, ident: int) -> tuple[str, list[str]]:
    """The rcode name and the IPv4 addresses of a response to :func:`dns_query`."""
    if len(data) < 12:
        raise ValueError("short DNS response")
    got, flags, qdcount, ancount = struct.unpack("!HHHH", data[:8])
    if got != ident or not flags & 0x8000:
        raise ValueError("not the response to this query")
    rcode = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}.get(
        flags & 0x0F, str(flags & 0x0F)
    )
    offset = 12
    for _ in range(qdcount):
        offset = _skip_name(data, offset) + 4
    addresses = []
    for _ in range(ancount):
        offset = _skip_name(data, offset)
        rtype, _rclass, _ttl, length = struct.unpack("!HHIH", data[offset : offset + 10])
        offset += 10
        if rtype == 1 and length == 4:
            addresses.append(socket.inet_ntoa(data[offset : offset + 4]))
        offset += length
    return rcode, addresses


def resolve(resolver: str, name: str, timeout: float) -> dict[str, Any]:
    ident = int.from_bytes(os.urandom(2), "big")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(dns_query(name, ident), (resolver, 53))
            data = sock.recv(4096)
            rcode, addresses = dns_answers(data, ident)
        except (OSError, ValueError, IndexError, struct.error) as exc:
            return {"outcome": "error", "error": f"{type(exc).__name__}: {exc}"}
    return {"outcome": "answer", "rcode": rcode, "addresses": addresses}


def _read_head(reader: Any) -> tuple[int, dict[str, str]]:
    line = reader.readline(8192)
    if not line:
        raise ConnectionError("closed before a response")
    parts = line.decode("latin-1").split(" ", 2)
    status = int(parts[1])
    headers: dict[str, str] = {}
    while True:
        raw = reader.readline(8192)
        if raw in (b"\r\n", b"\n", b""):
            return status, headers
        key, _, value = raw.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _connect(spec: dict[str, Any], authority: str) -> tuple[socket.socket | None, dict[str, Any]]:
    """A CONNECT ``authority`` through the proxy: the open tunnel, or what ended it."""
    address, port = str(spec["proxy"]).rsplit(":", 1)
    try:
        sock = socket.create_connection((address, int(port)), timeout=float(spec["timeout"]))
    except OSError as exc:
        return None, {"outcome": "proxy-unreachable", "error": _error(exc)}
    try:
        sock.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
        reader = sock.makefile("rb")
        status, headers = _read_head(reader)
    except (OSError, ValueError, IndexError) as exc:
        sock.close()
        return None, {"outcome": "error", "error": _error(exc)}
    connect = {"status": status, "rule": headers.get(REFUSED_HEADER, "")}
    if not 200 <= status < 300:
        sock.close()
        return None, {"outcome": "connect-refused", **connect}
    return sock, {"outcome": "tunnel", **connect}


def request_head(spec: dict[str, Any], host_header: str) -> bytes:
    """The request line and headers: ``method`` ``path``, ``Host: host_header``, then
    ``headers`` as given (name, value pairs; without them ``User-Agent: bottle-verify``
    and ``Connection: close``). No body."""
    headers = spec.get("headers") or DEFAULT_HEADERS
    lines = [f"{spec.get('method') or 'GET'} {spec['path']} HTTP/1.1", f"Host: {host_header}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def exchange(spec: dict[str, Any], host_header: str) -> dict[str, Any]:
    """CONNECT to the allowed host, TLS verified against the bottle CA, one request."""
    host = str(spec["host"])
    sock, connect = _connect(spec, f"{host}:{int(spec['port'])}")
    if sock is None:
        return connect
    try:
        context = ssl.create_default_context(cafile=str(spec["ca"]))
        context.set_alpn_protocols(["http/1.1"])
        tls = context.wrap_socket(sock, server_hostname=host)
    except (OSError, ssl.SSLError) as exc:
        sock.close()
        return {"outcome": "tls-failed", "error": _error(exc)}
    try:
        tls.sendall(request_head(spec, host_header))
        status, headers = _read_head(tls.makefile("rb"))
    except (OSError, ValueError, IndexError) as exc:
        return {"outcome": "closed", "error": _error(exc)}
    finally:
        tls.close()
    return {"outcome": "response", "status": status, "rule": headers.get(REFUSED_HEADER, "")}


def direct(address: str, port: int, timeout: float) -> dict[str, Any]:
    """A TCP connection straight to ``address``, around the proxy."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return {"address": address, "outcome": "connected"}
    except TimeoutError:
        return {"address": address, "outcome": "timeout"}
    except OSError as exc:
        kinds = {
            errno.ECONNREFUSED: "refused",
            errno.ENETUNREACH: "unreachable",
            errno.EHOSTUNREACH: "unreachable",
            errno.EPERM: "filtered",
            errno.EACCES: "filtered",
        }
        outcome = kinds.get(exc.errno or 0, "error")
        return {"address": address, "outcome": outcome, "error": _error(exc)}


def literal(spec: dict[str, Any], address: str) -> dict[str, Any]:
    """CONNECT to an IP literal; a tunnel is closed again at once."""
    sock, connect = _connect(spec, f"{address}:{int(spec['port'])}")
    if sock is not None:
        sock.close()
    return {"address": address, **connect}


def run(spec: dict[str, Any]) -> dict[str, Any]:
    timeout = float(spec["timeout"])
    resolved = resolve(str(spec["resolver"]), str(spec["host"]), timeout)
    out: dict[str, Any] = {"resolved": resolved}
    out["allowed"] = exchange(spec, str(spec["host"]))
    out["mismatch"] = exchange(spec, str(spec["other"]))
    first = (resolved.get("addresses") or [""])[0]
    out["direct"] = (
        direct(first, int(spec["port"]), timeout)
        if first
        else {"outcome": "no-address", "error": "the resolver gave no address"}
    )
    tried = dict.fromkeys(a for a in [first, *spec.get("literals", [])] if a)
    out["literals"] = [literal(spec, a) for a in tried]
    return out


def main(argv: list[str]) -> int:
    print(json.dumps(run(json.loads(argv[1])), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
