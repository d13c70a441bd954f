"""The egress policy compiler, re-exported from the collection's module_utils.

There is exactly one implementation; this module only makes it importable as
``botbottle.policy`` on the controller.
"""

from __future__ import annotations

from ansible_collections.botbottle.bottle.plugins.module_utils._policy import (
    POLICY_FORMAT,
    SMOLVM_GATEWAY_NETWORKS,
    SMOLVM_NO_NAMES,
    EgressPolicy,
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

__all__ = [
    "POLICY_FORMAT",
    "SMOLVM_GATEWAY_NETWORKS",
    "SMOLVM_NO_NAMES",
    "EgressPolicy",
    "PolicyError",
    "allows_name",
    "build_policy",
    "chosen_labels",
    "compile_policy",
    "firewall_stamp",
    "normalize_cidr",
    "normalize_name",
    "normalize_upstream",
    "policy_from_dict",
    "render_dnsmasq",
    "render_firewall",
    "render_smolvm",
    "smolvm_deny_cidrs",
    "smolvm_gateway_overlap",
    "warnings",
]
