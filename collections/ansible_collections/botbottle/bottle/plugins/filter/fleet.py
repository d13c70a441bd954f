# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter: which backend handles each of a host's bottles (the rules live in
``module_utils/_fleet_backend.py``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.botbottle.bottle.plugins.module_utils._fleet_backend import (
    docker_held,
    existing_folders,
    route,
    targets,
)


def bottle_targets(resolved: Sequence[Mapping[str, Any]], state: str = "") -> dict[str, Any]:
    """``{"all", "kept", "started"}``: a host's bottles for a run, ``state`` (the state
    override of ``bottle down``) applied."""
    try:
        return targets(resolved or [], str(state or ""))
    except ValueError as exc:
        raise AnsibleFilterError(f"bottle_targets: {exc}") from None


def bottle_backends(
    targets: Sequence[Mapping[str, Any]],
    backend: str,
    can_boot: bool = False,
    docker: Mapping[str, Any] | None = None,
    folders: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``{"backend", "docker", "smolmachines", "docker_kept", "smolmachines_kept"}``: the
    run's backend and each one's bottles (``*_kept``: those not ``absent``)."""
    try:
        return route(
            targets or [],
            str(backend),
            can_boot=bool(can_boot),
            docker=docker_held(docker),
            folders=existing_folders(folders),
        )
    except ValueError as exc:
        raise AnsibleFilterError(f"bottle_backends: {exc}") from None


class FilterModule:
    """botbottle.bottle fleet filter."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"bottle_backends": bottle_backends, "bottle_targets": bottle_targets}
