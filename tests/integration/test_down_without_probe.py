"""`bottle down/status/verify/audit` never prepare a smolmachines host nor run its boot
probe, on a `bottle_backend: auto` host too: the real CLI, ansible-runner, site.yml and
this machine's dockerd.

The probe takes 30 s on a host that cannot boot microVMs (this one), so only a run that
creates or keeps a bottle may pay it. `down` on an auto host finds its bottles instead:
one of which Docker holds a container goes through the Docker backend, every other one
through smolmachines (a no-op where there is no such machine). What ran is read from the
run's job events, not from timings.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import bottle, require_docker
from tests.helpers import docker as _docker

pytestmark = pytest.mark.integration

NETWORK = "bbnoprobe-egress"
SUBNET = "172.29.246.0/24"
HELD = "noprobe-held"  # brought up on Docker
NEVER = "noprobe-never"  # declared absent, never created anywhere
PROBE_ROLE = "smolmachines_host"
PROBE_MODULE = "botbottle.bottle.smolvm_host_facts"


require_docker()


def _inventory(path: Path, backend: str, bottles: list[dict[str, str]]) -> Path:
    host = {
        "ansible_connection": "local",
        "ansible_python_interpreter": "/usr/bin/python3",
        "bottle_backend": backend,
        "bottles": bottles,
        "docker_bottle_upstream_dns": ["192.0.2.53"],
        "docker_bottle_egress_network": NETWORK,
        "docker_bottle_agent_image": "bot-bottle/netutils:latest",
        "bottle_verify": False,
    }
    path.write_text(json.dumps({"all": {"hosts": {"localhost": host}}}))
    return path


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    base = tmp_path_factory.mktemp("noprobe")
    assert _docker("network", "create", "--internal", "--subnet", SUBNET, NETWORK).returncode == 0
    for name in (HELD, NEVER):
        (base / f"{name}.yml").write_text(
            "runtime:\n  command: [sleep, infinity]\n"
            f"egress:\n  routes:\n    - host: {name}.example\n"
        )
    paths = {
        # what `bottle up` put on Docker (explicitly, so that up needs no probe either)
        "docker": _inventory(base / "docker.yml", "docker", [{"manifest": f"{HELD}.yml"}]),
        # the same host as an auto host that also declares a bottle it never ran
        "auto": _inventory(
            base / "auto.yml",
            "auto",
            [{"manifest": f"{HELD}.yml"}, {"manifest": f"{NEVER}.yml", "state": "absent"}],
        ),
        "artifacts": base / "artifacts",
    }
    try:
        yield paths
    finally:
        run(paths, "down", "-i", str(paths["docker"]))
        _docker("network", "rm", NETWORK)


def run(
    fleet: dict[str, Path], *args: str
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    """Run the bottle command; the process and the run's job events."""
    proc = bottle(*args, BOTTLE_ARTIFACTS_DIR=str(fleet["artifacts"]))
    output = proc.stdout + proc.stderr
    assert "artifacts: " in output, output
    artifacts = Path(output.split("artifacts: ", 1)[1].splitlines()[0])
    events = [json.loads(p.read_text()) for p in (artifacts / "job_events").glob("*.json")]
    return proc, sorted(events, key=lambda e: e["counter"])


def ran(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The task results that were not skipped."""
    return [
        e["event_data"]
        for e in events
        if e["event"].startswith("runner_") and e["event"] != "runner_on_skipped"
    ]


def assert_no_probe(events: list[dict[str, Any]]) -> None:
    results = ran(events)
    assert results, "the run reported no task results"
    assert not [r["task"] for r in results if r.get("role") == PROBE_ROLE]
    assert not [
        r["task"]
        for r in results
        if PROBE_MODULE in (r.get("resolved_action"), r.get("task_action"))
    ]


def items(events: list[dict[str, Any]], task: str) -> list[str]:
    return [
        str(e["event_data"]["res"].get("_ansible_item_label"))
        for e in events
        if e["event"] == "runner_item_on_ok" and e["event_data"]["task"] == task
    ]


def containers() -> set[str]:
    listed = _docker(
        "ps", "-a", "--filter", "label=botbottle.managed-by=bot-bottle", "--format", "{{.Names}}"
    )
    return {n for n in listed.stdout.split() if n.startswith("bottle-noprobe-")}


def test_down_status_verify_audit_of_an_auto_host_never_probe(fleet: dict[str, Path]) -> None:
    auto = str(fleet["auto"])
    machines = "One machine per bottle, with exactly its compiled egress"

    # nothing exists yet: down changes nothing and prepares nothing
    down, events = run(fleet, "down", "-i", auto)
    assert down.returncode == 0, down.stdout + down.stderr
    assert_no_probe(events)
    assert "ok      localhost: 0 change(s)" in down.stdout
    assert items(events, machines) == [f"{HELD} (absent)", f"{NEVER} (absent)"]

    up, events = run(fleet, "up", "-i", str(fleet["docker"]))
    assert up.returncode == 0, up.stdout + up.stderr
    assert_no_probe(events)
    assert containers() == {
        f"bottle-{HELD}",
        f"bottle-{HELD}-net",
        f"bottle-{HELD}-resolver",
        f"bottle-{HELD}-proxy",
    }

    status, events = run(fleet, "status", "-i", auto, "--format", "json")
    assert_no_probe(events)
    rows = {r["bottle"]: r for r in json.loads(status.stdout)["hosts"]["localhost"]}
    assert rows[HELD]["backend"] == "docker" and rows[HELD]["state"] == "running"

    for command in (["verify", "-i", auto], ["audit", HELD, "-i", auto]):
        _proc, events = run(fleet, *command)
        assert_no_probe(events)

    # down on the auto host: the Docker bottle goes through the Docker backend, the other
    # one through smolmachines, and no probe decides it
    down, events = run(fleet, "down", "-i", auto)
    assert down.returncode == 0, down.stdout + down.stderr
    assert_no_probe(events)
    assert items(events, "Bring each bottle to its state") == [f"{HELD} (absent)"]
    assert items(events, machines) == [f"{NEVER} (absent)"]
    assert containers() == set()
