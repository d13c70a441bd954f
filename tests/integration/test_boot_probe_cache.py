"""botbottle.bottle.smolvm_host_facts keeps its verdict, through ansible-playbook.

The virtualenv is a stand-in for the role's: its ``python`` answers smolmachines'
availability check and its ``smol/smol-vmm`` refuses to start machines the way smolvm
does on a host that cannot boot (``no boot progress``), at once and logging every call,
so the test sees exactly when a probe ran. (A real probe here takes smolvm's 30 s; the
real CLI is exercised by test_smolvm_boot.py and the molecule scenario.)
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.botbottle.bottle.plugins.module_utils._boot_probe import (
    cache_entry,
    host_key,
    read_cache,
    write_cache,
)
from tests.helpers import ansible

pytestmark = pytest.mark.integration

SEEDED = {
    "can_boot": False,
    "reason": "a verdict stored by an earlier run",
    "availability": [True, None, None],
    "step": "start",
}
NO_BOOT = '{"error": {"code": "SMOLVM_ERROR", "message": "no boot progress for 30 seconds"}}'


def _script(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    root = tmp_path / "venv"
    site = root / "lib" / "python3.11" / "site-packages"
    (site / "smolmachines-1.32.2.dist-info").mkdir(parents=True)
    _script(root / "bin" / "python", "echo '[true, null, null]'\n")
    log = tmp_path / "calls.log"
    _script(
        site / "smol" / "smol-vmm",
        f'echo "$2" >> {log}\nif [ "$2" = start ]; then echo \'{NO_BOOT}\' >&2; exit 1; fi\n',
    )
    return root


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().split() if log.exists() else []


def facts(tmp_path: Path, *extra: str, **params: Any) -> dict[str, Any]:
    out = tmp_path / "result.json"
    out.unlink(missing_ok=True)
    playbook = tmp_path / "probe.yml"
    playbook.write_text(
        json.dumps(
            [
                {
                    "name": "Probe",
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "vars": {"ansible_python_interpreter": sys.executable},
                    "tasks": [
                        {
                            "name": "Probe the host",
                            "botbottle.bottle.smolvm_host_facts": {
                                "venv": str(tmp_path / "venv"),
                                "cache_path": str(tmp_path / "state" / "boot-probe.json"),
                                **params,
                            },
                            "register": "probed",
                        },
                        {
                            "name": "Keep the result",
                            "ansible.builtin.copy": {
                                "content": "{{ probed | to_json }}",
                                "dest": str(out),
                                "mode": "0600",
                            },
                            "check_mode": False,
                        },
                    ],
                }
            ]
        )
    )
    proc = ansible("ansible-playbook", "-i", "localhost,", str(playbook), *extra)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def test_a_stored_verdict_is_used_and_a_changed_key_probes(tmp_path: Path, venv: Path) -> None:
    path = str(tmp_path / "state" / "boot-probe.json")
    assert not write_cache(path, cache_entry(host_key(str(venv), 120), SEEDED, 0.0))

    hit = facts(tmp_path)
    assert calls(tmp_path) == []  # no probe
    assert hit["ansible_facts"]["bottle_host_microvm_probe_cached"] is True
    assert hit["ansible_facts"]["bottle_host_microvm_reason"] == SEEDED["reason"]
    assert hit["ansible_facts"]["bottle_host_microvm_probed_at"] == "1970-01-01T00:00:00Z"
    assert hit["cache"] == {"path": path, "hit": True, "stored": False, "error": ""}
    assert hit["changed"] is False

    # another timeout is another key: check mode probes but does not store
    checked = facts(tmp_path, "--check", timeout=60)
    assert calls(tmp_path) == ["create", "start", "delete"]
    assert checked["ansible_facts"]["bottle_host_microvm_probe_cached"] is False
    assert checked["cache"]["stored"] is False
    assert read_cache(path)["key"]["timeout"] == 120

    probed = facts(tmp_path, timeout=60)
    assert len(calls(tmp_path)) == 6
    assert probed["ansible_facts"]["bottle_host_microvm_probe_cached"] is False
    assert probed["ansible_facts"]["bottle_host_can_boot_microvms"] is False
    assert "no boot progress" in probed["ansible_facts"]["bottle_host_microvm_reason"]
    assert probed["cache"]["stored"] is True
    stored = read_cache(path)
    assert stored["key"] == host_key(str(venv), 60)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644

    again = facts(tmp_path, timeout=60)
    assert len(calls(tmp_path)) == 6  # no probe
    assert again["ansible_facts"]["bottle_host_microvm_probe_cached"] is True
    assert again["ansible_facts"]["bottle_host_microvm_reason"] == stored["verdict"]["reason"]

    refreshed = facts(tmp_path, timeout=60, refresh=True)
    assert len(calls(tmp_path)) == 9
    assert refreshed["ansible_facts"]["bottle_host_microvm_probe_cached"] is False

    uncached = facts(tmp_path, timeout=60, cache=False)
    assert len(calls(tmp_path)) == 12
    assert uncached["ansible_facts"]["bottle_host_microvm_probe_cached"] is False
    assert uncached["cache"]["hit"] is False and uncached["cache"]["stored"] is False
