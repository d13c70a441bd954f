# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading bottle manifests: which files are manifests, and each file's YAML (or
Markdown front matter) with the line of every value, within limits that keep a
hostile file cheap to refuse.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from ansible_collections.botbottle.bottle.plugins.plugin_utils._problem import (
    ManifestError,
    Problem,
    display_link,
    display_path,
    json_path,
    json_type,
)

NAME_RE = re.compile(r"[a-z][a-z0-9-]*")  # use fullmatch: "$" also matches before "\\n"
MANIFEST_SUFFIXES = (".yml", ".yaml", ".md")


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


def _not_a_file(path: Path) -> Problem | None:
    """The problem with a path that is neither a folder nor a regular file, if it exists."""
    shown = display_link(path)
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return Problem(shown, "$", "symlink loop", "point the symlink at a manifest file")
        if path.is_symlink():
            target = os.readlink(path)
            return Problem(
                shown,
                "$",
                f"broken symlink (its target {target} does not exist)",
                "point the symlink at a manifest file or remove it",
            )
        if exc.errno == errno.ENOENT:
            return None
        return Problem(shown, "$", f"cannot read: {exc.strerror}", "check its permissions")
    return Problem(
        shown,
        "$",
        "not a regular file",
        "pass manifest files (.yml, .yaml, .md) or folders holding them",
    )


def _skipped(path: Path, why: str, fix: str) -> Problem:
    return Problem(display_link(path), "$", f"skipped: {why}", fix)


def _scan(folder: Path, found: list[Path], problems: list[Problem], skipped: list[Problem]) -> None:
    """Sort one folder's entries into manifests, problems and skipped entries."""
    try:
        children = sorted(folder.iterdir())
    except OSError as exc:
        problems.append(
            Problem(
                display_path(folder),
                "$",
                f"cannot list the folder: {exc.strerror}",
                "check its permissions",
            )
        )
        return
    for child in children:
        if child.suffix not in MANIFEST_SUFFIXES:
            if child.suffix.lower() in MANIFEST_SUFFIXES:
                skipped.append(
                    _skipped(
                        child,
                        f"the suffix {child.suffix} is not lower-case",
                        f"rename it {child.stem}{child.suffix.lower()}",
                    )
                )
        elif child.is_dir():
            skipped.append(
                _skipped(
                    child,
                    "a folder (folders are not searched recursively)",
                    "pass the folder itself to check what it holds",
                )
            )
        elif not child.is_file():
            problem = _not_a_file(child)
            if problem is not None:
                problems.append(problem)
        elif child.suffix == ".md" and not _has_front_matter(child):
            skipped.append(
                _skipped(
                    child,
                    "no YAML front matter, not a bottle",
                    "if it is a bottle, start it with a line '---', the manifest, a line '---'",
                )
            )
        else:
            found.append(child)


def discover(
    paths: Sequence[str | Path], warnings: list[Problem] | None = None
) -> tuple[list[Path], list[Problem]]:
    """Expand files and folders into manifest files (folders: not recursive).

    Every entry of a folder that looks like a manifest (.yml, .yaml, .md) is either
    returned or explained: broken symlinks, symlink loops and entries that are not
    regular files are problems; ``.md`` files without front matter (README.md and
    the like: documentation, not bottles), sub-folders and upper-case suffixes are
    skipped and appended to ``warnings`` when given.
    """
    found: list[Path] = []
    problems: list[Problem] = []
    skipped: list[Problem] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            _scan(path, found, problems, skipped)
        elif path.is_file():
            found.append(path)
        else:
            problems.append(
                _not_a_file(path)
                or Problem(
                    str(raw),
                    "$",
                    "no such file or folder",
                    "pass a manifest file (.yml, .yaml, .md) or a folder of them",
                )
            )
    if warnings is not None:
        warnings.extend(skipped)
    return found, problems


# --------------------------------------------------------------------------- loading

# Limits that keep a hostile manifest cheap to refuse: the file's size is checked
# before it is read, the rest while the YAML is composed (before any Python object
# is built), so a bomb never gets expanded.
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_YAML_DEPTH = 64
MAX_YAML_VALUES = 50_000  # nodes, counted as if every alias were written out

_YAML_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL, _SEQ, _MAP, _MERGE, _TIMESTAMP, _VALUE = (
    _YAML_TAG + name
    for name in ("str", "int", "float", "bool", "null", "seq", "map", "merge", "timestamp", "value")
)
_NODE_TAGS: dict[type[yaml.Node], frozenset[str]] = {
    yaml.ScalarNode: frozenset({_STR, _INT, _FLOAT, _BOOL, _NULL}),
    yaml.SequenceNode: frozenset({_SEQ}),
    yaml.MappingNode: frozenset({_MAP}),
}
_TAG_KINDS = {_INT: "a number", _FLOAT: "a number", _BOOL: "a boolean", _NULL: "null"}
_PLAIN_DATA = "a manifest holds only strings, numbers, booleans, null, lists and mappings"

_YamlPath = tuple[str | int, ...]


class _RefusedError(Exception):
    """Loading stops: the document is too deep, too big or holds a recursive alias."""

    def __init__(self, line: int, path: _YamlPath, message: str, fix: str) -> None:
        super().__init__(message)
        self.line = line
        self.path = path
        self.message = message
        self.fix = fix


def _tag_name(tag: str) -> str:
    return "!!" + tag[len(_YAML_TAG) :] if tag.startswith(_YAML_TAG) else tag


class _Composer(Composer, SafeConstructor, Resolver):
    """Composes one manifest with limits, then builds it from the composed node.

    Loading stops (:class:`_RefusedError`) at values nested deeper than
    ``MAX_YAML_DEPTH``, a document of more than ``MAX_YAML_VALUES`` values with
    every alias expanded, and an alias used inside the node it names. Collected as
    problems: keys that are not plain strings, merge keys (``<<``), tags other than
    str, int, float, bool, null, seq and map, numbers a tag cannot build, duplicate
    keys. Implicit YAML 1.1 timestamps (``2024-01-01``) stay strings.
    """

    if TYPE_CHECKING:  # provided by the parser class mixed in below

        def peek_event(self) -> Any: ...
        def dispose(self) -> None: ...

    def __init__(self, offset: int) -> None:
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.offset = offset
        self.problems: list[Problem] = []
        self.lines: dict[_YamlPath, int] = {}
        self._path: list[str | int] = []
        self._depth = 0
        self._values = 0  # values composed so far, aliases expanded
        self._measure: dict[int, tuple[int, int]] = {}  # id(node): (values expanded, height)

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        tag = super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
        return _STR if tag in (_TIMESTAMP, _VALUE) else tag

    def _line(self, mark: Any) -> int:
        return int(mark.line) + 1 + self.offset

    def _problem(self, line: int, path: _YamlPath, message: str, fix: str) -> None:
        self.problems.append(Problem("", json_path(path), message, fix, line))

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        is_key = isinstance(parent, yaml.MappingNode) and index is None
        part: str | int | None = None
        if isinstance(parent, yaml.SequenceNode):
            part = int(index)
        elif isinstance(parent, yaml.MappingNode) and index is not None:
            part = str(index.value) if isinstance(index, yaml.ScalarNode) else "?"
        if part is not None:
            self._path.append(part)
        path = tuple(self._path)
        line = self._line(event.start_mark)
        if not is_key:
            where = index.start_mark if isinstance(index, yaml.Node) else event.start_mark
            self.lines.setdefault(path, self._line(where))
        if isinstance(event, yaml.AliasEvent):
            node = self._alias(event, parent, index, path, line)
        else:
            node = self._new(parent, index, path, line, is_key)
        if is_key and node is not None:
            self._check_key(node, path)
        if part is not None:
            self._path.pop()
        return node

    def _alias(
        self, event: Any, parent: yaml.Node | None, index: Any, path: _YamlPath, line: int
    ) -> yaml.Node | None:
        target = self.anchors.get(event.anchor)
        if target is not None:
            measure = self._measure.get(id(target))
            if measure is None:
                raise _RefusedError(
                    line,
                    path,
                    f"alias *{event.anchor} is used inside the value it names (a recursive alias)",
                    "remove the alias, or point it at a value defined before it",
                )
            if self._depth + measure[1] > MAX_YAML_DEPTH:
                self._too_deep(line, path)
            self._count(measure[0], line, path)
        return super().compose_node(parent, index)

    def _count(self, values: int, line: int, path: _YamlPath) -> None:
        self._values += values
        if self._values > MAX_YAML_VALUES:
            raise _RefusedError(
                line,
                path,
                f"the document holds more than {MAX_YAML_VALUES:,} values "
                "(an alias counts as often as it is used)",
                "write the values out instead of nesting aliases, or split the manifest",
            )

    def _too_deep(self, line: int, path: _YamlPath) -> None:
        raise _RefusedError(
            line,
            path,
            f"values nested more than {MAX_YAML_DEPTH} levels deep (aliases included)",
            "flatten the structure: a manifest needs only a few levels",
        )

    def _new(
        self, parent: yaml.Node | None, index: Any, path: _YamlPath, line: int, is_key: bool
    ) -> yaml.Node | None:
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            self._too_deep(line, path)
        start = self._values
        self._count(1, line, path)
        node = super().compose_node(parent, index)
        self._depth -= 1
        if node is None:
            return None
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        height = max((self._measure[id(child)][1] for child in children), default=0)
        self._measure[id(node)] = (self._values - start, height + 1)
        if not is_key:
            self._check_tag(node, path, line)
        if isinstance(node, yaml.MappingNode):
            self._check_duplicates(node, path)
        return node

    def _check_tag(self, node: yaml.Node, path: _YamlPath, line: int) -> None:
        tag = node.tag
        if tag == _MERGE and isinstance(node, yaml.ScalarNode):
            node.tag = _STR  # '<<' as a value is text; as a key it is refused
        elif tag not in _NODE_TAGS[type(node)]:
            self._problem(line, path, f"the YAML tag {_tag_name(tag)} is not accepted", _PLAIN_DATA)
        elif tag in (_INT, _FLOAT, _BOOL):
            try:
                self.yaml_constructors[tag](self, node)
            except (ValueError, LookupError, ArithmeticError, yaml.YAMLError):
                shown = repr(node.value) if len(node.value) <= 40 else repr(node.value[:37]) + "..."
                self._problem(
                    line,
                    path,
                    f"{shown} is not a valid {_tag_name(tag)}",
                    "write a number of at most a few digits, true or false, or quote the value",
                )

    def _check_key(self, node: yaml.Node, path: _YamlPath) -> None:
        line = self._line(node.start_mark)
        if node.tag == _MERGE:
            self._problem(
                line,
                (*path, "<<"),
                "merge keys ('<<') are not accepted",
                "write the keys out; to share settings between bottles use 'extends'",
            )
        elif not isinstance(node, yaml.ScalarNode):
            kind = "list" if isinstance(node, yaml.SequenceNode) else "mapping"
            self._problem(line, path, f"a key is a {kind}, not a string", "use strings as keys")
        elif node.tag != _STR:
            kind = _TAG_KINDS.get(node.tag, _tag_name(node.tag))
            self._problem(
                line,
                (*path, str(node.value)),
                f"key {node.value!r} is read as {kind}, not a string",
                f"quote the key: {json.dumps(str(node.value))}",
            )

    def _check_duplicates(self, node: yaml.MappingNode, path: _YamlPath) -> None:
        seen: set[str] = set()
        for key_node, _value in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = str(key_node.value)
            if key in seen:
                self._problem(
                    self._line(key_node.start_mark),
                    (*path, key),
                    f"duplicate key {key!r}",
                    "keep one of the entries",
                )
            seen.add(key)


class _PyLoader(_Composer, Reader, Scanner, Parser):
    """The pure-Python YAML parser (PyYAML built without libyaml)."""

    def __init__(self, stream: bytes, offset: int) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        _Composer.__init__(self, offset)


_LOADER: Callable[[bytes, int], _Composer] = _PyLoader
try:
    from yaml._yaml import CParser

    class _CLoader(_Composer, CParser):
        """libyaml's parser (five times faster) with the composer above."""

        def __init__(self, stream: bytes, offset: int) -> None:
            CParser.__init__(self, stream)
            _Composer.__init__(self, offset)

    _LOADER = _CLoader
except ImportError:  # pragma: no cover - PyYAML without libyaml
    pass


def _parse_yaml(text: str, offset: int, shown: str) -> tuple[Any, dict[_YamlPath, int]]:
    """The data of one YAML document and the line of each value. Raises ManifestError."""
    loader = _LOADER(text.encode("utf-8"), offset)
    try:
        node = loader.get_single_node()
        if loader.problems:
            raise ManifestError([dataclasses.replace(p, file=shown) for p in loader.problems])
        data = loader.construct_document(node) if node is not None else None
    except _RefusedError as exc:
        raise ManifestError(
            [Problem(shown, json_path(exc.path), exc.message, exc.fix, exc.line)]
        ) from None
    except yaml.YAMLError as exc:
        line, reason = _yaml_error(exc, text, offset)
        raise ManifestError(
            [Problem(shown, "$", f"invalid YAML: {reason}", "fix the YAML syntax", line)]
        ) from None
    finally:
        loader.dispose()
    return data, loader.lines


def _yaml_error(exc: yaml.YAMLError, text: str, offset: int) -> tuple[int | None, str]:
    """The line and a one-line reason of a YAML syntax error."""
    if isinstance(exc, yaml.reader.ReaderError):
        where = text.encode("utf-8")[: exc.position].count(b"\n") + 1 + offset
        return where, f"unacceptable character #x{exc.character:04x}: {exc.reason}"
    if not isinstance(exc, yaml.MarkedYAMLError):
        return None, " ".join(str(exc).split())
    mark = exc.problem_mark
    line = mark.line + 1 + offset if mark is not None else None
    problem, context = exc.problem or "", exc.context or ""
    if context and problem.startswith("but "):
        reason = f"{context} {problem}"  # "expected a single document ... but found another"
    elif context:
        reason = f"{problem} ({context})"
    else:
        reason = problem or str(exc)
    return line, " ".join(reason.split())


def _has_front_matter(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8-sig") as handle:
            return handle.readline(64).rstrip() == "---"
    except (OSError, UnicodeDecodeError):
        return True  # let the loader report it


def _split_front_matter(text: str) -> tuple[str, int] | None:
    """The YAML of a Markdown manifest and the line it starts on, or None."""
    lines = text.splitlines()
    if not lines or lines[0].rstrip() != "---":
        return None
    for index in range(1, len(lines)):
        if lines[index].rstrip() in ("---", "..."):
            return "\n".join(lines[1:index]) + "\n", 1
    return None


def _read_text(path: Path, shown: str) -> str:
    """The file's text (BOM stripped) if it is a regular UTF-8 file within the size limit."""

    def refuse(message: str, fix: str) -> ManifestError:
        return ManifestError([Problem(shown, "$", message, fix)])

    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise refuse("not a regular file", "pass a manifest file (.yml, .yaml, .md)")
        size = info.st_size
        raw = b""
        if size <= MAX_MANIFEST_BYTES:
            with path.open("rb") as handle:
                raw = handle.read(MAX_MANIFEST_BYTES + 1)
            size = len(raw)
    except OSError as exc:
        raise refuse(
            f"cannot read the file: {exc.strerror or exc}", "check the path and its permissions"
        ) from None
    if size > MAX_MANIFEST_BYTES:
        raise refuse(
            f"the file is {size:,} bytes, more than the limit of {MAX_MANIFEST_BYTES:,} bytes "
            "(1 MiB) for a manifest",
            "split it or trim it; a bottle manifest is a few kilobytes",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise refuse(
            f"the file is not UTF-8 (byte {exc.start}: {exc.reason})", "save the file as UTF-8"
        ) from None
    return text.removeprefix("\ufeff")


def load_document(path: Path) -> Document:
    """Read one manifest file. Raises :class:`ManifestError`."""
    shown = display_path(path)
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
    if not NAME_RE.fullmatch(name):
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
    text = _read_text(path, shown)
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
    data, lines = _parse_yaml(text, offset, shown)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ManifestError(
            [
                Problem(
                    shown,
                    "$",
                    f"expected a mapping of keys, got {json_type(data)}",
                    "write the manifest as 'key: value' lines",
                )
            ]
        )
    return Document(name=name, file=path, data=data, lines=lines)


def _suggest_name(name: str) -> str:
    cleaned = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    cleaned = re.sub(r"^[^a-z]+", "", cleaned)
    return cleaned or "my-bottle"


# --------------------------------------------------------------------------- schema
