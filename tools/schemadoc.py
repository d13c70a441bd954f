"""Render the manifest reference (docs/manifest.md) from the JSON Schema.

A developer tool of the checkout, not part of the installed package. The schema's
descriptions are the reference; this only lays them out.
``.venv/bin/python -m tools.schemadoc > docs/manifest.md`` regenerates the file, and
a test fails when the committed copy is stale.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from ansible_collections.botbottle.bottle.plugins.plugin_utils._manifest_schema import schema


def _resolve(node: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target: Mapping[str, Any] = schema()["$defs"][ref.split("/")[-1]]
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _kind(node: Mapping[str, Any]) -> str:
    node = _resolve(node)
    if "enum" in node:
        return " | ".join(json.dumps(v) for v in node["enum"])
    if "const" in node:
        return json.dumps(node["const"])
    for combinator in ("oneOf", "anyOf"):
        if combinator in node and "properties" not in node:
            return " or ".join(_kind(option) for option in node[combinator])
    kind = node.get("type", "any")
    if kind == "array":
        return "list of " + _kind(node.get("items", {}))
    if kind == "object" and "properties" not in node:
        return "mapping"
    return {"object": "mapping"}.get(str(kind), str(kind))


def _rows(node: Mapping[str, Any], prefix: str) -> Iterator[str]:
    node = _resolve(node)
    required = set(node.get("required", []))
    for name, raw in node.get("properties", {}).items():
        prop = _resolve(raw)
        path = f"{prefix}.{name}" if prefix else name
        text = " ".join(str(prop.get("description", "")).split())
        constraints = []
        if "pattern" in prop:
            constraints.append(f"pattern `{prop['pattern']}`")
        for key in ("minimum", "maximum", "minItems"):
            if key in prop:
                constraints.append(f"{key} {prop[key]}")
        if constraints:
            text += " (" + ", ".join(constraints) + ")"
        flag = " **required**" if name in required else ""
        cell = text.replace("|", "\\|")
        yield f"| `{path}`{flag} | {_kind(prop)} | {cell} |"
        child = prop
        if prop.get("type") == "array":
            child = _resolve(prop.get("items", {}))
            path += "[]"
        elif "additionalProperties" in prop and isinstance(prop["additionalProperties"], dict):
            child = _resolve(prop["additionalProperties"])
            path += ".<name>"
        if "properties" in child:
            yield from _rows(child, path)


def render_reference() -> str:
    """The manifest reference as Markdown."""
    data = schema()
    lines = [
        "# Bottle manifest reference",
        "",
        "<!-- Generated from schemas/bottle.schema.json by `python -m tools.schemadoc`;"
        " do not edit. -->",
        "",
        " ".join(str(data["description"]).split()),
        "",
        "Unknown keys are errors everywhere. Keys marked **required** must be present when",
        "their parent is.",
        "",
        "| Key | Type | Meaning |",
        "| --- | --- | --- |",
        *_rows(data, ""),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    """Print the reference."""
    print(render_reference(), end="")


if __name__ == "__main__":
    main()
