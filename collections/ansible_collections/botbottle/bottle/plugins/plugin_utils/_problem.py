# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A problem with a bottle manifest, and how files and JSON paths are shown in one.

Every problem with user input is reported as a :class:`Problem` naming the file, the
line where known, the JSON path, what was expected and the fix. Nothing in the
manifest code raises for bad input except :class:`ManifestError`, which carries the
problems. Controller-side: used by the ``bottle_manifest`` lookup and the CLI.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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


def display_link(path: Path) -> str:
    """``path`` shown without following its last component (a symlink)."""
    return str(Path(display_path(path.parent)) / path.name)


_JSON_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (list, "list"),
    (dict, "mapping"),
)


def json_type(value: object) -> str:
    """What a value is, in the words messages use (``mapping``, ``list``, ...)."""
    if value is None:
        return "null"
    for python_type, name in _JSON_TYPES:
        if isinstance(value, python_type):
            return name
    return type(value).__name__
