# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bottle manifests, resolved: load each file, resolve ``extends``, merge, validate
against the schema and compile the egress policy.

The one entry point the ``bottle_manifest`` lookup and the ``bottle`` CLI share;
the work is done by ``_manifest_load`` (files and YAML), ``_manifest_schema`` (the
schema and its error wording) and ``_manifest_extends`` (parents and merging).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ansible_collections.botbottle.bottle.plugins.module_utils._bottle import object_name
from ansible_collections.botbottle.bottle.plugins.module_utils._bottle_env import (
    entry_kind,
    host_variable,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._policy import (
    EgressPolicy,
    PolicyError,
    compile_policy,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._policy import (
    warnings as policy_warnings,
)
from ansible_collections.botbottle.bottle.plugins.plugin_utils._manifest_extends import (
    ManifestResolver,
    chain_text,
    merge,
    real_path,
)
from ansible_collections.botbottle.bottle.plugins.plugin_utils._manifest_load import discover
from ansible_collections.botbottle.bottle.plugins.plugin_utils._manifest_schema import (
    schema_problems,
)
from ansible_collections.botbottle.bottle.plugins.plugin_utils._problem import (
    ManifestError,
    Problem,
    display_path,
)


@dataclass
class Bottle:
    """A resolved bottle: merged manifest and compiled egress policy."""

    name: str
    file: Path
    chain: list[Path]
    manifest: dict[str, Any]
    policy: EgressPolicy


# --------------------------------------------------------------------------- paths


def resolve(path: str | Path, resolver: ManifestResolver | None = None) -> Bottle:
    """Load, merge, validate and compile one bottle. Raises :class:`ManifestError`."""
    resolver = resolver or ManifestResolver()
    doc = resolver.load(Path(path))
    shown = display_path(doc.file)
    resolver.check(doc)
    chain = resolver.linearise(doc)
    merged = merge([d.data for d in chain])
    # A bottle without parents was checked as written just above.
    problems = schema_problems(merged, None, shown) if len(chain) > 1 else []
    if problems:
        parents = chain_text([display_path(d.file) for d in chain[:-1]], ", ")
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


def resolve_all(
    paths: Sequence[str | Path], warnings: list[Problem] | None = None
) -> tuple[list[Bottle], list[Problem]]:
    """Resolve every manifest under ``paths``; collect problems instead of stopping.

    Files a folder holds but that are not bottles (a README.md) are skipped and, if
    ``warnings`` is given, appended to it. Parents shared by several bottles are
    loaded and checked once; a problem shared by several bottles is reported once.
    """
    files, found = discover(paths, warnings)
    problems: list[Problem] = []
    reported: set[Problem] = set()

    def report(new: Iterable[Problem]) -> None:
        for problem in new:
            if problem not in reported:
                reported.add(problem)
                problems.append(problem)

    report(found)
    bottles: list[Bottle] = []
    resolver = ManifestResolver()
    names: dict[str, Path] = {}
    for file in files:
        try:
            bottle = resolve(file, resolver)
        except ManifestError as exc:
            report(exc.problems)
            continue
        if bottle.name in names and real_path(names[bottle.name]) != real_path(file):
            report(
                [
                    Problem(
                        display_path(file),
                        "$",
                        f"bottle name {bottle.name!r} is also defined by "
                        f"{display_path(names[bottle.name])}",
                        "keep one file per bottle name",
                    )
                ]
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
            summary[name] = {"kind": kind, "variable": str(host_variable(text))}
        elif kind == "prompt":
            summary[name] = {"kind": kind, "prompt": text[1:] or name}
        else:
            summary[name] = {"kind": kind}
    return summary


def bottle_record(bottle: Bottle, state: str = "started") -> dict[str, Any]:
    """One resolved bottle as plays see it: what the ``bottle_manifest`` lookup returns
    and what the ``bottle`` CLI hands its playbooks (so they do not resolve it again).
    Plain data, no secret: ``env`` entries stay as written."""
    return {
        "name": bottle.name,
        "object": object_name(bottle.name),
        "file": str(bottle.file),
        "chain": [str(p) for p in bottle.chain],
        "manifest": dict(bottle.manifest),
        "env": env_summary(bottle.manifest),
        "policy": bottle.policy.to_dict(),
        "warnings": policy_warnings(bottle.policy),
        "state": state,
    }
