"""The manifest schema itself: valid draft 2020-12, strict and documented everywhere."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from ansible_collections.botbottle.bottle.plugins.plugin_utils._manifest_schema import (
    SCHEMA_FILE,
    schema,
)


def _subschemas(node: Any, path: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            if key in ("properties", "$defs"):
                for name, sub in value.items():
                    yield from _subschemas(sub, f"{path}/{key}/{name}")
            elif key in ("items", "additionalProperties", "propertyNames", "not"):
                yield from _subschemas(value, f"{path}/{key}")
            elif key in ("oneOf", "anyOf", "allOf"):
                for index, sub in enumerate(value):
                    yield from _subschemas(sub, f"{path}/{key}/{index}")


def test_schema_is_valid_draft_2020_12_with_id() -> None:
    data = schema()
    Draft202012Validator.check_schema(data)
    assert data["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert data["$id"].endswith("/bottle.schema.json")


def test_every_object_with_properties_rejects_unknown_keys() -> None:
    for path, sub in _subschemas(schema()):
        if "properties" in sub:
            assert sub.get("additionalProperties") is False, path


def test_every_property_is_described() -> None:
    for path, sub in _subschemas(schema()):
        for name, prop in sub.get("properties", {}).items():
            described = "description" in prop or (
                "$ref" in prop and "description" in schema()["$defs"][prop["$ref"].split("/")[-1]]
            )
            assert described, f"{path}/properties/{name}"


def test_the_schema_users_point_editors_at_is_the_one_the_collection_ships() -> None:
    # schemas/bottle.schema.json stays at the top for editors; the collection validates
    # with its own copy (it must work from its Galaxy tarball alone)
    root = Path(__file__).resolve().parents[8]  # the checkout
    shipped = root / "collections/ansible_collections/botbottle/bottle/schemas/bottle.schema.json"
    assert (root / "schemas" / "bottle.schema.json").read_bytes() == shipped.read_bytes(), (
        "copy schemas/bottle.schema.json over the collection's schemas/bottle.schema.json"
    )
    assert SCHEMA_FILE.resolve() == shipped.resolve()
