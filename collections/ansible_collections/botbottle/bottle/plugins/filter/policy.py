# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that expose the egress policy compiler to roles and playbooks.

They are thin: every decision is made in ``module_utils/_policy.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.botbottle.bottle.plugins.module_utils._policy import (
    PolicyError,
    compile_policy,
    policy_from_dict,
    render_dnsmasq,
    render_firewall,
    render_smolvm,
)


def _policy(value: Mapping[str, Any], filter_name: str) -> Any:
    if not isinstance(value, Mapping):
        raise AnsibleFilterError(
            f"{filter_name} expects the output of botbottle.bottle.egress_policy "
            f"(a mapping), got {type(value).__name__}"
        )
    try:
        return policy_from_dict(value)
    except ValueError as exc:
        raise AnsibleFilterError(f"{filter_name}: {exc}") from None


def egress_policy(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Compile a merged bottle manifest into the backend-neutral policy."""
    if not isinstance(manifest, Mapping):
        raise AnsibleFilterError(
            "egress_policy expects a merged bottle manifest (a mapping), "
            f"got {type(manifest).__name__}"
        )
    try:
        return compile_policy(manifest).to_dict()
    except PolicyError as exc:
        raise AnsibleFilterError(f"egress_policy: {exc}") from None


def smolvm_allow(policy: Mapping[str, Any]) -> dict[str, Any]:
    """smolvm allow lists (``=host``, ``*.zone``, CIDRs) for a compiled policy."""
    return render_smolvm(_policy(policy, "smolvm_allow"))


def dnsmasq_lines(policy: Mapping[str, Any], upstreams: Sequence[str]) -> list[str]:
    """dnsmasq configuration lines for a compiled policy."""
    if isinstance(upstreams, str):
        upstreams = [upstreams]
    try:
        return render_dnsmasq(_policy(policy, "dnsmasq_lines"), list(upstreams))
    except ValueError as exc:
        raise AnsibleFilterError(f"dnsmasq_lines: {exc}") from None


def firewall_rules(
    policy: Mapping[str, Any],
    resolver_ip: str,
    gateway_ip: str | None = None,
    host_addresses: Sequence[str] = (),
) -> dict[str, str]:
    """iptables-restore/ip6tables-restore input for a Docker bottle's netns."""
    try:
        return render_firewall(
            _policy(policy, "firewall_rules"),
            resolver_ip,
            gateway_ip,
            host_addresses=[a for a in host_addresses or () if "%" not in str(a)],
        )
    except ValueError as exc:
        raise AnsibleFilterError(f"firewall_rules: {exc}") from None


class FilterModule:
    """botbottle.bottle policy filters."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "egress_policy": egress_policy,
            "smolvm_allow": smolvm_allow,
            "dnsmasq_lines": dnsmasq_lines,
            "firewall_rules": firewall_rules,
        }
