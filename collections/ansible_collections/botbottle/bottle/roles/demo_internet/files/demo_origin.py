# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The demo's stand-in HTTPS origin (DEMO ONLY): every GET or HEAD, for any host and
path, gets a short text naming the host it served (the Host header, and the TLS
server name the client asked for). Standard library only; it never connects out."""

from __future__ import annotations

import argparse
import http.server
import socket
import ssl
import sys
from typing import Any


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "bot-bottle-demo-origin"
    sys_version = ""

    def _answer(self, with_body: bool) -> None:
        host = (self.headers.get("Host") or "").strip()
        sni = getattr(self.request, "demo_sni", None) or ""
        body = (
            f"bot-bottle demo internet: served {host or '(no Host header)'}"
            f" (TLS name {sni or '(none)'}) {self.command} {self.path}\n"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(True)

    def do_HEAD(self) -> None:
        self._answer(False)

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


class Server(http.server.ThreadingHTTPServer):
    """Each connection's TLS handshake runs in its own thread, with a time limit, so a
    client that never finishes one holds up nobody else."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], context: ssl.SSLContext) -> None:
        super().__init__(address, Handler)
        self.context = context

    def finish_request(self, request: Any, client_address: Any) -> None:
        assert isinstance(request, socket.socket)
        request.settimeout(30)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            sys.stderr.write(f"{client_address[0]} TLS handshake failed: {exc}\n")
            return
        try:
            Handler(tls, client_address, self)
        finally:
            tls.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--address", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=443)
    args = parser.parse_args()

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(args.cert, args.key)

    def remember_sni(sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: object) -> None:
        sock.demo_sni = name  # type: ignore[union-attr]

    context.sni_callback = remember_sni
    Server((args.address, args.port), context).serve_forever()


if __name__ == "__main__":
    main()
