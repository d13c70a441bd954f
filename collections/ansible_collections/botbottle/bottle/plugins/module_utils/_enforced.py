# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which backend enforces which manifest key: the one owner of that answer.

**PRIVATE** to the botbottle.bottle collection and the ``botbottle`` package.

A key the schema accepts either reaches a backend that acts on it, or a manifest
that sets it is refused: no key is silently ignored. :data:`ENFORCED` lists, per
backend, the keys its module is given and applies (read from the code that passes
them: the collection's ``playbooks/tasks/smolmachines_bottles.yml`` into the ``smolmachine``
module, the ``botbottle.bottle.docker_bottle_example`` role into the ``docker_bottle`` module);
:func:`unenforced` returns every key of a merged manifest that is set but that a
backend does not enforce. The ``bottle`` CLI (validate, plan, up) and the
``bottle_manifest`` lookup (site.yml's validation play) both ask this file.

Standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SMOLMACHINES = "smolmachines"
DOCKER = "docker"
AUTO = "auto"  # demo only: either backend, so a bottle may use only what both enforce
BACKENDS: tuple[str, ...] = (SMOLMACHINES, DOCKER)

#: Every manifest key a backend could act on, in the README table's order. ``[]``
#: stands for each item of a list. ``description`` (shown by ``bottle plan``) and
#: ``extends`` (resolved before any backend sees the manifest) are not backend keys.
KEYS: tuple[str, ...] = (
    "egress.routes[].host",
    "egress.routes[].cidr",
    "egress.routes[].wide",
    "egress.log",
    "egress.dlp",
    "egress.routes[].auth",
    "egress.routes[].matches",
    "egress.routes[].dlp",
    "git-gate",
    "agent_provider",
    "env",
    "runtime.image",
    "runtime.command",
    "runtime.cpus",
    "runtime.memory_mib",
    "runtime.storage_gib",
    "runtime.workdir",
    "runtime.user",
    "runtime.mounts",
    "runtime.ports",
    "runtime.ports[].protocol",
    "runtime.ports[].address",
    "runtime.capabilities",
    "runtime.labels",
)

_BOTH = frozenset(
    {
        "egress.routes[].host",
        "egress.routes[].cidr",
        "egress.routes[].wide",
        "env",
        "runtime.image",
        "runtime.command",
        "runtime.cpus",
        "runtime.memory_mib",
        "runtime.workdir",
        "runtime.mounts",
        "runtime.labels",
    }
)

#: Per backend, the keys it enforces. ``egress.log`` means levels 1 and 2 (0 is off,
#: which every backend honours). The docker backend's egress proxy matches routes'
#: ``matches`` and writes the ``egress.log`` levels (``_egress.check_request``,
#: ``_egress.log_line``) and runs data-loss prevention with the bottle's ``egress.dlp``
#: and routes' ``dlp`` (``_dlp``, from ``_egress_addon``), and injects routes' ``auth``
#: (``_egress.credential_for``; the role passes the values by ``token_ref`` from the
#: controller's environment, ``bottle_credentials``); smolmachines has no proxy.
ENFORCED: Mapping[str, frozenset[str]] = {
    # the smolmachine module: image, command, cpus, memory, storage, workdir, mounts,
    # ports (host and guest only), labels, env and the compiled allow lists
    SMOLMACHINES: _BOTH | {"runtime.storage_gib", "runtime.ports"},
    # the docker_bottle module: image, command, workdir, user, cpus, memory_mib,
    # capabilities, mounts, labels, env, the compiled resolver and firewall rules, and
    # the egress proxy's configuration (the compiled policy: routes' matches, log level,
    # the bottle's and routes' dlp, routes' auth) and its runtime credentials
    DOCKER: _BOTH
    | {
        "runtime.user",
        "runtime.capabilities",
        "egress.routes[].matches",
        "egress.log",
        "egress.dlp",
        "egress.routes[].dlp",
        "egress.routes[].auth",
    },
}

PROXY_FIX = (
    "remove the key, or use a backend that enforces it; the docker backend's egress proxy "
    "enforces matches, auth, dlp and log levels 1 and 2"
)
RUNTIME_FIX = (
    "remove the key, or use a backend that applies it (README: 'Which backend enforces what')"
)

#: What a set key leaves undone where it is not enforced, and the fix.
CONSEQUENCE: Mapping[str, tuple[str, str]] = {
    "egress.log": ("requests and blocks are not logged at this level", PROXY_FIX),
    "egress.routes[].auth": (
        "no credential is injected into requests to this host",
        PROXY_FIX,
    ),
    "egress.routes[].matches": (
        "requests are not matched: the bottle may use any path, method and header on this host",
        PROXY_FIX,
    ),
    "egress.routes[].dlp": (
        "no request or response to this host is scanned",
        PROXY_FIX,
    ),
    "egress.dlp": (
        "no request or response is scanned for the bottle's secrets or token formats",
        PROXY_FIX,
    ),
    "git-gate": (
        "no git gate runs: no repository is fetched or pushed through it and no identity is set",
        "remove the key; no backend runs the git gate yet",
    ),
    "agent_provider": (
        "no provider agent is installed or started: the bottle runs runtime.image and "
        "runtime.command",
        "remove the key and name the agent's image and command in runtime",
    ),
    "runtime.storage_gib": ("the disk size is not set", RUNTIME_FIX),
    "runtime.user": ("the agent runs as the image's user", RUNTIME_FIX),
    "runtime.ports": ("no port is published", RUNTIME_FIX),
    "runtime.ports[].protocol": (
        "the port is published as the backend does by default (TCP)",
        RUNTIME_FIX,
    ),
    "runtime.ports[].address": (
        "the port is bound to the address the backend chooses, not this one",
        RUNTIME_FIX,
    ),
    "runtime.capabilities": (
        "the capability list is not applied (in a microVM the guest's own init holds every "
        "capability inside the VM)",
        RUNTIME_FIX,
    ),
}

Part = str | int


@dataclass(frozen=True)
class Unenforced:
    """A key set in a manifest that some of the asked backends do not enforce."""

    key: str  # the table key, e.g. "egress.routes[].matches"
    parts: tuple[Part, ...]  # where, e.g. ("egress", "routes", 2, "matches")
    backends: tuple[str, ...]  # the asked backends that do not enforce it
    value: Any = None
    route: int | None = None  # the route's index in egress.routes
    host: str | None = None  # the route's host (or cidr)

    @property
    def path(self) -> str:
        """The JSON path, e.g. ``$.egress.routes[2].matches``."""
        return json_path(self.parts)

    @property
    def name(self) -> str:
        """The key as written: its last part on a route, else its path without ``$.``."""
        return str(self.parts[-1]) if self.route is not None else self.path[2:]

    def message(self, route: int | None = None) -> str:
        """One line: which route, which key, which backends, what is not done.

        ``route`` replaces the route's index (its index in the file that wrote it).
        """
        consequence, _fix = CONSEQUENCE.get(self.key, ("it is not applied", RUNTIME_FIX))
        backends = " and ".join(self.backends)
        plural = "s" if len(self.backends) > 1 else ""
        if self.route is not None:
            index = self.route if route is None else route
            where = f"route {index} (host {self.host}): '{self.name}'"
        elif self.key == "egress.log":
            where = f"'egress.log: {self.value}'"
        else:
            where = f"'{self.name}'"
        return f"{where} is not enforced by the {backends} backend{plural}: {consequence}"

    @property
    def fix(self) -> str:
        return CONSEQUENCE.get(self.key, ("", RUNTIME_FIX))[1]


def json_path(parts: Sequence[Part]) -> str:
    """``("egress", "routes", 2, "matches")`` -> ``$.egress.routes[2].matches``."""
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def backends_for(backend: str) -> tuple[str, ...]:
    """The backends a bottle may run on: one, or both for ``auto``."""
    if backend == AUTO:
        return BACKENDS
    if backend in BACKENDS:
        return (backend,)
    raise ValueError(f"backend {backend!r} is not one of {', '.join((*BACKENDS, AUTO))}")


def enforces(backend: str, key: str) -> bool:
    """Does ``backend`` enforce ``key`` (a :data:`KEYS` entry)?"""
    return key in ENFORCED[backend]


def is_set(value: Any) -> bool:
    """Does ``value`` ask for anything? None, empty mappings and lists (and ones that
    hold only such) do not; every scalar does, ``false`` and ``0`` included."""
    if value is None:
        return False
    if isinstance(value, Mapping):
        return any(is_set(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(is_set(v) for v in value)
    return True


def _key_is_set(key: str, value: Any) -> bool:
    if key == "egress.log":
        return value is not None and (isinstance(value, bool) or value != 0)  # 0 is off
    return is_set(value)


def _occurrences(
    data: Any, segments: Sequence[str], parts: tuple[Part, ...] = ()
) -> list[tuple[tuple[Part, ...], Any]]:
    """Every (parts, value) the key ``segments`` names in ``data``."""
    if not segments:
        return [(parts, data)]
    head, rest = segments[0], segments[1:]
    each = head.endswith("[]")
    name = head[:-2] if each else head
    if not isinstance(data, Mapping) or name not in data:
        return []
    value = data[name]
    if not each:
        return _occurrences(value, rest, (*parts, name))
    if not isinstance(value, list):
        return []
    found: list[tuple[tuple[Part, ...], Any]] = []
    for index, item in enumerate(value):
        found += _occurrences(item, rest, (*parts, name, index))
    return found


def unenforced(manifest: Mapping[str, Any], backend: str) -> list[Unenforced]:
    """Every key set in the merged ``manifest`` that ``backend`` does not enforce.

    ``backend`` is ``smolmachines``, ``docker`` or ``auto`` (either: a key counts when
    one of them does not enforce it). A key inside one already refused for the same
    backends (``runtime.ports[0].protocol`` when ``runtime.ports`` is) is not repeated.
    Raises ValueError for another backend name.
    """
    asked = backends_for(backend)
    found: list[Unenforced] = []
    for key in KEYS:
        missing = tuple(b for b in asked if not enforces(b, key))
        if not missing:
            continue
        for parts, value in _occurrences(manifest, key.split(".")):
            if not _key_is_set(key, value):
                continue
            covered = {
                b
                for earlier in found
                if parts[: len(earlier.parts)] == earlier.parts
                for b in earlier.backends
            }
            backends = tuple(b for b in missing if b not in covered)
            if not backends:
                continue
            route: int | None = None
            host: str | None = None
            if parts[:2] == ("egress", "routes") and len(parts) > 2 and isinstance(parts[2], int):
                route = parts[2]
                entry = manifest["egress"]["routes"][route]
                host = str(entry.get("host") or entry.get("cidr") or "?")
            found.append(Unenforced(key, parts, backends, value, route, host))
    return found


__all__ = [
    "AUTO",
    "BACKENDS",
    "CONSEQUENCE",
    "DOCKER",
    "ENFORCED",
    "KEYS",
    "PROXY_FIX",
    "SMOLMACHINES",
    "Unenforced",
    "backends_for",
    "enforces",
    "is_set",
    "json_path",
    "unenforced",
]
