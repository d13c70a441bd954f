"""Running the project's Ansible tools from tests, the way a user would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def ansible(tool: str, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """Run ``ansible-playbook``/``ansible-doc``/… of this virtualenv from the project root,
    with the project's ansible.cfg and no colours."""
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
        **extra_env,
    )
    return subprocess.run(
        [str(Path(sys.executable).parent / tool), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )


def bottle(*args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """Run this virtualenv's ``bottle`` command as a user would: no stdin, no BOTTLE_DEBUG,
    ``extra_env`` added to the environment (the host variables bottles copy into their env)."""
    env = {k: v for k, v in os.environ.items() if k != "BOTTLE_DEBUG"}
    env.update(extra_env)
    return subprocess.run(
        [str(Path(sys.executable).parent / "bottle"), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )


def docker(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI; never raises on a non-zero exit."""
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False)


def require_docker() -> None:
    """Skip the calling test module when no Docker engine answers; in CI, fail instead
    (.ci/run starts dockerd through scripts/dockerd, so a missing engine is a CI bug)."""
    if shutil.which("docker") is not None and docker("info").returncode == 0:
        return
    if os.environ.get("CI"):
        raise RuntimeError("Docker does not answer; .ci/run must start dockerd (scripts/dockerd)")
    pytest.skip("Docker does not answer here (run scripts/dockerd)", allow_module_level=True)
