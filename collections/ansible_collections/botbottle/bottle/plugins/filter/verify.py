# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters: the ``bottle_verify`` role's report and messages (the rules live in
``module_utils/_probe.py``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ansible_collections.botbottle.bottle.plugins.module_utils._probe import (
    failure_message,
    report_rows,
)


def _refusals(audits: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """New refusals per bottle from the registered results of a ``bottle_audit`` loop over
    ``{bottle, ...}`` items (skipped items have no ``added``)."""
    counts: dict[str, int] = {}
    for result in audits:
        item = result.get("item")
        if isinstance(item, Mapping) and "added" in result:
            counts[str(item.get("bottle"))] = int(result["added"] or 0)
    return counts


def bottle_verify_report(
    bottles: Sequence[Mapping[str, Any]],
    probed: Sequence[Mapping[str, Any]] | None = None,
    audits: Sequence[Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One report row per bottle (``{bottle, backend, verdict, summary, leaks, inconclusive,
    new_refusals, results}``)."""
    return report_rows(bottles or [], probed or [], _refusals(audits or []))


def bottle_verify_message(row: Mapping[str, Any], host: str) -> str:
    """Why a report row fails its host: its leaks and their fix, or what was undecided."""
    return failure_message(row, str(host))


class FilterModule:
    """botbottle.bottle verify filters."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "bottle_verify_report": bottle_verify_report,
            "bottle_verify_message": bottle_verify_message,
        }
