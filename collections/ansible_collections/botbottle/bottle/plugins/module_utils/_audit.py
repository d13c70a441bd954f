"""Per-bottle audit of refused DNS queries and egress proxy decisions: parsing,
flagging, retention.

Pure functions. Sources: the Docker example's dnsmasq query log (``log-queries=extra``:
``<serial> <client>/<port> query[TYPE] NAME from ...`` followed by
``<serial> <client>/<port> config NAME is NXDOMAIN``), smolvm's egress denials
(``smolvm machine egress-events --json``) and the Docker backend's egress proxy log
(JSON lines, :func:`parse_egress`). All become the same record, one JSON object per
line in the bottle's audit file, marked by ``source``::

    {"time": "2026-11-28T13:16:55Z", "bottle": "web", "name": "...", "type": "TXT",
     "verdict": "NXDOMAIN", "source": "dnsmasq", "flags": ["base32", "long-label"]}
    {"time": "2026-11-28T13:17:02Z", "bottle": "web", "name": "api.example.com",
     "type": "POST", "verdict": "no-route-match", "source": "egress-proxy", "flags": [],
     "event": "refused", "path": "/admin?[redacted]", "rule": "no-route-match",
     "reason": "..."}

A record holds only what the resolver or the proxy saw (name, type, verdict, time;
for the proxy also the path with its query redacted, the rule and its reason, the
status): never the bottle's environment, a header value or a body. Flags mark names
that look like encoded data.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

_LOG_LINE = re.compile(
    r"^(?P<stamp>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) dnsmasq\[\d+\]: "
    r"(?P<serial>\d+) (?P<client>\S+) (?P<what>query\[(?P<type>[A-Z0-9]+)\]|config) "
    r"(?P<name>\S+) (?:from \S+|is (?P<verdict>\S+))$"
)
_LOOPBACK = ("127.", "::1/")
_BASE32 = re.compile(r"^[a-z2-7]+$")
_HEX = re.compile(r"^[0-9a-f]+$")
_LONG_LABEL = 30
_CODED_LABEL = 16
_ENTROPY_BITS = 3.5
_DEEP = 6
_SINCE = re.compile(r"^(?P<n>\d+)(?P<unit>[smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True)
class Refusal:
    """One refused query as read from a source."""

    time: str
    name: str
    qtype: str
    verdict: str
    source: str
    #: further fields of the record (the egress proxy's path, rule, reason, status)
    detail: tuple[tuple[str, Any], ...] = ()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dnsmasq_time(stamp: str, now: datetime) -> datetime:
    """dnsmasq's syslog-style stamp has no year (and is UTC in the resolver container)."""
    parsed = datetime.strptime(f"{now.year} {stamp}", "%Y %b %d %H:%M:%S")
    moment = parsed.replace(tzinfo=UTC)
    if moment - now > timedelta(days=1):
        moment = moment.replace(year=now.year - 1)
    return moment


def parse_dnsmasq(lines: Iterable[str], now: datetime) -> list[Refusal]:
    """Refusals (``config NAME is ...``) in a dnsmasq ``log-queries=extra`` log, each
    with the type of the query it answered. Queries from loopback (the resolver's own
    health checks) are not the bottle's and are skipped."""
    types: dict[tuple[str, str], str] = {}
    refusals = []
    for line in lines:
        match = _LOG_LINE.match(line.rstrip("\n"))
        if match is None:
            continue
        key = (match["serial"], match["client"])
        if match["client"].startswith(_LOOPBACK):
            continue
        if match["type"]:
            types[key] = match["type"]
            continue
        refusals.append(
            Refusal(
                _iso(_dnsmasq_time(match["stamp"], now)),
                match["name"].lower(),
                types.pop(key, "?"),
                match["verdict"],
                "dnsmasq",
            )
        )
    return refusals


def _first(event: Mapping[str, Any], keys: Sequence[str]) -> Any:
    for key in keys:
        if event.get(key) not in (None, ""):
            return event[key]
    return None


def _event_time(value: Any) -> str:
    if isinstance(value, (int, float)):
        seconds = value / 1000 if value > 10**11 else value
        return _iso(datetime.fromtimestamp(seconds, tz=UTC))
    if isinstance(value, str):
        try:
            return _iso(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return value
    return ""


def parse_smolvm_events(events: Iterable[Mapping[str, Any]]) -> list[Refusal]:
    """Refusals from ``smolvm machine egress-events --json``.

    Denials of names (DNS) and of connections both count; the event's host name is
    preferred, its destination address used when no name was involved.
    """
    refusals = []
    for event in events:
        name = _first(event, ("host", "hostname", "domain", "name", "sni", "destination", "to"))
        if name is None:
            continue
        refusals.append(
            Refusal(
                _event_time(_first(event, ("at", "time", "timestamp", "ts", "firstAt"))),
                str(name).lower().rstrip("."),
                str(_first(event, ("qtype", "type", "protocol", "kind")) or "?"),
                str(_first(event, ("verdict", "reason", "decision", "action")) or "denied"),
                "smolvm",
            )
        )
    return refusals


EGRESS_SOURCE = "egress-proxy"
#: Fields of a proxy log line the audit keeps (besides host, method and time).
_EGRESS_DETAIL = ("event", "path", "rule", "reason", "status", "route")
#: The record's ``type`` for proxy events that are not an HTTP request.
_EGRESS_TYPES = {
    "connect": "CONNECT",
    "websocket_start": "WS",
    "websocket_message": "WS",
    "websocket_end": "WS",
}
_HOOK_TYPES = {
    "http_connect": "CONNECT",
    "tls_clienthello": "TLS",
    "tls_start_client": "TLS",
    "tls_start_server": "TLS",
    "server_connect": "TCP",
    "tcp_start": "TCP",
    "tcp_message": "TCP",
    "udp_start": "UDP",
    "dns_request": "DNS",
}


def _host_of(target: Any) -> str:
    """``host:port`` or ``[v6]:port`` as written by the proxy -> the host."""
    text = str(target or "?")
    if text.startswith("["):
        return text[1:].partition("]")[0]
    if text.count(":") == 1:
        text = text.partition(":")[0]
    return text.lower()


def _egress_verdict(event: str, line: Mapping[str, Any]) -> str:
    if event == "refused":
        return str(line.get("rule") or "refused")
    if event == "error":
        return "internal-error"
    if event == "response":
        return str(line.get("status", "?"))
    if event == "request":
        return "forwarded"
    if event == "connect":
        return "tunnel"
    return event


def parse_egress(lines: Iterable[str]) -> list[Refusal]:
    """Records from the egress proxy's JSON-lines log (what ``egress.log`` asked it to
    write: refusals and errors at 1, requests and responses too at 2). ``start`` lines
    are the proxy's own and skipped, as are lines that are not JSON objects (a torn
    last line). Only known fields are kept; the proxy has already redacted queries and
    secrets, and never writes header values or bodies."""
    found = []
    for text in lines:
        try:
            line = json.loads(text)
        except ValueError:
            continue
        if not isinstance(line, dict) or line.get("source", EGRESS_SOURCE) != EGRESS_SOURCE:
            continue
        event = str(line.get("event") or "")
        if not event or event == "start":
            continue
        qtype = line.get("method") or _EGRESS_TYPES.get(event)
        qtype = qtype or _HOOK_TYPES.get(str(line.get("hook")), "HTTP")
        detail = tuple((k, line[k]) for k in _EGRESS_DETAIL if line.get(k) is not None)
        found.append(
            Refusal(
                _event_time(line.get("time")),
                _host_of(line.get("host")),
                str(qtype),
                _egress_verdict(event, line),
                EGRESS_SOURCE,
                detail,
            )
        )
    return found


def _entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def flags(name: str) -> list[str]:
    """Why ``name`` looks like data being smuggled out (empty: nothing suspicious).

    ``long-label`` (a label of 30+ characters), ``base32``/``hex`` (a label of 16+
    characters from that alphabet that mixes letters and digits), ``high-entropy``
    (a 16+ character label above 3.5 bits per character), ``deep`` (more than six
    labels).
    """
    found: list[str] = []
    labels = name.lower().rstrip(".").split(".")
    for label in labels:
        mixed = any(c.isdigit() for c in label) and any(c.isalpha() for c in label)
        if len(label) >= _LONG_LABEL:
            found.append("long-label")
        if len(label) >= _CODED_LABEL and mixed and _HEX.match(label):
            found.append("hex")
        elif len(label) >= _CODED_LABEL and mixed and _BASE32.match(label):
            found.append("base32")
        if len(label) >= _CODED_LABEL and _entropy(label) >= _ENTROPY_BITS:
            found.append("high-entropy")
    if len(labels) > _DEEP:
        found.append("deep")
    return sorted(set(found))


def record(refusal: Refusal, bottle: str, probes: Iterable[str] = ()) -> dict[str, Any]:
    """The audit line for ``refusal``; names the verifier sent are marked as its own."""
    entry: dict[str, Any] = {
        **dict(refusal.detail),
        "time": refusal.time,
        "bottle": bottle,
        "name": refusal.name,
        "type": refusal.qtype,
        "verdict": refusal.verdict,
        "source": refusal.source,
        "flags": flags(refusal.name),
    }
    if refusal.name in set(probes):
        entry["origin"] = "bottle verify"
    return entry


def retain(
    entries: Sequence[Mapping[str, Any]], *, now: datetime, max_entries: int, max_age_days: int
) -> list[Mapping[str, Any]]:
    """The newest ``max_entries`` entries younger than ``max_age_days``."""
    cutoff = _iso(now - timedelta(days=max_age_days))
    kept = [e for e in entries if str(e.get("time", "")) >= cutoff]
    return kept[-max_entries:] if max_entries > 0 else []


def since_cutoff(since: str, now: datetime) -> str:
    """``--since``: a duration (``90s``, ``15m``, ``2h``, ``7d``, ``1w``) or an ISO 8601
    time → the ISO UTC time entries must not be older than."""
    match = _SINCE.match(since.strip())
    if match:
        delta = timedelta(**{_UNITS[match["unit"]]: int(match["n"])})
        return _iso(now - delta)
    try:
        moment = datetime.fromisoformat(since.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(
            f"since: {since!r} is neither a duration like 15m, 2h, 7d nor an ISO 8601 time"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _iso(moment)


def dumps(entries: Iterable[Mapping[str, Any]]) -> str:
    """JSON lines."""
    return "".join(json.dumps(dict(e), sort_keys=True) + "\n" for e in entries)


def loads(text: str) -> list[dict[str, Any]]:
    """Parse JSON lines, skipping a torn last line (a crash mid-write)."""
    entries = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            entries.append(value)
    return entries


def describe(entry: Mapping[str, Any]) -> str:
    """What an entry was about, for a table: the name, and a proxy entry's path."""
    name = str(entry.get("name", ""))
    return f"{name} {entry['path']}" if entry.get("path") else name


def event_key(entry: Mapping[str, Any]) -> str:
    """Identity of a smolvm event (its list keeps the newest 200, so re-reads overlap)."""
    return f"{entry.get('time')}|{entry.get('name')}|{entry.get('type')}|{entry.get('verdict')}"
