"""The escape suite's planning and verdicts (module_utils/_probe.py), without a bottle."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ansible_collections.botbottle.bottle.plugins.filter.verify import (
    bottle_verify_message,
    bottle_verify_report,
)
from ansible_collections.botbottle.bottle.plugins.module_utils import _egress
from ansible_collections.botbottle.bottle.plugins.module_utils._policy import (
    allows_name,
    build_policy,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._probe import (
    HOST,
    NEIGHBOUR,
    NOT_SENT,
    PROBE_LABEL,
    PROXY_ALLOWED,
    PROXY_DIRECT,
    PROXY_LITERAL,
    PROXY_MISMATCH,
    BottleSpec,
    Check,
    ProxyFacts,
    Result,
    Target,
    capability_check,
    choose_proxy_request,
    evaluate,
    failure_message,
    host_verdict,
    is_proxy_check,
    parse_bottles,
    parse_proxy_output,
    parse_server,
    plan_checks,
    plan_proxy_checks,
    probe_names,
    proxy_facts,
    proxy_outcomes,
    proxy_run_argv,
    random_label,
    report_rows,
    summary,
    unlisted_name,
    verdict,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._runtime import (
    ALLOWED_CAPABILITIES,
    CAPABILITY_BITS,
)

ENTROPY = bytes(range(10))
POLICY = build_policy(["api.example.com"], ["cdn.example"], ["203.0.113.0/24"])


def _answer(rcode: str, ancount: int = 0) -> dict[str, Any]:
    return {"outcome": "answer", "rcode": rcode, "ancount": ancount}


def _plan(**kwargs: Any) -> dict[str, Any]:
    return {c.name: c for c in plan_checks(POLICY, entropy=ENTROPY, **kwargs)}


def test_probe_label_looks_like_smuggled_data() -> None:
    label = random_label(ENTROPY)
    assert label.startswith(PROBE_LABEL)
    assert label[len(PROBE_LABEL) :].isalnum() and len(label) <= 63


def test_resolver_checks_use_the_first_exact_route_and_names_the_compiler_refuses() -> None:
    checks = _plan()
    assert checks["allowed-name"].spec == "dns system 53 udp A api.example.com"
    below = checks["subdomain-nxdomain-tcp"].spec.split()[-1]
    assert below.endswith(".api.example.com") and not allows_name(POLICY, below)
    unlisted = checks["unlisted-nxdomain-udp"].spec.split()[-1]
    assert not allows_name(POLICY, unlisted)
    assert checks["subdomain-nxdomain-udp"].control_check == "allowed-name"


def test_without_exact_routes_the_resolver_itself_is_the_control() -> None:
    checks = {c.name: c for c in plan_checks(build_policy([], ["cdn.example"]), entropy=ENTROPY)}
    assert "allowed-name" not in checks and "subdomain-nxdomain-udp" not in checks
    assert checks["unlisted-nxdomain-tcp"].control_check == "resolver-answers"


def test_unlisted_name_avoids_a_wildcard_that_covers_the_first_parent() -> None:
    policy = build_policy([], ["invalid"])
    name = unlisted_name(policy, "x")
    assert not allows_name(policy, name) and not name.endswith(".invalid")


def test_targets_and_literals_carry_their_controls() -> None:
    targets = [
        Target("docker-embedded-dns", "127.0.0.11", control=NEIGHBOUR, query_name="r"),
        Target("gateway", "10.0.0.1", control=NEIGHBOUR, dot=True),
    ]
    checks = _plan(targets=targets, literals=["192.0.2.53#5353", "2001:db8::53", "203.0.113.9"])
    assert checks["docker-embedded-dns-udp"].spec == "dns 127.0.0.11 53 udp A r"
    assert checks["docker-embedded-dns-tcp"].control_where == NEIGHBOUR
    assert checks["gateway-dot"].spec == "tcp 10.0.0.1 853"
    assert checks["literal-192.0.2.53-tcp"].spec.startswith("dns 192.0.2.53 5353 tcp A ")
    assert checks["literal-192.0.2.53-connect"].control_where == HOST
    assert checks["literal-2001:db8::53-udp"].ipv6
    # inside an allowed CIDR: reaching it is the policy, not a leak
    assert not any(name.startswith("literal-203.0.113.9") for name in checks)


@pytest.mark.parametrize("text", ["resolver", "1.2.3.4#0", "1.2.3.4#70000"])
def test_bad_literal_resolvers_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_server(text)


def test_probe_names_are_the_verifiers_own() -> None:
    names = probe_names(plan_checks(POLICY, entropy=ENTROPY))
    assert names and all(PROBE_LABEL in n for n in names)
    assert "api.example.com" not in names


def _evaluate(outcomes: dict[str, Any], controls: dict[str, Any]) -> dict[str, str]:
    checks = plan_checks(
        POLICY, entropy=ENTROPY, targets=[Target("gw", "10.0.0.1", control=NEIGHBOUR)]
    )
    return {r.name: r.verdict for r in evaluate(checks, outcomes, controls)}


def _mask(*names: str) -> str:
    """A /proc/PID/status mask holding ``names``, as the kernel prints it."""
    return f"{sum(1 << CAPABILITY_BITS[name] for name in names):016x}"


def _caps(**sets: str) -> dict[str, Any]:
    """A ``caps`` outcome: every set empty (Docker's --cap-drop ALL) unless given, as
    ``init_bnd=...``, ``self_eff=...``."""
    masks = {
        process: {key: sets.get(f"{process}_{key}", _mask()) for key in ("eff", "prm", "bnd")}
        for process in ("self", "init")
    }
    return {"op": "caps", "outcome": "read", **masks}


SEALED = {
    "capabilities": _caps(),
    "allowed-name": _answer("NOERROR", 1),
    "subdomain-nxdomain-udp": _answer("NXDOMAIN"),
    "subdomain-nxdomain-tcp": _answer("NXDOMAIN"),
    "unlisted-nxdomain-udp": _answer("NXDOMAIN"),
    "unlisted-nxdomain-tcp": _answer("REFUSED"),
    "gw-udp": {"outcome": "filtered"},
    "gw-tcp": {"outcome": "timeout"},
}
CONTROLS = {"gw-udp": _answer("NOERROR"), "gw-tcp": _answer("SERVFAIL")}


def test_a_sealed_bottle_passes_every_check() -> None:
    verdicts = _evaluate(SEALED, CONTROLS)
    assert set(verdicts.values()) == {"pass"}


def test_an_answer_from_a_forbidden_resolver_is_a_leak_even_without_control() -> None:
    verdicts = _evaluate({**SEALED, "gw-udp": _answer("NXDOMAIN")}, {})
    assert verdicts["gw-udp"] == "leak"
    assert verdicts["gw-tcp"] == "inconclusive"  # blocked, but nothing showed it could answer


def test_a_resolving_subdomain_is_a_leak() -> None:
    verdicts = _evaluate({**SEALED, "subdomain-nxdomain-tcp": _answer("NOERROR", 1)}, CONTROLS)
    assert verdicts["subdomain-nxdomain-tcp"] == "leak"
    verdicts = _evaluate({**SEALED, "subdomain-nxdomain-udp": _answer("SERVFAIL")}, CONTROLS)
    assert verdicts["subdomain-nxdomain-udp"] == "leak"  # forwarded upstream, which failed


def test_a_failed_positive_control_makes_dependent_checks_inconclusive_never_pass() -> None:
    verdicts = _evaluate({**SEALED, "allowed-name": {"outcome": "timeout"}}, CONTROLS)
    assert verdicts["allowed-name"] == "inconclusive"
    assert verdicts["subdomain-nxdomain-udp"] == "inconclusive"
    assert verdicts["unlisted-nxdomain-tcp"] == "inconclusive"
    verdicts = _evaluate(SEALED, {"gw-udp": {"outcome": "timeout"}})
    assert verdicts["gw-udp"] == "inconclusive"


def test_missing_outcomes_and_errors_prove_nothing() -> None:
    verdicts = _evaluate({}, CONTROLS)
    assert set(verdicts.values()) == {"inconclusive"}
    verdicts = _evaluate({**SEALED, "gw-tcp": {"outcome": "error"}}, CONTROLS)
    assert verdicts["gw-tcp"] == "inconclusive"


def test_no_ipv6_route_counts_as_ipv6_absent() -> None:
    checks = plan_checks(POLICY, entropy=ENTROPY, literals=["2001:db8::53"])
    outcomes = {**SEALED, **{c.name: {"outcome": "unreachable"} for c in checks if c.ipv6}}
    results = {r.name: r for r in evaluate(checks, outcomes, {})}
    assert results["literal-2001:db8::53-udp"].verdict == "pass"
    assert "no IPv6 route" in results["literal-2001:db8::53-udp"].evidence["note"]


def test_bottle_verdict_ranks_leak_over_inconclusive_over_sealed() -> None:
    checks = plan_checks(POLICY, entropy=ENTROPY)
    sealed = evaluate(checks, SEALED, {})
    assert verdict(sealed) == "sealed"
    assert verdict(evaluate(checks, {**SEALED, "allowed-name": {}}, {})) == "inconclusive"
    leaking = {**SEALED, "allowed-name": {}, "unlisted-nxdomain-udp": _answer("NOERROR", 1)}
    assert verdict(evaluate(checks, leaking, {})) == "leak"
    assert verdict([]) == "inconclusive"


def test_every_bottle_gets_the_capability_check_unless_the_caller_opts_out() -> None:
    check = _plan()["capabilities"]
    assert check.spec == "caps" and check.expect == "capabilities-allowed"
    assert not (check.control_where or check.control_check)  # its control is the read itself
    assert "allowlist" in check.description
    without = plan_checks(POLICY, entropy=ENTROPY, capabilities=False)
    assert "capabilities" not in {c.name for c in without}
    # the non-DNS spec leaves the names the audit marks alone
    assert probe_names(plan_checks(POLICY, entropy=ENTROPY)) == probe_names(without)


def _capabilities(outcome: dict[str, Any] | None) -> Result:
    outcomes = {} if outcome is None else {"capabilities": outcome}
    [result] = evaluate([capability_check()], outcomes, {})
    return result


@pytest.mark.parametrize(
    "sets",
    [
        {},  # Docker's --cap-drop ALL: every set empty
        {"init_eff": _mask("CHOWN"), "init_prm": _mask("CHOWN"), "init_bnd": _mask("CHOWN")},
        {"init_bnd": _mask(*ALLOWED_CAPABILITIES), "self_bnd": _mask(*ALLOWED_CAPABILITIES)},
    ],
)
def test_capability_sets_within_the_allowlist_pass(sets: dict[str, str]) -> None:
    result = _capabilities(_caps(**sets))
    assert result.verdict == "pass"
    assert result.evidence["control"] == "all 6 masks read from /proc and parsed"
    assert result.evidence["forbidden"] == []
    assert result.observed.startswith("within the allowlist")


def test_net_admin_in_the_agents_bounding_set_is_a_leak_naming_it() -> None:
    result = _capabilities(_caps(init_bnd=_mask("CHOWN", "NET_ADMIN")))
    assert result.verdict == "leak"
    assert result.evidence["forbidden"] == ["init bounding: NET_ADMIN"]
    assert result.observed == "init bounding: NET_ADMIN"
    assert result.evidence["held"]["init bounding"] == ["CHOWN", "NET_ADMIN"]


def test_a_forbidden_capability_in_the_probes_effective_set_is_a_leak() -> None:
    result = _capabilities(_caps(self_eff=_mask("NET_ADMIN", "NET_RAW", "KILL")))
    assert result.verdict == "leak"
    assert result.evidence["forbidden"] == ["self effective: NET_ADMIN, NET_RAW"]


def test_a_leak_names_every_set_that_holds_it() -> None:
    admin = _mask("NET_ADMIN")
    sets = {f"{p}_{k}": admin for p in ("init", "self") for k in ("eff", "prm", "bnd")}
    result = _capabilities(_caps(**{**sets, "self_eff": _mask(), "self_prm": _mask()}))
    assert result.evidence["forbidden"] == [
        "init effective: NET_ADMIN",
        "init permitted: NET_ADMIN",
        "init bounding: NET_ADMIN",
        "self bounding: NET_ADMIN",
    ]
    assert result.observed == (
        "init effective/permitted/bounding: NET_ADMIN; self bounding: NET_ADMIN"
    )


def test_a_capability_the_table_does_not_know_is_a_leak() -> None:
    result = _capabilities(_caps(init_bnd=f"{1 << 45:016x}"))
    assert result.verdict == "leak"
    assert "init bounding: bits" in result.observed


def test_a_leak_needs_no_control_even_when_the_other_process_was_unreadable() -> None:
    outcome = {
        "op": "caps",
        "outcome": "error",
        "errno": "Permission denied",
        "self": {"eff": _mask(), "prm": _mask(), "bnd": _mask("NET_ADMIN")},
        "init": {"errno": "Permission denied"},
    }
    assert _capabilities(outcome).verdict == "leak"


@pytest.mark.parametrize(
    "outcome",
    [
        None,  # the probe printed nothing for it
        {"op": "caps", "outcome": "error", "errno": "No such file or directory"},
        {
            "op": "caps",
            "outcome": "error",
            "errno": "Permission denied",
            "self": {"eff": _mask(), "prm": _mask(), "bnd": _mask()},
            "init": {"errno": "Permission denied"},  # hidepid: PID 1 unreadable
        },
    ],
)
def test_unreadable_capability_sets_are_inconclusive_never_pass(
    outcome: dict[str, Any] | None,
) -> None:
    result = _capabilities(outcome)
    assert result.verdict == "inconclusive"
    assert result.evidence["control"].startswith("not every mask was read from /proc and parsed")


@pytest.mark.parametrize(
    "outcome",
    [
        {**_caps(), "init": {"eff": _mask(), "prm": _mask()}},  # CapBnd missing
        _caps(init_bnd="zzzzzzzzzzzzzzzz"),
        _caps(self_eff="0x0000000000000000"),
        _caps(self_prm="1" + _mask()),  # 17 digits: not a 64-bit mask
        _caps(init_eff=""),
        {**_caps(), "self": "000001fffeffffff"},
        {**_caps(), "init": {"eff": 0, "prm": 0, "bnd": 0}},
        {"op": "caps", "outcome": "read"},
    ],
)
def test_garbled_capability_masks_are_inconclusive_never_pass(outcome: dict[str, Any]) -> None:
    result = _capabilities(outcome)
    assert result.verdict == "inconclusive"
    assert result.observed.startswith("garbled masks: ")


def test_a_capability_leak_makes_the_bottle_leak() -> None:
    checks = plan_checks(POLICY, entropy=ENTROPY)
    assert verdict(evaluate(checks, SEALED, {})) == "sealed"
    leaking = {**SEALED, "capabilities": _caps(init_bnd=_mask("NET_ADMIN"))}
    assert verdict(evaluate(checks, leaking, {})) == "leak"
    unread = {**SEALED, "capabilities": {"outcome": "error", "errno": "Permission denied"}}
    assert verdict(evaluate(checks, unread, {})) == "inconclusive"


# ---------------------------------------------------------------- a host's bottles at once


def test_parse_bottles_takes_status_rows_as_they_are() -> None:
    rows = [
        {
            "bottle": "web",
            "backend": "docker",
            "state": "running",
            "declared": "running",
            "state_ok": True,
            "policy": {"format": 1},
        },
        {"name": "vm", "backend": "smolmachines", "policy": {"format": 1}, "machine": "custom"},
    ]
    web, vm = parse_bottles(rows)
    assert web == BottleSpec("web", "docker", {"format": 1})
    assert (web.agent, web.resolver, web.bottle_network) == (
        "bottle-web",
        "bottle-web-resolver",
        "bottle-web",
    )
    assert vm.agent == "custom" and not vm.docker


def test_parse_bottles_names_every_problem_at_once() -> None:
    with pytest.raises(ValueError) as caught:
        parse_bottles(
            [
                {"backend": "docker", "policy": {"format": 1}},
                {"bottle": "a", "backend": "podman", "policy": {"format": 1}},
                {"bottle": "b", "backend": "docker"},
                {"bottle": "c", "backend": "docker", "policy": {"format": 1}},
                {"bottle": "c", "backend": "docker", "policy": {"format": 1}},
                "d",  # type: ignore[list-item]
            ]
        )
    message = str(caught.value)
    assert "bottles[0]: no bottle name" in message
    assert "bottles[1] (a): backend 'podman'" in message
    assert "bottles[2] (b): no compiled policy" in message
    assert "bottles[4] (c): bottle c is listed twice" in message
    assert "bottles[5] is not a dict" in message


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        (["sealed", "leak", "inconclusive"], "leak"),
        (["sealed", "inconclusive", "not-running"], "inconclusive"),
        (["not-running", "sealed"], "sealed"),
        (["planned", "not-running"], "planned"),
        (["not-running"], "not-running"),
        ([], "not-running"),
    ],
)
def test_a_hosts_verdict_is_its_most_serious_bottles(verdicts: list[str], expected: str) -> None:
    assert host_verdict(verdicts) == expected


def _check(name: str, verdict_: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"{name} holds",
        "observed": "timeout",
        "verdict": verdict_,
        "evidence": {},
        **extra,
    }


def _probed(bottle: str, results: list[dict[str, Any]], verdict_: str) -> dict[str, Any]:
    return {
        "bottle": bottle,
        "backend": "docker",
        "verdict": verdict_,
        "summary": {"pass": 1},
        "results": results,
        "notes": [],
    }


BOTTLES = [
    {"bottle": "web", "backend": "docker", "state": "running"},
    {"bottle": "off", "backend": "docker", "state": "absent"},
    {"bottle": "vm", "backend": "smolmachines", "state": "running"},
]


def test_report_rows_roll_up_every_bottle_in_the_hosts_order() -> None:
    probed = [
        _probed("vm", [_check("gateway-udp", "inconclusive")], "inconclusive"),
        _probed("web", [_check("allowed-name", "pass"), _check("gateway-udp", "leak")], "leak"),
    ]
    web, off, vm = report_rows(BOTTLES, probed, {"web": 3})
    assert list(web) == [
        "bottle",
        "backend",
        "verdict",
        "summary",
        "leaks",
        "inconclusive",
        "new_refusals",
        "results",
    ]
    assert (web["verdict"], web["leaks"], web["inconclusive"], web["new_refusals"]) == (
        "leak",
        ["gateway-udp"],
        [],
        3,
    )
    assert web["results"] == probed[1]["results"] and web["summary"] == {"pass": 1}
    assert off == {
        "bottle": "off",
        "backend": "docker",
        "verdict": "not-running",
        "summary": {},
        "leaks": [],
        "inconclusive": [],
        "new_refusals": 0,
        "results": [],
    }
    assert vm["verdict"] == "inconclusive" and vm["inconclusive"] == ["gateway-udp"]


def test_the_report_filter_reads_the_audit_loop_and_a_skipped_probe() -> None:
    audits = [
        {"item": {"bottle": "web"}, "added": 2, "changed": False},
        {"item": {"bottle": "off"}, "skipped": True},
    ]
    rows = bottle_verify_report(BOTTLES, None, audits)
    assert [(r["bottle"], r["verdict"], r["new_refusals"]) for r in rows] == [
        ("web", "not-running", 2),
        ("off", "not-running", 0),
        ("vm", "not-running", 0),
    ]


def test_a_leak_message_names_the_checks_and_the_fix() -> None:
    [row] = report_rows(
        BOTTLES[:1],
        [_probed("web", [_check("gateway-udp", "leak"), _check("gateway-tcp", "leak")], "leak")],
    )
    assert failure_message(row, "h1") == (
        "bottle web on h1 LEAKS: gateway-udp, gateway-tcp (gateway-udp holds; gateway-tcp holds). "
        "Stop its agent and re-run `bottle up`, which reloads its rules; "
        "`bottle verify` shows every check."
    )


@pytest.mark.parametrize(
    ("others", "tail"),
    [
        ([], "which creates it anew;"),
        (["gateway-udp"], "which creates it anew and reloads its rules;"),
    ],
)
def test_a_capability_leak_says_to_create_the_agent_anew(others: list[str], tail: str) -> None:
    caps = _check("capabilities", "leak", observed="init bounding: NET_ADMIN")
    results = [caps, *(_check(name, "leak") for name in others)]
    [row] = report_rows(BOTTLES[:1], [_probed("web", results, "leak")])
    message = bottle_verify_message(row, "h1")
    assert message.startswith("bottle web on h1 LEAKS: capabilities")
    assert (
        "Its agent holds capabilities outside the allowlist (init bounding: NET_ADMIN): "
        "remove its container (docker rm -f bottle-web) and re-run `bottle up`, " + tail
    ) in message


def test_an_undecided_message_names_the_inconclusive_checks() -> None:
    [row] = report_rows(
        BOTTLES[:1], [_probed("web", [_check("gateway-udp", "inconclusive")], "inconclusive")]
    )
    assert failure_message(row, "h1") == (
        "bottle web on h1 could not be proven sealed: gateway-udp were inconclusive (their "
        "positive control failed; see `bottle verify`). Point bottle_verify_resolvers at "
        "resolvers this host can reach."
    )


def test_the_rolled_up_summary_is_the_modules() -> None:
    checks = plan_checks(POLICY, entropy=ENTROPY)
    results = evaluate(checks, SEALED, {})
    probed = {
        "bottle": "web",
        "verdict": verdict(results),
        "summary": summary(results),
        "results": [r.to_dict() for r in results],
    }
    [row] = report_rows(BOTTLES[:1], [probed])
    assert row["verdict"] == "sealed" and row["summary"] == {
        "pass": len(checks),
        "leak": 0,
        "inconclusive": 0,
    }


# --------------------------------------------------------------------------- egress proxy

PROXY_CHECKS = (PROXY_ALLOWED, PROXY_MISMATCH, PROXY_DIRECT, PROXY_LITERAL)
LABEL = random_label(ENTROPY)


def _proxy_plan(
    policy: Any = POLICY, **kwargs: Any
) -> tuple[dict[str, Check], dict[str, Any], list[Check]]:
    checks, spec = plan_proxy_checks(
        policy, label=LABEL, proxy="10.9.0.5:8080", resolver="10.9.0.3", **kwargs
    )
    return {c.name: c for c in checks}, spec, checks


def _client_output(**overrides: Any) -> dict[str, Any]:
    """What the proxy client prints for a sealed bottle (api.example.com at 198.51.100.7)."""
    out: dict[str, Any] = {
        "resolved": {"outcome": "answer", "rcode": "NOERROR", "addresses": ["198.51.100.7"]},
        "allowed": {"outcome": "response", "status": 200, "rule": ""},
        "mismatch": {"outcome": "response", "status": 421, "rule": "host-mismatch"},
        "direct": {"address": "198.51.100.7", "outcome": "timeout"},
        "literals": [
            {"address": "198.51.100.7", "outcome": "connect-refused", "status": 403,
             "rule": "ip-not-covered"},
            {"address": "192.0.2.1", "outcome": "connect-refused", "status": 403,
             "rule": "ip-not-covered"},
        ],
    }  # fmt: skip
    out.update(overrides)
    return out


def _proxy_verdicts(checks: list[Check], output: dict[str, Any]) -> dict[str, Result]:
    return {r.name: r for r in evaluate(checks, proxy_outcomes(checks, output), {})}


def test_the_proxy_checks_reach_the_first_exact_route_and_front_an_unlisted_name() -> None:
    by_name, spec, checks = _proxy_plan()
    assert [c.name for c in checks] == list(PROXY_CHECKS)  # the control first
    assert all(is_proxy_check(c) for c in checks)
    assert not any(is_proxy_check(c) for c in plan_checks(POLICY, entropy=ENTROPY))
    assert spec["host"] == "api.example.com" and spec["port"] == 443
    assert spec["proxy"] == "10.9.0.5:8080" and spec["resolver"] == "10.9.0.3"
    assert spec["ca"] == "/etc/bot-bottle/ca.pem"
    assert spec["other"] == unlisted_name(POLICY, LABEL)
    assert not allows_name(POLICY, spec["other"])
    assert spec["path"] == f"/{LABEL}"  # the proxy's log tells the verifier's requests
    assert spec["method"] == "GET" and "problem" not in spec
    assert spec["headers"] == [["user-agent", "bottle-verify"], ["connection", "close"]]
    assert by_name[PROXY_ALLOWED].spec.endswith(f": GET /{LABEL}")
    # every attack depends on the allowed host answering through the proxy
    for name in PROXY_CHECKS[1:]:
        assert by_name[name].control_check == PROXY_ALLOWED
    assert by_name[PROXY_MISMATCH].rules == ("host-mismatch",)
    assert "ip-not-covered" in by_name[PROXY_LITERAL].rules
    assert spec["timeout"] == 2.0
    # the documentation address a cidr route covers is not the fallback literal
    assert spec["literals"] == ["192.0.2.1"]
    assert by_name[PROXY_LITERAL].covered == ("203.0.113.0/24",)


def test_a_covered_fallback_literal_is_skipped() -> None:
    policy = build_policy(["api.example.com"], [], ["192.0.2.0/24"])
    _by_name, spec, _checks = _proxy_plan(policy)
    assert spec["literals"] == ["198.51.100.1"]


def test_wildcard_only_bottles_reach_www_below_the_zone_and_cidr_only_bottles_get_none() -> None:
    _by_name, spec, checks = _proxy_plan(build_policy([], ["cdn.example"], []))
    assert spec["host"] == "www.cdn.example" and len(checks) == 4
    assert choose_proxy_request(build_policy([], [], ["203.0.113.0/24"]), LABEL) is None
    assert plan_proxy_checks(
        build_policy([], [], ["203.0.113.0/24"]), label=LABEL, proxy="", resolver=""
    ) == ([], {})


def test_a_sealed_proxy_passes_all_four_checks() -> None:
    _by_name, _spec, checks = _proxy_plan()
    results = _proxy_verdicts(checks, _client_output())
    assert {n: r.verdict for n, r in results.items()} == dict.fromkeys(PROXY_CHECKS, "pass")
    assert results[PROXY_ALLOWED].observed == "HTTP 200"
    assert results[PROXY_MISMATCH].observed == "refused by the proxy: host-mismatch (HTTP 421)"
    assert results[PROXY_DIRECT].observed == "timeout to 198.51.100.7"
    assert results[PROXY_LITERAL].observed == (
        "CONNECT 198.51.100.7 refused: ip-not-covered (HTTP 403)"
    )
    assert results[PROXY_MISMATCH].evidence["control"] == f"check {PROXY_ALLOWED}: pass"


@pytest.mark.parametrize(
    ("key", "outcome", "leaking"),
    [
        ("mismatch", {"outcome": "response", "status": 200, "rule": ""}, PROXY_MISMATCH),
        ("direct", {"address": "198.51.100.7", "outcome": "connected"}, PROXY_DIRECT),
        (
            "literals",
            [{"address": "198.51.100.7", "outcome": "tunnel", "status": 200, "rule": ""}],
            PROXY_LITERAL,
        ),
    ],
)
def test_an_attack_that_gets_through_is_a_leak_even_when_the_control_failed(
    key: str, outcome: Any, leaking: str
) -> None:
    _by_name, _spec, checks = _proxy_plan()
    for allowed in ("response", "tls-failed"):
        control = {"outcome": allowed, "status": 200, "rule": ""}
        results = _proxy_verdicts(checks, _client_output(**{key: outcome, "allowed": control}))
        assert results[leaking].verdict == "leak"
        others = {r.verdict for n, r in results.items() if n not in (leaking, PROXY_ALLOWED)}
        assert others == ({"pass"} if allowed == "response" else {"inconclusive"})


@pytest.mark.parametrize(
    "allowed",
    [
        {"outcome": "response", "status": 403, "rule": "private-answer"},  # refused by the proxy
        {"outcome": "connect-refused", "status": 502, "rule": "no-address"},
        {"outcome": "tls-failed", "error": "SSLCertVerificationError: ..."},
        {"outcome": "proxy-unreachable", "error": "TimeoutError: timed out"},
    ],
)
def test_a_failed_control_makes_every_refused_attack_inconclusive(allowed: Any) -> None:
    _by_name, _spec, checks = _proxy_plan()
    results = _proxy_verdicts(checks, _client_output(allowed=allowed))
    assert {r.verdict for r in results.values()} == {"inconclusive"}


def test_a_refusal_for_another_reason_proves_nothing() -> None:
    _by_name, _spec, checks = _proxy_plan()
    output = _client_output(
        mismatch={"outcome": "response", "status": 403, "rule": "no-route-match"},
        literals=[{"address": "198.51.100.7", "outcome": "connect-refused", "status": 407}],
        direct={"address": "198.51.100.7", "outcome": "error", "error": "OSError"},
    )
    results = _proxy_verdicts(checks, output)
    assert results[PROXY_ALLOWED].verdict == "pass"
    for name in PROXY_CHECKS[1:]:
        assert results[name].verdict == "inconclusive", name


def test_a_missing_client_output_is_inconclusive() -> None:
    _by_name, _spec, checks = _proxy_plan()
    results = _proxy_verdicts(checks, {})
    assert {r.verdict for r in results.values()} == {"inconclusive"}
    assert results[PROXY_ALLOWED].observed == "missing"


def test_an_address_a_cidr_route_covers_is_neither_bypass_nor_literal() -> None:
    _by_name, _spec, checks = _proxy_plan()
    output = _client_output(
        direct={"address": "203.0.113.9", "outcome": "connected"},
        literals=[
            {"address": "203.0.113.9", "outcome": "tunnel", "status": 200, "rule": ""},
            {"address": "192.0.2.1", "outcome": "connect-refused", "status": 403,
             "rule": "ip-not-covered"},
        ],
    )  # fmt: skip
    results = _proxy_verdicts(checks, output)
    assert results[PROXY_DIRECT].verdict == "pass"
    assert results[PROXY_DIRECT].observed == "203.0.113.9 is inside cidr route 203.0.113.0/24"
    assert results[PROXY_LITERAL].verdict == "pass"
    assert results[PROXY_LITERAL].observed.startswith("CONNECT 192.0.2.1 refused")


def _inspected(**agent: Any) -> list[dict[str, Any]]:
    base = {
        "Name": "/bottle-web",
        "HostConfig": {"NetworkMode": "container:abc123"},
        "Config": {"Env": ["HOME=/root", "HTTPS_PROXY=http://10.9.0.5:8080", "X=y=z"]},
        "Mounts": [
            {"Source": "/srv/web/resolv.conf", "Destination": "/etc/resolv.conf"},
            {"Source": "/srv/web/ca/cert.pem", "Destination": "/etc/bot-bottle/ca.pem"},
        ],
        "State": {"Running": True},
    }
    base.update(agent)
    proxy = {"Name": "/bottle-web-proxy", "Image": "sha256:beef", "State": {"Running": True}}
    return [base, proxy]


def test_proxy_facts_come_from_the_agents_own_settings() -> None:
    facts = proxy_facts(_inspected(), "bottle-web", "bottle-web-proxy")
    assert facts == ProxyFacts(
        network="container:abc123",
        proxy="10.9.0.5:8080",
        ca_source="/srv/web/ca/cert.pem",
        image="sha256:beef",
    )


def test_proxy_facts_name_every_reason_the_client_cannot_run() -> None:
    rows = _inspected(HostConfig={"NetworkMode": "bridge"}, Config={"Env": []}, Mounts=[])
    facts = proxy_facts(rows[:1], "bottle-web", "bottle-web-proxy")
    assert facts.problem == (
        "the agent's network mode is bridge, not a holder's; the agent has no HTTPS_PROXY of "
        "the form http://ADDRESS:PORT; the agent has no bottle CA mounted at "
        "/etc/bot-bottle/ca.pem; no egress proxy container bottle-web-proxy"
    )
    stopped = _inspected()
    stopped[1]["State"] = {"Running": False}
    assert proxy_facts(stopped, "bottle-web", "bottle-web-proxy").problem == (
        "the egress proxy bottle-web-proxy is not running"
    )
    assert proxy_facts([], "bottle-web", "p").problem == "no agent container bottle-web"


def test_the_client_runs_once_unprivileged_in_the_agents_namespace() -> None:
    facts = proxy_facts(_inspected(), "bottle-web", "bottle-web-proxy")
    _by_name, spec, _checks = _proxy_plan()
    argv = proxy_run_argv(facts, "web", spec, "print(1)")
    assert argv[:3] == ["docker", "run", "--rm"]
    joined = " ".join(argv)
    assert "--network container:abc123" in joined
    assert "--cap-drop ALL" in joined and "--read-only" in joined
    assert "--security-opt no-new-privileges:true" in joined
    assert "--user 65532:65532" in joined and "--pull never" in joined
    assert (
        "--mount type=bind,source=/srv/web/ca/cert.pem,target=/etc/bot-bottle/ca.pem,readonly"
        in joined
    )
    assert "--privileged" not in argv and "--cap-add" not in argv
    assert argv[-5:-1] == ["sha256:beef", "-I", "-c", "print(1)"]
    assert json.loads(argv[-1]) == spec


def test_the_clients_output_is_its_last_json_line() -> None:
    assert parse_proxy_output('noise\n{"allowed": {}}\n') == {"allowed": {}}
    with pytest.raises(ValueError, match="no JSON object"):
        parse_proxy_output("Traceback ...\n")


def test_a_proxy_leak_says_to_create_the_proxy_anew() -> None:
    row = {
        "bottle": "web",
        "verdict": "leak",
        "leaks": [PROXY_MISMATCH],
        "results": [_check(PROXY_MISMATCH, "leak")],
    }
    message = failure_message(row, "h1")
    assert "docker rm -f bottle-web-proxy" in message and "reloads its rules" not in message
    row["leaks"] = [PROXY_LITERAL, "gateway-udp"]
    assert "and reloads its rules" in failure_message(row, "h1")


def test_an_undecided_proxy_control_says_what_the_allowed_host_answered() -> None:
    row = {
        "bottle": "web",
        "verdict": "inconclusive",
        "inconclusive": [PROXY_ALLOWED, PROXY_MISMATCH],
        "results": [{"name": PROXY_ALLOWED, "verdict": "inconclusive", "observed": "tls-failed"}],
    }
    message = failure_message(row, "h1")
    assert "did not answer through the egress proxy (tls-failed)" in message
    assert "bottle_verify_resolvers" not in message


# --------------------------------------------------------------------------- the request


def _http(*routes: tuple[str, list[dict[str, Any]]], exact: tuple[str, ...] = ()) -> Any:
    """A policy whose exact routes are ``exact`` plus the hosts of ``routes`` (with those
    matches; none when empty); ``*.zone`` keys are wildcard routes."""
    hosts = [*exact, *(k for k, _ in routes if not k.startswith("*."))]
    zones = [k[2:] for k, _ in routes if k.startswith("*.")]
    return build_policy(hosts, zones, [], 0, {k: m for k, m in routes if m})


def _chosen(policy: Any) -> Any:
    request = choose_proxy_request(policy, LABEL)
    assert request is not None
    return request


def _admitted(policy: Any, request: Any) -> bool:
    """Does the policy's route admit the request as the client sends it (the proxy's test)?"""
    matchers = policy.matches_for(request.route)
    sent = [("host", request.host), *request.headers]
    return matchers is None or any(m.matches(request.method, request.path, sent) for m in matchers)


API_PREFIX = [{"paths": [{"type": "prefix", "value": "/api/"}], "methods": ["GET"]}]


def test_a_route_without_matches_is_preferred_to_an_earlier_one_with_matches() -> None:
    policy = _http(("a.example.com", API_PREFIX), exact=("b.example.com",))
    request = _chosen(policy)
    assert (request.host, request.route, request.entry) == ("b.example.com", "b.example.com", -1)
    assert (request.method, request.path) == ("GET", f"/{LABEL}")
    assert request.describe() == f"GET /{LABEL}" and not request.problem


@pytest.mark.parametrize(
    ("prefix", "path"),
    [("/api/", f"/api/{LABEL}"), ("/api", f"/api/{LABEL}"), ("/", f"/{LABEL}")],
)
def test_a_prefix_path_is_continued_by_the_label(prefix: str, path: str) -> None:
    policy = _http(("a.example.com", [{"paths": [{"type": "prefix", "value": prefix}]}]))
    request = _chosen(policy)
    assert (request.method, request.path, request.entry) == ("GET", path, 0)
    assert _admitted(policy, request)


def test_the_only_route_with_matches_gets_a_request_they_admit() -> None:
    policy = _http(("a.example.com", API_PREFIX))
    checks, spec = plan_proxy_checks(policy, label=LABEL, proxy="10.9.0.5:8080", resolver="")
    assert spec["host"] == "a.example.com" and spec["path"] == f"/api/{LABEL}"
    assert spec["method"] == "GET" and "problem" not in spec
    # the fronted request is the same request: only its Host differs
    assert [c.spec.rsplit(": ", 1)[1] for c in checks[:2]] == [f"GET /api/{LABEL}"] * 2
    assert _admitted(policy, _chosen(policy))


def test_an_exact_path_is_used_as_it_is() -> None:
    policy = _http(("a.example.com", [{"paths": [{"type": "exact", "value": "/health"}]}]))
    request = _chosen(policy)
    assert (request.method, request.path) == ("GET", "/health")
    assert _admitted(policy, request)


def test_a_path_with_the_label_is_preferred_across_entries_and_paths() -> None:
    matches = [
        {"paths": [{"type": "exact", "value": "/health"}]},
        {"paths": [{"type": "exact", "value": "/status"}, {"type": "prefix", "value": "/v1"}]},
    ]
    policy = _http(("a.example.com", matches))
    request = _chosen(policy)
    assert request.path == f"/v1/{LABEL}" and _admitted(policy, request)


@pytest.mark.parametrize(
    ("methods", "method"),
    [
        (["POST", "HEAD", "GET"], "GET"),
        (["POST", "HEAD"], "HEAD"),
        (["OPTIONS", "PUT"], "OPTIONS"),
        (["PUT", "POST"], "POST"),  # sorted: the first unsafe one, on the label's path
        (["CONNECT", "PATCH"], "PATCH"),
    ],
)
def test_the_method_is_a_safe_one_when_the_entry_allows_one(
    methods: list[str], method: str
) -> None:
    matches = [{"paths": [{"type": "prefix", "value": "/api"}], "methods": methods}]
    policy = _http(("a.example.com", matches))
    request = _chosen(policy)
    assert request.method == method and request.path == f"/api/{LABEL}"
    assert _admitted(policy, request)


def test_an_unsafe_method_is_never_sent_to_a_path_of_the_route_itself() -> None:
    exact = [{"paths": [{"type": "exact", "value": "/v1/jobs"}], "methods": ["DELETE"]}]
    request = _chosen(_http(("a.example.com", exact)))
    assert request.problem and "DELETE" in request.problem and "may change" in request.problem
    # ... but another entry with a safe method is used
    policy = _http(("a.example.com", [*exact, {"paths": [{"type": "exact", "value": "/"}]}]))
    request = _chosen(policy)
    assert (request.method, request.path, request.entry) == ("GET", "/", 1)


@pytest.mark.parametrize(
    ("pattern", "path"),
    [
        (r"/api/v[0-9]+/.*", f"/api/v0/{LABEL}"),
        (r"^/repos/.*", f"/repos/{LABEL}"),
        (r"/status", "/status"),
        (r"/users/[a-z]+", "/users/a"),
        (r".*", f"/{LABEL}"),
        (r"/(health|ready)", "/"),  # no trial matches ... see below
    ],
)
def test_a_regex_path_gets_the_first_simple_trial_it_matches(pattern: str, path: str) -> None:
    policy = _http(("a.example.com", [{"paths": [{"type": "regex", "value": pattern}]}]))
    request = _chosen(policy)
    if pattern == r"/(health|ready)":
        assert request.problem and "regular expressions" in request.problem
        assert repr(pattern) in request.problem
        return
    assert request.path == path and not request.problem
    assert _admitted(policy, request)


def test_exact_header_predicates_are_sent_and_replace_the_defaults() -> None:
    matches = [
        {
            "paths": [{"type": "prefix", "value": "/api/"}],
            "headers": [
                {"name": "X-Api-Version", "value": "2024-01-01"},
                {"name": "User-Agent", "value": "agent/1.0"},
            ],
        }
    ]
    policy = _http(("a.example.com", matches))
    request = _chosen(policy)
    assert request.headers == (
        ("user-agent", "agent/1.0"),
        ("connection", "close"),
        ("x-api-version", "2024-01-01"),
    )
    assert request.describe() == f"GET /api/{LABEL} with user-agent, x-api-version"
    assert _admitted(policy, request)
    _checks, spec = plan_proxy_checks(policy, label=LABEL, proxy="", resolver="")
    assert ["x-api-version", "2024-01-01"] in spec["headers"]


@pytest.mark.parametrize(
    ("predicate", "value"),
    [
        ({"name": "x-flag", "type": "regex", "value": "true|false"}, "true"),
        ({"name": "x-id", "type": "regex", "value": "[0-9]+"}, "0"),
        ({"name": "x-client", "type": "regex", "value": "bot-.*"}, "bot-"),
        ({"name": "host", "value": "a.example.com"}, None),  # the Host sent already
        ({"name": "content-length", "value": "0"}, "0"),
    ],
)
def test_a_header_predicate_a_trivial_value_satisfies_is_met(
    predicate: dict[str, str], value: str | None
) -> None:
    policy = _http(("a.example.com", [{"headers": [predicate]}]))
    request = _chosen(policy)
    assert not request.problem, request.problem
    sent = dict(request.headers)
    assert sent.get(predicate["name"]) == value
    assert _admitted(policy, request)


@pytest.mark.parametrize(
    ("predicate", "reason"),
    [
        ({"name": "x-sig", "type": "regex", "value": "[0-9a-f]{64}"}, "must match '[0-9a-f]{64}'"),
        ({"name": "host", "value": "other.example.com"}, "do not admit a.example.com"),
        ({"name": "content-length", "value": "12"}, "content-length must be '12'"),
        ({"name": "transfer-encoding", "value": "chunked"}, "sends no body"),
        ({"name": "x-pad", "value": " padded"}, "cannot send"),
    ],
)
def test_a_header_predicate_the_verifier_cannot_meet_gives_up_saying_why(
    predicate: dict[str, str], reason: str
) -> None:
    policy = _http(("a.example.com", [{"headers": [predicate]}]))
    request = _chosen(policy)
    assert reason in request.problem and "route a.example.com: entry 0" in request.problem


def test_when_no_route_admits_a_request_nothing_is_sent_and_every_check_says_why() -> None:
    regex_only = [{"paths": [{"type": "regex", "value": "/(health|ready)"}]}]
    policy = _http(("a.example.com", regex_only), ("b.example.com", [{"methods": ["CONNECT"]}]))
    checks, spec = plan_proxy_checks(policy, label=LABEL, proxy="10.9.0.5:8080", resolver="")
    assert spec["host"] == "a.example.com"  # the first exact route, for the record
    assert "route a.example.com: entry 0" in spec["problem"]
    assert "route b.example.com: entry 0: its only method is CONNECT" in spec["problem"]
    assert checks[0].spec.endswith(": no request")
    results = _proxy_verdicts(checks, {NOT_SENT: spec["problem"]})
    assert {r.verdict for r in results.values()} == {"inconclusive"}
    observed = results[PROXY_ALLOWED].observed
    assert observed.startswith("not-sent (no route's matches admit a request")
    row = {
        "bottle": "web",
        "verdict": "inconclusive",
        "inconclusive": list(PROXY_CHECKS),
        "results": [r.to_dict() for r in results.values()],
    }
    message = failure_message(row, "h1")
    assert "found no request to send" in message and "route without matches" in message


def test_a_route_with_a_usable_entry_is_chosen_over_an_earlier_one_without() -> None:
    regex_only = [{"paths": [{"type": "regex", "value": "/(health|ready)"}]}]
    policy = _http(("a.example.com", regex_only), ("b.example.com", API_PREFIX))
    request = _chosen(policy)
    assert (request.host, request.path) == ("b.example.com", f"/api/{LABEL}")


def test_wildcard_routes_are_reached_below_their_zone_with_their_matches() -> None:
    policy = _http(("*.cdn.example", API_PREFIX))
    request = _chosen(policy)
    assert (request.host, request.route) == ("www.cdn.example", "*.cdn.example")
    assert request.path == f"/api/{LABEL}" and _admitted(policy, request)
    # an exact route with matches still comes before a wildcard route without
    policy = _http(("a.example.com", API_PREFIX), ("*.cdn.example", []))
    assert _chosen(policy).host == "a.example.com"


def test_every_chosen_request_is_admitted_by_the_proxys_own_check() -> None:
    """The choice agrees with the proxy: _egress.check_request passes each request."""
    cases = [
        API_PREFIX,
        [{"paths": [{"type": "regex", "value": r"/api/v[0-9]+/.*"}], "methods": ["PUT"]}],
        [{"headers": [{"name": "x-id", "type": "regex", "value": "[0-9]+"}], "methods": ["HEAD"]}],
    ]
    for matches in cases:
        policy = _http(("a.example.com", matches))
        request = _chosen(policy)
        config = _egress.EgressConfig(policy=policy, resolver=("127.0.0.1", 53))
        target = _egress.parse_authority(f"{request.host}:443")
        route = _egress.check_request(
            config,
            target,
            method=request.method,
            path=request.path,
            headers=[("host", request.host), *request.headers],
        )
        assert route == "a.example.com"
