# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The egress proxy's mitmproxy addon: mitmproxy's hooks, adapted to :mod:`._egress`.

**PRIVATE** to the botbottle.bottle collection. ``python3 -m`` runs this module
as mitmdump with the addon registered before anything listens (:func:`main`, and
:func:`._egress.proxy_command` for why not ``mitmdump -s``); it decides nothing itself. Per client
connection it remembers the CONNECT target and the address it resolved and checked,
and which upstream ``(address, port)`` pairs a checked request approved:

* ``http_connect``: the target passes :func:`._egress.connect_target`; a name is
  resolved through the bottle's resolver and its answers checked
  (:func:`._egress.choose_address`) -- a refusal is the HTTP answer to the CONNECT;
* ``tls_clienthello``/``tls_start_client``: the SNI must match the CONNECT
  (:func:`._egress.check_sni`); TLS without a CONNECT, or with a refused SNI, gets no
  TLS context, which closes the connection;
* ``requestheaders``/``request``: every request (each HTTP/2 stream, each WebSocket
  upgrade) passes :func:`._egress.request_target` and its route's matches
  (:func:`._egress.check_request`), then is sent to the checked address (pinning);
  refusals are 4xx/5xx answers naming the rule;
* ``response``: logged at ``egress.log: 2`` (status line only, no body);
* ``server_connect``: an upstream connection opens only to an address a checked
  request approved on this client connection, with that request's name as SNI;
* ``tcp_start``/``udp_start``/``dns_request``: non-HTTP traffic is closed;
* WebSocket messages pass (``websocket_*``).

Any exception in a hook closes what the hook was deciding (the flow is killed, the
TLS context withheld, the server connection errored) and marks the client
connection refused, so nothing passes after it: mitmproxy itself would log an addon's
exception and carry on.

Decisions are logged as JSON lines (:func:`._egress.log_line`) to the configured file
(or standard output): nothing at ``egress.log: 0``, refusals and errors at 1, every
request and response line at 2; queries and header values never, and the values in
:attr:`EgressAddon.secrets` are redacted from every line. A line that cannot be
written is reported on mitmproxy's log and does not change a decision.

mitmproxy is imported only inside hooks, so the collection can import this file (to
ship it, :func:`._egress.proxy_code_files`) where mitmproxy is not installed. Its
objects are duck-typed here; their shape is mitmproxy 12.3.1's, pinned by the image.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from ansible_collections.botbottle.bottle.plugins.module_utils import _egress
from ansible_collections.botbottle.bottle.plugins.module_utils._egress import (
    Authority,
    EgressConfig,
    IPAddress,
    RefusedError,
)

OPTION = "bb_egress_config"
_LOG = logging.getLogger("bot-bottle.egress")

Resolver = Callable[[str, tuple[str, int]], Sequence[IPAddress]]


#: How much of a refused CONNECT's authority the log keeps (a DNS name is at most 253).
_LOGGED_AUTHORITY = 300


@dataclass
class ClientState:
    """What the addon knows about one client connection."""

    tunnel: Authority | None = None
    tunnel_address: IPAddress | None = None
    names: dict[str, IPAddress] = field(default_factory=dict)
    approved: dict[tuple[str, int], str] = field(default_factory=dict)
    refused: RefusedError | None = None


def _text(raw: bytes) -> str:
    """Wire bytes as text for the parser: UTF-8 (which it turns into A-labels), other
    bytes kept as surrogates (which it refuses)."""
    return raw.decode("utf-8", "surrogateescape")


def _host_headers(flow: Any) -> list[str]:
    return [_text(value) for name, value in flow.request.headers.fields if name.lower() == b"host"]


class EgressAddon:
    """The addon object mitmdump loads (``addons = [EgressAddon()]``)."""

    def __init__(self, resolve: Resolver = _egress.resolve, out: TextIO | None = None) -> None:
        self.config: EgressConfig | None = None
        self.clients: dict[str, ClientState] = {}
        #: values redacted from every log line (credentials the proxy holds, the
        #: bottle's known secrets); filled by whoever loads them
        self.secrets: tuple[str, ...] = ()
        self._resolve = resolve
        self._out = out

    # ------------------------------------------------------------------ set-up

    def load(self, loader: Any) -> None:
        loader.add_option(
            OPTION, str, _egress.CONTAINER_CONFIG, "The bot-bottle egress configuration file."
        )

    def configure(self, updated: Any) -> None:
        if OPTION not in updated:
            return
        from mitmproxy import ctx, exceptions  # noqa: PLC0415

        self.config = None
        try:
            self.config = _egress.load_config(getattr(ctx.options, OPTION))
        except _egress.ConfigError as exc:
            _LOG.error("bot-bottle egress: %s; every request is refused", exc)
            raise exceptions.OptionsError(str(exc)) from None
        self._record("start", policy=self.config.policy.digest)

    # ------------------------------------------------------------------ helpers

    def _config(self) -> EgressConfig:
        if self.config is None:
            raise RefusedError(
                503, _egress.NO_CONFIG, "the egress proxy has no valid configuration"
            )
        return self.config

    def _client(self, conn: Any) -> ClientState:
        state = self.clients.get(conn.id)
        if state is None:
            state = self.clients[conn.id] = ClientState()
        return state

    def _record(self, event: str, **fields: Any) -> None:
        """One JSON line per decision, when the log level (the policy's, raised to the
        host's floor) asks for it."""
        config = self.config
        if config is None:
            return
        line = _egress.log_line(
            config.log_level, event, fields, now=time.time(), secrets=self.secrets
        )
        if line is None:
            return
        try:
            if config.log_file is not None:
                with open(config.log_file, "a", encoding="utf-8") as handle:
                    handle.write(line + "\n")
            else:
                out = self._out or sys.stdout
                out.write(line + "\n")
                out.flush()
        except OSError as exc:
            _LOG.error("bot-bottle egress: cannot write the log %s: %s", config.log_file, exc)

    def _refuse(self, state: ClientState, exc: RefusedError, **fields: Any) -> None:
        state.refused = state.refused or exc
        if state.tunnel is not None:
            fields.setdefault("host", state.tunnel.netloc)
        self._record("refused", rule=exc.rule, reason=exc.reason, **fields)

    def _failed(self, state: ClientState | None, hook: str, exc: BaseException) -> RefusedError:
        """An unexpected exception: logged always, and it refuses the client connection."""
        refusal = RefusedError(
            500,
            _egress.INTERNAL_ERROR,
            f"internal error in the egress addon ({hook}: {type(exc).__name__}); "
            "the connection is closed",
        )
        _LOG.error(
            "bot-bottle egress: %s: %s\n%s",
            hook,
            exc,
            "".join(traceback.format_exception(exc)),
        )
        if state is not None:
            state.refused = state.refused or refusal
        self._record("error", hook=hook, rule=refusal.rule, reason=refusal.reason)
        return refusal

    @staticmethod
    def _answer(flow: Any, exc: RefusedError) -> None:
        from mitmproxy import http  # noqa: PLC0415

        flow.metadata["bb_egress_refused"] = exc.rule
        flow.response = http.Response.make(
            exc.status,
            f"bot-bottle egress proxy refused this request: {exc.reason}\n".encode(
                "utf-8", "backslashreplace"
            ),
            {
                "content-type": "text/plain; charset=utf-8",
                "x-bot-bottle-refused": exc.rule,
            },
        )

    @staticmethod
    def _kill(flow: Any) -> None:
        if flow.killable:
            flow.kill()

    async def _pin(self, config: EgressConfig, name: str) -> IPAddress:
        answers = await asyncio.to_thread(self._resolve, name, config.resolver)
        return _egress.choose_address(config, name, answers)

    # ------------------------------------------------------------------ HTTP

    async def http_connect(self, flow: Any) -> None:
        state: ClientState | None = None
        raw = ""
        try:
            state = self._client(flow.client_conn)
            if state.refused is not None:
                raise state.refused
            config = self._config()
            raw = _text(flow.request.data.authority)
            if state.tunnel is not None or flow.request.is_http2:
                raise RefusedError(
                    400,
                    _egress.SECOND_CONNECT,
                    f"CONNECT {raw}: one CONNECT per connection to the proxy, over HTTP/1",
                )
            target = _egress.connect_target(config, raw)
            for header in _host_headers(flow):
                if _egress.parse_authority(header, target.port) != target:
                    raise RefusedError(
                        400,
                        _egress.HOST_MISMATCH,
                        f"Host {header} does not match CONNECT {target.netloc}",
                    )
            address = target.ip if target.ip is not None else await self._pin(config, target.host)
            state.tunnel, state.tunnel_address = target, address
            state.approved.clear()
            self._record("connect", host=target.netloc, address=str(address))
        except RefusedError as exc:
            if state is not None:
                # the name asked for, as asked (capped): what the audit shows of a refusal
                self._refuse(state, exc, hook="http_connect", host=raw[:_LOGGED_AUTHORITY])
            self._answer(flow, exc)
        except Exception as exc:
            self._failed(state, "http_connect", exc)
            self._kill(flow)

    async def requestheaders(self, flow: Any) -> None:
        state: ClientState | None = None
        try:
            state = self._client(flow.client_conn)
            if state.refused is not None:
                raise state.refused
            config = self._config()
            request = flow.request
            target = _egress.request_target(
                config,
                state.tunnel,
                scheme=request.scheme,
                url_host=request.data.host,
                url_port=request.data.port,
                host_headers=_host_headers(flow),
                # HTTP/2's :authority, or an HTTP/1 absolute-form target's authority
                # inside a tunnel (mitmproxy forwards it as it came, and origins must
                # prefer it to Host); in regular mode mitmproxy has already moved it
                # into url_host/url_port
                authority=_text(request.data.authority),
            )
            route = _egress.check_request(
                config,
                target,
                method=request.method,
                path=request.path,
                headers=[(_text(n), _text(v)) for n, v in request.headers.fields],
            )
            if state.tunnel is not None and state.tunnel_address is not None:
                address = state.tunnel_address
            elif target.ip is not None:
                address = target.ip
            else:
                address = state.names.get(target.host) or await self._pin(config, target.host)
                state.names[target.host] = address
            request.data.host = str(address)
            request.data.port = target.port
            state.approved[(str(address), target.port)] = target.host
            flow.metadata["bb_egress_target"] = target.netloc
            self._record(
                "request",
                host=target.netloc,
                address=str(address),
                method=request.method,
                path=_egress.log_target(request.path),
                route=route,
                http_version=request.http_version,
            )
        except RefusedError as exc:
            # a refused request does not refuse its connection: the next may be fine
            self._record(
                "refused",
                hook="requestheaders",
                rule=exc.rule,
                reason=exc.reason,
                **self._request_fields(flow, state),
            )
            self._answer(flow, exc)
        except Exception as exc:
            self._failed(state, "requestheaders", exc)
            self._kill(flow)

    def request(self, flow: Any) -> None:
        """The request as it leaves: still going where requestheaders sent it."""
        state: ClientState | None = None
        try:
            if flow.response is not None and "bb_egress_refused" in flow.metadata:
                return
            state = self._client(flow.client_conn)
            if state.refused is not None:
                raise state.refused
            key = (flow.request.data.host, flow.request.data.port)
            if "bb_egress_target" not in flow.metadata or key not in state.approved:
                raise RefusedError(
                    403,
                    _egress.UNAPPROVED_CONNECTION,
                    f"the request to {key[0]}:{key[1]} was not checked",
                )
        except RefusedError as exc:
            self._record(
                "refused",
                hook="request",
                rule=exc.rule,
                reason=exc.reason,
                **self._request_fields(flow, state),
            )
            self._answer(flow, exc)
        except Exception as exc:
            self._failed(state, "request", exc)
            self._kill(flow)

    def response(self, flow: Any) -> None:
        """The response line of a forwarded request, at log level 2 (no body)."""
        state: ClientState | None = None
        try:
            if "bb_egress_refused" in flow.metadata or flow.response is None:
                return
            state = self._client(flow.client_conn)
            self._record(
                "response",
                **self._request_fields(flow, state),
                status=flow.response.status_code,
            )
        except Exception as exc:
            self._failed(state, "response", exc)
            self._kill(flow)

    @staticmethod
    def _request_fields(flow: Any, state: ClientState | None) -> dict[str, Any]:
        """Host, method and path (query redacted) of a request, for the log."""
        request = flow.request
        host = flow.metadata.get("bb_egress_target")
        if host is None and state is not None and state.tunnel is not None:
            host = state.tunnel.netloc
        if host is None:
            host = _text(request.data.authority) or str(request.data.host)
        return {
            "host": host,
            "method": request.method,
            "path": _egress.log_target(request.path),
        }

    # ------------------------------------------------------------------ TLS

    def tls_clienthello(self, data: Any) -> None:
        state: ClientState | None = None
        try:
            data.ignore_connection = False  # never pass a connection through unseen
            state = self._client(data.context.client)
            if state.refused is not None:
                return
            if state.tunnel is None:
                raise RefusedError(
                    403,
                    _egress.TLS_WITHOUT_CONNECT,
                    "TLS straight to the proxy is refused; send HTTPS through CONNECT",
                )
            _egress.check_sni(state.tunnel, data.client_hello.sni)
        except RefusedError as exc:
            if state is not None:
                self._refuse(state, exc, hook="tls_clienthello")
        except Exception as exc:
            if state is None:
                state = self.clients.setdefault(data.context.client.id, ClientState())
            self._failed(state, "tls_clienthello", exc)

    def tls_start_client(self, tls_start: Any) -> None:
        """No TLS context (the connection closes) for a refused client connection."""
        try:
            if self._client(tls_start.context.client).refused is not None:
                tls_start.ssl_conn = None
        except Exception as exc:
            tls_start.ssl_conn = None
            self._failed(None, "tls_start_client", exc)

    def tls_start_server(self, tls_start: Any) -> None:
        """Upstream TLS names exactly what the approving request named."""
        try:
            state = self._client(tls_start.context.client)
            server = tls_start.conn
            host = state.approved.get((server.address[0], server.address[1]))
            if state.refused is not None or host is None or server.sni != host:
                tls_start.ssl_conn = None
                self._refuse(
                    state,
                    RefusedError(
                        403,
                        _egress.UNAPPROVED_CONNECTION,
                        f"upstream TLS to {server.address[0]}:{server.address[1]} with SNI "
                        f"{server.sni} was not approved",
                    ),
                    hook="tls_start_server",
                )
        except Exception as exc:
            tls_start.ssl_conn = None
            self._failed(None, "tls_start_server", exc)

    # ------------------------------------------------------------------ upstream

    def server_connect(self, data: Any) -> None:
        """Open only connections a checked request approved (pinned address, its SNI)."""
        state: ClientState | None = None
        try:
            state = self._client(data.client)
            if state.refused is not None:
                raise state.refused
            address = data.server.address
            host = state.approved.get((address[0], address[1])) if address else None
            if host is None:
                raise RefusedError(
                    403,
                    _egress.UNAPPROVED_CONNECTION,
                    f"no checked request approved an upstream connection to {address}",
                )
            data.server.sni = host
        except RefusedError as exc:
            if state is not None:
                self._refuse(state, exc, hook="server_connect")
            data.server.error = exc.reason
        except Exception as exc:
            data.server.error = self._failed(state, "server_connect", exc).reason

    # ------------------------------------------------------------------ not HTTP

    def _not_http(self, flow: Any, hook: str) -> None:
        state: ClientState | None = None
        try:
            state = self._client(flow.client_conn)
            tunnel = state.tunnel.netloc if state.tunnel is not None else "the proxy"
            self._refuse(
                state,
                RefusedError(
                    403, _egress.NOT_HTTP, f"non-HTTP traffic inside CONNECT {tunnel} is closed"
                ),
                hook=hook,
            )
        except Exception as exc:
            self._failed(state, hook, exc)
        finally:
            self._kill(flow)

    def tcp_start(self, flow: Any) -> None:
        self._not_http(flow, "tcp_start")

    def tcp_message(self, flow: Any) -> None:
        try:
            flow.messages[-1].content = b""  # tcp_start refused it: nothing is relayed
        finally:
            self._not_http(flow, "tcp_message")

    def udp_start(self, flow: Any) -> None:
        self._not_http(flow, "udp_start")

    def dns_request(self, flow: Any) -> None:
        self._not_http(flow, "dns_request")

    # ------------------------------------------------------------------ WebSocket

    def _websocket(self, flow: Any, hook: str) -> None:
        state: ClientState | None = None
        try:
            state = self._client(flow.client_conn)
            if state.refused is not None:
                raise state.refused
            self._record(hook, host=flow.metadata.get("bb_egress_target"))
        except Exception as exc:
            self._failed(state, hook, exc)
            self._kill(flow)

    def websocket_start(self, flow: Any) -> None:
        self._websocket(flow, "websocket_start")

    def websocket_message(self, flow: Any) -> None:
        self._websocket(flow, "websocket_message")

    def websocket_end(self, flow: Any) -> None:
        self._websocket(flow, "websocket_end")

    # ------------------------------------------------------------------ bookkeeping

    def client_disconnected(self, client: Any) -> None:
        self.clients.pop(client.id, None)


def main(argv: Sequence[str] | None = None) -> None:
    """mitmdump (its command line, master and default addons) plus :class:`EgressAddon`,
    added before the options are applied and before anything listens: if this module
    or its configuration cannot be loaded, the proxy does not start."""
    from mitmproxy.tools import cmdline  # noqa: PLC0415
    from mitmproxy.tools import main as tools  # noqa: PLC0415
    from mitmproxy.tools.dump import DumpMaster  # noqa: PLC0415

    class EgressMaster(DumpMaster):  # type: ignore[misc]
        def __init__(self, options: Any, **kwargs: Any) -> None:
            super().__init__(options, **kwargs)
            self.addons.add(EgressAddon())

    tools.run(EgressMaster, cmdline.mitmdump, list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
