"""Resolving env entries (module_utils/_bottle_env.py): fail closed, never echo values."""

from __future__ import annotations

import pytest

from ansible_collections.botbottle.bottle.plugins.module_utils._bottle_env import (
    EnvError,
    entry_kind,
    resolve_env,
)


def test_all_three_forms() -> None:
    env = resolve_env(
        {"LIT": "plain", "NUM": 8080, "HOST": "${SRC}", "ASK": "?Token please"},
        {"SRC": "from-host"},
        {"ASK": "answered"},
    )
    assert env == {"LIT": "plain", "NUM": "8080", "HOST": "from-host", "ASK": "answered"}


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("x", "literal"),
        ("${X}", "host"),
        ("${X", "literal"),
        ("?", "prompt"),
        ("?q", "prompt"),
        ("a${X}", "literal"),
    ],
)
def test_entry_kind(value: str, kind: str) -> None:
    assert entry_kind(value) == kind


def test_missing_host_variable_fails_naming_it() -> None:
    with pytest.raises(EnvError) as info:
        resolve_env({"TOKEN": "${FORGE_TOKEN}"}, {}, {}, bottle="dev")
    assert "bottle 'dev': env TOKEN copies host variable FORGE_TOKEN" in str(info.value)
    assert "export FORGE_TOKEN" in str(info.value)


def test_missing_answer_fails_without_values() -> None:
    with pytest.raises(EnvError) as info:
        resolve_env({"NPM": "?npm token", "OTHER": "s3cr3t"}, {"X": "hidden"}, {})
    text = str(info.value)
    assert "env NPM is a secret asked at bring-up ('npm token')" in text
    assert "s3cr3t" not in text and "hidden" not in text


def test_empty_host_variable_is_a_value_not_an_error() -> None:
    assert resolve_env({"A": "${EMPTY}"}, {"EMPTY": ""}, {}) == {"A": ""}
