# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The egress policy compiler: the one place that decides what a bottle may reach.

**PRIVATE** to the botbottle.bottle collection and the ``botbottle`` package; the
public surface is the functions and classes without a leading underscore.

A merged bottle manifest's ``egress.routes`` is turned into a backend-neutral
:class:`EgressPolicy`, which is rendered for each backend:

* :func:`render_smolvm` -- smolvm allow lists (``=host`` for exact names,
  ``*.zone`` for wildcard zones, CIDRs). A bare smolvm entry would admit the host
  *and every subdomain*, so bare entries are never produced.
* :func:`render_dnsmasq` -- dnsmasq lines: no default upstream, NXDOMAIN for
  everything not allowlisted, and for every exact name a ``server=/*.name/``
  line so that ``<anything>.name`` is NXDOMAIN too.
* :func:`render_firewall` -- iptables-restore / ip6tables-restore rule sets for
  the Docker example backend's agent network namespace.

Semantics, the same for every backend:

* ``host: api.example.com`` is that exact name only;
* ``host: "*.example.com"`` is every name below ``example.com`` at any depth,
  but not ``example.com`` itself;
* names are case-insensitive, a trailing dot is ignored, IDNs must be in
  A-label (``xn--``) form, IP literals and CIDRs go in ``cidr``.

This file is shipped to managed hosts by Ansible: standard library only.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

POLICY_FORMAT = 1
"""Bumped whenever the compiled representation (and so the hash) changes meaning."""

_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_UPSTREAM_RE = re.compile(r"^(?P<ip>[0-9A-Fa-f:.]+)(?:#(?P<port>[0-9]{1,5}))?$")
_MAX_NAME = 253
_LOG_LEVELS = (0, 1, 2)


class PolicyError(ValueError):
    """A route cannot be compiled. ``path`` is the JSON path of the offending value."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def normalize_name(raw: str) -> str:
    """Return the canonical form of a DNS name, or raise ``ValueError`` saying why.

    Lower-cases, strips one trailing dot and checks LDH labels (A-label IDNs pass,
    Unicode does not). IP literals are rejected: they belong in ``cidr``.
    """
    if not isinstance(raw, str):
        raise ValueError(f"expected a host name string, got {type(raw).__name__}")
    name = raw.strip()
    if name != raw:
        raise ValueError(f"host name {raw!r} has surrounding white space")
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise ValueError("host name is empty")
    if _is_ip_literal(name):
        raise ValueError(
            f"{raw!r} is an IP address, not a host name; put IP literals and CIDRs in 'cidr'"
        )
    if not name.isascii():
        raise ValueError(
            f"{raw!r} is not ASCII; write IDNs in A-label form ({_a_label_hint(name)})"
        )
    name = name.lower()
    if len(name) > _MAX_NAME:
        raise ValueError(f"host name is {len(name)} characters long; the limit is 253")
    for label in name.split("."):
        if not _LABEL_RE.match(label):
            raise ValueError(
                f"label {label!r} of {raw!r} is not a valid DNS label "
                "(letters, digits and inner hyphens, 1-63 characters)"
            )
    if name.replace(".", "").isdigit():
        raise ValueError(f"{raw!r} looks like an IP address; put it in 'cidr'")
    return name


def normalize_cidr(raw: str) -> str:
    """Return ``raw`` as a canonical network (host bits cleared, bare IP -> /32 or /128).

    Raises ``ValueError`` saying why for anything that is not a plain network, and
    for networks no bottle may route to whatever it asks (loopback, link-local,
    cloud metadata, unspecified, IPv4-mapped IPv6): see :data:`NEVER_ROUTED`.
    """
    if not isinstance(raw, str):
        raise ValueError(f"expected a CIDR string, got {type(raw).__name__}")
    if raw.strip() != raw:
        raise ValueError(f"CIDR {raw!r} has surrounding white space")
    if "%" in raw:
        raise ValueError(
            f"{raw!r} has a zone id: a route names a network, not an interface; "
            "drop the '%...' part"
        )
    try:
        net = ipaddress.ip_network(raw, strict=False)
    except ValueError:
        raise ValueError(
            f"{raw!r} is not an IP address or CIDR (for example 203.0.113.7 or 2001:db8::/32)"
        ) from None
    for special, why in NEVER_ROUTED:
        if net.version == special.version and net.subnet_of(special):  # type: ignore[arg-type]
            raise ValueError(f"{raw!r} is {why}, which a bottle may never reach")
    return str(net)


#: Networks no route may target, and every Docker rule set rejects before it accepts
#: any ``cidr`` route (so a wide route cannot reach them either).
NEVER_ROUTED: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = (
    (ipaddress.ip_network("0.0.0.0/8"), "the unspecified network ('this host')"),
    (ipaddress.ip_network("127.0.0.0/8"), "loopback"),
    (ipaddress.ip_network("169.254.169.254/32"), "the cloud metadata service"),
    (ipaddress.ip_network("169.254.0.0/16"), "link-local"),
    (ipaddress.ip_network("100.100.100.200/32"), "a cloud metadata service"),
    (ipaddress.ip_network("::/128"), "the unspecified address"),
    (ipaddress.ip_network("::1/128"), "loopback"),
    (ipaddress.ip_network("::ffff:0:0/96"), "IPv4-mapped IPv6 (write the IPv4 form)"),
    (ipaddress.ip_network("fd00:ec2::254/128"), "the cloud metadata service"),
    (ipaddress.ip_network("fe80::/10"), "link-local"),
)

#: A ``cidr`` route shorter than this prefix needs ``wide: true``.
WIDE_PREFIX = {4: 8, 6: 16}


def is_wide(cidr: str) -> bool:
    """True for a network wider than /8 (IPv4) or /16 (IPv6), the defaults included."""
    net = ipaddress.ip_network(cidr)
    return net.prefixlen < WIDE_PREFIX[net.version]


def _is_ip_literal(text: str) -> bool:
    candidate = text.strip("[]")
    try:
        ipaddress.ip_network(candidate, strict=False)
    except ValueError:
        return False
    return True


def _a_label_hint(name: str) -> str:
    try:
        return "for example {!r}".format(name.encode("idna").decode("ascii").lower())
    except UnicodeError:
        return "xn--..."


# --------------------------------------------------------------------------- HTTP matches

PATH_TYPES = ("exact", "prefix", "regex")
HEADER_TYPES = ("exact", "regex")
_METHOD_RE = re.compile(r"[A-Za-z]+")
_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _compile_regex(value: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(value)
    except re.error as exc:
        raise PolicyError(where, f"{value!r} is not a valid regular expression: {exc}") from None


@dataclass(frozen=True)
class PathMatch:
    """One path predicate. ``exact``: the path is ``value``. ``prefix``: the path is
    ``value`` or continues it at a ``/`` (``/v1`` matches ``/v1`` and ``/v1/x``, not
    ``/v10``; ``/v1/`` matches ``/v1/`` and below). ``regex``: the regular expression
    (Python ``re``) matches the *whole* path, as if written ``\\A(?:value)\\Z``.
    Compiled once, when the policy is built."""

    kind: str
    value: str
    pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def matches(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.value
        if self.kind == "prefix":
            if self.value.endswith("/"):
                return path.startswith(self.value)
            return path == self.value or path.startswith(self.value + "/")
        return self.pattern is not None and self.pattern.fullmatch(path) is not None

    def to_dict(self) -> dict[str, str]:
        return {"type": self.kind, "value": self.value}


@dataclass(frozen=True)
class HeaderMatch:
    """One header predicate: the header (``name``, lower-case) is present, and every
    value it has equals ``value`` (``exact``) or is matched whole by the regular
    expression ``value`` (``regex``). A repeated header matches only if each copy does."""

    name: str
    value: str
    kind: str = "exact"
    pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def matches(self, headers: Sequence[tuple[str, str]]) -> bool:
        values = [v for n, v in headers if n.lower() == self.name]
        if not values:
            return False
        if self.kind == "exact":
            return all(v == self.value for v in values)
        return self.pattern is not None and all(self.pattern.fullmatch(v) for v in values)

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "type": self.kind, "value": self.value}


@dataclass(frozen=True)
class RequestMatch:
    """One entry of a route's ``matches``: every predicate given must hold (any of
    ``paths``, any of ``methods``, all of ``headers``); an empty part holds always."""

    paths: tuple[PathMatch, ...] = ()
    methods: tuple[str, ...] = ()
    headers: tuple[HeaderMatch, ...] = ()

    def matches(self, method: str, path: str, headers: Sequence[tuple[str, str]]) -> bool:
        """``path`` is the request's path as :func:`request_path` returns it."""
        if self.methods and method.upper() not in self.methods:
            return False
        if self.paths and not any(p.matches(path) for p in self.paths):
            return False
        return all(h.matches(headers) for h in self.headers)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.paths:
            data["paths"] = [p.to_dict() for p in self.paths]
        if self.methods:
            data["methods"] = list(self.methods)
        if self.headers:
            data["headers"] = [h.to_dict() for h in self.headers]
        return data


def _list(raw: Any, where: str, what: str) -> list[Any]:
    if not isinstance(raw, list) or not raw:
        raise PolicyError(where, f"expected a non-empty list of {what}")
    return raw


def _mapping(raw: Any, where: str, keys: Sequence[str], required: Sequence[str]) -> None:
    if not isinstance(raw, Mapping):
        raise PolicyError(where, f"expected a mapping with {', '.join(repr(k) for k in keys)}")
    unknown = sorted(str(k) for k in raw if k not in keys)
    if unknown:
        raise PolicyError(where, f"unknown keys {unknown}; the keys are {list(keys)}")
    for key in required:
        if key not in raw:
            raise PolicyError(where, f"'{key}' is required")


def _path_match(raw: Any, where: str) -> PathMatch:
    _mapping(raw, where, ("type", "value"), ("type", "value"))
    kind, value = raw["type"], raw["value"]
    if kind not in PATH_TYPES:
        raise PolicyError(where + ".type", f"expected one of {list(PATH_TYPES)}, got {kind!r}")
    if not isinstance(value, str) or not value:
        raise PolicyError(where + ".value", "expected a non-empty string")
    if kind == "regex":
        return PathMatch(kind, value, _compile_regex(value, where + ".value"))
    if not value.startswith("/"):
        raise PolicyError(where + ".value", f"an {kind} path starts with '/', got {value!r}")
    try:
        canonical = request_path(value)
    except ValueError as exc:
        raise PolicyError(where + ".value", f"{value!r} can never match a request: {exc}") from None
    if canonical != value:
        raise PolicyError(where + ".value", f"write {value!r} in its canonical form {canonical!r}")
    return PathMatch(kind, value)


def _header_match(raw: Any, where: str) -> HeaderMatch:
    _mapping(raw, where, ("name", "value", "type"), ("name", "value"))
    name, value, kind = raw["name"], raw["value"], raw.get("type", "exact")
    if not isinstance(name, str) or not _TOKEN_RE.fullmatch(name):
        raise PolicyError(where + ".name", f"{name!r} is not an HTTP header name")
    if kind not in HEADER_TYPES:
        raise PolicyError(where + ".type", f"expected one of {list(HEADER_TYPES)}, got {kind!r}")
    if not isinstance(value, str):
        raise PolicyError(where + ".value", "expected a string")
    pattern = _compile_regex(value, where + ".value") if kind == "regex" else None
    return HeaderMatch(name.lower(), value, kind, pattern)


def _request_match(raw: Any, where: str) -> RequestMatch:
    _mapping(raw, where, ("paths", "methods", "headers"), ())
    paths: list[PathMatch] = []
    methods: list[str] = []
    headers: list[HeaderMatch] = []
    if "paths" in raw:
        for i, item in enumerate(_list(raw["paths"], where + ".paths", "path predicates")):
            paths.append(_path_match(item, f"{where}.paths[{i}]"))
    if "methods" in raw:
        for i, item in enumerate(_list(raw["methods"], where + ".methods", "HTTP methods")):
            if not isinstance(item, str) or not _METHOD_RE.fullmatch(item):
                raise PolicyError(f"{where}.methods[{i}]", f"{item!r} is not an HTTP method")
            methods.append(item.upper())
    if "headers" in raw:
        for i, item in enumerate(_list(raw["headers"], where + ".headers", "header predicates")):
            headers.append(_header_match(item, f"{where}.headers[{i}]"))
    unique_paths = {(p.kind, p.value): p for p in paths}
    unique_headers = {(h.name, h.kind, h.value): h for h in headers}
    return RequestMatch(
        tuple(unique_paths[k] for k in sorted(unique_paths)),
        tuple(sorted(set(methods))),
        tuple(unique_headers[k] for k in sorted(unique_headers)),
    )


def compile_matches(raw: Any, where: str = "matches") -> tuple[RequestMatch, ...]:
    """A route's ``matches`` list, checked and compiled (regular expressions compiled
    here, once), de-duplicated and in a canonical order. Raises :class:`PolicyError`
    whose ``path`` is ``where`` followed by the offending item (``.paths[0].value``)."""
    entries = [
        _request_match(item, f"{where}[{i}]")
        for i, item in enumerate(_list(raw, where, "matchers"))
    ]
    unique = {json.dumps(m.to_dict(), sort_keys=True): m for m in entries}
    return tuple(unique[k] for k in sorted(unique))


AUTH_SCHEMES = ("Bearer", "token")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class RouteAuth:
    """A route's credential: the egress proxy sends ``Authorization: <scheme> <value>``
    on every request of the route, the value being what the controller's environment
    variable ``token_ref`` held at bring-up (delivered to the proxy alone at run time;
    the policy holds only the variable's name)."""

    scheme: str
    token_ref: str

    def to_dict(self) -> dict[str, str]:
        return {"scheme": self.scheme, "token_ref": self.token_ref}


def compile_auth(raw: Any, where: str = "auth") -> RouteAuth:
    """A route's ``auth`` (``{scheme: Bearer|token, token_ref: NAME}``), checked.
    Raises :class:`PolicyError` whose ``path`` names the offending key."""
    _mapping(raw, where, ("scheme", "token_ref"), ("scheme", "token_ref"))
    scheme, ref = raw["scheme"], raw["token_ref"]
    if scheme not in AUTH_SCHEMES:
        raise PolicyError(
            where + ".scheme", f"expected one of {list(AUTH_SCHEMES)}, got {scheme!r}"
        )
    if not isinstance(ref, str) or not _ENV_NAME_RE.fullmatch(ref):
        raise PolicyError(
            where + ".token_ref",
            f"{ref!r} is not an environment variable name (letters, digits and '_', "
            "not starting with a digit)",
        )
    return RouteAuth(scheme, ref)


def request_path(target: str) -> str:
    """The path a route's path predicates see: the request target up to ``?`` (the
    query is never matched), with percent-encoded unreserved characters decoded
    (``%7E`` -> ``~``, ``%2e`` -> ``.``; RFC 3986 6.2.2.2, they mean the same) and other
    escapes in upper case. ``*`` (``OPTIONS *``) is returned as it is.

    Raises ``ValueError`` for a target an origin could read as another path than a
    predicate would: no leading ``/``, a ``.`` or ``..`` segment (also encoded), an
    encoded ``/`` or ``\\`` (``%2F``, ``%5C``), a backslash, a ``#``, a broken escape,
    or a character that is not printable ASCII.
    """
    if target == "*":
        return target
    path = target.split("?", 1)[0]
    if not path.startswith("/"):
        raise ValueError(f"the path {path!r} does not start with '/'")
    out: list[str] = []
    i = 0
    while i < len(path):
        char = path[i]
        if char == "%":
            code = path[i + 1 : i + 3]
            if len(code) != 2 or not set(code) <= _HEX_DIGITS:
                raise ValueError(f"the path {path!r} has a broken percent escape")
            decoded = chr(int(code, 16))
            if decoded in _UNRESERVED:
                out.append(decoded)
            elif decoded in "/\\":
                raise ValueError(f"the path {path!r} holds an encoded '/' or '\\'")
            else:
                out.append("%" + code.upper())
            i += 3
            continue
        if not " " < char < "\x7f" or char in "#\\":
            raise ValueError(f"the path {path!r} holds {char!r}")
        out.append(char)
        i += 1
    canonical = "".join(out)
    if any(segment in (".", "..") for segment in canonical.split("/")):
        raise ValueError(f"the path {path!r} has a '.' or '..' segment")
    return canonical


# --------------------------------------------------------------------------- DLP

#: The keys of a ``dlp`` mapping (the bottle's ``egress.dlp`` or a route's ``dlp``),
#: and what each may hold; the egress proxy's :mod:`._dlp` builds its settings from them.
DLP_OUTBOUND_DETECTORS = ("entropy", "known_secrets", "token_patterns")
DLP_INBOUND_DETECTORS = ("naive_injection_detection",)
DLP_ACTIONS = ("block", "redact", "supervise")


def _dlp_detectors(raw: Any, where: str, allowed: Sequence[str]) -> list[str] | bool:
    if raw is False:
        return False
    if isinstance(raw, list) and all(isinstance(d, str) for d in raw) and len(set(raw)) == len(raw):
        unknown = sorted(set(raw) - set(allowed))
        if unknown:
            raise PolicyError(
                where,
                f"unknown detector(s) {', '.join(unknown)}; the detectors are "
                f"{', '.join(allowed)}, or false for none",
            )
        return sorted(raw)
    raise PolicyError(
        where, f"expected a list of distinct detectors ({', '.join(allowed)}) or false"
    )


def compile_dlp(raw: Any, where: str = "dlp") -> dict[str, Any]:
    """A ``dlp`` mapping, checked and in canonical form (detector lists sorted; keys
    left out stay out: a route's ``dlp`` overrides the bottle's key by key). Raises
    :class:`PolicyError` naming the key."""
    if not isinstance(raw, Mapping):
        raise PolicyError(
            where, "expected a mapping of outbound_detectors, inbound_detectors, outbound_on_match"
        )
    unknown = sorted(set(raw) - {"outbound_detectors", "inbound_detectors", "outbound_on_match"})
    if unknown:
        raise PolicyError(
            f"{where}.{unknown[0]}",
            "unknown key; a dlp mapping has outbound_detectors, inbound_detectors and "
            "outbound_on_match",
        )
    found: dict[str, Any] = {}
    if "outbound_detectors" in raw:
        found["outbound_detectors"] = _dlp_detectors(
            raw["outbound_detectors"], where + ".outbound_detectors", DLP_OUTBOUND_DETECTORS
        )
    if "inbound_detectors" in raw:
        found["inbound_detectors"] = _dlp_detectors(
            raw["inbound_detectors"], where + ".inbound_detectors", DLP_INBOUND_DETECTORS
        )
    if "outbound_on_match" in raw:
        action = raw["outbound_on_match"]
        if action not in DLP_ACTIONS:
            raise PolicyError(
                where + ".outbound_on_match",
                f"expected one of {', '.join(DLP_ACTIONS)}, got {action!r}",
            )
        found["outbound_on_match"] = action
    return found


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class EgressPolicy:
    """Backend-neutral egress policy of one bottle. All tuples are sorted and unique.

    ``http`` holds, per route key (an exact host, or ``*.zone``; see :func:`route_for`),
    the request matchers of a route whose requests are restricted; a route key that is
    not there may make any request.
    """

    exact_hosts: tuple[str, ...] = ()
    wildcard_zones: tuple[str, ...] = ()
    cidrs: tuple[str, ...] = ()
    log: int = 0
    digest: str = field(default="", compare=False)
    http: tuple[tuple[str, tuple[RequestMatch, ...]], ...] = ()
    #: per route key, the credential the proxy injects (variable names, never values)
    auth: tuple[tuple[str, RouteAuth], ...] = ()
    #: the bottle's ``egress.dlp`` (:func:`compile_dlp`), None when it sets none
    dlp: Mapping[str, Any] | None = field(default=None, compare=False)
    #: per route key, the route's ``dlp`` overrides
    dlp_routes: tuple[tuple[str, Mapping[str, Any]], ...] = field(default=(), compare=False)

    def matches_for(self, key: str | None) -> tuple[RequestMatch, ...] | None:
        """The matchers of route ``key``, or None when its requests are not restricted."""
        for found, matchers in self.http:
            if found == key:
                return matchers
        return None

    def http_dict(self) -> dict[str, list[dict[str, Any]]]:
        return {key: [m.to_dict() for m in matchers] for key, matchers in self.http}

    def auth_for(self, key: str | None) -> RouteAuth | None:
        """The credential of route ``key``, or None when the proxy injects none there."""
        for found, auth in self.auth:
            if found == key:
                return auth
        return None

    def auth_dict(self) -> dict[str, dict[str, str]]:
        return {key: auth.to_dict() for key, auth in self.auth}

    def dlp_for(self, key: str | None) -> Mapping[str, Any] | None:
        """The ``dlp`` overrides of route ``key``, or None."""
        for found, settings in self.dlp_routes:
            if found == key:
                return settings
        return None

    def dlp_dict(self) -> dict[str, Any]:
        """``{"bottle": ..., "routes": {key: ...}}``, the keys present only when set."""
        out: dict[str, Any] = {}
        if self.dlp is not None:
            out["bottle"] = dict(self.dlp)
        if self.dlp_routes:
            out["routes"] = {key: dict(settings) for key, settings in self.dlp_routes}
        return out

    def to_dict(self) -> dict[str, Any]:
        """The policy as plain data (the ``policy`` object of ``bottle plan --format json``)."""
        return {
            "format": POLICY_FORMAT,
            "exact_hosts": list(self.exact_hosts),
            "wildcard_zones": list(self.wildcard_zones),
            "cidrs": list(self.cidrs),
            "log": self.log,
            "http": self.http_dict(),
            "auth": self.auth_dict(),
            "dlp": self.dlp_dict(),
            "hash": self.digest,
        }


def _digest(
    exact: Sequence[str],
    zones: Sequence[str],
    cidrs: Sequence[str],
    log: int,
    http: Mapping[str, Any] | None = None,
    *,
    dlp: Mapping[str, Any] | None = None,
    auth: Mapping[str, Any] | None = None,
) -> str:
    body: dict[str, Any] = {
        "format": POLICY_FORMAT,
        "exact": list(exact),
        "zones": list(zones),
        "cidrs": list(cidrs),
        "log": log,
    }
    if http:  # absent when empty: policies without matches keep their hash
        body["http"] = http
    if dlp:  # the same for dlp
        body["dlp"] = dlp
    if auth:  # and for credentials
        body["auth"] = auth
    payload = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _cidr_sort_key(text: str) -> tuple[int, int, int]:
    net = ipaddress.ip_network(text)
    return (net.version, int(net.network_address), net.prefixlen)


def _route_key(key: Any, exact: Sequence[str], zones: Sequence[str], section: str = "http") -> str:
    """A route key of ``http`` (or ``auth``) as the routes spell it, or ``ValueError``."""
    if not isinstance(key, str):
        raise ValueError(f"{section}: route key {key!r} is not a string")
    wildcard = key.startswith("*.")
    name = normalize_name(key[2:] if wildcard else key)
    if name not in (zones if wildcard else exact):
        raise ValueError(f"{section}: {key!r} is not a route of this policy")
    return ("*." if wildcard else "") + name


def build_policy(
    exact_hosts: Sequence[str] = (),
    wildcard_zones: Sequence[str] = (),
    cidrs: Sequence[str] = (),
    log: int = 0,
    http: Mapping[str, Any] | None = None,
    *,
    dlp: Mapping[str, Any] | None = None,
    auth: Mapping[str, Any] | None = None,
) -> EgressPolicy:
    """Make a normalised policy (sorted, de-duplicated, hashed) from its parts.

    ``http`` maps a route key (an exact host, or ``*.zone``) to its ``matches`` list as
    a manifest writes it (:func:`compile_matches`). ``dlp`` is
    :meth:`EgressPolicy.dlp_dict`'s form: ``bottle`` (the bottle's ``egress.dlp``) and
    ``routes`` (route key -> the route's ``dlp``), each as :func:`compile_dlp` takes
    it. Raises ``ValueError`` for a bad name, CIDR, route key, matcher or ``dlp`` (a
    :class:`PolicyError` for the last two). ``auth`` maps a route key to its ``auth``
    (:func:`compile_auth`; a :class:`PolicyError` when bad).
    """
    exact = sorted({normalize_name(h) for h in exact_hosts})
    zones = sorted({normalize_name(z) for z in wildcard_zones})
    nets = sorted({normalize_cidr(c) for c in cidrs}, key=_cidr_sort_key)
    if log not in _LOG_LEVELS:
        raise ValueError(f"log must be 0, 1 or 2, got {log!r}")
    if http is not None and not isinstance(http, Mapping):
        raise ValueError("http: expected a mapping of route keys to matches")
    rules: dict[str, tuple[RequestMatch, ...]] = {}
    for key, raw in (http or {}).items():
        canonical = _route_key(key, exact, zones)
        if canonical in rules:
            raise ValueError(f"http: route key {key!r} appears twice")
        rules[canonical] = compile_matches(raw, f"http[{canonical!r}]")
    compiled = tuple(sorted(rules.items()))
    plain = {key: [m.to_dict() for m in matchers] for key, matchers in compiled}
    bottle_dlp, route_dlp = _build_dlp(dlp, exact, zones)
    injected = _build_auth(auth, exact, zones)
    plain_dlp: dict[str, Any] = {}
    if bottle_dlp is not None:
        plain_dlp["bottle"] = bottle_dlp
    if route_dlp:
        plain_dlp["routes"] = dict(route_dlp)
    return EgressPolicy(
        exact_hosts=tuple(exact),
        wildcard_zones=tuple(zones),
        cidrs=tuple(nets),
        log=log,
        digest=_digest(exact, zones, nets, log, plain, dlp=plain_dlp, auth=_auth_plain(injected)),
        http=compiled,
        auth=injected,
        dlp=bottle_dlp,
        dlp_routes=route_dlp,
    )


def _build_auth(
    raw: Mapping[str, Any] | None, exact: Sequence[str], zones: Sequence[str]
) -> tuple[tuple[str, RouteAuth], ...]:
    if raw is not None and not isinstance(raw, Mapping):
        raise ValueError("auth: expected a mapping of route keys to credentials")
    found: dict[str, RouteAuth] = {}
    for key, settings in (raw or {}).items():
        canonical = _route_key(key, exact, zones, "auth")
        if canonical in found:
            raise ValueError(f"auth: route key {key!r} appears twice")
        found[canonical] = compile_auth(settings, f"auth[{canonical!r}]")
    return tuple(sorted(found.items()))


def _auth_plain(injected: Sequence[tuple[str, RouteAuth]]) -> dict[str, dict[str, str]]:
    return {key: auth.to_dict() for key, auth in injected}


def _build_dlp(
    raw: Mapping[str, Any] | None, exact: Sequence[str], zones: Sequence[str]
) -> tuple[dict[str, Any] | None, tuple[tuple[str, dict[str, Any]], ...]]:
    if not raw:
        return None, ()
    if not isinstance(raw, Mapping) or set(raw) - {"bottle", "routes"}:
        raise ValueError("dlp: expected a mapping with 'bottle' and 'routes'")
    bottle = raw.get("bottle")
    bottle_dlp = None if bottle is None else compile_dlp(bottle, "dlp.bottle")
    routes = raw.get("routes") or {}
    if not isinstance(routes, Mapping):
        raise ValueError("dlp.routes: expected a mapping of route keys to dlp")
    found: dict[str, dict[str, Any]] = {}
    for key, settings in routes.items():
        canonical = _route_key(key, exact, zones)
        if canonical in found:
            raise ValueError(f"dlp.routes: route key {key!r} appears twice")
        found[canonical] = compile_dlp(settings, f"dlp.routes[{canonical!r}]")
    return bottle_dlp, tuple(sorted(found.items()))


def compile_policy(manifest: Mapping[str, Any]) -> EgressPolicy:
    """Compile a *merged* manifest's ``egress`` section into an :class:`EgressPolicy`.

    Each route has either ``host`` (an exact name, or ``*.zone`` for a wildcard)
    or ``cidr``. Raises :class:`PolicyError` naming the route's JSON path.
    """
    egress = manifest.get("egress") or {}
    if not isinstance(egress, Mapping):
        raise PolicyError("$.egress", "expected a mapping with 'routes' and 'log'")
    routes = egress.get("routes") or []
    if not isinstance(routes, Sequence) or isinstance(routes, (str, bytes)):
        raise PolicyError("$.egress.routes", "expected a list of routes")
    exact: list[str] = []
    zones: list[str] = []
    cidrs: list[str] = []
    restricted: dict[str, list[Any]] = {}
    unrestricted: set[str] = set()
    dlp_routes: dict[str, tuple[int, dict[str, Any]]] = {}
    credentials: dict[str, tuple[RouteAuth, int]] = {}
    for index, route in enumerate(routes):
        path = f"$.egress.routes[{index}]"
        if not isinstance(route, Mapping):
            raise PolicyError(path, "expected a mapping with 'host' or 'cidr'")
        has_host, has_cidr = "host" in route, "cidr" in route
        if has_host == has_cidr:
            raise PolicyError(path, "a route needs exactly one of 'host' or 'cidr'")
        if has_cidr:
            _route_auth(route, index, None, path, credentials)
            cidrs.append(_route_cidr(route, path))
            continue
        if "wide" in route:
            raise PolicyError(path + ".wide", "'wide' applies to 'cidr' routes only; remove it")
        key = _route_host(route["host"], path, exact, zones)
        _route_auth(route, index, key, path, credentials)
        _route_dlp(route, index, key, path, dlp_routes)
        if route.get("matches") is None:
            unrestricted.add(key)
        else:
            try:
                matchers = compile_matches(route["matches"], path + ".matches")
            except PolicyError as exc:
                where = f"route {index} (host {route['host']})"
                raise PolicyError(exc.path, f"{where}: {exc.message}") from None
            restricted.setdefault(key, []).extend(m.to_dict() for m in matchers)
    log = egress.get("log", 0)
    if isinstance(log, bool) or log not in _LOG_LEVELS:
        raise PolicyError("$.egress.log", f"expected 0, 1 or 2, got {log!r}")
    # routes of one key are one route: any of their entries admits a request, and a
    # route of that key without 'matches' admits every request
    http = {key: found for key, found in restricted.items() if key not in unrestricted}
    dlp = _policy_dlp(egress.get("dlp"), dlp_routes)
    # a credential on one of them is the route's: the proxy injects it on every
    # request to that key (routes of one key with two credentials are refused)
    return build_policy(
        exact, zones, cidrs, log, http, dlp=dlp,
        auth={key: found.to_dict() for key, (found, _) in credentials.items()},
    )  # fmt: skip


def _policy_dlp(
    bottle: Any, dlp_routes: Mapping[str, tuple[int, dict[str, Any]]]
) -> dict[str, Any]:
    """The policy's ``dlp``: the bottle's ``egress.dlp`` and the routes' overrides."""
    dlp: dict[str, Any] = {}
    if bottle is not None:
        dlp["bottle"] = compile_dlp(bottle, "$.egress.dlp")
    if dlp_routes:
        dlp["routes"] = {key: settings for key, (_, settings) in dlp_routes.items()}
    return dlp


def _route_dlp(
    route: Mapping[str, Any],
    index: int,
    key: str,
    path: str,
    dlp_routes: dict[str, tuple[int, dict[str, Any]]],
) -> None:
    """Check a route's ``dlp`` (if it has one) and add it to ``dlp_routes`` under its
    route key, with the index of the route that set it first."""
    if route.get("dlp") is None:
        return
    where = f"route {index} (host {route['host']})"
    try:
        settings = compile_dlp(route["dlp"], path + ".dlp")
    except PolicyError as exc:
        raise PolicyError(exc.path, f"{where}: {exc.message}") from None
    if key in dlp_routes and dlp_routes[key][1] != settings:
        raise PolicyError(
            path + ".dlp",
            f"{where}: route {dlp_routes[key][0]} has the same host and another 'dlp'; "
            "routes with the same host are one route: give them one 'dlp'",
        )
    dlp_routes.setdefault(key, (index, settings))


def _route_auth(
    route: Mapping[str, Any],
    index: int,
    key: str | None,
    path: str,
    credentials: dict[str, tuple[RouteAuth, int]],
) -> None:
    """Check a route's ``auth`` (if it has one) and add it to ``credentials`` under its
    route key; ``key`` is None for a ``cidr`` route, which may not have one."""
    if route.get("auth") is None:
        return
    if key is None:
        raise PolicyError(
            path + ".auth",
            f"route {index} (cidr {route.get('cidr')}): a credential is injected on a host "
            "route only (the proxy ties it to the checked host name); a cidr route carries "
            "no 'auth'",
        )
    where = f"route {index} (host {route['host']})"
    try:
        found = compile_auth(route["auth"], path + ".auth")
    except PolicyError as exc:
        raise PolicyError(exc.path, f"{where}: {exc.message}") from None
    earlier = credentials.get(key)
    if earlier is not None and earlier[0] != found:
        raise PolicyError(
            path + ".auth",
            f"{where}: route {earlier[1]} has the same host ({key}) with another credential "
            f"({earlier[0].scheme} from {earlier[0].token_ref}); a host has one credential",
        )
    credentials.setdefault(key, (found, index))


def _route_host(host: Any, path: str, exact: list[str], zones: list[str]) -> str:
    """Add a route's host to ``exact`` or ``zones``; its route key (``name``, ``*.zone``)."""
    try:
        if isinstance(host, str) and host.startswith("*."):
            zones.append(normalize_name(host[2:]))
            return "*." + zones[-1]
        exact.append(normalize_name(host))
        return exact[-1]
    except ValueError as exc:
        raise PolicyError(path + ".host", str(exc)) from None


def _route_cidr(route: Mapping[str, Any], path: str) -> str:
    """A route's network, refused if wide without ``wide: true`` (or ``wide`` needlessly)."""
    try:
        cidr = normalize_cidr(route["cidr"])
    except ValueError as exc:
        raise PolicyError(path + ".cidr", str(exc)) from None
    wide = route.get("wide", False)
    if not isinstance(wide, bool):
        raise PolicyError(path + ".wide", f"expected true or false, got {wide!r}")
    version = ipaddress.ip_network(cidr).version
    if is_wide(cidr) and not wide:
        raise PolicyError(
            path + ".cidr",
            f"{cidr} is wider than /{WIDE_PREFIX[version]}: it opens a large part of the "
            "network to the agent; list the networks it needs, or add 'wide: true' to this "
            "route to say you mean it",
        )
    if wide and not is_wide(cidr):
        raise PolicyError(
            path + ".wide",
            f"{cidr} is not wider than /{WIDE_PREFIX[version]}, so 'wide: true' says "
            "nothing; remove it",
        )
    return cidr


def policy_from_dict(data: Mapping[str, Any]) -> EgressPolicy:
    """Rebuild a policy from :meth:`EgressPolicy.to_dict` output (re-normalised, re-hashed)."""
    return build_policy(
        data.get("exact_hosts", ()),
        data.get("wildcard_zones", ()),
        data.get("cidrs", ()),
        int(data.get("log", 0)),
        data.get("http") or None,
        dlp=data.get("dlp") or None,
        auth=data.get("auth") or None,
    )


_ASCII_LOWER = {code: code + 32 for code in range(ord("A"), ord("Z") + 1)}


def _query_name(name: str) -> str | None:
    """A queried name as resolvers compare it, or None if DNS cannot carry it.

    DNS labels may hold any octet: ``_dmarc``, ``a b``, ``\\000``, ``#`` or raw
    non-ASCII bytes (one character per octet, e.g. decoded as latin-1) are names
    a resolver forwards below a wildcard zone. Only ASCII letters fold case.
    """
    text = name[:-1] if name.endswith(".") else name
    labels = text.split(".")
    if not text or any(not label for label in labels):
        return None
    if any(len(label.encode("utf-8", "surrogateescape")) > 63 for label in labels):
        return None
    if len(text.encode("utf-8", "surrogateescape")) > _MAX_NAME:
        return None
    return text.translate(_ASCII_LOWER)


def _zone_of(name: str, zones: frozenset[str] | Sequence[str]) -> str | None:
    """The deepest of ``zones`` that ``name`` is strictly below (one set look-up per
    label, longest suffix first), or None."""
    zone_set = zones if isinstance(zones, frozenset) else frozenset(zones)
    start = name.find(".")
    while start != -1:
        if name[start + 1 :] in zone_set:
            return name[start + 1 :]
        start = name.find(".", start + 1)
    return None


def _below_zones(name: str, zones: frozenset[str] | Sequence[str]) -> bool:
    """True when ``name`` is strictly below one of ``zones``."""
    return _zone_of(name, zones) is not None


def route_for(policy: EgressPolicy, name: str) -> str | None:
    """The route ``name`` goes through, as its key: the exact host when a route names
    it, else ``*.zone`` for the deepest wildcard zone it is below; None when no route
    allows it. The most specific route wins, so an exact route's ``matches`` (or its
    absence) apply to its host even below a wildcard zone; routes with the same key
    are one route."""
    try:
        canonical = normalize_name(name)
    except ValueError:
        canonical = None
    if canonical is not None and canonical in policy.exact_hosts:
        return canonical
    queried = _query_name(name) if isinstance(name, str) else None
    zone = None if queried is None else _zone_of(queried, frozenset(policy.wildcard_zones))
    return None if zone is None else "*." + zone


def chosen_labels(policy: EgressPolicy, name: str) -> str | None:
    """The labels of ``name`` that the agent chose: those below the *widest* wildcard
    zone it is under (``a.b`` of ``a.b.files.example.com`` with ``*.example.com``),
    as the resolver compares them. None for an exact route's name (nothing of it was
    chosen) and for a name no route allows. Data-loss prevention scans these."""
    if route_for(policy, name) in (None, *policy.exact_hosts):
        return None
    queried = _query_name(name)
    if queried is None:
        return None
    zones = frozenset(policy.wildcard_zones)
    widest = None
    start = queried.find(".")
    while start != -1:
        if queried[start + 1 :] in zones:
            widest = start
        start = queried.find(".", start + 1)
    return None if widest is None else queried[:widest]


def allows_name(policy: EgressPolicy, name: str) -> bool:
    """The reference semantics: may a bottle with ``policy`` resolve ``name``?

    An exact route allows that host name only. A wildcard zone allows every name
    strictly below it, whatever its labels hold: the resolver forwards any label
    there (``_dmarc``, spaces, ``\\000``, non-ASCII octets), and so does the
    compiler's answer here, so the two agree on every name.
    """
    return route_for(policy, name) is not None


def warnings(policy: EgressPolicy) -> list[str]:
    """Human-readable warnings about what a policy leaves open."""
    found = [
        f"route '*.{zone}' forwards every name below {zone} to the upstream resolver: "
        "anything the bottle can encode in a name (for example "
        f"<base32-secret>.{zone}) leaves as a DNS query, a tunnel through that zone; "
        "list the exact host names instead if you can"
        for zone in policy.wildcard_zones
    ]
    found += [
        f"route 'cidr: {cidr}' (wide) lets the agent connect to any address in {cidr}; "
        "only loopback, link-local, metadata, the bottle's gateway and the host stay closed"
        for cidr in policy.cidrs
        if is_wide(cidr)
    ]
    return found


# --------------------------------------------------------------------------- smolvm

#: The networks of smolvm's guest gateway (the default guest link 100.96.0.0/30 and the
#: inter-VM networks 100.96.N.0, IPv6 fd53:4d00::/64). smolvm dials a TCP flow to the
#: gateway on the *host's* loopback at the same port (crates/smolvm-network/src/
#: tcp_relay.rs, ``host_connect_addr``), so an allow-list entry covering it would open
#: every service on the host's loopback. Every smolmachine is created with deny rules
#: for these networks (:func:`smolvm_deny_cidrs`).
SMOLVM_GATEWAY_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
    ipaddress.IPv4Network("100.96.0.0/16"),
    ipaddress.IPv6Network("fd53:4d00::/64"),
)

#: The host pattern a bottle with ``cidr`` routes but no ``host`` route gets, so that
#: smolvm's DNS filter is on: smolvm filters names only when the allow list holds a
#: host entry (egress.rs ``dns_filter_active``) and otherwise forwards every query
#: upstream. ``.invalid`` is reserved and never resolves (RFC 6761 section 6.4), so
#: this admits no address; only this one constant name may be asked upstream.
SMOLVM_NO_NAMES = "no-names.bot-bottle.invalid"


def smolvm_deny_cidrs() -> list[str]:
    """The ``--deny-cidr`` networks of every smolmachine that has a network: the
    gateway's (:data:`SMOLVM_GATEWAY_NETWORKS`), then :data:`NEVER_ROUTED` (the host's
    loopback in case smolvm judges a gateway flow by the address it dials, and
    unspecified, metadata, link-local and IPv4-mapped addresses, as the Docker rules).

    smolvm checks deny rules before anything is allowed ("Deny egress to a CIDR
    range, checked before anything is allowed"; "refuses a range even where an allow
    would admit it, including the host's loopback reached through the gateway" --
    smolvm 1.32.2 ``--help``), so a wide route cannot reach them either.
    """
    nets = [str(net) for net in SMOLVM_GATEWAY_NETWORKS]
    nets += [str(net) for net, _ in NEVER_ROUTED]
    return list(dict.fromkeys(nets))


def smolvm_gateway_overlap(cidr: str) -> str | None:
    """The gateway network (:data:`SMOLVM_GATEWAY_NETWORKS`) a route's ``cidr``
    overlaps, or None. A wide route always overlaps one; the validator refuses the
    others, which can be written without the gateway."""
    net = ipaddress.ip_network(cidr, strict=False)
    for gateway in SMOLVM_GATEWAY_NETWORKS:
        if net.version == gateway.version and net.overlaps(gateway):
            return str(gateway)
    return None


def render_smolvm(policy: EgressPolicy) -> dict[str, Any]:
    """smolvm egress for the policy.

    ``allow_hosts`` is the stored form (SDK ``allow_hosts`` / record
    ``dns_filter_hosts``): ``=host`` for exact names, ``*.zone`` for wildcards,
    never a bare entry; ``[=`` :data:`SMOLVM_NO_NAMES` ``]`` when there are ``cidr``
    routes but no host route, so that smolvm's DNS filter is on. ``deny_cidrs``
    (:func:`smolvm_deny_cidrs`, empty without routes) are the deny rules, which
    smolvm takes only at ``machine create``. ``cli_args`` are the ``smolvm machine
    create`` arguments; ``update_args`` the ``machine update`` ones (no deny rules:
    update has no ``--deny-cidr``). ``--allow-host-pattern`` never resolves names at
    create time, unlike ``--allow-host``. No routes: no network (``network`` false)
    and no arguments: ``--deny-cidr`` would turn the network on.
    """
    names = [*policy.exact_hosts, *("*." + zone for zone in policy.wildcard_zones)]
    if policy.cidrs and not names:
        names = [SMOLVM_NO_NAMES]
    hosts = [name if name.startswith("*.") else "=" + name for name in names]
    update_args: list[str] = []
    for name in names:
        update_args += ["--allow-host-pattern", name]
    for cidr in policy.cidrs:
        update_args += ["--allow-cidr", cidr]
    network = bool(hosts or policy.cidrs)
    deny = smolvm_deny_cidrs() if network else []
    cli_args = list(update_args)
    for cidr in deny:
        cli_args += ["--deny-cidr", cidr]
    return {
        "allow_hosts": hosts,
        "allow_cidrs": list(policy.cidrs),
        "deny_cidrs": deny,
        "network": network,
        "cli_args": cli_args,
        "update_args": update_args,
    }


# --------------------------------------------------------------------------- dnsmasq


def normalize_upstream(raw: str) -> str:
    """Check a dnsmasq upstream (``ip`` or ``ip#port``) and return it canonical."""
    match = _UPSTREAM_RE.match(raw.strip()) if isinstance(raw, str) else None
    if match is None:
        raise ValueError(f"upstream {raw!r} is not 'IP' or 'IP#PORT'")
    try:
        address = ipaddress.ip_address(match.group("ip"))
    except ValueError:
        raise ValueError(f"upstream {raw!r} is not an IP address") from None
    port = match.group("port")
    if port is not None and not 0 < int(port) < 65536:
        raise ValueError(f"upstream {raw!r} has port outside 1-65535")
    return str(address) + (f"#{int(port)}" if port else "")


def render_dnsmasq(policy: EgressPolicy, upstreams: Sequence[str]) -> list[str]:
    """dnsmasq configuration lines implementing the policy's name rules.

    Never produces a blanket ``server=`` (non-A record types would escape), nor
    the ``/*name/`` suffix form (it matches ``xname``).
    """
    ups = [normalize_upstream(u) for u in upstreams]
    if not ups:
        raise ValueError("at least one upstream resolver is needed")
    lines = [
        f"# bot-bottle egress policy {policy.digest}",
        "no-resolv",
        "no-hosts",
        "address=/#/",
    ]
    zones = frozenset(policy.wildcard_zones)
    for name in policy.exact_hosts:
        if _below_zones(name, zones):
            continue  # the wildcard line below already forwards it and its subdomains
        lines += [f"server=/{name}/{up}" for up in ups]
        if name not in zones:
            lines.append(f"server=/*.{name}/")
    for zone in policy.wildcard_zones:
        if _below_zones(zone, zones):
            continue  # nested in a wider wildcard
        lines += [f"server=/*.{zone}/{up}" for up in ups]
    return lines


# --------------------------------------------------------------------------- firewall


# Bumped whenever render_firewall's output changes for the same policy, so that bottles
# running older rules get the new ones on the next run (their stamp no longer matches).
_RULES_VERSION = 6


def firewall_stamp(policy: EgressPolicy, proxy: str | None = None) -> str:
    """The comment of the no-op rule that stamps a loaded rule set with its policy hash.

    ``iptables-save`` shows it, so a re-run can tell "these rules are loaded" by
    looking for it in both families (each restore is one transaction: the stamp
    is there only if every rule of that family is).
    """
    stamp = f"bot-bottle-policy {policy.digest} rules-{_RULES_VERSION}"
    return f"{stamp} via-{proxy}" if proxy else stamp


def _never_reached(version: int, gateway: str | None, host_addresses: Sequence[str]) -> list[str]:
    """Destinations rejected before any ``cidr`` route is accepted, in rule order."""
    nets: list[str] = []
    if gateway is not None and version == 4:
        nets.append(f"{ipaddress.IPv4Address(gateway)}/32")
    for text in host_addresses:
        net = ipaddress.ip_network(text, strict=False)
        if net.version == version:
            nets.append(str(net))
    nets += [str(net) for net, _ in NEVER_ROUTED if net.version == version]
    return list(dict.fromkeys(nets))


def _reject(destination: str, icmp: str) -> list[str]:
    return [
        f"-A OUTPUT -d {destination} -p tcp -j REJECT --reject-with tcp-reset",
        f"-A OUTPUT -d {destination} -j REJECT --reject-with {icmp}",
    ]


def render_firewall(
    policy: EgressPolicy,
    resolver_ipv4: str,
    gateway_ipv4: str | None = None,
    embedded_dns: str = "127.0.0.11",
    host_addresses: Sequence[str] = (),
    *,
    proxy: str | None = None,
) -> dict[str, str]:
    """iptables-restore and ip6tables-restore input for a Docker bottle's netns.

    Loaded as one transaction per family (replacing the ``filter`` table of the
    agent's network namespace, which Docker leaves empty), in this order:

    1. loopback to 127.0.0.1 is accepted;
    2. Docker's embedded resolver is rejected on every port (its port 53 is
       DNATed to a random high port before the filter table sees it, so only an
       address match works); then the refusals the rules below send back to the
       agent itself over ``lo`` (TCP resets, ICMP unreachables) are accepted, so a
       refused connection fails at once instead of hanging;
    3. DNS (UDP and TCP 53) may reach only ``resolver_ipv4``; DNS over TLS/QUIC
       (853) is rejected; the bottle's egress proxy (``proxy``, ``IPv4:PORT``) is
       accepted on its port only (TCP);
    4. the network gateway (the Docker host), every address in
       ``host_addresses`` (the host's own; networks too, e.g. the pool the
       bottle networks come from) and :data:`NEVER_ROUTED` (loopback,
       link-local, metadata) are rejected -- *before* any route is accepted, so no
       ``cidr`` route, however wide, reaches them;
    5. ``cidr`` routes are accepted;
    6. everything else is rejected (default deny): the bottle network is
       internal, but the host answers on every one of its addresses, so without
       it an agent could reach host services on the host's other networks (found
       by ``bottle verify``'s literal-address checks).

    IPv6 likewise: loopback, then steps 3-6 for IPv6 addresses.
    """
    resolver = str(ipaddress.IPv4Address(resolver_ipv4))
    embedded = str(ipaddress.IPv4Address(embedded_dns))
    proxy_rules: list[str] = []
    if proxy is not None:
        address, _, port = proxy.rpartition(":")
        proxy = f"{ipaddress.IPv4Address(address)}:{int(port)}"
        proxy_rules = [f"-A OUTPUT -d {address}/32 -p tcp -m tcp --dport {int(port)} -j ACCEPT"]
    stamp = f'-A OUTPUT -m comment --comment "{firewall_stamp(policy, proxy)}"'
    v4 = [
        f"# bot-bottle egress policy {policy.digest}",
        "*filter",
        ":INPUT ACCEPT [0:0]",
        ":FORWARD DROP [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        ":BOTTLE_DNS - [0:0]",
        stamp,
        "-A OUTPUT -o lo -d 127.0.0.1/32 -j ACCEPT",
        *_reject(f"{embedded}/32", "icmp-port-unreachable"),
        # the refusals these rules send back to the agent (a reset, a port-unreachable)
        # leave through lo: without these two, the catch-all below dropped them too and
        # every refused connection hung until the client gave up, instead of failing
        "-A OUTPUT -o lo -p tcp -m tcp --tcp-flags RST RST -j ACCEPT",
        "-A OUTPUT -o lo -p icmp -m icmp --icmp-type 3 -j ACCEPT",
        "-A OUTPUT -p udp -m udp --dport 53 -j BOTTLE_DNS",
        "-A OUTPUT -p tcp -m tcp --dport 53 -j BOTTLE_DNS",
        "-A OUTPUT -p tcp -m tcp --dport 853 -j REJECT --reject-with tcp-reset",
        "-A OUTPUT -p udp -m udp --dport 853 -j REJECT --reject-with icmp-port-unreachable",
        f"-A OUTPUT -d {resolver}/32 -p udp -m udp --dport 53 -j ACCEPT",
        f"-A OUTPUT -d {resolver}/32 -p tcp -m tcp --dport 53 -j ACCEPT",
        *proxy_rules,
    ]
    for net in _never_reached(4, gateway_ipv4, host_addresses):
        v4 += _reject(net, "icmp-port-unreachable")
    v4 += [f"-A OUTPUT -d {c} -j ACCEPT" for c in policy.cidrs if ":" not in c]
    v4 += [
        "-A OUTPUT -p tcp -j REJECT --reject-with tcp-reset",
        "-A OUTPUT -j REJECT --reject-with icmp-port-unreachable",
        f"-A BOTTLE_DNS -d {resolver}/32 -j RETURN",
        "-A BOTTLE_DNS -p tcp -j REJECT --reject-with tcp-reset",
        "-A BOTTLE_DNS -j REJECT --reject-with icmp-port-unreachable",
        "COMMIT",
    ]
    v6 = [
        f"# bot-bottle egress policy {policy.digest}",
        "*filter",
        ":INPUT ACCEPT [0:0]",
        ":FORWARD DROP [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        stamp,
        "-A OUTPUT -o lo -d ::1/128 -j ACCEPT",
        "-A OUTPUT -o lo -p tcp -m tcp --tcp-flags RST RST -j ACCEPT",
        "-A OUTPUT -o lo -p ipv6-icmp -m icmp6 --icmpv6-type 1 -j ACCEPT",
        "-A OUTPUT -p tcp -m tcp --dport 53 -j REJECT --reject-with tcp-reset",
        "-A OUTPUT -p udp -m udp --dport 53 -j REJECT --reject-with icmp6-port-unreachable",
        "-A OUTPUT -p tcp -m tcp --dport 853 -j REJECT --reject-with tcp-reset",
        "-A OUTPUT -p udp -m udp --dport 853 -j REJECT --reject-with icmp6-port-unreachable",
    ]
    for net in _never_reached(6, None, host_addresses):
        v6 += _reject(net, "icmp6-port-unreachable")
    v6 += [f"-A OUTPUT -d {c} -j ACCEPT" for c in policy.cidrs if ":" in c]
    v6 += [
        "-A OUTPUT -p tcp -j REJECT --reject-with tcp-reset",
        "-A OUTPUT -j REJECT --reject-with icmp6-port-unreachable",
        "COMMIT",
    ]
    return {
        "ipv4": "\n".join(v4) + "\n",
        "ipv6": "\n".join(v6) + "\n",
        "stamp": firewall_stamp(policy, proxy),
    }
