"""The audit files of a host: ``<dir>/<bottle>.jsonl`` plus a read cursor per bottle.

File I/O around the pure functions of :mod:`._audit`. Collection is incremental and
idempotent: the dnsmasq log is read from the cursor (inode and offset of the last
complete line read), smolvm's event list is de-duplicated against what is stored, so
collecting twice with nothing new refused changes nothing. Refusals of the names
``bottle verify`` sent (see :func:`remember_probe_names`) are counted, not stored:
the audit is about the agent. Retention (newest
``max_entries`` entries, none older than ``max_age_days``) is applied on every write.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ansible_collections.botbottle.bottle.plugins.module_utils._audit import (
    Refusal,
    dumps,
    event_key,
    loads,
    parse_dnsmasq,
    parse_egress,
    record,
    retain,
)

_MAX_READ = 64 * 1024 * 1024
Source = Callable[[Mapping[str, Any]], tuple[list[Refusal], dict[str, Any]]]


@dataclass
class Collected:
    """What one collection found and would write."""

    entries: list[Mapping[str, Any]]
    added: int
    dropped: int
    probes: int = 0
    cursor: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return self.added > 0 or self.dropped > 0


def paths(audit_dir: str, bottle: str) -> tuple[str, str, str]:
    """The bottle's audit file, cursor file and list of names sent by ``bottle verify``."""
    base = os.path.join(audit_dir, bottle)
    return base + ".jsonl", base + ".cursor.json", base + ".probes.json"


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return ""


def read_entries(audit_dir: str, bottle: str) -> list[dict[str, Any]]:
    """Every stored entry of ``bottle``, oldest first."""
    return loads(_read_text(paths(audit_dir, bottle)[0]))


def read_probe_names(audit_dir: str, bottle: str) -> list[str]:
    """Names the last ``bottle verify`` runs sent from inside the bottle."""
    text = _read_text(paths(audit_dir, bottle)[2])
    value = json.loads(text) if text else []
    return [str(n) for n in value] if isinstance(value, list) else []


def _write_atomic(path: str, text: str, mode: int = 0o600) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def remember_probe_names(
    audit_dir: str, bottle: str, names: Sequence[str], keep: int = 500
) -> None:
    """Add ``names`` to the bottle's list of verifier names (newest ``keep`` kept)."""
    known = [n for n in read_probe_names(audit_dir, bottle) if n not in names]
    _write_atomic(paths(audit_dir, bottle)[2], json.dumps((known + list(names))[-keep:]))


def read_log_since(log_path: str, cursor: Mapping[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """Complete lines of ``log_path`` after ``cursor``, and the new cursor. A rotated or
    truncated log (other inode, or shorter than the offset) is read from its start."""
    try:
        stat = os.stat(log_path)
    except FileNotFoundError:
        return [], dict(cursor)
    offset = int(cursor.get("offset", 0))
    if cursor.get("inode") != stat.st_ino or stat.st_size < offset:
        offset = 0
    with open(log_path, "rb") as handle:
        handle.seek(offset)
        data = handle.read(_MAX_READ)
    end = data.rfind(b"\n") + 1
    lines = data[:end].decode("utf-8", errors="replace").splitlines()
    return lines, {"inode": stat.st_ino, "offset": offset + end}


def merge(
    stored: Sequence[Mapping[str, Any]],
    refusals: Iterable[Refusal],
    *,
    bottle: str,
    probes: Sequence[str],
    now: datetime,
    limits: tuple[int, int],
) -> Collected:
    """``stored`` plus the new ``refusals``, retained. Already stored smolvm events and the
    verifier's own probe queries (``probes``) are not stored; the latter are counted."""
    seen = {event_key(e) for e in stored}
    new = []
    own = 0
    for refusal in refusals:
        entry = record(refusal, bottle, probes)
        if entry.get("origin"):
            own += 1
            continue
        key = event_key(entry)
        if refusal.source == "smolvm" and key in seen:
            continue
        seen.add(key)
        new.append(entry)
    combined = [*stored, *new]
    max_entries, max_age_days = limits
    kept = retain(combined, now=now, max_entries=max_entries, max_age_days=max_age_days)
    return Collected(kept, len(new), len(combined) - len(kept), own)


def collect(
    audit_dir: str,
    bottle: str,
    refusals_from: Source,
    *,
    now: datetime,
    limits: tuple[int, int],
    write: bool,
) -> Collected:
    """Collect new refusals for ``bottle`` and (when ``write``) store them.

    ``refusals_from(cursor) -> (refusals, new_cursor)`` reads the backend's source.
    """
    audit, cursor_path, _ = paths(audit_dir, bottle)
    cursor_text = _read_text(cursor_path)
    cursor = json.loads(cursor_text) if cursor_text else {}
    refusals, new_cursor = refusals_from(cursor)
    stored = read_entries(audit_dir, bottle)
    result = merge(
        stored,
        refusals,
        bottle=bottle,
        probes=read_probe_names(audit_dir, bottle),
        now=now,
        limits=limits,
    )
    result.cursor = new_cursor
    if write and result.changed:
        _write_atomic(audit, dumps(result.entries))
    if write and new_cursor != cursor:
        _write_atomic(cursor_path, json.dumps(new_cursor))
    return result


def dnsmasq_source(log_path: str, now: datetime) -> Source:
    """A ``refusals_from`` for the Docker example's resolver log."""

    def _read(cursor: Mapping[str, Any]) -> tuple[list[Refusal], dict[str, Any]]:
        lines, new_cursor = read_log_since(log_path, cursor)
        return parse_dnsmasq(lines, now), new_cursor

    return _read


def egress_source(log_path: str) -> Source:
    """A ``refusals_from`` for the egress proxy's JSON-lines log."""

    def _read(cursor: Mapping[str, Any]) -> tuple[list[Refusal], dict[str, Any]]:
        lines, new_cursor = read_log_since(log_path, cursor)
        return parse_egress(lines), new_cursor

    return _read


def with_sources(first: Source, more: Mapping[str, Source]) -> Source:
    """One ``refusals_from`` reading ``first`` and then each of ``more``; ``first``
    keeps the top level of the cursor (as before there were more), each of ``more``
    its own cursor under its key."""

    def _read(cursor: Mapping[str, Any]) -> tuple[list[Refusal], dict[str, Any]]:
        refusals, new_cursor = first({k: v for k, v in cursor.items() if k not in more})
        new_cursor = dict(new_cursor)
        for key, source in more.items():
            own = cursor.get(key)
            found, new_cursor[key] = source(own if isinstance(own, Mapping) else {})
            refusals = [*refusals, *found]
        return refusals, new_cursor

    return _read
