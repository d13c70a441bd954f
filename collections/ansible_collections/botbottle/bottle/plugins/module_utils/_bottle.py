# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The bottle conventions every backend shares: lifecycle states and what each backend's
own states mean for them, the names and labels of what bot-bottle creates, and the
status of a declared bottle.

**PRIVATE** to the botbottle.bottle collection and the ``botbottle`` package.
Standard library only: shipped to managed hosts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: The declared states of a bottle, as an inventory writes them.
STATES = ("started", "present", "stopped", "absent")
DEFAULT_STATE = "started"

#: Which actual states satisfy each declared state. The actual state is the backend's
#: own word: Docker's container status, smolvm's machine state.
SATISFIES: Mapping[str, frozenset[str]] = {
    "started": frozenset({"running"}),
    "present": frozenset({"running", "created", "stopped", "exited"}),
    "stopped": frozenset({"created", "stopped", "exited"}),
    "absent": frozenset({"absent"}),
}

UNKNOWN = "unknown"

MANAGED_LABEL = "botbottle.managed-by"
MANAGED_VALUE = "bot-bottle"
BOTTLE_LABEL = "botbottle.bottle"
COMPONENT_LABEL = "botbottle.component"
POLICY_LABEL = "botbottle.policy"
SPEC_LABEL = "botbottle.spec"
#: Docker: which environment names bot-bottle set on the agent.
ENV_LABEL = "botbottle.env"
#: Docker: the fingerprint of the bottle CA an agent or proxy was made with.
CA_LABEL = "botbottle.ca"


def object_name(bottle: str, part: str = "") -> str:
    """What a bottle's object is called on a host: ``bottle-<name>`` (the agent, the
    smolvm machine, the Docker network), ``bottle-<name>-<part>`` for the rest."""
    return f"bottle-{bottle}" + (f"-{part}" if part else "")


@dataclass(frozen=True)
class BackendView:
    """What one host's backend reported: per bottle name its actual state and policy,
    or that the backend could not be asked (``reason`` says why)."""

    backend: str
    available: bool
    states: Mapping[str, str]
    policies: Mapping[str, str]
    reason: str = ""
    #: per bottle, what is wrong beyond its state (e.g. a running agent without its rules)
    problems: Mapping[str, str] = field(default_factory=dict)


def status_rows(declared: Sequence[Mapping[str, Any]], view: BackendView) -> list[dict[str, Any]]:
    """One row per declared bottle: its actual state against the declared one.

    A backend that did not answer makes every row ``unknown`` (never ``absent``): it
    cannot be seen, so it is not known to be gone. ``state_ok`` is false for drift and
    for unknown.
    """
    rows = []
    for bottle in declared:
        name = str(bottle["name"])
        wanted = str(bottle.get("state") or DEFAULT_STATE)
        if not view.available:
            state, policy = UNKNOWN, ""
        else:
            state = view.states.get(name, "absent")
            policy = view.policies.get(name, "") if state != "absent" else ""
        problem = view.problems.get(name, "") if view.available and state != "absent" else ""
        ok = state in SATISFIES.get(wanted, frozenset()) and not problem
        row = {
            "bottle": name,
            "backend": view.backend,
            "state": state,
            "declared": wanted,
            "state_ok": ok,
            "policy": policy,
        }
        if not view.available:
            row["reason"] = view.reason
        elif problem:
            row["reason"] = problem
        elif not ok:
            row["reason"] = f"declared {wanted}, found {state}"
        rows.append(row)
    return rows


def docker_view(result: Mapping[str, Any]) -> BackendView:
    """The Docker backend as ``docker_bottle_info`` reported it."""
    if not result.get("available", False) or result.get("failed"):
        reason = str(result.get("reason") or result.get("msg") or "Docker did not answer")
        return BackendView("docker", False, {}, {}, reason)
    states: dict[str, str] = {}
    policies: dict[str, str] = {}
    problems: dict[str, str] = {}
    for entry in result.get("bottles") or []:
        name = str(entry.get("name"))
        states[name] = str(entry.get("state", "absent"))
        policies[name] = str(entry.get("policy") or "")
        if states[name] == "running" and not (entry.get("rules") and entry.get("sealed")):
            problems[name] = "its agent runs but the rules in its namespace are not loaded"
        elif states[name] == "running" and entry.get("proxy", "running") != "running":
            problems[name] = (
                f"its agent runs but its egress proxy is {entry.get('proxy')}: it reaches nothing"
            )
    return BackendView("docker", True, states, policies, problems=problems)


def smolmachines_view(result: Mapping[str, Any]) -> BackendView:
    """The smolmachines backend as ``smolmachine_info`` reported it."""
    if result.get("failed") or "machines" not in result:
        reason = str(result.get("msg") or "smolvm did not answer")
        return BackendView("smolmachines", False, {}, {}, reason)
    states: dict[str, str] = {}
    policies: dict[str, str] = {}
    prefix = object_name("")  # "bottle-"
    for machine in result.get("machines") or []:
        name = str(machine.get("name", ""))
        if not name.startswith(prefix):
            continue
        bottle = name[len(prefix) :]
        states[bottle] = str(machine.get("state", "absent"))
        policies[bottle] = str((machine.get("labels") or {}).get(POLICY_LABEL, ""))
    return BackendView("smolmachines", True, states, policies)


def fleet_status(
    declared: Sequence[Mapping[str, Any]],
    backend: str,
    docker: Mapping[str, Any] | None = None,
    smolmachines: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Status rows of a host's declared bottles. ``backend`` is the host's effective
    backend; ``auto`` takes a bottle as Docker's when Docker knows it."""
    views = {
        "docker": docker_view(docker or {"available": False, "reason": "not read"}),
        "smolmachines": smolmachines_view(smolmachines or {"failed": True, "msg": "not read"}),
    }
    if backend in views:
        return status_rows(declared, views[backend])
    rows = []
    for bottle in declared:
        on_docker = views["docker"].available and str(bottle["name"]) in views["docker"].states
        rows += status_rows([bottle], views["docker" if on_docker else "smolmachines"])
    return rows


def verify_targets(
    rows: Sequence[Mapping[str, Any]], resolved: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Status rows with each bottle's compiled policy: what the escape suite probes."""
    policies = {str(b["name"]): b.get("policy") or {} for b in resolved}
    return [{**row, "policy": policies.get(str(row["bottle"]), {})} for row in rows]
