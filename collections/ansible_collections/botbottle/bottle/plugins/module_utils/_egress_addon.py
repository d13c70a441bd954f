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
import contextlib
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO, TypedDict

from ansible_collections.botbottle.bottle.plugins.module_utils import _dlp, _egress
from ansible_collections.botbottle.bottle.plugins.module_utils._egress import (
    Authority,
    EgressConfig,
    IPAddress,
    RefusedError,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._policy import (
    chosen_labels,
    route_for,
)

OPTION = "bb_egress_config"
#: flow.metadata key: the route whose credential request() puts on the flow
_CREDENTIAL = "bb_egress_credential"
#: what the agent may not send on a credentialed route (the proxy's replaces it)
_AUTH_HEADERS = ("authorization", "proxy-authorization")
#: flow.metadata key: the route key check_request returned (None: an IP literal)
_ROUTE = "bb_egress_route"
#: flow.metadata keys: what the log shows instead of a host or path DLP found data in
_LOGGED_HOST = "bb_egress_logged_host"
_LOGGED_PATH = "bb_egress_logged_path"
#: Rule of a request refused while the runtime secrets DLP needs are on their way.
SECRETS_PENDING = "secrets-pending"
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
        #: the runtime secrets as last read (None: not delivered, or unreadable), and
        #: the file's stamp then (:func:`._egress.secrets_stamp`)
        self.runtime_secrets: _egress.Secrets | None = None
        self._secrets_stamp: tuple[int, int, int, int] | None = None
        #: DLP settings per route key, for the runtime secrets they were built with
        self._dlp: dict[str | None, _dlp.DlpSettings] = {}
        self._dlp_secrets: _egress.Secrets | None = None
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

    def _load_runtime_secrets(self, config: EgressConfig) -> _egress.Secrets | None:
        """The runtime secrets, read again whenever the file changes (a proxy restart
        or a re-delivery); every value read is added to :attr:`secrets` first, so no
        line can show it. A file that cannot be read counts as not delivered."""
        path = config.secrets_file
        if path is None:
            return None
        stamp = _egress.secrets_stamp(path)
        if stamp is None:
            self.runtime_secrets = None
        elif stamp != self._secrets_stamp:
            try:
                found = _egress.load_secrets(path)
            except _egress.SecretsError as exc:  # the message holds no value
                self.runtime_secrets = None
                self._record("error", hook="secrets", rule=_egress.CREDENTIAL_MISSING,
                             reason=str(exc))  # fmt: skip
            else:
                if found is not None:
                    self.secrets = tuple(sorted({*self.secrets, *found.values}))
                    self._record("secrets", credentials=sorted(found.credentials))
                self.runtime_secrets = found
        self._secrets_stamp = stamp
        return self.runtime_secrets

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
            # before the name is resolved: the query itself would carry the labels out
            await self._dlp_host(config, target, flow)
            address = target.ip if target.ip is not None else await self._pin(config, target.host)
            state.tunnel, state.tunnel_address = target, address
            state.approved.clear()
            self._record("connect", host=target.netloc, address=str(address))
        except RefusedError as exc:
            if state is not None:
                # the name asked for, as asked (capped): what the audit shows of a refusal
                host = flow.metadata.get(_LOGGED_HOST) or raw[:_LOGGED_AUTHORITY]
                self._refuse(state, exc, hook="http_connect", host=host)
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
            # keyed on the checked route alone (CONNECT = SNI = Host); refused over plain
            # HTTP and while the credential is missing; set in request(), after every check
            credential = _egress.credential_for(
                config,
                route,
                scheme=request.scheme,
                secrets=self._load_runtime_secrets(config),
            )
            flow.metadata[_ROUTE] = route
            if state.tunnel is None:  # a tunnel's host was scanned at its CONNECT
                await self._dlp_host(config, target, flow)
            extra: dict[str, Any] = {}
            if credential is not None:
                for name in _AUTH_HEADERS:
                    request.headers.pop(name, None)  # every copy the agent sent
                flow.metadata[_CREDENTIAL] = credential.route
                extra["credential"] = credential.token_ref
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
                **extra,
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

    async def request(self, flow: Any) -> None:
        """The request as it leaves: still going where requestheaders sent it, scanned by
        DLP as the agent sent it (before any credential goes on)."""
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
            await self._dlp_request(flow)
            self._inject(flow)  # keep last: the credential goes on after every check
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

    async def response(self, flow: Any) -> None:
        """The response line of a forwarded request, at log level 2 (no body); DLP's
        inbound detectors flag it."""
        state: ClientState | None = None
        try:
            if "bb_egress_refused" in flow.metadata or flow.response is None:
                return
            state = self._client(flow.client_conn)
            await self._dlp_response(flow)
            self._record(
                "response",
                **self._request_fields(flow, state),
                status=flow.response.status_code,
            )
        except Exception as exc:
            self._failed(state, "response", exc)
            self._kill(flow)

    def _inject(self, flow: Any) -> None:
        """Put the route's credential on a request requestheaders found credentialed:
        the route it recorded, checked again against the secrets as they are now."""
        route = flow.metadata.get(_CREDENTIAL)
        if route is None:
            return
        config = self._config()
        credential = _egress.credential_for(
            config,
            route,
            scheme=flow.request.scheme,
            secrets=self._load_runtime_secrets(config),
        )
        if credential is None:  # the route lost its auth: never send the request bare
            raise RefusedError(
                503, _egress.CREDENTIAL_MISSING, f"route {route} has no credential now"
            )
        headers = flow.request.headers
        for name in _AUTH_HEADERS:
            headers.pop(name, None)
        headers["authorization" if flow.request.is_http2 else "Authorization"] = credential.header

    # ------------------------------------------------------------------ DLP

    def _dlp_settings(self, config: EgressConfig, route: str | None) -> _dlp.DlpSettings:
        """The DLP in force on ``route``: the bottle's ``egress.dlp``, the route's ``dlp``
        over it, and as known secrets the delivered ``known_secrets`` and every
        credential. Refuses (503 :data:`SECRETS_PENDING`) while a backend that delivers
        runtime secrets has not yet, when known_secrets is on."""
        found = self._load_runtime_secrets(config)
        if found is not self._dlp_secrets:
            self._dlp.clear()
            self._dlp_secrets = found
        settings = self._dlp.get(route)
        if settings is None:
            settings = _dlp.DlpSettings.from_manifest(
                config.policy.dlp, config.policy.dlp_for(route), dlp_known_secrets(found)
            )
            self._dlp[route] = settings
        if found is None and _dlp.KNOWN_SECRETS in settings.outbound and _secrets_expected(config):
            raise RefusedError(
                503,
                SECRETS_PENDING,
                "the egress proxy has not received the bottle's secrets yet, so it cannot "
                "scan requests for them; try again in a moment",
            )
        return settings

    def _dlp_hit(
        self,
        flow: Any,
        settings: _dlp.DlpSettings,
        finding: _dlp.Finding,
        action: str,
        **extra: Any,
    ) -> None:
        found = finding.as_log()
        found["decoded"] = found.pop("path")  # the decodings; "path" is the request's
        self._record(
            "dlp",
            action=action,
            on_match=settings.on_match,
            route=flow.metadata.get(_ROUTE),
            **found,
            **extra,
        )

    @staticmethod
    def _dlp_refusal(finding: _dlp.Finding, outcome: _dlp.Outcome) -> RefusedError:
        why = {
            _dlp.REASON_SUPERVISE: "outbound_on_match is supervise, and there is no approval "
            "path yet: the request is blocked",
            _dlp.REASON_UNDECODABLE: "it cannot be inspected, so it is blocked",
            _dlp.REASON_UNREDACTABLE: "redacting it was not enough (a match is still there "
            "after decoding), so it is blocked",
        }.get(outcome.reason, "it is blocked")
        return RefusedError(
            outcome.status or 403,
            outcome.reason,
            f"data-loss prevention: {finding.detector} found {finding.preview} in the "
            f"{finding.surface} (rule {finding.rule}, via {finding.path}); {why}",
        )

    async def _dlp_host(self, config: EgressConfig, target: Authority, flow: Any) -> None:
        """The labels of a name below a wildcard zone (an exact route's name has none the
        agent chose); a hit refuses it (a host name cannot be redacted)."""
        if target.ip is not None:
            return
        route = route_for(config.policy, target.host)
        if route is None or not route.startswith("*."):
            return
        settings = self._dlp_settings(config, route)
        below = chosen_labels(config.policy, target.host)
        finding = await asyncio.to_thread(_dlp.scan_host, settings, below)
        if finding is None:
            return
        outcome = _dlp.outcome(settings, finding)
        flow.metadata[_LOGGED_HOST] = f"{_egress.REDACTED}.{route[2:]}:{target.port}"
        self._dlp_hit(flow, settings, finding, outcome.action, host=flow.metadata[_LOGGED_HOST])
        raise self._dlp_refusal(finding, outcome)

    async def _dlp_request(self, flow: Any) -> None:
        """Scan the request's URL, headers and raw body (with its Content-Encoding: the
        engine decodes it, capped); block it, or forward it redacted."""
        config = self._config()
        settings = self._dlp_settings(config, flow.metadata.get(_ROUTE))
        if not settings.scans_outbound:
            return
        request = flow.request
        headers = tuple(request.headers.fields)
        body = request.raw_content or b""
        # what both the scan and the redaction read: the request as the agent sent it
        sent = (settings, request.path, headers, body)
        body_kind = _BodyKind(
            content_encoding=_header(headers, b"content-encoding"),
            content_type=_header(headers, b"content-type"),
        )
        finding = await asyncio.to_thread(_dlp.scan_request, *sent, **body_kind)
        if finding is None:
            return
        outcome = _dlp.outcome(settings, finding)
        if finding.surface == "url":  # the path itself may hold the data, encoded
            flow.metadata[_LOGGED_PATH] = _egress.REDACTED
        fields = self._request_fields(flow, None)
        if outcome.action == "redact":
            redacted = await asyncio.to_thread(_dlp.redact_request, *sent, **body_kind)
            if redacted is not None:
                self._dlp_hit(flow, settings, finding, "redact", **fields)
                _apply_redaction(request, redacted, body)
                return
            outcome = _dlp.Outcome("block", 403, _dlp.REASON_UNREDACTABLE)
        self._dlp_hit(flow, settings, finding, outcome.action, **fields)
        raise self._dlp_refusal(finding, outcome)

    async def _dlp_response(self, flow: Any) -> None:
        """Inbound: flag a response that reads like a prompt injection (never block)."""
        if _ROUTE not in flow.metadata:
            return
        config = self._config()
        settings = self._dlp_settings(config, flow.metadata[_ROUTE])
        if _dlp.NAIVE_INJECTION not in settings.inbound:
            return
        response = flow.response
        fields = tuple(response.headers.fields)
        finding = await asyncio.to_thread(
            _dlp.scan_response,
            settings,
            response.raw_content or b"",
            _header(fields, b"content-encoding"),
            _header(fields, b"content-type"),
        )
        if finding is not None:
            response.headers[_dlp.INJECTION_HEADER] = finding.rule
            self._dlp_hit(flow, settings, finding, "flag", **self._request_fields(flow, None))

    async def _dlp_message(self, flow: Any) -> None:
        """One WebSocket message from the agent: dropped (and the WebSocket closed) or
        redacted on a hit. Messages from the server are not scanned."""
        message = flow.websocket.messages[-1]
        if not message.from_client:
            return
        config = self._config()
        settings = self._dlp_settings(config, flow.metadata.get(_ROUTE))
        if not settings.scans_outbound:
            return
        finding = await asyncio.to_thread(_dlp.scan_message, settings, message.content)
        if finding is None:
            return
        outcome = _dlp.outcome(settings, finding)
        fields = {"host": flow.metadata.get("bb_egress_target")}
        if outcome.action == "redact":
            redacted = await asyncio.to_thread(_dlp.redact_message, settings, message.content)
            if redacted is not None:
                self._dlp_hit(flow, settings, finding, "redact", **fields)
                message.content = redacted
                return
            outcome = _dlp.Outcome("block", 403, _dlp.REASON_UNREDACTABLE)
        self._dlp_hit(flow, settings, finding, outcome.action, **fields)
        message.drop()  # never reaches the server; the agent is told
        from mitmproxy import ctx  # noqa: PLC0415

        notice = f"bot-bottle egress proxy: message refused ({outcome.reason})"
        ctx.master.commands.call("inject.websocket", flow, True, notice.encode(), True)

    @staticmethod
    def _request_fields(flow: Any, state: ClientState | None) -> dict[str, Any]:
        """Host, method and path (query redacted) of a request, for the log."""
        request = flow.request
        host = flow.metadata.get(_LOGGED_HOST) or flow.metadata.get("bb_egress_target")
        if host is None and state is not None and state.tunnel is not None:
            host = state.tunnel.netloc
        if host is None:
            host = _text(request.data.authority) or str(request.data.host)
        return {
            "host": host,
            "method": request.method,
            "path": flow.metadata.get(_LOGGED_PATH) or _egress.log_target(request.path),
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

    async def websocket_message(self, flow: Any) -> None:
        self._websocket(flow, "websocket_message")
        state: ClientState | None = None
        try:
            state = self._client(flow.client_conn)
            if state.refused is None:
                await self._dlp_message(flow)
        except Exception as exc:  # a refusal (secrets pending) too: the message is not sent
            if isinstance(exc, RefusedError) and state is not None:
                self._refuse(state, exc, hook="websocket_message")
            else:
                self._failed(state, "websocket_message", exc)
            with contextlib.suppress(Exception):  # killed below in any case
                flow.websocket.messages[-1].drop()
            self._kill(flow)

    def websocket_end(self, flow: Any) -> None:
        self._websocket(flow, "websocket_end")

    # ------------------------------------------------------------------ bookkeeping

    def client_disconnected(self, client: Any) -> None:
        self.clients.pop(client.id, None)


def dlp_known_secrets(found: _egress.Secrets | None) -> dict[str, str]:
    """What DLP's ``known_secrets`` looks for, by the name its log shows: every route
    credential (by its ``token_ref``) and the bottle's own secret values (numbered:
    the file does not name them)."""
    if found is None:
        return {}
    named = dict(sorted(found.credentials.items()))
    for number, value in enumerate(found.known_secrets, 1):
        named[f"bottle-secret-{number}"] = value
    return named


class _BodyKind(TypedDict):
    """A body's Content-Encoding and Content-Type, as :mod:`._dlp`'s request scans take them."""

    content_encoding: str | None
    content_type: str | None


def _header(fields: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The values of header ``name`` joined by commas (as HTTP folds them), or None."""
    values = [_text(v) for n, v in fields if n.lower() == name]
    return ", ".join(values) if values else None


def _secrets_expected(config: EgressConfig) -> bool:
    """Will runtime secrets be delivered to this proxy? Yes when routes need them
    (auth), or when the backend gave it the secrets tmpfs (the directory of the file
    exists: the Docker backend delivers them right after the proxy starts). A proxy
    started without that directory gets none and scans without known secrets."""
    path = config.secrets_file
    if path is None:
        return False
    return config.secrets_required or os.path.isdir(os.path.dirname(path))


def _apply_redaction(request: Any, redacted: _dlp.RedactedRequest, body: bytes) -> None:
    """Put a redacted request in place of the one the agent sent: path, headers, and
    the body (decoded, when it changed, with its length set again)."""
    from mitmproxy import http  # noqa: PLC0415

    request.path = redacted.url
    request.headers = http.Headers(list(redacted.headers))
    if redacted.body != body:
        request.headers.pop("transfer-encoding", None)
        request.raw_content = redacted.body
        request.headers["content-length"] = str(len(redacted.body))


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
