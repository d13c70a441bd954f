"""Which backend handles each of a host's bottles (module_utils/_fleet_backend.py, the
``bottle_backends`` filter of playbooks/bottles.yml) - above all, that `bottle down` of an
auto host is decided from where the bottles are, without the boot probe.
"""

from __future__ import annotations

from typing import Any

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.botbottle.bottle.plugins.filter.fleet import (
    bottle_backends,
    bottle_targets,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._fleet_backend import (
    docker_held,
    existing_folders,
    route,
    targets,
)


def bottles(*states: str) -> list[dict[str, Any]]:
    return [{"name": f"b{i}", "state": state} for i, state in enumerate(states)]


def names(targets: list[dict[str, Any]]) -> list[str]:
    return [t["name"] for t in targets]


@pytest.mark.parametrize("backend", ["smolmachines", "docker"])
@pytest.mark.parametrize("states", [("started", "absent"), ("absent", "absent"), ()])
def test_a_fixed_backend_takes_every_bottle(backend: str, states: tuple[str, ...]) -> None:
    split = route(bottles(*states), backend, docker=["b0"], folders=["b1"])
    other = "docker" if backend == "smolmachines" else "smolmachines"
    assert split["backend"] == backend
    assert names(split[backend]) == [f"b{i}" for i in range(len(states))]
    assert split[other] == []


@pytest.mark.parametrize(("can_boot", "backend"), [(True, "smolmachines"), (False, "docker")])
def test_auto_keeping_a_bottle_follows_the_boot_probe(can_boot: bool, backend: str) -> None:
    split = route(bottles("started", "absent", "present"), "auto", can_boot=can_boot, docker=["b0"])
    assert split["backend"] == backend
    assert names(split[backend]) == ["b0", "b1", "b2"]
    assert split["docker" if can_boot else "smolmachines"] == []


def test_auto_down_goes_where_the_bottles_are() -> None:
    split = route(bottles("absent", "absent", "absent"), "auto", docker=["b1", "other"])
    assert split["backend"] == "auto"
    assert names(split["docker"]) == ["b1"]
    assert names(split["smolmachines"]) == ["b0", "b2"]


def test_auto_down_ignores_the_probe_and_the_folders_when_docker_answers() -> None:
    split = route(bottles("absent", "absent"), "auto", can_boot=True, docker=[], folders=["b0"])
    assert split == {
        "backend": "auto",
        "docker": [],
        "smolmachines": bottles("absent", "absent"),
        "docker_kept": [],
        "smolmachines_kept": [],
    }


def test_auto_down_with_docker_silent_sends_bottles_with_a_state_folder_to_docker() -> None:
    split = route(bottles("absent", "absent"), "auto", docker=None, folders=["b1"])
    assert names(split["docker"]) == ["b1"]
    assert names(split["smolmachines"]) == ["b0"]


def test_auto_without_bottles_does_nothing() -> None:
    assert route([], "auto") == {
        "backend": "auto",
        "docker": [],
        "smolmachines": [],
        "docker_kept": [],
        "smolmachines_kept": [],
    }


def test_a_bottle_without_a_state_is_started() -> None:
    split = route([{"name": "b0"}], "auto", docker=["b0"])
    assert split["backend"] == "docker" and names(split["docker"]) == ["b0"]


def test_an_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="kubernetes"):
        route(bottles("started"), "kubernetes")


def container(bottle: str | None, component: str = "agent") -> dict[str, Any]:
    labels = {"botbottle.managed-by": "bot-bottle", "botbottle.component": component}
    if bottle is not None:
        labels["botbottle.bottle"] = bottle
    return {"Names": [f"/bottle-{bottle}"], "Labels": labels}


def test_docker_held_reads_the_bottle_label_of_every_component() -> None:
    info = {
        "can_talk_to_docker": True,
        "containers": [
            container("web", "agent"),
            container("web", "resolver"),
            container("api", "holder"),  # a holder left alone still is the bottle's
            container(None),
            {"Names": ["/x"]},  # not verbose: no labels
        ],
    }
    assert docker_held(info) == ["api", "web"]
    assert docker_held({"containers": []}) == []


@pytest.mark.parametrize(
    "info",
    [
        None,
        {},
        {"skipped": True, "changed": False},
        {"failed": True, "can_talk_to_docker": False, "msg": "Error connecting"},
    ],
)
def test_docker_not_asked_or_silent_is_none(info: dict[str, Any] | None) -> None:
    assert docker_held(info) is None


def test_existing_folders_from_a_stat_loop() -> None:
    stats = {
        "results": [
            {"item": {"name": "a"}, "stat": {"exists": True, "isdir": True}},
            {"item": {"name": "b"}, "stat": {"exists": False}},
            {"item": {"name": "c"}, "skipped": True},
        ]
    }
    assert existing_folders(stats) == ["a"]
    assert existing_folders(None) == []
    assert existing_folders({"skipped": True}) == []


def test_the_filter_reads_registered_results() -> None:
    targets = bottles("absent", "absent", "absent")
    docker = {"containers": [container("b2", "resolver")]}
    split = bottle_backends(targets, "auto", False, docker, {"skipped": True})
    assert names(split["docker"]) == ["b2"] and names(split["smolmachines"]) == ["b0", "b1"]
    silent = {"failed": True, "msg": "Error connecting"}
    folders = {"results": [{"item": targets[0], "stat": {"exists": True}}]}
    split = bottle_backends(targets, "auto", False, silent, folders)
    assert names(split["docker"]) == ["b0"] and names(split["smolmachines"]) == ["b1", "b2"]


def test_the_kept_bottles_of_each_backend_are_those_not_absent() -> None:
    split = route(bottles("started", "absent", "stopped"), "docker")
    assert names(split["docker_kept"]) == ["b0", "b2"] and split["smolmachines_kept"] == []
    down = route(bottles("absent", "absent"), "auto", docker=["b0"])
    assert down["docker_kept"] == [] and down["smolmachines_kept"] == []


def test_targets_apply_the_runs_state_override() -> None:
    declared = bottles("started", "absent", "present")
    run = targets(declared)
    assert run["all"] == declared
    assert names(run["kept"]) == ["b0", "b2"] and run["started"] == ["b0"]
    down = targets(declared, "absent")
    assert [b["state"] for b in down["all"]] == ["absent"] * 3
    assert down["kept"] == [] and down["started"] == []
    assert declared[0]["state"] == "started"  # the play's records are not changed
    assert targets([{"name": "b0"}])["started"] == ["b0"]  # no state: started
    with pytest.raises(ValueError, match="bottle_state_override is 'gone'"):
        targets(declared, "gone")
    with pytest.raises(AnsibleFilterError, match="bottle_targets: bottle_state_override"):
        bottle_targets(declared, "gone")
    assert bottle_targets(None, None) == {"all": [], "kept": [], "started": []}
