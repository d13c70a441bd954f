# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Resolve a bottle manifest's ``env`` entries into values, failing closed.

**PRIVATE** to the botbottle.bottle collection and the ``botbottle`` package.

Entry forms (as upstream bot-bottle): a literal; ``${HOST_VAR}`` -- copied from
the environment of the process bringing the bottle up; ``?`` or ``?prompt`` --
a secret answered at bring-up (here: from a mapping of answers, which callers
fill from a prompt or a vault). A missing host variable or answer is an error
that names the variable, never a silently empty value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# Exactly "${" NAME "}" (fullmatch: "$" would also match before a final newline).
_HOST_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class EnvError(ValueError):
    """An env entry cannot be resolved; the message names the variable and the fix."""


def host_variable(value: Any) -> str | None:
    """The host variable NAME of a ``${NAME}`` entry, else None."""
    match = _HOST_REF.fullmatch(str(value))
    return match.group(1) if match else None


def entry_kind(value: Any) -> str:
    """``literal``, ``host`` or ``prompt``."""
    text = str(value)
    if host_variable(text) is not None:
        return "host"
    if text.startswith("?"):
        return "prompt"
    return "literal"


def resolve_env(
    entries: Mapping[str, Any],
    environ: Mapping[str, str],
    answers: Mapping[str, str],
    bottle: str = "",
) -> dict[str, str]:
    """Return the agent's environment. Raises :class:`EnvError` (without any value)."""
    where = f"bottle {bottle!r}: " if bottle else ""
    resolved: dict[str, str] = {}
    for name in sorted(entries):
        text = str(entries[name])
        kind = entry_kind(text)
        if kind == "literal":
            resolved[name] = text
            continue
        if kind == "host":
            variable = host_variable(text)
            assert variable is not None
            if variable not in environ:
                raise EnvError(
                    f"{where}env {name} copies host variable {variable}, which is not set; "
                    f"export {variable} before bringing the bottle up"
                )
            resolved[name] = environ[variable]
            continue
        if name not in answers:
            prompt = text[1:] or name
            raise EnvError(
                f"{where}env {name} is a secret asked at bring-up ({prompt!r}) and no answer "
                f"was given; provide it in the secrets mapping under {name}"
            )
        resolved[name] = str(answers[name])
    return resolved


def secret_values(entries: Mapping[str, Any], resolved: Mapping[str, str]) -> list[str]:
    """The bottle's secret values -- those of its ``${VAR}`` and ``?prompt`` entries in
    the environment :func:`resolve_env` returned -- sorted and without duplicates: what
    the egress proxy's data-loss prevention looks for (``known_secrets``). Literals are
    not secrets (they are in the manifest for anyone to read)."""
    return sorted(
        {
            str(resolved[name])
            for name, value in entries.items()
            if entry_kind(value) != "literal" and name in resolved
        }
    )
