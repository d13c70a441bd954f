"""Tables for ``bottle verify`` and ``bottle audit`` (pure: data in, lines out)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ansible_collections.botbottle.bottle.plugins.module_utils._audit import (
    describe,
    since_cutoff,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._probe import (
    INCONCLUSIVE,
    LEAK,
    NOT_RUNNING,
    SEALED,
    fleet_verdict,
)

__all__ = [
    "INCONCLUSIVE",
    "LEAK",
    "SEALED",
    "audit_lines",
    "audit_rows",
    "since_cutoff",
    "verify_lines",
    "verify_outcome",
]


def _rows(report: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[tuple[str, Mapping[str, Any]]]:
    return [(host, row) for host in sorted(report) for row in report[host]]


def verify_outcome(report: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """The fleet's verdict: ``leak`` > ``inconclusive`` > ``sealed`` (``none`` if no
    running bottle was probed)."""
    return fleet_verdict(str(row.get("verdict")) for _host, row in _rows(report))


def verify_lines(report: Mapping[str, Sequence[Mapping[str, Any]]], *, details: bool) -> list[str]:
    """One line per bottle; under each bottle that is not sealed (or every bottle, with
    ``details``), its checks."""
    lines = [f"{'HOST':<20} {'BOTTLE':<20} {'BACKEND':<13} {'VERDICT':<13} PASS LEAK INCONCLUSIVE"]
    for host, row in _rows(report):
        counts = row.get("summary") or {}
        lines.append(
            f"{host:<20} {row['bottle']:<20} {row['backend']:<13} {row['verdict']:<13} "
            f"{counts.get('pass', 0):>4} {counts.get('leak', 0):>4} "
            f"{counts.get('inconclusive', 0):>12}"
        )
        if not details and row["verdict"] in (SEALED, NOT_RUNNING):
            continue
        for check in row.get("results") or []:
            if not details and check["verdict"] == "pass":
                continue
            control = check["evidence"].get("control", "no control needed")
            lines.append(
                f"    {check['verdict'].upper():<13} {check['name']}: {check['description']} "
                f"- saw {check['observed']}; {control}"
            )
    return lines


def audit_rows(entries: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Every host's entries, with the host, in time order."""
    rows = [dict(e, host=host) for host in sorted(entries) for e in entries[host]]
    return sorted(rows, key=lambda e: (str(e.get("time")), str(e.get("host"))))


def audit_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The audit table; ``!`` marks names that look like encoded data. SOURCE says who
    decided (``dnsmasq``, ``smolvm``, ``egress-proxy``); a proxy row's NAME is the host
    and the path (its query redacted)."""
    lines = [
        f"  {'TIME':<20} {'HOST':<16} {'SOURCE':<12} {'TYPE':<7} {'VERDICT':<16} {'FLAGS':<28} NAME"
    ]
    for row in rows:
        flags = ",".join(row.get("flags") or []) or "-"
        mark = "!" if row.get("flags") else " "
        lines.append(
            f"{mark} {row.get('time', ''):<20} {row['host']:<16} {row.get('source', ''):<12} "
            f"{row.get('type', ''):<7} {row.get('verdict', ''):<16} {flags:<28} {describe(row)}"
        )
    return lines
