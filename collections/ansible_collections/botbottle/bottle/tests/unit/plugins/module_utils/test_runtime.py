"""What a bottle's runtime may hold: the capability allowlist and the host-mount refusals."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from ansible_collections.botbottle.bottle.plugins.module_utils._runtime import (
    ALLOWED_CAPABILITIES,
    CAPABILITY_BITS,
    RuntimeSettingError,
    capabilities_in_mask,
    capability_refusal,
    check_capabilities,
    forbidden_in_mask,
    host_mount_refusal,
    mount_refusal,
    normalize_capability,
)
from ansible_collections.botbottle.bottle.plugins.plugin_utils._manifest import resolve
from ansible_collections.botbottle.bottle.plugins.plugin_utils._problem import ManifestError

SPELLINGS = ["NET_ADMIN", "net_admin", "CAP_NET_ADMIN", "cap_net_admin", "Cap_Net_Admin"]


@pytest.mark.parametrize("raw", SPELLINGS)
def test_every_spelling_of_net_admin_is_refused(raw: str) -> None:
    assert normalize_capability(raw) == "NET_ADMIN"
    refusal = capability_refusal(raw)
    assert refusal is not None and "NET_ADMIN" in refusal and "firewall" in refusal
    with pytest.raises(RuntimeSettingError, match="may hold only"):
        check_capabilities(["CHOWN", raw])


@pytest.mark.parametrize(
    "raw", ["ALL", "all", "SYS_ADMIN", "NET_RAW", "SYS_PTRACE", "BPF", "DAC_READ_SEARCH", "MKNOD"]
)
def test_capabilities_that_undo_the_sandbox_are_refused(raw: str) -> None:
    assert capability_refusal(raw) is not None


@pytest.mark.parametrize("raw", ["NOT_A_CAP", "CAP_", "", "NET ADMIN", "NET_ADMIN\n", 7])
def test_non_capabilities_are_refused(raw: object) -> None:
    assert capability_refusal(raw) is not None


def test_allowed_capabilities_normalise() -> None:
    assert check_capabilities(["cap_chown", "CHOWN", "kill", "CAP_NET_BIND_SERVICE"]) == [
        "CHOWN",
        "KILL",
        "NET_BIND_SERVICE",
    ]
    assert set(CAPABILITY_BITS) >= ALLOWED_CAPABILITIES
    assert "NET_ADMIN" not in ALLOWED_CAPABILITIES and "NET_RAW" not in ALLOWED_CAPABILITIES


def test_masks_decode() -> None:
    assert capabilities_in_mask("0000000000000000") == []
    assert capabilities_in_mask("0000000000001001") == ["CHOWN", "NET_ADMIN"]
    assert forbidden_in_mask("0000000000001001") == ["NET_ADMIN"]
    assert forbidden_in_mask("00000000a80425fb") == [
        "NET_RAW",
        "MKNOD",
        "SETFCAP",
        "SETPCAP",
    ] or set(forbidden_in_mask("00000000a80425fb")) == {
        "NET_RAW",
        "MKNOD",
        "SETFCAP",
        "SETPCAP",
    }  # Docker's default set
    assert forbidden_in_mask("000001ffffffffff")[-1] == "CHECKPOINT_RESTORE"
    assert "bits" in capabilities_in_mask("8000000000000000")[-1]


@pytest.mark.parametrize(
    "source",
    [
        "/",
        "//",
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/run/containerd/containerd.sock",
        "/run/user/1000/podman/podman.sock",
        "/home/u/.local/share/smolvm",
        "/home/u/.local/share/smolvm/server",
        "/proc",
        "/proc/1/root",
        "/sys/fs",
        "/dev",
        "/boot",
        "/etc",
        "/etc/",
        "/root",
        "/var/lib/docker",
        "/var/lib/docker/volumes/x",
        "/var/lib/bot-bottle/docker/demo",
        "/var",
        "/var/lib",
        "/usr",
        "/srv/../etc",
        "/srv/x/../../var/lib/docker",
    ],
)
def test_host_takeover_mounts_are_refused(source: str) -> None:
    assert mount_refusal(source) is not None, source


@pytest.mark.parametrize("source", ["/srv/work/repo", "/home/u/project", "/tmp/x", "/opt/data"])
def test_project_folders_are_fine(source: str) -> None:
    assert mount_refusal(source) is None


def test_extra_trees_are_refused() -> None:
    assert mount_refusal("/data/bb/state/x", extra_trees=["/data/bb/state"]) is not None
    assert mount_refusal("/data", extra_trees=["/data/bb/state"]) is not None
    assert mount_refusal("/data/other", extra_trees=["/data/bb/state"]) is None


def test_symlinks_are_judged_by_where_they_lead(tmp_path: Path) -> None:
    (tmp_path / "project").mkdir()
    (tmp_path / "innocent").symlink_to("/etc")
    (tmp_path / "fine").symlink_to(tmp_path / "project")
    refusal = host_mount_refusal(str(tmp_path / "innocent"))
    assert refusal is not None and "resolves to /etc" in refusal
    assert host_mount_refusal(str(tmp_path / "fine")) is None
    parent = tmp_path / "up"
    parent.symlink_to("/var/lib")
    assert host_mount_refusal(str(parent / "docker")) is not None


def test_any_socket_is_refused_whatever_its_name(tmp_path: Path) -> None:
    path = tmp_path / "innocent-name"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        refusal = host_mount_refusal(str(path))
    assert refusal is not None and "Unix socket" in refusal
    assert mount_refusal(str(path)) is None  # by name alone it looks harmless


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_the_validator_refuses_net_admin_in_any_spelling(tmp_path: Path, spelling: str) -> None:
    path = tmp_path / "agent.yml"
    path.write_text(f"runtime:\n  capabilities: [chown, {spelling}]\n")
    with pytest.raises(ManifestError) as info:
        resolve(path)
    (problem,) = info.value.problems
    assert problem.path == "$.runtime.capabilities[1]" and problem.line == 2
    assert "NET_ADMIN is refused" in problem.message and "CHOWN" in problem.fix


def test_the_validator_refuses_host_mounts(tmp_path: Path) -> None:
    path = tmp_path / "agent.yml"
    path.write_text(
        "runtime:\n  mounts:\n    - {source: /var/run/docker.sock, target: /s}\n"
        "    - {source: /, target: /host}\n    - {source: /srv/ok, target: /w}\n"
    )
    with pytest.raises(ManifestError) as info:
        resolve(path)
    assert [p.path for p in info.value.problems] == [
        "$.runtime.mounts[0].source",
        "$.runtime.mounts[1].source",
    ]
