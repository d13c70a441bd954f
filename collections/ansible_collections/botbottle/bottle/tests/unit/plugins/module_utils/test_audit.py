"""The audit: dnsmasq log parsing, smolvm events, flags, retention and the store."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ansible_collections.botbottle.bottle.plugins.module_utils._audit import (
    Refusal,
    flags,
    parse_dnsmasq,
    parse_smolvm_events,
    retain,
    since_cutoff,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._audit_store import (
    collect,
    dnsmasq_source,
    read_entries,
    remember_probe_names,
)

NOW = datetime(2026, 11, 28, 13, 30, tzinfo=UTC)
# Lines as dnsmasq 2.90 writes them with log-queries=extra (captured from a real run).
LOG = """\
Nov 28 13:16:54 dnsmasq[14429]: started, version 2.90 cachesize 150
Nov 28 13:16:54 dnsmasq[14429]: using nameserver 127.0.0.1#5999 for domain api.example.com
Nov 28 13:16:55 dnsmasq[14429]: 1 172.30.0.3/40216 query[A] x.api.example.com from 172.30.0.3
Nov 28 13:16:55 dnsmasq[14429]: 1 172.30.0.3/40216 config x.api.example.com is NXDOMAIN
Nov 28 13:16:55 dnsmasq[14429]: 2 172.30.0.3/42286 query[TXT] nope.example from 172.30.0.3
Nov 28 13:16:55 dnsmasq[14429]: 3 172.30.0.3/44339 query[AAAA] api.example.com from 172.30.0.3
Nov 28 13:16:55 dnsmasq[14429]: 3 172.30.0.3/44339 forwarded api.example.com to 127.0.0.1#5999
Nov 28 13:16:55 dnsmasq[14429]: 2 172.30.0.3/42286 config nope.example is NXDOMAIN
Nov 28 13:16:56 dnsmasq[14429]: 4 127.0.0.1/50898 query[A] bot-bottle-health.invalid from 127.0.0.1
Nov 28 13:16:56 dnsmasq[14429]: 4 127.0.0.1/50898 config bot-bottle-health.invalid is NXDOMAIN
"""
SECRET = "bb-audit-secret-value-5e1d"
ENCODED = base64.b32encode(SECRET.encode()).decode().rstrip("=").lower()


def test_dnsmasq_refusals_with_the_type_of_their_query() -> None:
    refusals = parse_dnsmasq(LOG.splitlines(), NOW)
    assert refusals == [
        Refusal("2026-11-28T13:16:55Z", "x.api.example.com", "A", "NXDOMAIN", "dnsmasq"),
        Refusal("2026-11-28T13:16:55Z", "nope.example", "TXT", "NXDOMAIN", "dnsmasq"),
    ]  # forwarded queries are not refusals; the resolver's own health check is skipped


def test_a_stamp_from_late_december_read_in_january_is_last_year() -> None:
    line = "Dec 31 23:59:59 dnsmasq[1]: 7 10.0.0.3/1 config a.b is NXDOMAIN"
    [refusal] = parse_dnsmasq([line], datetime(2027, 1, 1, 0, 5, tzinfo=UTC))
    assert refusal.time == "2026-12-31T23:59:59Z" and refusal.qtype == "?"


def test_smolvm_events_become_refusals() -> None:
    events = [
        {"at": 1795872000000, "host": "Exfil.Example.", "kind": "dns", "reason": "not allowed"},
        {"timestamp": "2026-11-28T13:00:00Z", "destination": "198.51.100.7"},
        {"unrelated": True},
    ]
    first, second = parse_smolvm_events(events)
    assert first.name == "exfil.example" and first.verdict == "not allowed"
    assert first.time.startswith("2026-") and first.source == "smolvm"
    assert second.name == "198.51.100.7" and second.time == "2026-11-28T13:00:00Z"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("api.example.com", []),
        ("www.pypi.org", []),
        (f"{ENCODED}.api.example.com", ["base32", "high-entropy", "long-label"]),
        ("6b6579313233343536373839616263.example", ["hex", "long-label"]),
        ("a.b.c.d.e.f.g.example", ["deep"]),
        ("q8zk3mx7w2vj9tlr.example", ["high-entropy"]),
    ],
)
def test_flags(name: str, expected: list[str]) -> None:
    assert flags(name) == expected


def test_retention_keeps_the_newest_within_the_age_bound() -> None:
    entries = [
        {"time": (NOW - timedelta(days=d)).strftime("%Y-%m-%dT%H:%M:%SZ"), "n": d}
        for d in (40, 3, 2, 1)
    ]
    kept = retain(entries, now=NOW, max_entries=2, max_age_days=30)
    assert [e["n"] for e in kept] == [2, 1]
    assert [e["n"] for e in retain(entries, now=NOW, max_entries=10, max_age_days=30)] == [3, 2, 1]


def test_since() -> None:
    assert since_cutoff("15m", NOW) == "2026-11-28T13:15:00Z"
    assert since_cutoff("2d", NOW) == "2026-11-26T13:30:00Z"
    assert since_cutoff("2026-11-28T12:00:00", NOW) == "2026-11-28T12:00:00Z"
    with pytest.raises(ValueError, match="duration like 15m"):
        since_cutoff("yesterday", NOW)


def _collect(tmp_path: Path, log: Path, write: bool = True) -> tuple[int, int, bool]:
    result = collect(
        str(tmp_path / "audit"),
        "web",
        dnsmasq_source(str(log), NOW),
        now=NOW,
        limits=(100, 30),
        write=write,
    )
    return result.added, result.probes, result.changed


def test_collection_is_incremental_idempotent_and_skips_the_verifiers_names(
    tmp_path: Path,
) -> None:
    log = tmp_path / "queries.log"
    log.write_text(LOG)
    assert _collect(tmp_path, log, write=False) == (2, 0, True)
    assert read_entries(str(tmp_path / "audit"), "web") == []  # check mode wrote nothing
    assert _collect(tmp_path, log) == (2, 0, True)
    assert _collect(tmp_path, log) == (0, 0, False)  # nothing new: no change
    remember_probe_names(str(tmp_path / "audit"), "web", ["bottle-verify-abc.api.example.com"])
    with log.open("a") as handle:
        handle.write(
            "Nov 28 13:20:00 dnsmasq[1]: 9 172.30.0.3/5 query[TXT] "
            f"{ENCODED}.api.example.com from 172.30.0.3\n"
            f"Nov 28 13:20:00 dnsmasq[1]: 9 172.30.0.3/5 config {ENCODED}.api.example.com "
            "is NXDOMAIN\n"
            "Nov 28 13:20:01 dnsmasq[1]: 10 172.30.0.3/6 config "
            "bottle-verify-abc.api.example.com is NXDOMAIN\n"
            "Nov 28 13:20:02 dnsmasq[1]: 11 172.30.0.3/7 query[A] torn.exa"  # no newline yet
        )
    assert _collect(tmp_path, log) == (1, 1, True)
    entries = read_entries(str(tmp_path / "audit"), "web")
    assert [e["name"] for e in entries][-1] == f"{ENCODED}.api.example.com"
    assert entries[-1]["flags"] == ["base32", "high-entropy", "long-label"]
    assert set(entries[-1]) == {"time", "bottle", "name", "type", "verdict", "source", "flags"}
    assert SECRET not in (tmp_path / "audit" / "web.jsonl").read_text()


def test_a_rotated_log_is_read_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "queries.log"
    log.write_text(LOG)
    _collect(tmp_path, log)
    log.unlink()
    log.write_text(LOG.splitlines(keepends=True)[2] + LOG.splitlines(keepends=True)[3])
    assert _collect(tmp_path, log)[0] == 1
    cursor = json.loads((tmp_path / "audit" / "web.cursor.json").read_text())
    assert cursor["offset"] == log.stat().st_size
