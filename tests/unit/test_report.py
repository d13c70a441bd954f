"""Tables and verdicts of `bottle verify` and `bottle audit`."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from ansible_collections.botbottle.bottle.plugins.module_utils._audit import describe
from ansible_collections.botbottle.bottle.plugins.module_utils._audit_store import (
    collect,
    dnsmasq_source,
    egress_source,
    read_entries,
    with_sources,
)
from ansible_collections.botbottle.bottle.tests.unit.plugins.module_utils.egress_fakes import (
    NOW,
    PROXY_LOG,
)
from botbottle import cli, report


def _row(bottle: str, verdict: str, results: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "bottle": bottle,
        "backend": "docker",
        "verdict": verdict,
        "summary": {"pass": 12, "leak": 1 if verdict == "leak" else 0, "inconclusive": 0},
        "results": results or [],
    }


LEAKING_CHECK = {
    "name": "gateway-udp",
    "description": "no DNS answer from 10.0.0.1 port 53 (udp)",
    "observed": "answer NOERROR (0 records)",
    "verdict": "leak",
    "evidence": {"control": "from the neighbour: answer NOERROR (0 records)"},
}
PASSING_CHECK = dict(LEAKING_CHECK, name="gateway-tcp", verdict="pass", observed="timeout")


def test_fleet_outcome_ranks_leak_first() -> None:
    assert report.verify_outcome({"a": [_row("x", "sealed")], "b": [_row("y", "leak")]}) == "leak"
    assert report.verify_outcome({"a": [_row("x", "inconclusive"), _row("y", "sealed")]}) == (
        "inconclusive"
    )
    assert report.verify_outcome({"a": [_row("x", "sealed")]}) == "sealed"
    assert report.verify_outcome({"a": [_row("x", "not-running")]}) == "none"


def test_verify_table_shows_what_leaked_and_hides_passes_unless_asked() -> None:
    data = {"host1": [_row("web", "leak", [LEAKING_CHECK, PASSING_CHECK])]}
    lines = report.verify_lines(data, details=False)
    assert lines[1].split()[:4] == ["host1", "web", "docker", "leak"]
    assert any("LEAK" in line and "gateway-udp" in line for line in lines)
    assert not any("gateway-tcp" in line for line in lines)
    assert any("gateway-tcp" in line for line in report.verify_lines(data, details=True))


def test_audit_rows_merge_hosts_in_time_order_and_mark_flagged_names() -> None:
    entries = {
        "b": [{"time": "2026-11-28T10:00:00Z", "name": "x.example", "flags": []}],
        "a": [{"time": "2026-11-28T11:00:00Z", "name": "mfrgg.example", "flags": ["base32"]}],
    }
    rows = report.audit_rows(entries)
    assert [r["host"] for r in rows] == ["b", "a"]
    lines = report.audit_lines(rows)
    assert lines[1].startswith("  ") and lines[2].startswith("! ")


def test_audit_rejects_a_bad_since_before_touching_anything() -> None:
    err = io.StringIO()
    code = cli.main(["audit", "web", "--since", "yesterday"], out=io.StringIO(), err=err)
    assert code == cli.EXIT_INVALID
    assert "duration like 15m" in err.getvalue()


def test_verify_exit_codes() -> None:
    args = cli._parser().parse_args(["verify", "--format", "json"])
    out = io.StringIO()
    stats = {"bottle_verify": {"h": [_row("web", "leak")]}}
    assert cli._verify_report(stats, args, out, 0) == cli.EXIT_FAILED
    stats = {"bottle_verify": {"h": [_row("web", "inconclusive")]}}
    assert cli._verify_report(stats, args, out, 0) == cli.EXIT_INCONCLUSIVE
    stats = {"bottle_verify": {"h": [_row("web", "sealed")]}}
    assert cli._verify_report(stats, args, out, 0) == cli.EXIT_OK


# --------------------------------------------------------------------------- the proxy's log


def test_collect_reads_the_resolver_and_the_proxy_into_one_audit(tmp_path: Path) -> None:
    queries = tmp_path / "queries.log"
    queries.write_text(
        "Nov 28 13:16:55 dnsmasq[1]: 1 172.30.0.3/4 query[A] nope.example from 172.30.0.3\n"
        "Nov 28 13:16:55 dnsmasq[1]: 1 172.30.0.3/4 config nope.example is NXDOMAIN\n"
    )
    egress = tmp_path / "egress.jsonl"
    egress.write_text(PROXY_LOG.rsplit("\n", 1)[0] + "\n")
    source = with_sources(dnsmasq_source(str(queries), NOW), {"egress": egress_source(str(egress))})
    audit = str(tmp_path / "audit")
    first = collect(audit, "web", source, now=NOW, limits=(100, 3650), write=True)
    assert first.added == 6 and first.cursor["egress"]["offset"] == egress.stat().st_size
    assert first.cursor["offset"] == queries.stat().st_size  # dnsmasq keeps the top level
    again = collect(audit, "web", source, now=NOW, limits=(100, 3650), write=True)
    assert again.added == 0 and not again.changed
    with egress.open("a") as handle:
        handle.write(json.dumps({"event": "refused", "host": "b.example:443", "method": "GET",
                                 "path": "/x", "rule": "no-route-match", "reason": "r",
                                 "source": "egress-proxy", "time": 1795872100}) + "\n")  # fmt: skip
    assert collect(audit, "web", source, now=NOW, limits=(100, 3650), write=True).added == 1
    entries = read_entries(audit, "web")
    assert {e["source"] for e in entries} == {"dnsmasq", "egress-proxy"}
    proxy = [e for e in entries if e["source"] == "egress-proxy"]
    assert proxy[0]["path"] == "/admin?[redacted]" and proxy[0]["bottle"] == "web"
    assert describe(proxy[0]) == "api.example.com /admin?[redacted]"
    lines = report.audit_lines(report.audit_rows({"h1": entries}))
    assert lines[0].split()[:6] == ["TIME", "HOST", "SOURCE", "TYPE", "VERDICT", "FLAGS"]
    assert any("dnsmasq" in line and line.endswith("nope.example") for line in lines)
    assert any(
        "egress-proxy" in line
        and "no-route-match" in line
        and line.endswith("api.example.com /admin?[redacted]")
        for line in lines
    )
