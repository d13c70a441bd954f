"""The ``bottle`` CLI's output: every result it prints, as text tables or JSON documents.

Pure: data in, text out. Functions either return lines or write to the streams they
are given; none decides what to run or which exit code (that is ``cli.py``). JSON
documents carry ``"format": PLAN_FORMAT``, the version of the output contract.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from ansible_collections.botbottle.bottle.plugins.module_utils._audit import (
    describe,
    since_cutoff,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._policy import (
    render_dnsmasq,
    render_firewall,
    render_smolvm,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._policy import (
    warnings as policy_warnings,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._probe import (
    INCONCLUSIVE,
    LEAK,
    NOT_RUNNING,
    SEALED,
    fleet_verdict,
)
from ansible_collections.botbottle.bottle.plugins.plugin_utils._manifest import (
    Bottle,
    env_summary,
)
from ansible_collections.botbottle.bottle.plugins.plugin_utils._problem import Problem, display_path

__all__ = [
    "INCONCLUSIVE",
    "LEAK",
    "PLAN_FORMAT",
    "SEALED",
    "audit_lines",
    "audit_rows",
    "plan_entry",
    "print_audit",
    "print_plan",
    "print_problems",
    "print_status",
    "print_validate",
    "print_verify",
    "since_cutoff",
    "verify_lines",
    "verify_outcome",
]

PLAN_FORMAT = 1

# --------------------------------------------------------------------------- problems


def print_problems(problems: Sequence[Problem], stream: TextIO, *, level: str = "error") -> None:
    """One ``LEVEL: file:line: path: message (fix: ...)`` line per problem."""
    for problem in problems:
        print(f"{level}: " + problem.format(), file=stream)


def _dump_document(
    bottles: Sequence[Mapping[str, Any]], problems: Sequence[Problem], out: TextIO
) -> None:
    """The JSON document of ``bottle validate`` and ``bottle plan``."""
    json.dump(
        {
            "format": PLAN_FORMAT,
            "valid": not problems,
            "bottles": bottles,
            "errors": [p.to_dict() for p in problems],
        },
        out,
        indent=2,
        sort_keys=True,
    )
    out.write("\n")


# --------------------------------------------------------------------------- validate


def _bottle_base(bottle: Bottle) -> dict[str, Any]:
    return {
        "name": bottle.name,
        "file": display_path(bottle.file),
        "chain": [display_path(p) for p in bottle.chain],
    }


def print_validate(
    bottles: Sequence[Bottle],
    problems: Sequence[Problem],
    out: TextIO,
    err: TextIO,
    *,
    fmt: str,
    backends: Sequence[str],
) -> None:
    """``bottle validate``'s result: the valid bottles and the problems, checked for
    ``backends``; as text, the problems and (if any) the count go to ``err``."""
    if fmt == "json":
        _dump_document([_bottle_base(b) for b in bottles], problems, out)
        return
    for bottle in bottles:
        print(f"ok  {bottle.name:<20} {display_path(bottle.file)}", file=out)
    print_problems(problems, err)
    print(
        f"{len(bottles)} bottle(s) valid, {len(problems)} error(s) (backends: "
        f"{', '.join(backends)})",
        file=err if problems else out,
    )


# --------------------------------------------------------------------------- plan


def _backend_rules(
    bottle: Bottle,
    backend: str,
    upstreams: Sequence[str],
    resolver_ip: str,
    gateway_ip: str,
) -> dict[str, Any]:
    if backend == "smolmachines":
        return {"smolmachines": render_smolvm(bottle.policy)}
    return {
        "docker": {
            "dnsmasq": render_dnsmasq(bottle.policy, upstreams),
            "firewall": render_firewall(bottle.policy, resolver_ip, gateway_ip),
        }
    }


def plan_entry(
    bottle: Bottle,
    backend: str,
    *,
    upstreams: Sequence[str],
    resolver_ip: str,
    gateway_ip: str,
) -> dict[str, Any]:
    """A bottle's plan: its policy, warnings, env and the rules ``backend`` gets (the
    Docker rules with these addresses). Raises ValueError for an address that is not
    an IPv4 address."""
    entry = _bottle_base(bottle)
    entry.update(
        {
            "description": bottle.manifest.get("description", ""),
            "backend": backend,
            "policy": bottle.policy.to_dict(),
            "warnings": policy_warnings(bottle.policy),
            "env": env_summary(bottle.manifest),
            "runtime": bottle.manifest.get("runtime", {}),
            "render": _backend_rules(bottle, backend, upstreams, resolver_ip, gateway_ip),
        }
    )
    return entry


def _plan_text(entry: Mapping[str, Any], out: TextIO) -> None:
    policy = entry["policy"]
    parents = entry["chain"][:-1]
    print(
        "bottle {}  ({}{})".format(
            entry["name"], entry["file"], ", extends " + " -> ".join(parents) if parents else ""
        ),
        file=out,
    )
    print("  policy        {}".format(policy["hash"]), file=out)
    print("  exact hosts   %s" % (", ".join(policy["exact_hosts"]) or "(none)"), file=out)
    print(
        "  wildcards     %s" % (", ".join("*." + z for z in policy["wildcard_zones"]) or "(none)"),
        file=out,
    )
    print("  cidrs         " + (", ".join(policy["cidrs"]) or "(none)"), file=out)
    print(f"  egress log    {policy['log']}", file=out)
    for name, info in entry["env"].items():
        detail = {
            "host": "from host variable {}".format(info.get("variable")),
            "prompt": "prompted at bring-up (secret)",
            "literal": "literal",
        }[info["kind"]]
        print(f"  env {name:<9} {detail}", file=out)
    for warning in entry["warnings"]:
        print("  WARNING: " + warning, file=out)
    render = entry["render"]
    if "smolmachines" in render:
        smol = render["smolmachines"]
        print(
            "  smolmachines allow_hosts: %s" % (" ".join(smol["allow_hosts"]) or "(none)"), file=out
        )
        print(
            "  smolmachines allow_cidrs: %s" % (" ".join(smol["allow_cidrs"]) or "(none)"), file=out
        )
        print(
            "  smolmachines deny_cidrs: %s" % (" ".join(smol["deny_cidrs"]) or "(none)"), file=out
        )
        print("  smolvm args: %s" % (" ".join(smol["cli_args"]) or "(none: no network)"), file=out)
    if "docker" in render:
        print("  dnsmasq:", file=out)
        for line in render["docker"]["dnsmasq"]:
            print("    " + line, file=out)
        for family in ("ipv4", "ipv6"):
            print(
                "  {} rules ({}-restore):".format(
                    family, "iptables" if family == "ipv4" else "ip6tables"
                ),
                file=out,
            )
            for line in render["docker"]["firewall"][family].splitlines():
                print("    " + line, file=out)


def print_plan(
    entries: Sequence[Mapping[str, Any]],
    problems: Sequence[Problem],
    out: TextIO,
    err: TextIO,
    *,
    fmt: str,
    placeholder_upstream: str | None = None,
) -> None:
    """``bottle plan``'s result: the :func:`plan_entry` of each valid bottle, and the
    problems. ``placeholder_upstream``: the upstream the Docker rules were rendered
    with because none was given (the text says so)."""
    if fmt == "json":
        _dump_document(entries, problems, out)
        return
    for index, entry in enumerate(entries):
        if index:
            print(file=out)
        _plan_text(entry, out)
    if placeholder_upstream:
        print(
            f"note: {placeholder_upstream} is a placeholder upstream; the Docker role uses "
            "docker_bottle_upstream_dns",
            file=out,
        )
    print_problems(problems, err)


# --------------------------------------------------------------------------- status


def print_status(
    status: Mapping[str, Sequence[Mapping[str, Any]]], out: TextIO, *, fmt: str
) -> None:
    """``bottle status``: one row per host and bottle; a row that is not ``state_ok``
    says DRIFT and why."""
    if fmt == "json":
        json.dump({"format": PLAN_FORMAT, "hosts": status}, out, indent=2, sort_keys=True)
        out.write("\n")
        return
    print(
        f"{'HOST':<20} {'BOTTLE':<20} {'BACKEND':<13} {'STATE':<9} {'DECLARED':<9} POLICY", file=out
    )
    for host in sorted(status):
        for row in status[host]:
            mark = "" if row.get("state_ok", True) else f"  DRIFT: {row.get('reason', '')}"
            print(
                f"{host:<20} {row['bottle']:<20} {row['backend']:<13} {row['state']:<9} "
                f"{row['declared']:<9} {row['policy'] or '-'}{mark}",
                file=out,
            )


# --------------------------------------------------------------------------- verify


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


def print_verify(
    report: Mapping[str, Sequence[Mapping[str, Any]]],
    outcome: str,
    out: TextIO,
    *,
    fmt: str,
    details: bool,
) -> None:
    """``bottle verify``: every bottle's checks (:func:`verify_lines`) and the fleet's
    verdict ``outcome`` (:func:`verify_outcome`)."""
    if fmt == "json":
        json.dump({"format": PLAN_FORMAT, "verdict": outcome, "hosts": report}, out, indent=2)
        out.write("\n")
        return
    for line in verify_lines(report, details=details):
        print(line, file=out)
    print(f"verdict: {outcome}", file=out)


# --------------------------------------------------------------------------- audit


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


def print_audit(
    entries: Mapping[str, Sequence[Mapping[str, Any]]], out: TextIO, *, fmt: str
) -> None:
    """``bottle audit``: every host's refusals in time order, as JSON lines or as the
    table (:func:`audit_lines`) and a count."""
    rows = audit_rows(entries)
    if fmt == "json":
        for row in rows:
            out.write(json.dumps(row, sort_keys=True) + "\n")
        return
    for line in audit_lines(rows):
        print(line, file=out)
    flagged = sum(1 for r in rows if r.get("flags"))
    proxy = sum(1 for r in rows if r.get("source") == "egress-proxy")
    dns = len(rows) - proxy
    print(
        f"{dns} refused DNS quer{'y' if dns == 1 else 'ies'}, {proxy} egress proxy "
        f"entr{'y' if proxy == 1 else 'ies'}, {flagged} flagged",
        file=out,
    )
