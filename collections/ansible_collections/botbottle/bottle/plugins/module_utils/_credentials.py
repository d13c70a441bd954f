# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A bottle's route credentials, taken from the controller's environment, failing closed.

**PRIVATE** to the botbottle.bottle collection and the ``botbottle`` package.

Each ``egress.routes[].auth`` names the controller's environment variable that holds
its credential (``token_ref``). :func:`route_credentials` returns ``token_ref`` ->
value for every route of a bottle, to be handed to the ``docker_bottle`` module's
``credentials`` (a ``no_log`` option: the module delivers them to the bottle's egress
proxy alone). A variable that is not set, or is empty, is an error naming the
variable, the bottle and the route, so that bottle is not brought up without it; no
message ever holds a value.

Standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class CredentialError(ValueError):
    """A route's credential cannot be found; the message names the variable, never a value."""


def token_refs(routes: Sequence[Any]) -> list[tuple[int, str, str]]:
    """``(index, host, token_ref)`` of every route with ``auth``, in route order.
    Raises :class:`CredentialError` for a route whose ``auth`` is malformed (the
    manifest's validation refuses those first; this is the module-side check)."""
    if not isinstance(routes, Sequence) or isinstance(routes, (str, bytes)):
        raise CredentialError("expected the bottle's egress.routes list")
    found: list[tuple[int, str, str]] = []
    for index, route in enumerate(routes):
        if not isinstance(route, Mapping) or route.get("auth") is None:
            continue
        host = str(route.get("host") or route.get("cidr") or "?")
        auth = route["auth"]
        ref = auth.get("token_ref") if isinstance(auth, Mapping) else None
        if not isinstance(ref, str) or not _ENV_NAME_RE.fullmatch(ref):
            raise CredentialError(
                f"route {index} (host {host}): auth.token_ref must name an environment variable"
            )
        found.append((index, host, ref))
    return found


def route_credentials(
    routes: Sequence[Any], environ: Mapping[str, str], bottle: str = ""
) -> dict[str, str]:
    """``token_ref`` -> value for every route of ``routes`` (a merged manifest's
    ``egress.routes``) that has ``auth``, read from ``environ`` (the controller's
    environment). Raises :class:`CredentialError` naming the first variable that is
    not set or is empty, with its bottle and route; the message holds no value."""
    where = f"bottle {bottle!r}: " if bottle else ""
    credentials: dict[str, str] = {}
    for index, host, ref in token_refs(routes):
        value = environ.get(ref)
        if not value:
            state = "is empty" if value is not None else "is not set"
            raise CredentialError(
                f"{where}route {index} (host {host}) takes its credential from the "
                f"controller's environment variable {ref}, which {state}; export {ref} "
                "before bringing the bottle up (the bottle is not brought up without it)"
            )
        credentials[ref] = value
    return credentials
