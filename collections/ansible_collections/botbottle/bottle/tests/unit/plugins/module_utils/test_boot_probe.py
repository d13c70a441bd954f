"""The microVM boot probe's decisions (module_utils/_boot_probe.py), step by step, and
the cache of its verdict.

The real probe runs in tests/integration/test_smolvm_boot.py, where it gates the
boot-level tests; here each step's failure is injected at the command boundary.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.botbottle.bottle.plugins.module_utils._boot_probe import (
    CACHE_FORMAT,
    cache_entry,
    cache_key,
    cacheable,
    cached_verdict,
    device_identity,
    dist_version,
    host_key,
    probe,
    probe_with_cache,
    read_cache,
    write_cache,
)


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
        "step": "availability",
    }
    assert steps.ops == []


def test_boot_failure_is_reported_and_cleaned_up() -> None:
    steps = Steps(fail="start")
    result = probe("/cli", "/py", runner=steps, environ=ENV)
    assert result["can_boot"] is False
    assert result["reason"].startswith("KVM is present but a microVM did not boot: smolvm start")
    assert result["step"] == "start"
    assert steps.ops == ["create", "start", "delete"]


def test_exec_failure() -> None:
    result = probe("/cli", "/py", runner=Steps(fail="exec"), environ=ENV)
    assert "booted but could not run a command" in result["reason"]
    assert result["step"] == "exec"


# --------------------------------------------------------------------------- the verdict's cache


def kvm_stat(
    mode: int = 0o660, uid: int = 0, gid: int = 107, rdev: tuple[int, int] = (10, 232)
) -> os.stat_result:
    return os.stat_result(
        (stat.S_IFCHR | mode, 1, 5, 1, uid, gid, 0, 0, 0, 0), {"st_rdev": os.makedev(*rdev)}
    )


KVM = device_identity(kvm_stat())


def key(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "smolmachines": "1.32.2",
        "kernel": "6.1.0-18-amd64",
        "kvm": KVM,
        "uid": 1000,
        "groups": [1000, 107],
        "timeout": 120,
    }
    fields.update(changes)
    return cache_key(**fields)


NO_BOOT = {
    "can_boot": False,
    "reason": "KVM is present but a microVM did not boot: no boot progress for 30 seconds",
    "availability": [True, None, None],
    "step": "start",
}


def test_device_identity_is_what_kvm_access_depends_on() -> None:
    assert KVM == {
        "exists": True,
        "char": True,
        "rdev": [10, 232],
        "mode": "0660",
        "uid": 0,
        "gid": 107,
    }
    assert device_identity(None) == {"exists": False}


@pytest.mark.parametrize(
    "other",
    [
        kvm_stat(mode=0o600),  # the udev rule / the role's fix-up changed the mode
        kvm_stat(gid=0),  # ... or the group
        kvm_stat(uid=1000),
        kvm_stat(rdev=(10, 233)),  # another device node
        None,  # the module was unloaded
    ],
)
def test_every_change_to_dev_kvm_changes_the_key(other: os.stat_result | None) -> None:
    assert key(kvm=device_identity(other)) != key()


@pytest.mark.parametrize(
    "change",
    [
        {"smolmachines": "1.33.0"},
        {"kernel": "6.1.0-19-amd64"},
        {"uid": 0},
        {"groups": [1000]},  # the user was not (yet) in the kvm group
        {"timeout": 300},
    ],
)
def test_every_other_input_changes_the_key(change: dict[str, Any]) -> None:
    assert key(**change) != key()


def test_the_key_ignores_the_order_and_repeats_of_groups() -> None:
    assert key(groups=[107, 1000, 107]) == key()
    assert key()["format"] == CACHE_FORMAT


def test_dist_version() -> None:
    site = "/opt/bot-bottle/smolmachines/lib/python3.11/site-packages"
    assert (
        dist_version([f"{site}/pip-23.0.1.dist-info", f"{site}/smolmachines-1.32.2.dist-info"])
        == "1.32.2"
    )
    assert dist_version(["smolmachines-1.32.2.dist-info/"]) == "1.32.2"
    assert dist_version(["smolmachinesx-1.0.dist-info", "pip-23.0.1.dist-info"]) == ""
    assert dist_version([]) == ""


def test_a_stored_verdict_is_reused_only_under_its_own_key() -> None:
    entry = json.loads(json.dumps(cache_entry(key(), NO_BOOT, 1_800_000_000.0)))
    assert entry["probed_at"] == "2027-01-15T08:00:00Z"
    assert cached_verdict(entry, key()) == {**NO_BOOT, "probed_at": "2027-01-15T08:00:00Z"}
    assert cached_verdict(entry, key(kernel="6.1.0-19-amd64")) is None
    assert cached_verdict(entry, key(kvm=device_identity(kvm_stat(mode=0o666)))) is None
    older = {**entry, "key": {**entry["key"], "format": CACHE_FORMAT - 1}}
    assert cached_verdict(older, {**key(), "format": CACHE_FORMAT - 1}) is not None
    assert cached_verdict(older, key()) is None


@pytest.mark.parametrize(
    "entry",
    [
        None,
        [],
        "text",
        {"key": None},
        {"verdict": {}},
        {"key": "KEY", "verdict": "yes"},
        {"key": "KEY", "verdict": {"can_boot": "false", "reason": "", "availability": [1, 2, 3]}},
        {"key": "KEY", "verdict": {"can_boot": False, "reason": 1, "availability": [1, 2, 3]}},
        {"key": "KEY", "verdict": {"can_boot": False, "reason": "", "availability": [1]}},
        {"key": "KEY", "verdict": {"can_boot": False, "reason": ""}},
    ],
)
def test_a_malformed_entry_is_never_a_verdict(entry: Any) -> None:
    if isinstance(entry, dict) and entry.get("key") == "KEY":
        entry = {**entry, "key": key()}
    assert cached_verdict(entry, key()) is None


@pytest.mark.parametrize(
    ("result", "kept"),
    [
        ({"can_boot": True, "reason": "booted", "availability": [True, None, None]}, True),
        (NO_BOOT, True),
        ({**NO_BOOT, "step": "exec"}, True),
        ({**NO_BOOT, "availability": [False, "KVM_UNAVAILABLE", "no /dev/kvm"]}, True),
        ({**NO_BOOT, "availability": [False, "RUNTIME_NOT_INSTALLED", "no smol"]}, False),
        ({**NO_BOOT, "step": "create"}, False),
        ({"reason": "?"}, False),
    ],
)
def test_only_verdicts_about_booting_are_kept(result: dict[str, Any], kept: bool) -> None:
    assert cacheable(result) is kept


class Prober:
    def __init__(self, result: Mapping[str, Any] = NO_BOOT) -> None:
        self.result = result
        self.runs = 0

    def __call__(self) -> Mapping[str, Any]:
        self.runs += 1
        return self.result


def test_probe_once_then_reuse_until_the_key_changes(tmp_path: Path) -> None:
    path = str(tmp_path / "smolmachines" / "boot-probe.json")
    prober = Prober()
    first, info = probe_with_cache(prober, key(), path=path, now=lambda: 1_800_000_000.0)
    assert prober.runs == 1
    assert first["cached"] is False and first["can_boot"] is False
    assert info == {"path": path, "hit": False, "stored": True, "error": ""}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644

    again, info = probe_with_cache(prober, key(), path=path)
    assert prober.runs == 1  # no probe: the stored verdict
    assert info["hit"] is True and info["stored"] is False
    assert again == {**NO_BOOT, "cached": True, "probed_at": "2027-01-15T08:00:00Z"}

    upgraded, info = probe_with_cache(
        Prober({**NO_BOOT, "can_boot": True}), key(kernel="7"), path=path
    )
    assert upgraded["cached"] is False and upgraded["can_boot"] is True and info["stored"]
    assert read_cache(path)["key"]["kernel"] == "7"


def test_refresh_probes_and_stores_again(tmp_path: Path) -> None:
    path = str(tmp_path / "boot-probe.json")
    probe_with_cache(Prober(), key(), path=path)
    prober = Prober({**NO_BOOT, "can_boot": True, "reason": "booted"})
    result, info = probe_with_cache(prober, key(), path=path, refresh=True)
    assert prober.runs == 1 and result["can_boot"] is True and info["stored"]
    assert probe_with_cache(Prober(), key(), path=path)[0]["can_boot"] is True


def test_no_cache_neither_reads_nor_writes(tmp_path: Path) -> None:
    path = str(tmp_path / "boot-probe.json")
    write_cache(path, cache_entry(key(), NO_BOOT, 0.0))
    prober = Prober({**NO_BOOT, "can_boot": True})
    result, info = probe_with_cache(prober, key(), path=path, use=False)
    assert prober.runs == 1 and result["cached"] is False and result["can_boot"] is True
    assert not info["stored"] and read_cache(path)["verdict"]["can_boot"] is False


def test_check_mode_reads_but_does_not_store(tmp_path: Path) -> None:
    path = tmp_path / "boot-probe.json"
    _result, info = probe_with_cache(Prober(), key(), path=str(path), store=False)
    assert not path.exists() and info["stored"] is False


def test_a_verdict_that_says_nothing_about_booting_is_not_stored(tmp_path: Path) -> None:
    path = tmp_path / "boot-probe.json"
    probe_with_cache(Prober({**NO_BOOT, "step": "create"}), key(), path=str(path))
    assert not path.exists()


def test_a_cache_that_cannot_be_written_is_reported_not_fatal(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = str(blocker / "boot-probe.json")  # its folder is a file
    result, info = probe_with_cache(Prober(), key(), path=path)
    assert result["can_boot"] is False and info["stored"] is False
    assert info["error"].startswith(f"cannot store the boot probe's verdict in {path}")


def test_a_damaged_cache_file_means_probe_again(tmp_path: Path) -> None:
    path = tmp_path / "boot-probe.json"
    path.write_text("{not json")
    assert read_cache(str(path)) is None
    prober = Prober()
    probe_with_cache(prober, key(), path=str(path))
    assert prober.runs == 1 and read_cache(str(path))["key"] == key()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".boot-probe-")]


def test_host_key_reads_the_venv_the_kernel_and_the_device(tmp_path: Path) -> None:
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    (site / "smolmachines-1.32.2.dist-info").mkdir(parents=True)
    found = host_key(str(tmp_path / "venv"), 60, kvm_path=str(tmp_path / "kvm"))
    assert found["smolmachines"] == "1.32.2"
    assert found["kernel"] == os.uname().release
    assert found["kvm"] == {"exists": False}
    assert found["uid"] == os.getuid() and found["timeout"] == 60
    assert found == host_key(str(tmp_path / "venv"), 60, kvm_path=str(tmp_path / "kvm"))
