# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which backend handles each of a host's bottles in a run. **PRIVATE** to the
botbottle.bottle collection (used by the playbook botbottle.bottle.bottles through the
``bottle_backends`` filter). Standard library only.

``bottle_backend`` is ``smolmachines`` (default), ``docker`` or ``auto`` (demo only).
smolmachines and docker hosts send every bottle to their backend. An ``auto`` host with a
bottle to create or keep (any state but ``absent``) sends them all to smolmachines when
its boot probe passed, else to Docker.

An ``auto`` host with nothing to create or keep (``bottle down``) is decided without the
boot probe, from where the bottles are: a bottle goes to Docker when Docker holds a
bot-bottle container of it (labelled ``botbottle.bottle=<name>``: its agent, holder or
resolver) or - only when Docker did not answer - when its Docker state folder is still
there; then the Docker backend fails, naming the fix, rather than report gone a bottle
Docker may restart. Every other bottle goes to smolmachines, whose ``absent`` is a no-op
where smolvm holds no such machine or is not installed. The stored boot probe verdict is
not used: it says where bottles would go now, not where an earlier run put them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ansible_collections.botbottle.bottle.plugins.module_utils._bottle import (
    BOTTLE_LABEL,
    DEFAULT_STATE,
    STATES,
)

BACKENDS = ("smolmachines", "docker", "auto")


def targets(resolved: Sequence[Mapping[str, Any]], state: str = "") -> dict[str, Any]:
    """A host's bottles for a run: ``{"all", "kept", "started"}``.

    ``resolved`` are the validate play's bottle records; ``state`` (``bottle down`` sets
    ``absent``) replaces every bottle's declared state when given. ``kept`` are the bottles
    the run creates or keeps (any state but ``absent``), ``started`` the names of those
    it starts.
    """
    if state and state not in STATES:
        raise ValueError(f"bottle_state_override is {state!r}; use one of {', '.join(STATES)}")
    bottles = [dict(r, state=state or r.get("state", DEFAULT_STATE)) for r in resolved]
    return {
        "all": bottles,
        "kept": [b for b in bottles if b["state"] != "absent"],
        "started": [str(b.get("name", "")) for b in bottles if b["state"] == "started"],
    }


def docker_held(info: Mapping[str, Any] | None) -> list[str] | None:
    """The bottles of which a registered ``community.docker.docker_host_info`` result
    (``containers: true``, ``verbose_output: true``) lists a container; None when Docker
    was not asked (the task skipped) or did not answer (the task failed)."""
    if not info or info.get("skipped") or info.get("failed"):
        return None
    names = set()
    for container in info.get("containers") or []:
        labels = container.get("Labels") if isinstance(container, Mapping) else None
        if isinstance(labels, Mapping) and labels.get(BOTTLE_LABEL):
            names.add(str(labels[BOTTLE_LABEL]))
    return sorted(names)


def existing_folders(stats: Mapping[str, Any] | None) -> list[str]:
    """The bottles whose state folder exists, from a registered ``ansible.builtin.stat``
    loop over the targets (``item`` is the bottle); empty when the loop did not run."""
    found = set()
    for result in (stats or {}).get("results") or []:
        exists = (result.get("stat") or {}).get("exists")
        item = result.get("item") or {}
        if exists and isinstance(item, Mapping) and item.get("name"):
            found.add(str(item["name"]))
    return sorted(found)


def route(
    targets: Sequence[Mapping[str, Any]],
    backend: str,
    *,
    can_boot: bool = False,
    docker: Iterable[str] | None = None,
    folders: Iterable[str] = (),
) -> dict[str, Any]:
    """``{"backend": ..., "docker": [targets], "smolmachines": [targets], "docker_kept":
    [...], "smolmachines_kept": [...]}`` (``*_kept``: those not ``absent``).

    ``backend`` is the host's ``bottle_backend``; the result's is the one the run uses,
    ``auto`` when an auto host's bottles are split between both. ``can_boot`` is the boot
    probe's verdict (asked only when an auto host keeps a bottle), ``docker`` the bottles
    Docker holds (None: it did not answer), ``folders`` those whose Docker state folder
    exists (used only when Docker did not answer).
    """
    if backend not in BACKENDS:
        raise ValueError(f"bottle_backend is {backend!r}; use one of {', '.join(BACKENDS)}")
    bottles = [dict(t) for t in targets]
    effective = backend
    if backend == "auto" and any(t.get("state", "started") != "absent" for t in bottles):
        effective = "smolmachines" if can_boot else "docker"
    if effective != "auto":
        return _split(
            effective,
            bottles if effective == "docker" else [],
            bottles if effective == "smolmachines" else [],
        )
    on_docker = set(folders) if docker is None else set(docker)
    return _split(
        "auto",
        [t for t in bottles if t.get("name") in on_docker],
        [t for t in bottles if t.get("name") not in on_docker],
    )


def _split(
    backend: str, docker: list[dict[str, Any]], smol: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "backend": backend,
        "docker": docker,
        "smolmachines": smol,
        "docker_kept": [t for t in docker if t.get("state", DEFAULT_STATE) != "absent"],
        "smolmachines_kept": [t for t in smol if t.get("state", DEFAULT_STATE) != "absent"],
    }
