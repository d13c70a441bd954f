# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The bottle manifest JSON Schema (shipped in this collection) and the wording of
its errors: each jsonschema error becomes a :class:`Problem` with a message and a fix.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator

from ansible_collections.botbottle.bottle.plugins.module_utils._egress import PROXY_ENV_NAMES
from ansible_collections.botbottle.bottle.plugins.module_utils._policy import (
    normalize_cidr,
    normalize_name,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._runtime import (
    capability_refusal,
    mount_refusal,
)
from ansible_collections.botbottle.bottle.plugins.plugin_utils._manifest_load import Document
from ansible_collections.botbottle.bottle.plugins.plugin_utils._problem import (
    Problem,
    json_path,
    json_type,
)

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schemas" / "bottle.schema.json"
_REMOVED_KEYS = {
    "role": "'role' on a route is reserved and rejected, as upstream bot-bottle does; remove it",
    "git": "'git' was renamed 'git-gate' (with 'user' and 'repos'); rename the key",
    "supervise": "'supervise' was removed: supervision is always on; remove the key",
    "runtime_backend": "the backend is not a manifest key; choose it with --backend or the "
    "inventory's bottle_backend",
    "backend": "the backend is not a manifest key; choose it with --backend or the "
    "inventory's bottle_backend",
}
_SECRET_PREFIXES = ("$.env",)


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The bottle manifest JSON Schema."""
    with SCHEMA_FILE.open(encoding="utf-8") as handle:
        loaded: dict[str, Any] = json.load(handle)
    return loaded


def _format_checker() -> FormatChecker:
    checker = FormatChecker()

    @checker.checks("bottle-host", raises=ValueError)
    def _host(value: object) -> bool:
        if not isinstance(value, str):
            return True
        normalize_name(value[2:] if value.startswith("*.") else value)
        return True

    @checker.checks("bottle-cidr", raises=ValueError)
    def _cidr(value: object) -> bool:
        if not isinstance(value, str):
            return True
        normalize_cidr(value)
        return True

    @checker.checks("bottle-capability", raises=ValueError)
    def _capability(value: object) -> bool:
        refusal = capability_refusal(value) if isinstance(value, str) else None
        if refusal is not None:
            raise ValueError(refusal)
        return True

    @checker.checks("bottle-agent-env-name", raises=ValueError)
    def _agent_env_name(value: object) -> bool:
        if value in PROXY_ENV_NAMES:
            raise ValueError(
                f"{value} is set by bot-bottle itself: it sends the agent through its egress "
                "proxy and makes it trust the bottle's CA"
            )
        return True

    @checker.checks("bottle-mount-source", raises=ValueError)
    def _mount_source(value: object) -> bool:
        # Judged by its path here; the backend judges it again on the host, with
        # symlinks resolved and the file's type known.
        refusal = mount_refusal(value) if isinstance(value, str) else None
        if refusal is not None:
            raise ValueError(refusal)
        return True

    return checker


@lru_cache(maxsize=256)
def _ecma_regex(pattern: str) -> re.Pattern[str]:
    """A schema ``pattern`` (ECMA-262) as a Python regex that means the same.

    In ECMA-262 ``$`` (no multiline flag) matches only at the very end; in Python it
    also matches before a final newline, so ``^[a-z]+$`` would accept ``"a\\n"``.
    Every unescaped ``$`` outside a character class becomes ``\\Z``.
    """
    out: list[str] = []
    in_class = False
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            out.append(pattern[index : index + 2])
            index += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "$":
            char = r"\Z"
        out.append(char)
        index += 1
    return re.compile("".join(out))


def _ecma_pattern(
    validator: Any, pattern: str, instance: Any, _schema: Any
) -> Iterator[ValidationError]:
    """The ``pattern`` keyword, with ECMA-262 anchors (jsonschema uses ``re.search``)."""
    if validator.is_type(instance, "string") and not _ecma_regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


@lru_cache(maxsize=1)
def _validator() -> Validator:
    Draft202012Validator.check_schema(schema())
    ecma = validators.extend(Draft202012Validator, {"pattern": _ecma_pattern})  # type: ignore[no-untyped-call]
    checker: Validator = ecma(schema(), format_checker=_format_checker())
    return checker


def _is_secret(path: str) -> bool:
    return any(
        path == p or path.startswith(p + ".") or path.startswith(p + "[") for p in _SECRET_PREFIXES
    )


def _shown_value(path: str, value: object) -> str:
    if _is_secret(path):
        return "the value"
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _allowed_keys(sub: Mapping[str, Any]) -> list[str]:
    return sorted(sub.get("properties", {}))


_Triple = tuple[list[str | int], str, str]


@dataclass(frozen=True)
class _Failure:
    """One jsonschema error, unpacked for the describers below."""

    parts: list[str | int]
    path: str
    sub: Mapping[str, Any]
    fix: str
    instance: Any
    error: ValidationError


def _unknown_keys(f: _Failure) -> list[_Triple]:
    if not isinstance(f.instance, Mapping):
        return []
    allowed = _allowed_keys(f.sub)
    found: list[_Triple] = []
    for key in sorted(k for k in f.instance if k not in allowed):
        if key in _REMOVED_KEYS:
            found.append(([*f.parts, key], f"key {key!r} is not accepted", _REMOVED_KEYS[key]))
            continue
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        listing = ", ".join(allowed) or "none"
        found.append(
            ([*f.parts, key], f"unknown key {key!r}", f"{hint}allowed keys here: {listing}")
        )
    return found


def _missing_keys(f: _Failure) -> list[_Triple]:
    if not isinstance(f.instance, Mapping):
        return []
    return [
        (f.parts, f"missing required key {key!r}", f.fix or f"add {key!r}")
        for key in f.sub.get("required", [])
        if key not in f.instance
    ]


def _wrong_type(f: _Failure) -> list[_Triple]:
    expected = f.sub.get("type")
    names = {"object": "mapping", "array": "list"}
    types = expected if isinstance(expected, list) else [expected]
    wanted = " or ".join(names.get(str(t), str(t)) for t in types)
    article = "an" if wanted[:1] in ("a", "e", "i", "o", "u") else "a"
    return [
        (
            f.parts,
            f"expected {article} {wanted}, got {json_type(f.instance)}",
            f.fix or f"write {article} {wanted} here (quote a value meant as text)",
        )
    ]


def _bad_format(f: _Failure) -> list[_Triple]:
    cause = f.error.cause
    return [(f.parts, str(cause) if cause is not None else "invalid value", f.fix)]


def _bad_pattern(f: _Failure) -> list[_Triple]:
    fix = f.fix or "match the pattern {}".format(f.sub.get("pattern"))
    return [(f.parts, f"{_shown_value(f.path, f.instance)} is not valid here", fix)]


def _not_one_of(f: _Failure) -> list[_Triple]:
    options = ", ".join(json.dumps(o) for o in f.sub.get("enum", [f.sub.get("const")]))
    shown = _shown_value(f.path, f.instance)
    return [(f.parts, f"{shown} is not one of {options}", f.fix or "use one of the listed values")]


def _no_form(f: _Failure) -> list[_Triple]:
    if "x-message" in f.sub:
        return [(f.parts, str(f.sub["x-message"]), f.fix)]
    shown = _shown_value(f.path, f.instance)
    if f.fix:
        return [(f.parts, f"{shown} is not valid here", f.fix)]
    return [(f.parts, f"{shown} matches none of the allowed forms", f.fix)]


_DESCRIBERS = {
    "additionalProperties": _unknown_keys,
    "required": _missing_keys,
    "type": _wrong_type,
    "format": _bad_format,
    "pattern": _bad_pattern,
    "enum": _not_one_of,
    "const": _not_one_of,
    "oneOf": _no_form,
    "anyOf": _no_form,
}


def _describe(error: ValidationError) -> list[_Triple]:
    """Turn one jsonschema error into (path parts, message, fix) triples."""
    parts: list[str | int] = list(error.absolute_path)
    sub = error.schema if isinstance(error.schema, Mapping) else {}
    failure = _Failure(
        parts, json_path(parts), sub, str(sub.get("x-fix", "")), error.instance, error
    )
    if "propertyNames" in error.relative_schema_path and isinstance(error.instance, str):
        name = error.instance
        return [([*parts, name], f"key {name!r} is not a valid name here", failure.fix)]
    describer = _DESCRIBERS.get(str(error.validator))
    if describer is not None:
        triples = describer(failure)
    else:
        message = error.message
        if _is_secret(failure.path):
            message = f"the value is not valid ({error.validator})"
        triples = [(parts, message, failure.fix)]
    return [
        (where, message, fix or f"see docs/manifest.md for what {json_path(where)} accepts")
        for where, message, fix in triples
    ]


def schema_problems(data: Mapping[str, Any], doc: Document | None, shown: str) -> list[Problem]:
    """Every schema violation of ``data``, as problems located in ``doc`` if given."""
    problems: list[Problem] = []
    reported: set[str] = set()
    unknown_parents: set[str] = set()
    errors = sorted(
        _validator().iter_errors(data),
        key=lambda e: (_PRIORITY.get(str(e.validator), 9), [str(p) for p in e.absolute_path]),
    )
    for error in errors:
        kind = str(error.validator)
        for parts, message, fix in _describe(error):
            path = json_path(parts)
            if kind == "additionalProperties":
                unknown_parents.add(json_path(error.absolute_path))
            elif path in reported:
                continue  # one problem per value: the most precise one came first
            elif kind in ("oneOf", "anyOf", "required") and path in unknown_parents:
                continue  # a misspelt key explains it
            reported.add(path)
            line = doc.line_of(parts) if doc is not None else None
            problems.append(Problem(shown, path, message, fix, line))
    problems.sort(key=lambda p: (p.line or 0, p.path))
    return problems


# Which jsonschema error explains a value best, most precise first.
_PRIORITY = {
    "additionalProperties": 0,
    "format": 1,
    "type": 2,
    "required": 3,
    "enum": 4,
    "const": 4,
    "pattern": 5,
}


# --------------------------------------------------------------------------- extends + merge
