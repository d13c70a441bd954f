"""A test-owned origin server for the egress proxy tests: it echoes what it receives.

Runs inside the egress proxy image (Python 3.13, standard library only), on a test
network. HTTPS on one port (certificate from the test's own CA), plain HTTP on
another; every HTTP/1.1 request gets a JSON echo: method, target, headers in order,
body, the TLS SNI it was reached with, the peer address and the address it was
reached on. ``Upgrade: websocket``
requests are upgraded and every text or binary message is echoed back as
``echo:<message>``. Run: ``python3 egress_origin.py CERT KEY HTTPS_PORT HTTP_PORT [RECORD]``.

With ``RECORD`` (a file), every echo is also appended to it as a JSON line, and the
echo sent back shows the values of ``Authorization`` and ``Proxy-Authorization`` as
``[recorded]``: the test reads what the origin received from the file, and a client
never gets a credential the proxy added back in its answer.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import ssl
import struct
import sys
from typing import Any

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_SNI: dict[int, str | None] = {}
_RECORD: list[str] = []  # the record file, when one is given
_SEALED = ("authorization", "proxy-authorization")


def _answer(echo: dict[str, Any]) -> dict[str, Any]:
    """The echo as the client gets it: recorded in full first when there is a record."""
    if not _RECORD:
        return echo
    with open(_RECORD[0], "a", encoding="utf-8") as handle:
        handle.write(json.dumps(echo) + "\n")
    headers = [(k, "[recorded]" if k.lower() in _SEALED else v) for k, v in echo["headers"]]
    return {**echo, "headers": headers}


def _remember_sni(sslobj: Any, name: str | None, _context: ssl.SSLContext) -> None:
    _SNI[id(sslobj)] = name


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None


async def _read_body(reader: asyncio.StreamReader, headers: list[tuple[str, str]]) -> bytes:
    values = {k.lower(): v for k, v in headers}
    if values.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readline()).split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readline()
                return body
            body += await reader.readexactly(size)
            await reader.readline()
    length = int(values.get("content-length", "0") or "0")
    return await reader.readexactly(length) if length else b""


async def _ws_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        head = await reader.readexactly(2)
        opcode, length = head[0] & 0x0F, head[1] & 0x7F
        masked = head[1] & 0x80
        if length == 126:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await reader.readexactly(8))
        mask = await reader.readexactly(4) if masked else b"\0\0\0\0"
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(await reader.readexactly(length)))
        if opcode == 0x8:  # close: answer it and stop
            writer.write(b"\x88" + bytes([len(payload)]) + payload)
            await writer.drain()
            return
        if opcode in (0x1, 0x2):
            reply = b"echo:" + payload
            size = (
                bytes([len(reply)]) if len(reply) < 126 else b"\x7e" + struct.pack("!H", len(reply))
            )
            writer.write(bytes([0x80 | opcode]) + size + reply)
            await writer.drain()


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    sslobj = writer.get_extra_info("ssl_object")
    sni = _SNI.pop(id(sslobj), None) if sslobj is not None else None
    peer = writer.get_extra_info("peername")
    try:
        while True:
            head = await _read_head(reader)
            if head is None:
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _version = lines[0].split(" ", 2)
            headers = [
                (name.strip(), value.strip())
                for name, _, value in (line.partition(":") for line in lines[1:] if line)
            ]
            body = await _read_body(reader, headers)
            values = {k.lower(): v for k, v in headers}
            echo: dict[str, Any] = {
                "method": method,
                "target": target,
                "headers": headers,
                "body": body.decode("latin-1"),
                "sni": sni,
                "tls": sslobj is not None,
                "peer": peer[0],
                "local": writer.get_extra_info("sockname")[0],
            }
            echo = _answer(echo)
            if values.get("upgrade", "").lower() == "websocket":
                accept = base64.b64encode(
                    hashlib.sha1(values["sec-websocket-key"].encode() + _WS_GUID).digest()
                ).decode()
                writer.write(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                    + accept.encode()
                    + b"\r\nX-Echo: "
                    + json.dumps(echo).encode()
                    + b"\r\n\r\n"
                )
                await writer.drain()
                await _ws_echo(reader, writer)
                return
            payload = json.dumps(echo).encode()
            close = values.get("connection", "").lower() == "close"
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(payload)).encode()
                + (b"\r\nConnection: close" if close else b"")
                + b"\r\n\r\n"
                + payload
            )
            await writer.drain()
            if close:
                return
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        return
    finally:
        writer.close()


async def main(cert: str, key: str, https_port: int, http_port: int) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    context.sni_callback = _remember_sni
    secure = await asyncio.start_server(_serve, "0.0.0.0", https_port, ssl=context)
    plain = await asyncio.start_server(_serve, "0.0.0.0", http_port)
    print(f"origin listening on {https_port} (TLS) and {http_port}", flush=True)
    async with secure, plain:
        await asyncio.gather(secure.serve_forever(), plain.serve_forever())


if __name__ == "__main__":
    _RECORD.extend(sys.argv[5:6])
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
