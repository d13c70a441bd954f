"""Manifest files for tests: each writer puts a case into a folder and returns the
file (or ``"."``, the folder) to check."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

Writer = Callable[[Path], str]  # writes the case into a folder, returns the file to check


def chain(depth: int) -> Writer:
    def write(folder: Path) -> str:
        (folder / "c0.yml").write_text("runtime: {cpus: 1}\n")
        for i in range(1, depth):
            (folder / f"c{i}.yml").write_text(f"extends: c{i - 1}\nenv: {{V{i}: x}}\n")
        return f"c{depth - 1}.yml"

    return write


def diamond(levels: int) -> Writer:
    def write(folder: Path) -> str:
        (folder / "l0a.yml").write_text("runtime: {cpus: 1}\n")
        (folder / "l0b.yml").write_text("runtime: {cpus: 2}\n")
        for i in range(1, levels):
            for side in "ab":
                (folder / f"l{i}{side}.yml").write_text(
                    f"extends: [l{i - 1}a, l{i - 1}b]\nenv: {{V{i}{side}: x}}\n"
                )
        (folder / "top.yml").write_text(f"extends: [l{levels - 1}a, l{levels - 1}b]\n")
        return "top.yml"

    return write
