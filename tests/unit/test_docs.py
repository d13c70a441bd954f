"""Generated and rendered documentation stays true."""

from __future__ import annotations

from pathlib import Path

import pytest
from tools.schemadoc import render_reference

from tests.helpers import ansible

ROOT = Path(__file__).resolve().parents[2]
COLLECTION = ROOT / "collections" / "ansible_collections" / "botbottle" / "bottle"


def test_manifest_reference_is_up_to_date() -> None:
    committed = (ROOT / "docs" / "manifest.md").read_text()
    assert committed == render_reference(), (
        "docs/manifest.md is stale: run .venv/bin/python -m tools.schemadoc > docs/manifest.md"
    )


def test_reference_covers_every_route_key() -> None:
    text = render_reference()
    for key in (
        "egress.routes[].host",
        "egress.routes[].cidr",
        "egress.routes[].auth.token_ref",
        "runtime.mounts[].source",
        "git-gate.repos.<name>.url",
    ):
        assert f"`{key}`" in text


def _plugins() -> list[tuple[str, str]]:
    found = []
    for kind, folder in (("module", "modules"), ("lookup", "lookup")):
        for path in sorted((COLLECTION / "plugins" / folder).glob("*.py")):
            if not path.name.startswith("_"):
                found.append((kind, path.stem))
    for path in sorted((COLLECTION / "plugins" / "filter").glob("*.yml")):
        found.append(("filter", path.stem))
    return found


@pytest.mark.parametrize(("kind", "name"), _plugins())
def test_ansible_doc_renders(kind: str, name: str) -> None:
    proc = ansible("ansible-doc", "-t", kind, f"botbottle.bottle.{name}")
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    assert "EXAMPLES" in proc.stdout
    assert "RETURN VALUES" in proc.stdout or kind == "filter" or "RETURN" in proc.stdout
