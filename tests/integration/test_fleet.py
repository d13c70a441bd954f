"""A fleet rollout over real managed hosts: `bottle up/status` on four containers
reached through Ansible's community.docker.docker connection.

The hosts are containers of a local Debian image (built with the Docker role's own
image builder) without network (`--network none`) and without /dev/kvm. Each is
prepared by the smolmachines_host role from the pinned wheel copied in, and gets
its bottles as real smolvm records (state `present`: the record level, no boot).
One host asks for a `started` bottle: its boot probe finds no KVM, so it fails
with that reason, and - with max_fail_percentage 0 and one host per batch - the
rollout stops there while the hosts before it report success.
"""

from __future__ import annotations

import glob
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, ansible, require_docker
from tests.helpers import docker as _docker

pytestmark = pytest.mark.integration

BOTTLE = str(Path(sys.executable).parent / "bottle")
IMAGE_REPO = "bot-bottle/fleethost"
HOSTS = ["bbfleet-1", "bbfleet-2", "bbfleet-3"]
BROKEN = "bbfleet-4"


require_docker()


def _wheel(tmp: Path) -> Path:
    found = glob.glob(str(tmp / "smolmachines-*.whl"))
    if not found:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "-q",
                "-d",
                str(tmp),
                "smolmachines==1.32.2",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        found = glob.glob(str(tmp / "smolmachines-*.whl"))
    return Path(found[0])


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("fleet")
    build = base / "build.yml"
    build.write_text(
        json.dumps(
            [
                {
                    "name": "Build the fleet host image",
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "vars": {
                        "ansible_python_interpreter": "/usr/bin/python3",
                        "docker_bottle_netutils_image": IMAGE_REPO,
                        "docker_bottle_image_packages": [
                            "python3",
                            "python3-venv",
                            "python3-packaging",
                            "passwd",
                        ],
                    },
                    "tasks": [
                        {
                            "name": "Image",
                            "ansible.builtin.include_role": {
                                "name": "botbottle.bottle.docker_bottle_example",
                                "tasks_from": "image",
                            },
                        }
                    ],
                }
            ]
        )
    )
    built = ansible("ansible-playbook", str(build))
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr
    wheel = _wheel(base)
    for name in [*HOSTS, BROKEN]:
        _docker("rm", "-f", name)
        started = _docker(
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "none",
            "--dns",
            "127.0.0.1",
            "--label",
            "botbottle.test=fleet",
            f"{IMAGE_REPO}:latest",
            "sleep",
            "infinity",
        )
        assert started.returncode == 0, started.stderr
        assert _docker("cp", str(wheel), f"{name}:/root/{wheel.name}").returncode == 0
    (base / "one.yml").write_text("egress:\n  routes:\n    - host: one.example\n")
    (base / "two.yml").write_text(
        'egress:\n  routes:\n    - host: two.example\n    - host: "*.cdn.example"\n'
    )
    host_vars: dict[str, Any] = {
        "ansible_connection": "community.docker.docker",
        "ansible_python_interpreter": "/usr/bin/python3",
        "smolmachines_host_package": f"/root/{wheel.name}",
        "smolmachines_host_install_prerequisites": False,
    }
    hosts = {
        "bbfleet-1": {"bottles": [{"manifest": "one.yml", "state": "present"}]},
        "bbfleet-2": {
            "bottles": [
                {"manifest": "one.yml", "state": "present"},
                {"manifest": "two.yml", "state": "present"},
            ]
        },
        "bbfleet-3": {"bottles": [{"manifest": "two.yml", "state": "present"}]},
    }
    inventory = {
        "all": {
            "vars": {**host_vars, "bottle_serial": 1, "bottle_max_fail_percentage": 0},
            "hosts": {h: {"ansible_host": h, **v} for h, v in hosts.items()},
        }
    }
    (base / "fleet.yml").write_text(json.dumps(inventory))
    broken = json.loads(json.dumps(inventory))
    broken["all"]["hosts"][BROKEN] = {
        "ansible_host": BROKEN,
        "bottles": [{"manifest": "one.yml", "state": "started"}],
    }
    # the broken host comes first: one host per batch, so nothing after it runs
    broken["all"]["hosts"] = {BROKEN: broken["all"]["hosts"].pop(BROKEN), **broken["all"]["hosts"]}
    (base / "broken.yml").write_text(json.dumps(broken))
    try:
        yield base
    finally:
        for name in [*HOSTS, BROKEN]:
            _docker("rm", "-f", name)


def bottle(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BOTTLE, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=1200,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
    )


def records(host: str) -> dict[str, list[str]]:
    """Machine name -> stored allow list, read inside the host with smolvm itself."""
    cli = _docker(
        "exec",
        host,
        "sh",
        "-c",
        "ls /opt/bot-bottle/smolmachines/lib/python3*/site-packages/smol/smol-vmm",
    )
    if cli.returncode != 0:
        return {}
    proc = _docker("exec", host, cli.stdout.strip(), "machine", "ls", "--json")
    assert proc.returncode == 0, proc.stderr
    return {m["name"]: sorted(m.get("allowed_hosts") or []) for m in json.loads(proc.stdout)}


def task_outcomes(output: str) -> dict[str, dict[str, str]]:
    """task name -> host -> ok/changed/skipped/failed, from the run's job events (the CLI
    prints the artifacts folder)."""
    folder = next(
        line.split(" ", 1)[1] for line in output.splitlines() if line.startswith("artifacts: ")
    )
    found: dict[str, dict[str, str]] = {}
    for path in sorted(Path(folder, "job_events").glob("*.json")):
        event = json.loads(path.read_text())
        kind = str(event.get("event", ""))
        if not kind.startswith("runner_on_"):
            continue
        data = event.get("event_data") or {}
        outcome = kind.removeprefix("runner_on_")
        if outcome == "ok" and (data.get("res") or {}).get("changed"):
            outcome = "changed"
        found.setdefault(str(data.get("task", "")), {})[str(data.get("host", ""))] = outcome
    return found


def test_rollout_status_rerun_limit_and_a_failing_host(fleet: Path) -> None:
    # --limit touches only the named host
    limited = bottle("up", "-i", str(fleet / "fleet.yml"), "--limit", "bbfleet-3")
    assert limited.returncode == 0, limited.stdout[-3000:] + limited.stderr[-3000:]
    assert records("bbfleet-3") == {"bottle-two": ["*.cdn.example", "=two.example"]}
    assert records("bbfleet-1") == {} and records("bbfleet-2") == {}

    # the whole fleet: bottles land where the inventory says, exact names as =host
    up = bottle("up", "-i", str(fleet / "fleet.yml"))
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    assert records("bbfleet-1") == {"bottle-one": ["=one.example"]}
    assert records("bbfleet-2") == {
        "bottle-one": ["=one.example"],
        "bottle-two": ["*.cdn.example", "=two.example"],
    }
    # the CLI resolved the manifests before the run; the validate play took them over
    tasks = task_outcomes(up.stdout)
    took = "Take this host's bottles as the bottle CLI resolved them"
    loaded = "Load, merge and validate this host's manifests on the controller"
    assert {host: tasks[took].get(host) for host in HOSTS} == dict.fromkeys(HOSTS, "ok")
    assert {host: tasks[loaded].get(host) for host in HOSTS} == dict.fromkeys(HOSTS, "skipped")

    # a second run changes nothing anywhere
    again = bottle("up", "-i", str(fleet / "fleet.yml"))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    for host in HOSTS:
        assert f"ok      {host}: 0 change(s)" in again.stdout

    # status aggregates every host
    status = bottle("status", "-i", str(fleet / "fleet.yml"), "--format", "json")
    assert status.returncode == 0, status.stderr[-3000:]
    rows = json.loads(status.stdout)["hosts"]
    assert sorted(rows) == HOSTS
    assert [(r["bottle"], r["backend"], r["state"]) for r in rows["bbfleet-2"]] == [
        ("one", "smolmachines", "created"),
        ("two", "smolmachines", "created"),
    ]

    # a host that cannot boot a started bottle fails with its reason and stops the rollout
    for host in HOSTS:
        _docker(
            "exec",
            host,
            "sh",
            "-c",
            "/opt/bot-bottle/smolmachines/lib/python3*/site-packages/smol/smol-vmm "
            "machine delete --name bottle-one -f; true",
        )
    broken = bottle("up", "-i", str(fleet / "broken.yml"))
    assert broken.returncode == 1
    assert f"FAILED  {BROKEN}:" in broken.stderr
    assert "cannot boot" in broken.stderr or "KVM" in broken.stderr
    assert "no fallback" in broken.stderr or "Run them on a host whose" in broken.stderr
    # later batches never ran: the records deleted above were not recreated
    assert "bottle-one" not in records("bbfleet-1")
