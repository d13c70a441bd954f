"""The egress policy compiler, through its public functions only."""

from __future__ import annotations

import ipaddress
import re

import pytest

from ansible_collections.botbottle.bottle.plugins.module_utils._policy import (
    SMOLVM_NO_NAMES,
    PolicyError,
    allows_name,
    build_policy,
    chosen_labels,
    compile_policy,
    firewall_stamp,
    normalize_cidr,
    normalize_name,
    normalize_upstream,
    policy_from_dict,
    render_dnsmasq,
    render_firewall,
    render_smolvm,
    smolvm_deny_cidrs,
    smolvm_gateway_overlap,
    warnings,
)


def _manifest(*routes: dict[str, object], log: int = 0) -> dict[str, object]:
    return {"egress": {"routes": list(routes), "log": log}}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("api.example.com", "api.example.com"),
        ("API.Example.COM", "api.example.com"),
        ("api.example.com.", "api.example.com"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("a-b.c", "a-b.c"),
        ("localhost", "localhost"),
        ("1password.com", "1password.com"),
    ],
)
def test_normalize_name_accepts(raw: str, expected: str) -> None:
    assert normalize_name(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        (".", "empty"),
        ("10.0.0.1", "IP address"),
        ("10.0.0.0/8", "IP address"),
        ("2001:db8::1", "IP address"),
        ("[2001:db8::1]", "IP address"),
        ("bücher.example", "A-label form (for example 'xn--bcher-kva.example')"),
        ("-bad.example", "not a valid DNS label"),
        ("bad-.example", "not a valid DNS label"),
        ("under_score.example", "not a valid DNS label"),
        ("a..b", "not a valid DNS label"),
        ("x" * 64 + ".example", "not a valid DNS label"),
        (".".join(["a" * 60] * 5), "limit is 253"),
        ("*.example.com", "not a valid DNS label"),
        (" api.example.com", "white space"),
        ("1.2.3.4.5", "looks like an IP address"),
    ],
)
def test_normalize_name_rejects(raw: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        normalize_name(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("203.0.113.7", "203.0.113.7/32"),
        ("10.1.2.3/8", "10.0.0.0/8"),
        ("2001:DB8::1", "2001:db8::1/128"),
        ("2001:db8::/32", "2001:db8::/32"),
    ],
)
def test_normalize_cidr(raw: str, expected: str) -> None:
    assert normalize_cidr(raw) == expected


@pytest.mark.parametrize("raw", ["bogus", "10.0.0.0/33", "example.com", ""])
def test_normalize_cidr_rejects(raw: str) -> None:
    with pytest.raises(ValueError, match="not an IP address or CIDR"):
        normalize_cidr(raw)


def test_compile_sorts_dedups_and_splits_routes() -> None:
    policy = compile_policy(
        _manifest(
            {"host": "pypi.org"},
            {"host": "API.example.com."},
            {"host": "api.example.com"},
            {"host": "*.Example.org"},
            {"cidr": "203.0.113.9/24"},
            {"cidr": "2001:db8::/32"},
            {"cidr": "10.0.0.1"},
            log=2,
        )
    )
    assert policy.exact_hosts == ("api.example.com", "pypi.org")
    assert policy.wildcard_zones == ("example.org",)
    assert policy.cidrs == ("10.0.0.1/32", "203.0.113.0/24", "2001:db8::/32")
    assert policy.log == 2
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", policy.digest)


def test_hash_is_stable_and_order_independent() -> None:
    one = compile_policy(_manifest({"host": "a.example"}, {"host": "b.example"}))
    two = compile_policy(_manifest({"host": "B.example."}, {"host": "a.example"}))
    three = compile_policy(_manifest({"host": "a.example"}))
    assert one == two
    assert one.digest == two.digest
    assert one.digest != three.digest
    assert policy_from_dict(one.to_dict()).digest == one.digest


def test_log_level_changes_hash() -> None:
    assert (
        compile_policy(_manifest({"host": "a.example"}, log=0)).digest
        != compile_policy(_manifest({"host": "a.example"}, log=1)).digest
    )


def test_empty_manifest_is_no_egress() -> None:
    policy = compile_policy({})
    assert policy.exact_hosts == policy.wildcard_zones == policy.cidrs == ()
    smol = render_smolvm(policy)
    # no network, and no deny rule: --deny-cidr would turn smolvm's network on
    assert smol == {
        "allow_hosts": [],
        "allow_cidrs": [],
        "deny_cidrs": [],
        "network": False,
        "cli_args": [],
        "update_args": [],
    }


@pytest.mark.parametrize(
    ("route", "path", "message"),
    [
        ({"host": "10.0.0.0/8"}, "$.egress.routes[0].host", "put IP literals and CIDRs in 'cidr'"),
        ({"cidr": "example.com"}, "$.egress.routes[0].cidr", "not an IP address or CIDR"),
        ({"host": "a.example", "cidr": "10.0.0.0/8"}, "$.egress.routes[0]", "exactly one"),
        ({}, "$.egress.routes[0]", "exactly one"),
        ({"host": "*.*.example"}, "$.egress.routes[0].host", "not a valid DNS label"),
        ({"host": "*"}, "$.egress.routes[0].host", "not a valid DNS label"),
    ],
)
def test_compile_errors_name_the_route(route: dict[str, object], path: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        compile_policy(_manifest(route))
    assert info.value.path == path
    assert message in info.value.message


@pytest.mark.parametrize("log", [3, -1, "1", True])
def test_compile_rejects_bad_log(log: object) -> None:
    with pytest.raises(PolicyError, match=r"\$\.egress\.log"):
        compile_policy({"egress": {"routes": [], "log": log}})


def test_allows_name_semantics() -> None:
    policy = build_policy(["api.example.com"], ["example.org"])
    assert allows_name(policy, "api.example.com")
    assert allows_name(policy, "API.EXAMPLE.COM.")
    assert not allows_name(policy, "x.api.example.com")
    assert not allows_name(policy, "example.com")
    assert not allows_name(policy, "xapi.example.com")
    assert allows_name(policy, "a.example.org")
    assert allows_name(policy, "a.b.c.example.org")
    assert not allows_name(policy, "example.org")
    assert not allows_name(policy, "badexample.org")
    assert not allows_name(policy, "not a name")


def test_wildcard_warning_names_the_zone() -> None:
    policy = build_policy(["a.example"], ["cdn.example.net"])
    [warning] = warnings(policy)
    assert "*.cdn.example.net" in warning
    assert "tunnel" in warning
    assert warnings(build_policy(["a.example"])) == []


def test_smolvm_exact_names_use_the_pattern_form() -> None:
    smol = render_smolvm(build_policy(["api.example.com"], ["cdn.example"], ["10.0.0.0/8"]))
    assert smol["allow_hosts"] == ["=api.example.com", "*.cdn.example"]
    assert smol["allow_cidrs"] == ["10.0.0.0/8"]
    assert smol["network"] is True
    allow = [
        "--allow-host-pattern",
        "api.example.com",
        "--allow-host-pattern",
        "*.cdn.example",
        "--allow-cidr",
        "10.0.0.0/8",
    ]
    assert smol["update_args"] == allow
    assert smol["cli_args"][: len(allow)] == allow
    assert smol["cli_args"][len(allow) :] == [
        arg for cidr in smolvm_deny_cidrs() for arg in ("--deny-cidr", cidr)
    ]
    # never a bare entry (smolvm matches a bare host and all its subdomains), never
    # --allow-host (it resolves names at create time and admits subdomains)
    assert all(h.startswith(("=", "*.")) for h in smol["allow_hosts"])
    assert "--allow-host" not in smol["cli_args"]


def test_smolvm_deny_rules_cover_the_gateway_and_the_never_routed_networks() -> None:
    deny = [ipaddress.ip_network(c) for c in smolvm_deny_cidrs()]
    assert deny[:2] == [
        ipaddress.ip_network("100.96.0.0/16"),
        ipaddress.ip_network("fd53:4d00::/64"),
    ]
    for address in (
        "100.96.0.1",
        "100.96.3.1",
        "fd53:4d00::1",
        "127.0.0.1",
        "::1",
        "0.0.0.0",
        "::ffff:127.0.0.1",
        "169.254.169.254",
        "fe80::1",
        "fd00:ec2::254",
    ):
        ip = ipaddress.ip_address(address)
        assert any(ip in net for net in deny), address
    for address in ("100.95.255.255", "100.97.0.1", "203.0.113.7", "fd53:4d00:0:1::1"):
        ip = ipaddress.ip_address(address)
        assert not any(ip in net for net in deny), address
    assert len(set(deny)) == len(deny)


@pytest.mark.parametrize(
    "routes",
    [
        [{"host": "api.example.com"}],
        [{"cidr": "203.0.113.0/24"}],
        [{"cidr": "0.0.0.0/0", "wide": True}, {"cidr": "::/0", "wide": True}],
        [{"host": "*.example.org"}, {"cidr": "2001:db8::/32"}],
    ],
)
def test_every_smolvm_network_denies_the_gateway_first(routes: list[dict[str, object]]) -> None:
    smol = render_smolvm(compile_policy(_manifest(*routes)))
    assert smol["network"] is True
    assert smol["deny_cidrs"] == smolvm_deny_cidrs()
    pairs = list(zip(smol["cli_args"][0::2], smol["cli_args"][1::2], strict=True))
    assert [v for f, v in pairs if f == "--deny-cidr"] == smolvm_deny_cidrs()
    assert "--deny-cidr" not in smol["update_args"]  # machine update has no --deny-cidr


def test_a_cidr_only_bottle_gets_a_name_that_never_resolves() -> None:
    smol = render_smolvm(compile_policy(_manifest({"cidr": "203.0.113.0/24"})))
    assert SMOLVM_NO_NAMES.endswith(".invalid")  # reserved, never resolves (RFC 6761)
    assert smol["allow_hosts"] == ["=" + SMOLVM_NO_NAMES]
    assert smol["update_args"] == [
        "--allow-host-pattern",
        SMOLVM_NO_NAMES,
        "--allow-cidr",
        "203.0.113.0/24",
    ]
    # a bottle with a host route needs no stand-in, and one without routes has no network
    with_host = render_smolvm(
        compile_policy(_manifest({"host": "a.example"}, {"cidr": "203.0.113.0/24"}))
    )
    assert with_host["allow_hosts"] == ["=a.example"]
    assert render_smolvm(compile_policy({}))["allow_hosts"] == []


@pytest.mark.parametrize(
    ("cidr", "gateway"),
    [
        ("100.96.0.1/32", "100.96.0.0/16"),
        ("100.96.7.0/24", "100.96.0.0/16"),
        ("100.64.0.0/10", "100.96.0.0/16"),
        ("0.0.0.0/0", "100.96.0.0/16"),
        ("fd53:4d00::1/128", "fd53:4d00::/64"),
        ("fd00::/8", "fd53:4d00::/64"),
        ("::/0", "fd53:4d00::/64"),
        ("100.97.0.0/16", None),
        ("203.0.113.0/24", None),
        ("fd53:4d00:0:1::/64", None),
    ],
)
def test_smolvm_gateway_overlap(cidr: str, gateway: str | None) -> None:
    assert smolvm_gateway_overlap(cidr) == gateway


def test_dnsmasq_exact_name_blocks_its_subdomains() -> None:
    lines = render_dnsmasq(build_policy(["api.example.com"]), ["192.0.2.53"])
    assert lines[1:] == [
        "no-resolv",
        "no-hosts",
        "address=/#/",
        "server=/api.example.com/192.0.2.53",
        "server=/*.api.example.com/",
    ]
    assert lines[0].startswith("# bot-bottle egress policy sha256:")


def test_dnsmasq_multiple_upstreams_and_wildcards() -> None:
    policy = build_policy(
        ["api.example.com", "example.org", "a.example.org"],
        ["example.org", "deep.example.org", "cdn.example"],
    )
    lines = render_dnsmasq(policy, ["192.0.2.53", "2001:db8::53#5353"])
    assert "server=/api.example.com/192.0.2.53" in lines
    assert "server=/api.example.com/2001:db8::53#5353" in lines
    assert "server=/*.api.example.com/" in lines
    # the apex of a wildcard zone, listed exactly, must not block the zone's subdomains
    assert "server=/example.org/192.0.2.53" in lines
    assert "server=/*.example.org/" not in lines
    assert "server=/*.example.org/192.0.2.53" in lines
    # an exact name inside a wildcard zone is covered by the wildcard line
    assert not any(line.startswith("server=/a.example.org/") for line in lines)
    # a nested wildcard zone is covered by the wider one
    assert not any("deep.example.org" in line for line in lines)
    assert "server=/*.cdn.example/192.0.2.53" in lines


def test_dnsmasq_never_emits_dangerous_forms() -> None:
    policy = build_policy(["a.example", "b.example"], ["c.example"])
    for line in render_dnsmasq(policy, ["192.0.2.53"]):
        assert not re.match(r"^server=/\*[^.]", line), line  # /*name/ matches xname
        assert not re.match(r"^server=[^/]", line), line  # blanket upstream
        assert not line.startswith("address=/#/") or line == "address=/#/"


@pytest.mark.parametrize(
    "upstream", ["", "dns.example", "192.0.2.1#0", "192.0.2.1#70000", "300.1.1.1", "192.0.2.1:53"]
)
def test_dnsmasq_rejects_bad_upstreams(upstream: str) -> None:
    with pytest.raises(ValueError, match="upstream"):
        render_dnsmasq(build_policy(["a.example"]), [upstream])


def test_dnsmasq_needs_an_upstream() -> None:
    with pytest.raises(ValueError, match="at least one upstream"):
        render_dnsmasq(build_policy(["a.example"]), [])


def test_normalize_upstream() -> None:
    assert normalize_upstream("192.0.2.53") == "192.0.2.53"
    assert normalize_upstream("192.0.2.53#053") == "192.0.2.53#53"
    assert normalize_upstream("2001:DB8::1#5353") == "2001:db8::1#5353"


def test_firewall_rules_shape() -> None:
    policy = build_policy(["a.example"], cidrs=["203.0.113.0/24", "2001:db8::/32"])
    rules = render_firewall(policy, "10.89.0.2", "10.89.0.1")
    v4 = rules["ipv4"].splitlines()
    v6 = rules["ipv6"].splitlines()
    assert v4[0] == "# bot-bottle egress policy " + policy.digest
    assert "*filter" in v4 and v4[-1] == "COMMIT"
    stamp = f'-A OUTPUT -m comment --comment "{firewall_stamp(policy)}"'
    assert rules["stamp"] == firewall_stamp(policy)
    assert stamp in v4 and stamp in v6  # a no-op rule (no target) read back by iptables-save
    assert v4.index(stamp) < v4.index("-A OUTPUT -p udp -m udp --dport 53 -j BOTTLE_DNS")
    # the embedded resolver is rejected by address (its :53 is DNATed to a random port)
    assert "-A OUTPUT -d 127.0.0.11/32 -j REJECT --reject-with icmp-port-unreachable" in v4
    assert "-A OUTPUT -d 127.0.0.11/32 -p tcp -j REJECT --reject-with tcp-reset" in v4
    assert "-A OUTPUT -p udp -m udp --dport 53 -j BOTTLE_DNS" in v4
    assert "-A OUTPUT -p tcp -m tcp --dport 53 -j BOTTLE_DNS" in v4
    assert "-A BOTTLE_DNS -d 10.89.0.2/32 -j RETURN" in v4
    assert "-A OUTPUT -p tcp -m tcp --dport 853 -j REJECT --reject-with tcp-reset" in v4
    assert "-A OUTPUT -d 10.89.0.1/32 -j REJECT --reject-with icmp-port-unreachable" in v4
    assert "-A OUTPUT -d 203.0.113.0/24 -j ACCEPT" in v4
    # the DNS jump comes before any accept, so a CIDR route cannot carry DNS elsewhere
    assert v4.index("-A OUTPUT -p udp -m udp --dport 53 -j BOTTLE_DNS") < v4.index(
        "-A OUTPUT -d 203.0.113.0/24 -j ACCEPT"
    )
    assert "-A OUTPUT -p udp -m udp --dport 53 -j REJECT --reject-with icmp6-port-unreachable" in v6
    assert "-A OUTPUT -d 2001:db8::/32 -j ACCEPT" in v6
    assert "2001:db8::/32" not in rules["ipv4"]
    # default deny: the last OUTPUT rules reject everything not accepted above (the host
    # answers on all its addresses, so an internal network alone does not stop an agent)
    outputs = [line for line in v4 if line.startswith("-A OUTPUT")]
    assert outputs[-2:] == [
        "-A OUTPUT -p tcp -j REJECT --reject-with tcp-reset",
        "-A OUTPUT -j REJECT --reject-with icmp-port-unreachable",
    ]
    assert (
        outputs.index("-A OUTPUT -d 10.89.0.2/32 -p udp -m udp --dport 53 -j ACCEPT")
        < len(outputs) - 2
    )
    outputs6 = [line for line in v6 if line.startswith("-A OUTPUT")]
    assert outputs6[-1] == "-A OUTPUT -j REJECT --reject-with icmp6-port-unreachable"


@pytest.mark.parametrize(
    ("resolver", "gateway"), [("resolver", None), ("10.0.0.2", "gw"), ("2001:db8::2", None)]
)
def test_firewall_rejects_bad_addresses(resolver: str, gateway: str | None) -> None:
    with pytest.raises(ValueError):
        render_firewall(build_policy(["a.example"]), resolver, gateway)


def test_firewall_stamp_names_the_hash() -> None:
    policy = build_policy(["a.example"])
    assert firewall_stamp(policy) == f"bot-bottle-policy {policy.digest} rules-6"
    assert firewall_stamp(policy, "10.0.0.4:8080").endswith(" rules-6 via-10.0.0.4:8080")
    assert len(firewall_stamp(policy)) < 256  # iptables comment limit


def test_rendering_is_deterministic() -> None:
    a = build_policy(["b.example", "a.example"], ["z.example", "y.example"], ["10.0.0.0/8"])
    b = build_policy(["a.example", "b.example"], ["y.example", "z.example"], ["10.0.0.0/8"])
    assert render_dnsmasq(a, ["192.0.2.53"]) == render_dnsmasq(b, ["192.0.2.53"])
    assert render_smolvm(a) == render_smolvm(b)
    assert render_firewall(a, "10.0.0.2") == render_firewall(b, "10.0.0.2")


# --------------------------------------------------------------------------- hostile cidrs


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (" 10.0.0.0/8", "white space"),
        ("10.0.0.0/8 ", "white space"),
        ("fe80::1%eth0", "zone id"),
        ("127.0.0.1", "loopback"),
        ("127.0.0.0/8", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "metadata"),
        ("169.254.0.0/16", "link-local"),
        ("169.254.10.0/24", "link-local"),
        ("fe80::/64", "link-local"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("::ffff:10.0.0.1", "IPv4-mapped"),
    ],
)
def test_normalize_cidr_refuses_never_routed_and_odd_forms(raw: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        normalize_cidr(raw)


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0", "10.0.0.0/7", "2001:db8::/15"])
def test_wide_cidr_needs_the_explicit_key(cidr: str) -> None:
    with pytest.raises(PolicyError, match="wide: true") as info:
        compile_policy(_manifest({"cidr": cidr}))
    assert info.value.path == "$.egress.routes[0].cidr"
    policy = compile_policy(_manifest({"cidr": cidr, "wide": True}))
    assert policy.cidrs == (str(ipaddress.ip_network(cidr, strict=False)),)
    assert any("(wide)" in w for w in warnings(policy))


@pytest.mark.parametrize(
    "route", [{"cidr": "10.0.0.0/8", "wide": True}, {"host": "a.example", "wide": True}]
)
def test_wide_where_it_says_nothing_is_refused(route: dict[str, object]) -> None:
    with pytest.raises(PolicyError) as info:
        compile_policy(_manifest(route))
    assert info.value.path == "$.egress.routes[0].wide"


def test_never_reached_destinations_come_before_every_cidr_accept() -> None:
    policy = build_policy(["a.example"], cidrs=["0.0.0.0/0", "::/0"])
    rules = render_firewall(
        policy,
        "10.89.0.2",
        "10.89.0.1",
        host_addresses=["192.0.2.10", "172.17.0.1", "2001:db8::10"],
    )
    v4 = [line for line in rules["ipv4"].splitlines() if line.startswith("-A OUTPUT")]
    v6 = [line for line in rules["ipv6"].splitlines() if line.startswith("-A OUTPUT")]
    accept4 = v4.index("-A OUTPUT -d 0.0.0.0/0 -j ACCEPT")
    accept6 = v6.index("-A OUTPUT -d ::/0 -j ACCEPT")
    for net in ["10.89.0.1/32", "192.0.2.10/32", "172.17.0.1/32", "169.254.0.0/16", "127.0.0.0/8"]:
        for rule in (
            f"-A OUTPUT -d {net} -p tcp -j REJECT --reject-with tcp-reset",
            f"-A OUTPUT -d {net} -j REJECT --reject-with icmp-port-unreachable",
        ):
            assert v4.index(rule) < accept4, rule
    for net in ["2001:db8::10/128", "fe80::/10", "fd00:ec2::254/128", "::1/128"]:
        assert (
            v6.index(f"-A OUTPUT -d {net} -j REJECT --reject-with icmp6-port-unreachable") < accept6
        )
    assert "192.0.2.10" not in rules["ipv6"] and "2001:db8::10" not in rules["ipv4"]
    # the loopback accept for 127.0.0.1 still comes first (the agent's own services)
    assert v4[1] == "-A OUTPUT -o lo -d 127.0.0.1/32 -j ACCEPT"


def test_allows_name_agrees_with_the_resolver_on_odd_labels() -> None:
    policy = build_policy(["api.example.com"], ["zone.example"])
    for label in ["_dmarc", "a b", "\x00", "\xff\xfe", "#", "A_B", "-x-"]:
        assert allows_name(policy, f"{label}.zone.example"), repr(label)
        assert allows_name(policy, f"{label}.deep.zone.example"), repr(label)
        assert not allows_name(policy, f"{label}.api.example.com"), repr(label)
        assert not allows_name(policy, f"{label}.other.example"), repr(label)
    assert not allows_name(policy, "zone.example")
    assert not allows_name(policy, "a..zone.example")
    assert not allows_name(policy, ("x" * 64) + ".zone.example")
    assert allows_name(policy, "X.ZONE.EXAMPLE.")


def test_dnsmasq_folds_names_inside_zones_at_scale() -> None:
    # (its cost per route is a benchmark row: benchmarks/bench.py, "plan 50k routes")
    zones = [f"z{i}.example" for i in range(2_000)] + [f"in.z{i}.example" for i in range(2_000)]
    exact = [f"h{i}.z{i}.example" for i in range(0, 2_000, 2)] + ["lone.example"]
    lines = render_dnsmasq(build_policy(exact, zones), ["192.0.2.53"])
    assert lines.count("server=/*.in.z7.example/192.0.2.53") == 0  # nested in *.z7.example
    assert "server=/h2.z2.example/192.0.2.53" not in lines  # inside *.z2.example
    assert len(lines) == 4 + 2 + 2_000  # lone.example (+ its '*.' refusal) and the outer zones


def test_the_firewalls_own_refusals_reach_the_agent_over_lo() -> None:
    rules = render_firewall(build_policy(["a.example"]), "10.89.0.2", "10.89.0.1")
    v4, v6 = rules["ipv4"].splitlines(), rules["ipv6"].splitlines()
    rst = "-A OUTPUT -o lo -p tcp -m tcp --tcp-flags RST RST -j ACCEPT"
    assert rst in v4 and rst in v6
    assert "-A OUTPUT -o lo -p icmp -m icmp --icmp-type 3 -j ACCEPT" in v4
    assert "-A OUTPUT -o lo -p ipv6-icmp -m icmp6 --icmpv6-type 1 -j ACCEPT" in v6
    # after Docker's embedded resolver is rejected, and only on lo
    embedded = next(i for i, line in enumerate(v4) if "-d 127.0.0.11/32" in line)
    assert v4.index(rst) > embedded
    assert not [line for line in v4 + v6 if "RST RST" in line and "-o lo" not in line]


def test_chosen_labels_are_those_below_the_widest_zone() -> None:
    policy = build_policy(["api.example.com"], ["example.com", "files.example.com", "x.net"])
    assert chosen_labels(policy, "a.b.files.example.com") == "a.b.files"
    assert chosen_labels(policy, "A.B.Example.COM.") == "a.b"
    assert chosen_labels(policy, "q.x.net") == "q"
    # an exact route's name, the zone itself, and a name no route allows: nothing chosen
    for name in ("api.example.com", "example.com", "evil.test", "x.net", ""):
        assert chosen_labels(policy, name) is None
