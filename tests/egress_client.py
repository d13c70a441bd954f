"""The client side of the egress proxy tests: an agent's requests, one probe at a time.

Runs inside the egress proxy image (Python 3.13 and mitmproxy's virtualenv, for the
``h2`` package) on the test network: ``python3 egress_client.py '<probe as JSON>'``
prints one JSON object. Every probe talks to the proxy the way an agent does
(CONNECT then TLS with the bottle's CA, or plain ``GET http://...``) and reports
what came back - statuses, bodies, the origin's echo, or how the connection ended -
so the test decides what it means. Nothing here judges.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import ssl
import sys
import time
from typing import Any

TIMEOUT = 10.0


def _read_response(stream: Any) -> dict[str, Any]:
    """One HTTP/1.1 response from a file object: status, headers, body."""
    status_line = stream.readline()
    if not status_line:
        raise ConnectionError("connection closed before a response")
    parts = status_line.decode("latin-1").split(" ", 2)
    headers: list[tuple[str, str]] = []
    while True:
        line = stream.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name.strip().lower(), value.strip()))
    values = dict(headers)
    if values.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int(stream.readline().split(b";")[0].strip(), 16)
            if size == 0:
                stream.readline()
                break
            body += stream.read(size)
            stream.readline()
    elif "content-length" in values:
        body = stream.read(int(values["content-length"]))
    elif int(parts[1]) in (101, 204, 304):
        body = b""
    else:
        body = stream.read()
    return {"status": int(parts[1]), "headers": headers, "body": body.decode("utf-8", "replace")}


def _tls_context(probe: dict[str, Any], alpn: list[str] | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=probe["ca"])
    if probe.get("sni", "") is None:
        context.check_hostname = False
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


def _connect(probe: dict[str, Any]) -> tuple[socket.socket, dict[str, Any]]:
    """A CONNECT through the proxy: the socket and the proxy's answer."""
    host, port = probe["proxy"].rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
    authority = probe["authority"]
    host_header = probe.get("connect_host", authority)
    sock.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {host_header}\r\n\r\n".encode("latin-1"))
    reader = sock.makefile("rb")
    answer = _read_connect_answer(reader)
    return sock, answer


def _read_connect_answer(reader: Any) -> dict[str, Any]:
    status_line = reader.readline()
    if not status_line:
        raise ConnectionError("proxy closed the connection on CONNECT")
    status = int(status_line.split(b" ", 2)[1])
    headers: list[tuple[str, str]] = []
    while True:
        line = reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name.strip().lower(), value.strip()))
    values = dict(headers)
    body = b""
    if status != 200 and "content-length" in values:
        body = reader.read(int(values["content-length"]))
    return {"status": status, "headers": headers, "body": body.decode("utf-8", "replace")}


def _wrap(sock: socket.socket, probe: dict[str, Any], alpn: list[str] | None) -> ssl.SSLSocket:
    authority = probe["authority"]
    default_sni = authority.rsplit(":", 1)[0].strip("[]")
    sni = probe.get("sni", default_sni)
    return _tls_context(probe, alpn).wrap_socket(sock, server_hostname=sni)


def _request_bytes(request: dict[str, Any]) -> bytes:
    lines = [f"{request.get('method', 'GET')} {request.get('target', '/')} HTTP/1.1"]
    hosts = request["host"] if isinstance(request.get("host"), list) else [request.get("host")]
    lines += [f"Host: {h}" for h in hosts if h is not None]
    lines += [f"{k}: {v}" for k, v in request.get("headers", [])]
    body = base64.b64decode(request["body_b64"]) if "body_b64" in request else b""
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


def _exchange(stream_sock: Any, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    reader = stream_sock.makefile("rb")
    results: list[dict[str, Any]] = []
    for request in requests:
        try:
            stream_sock.sendall(_request_bytes(request))
            response = _read_response(reader)
            with contextlib.suppress(ValueError):
                response["echo"] = json.loads(response["body"])
            results.append(response)
        except (OSError, ValueError, IndexError) as exc:
            results.append({"error": f"{type(exc).__name__}: {exc}"})
            break
    return results


def probe_https(probe: dict[str, Any]) -> dict[str, Any]:
    sock, answer = _connect(probe)
    result: dict[str, Any] = {"connect": answer}
    if answer["status"] != 200:
        sock.close()
        return result
    try:
        tls = _wrap(sock, probe, probe.get("alpn", ["http/1.1"]))
    except (OSError, ssl.SSLError) as exc:
        result["tls_error"] = f"{type(exc).__name__}: {exc}"
        return result
    result["responses"] = _exchange(tls, probe["requests"])
    tls.close()
    return result


def probe_plain(probe: dict[str, Any]) -> dict[str, Any]:
    host, port = probe["proxy"].rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
    result = {"responses": _exchange(sock, probe["requests"])}
    sock.close()
    return result


def probe_h2(probe: dict[str, Any]) -> dict[str, Any]:
    import h2.config  # noqa: PLC0415
    import h2.connection  # noqa: PLC0415
    import h2.events  # noqa: PLC0415

    sock, answer = _connect(probe)
    result: dict[str, Any] = {"connect": answer, "streams": []}
    if answer["status"] != 200:
        return result
    tls = _wrap(sock, probe, ["h2"])
    result["alpn"] = tls.selected_alpn_protocol()
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    tls.sendall(conn.data_to_send())
    for authority in probe["authorities"]:
        stream_id = conn.get_next_available_stream_id()
        conn.send_headers(
            stream_id,
            [(":method", "GET"), (":scheme", "https"), (":authority", authority), (":path", "/")],
            end_stream=True,
        )
        tls.sendall(conn.data_to_send())
        stream: dict[str, Any] = {"authority": authority, "body": ""}
        done = False
        while not done:
            try:
                data = tls.recv(65535)
            except OSError as exc:
                stream["error"] = f"{type(exc).__name__}: {exc}"
                break
            if not data:
                stream["error"] = "connection closed"
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream_id:
                    stream["status"] = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived) and event.stream_id == stream_id:
                    stream["body"] += event.data.decode("utf-8", "replace")
                    conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream_id:
                    done = True
                elif isinstance(event, h2.events.StreamReset) and event.stream_id == stream_id:
                    stream["reset"] = int(event.error_code)
                    done = True
                elif isinstance(event, h2.events.ConnectionTerminated):
                    stream["error"] = "connection terminated"
                    done = True
            tls.sendall(conn.data_to_send())
        result["streams"].append(stream)
        if "error" in stream:
            break
    tls.close()
    return result


def _ws_frame(text: str) -> bytes:
    payload = text.encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


def probe_ws(probe: dict[str, Any]) -> dict[str, Any]:
    sock, answer = _connect(probe)
    result: dict[str, Any] = {"connect": answer}
    if answer["status"] != 200:
        return result
    tls = _wrap(sock, probe, ["http/1.1"])
    key = base64.b64encode(os.urandom(16)).decode()
    host = probe["authority"].rsplit(":", 1)[0]
    tls.sendall(
        f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    reader = tls.makefile("rb")
    result["upgrade"] = _read_response(reader)
    if result["upgrade"]["status"] != 101:
        return result
    tls.sendall(_ws_frame(probe.get("message", "hello")))
    head = reader.read(2)
    result["message"] = reader.read(head[1] & 0x7F).decode() if len(head) == 2 else None
    tls.close()
    return result


def probe_raw(probe: dict[str, Any]) -> dict[str, Any]:
    sock, answer = _connect(probe)
    result: dict[str, Any] = {"connect": answer}
    if answer["status"] != 200:
        return result
    stream: Any = sock
    if probe.get("tls", True):
        try:
            stream = _wrap(sock, probe, None)
        except (OSError, ssl.SSLError) as exc:
            result["tls_error"] = f"{type(exc).__name__}: {exc}"
            return result
    received = b""
    try:
        stream.sendall(probe.get("payload", "\x00\x01SSH-2.0-not-http\r\n").encode("latin-1"))
        stream.settimeout(5.0)
        while True:
            data = stream.recv(65535)
            if not data:
                result["closed"] = True
                break
            received += data
    except TimeoutError:
        result["closed"] = False
    except (OSError, ssl.SSLError) as exc:
        result["closed"] = True
        result["error"] = f"{type(exc).__name__}: {exc}"
    result["received"] = received.decode("latin-1")
    return result


def probe_direct(probe: dict[str, Any]) -> dict[str, Any]:
    """Straight to an origin, no proxy (the control that it answers at all)."""
    host, port = probe["address"].rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
    stream: Any = sock
    if probe.get("tls", True):
        stream = _tls_context(probe, ["http/1.1"]).wrap_socket(
            sock, server_hostname=probe.get("sni")
        )
    return {"responses": _exchange(stream, probe["requests"])}


def _open_direct(probe: dict[str, Any], host: str) -> ssl.SSLSocket:
    """HTTP/1.1 over TLS straight to the origin at ``address`` (no proxy), trusting
    ``direct_ca``, with SNI ``host``: the benchmarks' baseline."""
    addr, port = probe["address"].rsplit(":", 1)
    sock = socket.create_connection((addr, int(port)), timeout=TIMEOUT)
    context = _tls_context({**probe, "ca": probe["direct_ca"]}, ["http/1.1"])
    return context.wrap_socket(sock, server_hostname=host)


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

    return {"n": len(ordered), "p50_ms": pick(0.50), "p99_ms": pick(0.99)}


def probe_bench(probe: dict[str, Any]) -> dict[str, Any]:
    """Latency of ``count`` HTTPS GETs: through the proxy and straight to the origin,
    each on one kept-alive connection and with a new connection per request."""
    count = int(probe["count"])
    host = probe["authority"].rsplit(":", 1)[0]
    request = f"GET /bench HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()

    def open_proxied() -> ssl.SSLSocket:
        sock, answer = _connect(probe)
        assert answer["status"] == 200, answer
        return _wrap(sock, probe, ["http/1.1"])

    def open_direct() -> ssl.SSLSocket:
        return _open_direct(probe, host)

    def one(stream: ssl.SSLSocket, reader: Any) -> None:
        stream.sendall(request)
        assert _read_response(reader)["status"] == 200

    result: dict[str, Any] = {}
    for label, opener in (("proxy", open_proxied), ("direct", open_direct)):
        stream = opener()
        reader = stream.makefile("rb")
        one(stream, reader)  # warm-up
        samples = []
        for _ in range(count):
            start = time.perf_counter()
            one(stream, reader)
            samples.append(time.perf_counter() - start)
        stream.close()
        result[f"{label}_keepalive"] = _percentiles(samples)
        samples = []
        for _ in range(max(count // 4, 1)):
            start = time.perf_counter()
            stream = opener()
            one(stream, stream.makefile("rb"))
            samples.append(time.perf_counter() - start)
            stream.close()
        result[f"{label}_new_connection"] = _percentiles(samples)
    return result


def probe_env(probe: dict[str, Any]) -> dict[str, Any]:
    """What an ordinary client does with nothing but the process's environment: urllib
    takes the proxy from ``HTTPS_PROXY``/``HTTP_PROXY`` and the default TLS context the
    trust store (``SSL_CERT_FILE``, the system bundle). No proxy or CA is passed here."""
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    responses: list[dict[str, Any]] = []
    for url in probe["urls"]:
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:
                body = answer.read().decode("utf-8", "replace")
                response: dict[str, Any] = {"status": answer.status, "body": body}
        except urllib.error.HTTPError as exc:
            response = {
                "status": exc.code,
                "headers": [(k.lower(), v) for k, v in exc.headers.items()],
                "body": exc.read().decode("utf-8", "replace"),
            }
        except (OSError, ValueError) as exc:
            responses.append({"error": f"{type(exc).__name__}: {exc}"})
            continue
        with contextlib.suppress(ValueError):
            response["echo"] = json.loads(response["body"])
        responses.append(response)
    return {"responses": responses, "proxies": urllib.request.getproxies()}


def probe_tcp(probe: dict[str, Any]) -> dict[str, Any]:
    """A bare TCP connection to ``address`` (no proxy): did it open, and if not, how it
    failed and how long that took."""
    host, port = probe["address"].rsplit(":", 1)
    start = time.monotonic()
    try:
        socket.create_connection((host, int(port)), timeout=float(probe.get("timeout", 3))).close()
    except OSError as exc:
        return {
            "connected": False,
            "error": f"{type(exc).__name__}: {exc}",
            "seconds": round(time.monotonic() - start, 3),
        }
    return {"connected": True, "seconds": round(time.monotonic() - start, 3)}


def probe_latency(probe: dict[str, Any]) -> dict[str, Any]:
    """Raw timings for the benchmark (the runner computes the figures): ``count`` HTTPS
    GETs on one kept-alive connection and ``new`` GETs each on a new connection, then
    ``threads`` kept-alive connections sending GETs for ``seconds`` (requests/s).
    ``mode`` ``proxy``: CONNECT through ``proxy`` with ``ca``; ``direct``: straight to
    ``address`` with ``direct_ca``. Samples are in seconds."""
    import threading  # noqa: PLC0415

    host = probe["authority"].rsplit(":", 1)[0]
    request = f"GET /bench HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()

    def opener() -> ssl.SSLSocket:
        if probe["mode"] == "proxy":
            sock, answer = _connect(probe)
            if answer["status"] != 200:
                raise ConnectionError(f"CONNECT answered {answer['status']}: {answer['body']}")
            return _wrap(sock, probe, ["http/1.1"])
        return _open_direct(probe, host)

    def one(stream: ssl.SSLSocket, reader: Any) -> None:
        stream.sendall(request)
        status = _read_response(reader)["status"]
        if status != 200:
            raise ConnectionError(f"the origin answered {status}")

    stream = opener()
    reader = stream.makefile("rb")
    one(stream, reader)  # warm-up
    keepalive = []
    for _ in range(int(probe["count"])):
        start = time.perf_counter()
        one(stream, reader)
        keepalive.append(time.perf_counter() - start)
    stream.close()
    new = []
    for _ in range(int(probe.get("new", 0))):
        start = time.perf_counter()
        stream = opener()
        one(stream, stream.makefile("rb"))
        new.append(time.perf_counter() - start)
        stream.close()
    counts: list[int] = []
    errors: list[str] = []
    streams = [opener() for _ in range(int(probe.get("threads", 0)))]
    deadline = time.perf_counter() + float(probe.get("seconds", 0))

    def load(stream: ssl.SSLSocket) -> None:
        done, reader = 0, stream.makefile("rb")
        try:
            while time.perf_counter() < deadline:
                one(stream, reader)
                done += 1
        except (OSError, ConnectionError, ValueError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        counts.append(done)
        stream.close()

    started = time.perf_counter()
    workers = [threading.Thread(target=load, args=(s,)) for s in streams]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    return {
        "keepalive_s": keepalive,
        "new_connection_s": new,
        "load": {"requests": sum(counts), "seconds": elapsed, "threads": len(streams)},
        "errors": errors,
    }


def probe_body_latency(probe: dict[str, Any]) -> dict[str, Any]:
    """Raw timings for the DLP benchmark: ``big`` POSTs of ``size`` bytes (a JSON
    document of text), then ``small`` GETs, each on one kept-alive connection through
    ``proxy``; samples in seconds."""
    host = probe["authority"].rsplit(":", 1)[0]
    filler = ("lorem ipsum dolor sit amet " * (int(probe["size"]) // 27 + 1))[: int(probe["size"])]
    body = json.dumps({"text": filler}).encode()
    post = (
        f"POST /upload HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    get = f"GET /small?q=hello HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n\r\n".encode()
    sock, answer = _connect(probe)
    if answer["status"] != 200:
        raise ConnectionError(f"CONNECT answered {answer['status']}")
    stream = _wrap(sock, probe, ["http/1.1"])
    reader = stream.makefile("rb")
    out: dict[str, list[float]] = {"big": [], "small": []}
    for kind, request, count in (("big", post, probe["big"]), ("small", get, probe["small"])):
        for _ in range(int(count) + 1):  # the first is a warm-up
            start = time.perf_counter()
            stream.sendall(request)
            status = _read_response(reader)["status"]
            if status != 200:
                raise ConnectionError(f"{kind}: the proxy or origin answered {status}")
            out[kind].append(time.perf_counter() - start)
        out[kind] = out[kind][1:]
    stream.close()
    return out


PROBES = {
    "https": probe_https,
    "plain": probe_plain,
    "h2": probe_h2,
    "ws": probe_ws,
    "raw": probe_raw,
    "direct": probe_direct,
    "bench": probe_bench,
    "env": probe_env,
    "tcp": probe_tcp,
    "latency": probe_latency,
    "body_latency": probe_body_latency,
}

if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    try:
        out = PROBES[spec["kind"]](spec)
    except (OSError, ssl.SSLError) as exc:
        out = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(out))
