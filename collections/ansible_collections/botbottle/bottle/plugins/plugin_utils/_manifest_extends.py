# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``extends``: find each bottle's parents, linearise them (diamonds once, cycles and
over-long chains refused) and merge the documents, ancestors first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ansible_collections.botbottle.bottle.plugins.plugin_utils._manifest_load import (
    MANIFEST_SUFFIXES,
    Document,
    load_document,
)
from ansible_collections.botbottle.bottle.plugins.plugin_utils._manifest_schema import (
    schema_problems,
)
from ansible_collections.botbottle.bottle.plugins.plugin_utils._problem import (
    ManifestError,
    Problem,
    display_link,
    display_path,
    json_path,
)


def _parents(data: Mapping[str, Any]) -> list[str]:
    raw = data.get("extends")
    if raw is None:
        return []
    if isinstance(raw, str):
        return [raw]
    return [p for p in raw if isinstance(p, str)] if isinstance(raw, list) else []


MAX_EXTENDS_DEPTH = 256  # documents on one extends chain, the bottle itself included


def real_path(path: Path) -> Path:
    """The file behind ``path`` (symlinks resolved; never raises, even on a loop)."""
    return Path(os.path.realpath(path))


def _find_parent(directory: Path, name: str) -> tuple[list[Path], list[Path]]:
    """Files named ``name`` in ``directory``, and broken symlinks (or loops) so named."""
    found: list[Path] = []
    broken: list[Path] = []
    for suffix in MANIFEST_SUFFIXES:
        candidate = directory / (name + suffix)
        if candidate.is_file():
            found.append(candidate)
        elif candidate.is_symlink():
            broken.append(candidate)
    return found, broken


def chain_text(names: Sequence[str], separator: str = " -> ") -> str:
    """``a -> b -> c``, shortened in the middle for a long chain."""
    shown = list(names)
    if len(shown) > 8:
        shown = [*shown[:4], f"... ({len(names) - 6} more)", *shown[-2:]]
    return separator.join(shown)


@dataclass(frozen=True)
class _Lineage:
    """A document's linearised ancestors (``order``, itself last) and longest chain."""

    order: list[Document]
    chain: tuple[str, ...]  # names on the longest extends chain, this document first


class _TooDeepError(Exception):
    """An extends chain longer than ``MAX_EXTENDS_DEPTH``; ``chain`` lists it from the top."""

    def __init__(self, chain: tuple[str, ...], memo: bool) -> None:
        super().__init__(" -> ".join(chain))
        self.chain = chain
        self.memo = memo  # False: found by the recursion guard, a verdict on the top only


class ManifestResolver:
    """Loads, schema-checks and linearises each document once (keyed by its real path).

    Everything is memoised, failures included, so a chain of N documents costs O(N)
    and a diamond lattice is not walked once per path through it. One resolver is
    shared by every bottle of a :func:`resolve_all` call.
    """

    def __init__(self) -> None:
        self.documents: dict[Path, Document] = {}
        self._load_failures: dict[Path, list[Problem]] = {}
        self._checked: dict[Path, list[Problem]] = {}
        self._lineages: dict[Path, _Lineage | list[Problem] | tuple[str, ...]] = {}
        self._keys: dict[int, Path] = {}  # id(document): its real path
        self._open: dict[Path, Document] = {}  # being linearised, outermost first

    def load(self, path: Path) -> Document:
        key = real_path(path)
        if key in self._load_failures:
            raise ManifestError(self._load_failures[key])
        if key not in self.documents:
            try:
                doc = load_document(path)
            except ManifestError as exc:
                self._load_failures[key] = exc.problems
                raise
            self.documents[key] = doc
            self._keys[id(doc)] = key
        return self.documents[key]

    def key(self, doc: Document) -> Path:
        return self._keys.get(id(doc)) or real_path(doc.file)

    def check(self, doc: Document) -> None:
        """Schema-check one document as written (once). Raises :class:`ManifestError`."""
        key = self.key(doc)
        if key not in self._checked:
            self._checked[key] = schema_problems(doc.data, doc, display_path(doc.file))
        if self._checked[key]:
            raise ManifestError(self._checked[key])

    def linearise(self, doc: Document) -> list[Document]:
        """Ancestors first (parents folded left to right, diamonds once), ``doc`` last."""
        try:
            return self._lineage(doc).order
        except _TooDeepError as exc:
            where: list[str | int] = ["extends"]
            raise ManifestError(
                [
                    Problem(
                        display_path(doc.file),
                        json_path(where),
                        f"extends chain longer than {MAX_EXTENDS_DEPTH} bottles: "
                        + chain_text(exc.chain),
                        "flatten the chain: fold some parents into one file",
                        doc.line_of(where),
                    )
                ]
            ) from None

    def _lineage(self, doc: Document) -> _Lineage:
        key = self.key(doc)
        known = self._lineages.get(key)
        if isinstance(known, _Lineage):
            return known
        if isinstance(known, list):
            raise ManifestError(known)
        if isinstance(known, tuple):
            raise _TooDeepError(known, memo=True)
        if len(self._open) >= MAX_EXTENDS_DEPTH:
            raise _TooDeepError((doc.name,), memo=False)
        self._open[key] = doc
        try:
            lineage = self._fold(doc)
        except _TooDeepError as exc:
            chain = (doc.name, *exc.chain)[: MAX_EXTENDS_DEPTH + 1]
            if exc.memo:
                self._lineages[key] = chain
            raise _TooDeepError(chain, exc.memo) from None
        except ManifestError as exc:
            self._lineages[key] = exc.problems
            raise
        finally:
            del self._open[key]
        if len(lineage.chain) > MAX_EXTENDS_DEPTH:
            too_deep = lineage.chain[: MAX_EXTENDS_DEPTH + 1]
            self._lineages[key] = too_deep
            raise _TooDeepError(too_deep, memo=True)
        self._lineages[key] = lineage
        return lineage

    def _fold(self, doc: Document) -> _Lineage:
        order: list[Document] = []
        seen: set[Path] = set()
        longest: tuple[str, ...] = ()
        for index, parent in enumerate(_parents(doc.data)):
            where: list[str | int] = (
                ["extends", index] if isinstance(doc.data.get("extends"), list) else ["extends"]
            )
            parent_doc = self._parent(doc, parent, where)
            lineage = self._lineage(parent_doc)
            for ancestor in lineage.order:
                ancestor_key = self.key(ancestor)
                if ancestor_key not in seen:
                    seen.add(ancestor_key)
                    order.append(ancestor)
            if len(lineage.chain) > len(longest):
                longest = lineage.chain
        order.append(doc)
        return _Lineage(order, (doc.name, *longest))

    def _parent(self, doc: Document, parent: str, where: list[str | int]) -> Document:
        """The parent document ``parent`` of ``doc``, loaded and schema-checked."""
        shown = display_path(doc.file)
        names = [d.name for d in self._open.values()]

        def refuse(message: str, fix: str) -> ManifestError:
            return ManifestError(
                [Problem(shown, json_path(where), message, fix, doc.line_of(where))]
            )

        candidates, broken = _find_parent(doc.file.parent, parent)
        if broken and not candidates:
            raise refuse(
                f"parent bottle {parent!r} is a broken symlink or a symlink loop: "
                + ", ".join(display_link(b) for b in broken),
                f"point {broken[0].name} at an existing manifest or remove it",
            )
        if not candidates:
            raise refuse(
                f"parent bottle {parent!r} not found (chain: {chain_text([*names, parent])}; "
                f"looked for {parent}.yml, {parent}.yaml, {parent}.md in "
                f"{display_path(doc.file.parent)})",
                f"create {parent}.yml next to {doc.file.name} or fix the name",
            )
        if len(candidates) > 1:
            raise refuse(
                "parent bottle {!r} is ambiguous: {}".format(
                    parent, ", ".join(c.name for c in candidates)
                ),
                f"keep only one file named {parent}",
            )
        target = real_path(candidates[0])
        if target in self._open:
            on_cycle = list(self._open)
            cycle = [self._open[k].name for k in on_cycle[on_cycle.index(target) :]]
            message = f"extends cycle: {chain_text([*cycle, parent])}"
            if candidates[0].is_symlink():
                message += f" ({candidates[0].name} is a symlink to {display_path(target)})"
            raise refuse(message, f"remove 'extends: {parent}' or break the loop elsewhere")
        parent_doc = self.load(candidates[0])
        self.check(parent_doc)
        return parent_doc


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
                for replaced in ("log", "dlp"):
                    if replaced in value:
                        egress[replaced] = value[replaced]
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
