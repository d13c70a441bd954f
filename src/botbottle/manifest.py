"""Bottle manifests: load (YAML or Markdown front matter), resolve ``extends``,
merge, validate against ``schemas/bottle.schema.json`` and compile the policy.

Every problem with user input is reported as a :class:`Problem` naming the file,
the line where known, the JSON path, what was expected and the fix. Nothing here
raises for bad input except :class:`ManifestError`, which carries the problems.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from ansible_collections.botbottle.bottle.plugins.module_utils._bottle_env import entry_kind
from ansible_collections.botbottle.bottle.plugins.module_utils._runtime import (
    capability_refusal,
    mount_refusal,
)
from botbottle._paths import SCHEMA_FILE
from botbottle.policy import (
    EgressPolicy,
    PolicyError,
    compile_policy,
    normalize_cidr,
    normalize_name,
)

NAME_RE = re.compile(r"^[a-z][a-z0-9-]*$")
MANIFEST_SUFFIXES = (".yml", ".yaml", ".md")
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


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest."""

    file: str
    path: str
    message: str
    fix: str = ""
    line: int | None = None

    def format(self) -> str:
        """One line: ``file:line: $.path: message; fix: ...``."""
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        text = f"{where}: {self.path}: {self.message}"
        if self.fix:
            text += f" (fix: {self.fix})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "path": self.path,
            "message": self.message,
            "fix": self.fix,
        }


class ManifestError(Exception):
    """Raised with every :class:`Problem` found; never for a bug."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("\n".join(p.format() for p in problems))
        self.problems = list(problems)


@dataclass
class Document:
    """One manifest file as written."""

    name: str
    file: Path
    data: dict[str, Any]
    lines: dict[tuple[str | int, ...], int] = field(default_factory=dict)

    def line_of(self, path: Sequence[str | int]) -> int | None:
        """The line of the deepest known node on ``path``."""
        parts = tuple(path)
        while parts:
            if parts in self.lines:
                return self.lines[parts]
            parts = parts[:-1]
        return self.lines.get((), None)


@dataclass
class Bottle:
    """A resolved bottle: merged manifest and compiled egress policy."""

    name: str
    file: Path
    chain: list[Path]
    manifest: dict[str, Any]
    policy: EgressPolicy


# --------------------------------------------------------------------------- paths


def json_path(parts: Iterable[str | int]) -> str:
    """``["egress", "routes", 0, "host"]`` -> ``$.egress.routes[0].host``."""
    text = "$"
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif re.match(r"^[A-Za-z_][A-Za-z0-9_-]*$", part):
            text += "." + part
        else:
            text += f"[{json.dumps(part)}]"
    return text


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def discover(paths: Sequence[str | Path]) -> tuple[list[Path], list[Problem]]:
    """Expand files and folders into manifest files (folders: not recursive).

    In a folder, ``.md`` files without front matter (README.md and the like)
    are documentation, not bottles, and are skipped.
    """
    found: list[Path] = []
    problems: list[Problem] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(path.iterdir()):
                if child.suffix not in MANIFEST_SUFFIXES or not child.is_file():
                    continue
                if child.suffix == ".md" and not _has_front_matter(child):
                    continue
                found.append(child)
        elif path.is_file():
            found.append(path)
        else:
            problems.append(
                Problem(
                    str(raw),
                    "$",
                    "no such file or folder",
                    "pass a manifest file (.yml, .yaml, .md) or a folder of them",
                )
            )
    return found, problems


def _has_front_matter(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as handle:
            return handle.readline().rstrip("\r\n") == "---"
    except (OSError, UnicodeDecodeError):
        return True  # let the loader report it


# --------------------------------------------------------------------------- loading


def _split_front_matter(text: str) -> tuple[str, int] | None:
    """The YAML of a Markdown manifest and the line it starts on, or None."""
    lines = text.splitlines()
    if not lines or lines[0].rstrip() != "---":
        return None
    for index in range(1, len(lines)):
        if lines[index].rstrip() in ("---", "..."):
            return "\n".join(lines[1:index]) + "\n", 1
    return None


def _line_map(
    node: yaml.Node, offset: int
) -> tuple[dict[tuple[str | int, ...], int], list[Problem]]:
    lines: dict[tuple[str | int, ...], int] = {}
    duplicates: list[Problem] = []

    def walk(current: yaml.Node, path: tuple[str | int, ...]) -> None:
        lines.setdefault(path, current.start_mark.line + 1 + offset)
        if isinstance(current, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in current.value:
                key = str(key_node.value)
                if key in seen:
                    duplicates.append(
                        Problem(
                            "",
                            json_path((*path, key)),
                            f"duplicate key {key!r}",
                            "keep one of the entries",
                            key_node.start_mark.line + 1 + offset,
                        )
                    )
                seen.add(key)
                lines[(*path, key)] = key_node.start_mark.line + 1 + offset
                walk(value_node, (*path, key))
        elif isinstance(current, yaml.SequenceNode):
            for index, item in enumerate(current.value):
                walk(item, (*path, index))

    walk(node, ())
    return lines, duplicates


def load_document(path: Path) -> Document:
    """Read one manifest file. Raises :class:`ManifestError`."""
    shown = _display(path)
    name = path.stem
    if path.suffix not in MANIFEST_SUFFIXES:
        raise ManifestError(
            [
                Problem(
                    shown,
                    "$",
                    "not a manifest file",
                    "name it <bottle>.yml, <bottle>.yaml or <bottle>.md",
                )
            ]
        )
    if not NAME_RE.match(name):
        raise ManifestError(
            [
                Problem(
                    shown,
                    "$",
                    f"file name {name!r} is not a valid bottle name",
                    "rename the file so its name matches ^[a-z][a-z0-9-]*$, "
                    f"e.g. {_suggest_name(name)}{path.suffix}",
                )
            ]
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(
            [
                Problem(
                    shown,
                    "$",
                    f"cannot read the file: {exc}",
                    "check the path and that the file is UTF-8",
                )
            ]
        ) from None
    offset = 0
    if path.suffix == ".md":
        split = _split_front_matter(text)
        if split is None:
            raise ManifestError(
                [
                    Problem(
                        shown,
                        "$",
                        "no YAML front matter",
                        "start the file with a line '---', the manifest, then a line '---'",
                    )
                ]
            )
        text, offset = split
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 + offset if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc)
        raise ManifestError(
            [Problem(shown, "$", f"invalid YAML: {reason}", "fix the YAML syntax", line)]
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ManifestError(
            [
                Problem(
                    shown,
                    "$",
                    f"expected a mapping of keys, got {_json_type(data)}",
                    "write the manifest as 'key: value' lines",
                )
            ]
        )
    lines: dict[tuple[str | int, ...], int] = {}
    if node is not None:
        lines, duplicates = _line_map(node, offset)
        if duplicates:
            raise ManifestError(
                [Problem(shown, d.path, d.message, d.fix, d.line) for d in duplicates]
            )
    return Document(name=name, file=path, data=data, lines=lines)


def _suggest_name(name: str) -> str:
    cleaned = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    cleaned = re.sub(r"^[^a-z]+", "", cleaned)
    return cleaned or "my-bottle"


# --------------------------------------------------------------------------- schema


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

    @checker.checks("bottle-mount-source", raises=ValueError)
    def _mount_source(value: object) -> bool:
        # Judged by its path here; the backend judges it again on the host, with
        # symlinks resolved and the file's type known.
        refusal = mount_refusal(value) if isinstance(value, str) else None
        if refusal is not None:
            raise ValueError(refusal)
        return True

    return checker


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    Draft202012Validator.check_schema(schema())
    return Draft202012Validator(schema(), format_checker=_format_checker())


_JSON_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (list, "list"),
    (dict, "mapping"),
)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    for python_type, name in _JSON_TYPES:
        if isinstance(value, python_type):
            return name
    return type(value).__name__


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
    return [(f.parts, f"expected a {wanted}, got {_json_type(f.instance)}", f.fix)]


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
        return describer(failure)
    message = error.message
    if _is_secret(failure.path):
        message = f"the value is not valid ({error.validator})"
    return [(parts, message, failure.fix)]


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


def _parents(data: Mapping[str, Any]) -> list[str]:
    raw = data.get("extends")
    if raw is None:
        return []
    if isinstance(raw, str):
        return [raw]
    return [p for p in raw if isinstance(p, str)] if isinstance(raw, list) else []


def _find_parent(directory: Path, name: str) -> list[Path]:
    return [
        directory / (name + suffix)
        for suffix in MANIFEST_SUFFIXES
        if (directory / (name + suffix)).is_file()
    ]


class _Resolver:
    """Loads documents once and linearises ``extends`` chains."""

    def __init__(self) -> None:
        self.documents: dict[Path, Document] = {}

    def load(self, path: Path) -> Document:
        key = path.resolve()
        if key not in self.documents:
            self.documents[key] = load_document(path)
        return self.documents[key]

    def linearise(self, doc: Document, stack: tuple[str, ...] = ()) -> list[Document]:
        """Ancestors first (parents folded left to right, diamonds once), ``doc`` last."""
        chain = (*stack, doc.name)
        order: list[Document] = []
        for index, parent in enumerate(_parents(doc.data)):
            where: list[str | int] = (
                ["extends", index] if isinstance(doc.data.get("extends"), list) else ["extends"]
            )
            shown = _display(doc.file)
            if parent in chain:
                cycle = " -> ".join((*chain[chain.index(parent) :], parent))
                raise ManifestError(
                    [
                        Problem(
                            shown,
                            json_path(where),
                            f"extends cycle: {cycle}",
                            f"remove 'extends: {parent}' or break the loop elsewhere",
                            doc.line_of(where),
                        )
                    ]
                )
            candidates = _find_parent(doc.file.parent, parent)
            if not candidates:
                raise ManifestError(
                    [
                        Problem(
                            shown,
                            json_path(where),
                            "parent bottle {!r} not found (chain: {}; looked for {}.yml, "
                            "{}.yaml, {}.md in {})".format(
                                parent,
                                " -> ".join((*chain, parent)),
                                parent,
                                parent,
                                parent,
                                _display(doc.file.parent),
                            ),
                            f"create {parent}.yml next to {doc.file.name} or fix the name",
                            doc.line_of(where),
                        )
                    ]
                )
            if len(candidates) > 1:
                raise ManifestError(
                    [
                        Problem(
                            shown,
                            json_path(where),
                            "parent bottle {!r} is ambiguous: {}".format(
                                parent, ", ".join(c.name for c in candidates)
                            ),
                            f"keep only one file named {parent}",
                            doc.line_of(where),
                        )
                    ]
                )
            parent_doc = self.load(candidates[0])
            problems = schema_problems(parent_doc.data, parent_doc, _display(parent_doc.file))
            if problems:
                raise ManifestError(problems)
            for ancestor in self.linearise(parent_doc, chain):
                if all(ancestor.file.resolve() != o.file.resolve() for o in order):
                    order.append(ancestor)
        order.append(doc)
        return order


def merge(documents: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Fold manifests (ancestors first, child last) into one, per the ``extends`` rules."""
    merged: dict[str, Any] = {}
    routes: list[Any] = []
    saw_routes = False
    for data in documents:
        for key, value in data.items():
            if key == "extends":
                continue
            if key in ("env", "runtime") and isinstance(value, Mapping):
                base = dict(merged.get(key) or {})
                base.update(value)
                merged[key] = base
            elif key == "git-gate" and isinstance(value, Mapping):
                merged[key] = _merge_git_gate(merged.get(key) or {}, value)
            elif key == "egress" and isinstance(value, Mapping):
                egress = dict(merged.get("egress") or {})
                if "routes" in value:
                    saw_routes = True
                    routes.extend(value.get("routes") or [])
                if "log" in value:
                    egress["log"] = value["log"]
                merged["egress"] = egress
            else:
                merged[key] = value
    if saw_routes:
        merged.setdefault("egress", {})["routes"] = routes
    return merged


def _merge_git_gate(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(base)
    if isinstance(over.get("user"), Mapping):
        user = dict(result.get("user") or {})
        user.update(over["user"])
        result["user"] = user
    if "repos" in over:
        repos_over = over.get("repos") or {}
        if not repos_over:
            result["repos"] = {}  # an explicit {} clears inherited repositories
        else:
            repos = {k: dict(v) for k, v in (result.get("repos") or {}).items()}
            for name, entry in repos_over.items():
                repos[name] = {**repos.get(name, {}), **(entry or {})}
            result["repos"] = repos
    return result


# --------------------------------------------------------------------------- public


def resolve(path: str | Path, resolver: _Resolver | None = None) -> Bottle:
    """Load, merge, validate and compile one bottle. Raises :class:`ManifestError`."""
    resolver = resolver or _Resolver()
    doc = resolver.load(Path(path))
    shown = _display(doc.file)
    problems = schema_problems(doc.data, doc, shown)
    if problems:
        raise ManifestError(problems)
    chain = resolver.linearise(doc)
    merged = merge([d.data for d in chain])
    problems = schema_problems(merged, None, shown)
    if problems:
        parents = ", ".join(_display(d.file) for d in chain[:-1])
        raise ManifestError(
            [
                Problem(
                    p.file, p.path, f"{p.message} (in the manifest merged from {parents})", p.fix
                )
                for p in problems
            ]
        )
    try:
        policy = compile_policy(merged)
    except PolicyError as exc:
        raise ManifestError(
            [Problem(shown, exc.path, exc.message, "fix the route in this file or its parents")]
        ) from None
    return Bottle(
        name=doc.name, file=doc.file, chain=[d.file for d in chain], manifest=merged, policy=policy
    )


def resolve_all(paths: Sequence[str | Path]) -> tuple[list[Bottle], list[Problem]]:
    """Resolve every manifest under ``paths``; collect problems instead of stopping."""
    files, problems = discover(paths)
    bottles: list[Bottle] = []
    resolver = _Resolver()
    names: dict[str, Path] = {}
    for file in files:
        try:
            bottle = resolve(file, resolver)
        except ManifestError as exc:
            problems.extend(exc.problems)
            continue
        if bottle.name in names and names[bottle.name].resolve() != file.resolve():
            problems.append(
                Problem(
                    _display(file),
                    "$",
                    f"bottle name {bottle.name!r} is also defined by "
                    f"{_display(names[bottle.name])}",
                    "keep one file per bottle name",
                )
            )
            continue
        names[bottle.name] = file
        bottles.append(bottle)
    if not files and not problems:
        problems.append(
            Problem(
                ", ".join(str(p) for p in paths),
                "$",
                "no manifests found",
                "pass .yml, .yaml or .md manifest files or folders holding them",
            )
        )
    return bottles, problems


def env_summary(manifest: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """What each env entry is, without any value: literal, host variable or prompt."""
    summary: dict[str, dict[str, str]] = {}
    for name, value in sorted((manifest.get("env") or {}).items()):
        text = str(value)
        kind = entry_kind(text)
        if kind == "host":
            summary[name] = {"kind": kind, "variable": text[2:-1]}
        elif kind == "prompt":
            summary[name] = {"kind": kind, "prompt": text[1:] or name}
        else:
            summary[name] = {"kind": kind}
    return summary


__all__ = [
    "Bottle",
    "Document",
    "ManifestError",
    "Problem",
    "discover",
    "env_summary",
    "json_path",
    "load_document",
    "merge",
    "resolve",
    "resolve_all",
    "schema",
    "schema_problems",
]
