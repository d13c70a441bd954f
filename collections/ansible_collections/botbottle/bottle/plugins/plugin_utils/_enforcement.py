# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Refuse manifest keys a backend does not enforce, as :class:`Problem` lines.

Which backend enforces which key is decided in one place, the collection's
``module_utils/_enforced.py``; this turns its findings into problems that name the
file that sets the key (a parent's, when the key is inherited), its line, the route
(index and host) and the fix. Used by ``bottle validate``, ``bottle plan``, the
``bottle up`` preflight and the ``bottle_manifest`` lookup.

It also refuses, for smolmachines, a ``cidr`` route that overlaps smolvm's guest
gateway without being wide: smolvm relays the gateway to the host's loopback, so
such a route asks for the host (every machine denies the gateway anyway).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from ansible_collections.botbottle.bottle.plugins.module_utils._enforced import (
    AUTO,
    BACKENDS,
    SMOLMACHINES,
    Unenforced,
    backends_for,
    is_set,
    unenforced,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._policy import (
    SMOLVM_GATEWAY_NETWORKS,
    is_wide,
    normalize_cidr,
    smolvm_gateway_overlap,
)
from ansible_collections.botbottle.bottle.plugins.plugin_utils._manifest import Bottle
from ansible_collections.botbottle.bottle.plugins.plugin_utils._manifest_load import (
    Document,
    load_document,
)
from ansible_collections.botbottle.bottle.plugins.plugin_utils._problem import (
    ManifestError,
    Problem,
    display_path,
    json_path,
)

__all__ = ["AUTO", "BACKENDS", "backend_problems", "backends_for", "check_bottles"]


def _get(data: Any, parts: Sequence[str | int]) -> tuple[bool, Any]:
    for part in parts:
        if isinstance(part, int):
            if not isinstance(data, list) or part >= len(data):
                return False, None
        elif not isinstance(data, dict) or part not in data:
            return False, None
        data = data[part]
    return True, data


def _documents(bottle: Bottle) -> list[Document]:
    """The bottle's files as written, ancestors first (read again only to name them)."""
    try:
        return [load_document(path) for path in bottle.chain]
    except (ManifestError, OSError):
        return []  # changed since it was resolved: name the bottle's own file


def _origin(
    documents: Sequence[Document], item: Unenforced
) -> tuple[Document, tuple[str | int, ...], int | None] | None:
    """The document that sets ``item``, the key's parts there and the route's index there."""
    if item.route is not None:
        offset = 0
        for doc in documents:  # routes are concatenated along extends, ancestors first
            found, routes = _get(doc.data, ("egress", "routes"))
            if not found or not isinstance(routes, list):
                continue
            if item.route < offset + len(routes):
                local = item.route - offset
                return doc, ("egress", "routes", local, *item.parts[3:]), local
            offset += len(routes)
        return None
    for doc in reversed(documents):  # every other key: the last file that sets it wins
        found, value = _get(doc.data, item.parts)
        if found and is_set(value):
            return doc, item.parts, None
    return None


GATEWAY_FIX = (
    "remove the route, or list only networks outside {}; no bottle may reach its host "
    "(a wide route, with 'wide: true', is kept off the gateway by deny rules)".format(
        " and ".join(str(net) for net in SMOLVM_GATEWAY_NETWORKS)
    )
)


def gateway_routes(manifest: Any, backend: str) -> list[Unenforced]:
    """The ``cidr`` routes of ``manifest`` that overlap smolvm's guest gateway without
    being wide, when ``backend`` is (or, for ``auto``, may be) smolmachines."""
    if SMOLMACHINES not in backends_for(backend):
        return []
    found, routes = _get(manifest, ("egress", "routes"))
    if not found or not isinstance(routes, list):
        return []
    refused = []
    for index, route in enumerate(routes):
        if not isinstance(route, dict) or not isinstance(route.get("cidr"), str):
            continue
        try:
            cidr = normalize_cidr(route["cidr"])
        except ValueError:
            continue  # the compiler refuses it, naming why
        gateway = smolvm_gateway_overlap(cidr)
        if gateway is None or is_wide(cidr):
            continue
        parts: tuple[str | int, ...] = ("egress", "routes", index, "cidr")
        refused.append(
            Unenforced("egress.routes[].cidr", parts, (SMOLMACHINES,), gateway, index, cidr)
        )
    return refused


def _gateway_message(item: Unenforced, route: int | None = None) -> str:
    index = item.route if route is None else route
    return (
        f"route {index} (cidr {item.host}): 'cidr' overlaps {item.value}, the network of "
        "smolvm's guest gateway, which smolvm relays to the host's loopback: the "
        "smolmachines backend refuses it"
    )


def backend_problems(bottle: Bottle, backend: str, context: str = "") -> list[Problem]:
    """One problem per key of ``bottle`` that ``backend`` (or, for ``auto``, either
    backend) does not enforce, and per route that would reach the host through
    smolvm's gateway (:func:`gateway_routes`); ``context`` ends each message (the
    host, why)."""
    found = unenforced(bottle.manifest, backend)
    gateway = gateway_routes(bottle.manifest, backend)
    if not found and not gateway:
        return []
    documents = _documents(bottle)
    problems = []
    entries: list[tuple[Unenforced, Callable[..., str], str]] = [
        (item, item.message, item.fix) for item in found
    ]
    entries += [(item, partial(_gateway_message, item), GATEWAY_FIX) for item in gateway]
    for item, text, fix in entries:
        origin = _origin(documents, item)
        if origin is None:
            file, path, line, message = display_path(bottle.file), item.path, None, text()
        else:
            doc, parts, route = origin
            file, path, line = display_path(doc.file), json_path(parts), doc.line_of(parts)
            message = text(route)
        if context:
            message += f"; {context}"
        problems.append(Problem(file, path, message, fix, line))
    return sorted(problems, key=lambda p: (p.file, p.line or 0))


def check_bottles(
    bottles: Sequence[Bottle], backend: str, context: str = ""
) -> tuple[list[Bottle], list[Problem]]:
    """Split ``bottles`` into those every key of which ``backend`` enforces, and the
    problems of the others (a problem shared through a parent is reported once)."""
    ok: list[Bottle] = []
    problems: list[Problem] = []
    for bottle in bottles:
        found = backend_problems(bottle, backend, context)
        if found:
            problems += [p for p in found if p not in problems]
        else:
            ok.append(bottle)
    return ok, problems
