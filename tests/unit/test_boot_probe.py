"""The microVM boot probe's decisions (module_utils/_boot_probe.py), step by step.

The real probe runs in tests/integration/test_smolvm_boot.py, where it gates the
boot-level tests; here each step's failure is injected at the command boundary.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from ansible_collections.botbottle.bottle.plugins.module_utils._boot_probe import probe


class Steps:
    def __init__(self, fail: str | None = None, available: str = "[true, null, null]") -> None:
        self.fail = fail
        self.available = available
        self.ops: list[str] = []

    def __call__(
        self, argv: Sequence[str], env: Mapping[str, str], timeout: int
    ) -> tuple[int, str, str]:
        if argv[1] == "-c":
            return 0, self.available + "\n", ""
        op = argv[2]
        self.ops.append(op)
        assert "SMOL_CLOUD_TOKEN" not in env
        if op == self.fail:
            error = {"error": {"code": "SMOLVM_ERROR", "message": f"{op} failed"}}
            return 1, "", json.dumps(error)
        return 0, "", ""


ENV = {"SMOL_CLOUD_TOKEN": "x", "PATH": "/bin"}


def test_boots() -> None:
    steps = Steps()
    result = probe("/cli", "/py", runner=steps, environ=ENV)
    assert result["can_boot"] is True
    assert steps.ops == ["create", "start", "exec", "delete"]


def test_unavailable_never_creates_anything() -> None:
    steps = Steps(available='[false, "KVM_UNAVAILABLE", "KVM permission denied"]')
    result = probe("/cli", "/py", runner=steps, environ=ENV)
    assert result == {
        "availability": [False, "KVM_UNAVAILABLE", "KVM permission denied"],
        "can_boot": False,
        "reason": "KVM_UNAVAILABLE: KVM permission denied",
    }
    assert steps.ops == []


def test_boot_failure_is_reported_and_cleaned_up() -> None:
    steps = Steps(fail="start")
    result = probe("/cli", "/py", runner=steps, environ=ENV)
    assert result["can_boot"] is False
    assert result["reason"].startswith("KVM is present but a microVM did not boot: smolvm start")
    assert steps.ops == ["create", "start", "delete"]


def test_exec_failure() -> None:
    result = probe("/cli", "/py", runner=Steps(fail="exec"), environ=ENV)
    assert "booted but could not run a command" in result["reason"]
