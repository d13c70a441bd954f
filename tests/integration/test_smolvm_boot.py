"""Boot-level tests of the smolmachines backend: they need a host whose /dev/kvm boots guests.

They are gated by the real boot probe (the same code as the smolvm_host_facts
module and the smolmachines_host role): on a host that cannot boot microVMs
every test here is skipped with the probe's reason. Inside a booted guest they
prove what the allow list enforces: an allowlisted exact name resolves (the
positive control), while ``<encoded>.<allowed name>``, an unlisted name and a
non-allowlisted IP literal fail.

BOTTLE_BOOT_ALLOWED_NAME names a host the test machine's upstream resolver can
resolve (default: pypi.org); set it on hosts with a different resolver.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import smol

from ansible_collections.botbottle.bottle.plugins.module_utils._boot_probe import probe
from ansible_collections.botbottle.bottle.plugins.module_utils._smolmachine import (
    create_args,
    desired_spec,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._smolvm import SmolvmClient
from botbottle.policy import build_policy, render_smolvm

pytestmark = pytest.mark.integration

CLI = os.path.join(os.path.dirname(smol.__file__), "smol-vmm")
ALLOWED = os.environ.get("BOTTLE_BOOT_ALLOWED_NAME", "pypi.org")
SECRET_LABEL = "mfrggzdfmztwq2lknnwg23tpobyxe43u"
NAME = "bottle-boot-test"


@pytest.fixture(scope="module")
def data_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("smolvm-data")


@pytest.fixture(scope="module")
def bootable(data_home: Path) -> None:
    result = probe(CLI, sys.executable, data_home=str(data_home), timeout=60)
    if not result["can_boot"]:
        pytest.skip(f"this host cannot boot microVMs (boot probe): {result['reason']}")


@pytest.fixture(scope="module")
def machine(bootable: None, data_home: Path) -> Iterator[SmolvmClient]:
    client = SmolvmClient(CLI, str(data_home))
    policy = build_policy([ALLOWED])
    spec = desired_spec(
        image=None,
        command=None,
        cpus=1,
        memory_mib=512,
        storage_gib=None,
        workdir=None,
        env=None,
        mounts=None,
        ports=None,
        labels=None,
        smolvm_allow=render_smolvm(policy),
        policy_hash=policy.digest,
    )
    client.create(create_args(NAME, spec))
    try:
        client.start(NAME)
        yield client
    finally:
        client.delete(NAME)


def guest(client: SmolvmClient, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [client.binary, "machine", "exec", "--name", NAME, "--", *command],
        env=client.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_allowlisted_exact_name_resolves(machine: SmolvmClient) -> None:
    proc = guest(machine, "nslookup", ALLOWED)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Address" in proc.stdout


def test_encoded_subdomain_of_the_allowed_name_fails(machine: SmolvmClient) -> None:
    assert guest(machine, "nslookup", ALLOWED).returncode == 0  # positive control first
    proc = guest(machine, "nslookup", f"{SECRET_LABEL}.{ALLOWED}")
    assert proc.returncode != 0
    assert "NXDOMAIN" in proc.stdout + proc.stderr


def test_unlisted_name_fails(machine: SmolvmClient) -> None:
    assert guest(machine, "nslookup", ALLOWED).returncode == 0
    proc = guest(machine, "nslookup", "unlisted-name.example.net")
    assert proc.returncode != 0


def test_non_allowlisted_ip_literal_is_unreachable(machine: SmolvmClient) -> None:
    assert guest(machine, "nslookup", ALLOWED).returncode == 0
    proc = guest(machine, "nc", "-z", "-w", "3", "192.0.2.1", "80")
    assert proc.returncode != 0
