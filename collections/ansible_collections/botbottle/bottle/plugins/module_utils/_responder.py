"""A throw-away DNS responder on the host, the target of the gateway checks.

A bottle must not reach its network's gateway (the host). To prove that, something
on the gateway must answer when asked from outside the seal: while the checks run,
:class:`Responder` answers every DNS query on ``ADDRESS:53`` (UDP and TCP) with an
empty NOERROR reply and accepts TCP connections on 853. A port another service
already holds is left to that service (it is then the target). Nothing is forwarded.
"""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field


def reply_to(query: bytes) -> bytes:
    """An empty NOERROR response to ``query`` (same id and question), or b"" for junk."""
    if len(query) < 12:
        return b""
    flags = bytes([0x81 | (query[2] & 0x01), 0x80])  # QR, opcode 0, RD echoed, RA
    return query[:2] + flags + query[4:6] + b"\x00\x00\x00\x00\x00\x00" + query[12:]


def _serve_udp(sock: socket.socket, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            data, peer = sock.recvfrom(4096)
        except OSError:
            continue
        answer = reply_to(data)
        if answer:
            sock.sendto(answer, peer)


def _serve_tcp_client(conn: socket.socket, dns: bool) -> None:
    with conn:
        if not dns:
            return
        try:
            header = conn.recv(2)
            length = int.from_bytes(header, "big") if len(header) == 2 else 0
            data = b""
            while len(data) < length:
                chunk = conn.recv(length - len(data))
                if not chunk:
                    return
                data += chunk
            answer = reply_to(data)
            if answer:
                conn.sendall(len(answer).to_bytes(2, "big") + answer)
        except OSError:
            return


def _serve_tcp(sock: socket.socket, stop: threading.Event, dns: bool) -> None:
    while not stop.is_set():
        try:
            conn, _peer = sock.accept()
        except OSError:
            continue
        conn.settimeout(2)
        _serve_tcp_client(conn, dns)


@dataclass
class Responder:
    """Context manager: serve on ``address`` while the block runs. ``notes`` says which
    ports were served and which were already taken."""

    address: str
    notes: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _sockets: list[socket.socket] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _bind(self, kind: int, port: int) -> socket.socket | None:
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        sock = socket.socket(family, kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.settimeout(0.2)
        proto = "udp" if kind == socket.SOCK_DGRAM else "tcp"
        try:
            sock.bind((self.address, port))
        except OSError as exc:
            sock.close()
            taken = exc.errno == errno.EADDRINUSE
            self.notes.append(
                f"{proto}/{port}: " + ("already served on the host" if taken else str(exc))
            )
            return None
        if kind == socket.SOCK_STREAM:
            sock.listen(16)
        self.notes.append(f"{proto}/{port}: answered by bottle verify")
        self._sockets.append(sock)
        return sock

    def _start(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def __enter__(self) -> Responder:
        udp = self._bind(socket.SOCK_DGRAM, 53)
        if udp is not None:
            self._start(_serve_udp, udp, self._stop)
        for port, dns in ((53, True), (853, False)):
            tcp = self._bind(socket.SOCK_STREAM, port)
            if tcp is not None:
                self._start(_serve_tcp, tcp, self._stop, dns)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2)
        for sock in self._sockets:
            sock.close()
