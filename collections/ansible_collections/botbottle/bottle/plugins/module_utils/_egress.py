# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every decision the bottle's egress proxy makes, as plain functions.

**PRIVATE** to the botbottle.bottle collection. The proxy is mitmdump with one
addon (:mod:`._egress_addon`), which only adapts mitmproxy's hooks to the functions
here; what may pass is decided by the egress policy compiler (:mod:`._policy`:
:func:`~._policy.allows_name` and the compiled :class:`~._policy.EgressPolicy`),
never by a second matcher.

What the proxy enforces:

* **strict authorities** (:func:`parse_authority`): IDNA to lower-case A-labels,
  one trailing dot dropped, NUL, control characters, spaces and ``%`` refused, a
  port of 1-65535 without leading zeros, IPv6 only in brackets, dotted-quad IPv4
  only;
* **routes** (:func:`check_destination`): a name passes where ``allows_name`` says
  so (an exact route is that name only, a wildcard zone every name below it, not the
  zone itself); an IP literal only where a ``cidr`` route covers it;
* **one identity per tunnel**: the CONNECT host, the TLS SNI
  (:func:`check_sni`) and every request's Host / ``:authority`` and absolute-form
  URL (:func:`request_target`) agree, stream by stream;
* **a route's matches** (:func:`check_request`): the request's route is found from
  that checked identity by the compiler (:func:`~._policy.route_for`), and when the
  route has ``matches`` one of its entries must admit the request's method, path
  (:func:`~._policy.request_path`: the query is never matched) and headers;
* **a route's credential** (:func:`credential_for`): on a route with ``auth``, keyed
  on that same checked route, the agent's ``Authorization`` is replaced by the
  route's; never over plain HTTP, and never without the runtime secrets
  (:func:`load_secrets`): a missing credential refuses the request;
* **resolved addresses** (:func:`choose_address`): the proxy resolves names through
  the bottle's own resolver (:func:`resolve`) and refuses answers in loopback,
  link-local, metadata, private (RFC 1918), shared (CGNAT), unique-local and the
  other special ranges of :data:`SPECIAL_NETWORKS` unless a ``cidr`` route covers
  them; :data:`~._policy.NEVER_ROUTED` and the configured ``refused_networks`` stay
  closed whatever the routes say. The proxy then connects to the address it checked;
* every refusal is a :class:`RefusedError` whose ``reason`` names the rule.

The rest is the component's interface for the Docker backend: the configuration
file (:func:`render_config`, :func:`load_config`), the per-bottle CA in mitmproxy's
``confdir`` format (:func:`ensure_ca`), the container's command line and paths
(:func:`proxy_command`, :data:`CONTAINER_CODE_ROOT`, ...) and the files to mount
(:func:`proxy_code_files`).

This file is shipped to managed hosts by Ansible, and mounted into the proxy
container at its collection path: standard library only.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import re
import secrets
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

from ansible_collections.botbottle.bottle.plugins.module_utils._policy import (
    NEVER_ROUTED,
    EgressPolicy,
    allows_name,
    normalize_name,
    normalize_upstream,
    policy_from_dict,
    request_path,
    route_for,
)

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

# --------------------------------------------------------------------------- refusals

#: Rule names a :class:`RefusedError` carries (stable: logs and tests match on them).
BAD_AUTHORITY = "bad-authority"
HOST_NOT_IN_ROUTES = "host-not-in-routes"
IP_NOT_COVERED = "ip-not-covered"
NEVER_REACHED = "never-reached"
PRIVATE_ANSWER = "private-answer"
NO_ADDRESS = "no-address"
RESOLVER_FAILED = "resolver-failed"
SNI_MISSING = "sni-missing"
SNI_MISMATCH = "sni-mismatch"
SNI_ON_IP = "sni-on-ip-literal"
HOST_MISMATCH = "host-mismatch"
URL_HOST_MISMATCH = "url-host-mismatch"
HOST_HEADERS = "host-headers"
HTTPS_WITHOUT_CONNECT = "https-without-connect"
TLS_WITHOUT_CONNECT = "tls-without-connect"
SECOND_CONNECT = "second-connect"
NOT_HTTP = "not-http"
UNAPPROVED_CONNECTION = "unapproved-connection"
INTERNAL_ERROR = "internal-error"
NO_CONFIG = "no-config"
NO_ROUTE_MATCH = "no-route-match"
AMBIGUOUS_PATH = "ambiguous-path"
AUTH_OVER_HTTP = "auth-over-http"
CREDENTIAL_MISSING = "credential-missing"


class RefusedError(Exception):
    """The proxy refuses: ``status`` is the HTTP status to answer with (where an
    answer is possible), ``rule`` one of the rule names above, ``reason`` a sentence
    naming the rule and the values it compared."""

    def __init__(self, status: int, rule: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.rule = rule
        self.reason = reason


# --------------------------------------------------------------------------- authorities


@dataclass(frozen=True)
class Authority:
    """A checked ``host:port``. ``host`` is a lower-case A-label name without a
    trailing dot, or an IP address in its canonical text (``ip`` then holds it)."""

    host: str
    port: int
    ip: IPAddress | None = None

    @property
    def netloc(self) -> str:
        """``host:port``, with brackets around an IPv6 address."""
        if self.ip is not None and self.ip.version == 6:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


_PORT_RE = re.compile(r"[1-9][0-9]{0,4}")
_DOTTED_RE = re.compile(r"[0-9.]+")


def _bad(raw: str, why: str) -> RefusedError:
    return RefusedError(400, BAD_AUTHORITY, f"authority {raw!r} is refused: {why}")


def _check_characters(raw: str) -> None:
    for char in raw:
        if ord(char) < 0x20 or ord(char) == 0x7F:
            raise _bad(raw, f"it holds the control character {char!r}")
        if char == " ":
            raise _bad(raw, "it holds a space")
        if char == "%":
            raise _bad(raw, "it holds '%' (percent-encoding or an IPv6 zone id)")


def _parse_port(raw: str, text: str) -> int:
    if not _PORT_RE.fullmatch(text) or int(text) > 65535:
        if text and text.strip("0") == "":
            raise _bad(raw, "port 0 is not a port")
        raise _bad(raw, f"port {text!r} is not a number from 1 to 65535 without leading zeros")
    return int(text)


def _parse_host(raw: str, text: str) -> tuple[str, IPAddress | None]:
    """A host name or IPv4 literal (IPv6 is handled by the caller): canonical text."""
    if not text:
        raise _bad(raw, "the host is empty")
    if _DOTTED_RE.fullmatch(text):
        try:
            address = ipaddress.IPv4Address(text)
        except ValueError:
            raise _bad(raw, f"{text!r} is not a dotted-quad IPv4 address") from None
        return str(address), address
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise _bad(raw, f"{text!r} has no IDNA A-label form ({exc})") from None
    try:
        return normalize_name(text), None
    except ValueError as exc:
        raise _bad(raw, str(exc)) from None


def _split_bracketed(raw: str) -> tuple[str, IPAddress, str | None]:
    """``[v6]`` or ``[v6]:port``: the canonical address text, the address, the port text."""
    end = raw.find("]")
    if end == -1:
        raise _bad(raw, "'[' without ']'")
    inner, rest = raw[1:end], raw[end + 1 :]
    try:
        address = ipaddress.IPv6Address(inner)
    except ValueError:
        raise _bad(raw, f"{inner!r} in brackets is not an IPv6 address") from None
    if rest and not rest.startswith(":"):
        raise _bad(raw, f"{rest!r} follows the IPv6 address")
    return str(address), address, (rest[1:] if rest else None)


def parse_authority(raw: str, default_port: int | None = None) -> Authority:
    """Parse a CONNECT target, Host header or ``:authority``; raise :class:`RefusedError`
    (400) saying why it is not a plain ``host[:port]``.

    ``default_port`` is used when the port is absent; without one, a port is required.
    """
    if not isinstance(raw, str):
        raise _bad(repr(raw), "it is not text")
    _check_characters(raw)
    ip: IPAddress | None
    if raw.startswith("["):
        host, ip, port_text = _split_bracketed(raw)
    else:
        if raw.count(":") > 1:
            raise _bad(raw, "an IPv6 address must be written in brackets ([2001:db8::1]:443)")
        text, colon, port_found = raw.partition(":")
        port_text = port_found if colon else None
        host, ip = _parse_host(raw, text[:-1] if text.endswith(".") else text)
    if port_text is not None:
        port = _parse_port(raw, port_text)
    elif default_port is not None:
        port = default_port
    else:
        raise _bad(raw, "it has no port")
    return Authority(host, port, ip)


def parse_sni(raw: str) -> Authority:
    """A TLS SNI value as an :class:`Authority` without a meaningful port (0)."""
    if not isinstance(raw, str) or ":" in raw or raw.startswith("["):
        raise RefusedError(400, BAD_AUTHORITY, f"SNI {raw!r} is not a host name")
    _check_characters(raw)
    text = raw[:-1] if raw.endswith(".") else raw
    host, ip = _parse_host(raw, text)
    return Authority(host, 0, ip)


# --------------------------------------------------------------------------- addresses

_SPECIAL: tuple[tuple[str, str], ...] = (
    ("10.0.0.0/8", "private (RFC 1918)"),
    ("172.16.0.0/12", "private (RFC 1918)"),
    ("192.168.0.0/16", "private (RFC 1918)"),
    ("100.64.0.0/10", "shared address space (CGNAT, RFC 6598)"),
    ("192.0.0.0/24", "IETF protocol assignments (RFC 6890)"),
    ("198.18.0.0/15", "benchmarking (RFC 2544)"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved (RFC 1112)"),
    ("255.255.255.255/32", "broadcast"),
    ("fc00::/7", "unique local (ULA, RFC 4193)"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
    ("64:ff9b::/96", "NAT64 (it embeds an IPv4 address)"),
    ("64:ff9b:1::/48", "local NAT64 (RFC 8215)"),
    ("2002::/16", "6to4 (it embeds an IPv4 address)"),
    ("2001::/32", "Teredo (it embeds an IPv4 address)"),
    ("100::/64", "discard-only (RFC 6666)"),
)

#: Ranges a resolved answer may not fall in unless a ``cidr`` route covers it:
#: :data:`~._policy.NEVER_ROUTED` (which nothing opens) and the private and special
#: ranges above.
SPECIAL_NETWORKS: tuple[tuple[IPNetwork, str], ...] = NEVER_ROUTED + tuple(
    (ipaddress.ip_network(net), why) for net, why in _SPECIAL
)


def _first_match(address: IPAddress, networks: Sequence[tuple[IPNetwork, str]]) -> str | None:
    for network, why in networks:
        if address.version == network.version and address in network:
            return why
    return None


# --------------------------------------------------------------------------- config

#: 2: the policy carries each route's request matchers (``policy.http``), and the
#: log level of ``policy.log`` (raised to ``log.minimum``, the host's floor) is what the
#: proxy writes to ``log.file``. 3: the policy carries the bottle's and routes' DLP
#: settings (``policy.dlp``), which the addon hands to :mod:`._dlp`.
CONFIG_FORMAT = 3
_CONFIG_KEYS = (
    "format",
    "policy",
    "resolver",
    "refused_networks",
    "private_networks",
    "log",
    "secrets",
)


class ConfigError(ValueError):
    """The proxy's configuration is unusable; the message names the key."""


@dataclass(frozen=True)
class EgressConfig:
    """What the addon needs: the compiled policy, the bottle's resolver
    (``(address, port)``), networks it never reaches besides
    :data:`~._policy.NEVER_ROUTED` (the bottle's gateway, the host's own addresses),
    where decisions are logged (``None``: standard output), and private networks
    where an allowed *name* may resolve to (a company's internal services; the
    demo's stand-in): answers there are not refused as private, and no address in
    them is reachable by literal or by the firewall unless a ``cidr`` route says so."""

    policy: EgressPolicy
    resolver: tuple[str, int]
    refused_networks: tuple[IPNetwork, ...] = ()
    log_file: str | None = None
    private_networks: tuple[IPNetwork, ...] = ()
    log_minimum: int = 0
    #: the runtime secrets file (:data:`CONTAINER_SECRETS_DIR`; None: none is read),
    #: and whether requests need it (some route has ``auth``: until it is delivered,
    #: those requests are refused)
    secrets_file: str | None = None
    secrets_required: bool = False

    @property
    def log_level(self) -> int:
        """What the proxy logs: the manifest's ``egress.log``, raised to the host's floor."""
        return max(self.policy.log, self.log_minimum)

    @property
    def routes(self) -> tuple[IPNetwork, ...]:
        """The policy's ``cidr`` routes as networks."""
        return tuple(ipaddress.ip_network(cidr) for cidr in self.policy.cidrs)

    @property
    def never(self) -> tuple[tuple[IPNetwork, str], ...]:
        """Networks no route opens: NEVER_ROUTED and the configured ones."""
        extra = tuple(
            (net, "a network this bottle may never reach (its gateway or the host)")
            for net in self.refused_networks
        )
        return NEVER_ROUTED + extra


def _resolver(text: str) -> tuple[str, int]:
    canonical = normalize_upstream(text)
    address, _, port = canonical.partition("#")
    return address, int(port) if port else 53


def render_config(
    policy: EgressPolicy,
    resolver: str,
    refused_networks: Sequence[str] = (),
    log_file: str | None = None,
    *,
    private_networks: Sequence[str] = (),
    log_minimum: int = 0,
) -> dict[str, Any]:
    """The proxy's configuration as plain data (write it with :func:`dumps_config`).

    ``resolver`` is the bottle's own dnsmasq, ``IP`` or ``IP#PORT``;
    ``refused_networks`` are addresses or CIDRs the proxy must never connect to
    whatever the routes say (the bottle network's gateway, the host's addresses);
    ``private_networks`` private CIDRs allowed names may resolve to (never a
    loopback, link-local, metadata or unspecified range); ``log_minimum`` the
    lowest log level the host's operator wants whatever the manifest says (0-2).
    Raises :class:`ConfigError` for a bad value.
    """
    data: dict[str, Any] = {
        "format": CONFIG_FORMAT,
        "policy": policy.to_dict(),
        "resolver": resolver,
        "refused_networks": list(refused_networks),
        "private_networks": list(private_networks),
        "log": {"file": log_file, "minimum": log_minimum},
        # the proxy reads its runtime secrets here; routes with auth need them
        "secrets": {"file": SECRETS_PATH, "required": bool(policy.auth)},
    }
    config = config_from_dict(data)  # validates, and canonicalises what it can
    data["resolver"] = "{}#{}".format(*config.resolver)
    data["refused_networks"] = [str(net) for net in config.refused_networks]
    data["private_networks"] = [str(net) for net in config.private_networks]
    return data


def dumps_config(data: Mapping[str, Any]) -> str:
    """The configuration file's text: stable key order, one trailing newline."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _config_policy(raw: Any) -> EgressPolicy:
    if not isinstance(raw, Mapping):
        raise ConfigError("policy: expected the compiled policy (EgressPolicy.to_dict())")
    try:
        policy = policy_from_dict(raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"policy: {exc}") from None
    if raw.get("hash") != policy.digest:
        raise ConfigError(
            f"policy: hash {raw.get('hash')!r} does not match its routes "
            f"({policy.digest}); write the compiler's output unchanged"
        )
    return policy


def _config_resolver(raw: Any) -> tuple[str, int]:
    if not isinstance(raw, str):
        raise ConfigError("resolver: expected 'IP' or 'IP#PORT' of the bottle's resolver")
    try:
        return _resolver(raw)
    except ValueError as exc:
        raise ConfigError(f"resolver: {exc}") from None


def _config_networks(raw: Any, key: str, *, strict: bool) -> tuple[IPNetwork, ...]:
    """The list ``key`` of networks: CIDRs with no host bits when ``strict``, else
    addresses or CIDRs (host bits dropped)."""
    items, item = (
        ("CIDRs", "a network (CIDR)") if strict else ("addresses or CIDRs", "an address or CIDR")
    )
    if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw):
        raise ConfigError(f"{key}: expected a list of {items}")
    found: list[IPNetwork] = []
    for text in raw:
        try:
            found.append(ipaddress.ip_network(text, strict=strict))
        except ValueError:
            raise ConfigError(f"{key}: {text!r} is not {item}") from None
    return tuple(found)


def _config_private(raw: Any) -> tuple[IPNetwork, ...]:
    found = _config_networks(raw, "private_networks", strict=True)
    for text, net in zip(raw, found, strict=True):
        for never, why in NEVER_ROUTED:
            if net.version == never.version and net.overlaps(never):
                raise ConfigError(f"private_networks: {text} overlaps {never}, {why}")
    return found


def _config_log_minimum(raw: Any) -> int:
    minimum = raw.get("minimum", 0) if isinstance(raw, Mapping) else None
    if isinstance(minimum, bool) or minimum not in (0, 1, 2):
        raise ConfigError(f"log.minimum: expected 0, 1 or 2, got {minimum!r}")
    return int(minimum)


def _config_log_file(raw: Any) -> str | None:
    if not isinstance(raw, Mapping) or set(raw) - {"file", "minimum"}:
        raise ConfigError("log: expected {'file': null or an absolute path, 'minimum': 0-2}")
    log_file = raw.get("file")
    if log_file is not None and (not isinstance(log_file, str) or not log_file.startswith("/")):
        raise ConfigError(f"log.file: expected null or an absolute path, got {log_file!r}")
    return log_file


def config_from_dict(data: Any) -> EgressConfig:
    """Check a configuration object and build the :class:`EgressConfig`.

    The policy is rebuilt with :func:`~._policy.policy_from_dict` and its hash must
    equal the one written down, so a hand-edited or truncated policy is refused.
    """
    if not isinstance(data, Mapping):
        raise ConfigError("the configuration must be a JSON object")
    unknown = sorted(set(data) - set(_CONFIG_KEYS))
    if unknown:
        raise ConfigError(f"unknown keys {unknown}; the keys are {list(_CONFIG_KEYS)}")
    if data.get("format") != CONFIG_FORMAT:
        raise ConfigError(
            f"format: expected {CONFIG_FORMAT}, got {data.get('format')!r} (a configuration "
            "written by another version of bot-bottle; bring the bottle up again)"
        )
    config = EgressConfig(
        _config_policy(data.get("policy")),
        _config_resolver(data.get("resolver")),
        _config_networks(data.get("refused_networks", []), "refused_networks", strict=False),
        _config_log_file(data.get("log", {})),
        _config_private(data.get("private_networks", [])),
        _config_log_minimum(data.get("log", {})),
        *_config_secrets(data.get("secrets", {"file": None, "required": False})),
    )
    _check_secrets_required(config)
    return config


def _config_secrets(raw: Any) -> tuple[str | None, bool]:
    if not isinstance(raw, Mapping) or set(raw) != {"file", "required"}:
        raise ConfigError("secrets: expected {'file': null or an absolute path, 'required': bool}")
    path, required = raw["file"], raw["required"]
    if path is not None and (not isinstance(path, str) or not path.startswith("/")):
        raise ConfigError(f"secrets.file: expected null or an absolute path, got {path!r}")
    if not isinstance(required, bool):
        raise ConfigError(f"secrets.required: expected true or false, got {required!r}")
    return path, required


def _check_secrets_required(config: EgressConfig) -> None:
    """Routes with ``auth`` need the runtime secrets, and only they make them required."""
    routes = [key for key, _ in config.policy.auth]
    if config.secrets_required != bool(routes):
        why = f"routes {routes} have auth" if routes else "no route has auth"
        raise ConfigError(f"secrets.required: expected {bool(routes)} ({why})")
    if routes and config.secrets_file is None:
        raise ConfigError(f"secrets.file: routes {routes} have auth, so a file is needed")


def load_config(path: str) -> EgressConfig:
    """Read and check the configuration file; :class:`ConfigError` names the file."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {exc}") from None
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


# --------------------------------------------------------------------------- decisions


def _route_hint(policy: EgressPolicy, name: str) -> str:
    """Why a name near a route is still not allowed (the usual surprises)."""
    for exact in policy.exact_hosts:
        if name.endswith("." + exact):
            return f" ({exact} is an exact route: it allows that name only, nothing below it)"
    if name in policy.wildcard_zones:
        return f" (*.{name} allows the names below {name}, not {name} itself)"
    return ""


def check_ip(config: EgressConfig, address: IPAddress) -> None:
    """An IP literal as a destination: refused in NEVER_ROUTED and the refused
    networks, allowed only where a ``cidr`` route covers it."""
    why = _first_match(address, config.never)
    if why is not None:
        raise RefusedError(
            403, NEVER_REACHED, f"{address} is {why}, which a bottle may never reach"
        )
    if any(address.version == net.version and address in net for net in config.routes):
        return
    raise RefusedError(
        403,
        IP_NOT_COVERED,
        f"IP address {address} is not covered by a cidr route of the bottle "
        "(an IP literal needs a cidr route)",
    )


def check_destination(config: EgressConfig, target: Authority) -> None:
    """May the bottle go to ``target`` at all? Names by the policy's routes
    (``allows_name``), IP literals by its ``cidr`` routes (:func:`check_ip`)."""
    if target.ip is not None:
        check_ip(config, target.ip)
        return
    if not allows_name(config.policy, target.host):
        raise RefusedError(
            403,
            HOST_NOT_IN_ROUTES,
            f"host {target.host} is not in the bottle's routes"
            + _route_hint(config.policy, target.host),
        )


def connect_target(config: EgressConfig, raw: str) -> Authority:
    """The target of a CONNECT request (``host:port``, port required), checked."""
    target = parse_authority(raw)
    check_destination(config, target)
    return target


def check_answer(config: EgressConfig, name: str, address: IPAddress) -> None:
    """May the proxy connect to ``address``, an answer for the allowed ``name``?"""
    why = _first_match(address, config.never)
    if why is not None:
        raise RefusedError(
            403,
            NEVER_REACHED,
            f"host {name} resolved to {address}, which is {why}; a bottle may never reach it",
        )
    if any(address.version == net.version and address in net for net in config.routes):
        return
    if any(address.version == n.version and address in n for n in config.private_networks):
        return
    why = _first_match(address, SPECIAL_NETWORKS)
    if why is not None:
        raise RefusedError(
            403,
            PRIVATE_ANSWER,
            f"host {name} resolved to {address}, which is {why} and not covered by "
            "a cidr route of the bottle",
        )


def choose_address(config: EgressConfig, name: str, answers: Sequence[IPAddress]) -> IPAddress:
    """The address to pin for ``name``: every answer must pass :func:`check_answer`
    (one bad answer refuses the name: that is how rebinding looks); the first wins."""
    if not answers:
        raise RefusedError(
            502, NO_ADDRESS, f"host {name} has no address in the bottle's resolver (no A or AAAA)"
        )
    for address in answers:
        check_answer(config, name, address)
    return answers[0]


def check_sni(tunnel: Authority, sni: str | None) -> None:
    """The TLS ClientHello inside a CONNECT tunnel names the tunnel's host.

    A name tunnel needs the same name as SNI; an IP-literal tunnel must carry no
    SNI (RFC 6066 forbids addresses there), so no other name rides on it."""
    if tunnel.ip is not None:
        if sni:
            raise RefusedError(
                403,
                SNI_ON_IP,
                f"SNI {sni} does not match CONNECT {tunnel.netloc} (an IP literal tunnel "
                "carries no SNI)",
            )
        return
    if not sni:
        raise RefusedError(
            403, SNI_MISSING, f"the TLS ClientHello for CONNECT {tunnel.netloc} carries no SNI"
        )
    try:
        named = parse_sni(sni)
    except RefusedError as exc:
        raise RefusedError(
            403, SNI_MISMATCH, f"SNI {sni!r} does not match CONNECT {tunnel.host}: {exc.reason}"
        ) from None
    if named.host != tunnel.host:
        raise RefusedError(
            403, SNI_MISMATCH, f"SNI {named.host} does not match CONNECT {tunnel.host}"
        )


def request_target(
    config: EgressConfig,
    tunnel: Authority | None,
    *,
    scheme: str,
    url_host: str,
    url_port: int,
    host_headers: Sequence[str],
    authority: str,
) -> Authority:
    """The checked destination of one HTTP request (each HTTP/2 stream is one).

    ``url_host``/``url_port`` are where mitmproxy would send it (the absolute-form
    URL's, or else the Host header's), ``host_headers`` every Host header,
    ``authority`` the HTTP/2 ``:authority`` or the authority of an HTTP/1
    absolute-form target as it will be forwarded (empty for origin-form). All of them must
    name one host and port; inside a CONNECT tunnel that must be the tunnel's (whose
    SNI :func:`check_sni` already tied to it); outside, the destination must pass
    :func:`check_destination`. Plain ``https://`` requests without CONNECT are
    refused: TLS goes through CONNECT, so SNI is checked.
    """
    default_port = 443 if scheme == "https" else 80
    if tunnel is None and scheme != "http":
        raise RefusedError(
            400,
            HTTPS_WITHOUT_CONNECT,
            f"a {scheme}:// request without CONNECT is refused; send HTTPS through CONNECT",
        )
    if len(host_headers) > 1:
        raise RefusedError(
            400, HOST_HEADERS, f"the request has {len(host_headers)} Host headers; one is allowed"
        )
    claims: list[tuple[str, str]] = [(f"Host {h}", h) for h in host_headers]
    if authority:
        claims.append((f"the request's authority {authority}", authority))
    if not claims:
        raise RefusedError(400, HOST_HEADERS, "the request has no Host header and no :authority")
    url = url_host if ":" not in url_host else f"[{url_host}]"
    target = parse_authority(f"{url}:{url_port}")
    for label, raw in claims:
        claimed = parse_authority(raw, default_port)
        if tunnel is not None and claimed != tunnel:
            via = "the TLS SNI and CONNECT host" if scheme == "https" else "CONNECT"
            raise RefusedError(421, HOST_MISMATCH, f"{label} does not match {via} {tunnel.netloc}")
        if claimed != target:
            raise RefusedError(
                400,
                URL_HOST_MISMATCH,
                f"the request URL's host {target.netloc} does not match {label}",
            )
    if tunnel is not None:
        return tunnel
    check_destination(config, target)
    return target


def check_request(
    config: EgressConfig,
    target: Authority,
    *,
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]],
) -> str | None:
    """May this request go to ``target`` (the identity :func:`request_target` checked)?

    Its route is what the compiler says for that name (:func:`~._policy.route_for`:
    the exact host, else the deepest wildcard zone); IP literals (``cidr`` routes)
    have no matches. A route without ``matches`` admits every request; otherwise one
    entry must admit ``method``, ``path`` (the request target; the query is not
    matched) and ``headers`` (name, value pairs as sent). Returns the route key (None
    for an IP literal). Refuses 403 :data:`NO_ROUTE_MATCH` naming the route, or 400
    :data:`AMBIGUOUS_PATH` when a route with path predicates gets a path an origin
    could read otherwise (dot segments, encoded slashes: :func:`~._policy.request_path`).
    """
    if target.ip is not None:
        return None
    key = route_for(config.policy, target.host)
    if key is None:  # request_target checked it; never reached
        raise RefusedError(403, HOST_NOT_IN_ROUTES, f"host {target.host} has no route")
    matchers = config.policy.matches_for(key)
    if matchers is None:
        return key
    shown = log_target(path)
    checked = path.split("?", 1)[0]
    if any(m.paths for m in matchers):
        try:
            checked = request_path(path)
        except ValueError as exc:
            raise RefusedError(
                400,
                AMBIGUOUS_PATH,
                f"{method} {shown} on route {key}: {exc}; the route matches paths, so the "
                "path must be unambiguous",
            ) from None
    if any(m.matches(method, checked, headers) for m in matchers):
        return key
    raise RefusedError(
        403,
        NO_ROUTE_MATCH,
        f"{method} {shown} matches no entry of the 'matches' of route {key} "
        "(its path, method or headers are not allowed)",
    )


# --------------------------------------------------------------------------- credentials


class SecretsError(ValueError):
    """The runtime secrets file is unusable; the message never holds a value."""


@dataclass(frozen=True)
class Secrets:
    """The proxy's runtime secrets (:func:`dumps_secrets`): route credentials by
    ``token_ref`` and the bottle's known secret values. ``repr`` shows no value."""

    credentials: Mapping[str, str] = field(default_factory=dict, repr=False)
    known_secrets: tuple[str, ...] = field(default=(), repr=False)

    @property
    def values(self) -> tuple[str, ...]:
        """Every value the log must never show."""
        return tuple(sorted({*self.credentials.values(), *self.known_secrets} - {""}))


def parse_secrets(text: bytes | str) -> Secrets:
    """The runtime secrets file's content, checked; :class:`SecretsError` says what is
    wrong without quoting any of it."""
    try:
        data = json.loads(text)
    except ValueError:
        raise SecretsError("the runtime secrets are not JSON") from None
    if not isinstance(data, Mapping) or data.get("format") != SECRETS_FORMAT:
        raise SecretsError(f"the runtime secrets are not format {SECRETS_FORMAT}")
    credentials, known = data.get("credentials", {}), data.get("known_secrets", [])
    if not isinstance(credentials, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in credentials.items()
    ):
        raise SecretsError("credentials: expected a mapping of variable names to strings")
    if not isinstance(known, list) or not all(isinstance(v, str) for v in known):
        raise SecretsError("known_secrets: expected a list of strings")
    return Secrets(dict(credentials), tuple(known))


def load_secrets(path: str) -> Secrets | None:
    """The runtime secrets file at ``path``, or None while it is not there (not
    delivered yet). Raises :class:`SecretsError` (naming the file, no value)."""
    try:
        with open(path, "rb") as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SecretsError(f"{path}: cannot read the runtime secrets: {exc.strerror}") from None
    try:
        return parse_secrets(text)
    except SecretsError as exc:
        raise SecretsError(f"{path}: {exc}") from None


def secrets_stamp(path: str) -> tuple[int, int, int, int] | None:
    """What tells a changed secrets file (device, inode, size, mtime in ns), or None
    when there is none: the addon re-reads the file when this changes."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns)


@dataclass(frozen=True)
class Credential:
    """What the proxy puts on a credentialed route's request: the route, the variable
    the value came from, and the ``Authorization`` value (``repr`` hides it)."""

    route: str
    token_ref: str
    header: str = field(repr=False)


def credential_for(
    config: EgressConfig, route: str | None, *, scheme: str, secrets: Secrets | None
) -> Credential | None:
    """The credential for a request of ``route`` -- the route key :func:`check_request`
    returned for the checked identity (CONNECT = SNI = Host), never a header -- or
    None when the route has no ``auth``.

    Refuses 403 :data:`AUTH_OVER_HTTP` when ``scheme`` is not ``https`` (no credential
    goes over plain HTTP, not even inside a CONNECT tunnel), and 503
    :data:`CREDENTIAL_MISSING` when the runtime secrets are not delivered or do not
    hold the route's ``token_ref`` (fail closed: the request never leaves without it).
    """
    auth = config.policy.auth_for(route) if route is not None else None
    if auth is None or route is None:
        return None
    if scheme != "https":
        raise RefusedError(
            403,
            AUTH_OVER_HTTP,
            f"route {route} injects a credential ({auth.token_ref}), which never goes over "
            f"plain HTTP; use https://{route.removeprefix('*.')}",
        )
    value = None if secrets is None else secrets.credentials.get(auth.token_ref)
    if not value:
        state = "not delivered yet" if secrets is None else f"without {auth.token_ref}"
        raise RefusedError(
            503,
            CREDENTIAL_MISSING,
            f"route {route} needs the credential {auth.token_ref}, and the proxy's runtime "
            f"secrets are {state}; bring the bottle up again with {auth.token_ref} set",
        )
    return Credential(route, auth.token_ref, f"{auth.scheme} {value}")


# --------------------------------------------------------------------------- log

LOG_SOURCE = "egress-proxy"
REDACTED = "[redacted]"
QUERY_REDACTED = "?" + REDACTED
#: Header values are never logged; these events are written at log level 1 and up,
#: the others (``connect``, ``request``, ``response``, ``websocket_*``) at level 2.
LOG_LEVEL_1_EVENTS = frozenset({"start", "refused", "error", "dlp"})


def log_target(target: str) -> str:
    """A request target as the log shows it: the path, and ``?[redacted]`` in place of
    a query (queries carry tokens and user data; the path is what routes match)."""
    path, _, query = target.partition("?")
    return path + (QUERY_REDACTED if query else "")


def redact(value: Any, secrets: Sequence[str]) -> Any:
    """``value`` (text, or lists and mappings of it) with every occurrence of each
    secret replaced by ``[redacted]``: removed, not hashed, so nothing in the log
    lets a guess be confirmed. Longest secrets first (one may contain another)."""
    if isinstance(value, str):
        for secret in sorted((s for s in secrets if s), key=len, reverse=True):
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, Mapping):
        return {k: redact(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, secrets) for v in value]
    return value


def log_line(
    log_level: int,
    event: str,
    fields: Mapping[str, Any],
    *,
    now: float,
    secrets: Sequence[str] = (),
) -> str | None:
    """The JSON line the proxy writes for ``event``, or None when ``log_level`` (the
    policy's ``egress.log``) does not ask for it: 0 writes nothing, 1 blocks, errors
    and DLP hits (:data:`LOG_LEVEL_1_EVENTS`), 2 every request and response line too.
    Every line carries ``source: egress-proxy`` and a UNIX ``time``; string values are
    passed through :func:`redact`."""
    level = 1 if event in LOG_LEVEL_1_EVENTS else 2
    if log_level < level:
        return None
    entry = {**redact(dict(fields), secrets), "time": round(now, 3), "event": event}
    entry["source"] = LOG_SOURCE
    return json.dumps(entry, sort_keys=True, ensure_ascii=True)


# --------------------------------------------------------------------------- DNS

QTYPE_A = 1
QTYPE_AAAA = 28
_QTYPE_CNAME = 5
_RCODES = {1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


class DnsError(Exception):
    """The resolver did not give a usable answer."""


class DnsTruncatedError(DnsError):
    """The UDP answer was truncated: ask again over TCP."""


def dns_query(name: str, qtype: int, qid: int) -> bytes:
    """A recursive query for ``name`` (a canonical host name) and ``qtype``."""
    question = b"".join(bytes([len(label)]) + label.encode("ascii") for label in name.split("."))
    return (
        struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
        + question
        + b"\0"
        + struct.pack("!HH", qtype, 1)
    )


def _read_name(packet: bytes, offset: int) -> tuple[bytes, int]:
    """A (possibly compressed) name at ``offset``: lower-cased wire labels joined by
    dots, and the offset after it in the record."""
    labels: list[bytes] = []
    end = -1
    jumps = 0
    while True:
        if offset >= len(packet):
            raise DnsError("the answer ends inside a name")
        length = packet[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(packet):
                raise DnsError("the answer ends inside a compression pointer")
            if end == -1:
                end = offset + 2
            jumps += 1
            if jumps > 64:
                raise DnsError("the answer's name compression loops")
            offset = ((length & 0x3F) << 8) | packet[offset + 1]
            continue
        if length & 0xC0:
            raise DnsError("the answer uses an unknown label type")
        offset += 1
        if length == 0:
            break
        labels.append(packet[offset : offset + length].lower())
        offset += length
    return b".".join(labels), (end if end != -1 else offset)


def _check_header(packet: bytes, qid: int) -> int:
    """The answer count of a response to query ``qid`` that carries no error."""
    if len(packet) < 12:
        raise DnsError("the answer is shorter than a DNS header")
    rid, flags, qdcount, ancount = struct.unpack("!HHHH", packet[:8])
    if rid != qid or not flags & 0x8000:
        raise DnsError("the packet is not the answer to this query")
    if flags & 0x0200:
        raise DnsTruncatedError("the answer is truncated")
    rcode = flags & 0x000F
    if rcode:
        raise DnsError(_RCODES.get(rcode, f"rcode {rcode}"))
    if qdcount != 1:
        raise DnsError(f"the answer has {qdcount} questions")
    return int(ancount)


def _records(packet: bytes, offset: int, count: int) -> list[tuple[bytes, int, bytes, int]]:
    """``count`` resource records from ``offset``: (owner, type, rdata, rdata offset),
    class IN only."""
    records: list[tuple[bytes, int, bytes, int]] = []
    for _ in range(count):
        owner, offset = _read_name(packet, offset)
        if offset + 10 > len(packet):
            raise DnsError("the answer ends inside a record")
        rtype, rclass, _ttl, rdlength = struct.unpack("!HHIH", packet[offset : offset + 10])
        offset += 10
        if offset + rdlength > len(packet):
            raise DnsError("the answer ends inside a record's data")
        if rclass == 1:
            records.append((owner, rtype, packet[offset : offset + rdlength], offset))
        offset += rdlength
    return records


def dns_answers(packet: bytes, qid: int, name: str, qtype: int) -> list[IPAddress]:
    """The addresses a response gives for ``name``, following its CNAME chain.

    Raises :class:`DnsError` for a response that does not answer this query (wrong
    id, not a response, another question), an error code (``NXDOMAIN`` ...) or a
    malformed packet, and :class:`DnsTruncatedError` when TC is set.
    """
    ancount = _check_header(packet, qid)
    wanted = name.lower().encode("ascii")
    qname, offset = _read_name(packet, 12)
    if offset + 4 > len(packet):
        raise DnsError("the answer ends inside its question")
    if qname != wanted or struct.unpack("!HH", packet[offset : offset + 4]) != (qtype, 1):
        raise DnsError("the answer is for another question")
    records = _records(packet, offset + 4, ancount)
    current = wanted
    for _ in range(16):
        alias = [r for r in records if r[0] == current and r[1] == _QTYPE_CNAME]
        if not alias:
            break
        current, _ = _read_name(packet, alias[0][3])
    else:
        raise DnsError("the answer's CNAME chain is too long")
    size = 4 if qtype == QTYPE_A else 16
    found: list[IPAddress] = []
    for owner, rtype, rdata, _ in records:
        if owner == current and rtype == qtype:
            if len(rdata) != size:
                raise DnsError("an address record has the wrong length")
            found.append(ipaddress.ip_address(rdata))
    return found


def _exchange_udp(resolver: tuple[str, int], query: bytes, qid: int, deadline: float) -> bytes:
    family = socket.AF_INET6 if ":" in resolver[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect(resolver)  # only datagrams from the resolver are received
        sock.send(query)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DnsError("the resolver did not answer in time")
            sock.settimeout(remaining)
            try:
                packet = sock.recv(65535)
            except TimeoutError:
                raise DnsError("the resolver did not answer in time") from None
            if len(packet) >= 2 and struct.unpack("!H", packet[:2])[0] == qid:
                return packet


def _recv_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise DnsError("the resolver closed the TCP connection early")
        data += chunk
    return data


def _exchange_tcp(resolver: tuple[str, int], query: bytes, deadline: float) -> bytes:
    remaining = max(deadline - time.monotonic(), 0.01)
    with socket.create_connection(resolver, timeout=remaining) as sock:
        sock.sendall(struct.pack("!H", len(query)) + query)
        (length,) = struct.unpack("!H", _recv_exactly(sock, 2))
        return _recv_exactly(sock, length)


def resolve(name: str, resolver: tuple[str, int], timeout: float = 3.0) -> list[IPAddress]:
    """Ask the bottle's resolver for ``name``'s addresses: A first, AAAA when there
    is no A record. Raises :class:`RefusedError` (502) naming the resolver's answer."""
    for qtype in (QTYPE_A, QTYPE_AAAA):
        deadline = time.monotonic() + timeout
        qid = secrets.randbelow(0x10000)
        query = dns_query(name, qtype, qid)
        try:
            try:
                packet = _exchange_udp(resolver, query, qid, deadline)
                found = dns_answers(packet, qid, name, qtype)
            except DnsTruncatedError:
                packet = _exchange_tcp(resolver, query, deadline)
                found = dns_answers(packet, qid, name, qtype)
        except (DnsError, OSError) as exc:
            raise RefusedError(
                502,
                RESOLVER_FAILED,
                f"host {name} did not resolve through the bottle's resolver "
                f"{resolver[0]}#{resolver[1]}: {exc}",
            ) from None
        if found:
            return found
    return []


# --------------------------------------------------------------------------- CA

CA_FILE = "mitmproxy-ca.pem"
CA_CERT_FILE = "mitmproxy-ca-cert.pem"
DHPARAM_FILE = "mitmproxy-dhparam.pem"
_CN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._()-]{0,63}")
_PEM_RE = re.compile(
    rb"-----BEGIN (?P<kind>[A-Z0-9 ]+)-----\r?\n"
    rb"(?P<body>[A-Za-z0-9+/=\r\n]+)"
    rb"-----END (?P=kind)-----"
)


@dataclass(frozen=True)
class CaState:
    """A bottle's CA as the agent sees it: its certificate and that certificate's
    SHA-256 fingerprint (``sha256:<hex>``; stamp it on the agent so a new CA
    recreates it). ``changed`` says whether :func:`ensure_ca` made it."""

    cert_pem: str
    fingerprint: str
    changed: bool = False


def ca_openssl_config(common_name: str) -> str:
    """An ``openssl req`` configuration for a bottle's CA: self-signed, CA:TRUE with
    path length 0 (it signs the proxy's leaf certificates only), key usage
    keyCertSign+cRLSign, a subject key identifier (mitmproxy copies it into its
    leaves' authority key identifier, which Python 3.13's strict verification wants).
    """
    if not _CN_RE.fullmatch(common_name):
        raise ValueError(
            f"CA common name {common_name!r} must be 1-64 letters, digits, spaces or ._()-"
        )
    return (
        "[req]\n"
        "distinguished_name = dn\n"
        "x509_extensions = ext\n"
        "prompt = no\n"
        "[dn]\n"
        "O = bot-bottle\n"
        f"CN = {common_name}\n"
        "[ext]\n"
        "basicConstraints = critical, CA:TRUE, pathlen:0\n"
        "keyUsage = critical, keyCertSign, cRLSign\n"
        "subjectKeyIdentifier = hash\n"
    )


def ca_openssl_argv(
    openssl: str, config_path: str, key_path: str, cert_path: str, days: int
) -> list[str]:
    """``openssl req`` making an EC P-256 key (written straight to ``key_path``,
    never on a command line) and the self-signed CA certificate."""
    return [
        openssl,
        "req",
        "-x509",
        "-new",
        "-config",
        config_path,
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-noenc",
        "-sha256",
        "-days",
        str(days),
        "-keyout",
        key_path,
        "-out",
        cert_path,
    ]


def dhparam_openssl_argv(openssl: str, path: str) -> list[str]:
    """``openssl genpkey`` writing the RFC 7919 ffdhe2048 group (instant): mitmproxy
    writes a DH parameter file into ``confdir`` when it finds none, and the confdir
    is read-only in the container."""
    return [openssl, "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt",
            "group:ffdhe2048", "-out", path]  # fmt: skip


def pem_blocks(text: bytes) -> list[tuple[str, bytes]]:
    """The PEM blocks of ``text``: (kind, DER) pairs in order."""
    return [
        (match["kind"].decode("ascii"), base64.b64decode(match["body"]))
        for match in _PEM_RE.finditer(text)
    ]


def ca_files(key_pem: bytes, cert_pem: bytes) -> dict[str, bytes]:
    """mitmproxy's ``confdir`` format: ``mitmproxy-ca.pem`` holds the key and the
    certificate (the proxy's only), ``mitmproxy-ca-cert.pem`` the certificate alone
    (what the agent trusts). Raises ``ValueError`` unless each is what it says."""
    keys = [kind for kind, _ in pem_blocks(key_pem)]
    certs = [der for kind, der in pem_blocks(cert_pem) if kind == "CERTIFICATE"]
    if len(keys) != 1 or "PRIVATE KEY" not in keys[0] or len(certs) != 1:
        raise ValueError("expected one private key and one certificate in PEM form")
    if b"PRIVATE KEY" in cert_pem:
        raise ValueError("the certificate file holds a private key")
    key = key_pem if key_pem.endswith(b"\n") else key_pem + b"\n"
    cert = cert_pem if cert_pem.endswith(b"\n") else cert_pem + b"\n"
    return {CA_FILE: key + cert, CA_CERT_FILE: cert}


def fingerprint(cert_pem: bytes) -> str:
    """``sha256:<hex>`` of the first certificate in ``cert_pem`` (its DER form)."""
    certs = [der for kind, der in pem_blocks(cert_pem) if kind == "CERTIFICATE"]
    if not certs:
        raise ValueError("no certificate found")
    return "sha256:" + hashlib.sha256(certs[0]).hexdigest()


def read_ca(confdir: str) -> CaState | None:
    """The CA in ``confdir`` if it is complete and consistent (the key file's
    certificate is the agent's certificate, the DH file is there), else ``None``."""
    try:
        with open(os.path.join(confdir, CA_FILE), "rb") as handle:
            combined = handle.read()
        with open(os.path.join(confdir, CA_CERT_FILE), "rb") as handle:
            cert = handle.read()
    except OSError:
        return None
    if not os.path.exists(os.path.join(confdir, DHPARAM_FILE)):
        return None
    kinds = [kind for kind, _ in pem_blocks(combined)]
    try:
        same = fingerprint(combined) == fingerprint(cert)
    except ValueError:
        return None
    if not same or not any("PRIVATE KEY" in kind for kind in kinds) or b"PRIVATE" in cert:
        return None
    return CaState(cert.decode("ascii"), fingerprint(cert))


def _write_private(path: str, data: bytes, mode: int, owner: tuple[int, int] | None) -> None:
    directory = os.path.dirname(path)
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(temp, mode)
        if owner is not None:
            os.chown(temp, *owner)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def ensure_ca(
    confdir: str,
    common_name: str,
    *,
    owner: tuple[int, int] | None = None,
    openssl: str = "openssl",
    days: int = 3650,
    check_mode: bool = False,
    run: Callable[..., subprocess.CompletedProcess[bytes]] = subprocess.run,
) -> CaState:
    """Make the bottle's CA in ``confdir`` unless a consistent one is there.

    The key exists only in ``confdir/mitmproxy-ca.pem`` (mode 0600, owned by
    ``owner``, e.g. ``(PROXY_UID, PROXY_UID)``, so the proxy user can read it);
    mount ``confdir`` into the proxy alone, and only ``mitmproxy-ca-cert.pem`` (or
    the returned ``cert_pem``) into the agent. ``confdir`` itself is made 0700. In
    check mode nothing is written and an empty certificate is returned when one
    would be made.
    """
    current = read_ca(confdir)
    if current is not None:
        if owner is not None and not check_mode:
            for name in (CA_FILE, DHPARAM_FILE, CA_CERT_FILE):
                os.chown(os.path.join(confdir, name), *owner)
        return current
    if check_mode:
        return CaState("", "", changed=True)
    config = ca_openssl_config(common_name)
    os.makedirs(confdir, mode=0o700, exist_ok=True)
    os.chmod(confdir, 0o700)
    if owner is not None:
        os.chown(confdir, *owner)
    with tempfile.TemporaryDirectory(dir=confdir, prefix=".make-ca-") as work:
        os.chmod(work, 0o700)
        paths = {n: os.path.join(work, n) for n in ("req.cnf", "key.pem", "cert.pem", "dh.pem")}
        with open(paths["req.cnf"], "w", encoding="ascii") as handle:
            handle.write(config)
        for argv in (
            ca_openssl_argv(openssl, paths["req.cnf"], paths["key.pem"], paths["cert.pem"], days),
            dhparam_openssl_argv(openssl, paths["dh.pem"]),
        ):
            done = run(argv, capture_output=True, check=False)
            if done.returncode != 0:
                message = done.stderr.decode("utf-8", "replace").strip()
                raise RuntimeError(f"{argv[0]} {argv[1]} failed: {message}")
        contents: dict[str, bytes] = {}
        for name in ("key.pem", "cert.pem", "dh.pem"):
            with open(paths[name], "rb") as handle:
                contents[name] = handle.read()
    files = ca_files(contents["key.pem"], contents["cert.pem"])
    _write_private(os.path.join(confdir, DHPARAM_FILE), contents["dh.pem"], 0o644, owner)
    _write_private(os.path.join(confdir, CA_CERT_FILE), files[CA_CERT_FILE], 0o644, owner)
    _write_private(os.path.join(confdir, CA_FILE), files[CA_FILE], 0o600, owner)
    cert = files[CA_CERT_FILE]
    return CaState(cert.decode("ascii"), fingerprint(cert), changed=True)


# --------------------------------------------------------------------------- container

#: The image the role ``egress_proxy_image`` builds (tagged ``<hash>`` and ``latest``).
PROXY_IMAGE = "bot-bottle/egress-proxy"
#: The proxy's port on the bottle network (HTTP proxy: plain HTTP and CONNECT).
PROXY_PORT = 8080
#: The user the image runs as; the CA key must be readable by it (:func:`ensure_ca`).
PROXY_UID = 65532
#: Mount point of the code (read-only): the files of :func:`proxy_code_files` below it,
#: at their collection path, so they import each other the same way everywhere.
CONTAINER_CODE_ROOT = "/opt/bot-bottle/egress"
#: Mount point of the configuration file (read-only).
CONTAINER_CONFIG = "/etc/bot-bottle/egress/config.json"
#: Mount point of the CA directory, mitmproxy's ``confdir`` (read-only).
CONTAINER_CONFDIR = "/etc/bot-bottle/egress/ca"

#: Mount point of the CA file the proxy verifies upstream certificates against, when
#: one is given (a private origin; the default is the image's public roots).
CONTAINER_TRUSTED_CA = "/etc/bot-bottle/egress/upstream-ca.pem"
#: Where the agent finds its bottle's CA certificate (never the key), and the system
#: trust bundle path it is also mounted over: every TLS connection the agent can make
#: goes through its proxy, which presents certificates of that CA.
AGENT_CA_FILE = "/etc/bot-bottle/ca.pem"
AGENT_CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt",)
#: Variables bot-bottle sets in the agent to send it through its proxy and trust its
#: CA. A manifest's ``env`` may not set them (the schema refuses them).
PROXY_ENV_NAMES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "PIP_CERT",
)
#: Where the proxy writes its decisions (JSON lines), inside its container.
CONTAINER_LOG_DIR = "/var/log/bot-bottle-egress"
LOG_FILE_NAME = "egress.jsonl"


#: The proxy's runtime secrets (route credentials, the bottle's own secret values for
#: DLP): a tmpfs of the proxy container, written by its own user from the standard input
#: of one exec after it starts, so they never touch the host's disk, a command line, the
#: proxy's configuration or its image.
CONTAINER_SECRETS_DIR = "/run/bot-bottle"
SECRETS_FILE_NAME = "secrets.json"
SECRETS_FORMAT = 1
SECRETS_PATH = f"{CONTAINER_SECRETS_DIR}/{SECRETS_FILE_NAME}"


def dumps_secrets(credentials: Mapping[str, str], known_secrets: Sequence[str] = ()) -> bytes:
    """The runtime secrets file: ``credentials`` (``token_ref`` -> value) and the
    bottle's ``known_secrets`` (values DLP looks for), in a stable form."""
    data = {
        "format": SECRETS_FORMAT,
        "credentials": {str(k): str(v) for k, v in sorted(credentials.items())},
        "known_secrets": sorted({str(v) for v in known_secrets}),
    }
    return (json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")


def agent_proxy_env(proxy_address: str, port: int = PROXY_PORT) -> dict[str, str]:
    """The environment that sends an agent through its proxy and trusts its CA.

    Both spellings of the proxy variables (curl reads only the lower-case
    ``http_proxy``; most tools read either). ``NO_PROXY`` keeps loopback local.
    """
    url = f"http://{ipaddress.IPv4Address(proxy_address)}:{int(port)}"
    no_proxy = "localhost,127.0.0.1,::1"
    env = {}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[name] = env[name.lower()] = url
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"):
        env[name] = AGENT_CA_FILE
    env["GIT_SSL_CAINFO"] = env["PIP_CERT"] = AGENT_CA_FILE
    return dict(sorted(env.items()))


_MODULE_UTILS = "ansible_collections/botbottle/bottle/plugins/module_utils"
#: The addon module; ``python3 -m`` runs it as mitmdump with the addon built in.
ADDON_MODULE = _MODULE_UTILS.replace("/", ".") + "._egress_addon"


def proxy_command(upstream_trusted_ca: str | None = None) -> list[str]:
    """The proxy container's command: mitmdump, with this addon and no other.

    ``python3 -P -m <addon module> ARGS`` is mitmdump (same command line, same
    DumpMaster and default addons) with :class:`._egress_addon.EgressAddon` added
    before anything listens. Not ``mitmdump -s``: mitmdump loads a script after its
    listener is up, and drops a script that fails to (re)load -- its file watcher
    reloads on every change -- and carries on as an open proxy. ``-P`` keeps the
    working directory off ``sys.path``.

    Beyond the design's options: ``onboarding=false`` (no mitm.it app answering
    inside the proxy),
    ``flow_detail=0`` (mitmdump does not print URLs, which can hold secrets; the
    addon logs its decisions). ``upstream_trusted_ca`` is a CA file inside the
    container that upstream certificates are verified against instead of certifi's
    bundle (tests; a private origin).
    """
    argv = [
        "python3",
        "-P",
        "-m",
        ADDON_MODULE,
        "--mode",
        "regular",
        "--listen-host",
        "0.0.0.0",
        "--listen-port",
        str(PROXY_PORT),
        "--set",
        f"confdir={CONTAINER_CONFDIR}",
        "--set",
        "connection_strategy=lazy",
        "--set",
        "http3=false",
        "--set",
        "onboarding=false",
        "--set",
        "flow_detail=0",
        "--set",
        f"bb_egress_config={CONTAINER_CONFIG}",
    ]
    if upstream_trusted_ca is not None:
        argv += ["--set", f"ssl_verify_upstream_trusted_ca={upstream_trusted_ca}"]
    return argv


class _SourceLoader(Protocol):
    def get_source(self, fullname: str) -> str | None: ...


def proxy_code_files() -> dict[str, str]:
    """The code to mount at :data:`CONTAINER_CODE_ROOT`: relative path -> source of
    ``_policy.py``, ``_egress.py``, ``_dlp.py`` and ``_egress_addon.py``.

    Read through the modules' loaders, so it works from a checkout and from inside
    Ansible's module payload alike (a module that imports this module ships all
    four). Write them below a host directory and bind-mount it read-only."""
    from ansible_collections.botbottle.bottle.plugins.module_utils import (  # noqa: PLC0415
        _dlp,
        _egress_addon,
        _policy,
    )

    files: dict[str, str] = {}
    for module in (_policy, sys.modules[__name__], _dlp, _egress_addon):
        spec = module.__spec__
        loader: _SourceLoader | None = getattr(spec, "loader", None)
        source = loader.get_source(module.__name__) if loader is not None else None
        if source is None:
            raise RuntimeError(f"the source of {module.__name__} cannot be read")
        files[f"{_MODULE_UTILS}/{module.__name__.rsplit('.', 1)[1]}.py"] = source
    return files
