"""Independent models of how dnsmasq and smolvm match names, for property tests.

These re-state the documented matching rules of the two programs (dnsmasq(8)
2.90 ``--server``/``--address``; smolvm's ``host_pattern`` docs) without using
the compiler, so the tests can check the compiler's output against them. The
dnsmasq model is itself checked against a real dnsmasq in the repository's
``tests/integration/test_dnsmasq_real.py``, which imports it from here.
"""

from __future__ import annotations

from collections.abc import Sequence


def _matches(domain: str, name: str) -> tuple[bool, int, bool]:
    """(matches?, specificity in labels, wildcard?) for one dnsmasq domain spec."""
    if domain == "#":
        return True, -1, False
    if domain.startswith("*."):
        zone = domain[2:]
        return name.endswith("." + zone), zone.count(".") + 1, True
    return name == domain or name.endswith("." + domain), domain.count(".") + 1, False


def dnsmasq_outcome(lines: Sequence[str], name: str) -> str:
    """'forward' or 'nxdomain' (or 'refused' with no match) for a query of ``name``."""
    name = name.lower().rstrip(".")
    best: tuple[int, bool] | None = None
    outcome = "refused"
    for line in lines:
        if not line.startswith(("server=/", "address=/")):
            continue
        key, _, rest = line.partition("=/")
        domain, _, target = rest.partition("/")
        hit, depth, wildcard = _matches(domain, name)
        if not hit:
            continue
        rank = (depth, wildcard)  # longer domain wins; at equal length the *. form is narrower
        if best is None or rank > best:
            best = rank
            outcome = "forward" if key == "server" and target else "nxdomain"
    return outcome


def smolvm_allows(allow_hosts: Sequence[str], name: str) -> bool:
    """smolvm's host matching: ``=h`` exact, ``*.d`` strict subdomains, bare = h and below."""
    name = name.lower().rstrip(".")
    for raw in allow_hosts:
        entry = raw.lower().rstrip(".")
        if entry.startswith("="):
            if name == entry[1:]:
                return True
        elif entry.startswith("*."):
            if name.endswith("." + entry[2:]):
                return True
        elif name == entry or name.endswith("." + entry):
            return True
    return False
