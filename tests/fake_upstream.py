"""A fake upstream DNS server for tests: answers every name, logs every query.

It stands in for the internet's resolvers so that no test query ever leaves the
machine. Every A query gets 192.0.2.1 (TEST-NET-1, or the ``a_record`` given to
:func:`serve`: a test-owned origin's address), AAAA 2001:db8::1, TXT/NULL/
MX/CNAME a fixed record; each query is appended to the log file as
``<transport> <qtype> <name>``. Run: ``python3 fake_upstream.py HOST PORT LOG [A]``
(UDP and TCP on the same port; ``A``: the address every A query gets, 192.0.2.1
without it). Needs ``dnslib``.
"""

from __future__ import annotations

import socketserver
import sys
import threading
from pathlib import Path

from dnslib import AAAA, CNAME, MX, QTYPE, RD, RR, TXT, A, DNSError, DNSRecord

_ANSWERS = {
    QTYPE.A: A("192.0.2.1"),
    QTYPE.AAAA: AAAA("2001:db8::1"),
    QTYPE.TXT: TXT("fake-upstream"),
    QTYPE.NULL: RD(b"fake"),
    QTYPE.MX: MX("mail.invalid"),
    QTYPE.CNAME: CNAME("alias.invalid"),
}


class _State:
    log: Path
    a_record = A("192.0.2.1")
    lock = threading.Lock()


def _raw_name(data: bytes) -> str:
    """The question name of a query dnslib cannot parse (labels that are not UTF-8)."""
    labels, offset = [], 12
    while offset < len(data) and data[offset]:
        length = data[offset]
        labels.append(data[offset + 1 : offset + 1 + length].decode("latin-1"))
        offset += 1 + length
    return ".".join(labels)


def _empty_reply(data: bytes) -> bytes:
    """NOERROR with no records, echoing the question: for names dnslib cannot parse."""
    end = 12
    while end < len(data) and data[end]:
        end += 1 + data[end]
    question = data[12 : end + 5]
    return data[:2] + b"\x81\x80\x00\x01\x00\x00\x00\x00\x00\x00" + question


def _answer(data: bytes, transport: str) -> bytes:
    try:
        request = DNSRecord.parse(data)
    except DNSError:
        with _State.lock, _State.log.open("a", encoding="utf-8") as handle:
            handle.write(f"{transport} raw {_raw_name(data)!r}\n")
        return _empty_reply(data)
    reply = request.reply()
    qname = str(request.q.qname)
    qtype = request.q.qtype
    with _State.lock, _State.log.open("a", encoding="utf-8") as handle:
        handle.write("{} {} {}\n".format(transport, QTYPE.get(qtype), qname.rstrip(".")))
    for rtype, rdata in {**_ANSWERS, QTYPE.A: _State.a_record}.items():
        if qtype in (rtype, QTYPE.ANY):
            reply.add_answer(RR(qname, rtype, rdata=rdata, ttl=60))
    return bytes(reply.pack())


class _UDP(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        sock.sendto(_answer(data, "udp"), self.client_address)


class _TCP(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        header = self.request.recv(2)
        if len(header) < 2:
            return
        length = int.from_bytes(header, "big")
        data = b""
        while len(data) < length:
            chunk = self.request.recv(length - len(data))
            if not chunk:
                return
            data += chunk
        reply = _answer(data, "tcp")
        self.request.sendall(len(reply).to_bytes(2, "big") + reply)


class _ThreadingUDP(socketserver.ThreadingMixIn, socketserver.UDPServer):
    allow_reuse_address = True


class _ThreadingTCP(socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True


def serve(
    host: str, port: int, log: Path, a_record: str = "192.0.2.1"
) -> tuple[int, list[socketserver.BaseServer]]:
    """Start UDP and TCP servers on one port (0: any free one) in daemon threads;
    every A query is answered with ``a_record``.

    Returns the port and the servers (call ``shutdown()`` on each to stop).
    """
    _State.log = log
    _State.a_record = A(a_record)
    log.touch()
    for _attempt in range(20):
        udp = _ThreadingUDP((host, port), _UDP)
        chosen = udp.server_address[1]
        try:
            tcp = _ThreadingTCP((host, chosen), _TCP)
        except OSError:
            udp.server_close()
            if port:
                raise
            continue
        servers: list[socketserver.BaseServer] = [udp, tcp]
        for server in servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return chosen, servers
    raise OSError(f"no free port for the fake upstream on {host}")


if __name__ == "__main__":
    bound, _ = serve(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), *sys.argv[4:5])
    print(f"fake upstream on {sys.argv[1]}#{bound}", flush=True)
    threading.Event().wait()
