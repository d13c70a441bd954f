"""Hostile manifests, the loader's side (plugin_utils/_manifest*.py): schema patterns
anchor at the very end, a parent is loaded and checked once however many paths lead to
it, the extends depth limit names the chain, and discovery names every entry it skips.
The corpus of hostile files and the property tests run through the ``bottle`` command
(tests/unit/test_cli_hostile_manifests.py in the repository).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ansible_collections.botbottle.bottle.plugins.module_utils._bottle_env import (
    entry_kind,
    host_variable,
)
from ansible_collections.botbottle.bottle.plugins.plugin_utils import (
    _manifest,
    _manifest_extends,
    _manifest_load,
    _manifest_schema,
)
from ansible_collections.botbottle.bottle.plugins.plugin_utils._problem import Problem
from ansible_collections.botbottle.bottle.tests.unit.plugins.plugin_utils.manifest_files import (
    chain,
    diamond,
)

# --------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("pattern", "python"),
    [
        ("^[a-z]+$", r"^[a-z]+\Z"),
        (r"^\$\{[A-Z]+\}$", r"^\$\{[A-Z]+\}\Z"),
        ("^[$]x$", r"^[$]x\Z"),
        (r"^[^\]$]+$", r"^[^\]$]+\Z"),
        ("^/", "^/"),
    ],
)
def test_schema_patterns_anchor_at_the_very_end(pattern: str, python: str) -> None:
    assert _manifest_schema._ecma_regex(pattern).pattern == python


def test_host_variable_is_exactly_dollar_brace_name_brace() -> None:
    assert host_variable("${VAR}") == "VAR"
    for value in ("${VAR}\n", "${VAR}x", "x${VAR}", "${VAR", "${1A}", "${}"):
        assert host_variable(value) is None
        assert entry_kind(value) == "literal"


def test_each_parent_is_loaded_and_checked_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    top = tmp_path / diamond(12)(tmp_path)
    for index in range(5):
        (tmp_path / f"leaf{index}.yml").write_text("extends: [l11a, l11b]\n")
    loads: list[Path] = []
    checks: list[int] = []
    real_load, real_check = _manifest_extends.load_document, _manifest_extends.schema_problems

    def load(path: Path) -> _manifest_load.Document:
        loads.append(path)
        return real_load(path)

    def check(*args: Any) -> list[Problem]:
        checks.append(1)
        return real_check(*args)

    monkeypatch.setattr(_manifest_extends, "load_document", load)
    monkeypatch.setattr(_manifest_extends, "schema_problems", check)  # each file as written
    monkeypatch.setattr(_manifest, "schema_problems", check)  # each merged bottle
    bottles, problems = _manifest.resolve_all([tmp_path])
    assert problems == []
    files = sorted(tmp_path.glob("*.yml"))
    assert len(bottles) == len(files)
    assert sorted(loads) == files  # each file once, whatever the number of paths to it
    assert len(checks) == len(files) + len(files) - 2  # as written; merged (if it has parents)
    assert len({b.name for b in bottles}) == len(files)
    assert _manifest.resolve(top).chain[-1] == top


def test_extends_depth_limit_names_the_chain(tmp_path: Path) -> None:
    limit = _manifest_extends.MAX_EXTENDS_DEPTH
    fits = tmp_path / chain(limit)(tmp_path)
    assert len(_manifest.resolve(fits).chain) == limit
    (tmp_path / f"c{limit}.yml").write_text(f"extends: c{limit - 1}\n")
    with pytest.raises(_manifest.ManifestError) as info:
        _manifest.resolve(tmp_path / f"c{limit}.yml")
    [problem] = info.value.problems
    assert problem.file.endswith(f"c{limit}.yml") and problem.path == "$.extends"
    assert f"longer than {limit} bottles: c{limit} -> c{limit - 1}" in problem.message
    # the same verdict through a folder, where the parents were resolved first
    _, problems = _manifest.resolve_all([tmp_path])
    assert [p.file.rsplit("/", 1)[-1] for p in problems] == [f"c{limit}.yml"]


def test_discover_names_every_skipped_entry(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# docs\n")
    (tmp_path / "bom.md").write_bytes("\ufeff---\ndescription: x\n---\n".encode())
    (tmp_path / "Upper.YML").write_text("{}\n")
    (tmp_path / "sub.yml").mkdir()
    (tmp_path / "notes.txt").write_text("not a manifest suffix: ignored\n")
    warnings: list[Problem] = []
    files, problems = _manifest_load.discover([tmp_path], warnings)
    assert [f.name for f in files] == ["bom.md"]
    assert problems == []
    assert sorted(w.file.rsplit("/", 1)[-1] for w in warnings) == [
        "README.md",
        "Upper.YML",
        "sub.yml",
    ]
    assert all(w.message.startswith("skipped: ") for w in warnings)
    assert _manifest_load.discover([tmp_path]) == (files, problems)  # warnings are optional
