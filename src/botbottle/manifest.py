"""Bottle manifests: load (YAML or Markdown front matter), resolve ``extends``,
merge, validate against ``schemas/bottle.schema.json`` and compile the policy.

Every problem with user input is reported as a :class:`Problem` naming the file,
the line where known, the JSON path, what was expected and the fix. Nothing here
raises for bad input except :class:`ManifestError`, which carries the problems.
"""

from __future__ import annotations

import dataclasses
import difflib
import errno
import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from ansible_collections.botbottle.bottle.plugins.module_utils._bottle_env import (
    entry_kind,
    host_variable,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._egress import PROXY_ENV_NAMES
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

NAME_RE = re.compile(r"[a-z][a-z0-9-]*")  # use fullmatch: "$" also matches before "\\n"
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
        return text.replace("\r", "\\r").replace("\n", "\\n")  # one line, always

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


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def json_path(parts: Iterable[str | int]) -> str:
    """``["egress", "routes", 0, "host"]`` -> ``$.egress.routes[0].host``."""
    text = "$"
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            text += "." + part
        else:
            text += f"[{json.dumps(part)}]"
    return text


def display_path(path: Path) -> str:
    """``path`` as messages show it: relative to the working directory when below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError, RuntimeError):  # RuntimeError: a symlink loop
        return str(path)


def _display_link(path: Path) -> str:
    """``path`` shown without following its last component (a symlink)."""
    return str(Path(display_path(path.parent)) / path.name)


def _not_a_file(path: Path) -> Problem | None:
    """The problem with a path that is neither a folder nor a regular file, if it exists."""
    shown = _display_link(path)
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
    return Problem(_display_link(path), "$", f"skipped: {why}", fix)


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
                    f"expected a mapping of keys, got {_json_type(data)}",
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
    article = "an" if wanted[:1] in ("a", "e", "i", "o", "u") else "a"
    return [
        (
            f.parts,
            f"expected {article} {wanted}, got {_json_type(f.instance)}",
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


def _parents(data: Mapping[str, Any]) -> list[str]:
    raw = data.get("extends")
    if raw is None:
        return []
    if isinstance(raw, str):
        return [raw]
    return [p for p in raw if isinstance(p, str)] if isinstance(raw, list) else []


MAX_EXTENDS_DEPTH = 256  # documents on one extends chain, the bottle itself included


def _real(path: Path) -> Path:
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


def _chain_text(names: Sequence[str], separator: str = " -> ") -> str:
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


class _Resolver:
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
        key = _real(path)
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
        return self._keys.get(id(doc)) or _real(doc.file)

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
                        + _chain_text(exc.chain),
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
                + ", ".join(_display_link(b) for b in broken),
                f"point {broken[0].name} at an existing manifest or remove it",
            )
        if not candidates:
            raise refuse(
                f"parent bottle {parent!r} not found (chain: {_chain_text([*names, parent])}; "
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
        target = _real(candidates[0])
        if target in self._open:
            on_cycle = list(self._open)
            cycle = [self._open[k].name for k in on_cycle[on_cycle.index(target) :]]
            message = f"extends cycle: {_chain_text([*cycle, parent])}"
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


def resolve(path: str | Path, resolver: _Resolver | None = None) -> Bottle:
    """Load, merge, validate and compile one bottle. Raises :class:`ManifestError`."""
    resolver = resolver or _Resolver()
    doc = resolver.load(Path(path))
    shown = display_path(doc.file)
    resolver.check(doc)
    chain = resolver.linearise(doc)
    merged = merge([d.data for d in chain])
    # A bottle without parents was checked as written just above.
    problems = schema_problems(merged, None, shown) if len(chain) > 1 else []
    if problems:
        parents = _chain_text([display_path(d.file) for d in chain[:-1]], ", ")
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
    resolver = _Resolver()
    names: dict[str, Path] = {}
    for file in files:
        try:
            bottle = resolve(file, resolver)
        except ManifestError as exc:
            report(exc.problems)
            continue
        if bottle.name in names and _real(names[bottle.name]) != _real(file):
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
