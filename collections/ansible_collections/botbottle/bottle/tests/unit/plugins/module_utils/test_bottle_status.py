"""Declared against actual: status rows, unknown backends, drift."""

from __future__ import annotations

import pytest

from ansible_collections.botbottle.bottle.plugins.module_utils._bottle import (
    SATISFIES,
    STATES,
    UNKNOWN,
    fleet_status,
    object_name,
    verify_targets,
)

DECLARED = [
    {"name": "a", "state": "started"},
    {"name": "b", "state": "stopped"},
    {"name": "c", "state": "absent"},
    {"name": "d"},
]


def docker(*entries: dict[str, object]) -> dict[str, object]:
    return {"available": True, "bottles": list(entries)}


def entry(name: str, state: str, sealed: bool = True) -> dict[str, object]:
    return {
        "name": name,
        "state": state,
        "rules": "bot-bottle-policy sha256:x rules-3" if sealed else "",
        "policy": "sha256:x" if sealed else "",
        "sealed": sealed,
    }


def test_every_state_has_a_meaning() -> None:
    assert set(SATISFIES) == set(STATES)
    assert object_name("x") == "bottle-x" and object_name("x", "net") == "bottle-x-net"


def test_docker_rows_compare_declared_and_actual() -> None:
    rows = fleet_status(
        DECLARED,
        "docker",
        docker(entry("a", "running"), entry("b", "exited"), entry("d", "running")),
    )
    assert [(r["bottle"], r["state"], r["state_ok"]) for r in rows] == [
        ("a", "running", True),
        ("b", "exited", True),
        ("c", "absent", True),
        ("d", "running", True),
    ]
    assert rows[0]["policy"] == "sha256:x" and rows[2]["policy"] == ""


def test_a_stopped_bottle_that_runs_is_drift() -> None:
    [row] = fleet_status([DECLARED[1]], "docker", docker(entry("b", "running")))
    assert not row["state_ok"] and row["reason"] == "declared stopped, found running"


def test_a_running_agent_without_its_rules_is_drift() -> None:
    [row] = fleet_status([DECLARED[0]], "docker", docker(entry("a", "running", sealed=False)))
    assert not row["state_ok"] and "rules" in row["reason"]


def test_a_running_agent_whose_proxy_is_down_is_drift() -> None:
    [row] = fleet_status(
        [DECLARED[0]], "docker", docker({**entry("a", "running"), "proxy": "exited"})
    )
    assert not row["state_ok"] and "egress proxy is exited" in row["reason"]
    [ok] = fleet_status(
        [DECLARED[0]], "docker", docker({**entry("a", "running"), "proxy": "running"})
    )
    assert ok["state_ok"]


def test_a_backend_that_does_not_answer_is_unknown_never_absent() -> None:
    down = {"available": False, "reason": "Docker does not answer at unix:///var/run/docker.sock"}
    rows = fleet_status(DECLARED, "docker", down)
    assert {r["state"] for r in rows} == {UNKNOWN}
    assert not any(r["state_ok"] for r in rows)  # an absent bottle that cannot be seen is not ok
    assert all("does not answer" in r["reason"] for r in rows)
    failed = fleet_status(
        DECLARED[:1], "smolmachines", smolmachines={"failed": True, "msg": "no smolvm CLI"}
    )
    assert failed[0]["state"] == UNKNOWN and failed[0]["reason"] == "no smolvm CLI"


def test_smolmachines_rows() -> None:
    result = {
        "machines": [
            {"name": "bottle-a", "state": "running", "labels": {"botbottle.policy": "sha256:p"}},
            {"name": "other", "state": "running"},
        ]
    }
    rows = fleet_status(DECLARED[:2], "smolmachines", smolmachines=result)
    assert rows[0] == {
        "bottle": "a",
        "backend": "smolmachines",
        "state": "running",
        "declared": "started",
        "state_ok": True,
        "policy": "sha256:p",
    }
    assert rows[1]["state"] == "absent" and not rows[1]["state_ok"]


@pytest.mark.parametrize("docker_up", [True, False])
def test_auto_takes_a_bottle_as_dockers_when_docker_knows_it(docker_up: bool) -> None:
    result = docker(entry("a", "running")) if docker_up else {"available": False, "reason": "x"}
    smol = {"machines": [{"name": "bottle-b", "state": "stopped", "labels": {}}]}
    rows = fleet_status(DECLARED[:2], "auto", result, smol)
    assert rows[0]["backend"] == ("docker" if docker_up else "smolmachines")
    assert rows[1]["backend"] == "smolmachines" and rows[1]["state_ok"]


def test_verify_targets_carry_each_bottles_policy() -> None:
    rows = fleet_status(DECLARED[:2], "docker", docker(entry("a", "running")))
    resolved = [
        {"name": "a", "policy": {"hash": "sha256:a"}},
        {"name": "b", "policy": {"hash": "b"}},
    ]
    targets = verify_targets(rows, resolved)
    assert [t["policy"]["hash"] for t in targets] == ["sha256:a", "b"]
    assert targets[0]["state"] == "running" and targets[1]["state"] == "absent"
