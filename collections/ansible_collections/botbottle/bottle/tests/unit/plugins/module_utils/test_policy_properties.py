"""Property tests: every backend rendering means exactly what the manifest says."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.botbottle.bottle.plugins.module_utils._policy import (
    EgressPolicy,
    allows_name,
    build_policy,
    render_dnsmasq,
    render_smolvm,
)
from ansible_collections.botbottle.bottle.tests.unit.plugins.module_utils.dns_semantics import (
    dnsmasq_outcome,
    smolvm_allows,
)

# A small alphabet makes collisions (shared suffixes, nesting) frequent.
label = st.sampled_from(["a", "b", "api", "x", "xapi", "cdn", "example", "com"])
name = st.lists(label, min_size=1, max_size=4).map(".".join)
policies = st.builds(
    build_policy,
    st.lists(name, max_size=5),
    st.lists(name, max_size=3),
)
UP = ["192.0.2.53"]


@settings(max_examples=400, deadline=None)
@given(policies, name)
def test_dnsmasq_forwards_exactly_the_allowed_names(policy: EgressPolicy, query: str) -> None:
    lines = render_dnsmasq(policy, UP)
    expected = "forward" if allows_name(policy, query) else "nxdomain"
    assert dnsmasq_outcome(lines, query) == expected


@settings(max_examples=400, deadline=None)
@given(policies, name)
def test_smolvm_allows_exactly_the_allowed_names(policy: EgressPolicy, query: str) -> None:
    assert smolvm_allows(render_smolvm(policy)["allow_hosts"], query) == allows_name(policy, query)


@settings(max_examples=200, deadline=None)
@given(policies, label)
def test_every_exact_name_matches_and_nothing_deeper(policy: EgressPolicy, extra: str) -> None:
    lines = render_dnsmasq(policy, UP)
    hosts = render_smolvm(policy)["allow_hosts"]
    for exact in policy.exact_hosts:
        assert dnsmasq_outcome(lines, exact) == "forward"
        assert smolvm_allows(hosts, exact)
        deeper = extra + "." + exact
        listed = deeper in policy.exact_hosts  # e.g. both a.example and x.a.example listed
        if not listed and not any(deeper.endswith("." + z) for z in policy.wildcard_zones):
            assert dnsmasq_outcome(lines, deeper) == "nxdomain"
            assert not smolvm_allows(hosts, deeper)


@settings(max_examples=200, deadline=None)
@given(policies)
def test_names_outside_the_allowlist_never_match(policy: EgressPolicy) -> None:
    lines = render_dnsmasq(policy, UP)
    hosts = render_smolvm(policy)["allow_hosts"]
    for outside in ["attacker.invalid", "zz.test", "exfil.zz.test"]:
        assert dnsmasq_outcome(lines, outside) == "nxdomain"
        assert not smolvm_allows(hosts, outside)
    for zone in policy.wildcard_zones:
        if zone not in policy.exact_hosts and not any(
            zone.endswith("." + z) for z in policy.wildcard_zones
        ):
            assert dnsmasq_outcome(lines, zone) == "nxdomain"  # the apex is not in *.zone
            assert not smolvm_allows(hosts, zone)
