# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter: a host's bottle status rows (the rules live in ``module_utils/_bottle.py``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ansible_collections.botbottle.bottle.plugins.module_utils._bottle import (
    fleet_status,
    verify_targets,
)


def bottle_status(
    declared: Sequence[Mapping[str, Any]],
    backend: str,
    docker: Mapping[str, Any] | None = None,
    smolmachines: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Declared against actual, per bottle (``{bottle, backend, state, declared, state_ok}``)."""
    return fleet_status(declared or [], str(backend), docker, smolmachines)


def bottle_verify_targets(
    rows: Sequence[Mapping[str, Any]], resolved: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Status rows with each bottle's compiled policy (the escape suite's input)."""
    return verify_targets(rows or [], resolved or [])


class FilterModule:
    """botbottle.bottle status filter."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"bottle_status": bottle_status, "bottle_verify_targets": bottle_verify_targets}
