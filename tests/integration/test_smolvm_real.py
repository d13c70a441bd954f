"""botbottle.bottle.smolmachine against the real smolvm CLI and state database.

Every test gets its own XDG_DATA_HOME, so it sees only its own machines. Nothing
here boots a VM: records, updates, drift, check mode and errors are real smolvm
behaviour on any host. Results are checked from outside the module: through
`smolvm machine status --json` and smolvm's own database.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import smol

from ansible_collections.botbottle.bottle.plugins.module_utils._policy import (
    SMOLVM_NO_NAMES,
    compile_policy,
    policy_from_dict,
    render_smolvm,
    smolvm_deny_cidrs,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._smolvm import (
    SmolvmClient,
    SmolvmError,
)
from tests.helpers import ansible

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")
CLI = os.path.join(os.path.dirname(smol.__file__), "smol-vmm")
NAME = "bottle-it"


def _policy(*routes: dict[str, Any]) -> dict[str, Any]:
    return compile_policy({"egress": {"routes": list(routes)}}).to_dict()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "rootfs").mkdir()
    return tmp_path


def status(home: Path, name: str = NAME) -> dict[str, Any] | None:
    proc = subprocess.run(
        [CLI, "machine", "status", "--name", name, "--json"],
        env={**os.environ, "XDG_DATA_HOME": str(home / "data")},
        capture_output=True,
        text=True,
        check=False,
    )
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def module(
    home: Path,
    check: bool = False,
    binary: str = CLI,
    module_name: str = "smolmachine",
    **params: Any,
) -> dict[str, Any]:
    params.setdefault("binary", binary)
    params.setdefault("data_home", str(home / "data"))
    out = home / "result.json"
    if out.exists():
        out.unlink()
    argv = [
        "ansible-playbook",
        "tests/integration/playbooks/smolmachine.yml",
        "-e",
        json.dumps({"params": params, "result_file": str(out), "module_name": module_name}),
    ]
    if check:
        argv += ["--check", "--diff"]
    proc = ansible(*argv, SMOL_CLOUD_TOKEN="must-never-be-used")
    assert out.exists(), proc.stdout + proc.stderr
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def bottle(home: Path, **overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "name": NAME,
        "image": str(home / "rootfs"),
        "command": ["sleep", "infinity"],
        "cpus": 2,
        "memory": 512,
        "env": {"GREETING": "hello-from-the-test"},
        "egress": _policy(
            {"host": "api.example.com"}, {"host": "*.cdn.example"}, {"cidr": "203.0.113.9/24"}
        ),
    }
    params.update(overrides)
    return params


def test_lifecycle_on_real_records(home: Path) -> None:
    # present: a stopped record with exactly the compiled allow lists
    first = module(home, **bottle(home))
    assert first["changed"] is True, first
    assert first["actions"] == ["create"]
    record = status(home)
    assert record is not None
    assert sorted(record["allowed_hosts"]) == ["*.cdn.example", "=api.example.com"]
    assert record["allowed_cidrs"] == ["203.0.113.0/24"]
    assert record["network"] is True
    assert record["state"] == "created"
    assert record["labels"]["botbottle.managed-by"] == "bot-bottle"
    assert record["labels"]["botbottle.policy"].startswith("sha256:")
    assert record["cmd"] == ["sleep", "infinity"]
    db = SmolvmClient(CLI, str(home / "data")).record(NAME)
    assert db is not None and db["env"] == [["GREETING", "hello-from-the-test"]]
    created_at = record["created_at"]

    # re-run: no change
    again = module(home, **bottle(home))
    assert again["changed"] is False and again["actions"] == []

    # check mode with a changed route: reports the update, changes nothing
    planned = module(home, check=True, **bottle(home, egress=_policy({"host": "api2.example.com"})))
    assert planned["changed"] is True and planned["actions"] == ["update"]
    assert planned["diff"]["after"]["allow_hosts"] == ["=api2.example.com"]
    assert planned["diff"]["before"]["allow_hosts"] == ["*.cdn.example", "=api.example.com"]
    assert sorted(status(home)["allowed_hosts"]) == ["*.cdn.example", "=api.example.com"]  # type: ignore[index]

    # a changed route: updated in place (same machine), exactly the new list
    moved = module(home, **bottle(home, egress=_policy({"host": "api2.example.com"})))
    assert moved["changed"] is True and moved["actions"] == ["update"]
    record = status(home)
    assert record is not None
    assert record["allowed_hosts"] == ["=api2.example.com"]
    assert not record.get("allowed_cidrs")
    assert record["created_at"] == created_at
    assert (
        module(home, **bottle(home, egress=_policy({"host": "api2.example.com"})))["changed"]
        is False
    )

    # no routes at all: no network, not an empty (= open) allow list
    closed = module(home, **bottle(home, egress=_policy()))
    assert closed["changed"] is True
    record = status(home)
    assert record is not None and record["network"] is False
    assert not record.get("allowed_hosts") and not record.get("allowed_cidrs")

    # env, cpus and memory drift is fixed in place
    tuned = module(home, **bottle(home, egress=_policy(), cpus=3, env={"OTHER": "value-two"}))
    assert tuned["actions"] == ["update"]
    assert set(tuned["changed_fields"]) == {"cpus", "env"}
    db = SmolvmClient(CLI, str(home / "data")).record(NAME)
    assert db is not None and db["env"] == [["OTHER", "value-two"]] and db["cpus"] == 3
    assert "value-two" not in json.dumps(tuned)  # env values never in results

    # state=stopped on a never-started record: nothing to do
    assert (
        module(
            home,
            **bottle(home, egress=_policy(), cpus=3, env={"OTHER": "value-two"}, state="stopped"),
        )["changed"]
        is False
    )

    # absent: gone; again: no change
    gone = module(home, name=NAME, state="absent")
    assert gone["changed"] is True and gone["actions"] == ["delete"]
    assert status(home) is None
    assert module(home, name=NAME, state="absent")["changed"] is False


def test_check_mode_creates_nothing(home: Path) -> None:
    planned = module(home, check=True, **bottle(home))
    assert planned["changed"] is True and planned["actions"] == ["create"]
    assert planned["diff"]["before"] == {"state": "absent"}
    assert status(home) is None


def test_immutable_drift_fails_unless_recreate(home: Path) -> None:
    module(home, **bottle(home))
    other = home / "other-rootfs"
    other.mkdir()
    refused = module(home, **bottle(home, image=str(other), command=["true"]))
    assert refused.get("failed") is True
    assert "fields that only a new machine can change differ: image, command" in refused["msg"]
    assert "recreate=true" in refused["msg"] and "destroys its disk" in refused["msg"]
    assert status(home)["image"] == "local-dir:" + str((home / "rootfs").resolve())  # type: ignore[index]

    redone = module(home, **bottle(home, image=str(other), command=["true"], recreate=True))
    assert redone["actions"] == ["delete", "create"]
    assert status(home)["image"] == "local-dir:" + str(other.resolve())  # type: ignore[index]


def test_info_lists_by_label_and_name(home: Path) -> None:
    module(home, **bottle(home))
    subprocess.run(
        [CLI, "machine", "create", "--name", "unmanaged"],
        env={**os.environ, "XDG_DATA_HOME": str(home / "data")},
        capture_output=True,
        check=True,
    )
    found = module(
        home, module_name="smolmachine_info", labels={"botbottle.managed-by": "bot-bottle"}
    )
    assert [m["name"] for m in found["machines"]] == [NAME]
    machine = found["machines"][0]
    assert machine["state"] == "created"
    assert machine["config"]["allow_hosts"] == ["*.cdn.example", "=api.example.com"]
    assert machine["config"]["env"] == {"GREETING": "********"}
    both = module(home, module_name="smolmachine_info")
    assert [m["name"] for m in both["machines"]] == [NAME, "unmanaged"]


def test_conflict_and_bad_config_messages(home: Path) -> None:
    client = SmolvmClient(CLI, str(home / "data"))
    client.create(["--name", "taken"])
    with pytest.raises(SmolvmError) as conflict:
        client.create(["--name", "taken"])
    assert conflict.value.code == "CONFLICT"
    assert "already exists" in conflict.value.describe()

    bad_name = module(home, **bottle(home, name="bad name"))
    assert bad_name["failed"] is True
    assert "CONFIG_ERROR" in bad_name["msg"] and "machine name" in bad_name["msg"]

    missing = module(home, **bottle(home, mounts=[{"source": "/nonexistent/src", "target": "/x"}]))
    assert missing["failed"] is True
    assert "NOT_FOUND" in missing["msg"] and "mount sources" in missing["msg"]

    no_egress = module(home, name=NAME, image=str(home / "rootfs"))
    assert no_egress["failed"] is True and "egress" in no_egress["msg"]


def test_fails_closed_when_smolvm_drops_the_allow_list(home: Path) -> None:
    """Inject upstream bot-bottle's old failure (an allow list silently dropped at create)
    into the real CLI: the module must notice on read-back and fail."""
    shim = home / "dropping-smolvm"
    shim.write_text(
        "#!/usr/bin/env python3\n"
        "import os, sys\n"
        "args = sys.argv[1:]\n"
        "if args[:2] == ['machine', 'create']:\n"
        "    out, skip = [], False\n"
        "    for a in args:\n"
        "        if skip:\n"
        "            skip = False\n"
        "            continue\n"
        "        if a == '--allow-host-pattern':\n"
        "            skip = True\n"
        "            continue\n"
        "        out.append(a)\n"
        "    args = out\n"
        f"os.execv({CLI!r}, [{CLI!r}] + args)\n"
    )
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    result = module(home, binary=str(shim), **bottle(home))
    assert result["failed"] is True
    assert "stored different egress" in result["msg"]
    assert "must not run with this allow list" in result["msg"]
    record = status(home)
    assert record is not None and record["state"] != "running"


def _db(home: Path) -> dict[str, Any]:
    found = SmolvmClient(CLI, str(home / "data")).record(NAME)
    assert found is not None
    return found


def _cli(home: Path, *args: str) -> None:
    subprocess.run(
        [CLI, "machine", *args],
        env={**os.environ, "XDG_DATA_HOME": str(home / "data"), "SMOL_CLOUD_TOKEN": ""},
        capture_output=True,
        check=True,
    )


def test_every_machine_with_a_network_denies_the_gateway(home: Path) -> None:
    """The module creates machines with deny rules for smolvm's gateway and the host's
    loopback; a cidr-only bottle gets a DNS filter (README "The egress proxy and smolmachines")."""
    made = module(home, **bottle(home, egress=_policy({"cidr": "0.0.0.0/0", "wide": True})))
    assert made["actions"] == ["create"], made
    stored = _db(home)
    assert {r["action"] for r in stored["egress_rules"]} == {"deny"}
    assert len(stored["egress_rules"]) == len(smolvm_deny_cidrs())
    assert {"cidr": "100.96.0.0/16", "action": "deny"} in stored["egress_rules"]
    assert {"cidr": "fd53:4d00::/64", "action": "deny"} in stored["egress_rules"]
    assert stored["dns_filter_hosts"] == ["=" + SMOLVM_NO_NAMES]
    assert (
        module(home, **bottle(home, egress=_policy({"cidr": "0.0.0.0/0", "wide": True})))["changed"]
        is False
    )


def test_a_machine_without_the_deny_rules_is_created_again(home: Path) -> None:
    """smolvm takes deny rules only at create, and `update --no-net` drops them: a
    machine whose record lacks them is replaced, even without recreate=true."""
    module(home, **bottle(home))
    created_at = status(home)["created_at"]  # type: ignore[index]
    # an older bot-bottle's machine: the same allow lists, no deny rules
    _cli(home, "update", "--name", NAME, "--no-net")
    allow = render_smolvm(policy_from_dict(bottle(home)["egress"]))
    _cli(home, "update", "--name", NAME, "--reset-allow-list", *allow["update_args"])
    assert not _db(home).get("egress_rules")
    assert sorted(status(home)["allowed_hosts"]) == ["*.cdn.example", "=api.example.com"]  # type: ignore[index]

    planned = module(home, check=True, **bottle(home))
    assert planned["actions"] == ["delete", "create"] and planned["changed_fields"][0] == (
        "deny_cidrs"
    )
    assert not _db(home).get("egress_rules")  # check mode changes nothing
    redone = module(home, **bottle(home))
    assert redone["actions"] == ["delete", "create"], redone
    assert len(_db(home)["egress_rules"]) == len(smolvm_deny_cidrs())
    assert status(home)["created_at"] >= created_at  # type: ignore[index]
    assert module(home, **bottle(home))["changed"] is False


def test_fails_closed_when_smolvm_drops_the_deny_rules(home: Path) -> None:
    """A smolvm that ignores --deny-cidr at create: the read-back notices and fails."""
    shim = home / "dropping-smolvm"
    shim.write_text(
        "#!/usr/bin/env python3\n"
        "import os, sys\n"
        "args, out, skip = sys.argv[1:], [], False\n"
        "for a in args:\n"
        "    if skip:\n"
        "        skip = False\n"
        "        continue\n"
        "    if a == '--deny-cidr':\n"
        "        skip = True\n"
        "        continue\n"
        "    out.append(a)\n"
        f"os.execv({CLI!r}, [{CLI!r}] + out)\n"
    )
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    result = module(home, binary=str(shim), **bottle(home))
    assert result["failed"] is True
    assert "stored different egress" in result["msg"] and "deny rules []" in result["msg"]
