"""The sandbox-escape suite of ``bottle verify``: which probes to run, and what they prove.

Pure functions only. :func:`plan_checks` turns a bottle's egress policy and the
addresses around it into checks; each check is one probe run inside the bottle
(by the ``bottle-probe`` program: the collection's ``roles/bottle_verify/files/bottle-probe.c``)
plus the positive control that makes its result mean something: the same probe
from a vantage point outside the seal (the host, or a neighbour container on the
bottle's network) that must reach the target, or an earlier check in the bottle.
:func:`evaluate` turns observed outcomes into verdicts:

- ``pass``: the expected refusal was observed and its control succeeded;
- ``leak``: the bottle got an answer or a connection it must not get (a leak
  needs no control: it is proof on its own);
- ``inconclusive``: the control failed, or the outcome proves nothing either
  way. Never counted as a pass.

Docker bottles also get four checks of their egress proxy (:func:`plan_proxy_checks`),
run by a client (``_proxy_check.py``) in a throw-away container that joins the agent's
network namespace (:func:`proxy_run_argv`): the allowed host answers through the proxy
(the positive control of the other three), a direct connection to its address around
the proxy fails, a request whose Host is not its SNI is refused (``host-mismatch``),
and a CONNECT to an IP literal is refused (``ip-not-covered``). The request is one the
allowed host's route admits (:func:`choose_proxy_request` reads its ``matches``).

One check is not about the network: ``capabilities`` reads the capability sets of
the bottle's PID 1 (the agent's init or command) and of the probe itself (a process started
in the bottle) from ``/proc``. Any capability outside the runtime allowlist
(``_runtime.ALLOWED_CAPABILITIES``; NET_ADMIN would let the agent flush its own
firewall) is a leak; its positive control is that every mask was read and parsed.

Which names are allowed is decided by the policy compiler (:func:`allows_name`);
this module only picks names and reads outcomes.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.botbottle.bottle.plugins.module_utils._bottle import object_name
from ansible_collections.botbottle.bottle.plugins.module_utils._egress import (
    AGENT_CA_FILE,
    HOST_MISMATCH,
    IP_NOT_COVERED,
    NEVER_REACHED,
    PROXY_UID,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._policy import (
    EgressPolicy,
    HeaderMatch,
    PathMatch,
    RequestMatch,
    allows_name,
    request_path,
    route_for,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._runtime import (
    capabilities_in_mask,
    forbidden_in_mask,
)

BOTTLE = "bottle"
HOST = "host"
NEIGHBOUR = "neighbour"

PASS = "pass"
LEAK = "leak"
INCONCLUSIVE = "inconclusive"
SEALED = "sealed"
NOT_RUNNING = "not-running"
PLANNED = "planned"
#: A bottle's verdicts, the most serious first (what a host or fleet reports).
_VERDICT_RANK = (LEAK, INCONCLUSIVE, SEALED, PLANNED, NOT_RUNNING)
BACKENDS = ("docker", "smolmachines")

_BLOCKED = frozenset({"timeout", "refused", "unreachable", "filtered"})
_REFUSALS = frozenset({"NXDOMAIN", "REFUSED"})
#: Probe names start with this label, so the audit can tell them from the agent's queries.
PROBE_LABEL = "bottle-verify-"
_UNLISTED_PARENTS = ("unlisted.bot-bottle.invalid", "bot-bottle-probe.example", "bbprobe.test")

#: The check on the agent's capability sets, and what it expects.
CAPABILITIES = "capabilities"
CAPABILITIES_ALLOWED = "capabilities-allowed"
#: The processes the ``caps`` probe reads (PID 1 of the bottle, the probe itself) and
#: their sets, as the probe names them and as the evidence does.
_CAP_PROCESSES = ("init", "self")
_CAP_SETS = (("eff", "effective"), ("prm", "permitted"), ("bnd", "bounding"))
_CAP_MASK = re.compile(r"[0-9a-fA-F]{1,16}\Z")  # /proc prints 16 hex digits


@dataclass(frozen=True)
class Target:
    """A DNS server the bottle must not reach: ``address``:``port``, with the vantage
    point from which the same server must be reachable (the control)."""

    label: str
    address: str
    port: int = 53
    control: str = HOST
    query_name: str = ""
    dot: bool = False


@dataclass(frozen=True)
class Check:
    """One probe and its control. ``expect``: ``resolves``, ``nxdomain``, ``blocked`` or
    ``capabilities-allowed``."""

    name: str
    expect: str
    spec: str
    description: str
    control_where: str = ""
    control_spec: str = ""
    control_check: str = ""
    ipv6: bool = False
    #: proxy checks: the refusal rules that pass (``refused-by-proxy``) and the
    #: ``cidr`` routes whose addresses the bottle may reach (no bypass, no literal)
    rules: tuple[str, ...] = ()
    covered: tuple[str, ...] = ()


@dataclass(frozen=True)
class Result:
    """A check's verdict with what was observed, as returned by the module."""

    name: str
    description: str
    expected: str
    observed: str
    verdict: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "expected": self.expected,
            "observed": self.observed,
            "verdict": self.verdict,
            "evidence": self.evidence,
        }


def random_label(entropy: bytes) -> str:
    """A probe label that looks like data being smuggled out: base32 of ``entropy``."""
    return PROBE_LABEL + base64.b32encode(entropy).decode("ascii").rstrip("=").lower()


def parse_server(text: str) -> tuple[str, int]:
    """``ADDRESS`` or ``ADDRESS#PORT`` (dnsmasq's notation) → (address, port)."""
    address, _, port = text.partition("#")
    ip = ipaddress.ip_address(address.strip("[]"))
    number = int(port) if port else 53
    if not 0 < number < 65536:
        raise ValueError(f"port {number} of {text!r} is not 1..65535")
    return str(ip), number


def unlisted_name(policy: EgressPolicy, label: str) -> str:
    """A name below ``label`` that the policy does not allow (asked of the compiler)."""
    for parent in _UNLISTED_PARENTS:
        name = f"{label}.{parent}"
        if not allows_name(policy, name):
            return name
    raise ValueError("the policy allows every probe name; cannot probe for unlisted names")


def _dns(server: str, port: int, proto: str, qtype: str, name: str) -> str:
    return f"dns {server} {port} {proto} {qtype} {name}"


def _resolver_checks(policy: EgressPolicy, label: str) -> list[Check]:
    """Checks against the bottle's own resolver (the first nameserver of its resolv.conf)."""
    unlisted = unlisted_name(policy, label)
    checks: list[Check] = []
    if policy.exact_hosts:
        exact = policy.exact_hosts[0]
        control = "allowed-name"
        checks.append(
            Check(
                control,
                "resolves",
                _dns("system", 53, "udp", "A", exact),
                f"the allowlisted name {exact} resolves (positive control)",
            )
        )
    else:
        control = "resolver-answers"
        checks.append(
            Check(
                control,
                "nxdomain",
                _dns("system", 53, "udp", "A", unlisted),
                "the bottle's resolver answers (positive control; no exact route to ask for)",
            )
        )
    for proto in ("udp", "tcp"):
        if policy.exact_hosts:
            below = f"{label}.{policy.exact_hosts[0]}"
            checks.append(
                Check(
                    f"subdomain-nxdomain-{proto}",
                    "nxdomain",
                    _dns("system", 53, proto, "TXT", below),
                    f"a data-carrying name below an exact route is NXDOMAIN ({proto})",
                    control_check=control,
                )
            )
        checks.append(
            Check(
                f"unlisted-nxdomain-{proto}",
                "nxdomain",
                _dns("system", 53, proto, "A", unlisted),
                f"an unlisted name is NXDOMAIN ({proto})",
                control_check=control,
            )
        )
    return checks


def _target_checks(target: Target, name: str) -> list[Check]:
    """Direct DNS to ``target`` over UDP and TCP (and DoT when it serves 853)."""
    ipv6 = ":" in target.address
    qname = target.query_name or name
    checks = []
    for proto in ("udp", "tcp"):
        spec = _dns(target.address, target.port, proto, "A", qname)
        checks.append(
            Check(
                f"{target.label}-{proto}",
                "blocked",
                spec,
                f"no DNS answer from {target.address} port {target.port} ({proto})",
                control_where=target.control,
                control_spec=spec,
                ipv6=ipv6,
            )
        )
    if target.dot:
        spec = f"tcp {target.address} 853"
        checks.append(
            Check(
                f"{target.label}-dot",
                "blocked",
                spec,
                f"no DNS-over-TLS connection to {target.address} port 853",
                control_where=target.control,
                control_spec=spec,
                ipv6=ipv6,
            )
        )
    return checks


def _literal_checks(address: str, port: int, name: str) -> list[Check]:
    """DNS and a plain TCP connection to a literal address no route allows."""
    label = f"literal-{address}"
    checks = _target_checks(Target(label, address, port), name)
    spec = f"tcp {address} {port}"
    checks.append(
        Check(
            f"{label}-connect",
            "blocked",
            spec,
            f"no TCP connection to the IP literal {address} port {port}",
            control_where=HOST,
            control_spec=spec,
            ipv6=":" in address,
        )
    )
    return checks


def capability_check() -> Check:
    """The agent's effective, permitted and bounding sets hold only allowed capabilities."""
    return Check(
        CAPABILITIES,
        CAPABILITIES_ALLOWED,
        "caps",
        "no capability outside the allowlist in the effective, permitted or bounding set "
        "of the agent (PID 1) or of a process started in the bottle",
    )


def _cidr_allows(policy: EgressPolicy, address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in ipaddress.ip_network(cidr) for cidr in policy.cidrs)


def plan_checks(
    policy: EgressPolicy,
    *,
    entropy: bytes,
    targets: Sequence[Target] = (),
    literals: Sequence[str] = (),
    capabilities: bool = True,
) -> list[Check]:
    """Every check for one bottle, controls before the checks that depend on them.

    ``targets`` are resolvers near the bottle (Docker's embedded DNS, the network
    gateway); ``literals`` are ``ADDRESS[#PORT]`` resolvers on the internet (the
    host must reach them: that is their control). Literals inside an allowed CIDR
    are skipped: reaching them is the policy, not a leak. ``capabilities`` adds the
    check on the agent's capability sets (for containers; a microVM's PID 1 is its
    guest's own init, and its seal is the VM, not capability sets).
    """
    label = random_label(entropy)
    name = unlisted_name(policy, label)
    checks = _resolver_checks(policy, label)
    for target in targets:
        checks += _target_checks(target, name)
    for text in literals:
        address, port = parse_server(text)
        if not _cidr_allows(policy, address):
            checks += _literal_checks(address, port, name)
    if capabilities:
        checks.append(capability_check())
    return checks


def probe_names(checks: Sequence[Check]) -> list[str]:
    """The DNS names the checks ask for (so the audit can mark them as the verifier's)."""
    names = {c.spec.split()[5] for c in checks if c.spec.startswith("dns ")}
    return sorted(n for n in names if n.startswith(PROBE_LABEL) or PROBE_LABEL in n)


def _observed(outcome: Mapping[str, Any]) -> str:
    state = str(outcome.get("outcome", "missing"))
    if state == "answer":
        return f"answer {outcome.get('rcode')} ({outcome.get('ancount', 0)} records)"
    return state


def _reached(outcome: Mapping[str, Any]) -> bool:
    return outcome.get("outcome") in ("answer", "connected")


def _judge_nxdomain(outcome: Mapping[str, Any], control_ok: bool) -> str:
    if outcome.get("outcome") != "answer":
        return INCONCLUSIVE  # no answer at all proves nothing about the name
    if outcome.get("rcode") in _REFUSALS and not outcome.get("ancount"):
        return PASS if control_ok else INCONCLUSIVE
    return LEAK  # resolved, NODATA or SERVFAIL: the name went past the allowlist


def _judge(check: Check, outcome: Mapping[str, Any], control_ok: bool) -> str:
    state = outcome.get("outcome")
    if check.expect == "resolves":
        return PASS if state == "answer" and outcome.get("rcode") == "NOERROR" else INCONCLUSIVE
    if check.expect == "nxdomain":
        return _judge_nxdomain(outcome, control_ok)
    if _reached(outcome):
        return LEAK
    if check.ipv6 and state == "unreachable":
        return PASS  # no IPv6 route in the bottle: nothing to leak over
    return PASS if state in _BLOCKED and control_ok else INCONCLUSIVE


def _capability_masks(outcome: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """The well-formed masks of a ``caps`` outcome by set (``init bounding``), and the
    sets that were not read or not parsed."""
    masks: dict[str, str] = {}
    unread: list[str] = []
    for process in _CAP_PROCESSES:
        read = outcome.get(process)
        for key, label in _CAP_SETS:
            mask = read.get(key) if isinstance(read, Mapping) else None
            if isinstance(mask, str) and _CAP_MASK.match(mask):
                masks[f"{process} {label}"] = mask
            else:
                unread.append(f"{process} {label}")
    return masks, unread


def _judge_capabilities(check: Check, outcome: Mapping[str, Any]) -> Result:
    """Leak when any mask that was read holds a capability outside the allowlist (proof
    on its own); pass only when all six masks were read and parsed; else inconclusive."""
    masks, unread = _capability_masks(outcome)
    held = {where: capabilities_in_mask(mask) for where, mask in masks.items()}
    forbidden = []
    grouped: dict[tuple[str, str], list[str]] = {}  # (process, names) -> sets, for `observed`
    for where, mask in masks.items():
        names = ", ".join(forbidden_in_mask(mask))
        if names:
            forbidden.append(f"{where}: {names}")
            process, label = where.split(" ", 1)
            grouped.setdefault((process, names), []).append(label)
    read_ok = outcome.get("outcome") == "read" and not unread
    evidence: dict[str, Any] = {
        "probe": check.spec,
        "outcome": dict(outcome),
        "held": held,
        "forbidden": forbidden,
        "control": (
            f"all {len(masks)} masks read from /proc and parsed"
            if read_ok
            else "not every mask was read from /proc and parsed: "
            + (", ".join(unread) or "probe error")
        ),
    }
    state = str(outcome.get("outcome", "missing"))
    if forbidden:
        verdict_ = LEAK
        observed = "; ".join(f"{p} {'/'.join(sets)}: {n}" for (p, n), sets in grouped.items())
    elif read_ok:
        union = sorted({name for listed in held.values() for name in listed})
        verdict_ = PASS
        observed = "within the allowlist: " + (", ".join(union) or "no capability held")
    elif state == "read":
        verdict_, observed = INCONCLUSIVE, "garbled masks: " + ", ".join(unread)
    else:
        verdict_ = INCONCLUSIVE
        observed = f"{state} ({outcome['errno']})" if outcome.get("errno") else state
    return Result(check.name, check.description, check.expect, observed, verdict_, evidence)


def evaluate(
    checks: Sequence[Check],
    outcomes: Mapping[str, Mapping[str, Any]],
    controls: Mapping[str, Mapping[str, Any]],
) -> list[Result]:
    """Verdicts for ``checks`` from the bottle's ``outcomes`` and the controls' outcomes
    (both keyed by check name); a missing outcome is inconclusive."""
    verdicts: dict[str, str] = {}
    results = []
    for check in checks:
        outcome = outcomes.get(check.name, {"outcome": "missing"})
        if check.expect == CAPABILITIES_ALLOWED:
            result = _judge_capabilities(check, outcome)
            verdicts[check.name] = result.verdict
            results.append(result)
            continue
        evidence: dict[str, Any] = {"probe": check.spec, "outcome": dict(outcome)}
        if check.control_check:
            control_ok = verdicts.get(check.control_check) == PASS
            evidence["control"] = (
                f"check {check.control_check}: {verdicts.get(check.control_check)}"
            )
        elif check.control_where:
            control = controls.get(check.name, {"outcome": "missing"})
            control_ok = _reached(control)
            evidence["control"] = f"from the {check.control_where}: {_observed(control)}"
        else:
            control_ok = True
        if is_proxy_check(check):
            verdict = _judge_proxy(check, outcome, control_ok)
            verdicts[check.name] = verdict
            results.append(
                Result(
                    check.name,
                    check.description,
                    check.expect,
                    _proxy_observed(outcome),
                    verdict,
                    evidence,
                )
            )
            continue
        verdict = _judge(check, outcome, control_ok)
        if verdict == PASS and check.ipv6 and outcome.get("outcome") == "unreachable":
            evidence["note"] = "no IPv6 route inside the bottle"
        verdicts[check.name] = verdict
        results.append(
            Result(
                check.name, check.description, check.expect, _observed(outcome), verdict, evidence
            )
        )
    return results


def verdict(results: Sequence[Result]) -> str:
    """``leak`` if anything leaked, else ``inconclusive`` if anything was, else ``sealed``."""
    kinds = {r.verdict for r in results}
    if LEAK in kinds:
        return LEAK
    if INCONCLUSIVE in kinds or not results:
        return INCONCLUSIVE
    return SEALED


def summary(results: Sequence[Result]) -> dict[str, int]:
    """How many checks passed, leaked, were inconclusive."""
    counts = {PASS: 0, LEAK: 0, INCONCLUSIVE: 0}
    for result in results:
        counts[result.verdict] += 1
    return counts


# --------------------------------------------------------------------------- egress proxy

#: The proxy checks, in the order the client runs them (the control first).
PROXY_ALLOWED = "proxy-allowed-host"
PROXY_MISMATCH = "proxy-host-mismatch"
PROXY_DIRECT = "proxy-direct-egress"
PROXY_LITERAL = "proxy-ip-literal"
#: What they expect.
REACHES_THROUGH_PROXY = "reaches-through-proxy"
REFUSED_BY_PROXY = "refused-by-proxy"
BLOCKED_AROUND_PROXY = "blocked-around-proxy"
_PROXY_EXPECTS = frozenset({REACHES_THROUGH_PROXY, REFUSED_BY_PROXY, BLOCKED_AROUND_PROXY})
#: IP literals for the literal CONNECT when the allowed host's own address is covered
#: by a ``cidr`` route (documentation ranges, RFC 5737: nothing answers there).
_LITERAL_FALLBACKS = ("192.0.2.1", "198.51.100.1", "203.0.113.1")
_HTTPS_PORT = 443
#: The key of the client output that stands for "nothing sent, and why" (see
#: :func:`proxy_outcomes`).
NOT_SENT = "not_sent"


def is_proxy_check(check: Check) -> bool:
    """Is ``check`` one of the proxy checks (run by the proxy client, not the probe)?"""
    return check.expect in _PROXY_EXPECTS


#: Methods the verifier prefers, in this order: safe ones (RFC 9110 9.2.1), which change
#: nothing upstream. Another method is sent only on a path that carries the run's label.
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
#: The headers the client sends besides Host, unless a route's matches need other values.
_DEFAULT_HEADERS = (("user-agent", "bottle-verify"), ("connection", "close"))
#: Values tried against a regular-expression header predicate (after its literal start).
_HEADER_TRIALS = ("bottle-verify", "1", "0", "true", "yes", "a", "")
_REGEX_META = frozenset(".^$*+?{}[]\\|()")


@dataclass(frozen=True)
class ProxyRequest:
    """The request the proxy checks send through ``CONNECT host:443``: ``method`` ``path``
    with ``Host: host`` and then ``headers`` (every other header, in order). ``route`` is
    the key of the route the proxy holds it against; ``entry`` the index of the entry of
    that route's ``matches`` it was made from (``-1``: the route has no matches).
    ``problem`` says why no request could be chosen (then nothing is sent)."""

    host: str
    route: str
    method: str = "GET"
    path: str = "/"
    headers: tuple[tuple[str, str], ...] = _DEFAULT_HEADERS
    entry: int = -1
    problem: str = ""

    def describe(self) -> str:
        """``GET /path`` and the headers a route's matches asked for (values not shown)."""
        if self.problem:
            return "no request"
        asked = [n for n, v in self.headers if (n, v) not in _DEFAULT_HEADERS]
        return f"{self.method} {self.path}" + (f" with {', '.join(asked)}" if asked else "")


def _proxy_hosts(policy: EgressPolicy) -> list[tuple[str, str]]:
    """(host, route key) the proxy checks may reach, best first: the exact routes in
    order, then ``www.`` below each wildcard zone whose name the compiler allows."""
    hosts = [(h, h) for h in policy.exact_hosts]
    for zone in policy.wildcard_zones:
        name = f"www.{zone}"
        key = route_for(policy, name)
        if key is not None and allows_name(policy, name) and name not in policy.exact_hosts:
            hosts.append((name, key))
    return hosts


def _valid_path(path: str) -> bool:
    try:
        return request_path(path) == path
    except ValueError:
        return False


def _literal_start(pattern: str) -> str:
    """The literal text a regular expression starts with (``/api/v`` of
    ``^/api/v[0-9]+/.*``): up to its first metacharacter, without a last character a
    quantifier makes optional."""
    text = pattern[1:] if pattern.startswith("^") else pattern.removeprefix("\\A")
    out: list[str] = []
    i = 0
    while i < len(text):
        char, step = text[i], 1
        if char == "\\":
            if i + 1 >= len(text) or text[i + 1].isalnum():
                break  # \d, \w, \Z ...: not a literal
            char, step = text[i + 1], 2
        elif char in _REGEX_META:
            break
        if text[i + step : i + step + 1] in ("?", "*", "{"):
            break
        out.append(char)
        i += step
    return "".join(out)


def _path_candidates(path: PathMatch, label: str) -> list[str]:
    """Paths ``path`` admits that the verifier may send, best first: an exact path
    itself; a prefix continued by ``label``; for a regular expression the first of a few
    simple trials its pattern matches whole (none: it is given up)."""
    if path.kind == "exact":
        return [path.value]
    if path.kind == "prefix":
        joined = path.value if path.value.endswith("/") else path.value + "/"
        return [joined + label]
    start = _literal_start(path.value)
    trials = [
        start + label,
        f"{start}/{label}",
        f"{start}0/{label}",
        f"{start}a/{label}",
        f"/{label}",
        start,
        start + "/",
        start + "0",
        start + "1",
        start + "a",
        "/",
    ]
    found = [t for t in dict.fromkeys(trials) if _valid_path(t) and path.matches(t)]
    return found[:1]


def _clean_value(value: str) -> bool:
    """Can the client send ``value`` as a header value, unchanged by the parsers on the way?"""
    return value == value.strip(" \t") and all(" " <= c <= "~" for c in value)


def _header_value(predicates: Sequence[HeaderMatch], host: str, label: str) -> tuple[str, str]:
    """A value of one header that all ``predicates`` (on that header) admit, and ``""``;
    or ``""`` and why there is none."""
    name = predicates[0].name
    if name == "host":
        if all(p.matches([("host", host)]) for p in predicates):
            return host, ""
        return "", f"its header predicates on host do not admit {host}"
    if name == "transfer-encoding":
        return "", "it needs a transfer-encoding header, and the verifier sends no body"
    exact = [p.value for p in predicates if p.kind == "exact"]
    if name == "content-length":
        trials = ["0"]
    elif exact:
        trials = exact
    else:
        starts = [_literal_start(p.value) for p in predicates]
        trials = [t for s in starts for t in (s, s + "0", s + "a")]
        trials += [*_HEADER_TRIALS, label]
    for value in dict.fromkeys(trials):
        if _clean_value(value) and all(p.matches([(name, value)]) for p in predicates):
            return value, ""
    if exact or name == "content-length":
        shown = ", ".join(repr(v) for v in exact) or "a length"
        return "", f"its header {name} must be {shown}, which the verifier cannot send"
    patterns = ", ".join(repr(p.value) for p in predicates if p.kind == "regex")
    return "", (
        f"its header {name} must match {patterns}, and none of the verifier's trial values does"
    )


def _entry_request(
    host: str, route: str, index: int, entry: RequestMatch, label: str
) -> tuple[ProxyRequest | None, str]:
    """A request ``entry`` admits (checked with the entry itself), or None and why not."""
    methods = [m for m in _SAFE_METHODS if not entry.methods or m in entry.methods]
    methods += [m for m in entry.methods if m not in _SAFE_METHODS and m != "CONNECT"]
    if not methods:
        return None, "its only method is CONNECT"
    method = methods[0]
    if entry.paths:
        paths = [c for p in entry.paths for c in _path_candidates(p, label)]
        if not paths:
            shown = ", ".join(repr(p.value) for p in entry.paths)
            return None, (
                f"its paths are regular expressions ({shown}) none of the verifier's "
                "trial paths matches"
            )
    else:
        paths = [f"/{label}"]
    paths.sort(key=lambda c: label not in c)  # the verifier's own paths first
    if method not in _SAFE_METHODS:
        paths = [c for c in paths if label in c]
        if not paths:
            return None, (
                f"its methods ({', '.join(entry.methods)}) may change something upstream and "
                "its paths leave no room for the verifier's own segment"
            )
    headers = dict(_DEFAULT_HEADERS)
    by_name: dict[str, list[HeaderMatch]] = {}
    for predicate in entry.headers:
        by_name.setdefault(predicate.name, []).append(predicate)
    for name, predicates in by_name.items():
        value, problem = _header_value(predicates, host, label)
        if problem:
            return None, problem
        if name != "host":
            headers[name] = value
    sent = tuple(headers.items())
    path = paths[0]
    if not entry.matches(method, path, [("host", host), *sent]):  # never: a safety net
        return None, f"{method} {path} is not admitted by it"
    return ProxyRequest(host, route, method, path, sent, index), ""


def _route_request(
    host: str, route: str, matchers: Sequence[RequestMatch], label: str
) -> tuple[ProxyRequest | None, str]:
    """The best request one of ``matchers`` admits (a safe method, the verifier's own
    path, the first entry), or None and why each entry gives none."""
    found: list[ProxyRequest] = []
    problems: list[str] = []
    for index, entry in enumerate(matchers):
        request, problem = _entry_request(host, route, index, entry, label)
        if request is not None:
            found.append(request)
        else:
            problems.append(f"entry {index}: {problem}")
    if found:
        return min(found, key=lambda r: (r.method not in _SAFE_METHODS, label not in r.path)), ""
    return None, f"route {route}: " + "; ".join(problems)


def choose_proxy_request(policy: EgressPolicy, label: str) -> ProxyRequest | None:
    """The request of the proxy checks for a bottle with ``policy``, chosen so that its
    route's ``matches`` admit it (else the proxy refuses the positive control with
    ``no-route-match``, and the bottle cannot be proven sealed).

    Exact routes before ``www.<zone>`` of a wildcard route; within each, a route without
    matches first (``GET /<label>``); else a request made from one entry of a route's
    matches: the method GET, HEAD or OPTIONS when the entry allows it, else another of its
    methods (never CONNECT; only on a path carrying ``label``); the path an exact path,
    a prefix followed by ``label``, or the first of a few simple trials a regular
    expression matches whole; the headers the exact header predicates name, or a trial
    value a regular expression matches. None when the bottle has no host route; a
    request with ``problem`` set when no route admits a request the verifier can make."""
    hosts = _proxy_hosts(policy)
    if not hosts:
        return None
    problems: list[str] = []
    exact = [h for h in hosts if h[0] == h[1]]
    for group in (exact, [h for h in hosts if h[0] != h[1]]):
        for host, route in group:
            if policy.matches_for(route) is None:
                return ProxyRequest(host, route, path=f"/{label}")
        for host, route in group:
            request, problem = _route_request(host, route, policy.matches_for(route) or (), label)
            if request is not None:
                return request
            problems.append(problem)
    host, route = hosts[0]
    return ProxyRequest(
        host,
        route,
        problem="no route's matches admit a request the verifier can make ("
        + "; ".join(problems)
        + ")",
    )


def _covering(covered: Sequence[str], address: str) -> str:
    """The first of ``covered`` (cidr routes) that holds ``address``, or ``""``."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ""
    for cidr in covered:
        network = ipaddress.ip_network(cidr)
        if ip.version == network.version and ip in network:
            return cidr
    return ""


def plan_proxy_checks(
    policy: EgressPolicy,
    *,
    label: str,
    proxy: str,
    resolver: str,
    timeout_ms: int = 2000,
) -> tuple[list[Check], dict[str, Any]]:
    """The four proxy checks of a Docker bottle, and the proxy client's spec (its JSON
    argument). ``proxy`` is ``ADDRESS:PORT`` as the agent's ``HTTPS_PROXY`` names it,
    ``resolver`` the bottle resolver's address (either may be ``""`` when unknown: the
    checks are still listed, and inconclusive). No host route: no checks.

    The request is :func:`choose_proxy_request`'s, the same for the control and the
    fronted request (which differs in its Host only); when there is none, the spec holds
    its ``problem`` and nothing is sent. The fronting Host is an unlisted name below
    ``label``; the path carries ``label`` when the route lets it (the proxy's log shows
    the path, so the verifier's requests can be told from the agent's)."""
    request = choose_proxy_request(policy, label)
    if request is None:
        return [], {}
    host = request.host
    other = unlisted_name(policy, label)
    covered = tuple(policy.cidrs)
    fallbacks = [a for a in _LITERAL_FALLBACKS if not _covering(covered, a)]
    via = proxy or "the agent's proxy"
    where = f"{host}:{_HTTPS_PORT}"
    shape = request.describe()
    checks = [
        Check(
            PROXY_ALLOWED,
            REACHES_THROUGH_PROXY,
            f"https {where} via {via}: {shape}",
            f"the allowed host {host} answers through the egress proxy, TLS verified against "
            "the bottle CA (positive control)",
        ),
        Check(
            PROXY_MISMATCH,
            REFUSED_BY_PROXY,
            f"https {where} via {via} with Host {other}: {shape}",
            f"a request with SNI {host} and another Host is refused by the proxy",
            control_check=PROXY_ALLOWED,
            rules=(HOST_MISMATCH,),
        ),
        Check(
            PROXY_DIRECT,
            BLOCKED_AROUND_PROXY,
            f"tcp <address of {host}> {_HTTPS_PORT}",
            f"no direct TCP connection to {host}'s address, around the proxy",
            control_check=PROXY_ALLOWED,
            covered=covered,
        ),
        Check(
            PROXY_LITERAL,
            REFUSED_BY_PROXY,
            f"CONNECT <address of {host}>:{_HTTPS_PORT} via {via}",
            "a CONNECT to an IP literal no cidr route covers is refused by the proxy",
            control_check=PROXY_ALLOWED,
            rules=(IP_NOT_COVERED, NEVER_REACHED),
            covered=covered,
        ),
    ]
    spec: dict[str, Any] = {
        "proxy": proxy,
        "ca": AGENT_CA_FILE,
        "resolver": resolver,
        "host": host,
        "port": _HTTPS_PORT,
        "other": other,
        "method": request.method,
        "path": request.path,
        "headers": [list(h) for h in request.headers],
        "literals": fallbacks[:1],
        "timeout": max(timeout_ms, 100) / 1000,
    }
    if request.problem:
        spec["problem"] = request.problem
    return checks, spec


@dataclass(frozen=True)
class ProxyFacts:
    """What the proxy client needs from Docker about one bottle: the agent's network
    mode (``container:<holder>``), its proxy (``ADDRESS:PORT`` from ``HTTPS_PROXY``),
    the host file mounted as its CA, and the proxy container's image (which has
    Python). ``problem`` says why the client cannot run (then the checks are
    inconclusive)."""

    network: str = ""
    proxy: str = ""
    ca_source: str = ""
    image: str = ""
    problem: str = ""


def _env_value(env: Any, key: str) -> str:
    for item in env if isinstance(env, list) else []:
        name, sep, value = str(item).partition("=")
        if sep and name == key:
            return value
    return ""


def proxy_facts(rows: Sequence[Mapping[str, Any]], agent: str, proxy: str) -> ProxyFacts:
    """:class:`ProxyFacts` from ``docker container inspect AGENT PROXY`` (either may be
    missing from ``rows``)."""
    by_name = {str(r.get("Name", "")).lstrip("/"): r for r in rows if isinstance(r, Mapping)}
    found = by_name.get(agent)
    if found is None:
        return ProxyFacts(problem=f"no agent container {agent}")
    network = str((found.get("HostConfig") or {}).get("NetworkMode") or "")
    url = _env_value((found.get("Config") or {}).get("Env"), "HTTPS_PROXY")
    address = re.fullmatch(r"http://(\d{1,3}(?:\.\d{1,3}){3}:\d{1,5})/?", url)
    mounts = found.get("Mounts") or []
    ca_source = next(
        (
            str(m.get("Source"))
            for m in mounts
            if isinstance(m, Mapping) and m.get("Destination") == AGENT_CA_FILE
        ),
        "",
    )
    seen = by_name.get(proxy)
    image = str(seen.get("Image") or "") if seen is not None else ""
    problems = []
    if not network.startswith("container:"):
        problems.append(f"the agent's network mode is {network or 'unknown'}, not a holder's")
    if address is None:
        problems.append("the agent has no HTTPS_PROXY of the form http://ADDRESS:PORT")
    if not ca_source:
        problems.append(f"the agent has no bottle CA mounted at {AGENT_CA_FILE}")
    if seen is None:
        problems.append(f"no egress proxy container {proxy}")
    elif not (seen.get("State") or {}).get("Running"):
        problems.append(f"the egress proxy {proxy} is not running")
    return ProxyFacts(
        network=network,
        proxy=address.group(1) if address else "",
        ca_source=ca_source,
        image=image,
        problem="; ".join(problems),
    )


def proxy_run_argv(
    facts: ProxyFacts, bottle: str, spec: Mapping[str, Any], source: str
) -> list[str]:
    """The one ``docker run`` of the proxy client for a bottle: in the agent's network
    namespace, the proxy's image (its Python), no capability, read-only, the proxy's
    unprivileged user, the bottle CA read-only at the agent's path; removed when done."""
    return [
        "docker",
        "run",
        "--rm",
        "--pull",
        "never",
        "--network",
        facts.network,
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges:true",
        "--read-only",
        "--user",
        f"{PROXY_UID}:{PROXY_UID}",
        "--log-driver",
        "none",
        "--label",
        f"botbottle.verify={bottle}",
        "--mount",
        f"type=bind,source={facts.ca_source},target={AGENT_CA_FILE},readonly",
        "--entrypoint",
        "python3",
        facts.image,
        "-I",
        "-c",
        source,
        json.dumps(dict(spec), sort_keys=True),
    ]


def parse_proxy_output(stdout: str) -> dict[str, Any]:
    """The client's one JSON object (the last line that is one); ValueError if none."""
    for raw in reversed(stdout.splitlines()):
        line = raw.strip()
        if line.startswith("{"):
            value = json.loads(line)
            if isinstance(value, dict):
                return value
    raise ValueError("the proxy client printed no JSON object")


def proxy_outcomes(checks: Sequence[Check], output: Mapping[str, Any]) -> dict[str, Any]:
    """Each proxy check's outcome from the client's output. The literal check takes
    the first CONNECT whose address no cidr route covers; the bypass check's address
    when a route covers it is ``allowed-by-route`` (reaching it is the policy). An
    output ``{"not_sent": why}`` (no request the route admits: the client did not run)
    makes every check ``not-sent``."""
    if output.get(NOT_SENT):
        unsent = {"outcome": "not-sent", "error": str(output[NOT_SENT])}
        return {c.name: dict(unsent) for c in checks if is_proxy_check(c)}
    outcomes: dict[str, Any] = {}
    keys = {PROXY_ALLOWED: "allowed", PROXY_MISMATCH: "mismatch", PROXY_DIRECT: "direct"}
    for check in checks:
        if check.name in keys:
            found = output.get(keys[check.name])
            outcome = dict(found) if isinstance(found, Mapping) else {"outcome": "missing"}
            route = _covering(check.covered, str(outcome.get("address", "")))
            if check.name == PROXY_DIRECT and route:
                outcome = {**outcome, "outcome": "allowed-by-route", "route": route}
            outcomes[check.name] = outcome
        elif check.name == PROXY_LITERAL:
            tried = [t for t in output.get("literals") or [] if isinstance(t, Mapping)]
            chosen = next(
                (dict(t) for t in tried if not _covering(check.covered, str(t.get("address")))),
                {"outcome": "missing"},
            )
            outcomes[check.name] = chosen
    return outcomes


def _proxy_observed(outcome: Mapping[str, Any]) -> str:
    state = str(outcome.get("outcome", "missing"))
    rule = outcome.get("rule")
    status = outcome.get("status")
    address = f" {outcome['address']}" if outcome.get("address") else ""
    if state == "response":
        return f"refused by the proxy: {rule} (HTTP {status})" if rule else f"HTTP {status}"
    if state == "connect-refused":
        return f"CONNECT{address} refused: {rule or 'no rule named'} (HTTP {status})"
    if state == "tunnel":
        return f"CONNECT{address} accepted (HTTP {status})"
    if state == "allowed-by-route":
        return f"{outcome.get('address')} is inside cidr route {outcome.get('route')}"
    text = f"{state}{' to' + address if address else ''}"
    return f"{text} ({outcome['error']})" if outcome.get("error") else text


def _judge_proxy(check: Check, outcome: Mapping[str, Any], control_ok: bool) -> str:
    state = outcome.get("outcome")
    if check.expect == REACHES_THROUGH_PROXY:
        return PASS if state == "response" and not outcome.get("rule") else INCONCLUSIVE
    if check.expect == BLOCKED_AROUND_PROXY:
        if state == "allowed-by-route":
            return PASS  # the policy opens this address: there is no proxy to get around
        leaked = state == "connected"
        refused = state in _BLOCKED
    else:
        leaked = state == "tunnel" or (state == "response" and not outcome.get("rule"))
        refused = state in ("response", "connect-refused") and outcome.get("rule") in check.rules
    if leaked:
        return LEAK  # it got through: proof on its own
    return PASS if refused and control_ok else INCONCLUSIVE


@dataclass(frozen=True)
class BottleSpec:
    """One bottle to probe: its name, backend and compiled policy (a dict, as the
    ``bottle_manifest`` lookup returns it), and where it runs when not at the default
    names (``bottle-<name>``, ``bottle-<name>-resolver``)."""

    name: str
    backend: str
    policy: Mapping[str, Any]
    container: str = ""
    neighbour: str = ""
    network: str = ""
    machine: str = ""

    @property
    def docker(self) -> bool:
        return self.backend == "docker"

    @property
    def agent(self) -> str:
        """The Docker container or microVM the probe runs in."""
        given = self.container if self.docker else self.machine
        return given or object_name(self.name)

    @property
    def resolver(self) -> str:
        """Docker: the neighbour container where the near controls run."""
        return self.neighbour or object_name(self.name, "resolver")

    @property
    def proxy(self) -> str:
        """Docker: the bottle's egress proxy container."""
        return object_name(self.name, "proxy")

    @property
    def bottle_network(self) -> str:
        """Docker: the network whose gateway is probed."""
        return self.network or object_name(self.name)


_SPEC_TEXT = ("container", "neighbour", "network", "machine")


def parse_bottles(entries: Sequence[Mapping[str, Any]]) -> list[BottleSpec]:
    """The module's ``bottles`` list: each ``{bottle (or name), backend, policy}``, with
    optional ``container``, ``neighbour``, ``network``, ``machine``; other keys (a status
    row's ``state``, ``declared`` ...) are ignored. A bottle named twice is an error: its
    probes would share names and audit state."""
    specs: list[BottleSpec] = []
    problems: list[str] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            problems.append(f"bottles[{index}] is not a dict")
            continue
        name = entry.get("bottle") or entry.get("name")
        label = f"bottles[{index}]" + (f" ({name})" if name else "")
        if not isinstance(name, str) or not name:
            problems.append(f"{label}: no bottle name (key bottle)")
            continue
        backend = entry.get("backend")
        policy = entry.get("policy")
        if backend not in BACKENDS:
            problems.append(f"{label}: backend {backend!r} is not one of {', '.join(BACKENDS)}")
        if not isinstance(policy, Mapping) or not policy:
            problems.append(f"{label}: no compiled policy (key policy, from the lookup)")
        if name in seen:
            problems.append(f"{label}: bottle {name} is listed twice")
        seen.add(name)
        if problems:
            continue
        extra = {key: str(entry.get(key) or "") for key in _SPEC_TEXT}
        specs.append(BottleSpec(name, str(backend), dict(policy or {}), **extra))
    if problems:
        raise ValueError("; ".join(problems))
    return specs


def fleet_verdict(verdicts: Iterable[str]) -> str:
    """What ``bottle verify`` answers for a fleet: ``leak`` > ``inconclusive`` >
    ``sealed``; ``none`` when no running bottle was probed (planned, not running)."""
    seen = set(verdicts)
    return next((v for v in (LEAK, INCONCLUSIVE, SEALED) if v in seen), "none")


def host_verdict(verdicts: Iterable[str]) -> str:
    """The most serious of a host's bottle verdicts: ``leak`` > ``inconclusive`` >
    ``sealed`` > ``planned`` > ``not-running`` (also when there is no bottle)."""
    seen = set(verdicts)
    return next((v for v in _VERDICT_RANK if v in seen), NOT_RUNNING)


def report_rows(
    bottles: Sequence[Mapping[str, Any]],
    probed: Sequence[Mapping[str, Any]],
    refusals: Mapping[str, int] | None = None,
) -> list[dict[str, Any]]:
    """One report row per bottle of the host (``bottles``: ``{bottle, backend, ...}``) from
    the module's per-bottle results (``probed``: ``{bottle, verdict, summary, results}``)
    and the count of new refusals the audit collected per bottle. A bottle that was not
    probed is ``not-running`` with no results."""
    by_name = {str(p.get("bottle")): p for p in probed}
    counts = refusals or {}
    rows = []
    for bottle in bottles:
        name = str(bottle["bottle"])
        probe = by_name.get(name, {})
        results = [dict(r) for r in probe.get("results") or []]
        rows.append(
            {
                "bottle": name,
                "backend": bottle.get("backend"),
                "verdict": str(probe.get("verdict") or NOT_RUNNING),
                "summary": dict(probe.get("summary") or {}),
                "leaks": [r["name"] for r in results if r.get("verdict") == LEAK],
                "inconclusive": [r["name"] for r in results if r.get("verdict") == INCONCLUSIVE],
                "new_refusals": int(counts.get(name) or 0),
                "results": results,
            }
        )
    return rows


def _leak_fix(row: Mapping[str, Any]) -> str:
    """A leaking agent that holds a forbidden capability is a container to create anew
    (``bottle up`` would keep it running); every other leak is fixed by reloading rules."""
    leaks = list(row.get("leaks") or [])
    proxy_leaks = {PROXY_MISMATCH, PROXY_LITERAL} & set(leaks)
    if proxy_leaks and CAPABILITIES not in leaks:
        return (
            f"Its egress proxy let through what it must refuse: remove it (docker rm -f "
            f"{object_name(str(row['bottle']), 'proxy')}) and re-run `bottle up`, which creates "
            "it anew" + (" and reloads its rules" if set(leaks) - proxy_leaks else "")
        )
    if CAPABILITIES not in leaks:
        return "Stop its agent and re-run `bottle up`, which reloads its rules"
    observed = next(
        (r.get("observed", "") for r in row.get("results") or [] if r.get("name") == CAPABILITIES),
        "",
    )
    return (
        f"Its agent holds capabilities outside the allowlist ({observed}): remove its container "
        f"(docker rm -f bottle-{row['bottle']}) and re-run `bottle up`, which creates it anew"
        + (" and reloads its rules" if len(leaks) > 1 else "")
    )


def failure_message(row: Mapping[str, Any], host: str) -> str:
    """What the role says when a bottle's report ``row`` fails the host: its leaks and the
    fix, or (``bottle_verify_strict``) the checks that could not be decided."""
    name = row.get("bottle")
    if row.get("verdict") == LEAK:
        leaking = [r for r in row.get("results") or [] if r.get("verdict") == LEAK]
        return (
            f"bottle {name} on {host} LEAKS: {', '.join(row.get('leaks') or [])} "
            f"({'; '.join(str(r.get('description', '')) for r in leaking)}). "
            f"{_leak_fix(row)}; `bottle verify` shows every check."
        )
    inconclusive = list(row.get("inconclusive") or [])
    hints = []
    if set(inconclusive) - {PROXY_ALLOWED, PROXY_MISMATCH, PROXY_DIRECT, PROXY_LITERAL}:
        hints.append("Point bottle_verify_resolvers at resolvers this host can reach.")
    if PROXY_ALLOWED in inconclusive:
        observed = next(
            (
                r.get("observed", "")
                for r in row.get("results") or []
                if r.get("name") == PROXY_ALLOWED
            ),
            "",
        )
        if str(observed).startswith("not-sent"):
            hints.append(
                f"The proxy checks found no request to send ({observed}): give the bottle a "
                "host route without matches, or one whose matches allow GET on an exact or "
                "prefix path."
            )
        else:
            hints.append(
                f"The allowed host did not answer through the egress proxy ({observed}): the "
                "proxy checks need it to answer HTTPS (see the check's probe for the host "
                "and request)."
            )
    return (
        f"bottle {name} on {host} could not be proven sealed: "
        f"{', '.join(inconclusive)} were inconclusive (their positive control "
        "failed; see `bottle verify`). " + " ".join(hints)
    ).rstrip()
