"""The smolmachine module on a host without smolvm: state=absent is already reached there
(`bottle down` no longer installs smolmachines first), every other state fails."""

from __future__ import annotations

from typing import Any

import pytest

from ansible_collections.botbottle.bottle.plugins.module_utils._smolvm import SmolvmError
from ansible_collections.botbottle.bottle.plugins.modules import smolmachine


class ExitJsonCalledError(Exception):
    pass


class FakeModule:
    def __init__(self, **params: Any) -> None:
        self.params = {"name": "bottle-x", "binary": None, "data_home": None, **params}
        self.result: dict[str, Any] = {}

    def exit_json(self, **result: Any) -> None:
        self.result = result
        raise ExitJsonCalledError


def no_smolvm(params: Any) -> Any:
    raise SmolvmError("NOT_FOUND", "no smolvm CLI found (looked in /opt/... and on PATH)", "locate")


def test_absent_without_smolvm_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smolmachine, "client_from_params", no_smolvm)
    module = FakeModule(state="absent")
    with pytest.raises(ExitJsonCalledError):
        smolmachine._client(module)  # type: ignore[arg-type]
    assert module.result["changed"] is False
    assert module.result["state"] == "absent" and module.result["actions"] == []
    assert "no smolvm CLI on this host" in module.result["msg"]


@pytest.mark.parametrize("state", ["present", "started", "stopped"])
def test_other_states_without_smolvm_fail(monkeypatch: pytest.MonkeyPatch, state: str) -> None:
    monkeypatch.setattr(smolmachine, "client_from_params", no_smolvm)
    with pytest.raises(SmolvmError, match="NOT_FOUND"):
        smolmachine._client(FakeModule(state=state))  # type: ignore[arg-type]


def test_other_errors_are_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(params: Any) -> Any:
        raise SmolvmError("STORAGE_ERROR", "disk full", "ls")

    monkeypatch.setattr(smolmachine, "client_from_params", broken)
    with pytest.raises(SmolvmError, match="STORAGE_ERROR"):
        smolmachine._client(FakeModule(state="absent"))  # type: ignore[arg-type]
