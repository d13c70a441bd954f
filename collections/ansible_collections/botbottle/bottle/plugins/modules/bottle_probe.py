#!/usr/bin/python
# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: run the sandbox-escape suite inside a running bottle."""

from __future__ import annotations

import os
import traceback
from collections.abc import Sequence
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.botbottle.bottle.plugins.module_utils._audit_store import (
    remember_probe_names,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._policy import (
    PolicyError,
    policy_from_dict,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._probe import (
    BOTTLE,
    HOST,
    INCONCLUSIVE,
    NEIGHBOUR,
    Check,
    Target,
    evaluate,
    plan_checks,
    probe_names,
    summary,
    verdict,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._probe_exec import (
    ProbeError,
    in_container,
    in_machine,
    on_host,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._responder import Responder
from ansible_collections.botbottle.bottle.plugins.module_utils._smolvm import (
    CLIENT_ARGUMENT_SPEC,
    SmolvmError,
    client_from_params,
)

DOCUMENTATION = r"""
module: bottle_probe
short_description: Prove from inside a running bottle that it cannot reach what its policy forbids
version_added: 0.2.0
author: bot-bottle contributors
description:
  - Copies a small static probe program (C(bottle-probe), built on the host by the
    C(bottle_verify) role) into the running bottle - with C(docker cp) for Docker example
    bottles, C(smolvm machine cp) for microVMs - runs every probe in one call as the
    bottle's own user, and removes it again. The bottle image needs no tools.
  - "Checks, each with a positive control that must succeed first (a failed control makes
    the check C(inconclusive), never C(pass)): the first exact route resolves through the
    bottle's resolver; a base32 label below it and an unlisted name are NXDOMAIN (UDP and
    TCP); no DNS answer (UDP, TCP) from Docker's embedded resolver C(127.0.0.11), from the
    network's gateway (where the module answers DNS and accepts DNS-over-TLS connections
    while the checks run) or from the literal O(resolvers); no TCP connection to those
    literal addresses; IPv6 equivalents get no answer, or there is no IPv6 route at all."
  - "Docker bottles also get the C(capabilities) check: the effective, permitted and bounding
    capability sets of the agent (the bottle's PID 1) and of the probe (a process started in the
    bottle), read from C(/proc), hold nothing outside the runtime allowlist (NET_ADMIN would let
    the agent flush its own firewall). Its control is that all six masks were read and parsed;
    an unreadable or garbled mask is C(inconclusive). Not run in microVMs, whose PID 1 is the
    guest's own init and whose seal is the VM."
  - Controls run outside the seal - the literal resolvers from the host, C(127.0.0.11) and
    the gateway from the bottle's resolver container, which shares the bottle network.
  - A C(leak) needs no control. The bottle's C(verdict) is C(leak) if any check leaked,
    C(inconclusive) if any check could not be decided, otherwise C(sealed).
  - Probe names start with C(bottle-verify-) and are remembered in O(audit_dir), so the
    audit marks their refusals as the verifier's own.
attributes:
  check_mode:
    support: partial
    details: In check mode nothing is copied or sent; the planned checks are returned.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: Leaves nothing behind in the bottle; never reports a change.
options:
  name:
    description: The bottle's name.
    type: str
    required: true
  backend:
    description: Where the bottle runs.
    type: str
    choices: [docker, smolmachines]
    required: true
  policy:
    description:
      - The bottle's compiled egress policy, as the C(botbottle.bottle.bottle_manifest) lookup
        or the C(botbottle.bottle.egress_policy) filter return it.
    type: dict
    required: true
  probe:
    description: Path on the host of the static C(bottle-probe) program.
    type: path
    required: true
  resolvers:
    description:
      - Literal resolver addresses (C(ADDRESS) or C(ADDRESS#PORT)) the bottle must not reach;
        the host must reach them (that is the control). Addresses inside an allowed CIDR are
        skipped.
    type: list
    elements: str
    default: ['1.1.1.1', '2606:4700:4700::1111']
  timeout_ms:
    description: How long each probe waits for an answer or a connection.
    type: int
    default: 2000
  container:
    description: Docker - the agent container; defaults to C(bottle-<name>).
    type: str
  neighbour:
    description:
      - Docker - a container on the bottle's network outside the seal, where the controls for
        C(127.0.0.11) and the gateway run; defaults to the resolver, C(bottle-<name>-resolver).
    type: str
  network:
    description: Docker - the bottle's network (its gateway is probed); default C(bottle-<name>).
    type: str
  machine:
    description: smolmachines - the machine; defaults to C(bottle-<name>).
    type: str
  audit_dir:
    description: Where the names sent by the probe are remembered for the audit.
    type: path
    default: /var/lib/bot-bottle/audit
extends_documentation_fragment:
  - botbottle.bottle.smolvm
seealso:
  - module: botbottle.bottle.bottle_audit
"""

EXAMPLES = r"""
- name: Prove the web-dev bottle is sealed
  botbottle.bottle.bottle_probe:
    name: web-dev
    backend: docker
    policy: "{{ bottle.policy }}"
    probe: /var/lib/bot-bottle/probe/bottle-probe
  register: probe
  failed_when: probe.verdict == 'leak'
"""

RETURN = r"""
verdict:
  description: C(sealed), C(leak), C(inconclusive), or C(not-running) (nothing was probed).
  returned: always
  type: str
  sample: sealed
results:
  description: One entry per check, in the order they ran.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: >-
        The check, for example C(subdomain-nxdomain-tcp), C(gateway-udp) or C(capabilities).
      type: str
    description:
      description: What the check proves.
      type: str
    expected:
      description: C(resolves), C(nxdomain), C(blocked) or C(capabilities-allowed).
      type: str
    observed:
      description: What the probe saw (C(answer NXDOMAIN (0 records)), C(timeout), C(connected)).
      type: str
    verdict:
      description: C(pass), C(leak) or C(inconclusive) (C(planned) in check mode).
      type: str
    evidence:
      description:
        - The probe spec, its raw outcome and the control's outcome.
        - "For C(capabilities), also C(held) (the capabilities of each set, for example
          C(init bounding)) and C(forbidden) (for example C(init bounding: NET_ADMIN))."
      type: dict
summary:
  description: Counts of C(pass), C(leak) and C(inconclusive).
  returned: always
  type: dict
  sample: {pass: 16, leak: 0, inconclusive: 0}
notes:
  description: How the gateway responder ran, and why nothing was probed if so.
  returned: always
  type: list
  elements: str
"""


class _Runner:
    """Runs the probe at each vantage point of one bottle."""

    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        params = module.params
        self.name = params["name"]
        self.timeout = params["timeout_ms"]
        self.probe = params["probe"]
        self.client = client_from_params(params) if params["backend"] == "smolmachines" else None

    def command(self, argv: Sequence[str]) -> tuple[int, str, str]:
        rc, out, err = self.module.run_command(list(argv))
        return int(rc), str(out), str(err)

    def docker_value(self, kind: str, name: str, template: str) -> str:
        rc, out, _err = self.command(["docker", kind, "inspect", "-f", template, name])
        return out.strip() if rc == 0 else ""

    def run(self, where: str, specs: Sequence[str]) -> list[dict[str, Any]]:
        params = self.module.params
        if where == HOST:
            return on_host(self.command, self.probe, specs, self.timeout)
        if self.client is not None:
            machine = params["machine"] or f"bottle-{self.name}"
            return in_machine(self.client, machine, self.probe, specs, self.timeout)
        container = params["container"] or f"bottle-{self.name}"
        if where == NEIGHBOUR:
            container = params["neighbour"] or f"bottle-{self.name}-resolver"
        return in_container(self.command, container, self.probe, specs, self.timeout)

    def running(self) -> bool:
        params = self.module.params
        if self.client is not None:
            machine = self.client.get(params["machine"] or f"bottle-{self.name}")
            return machine is not None and machine.get("state") == "running"
        container = params["container"] or f"bottle-{self.name}"
        return self.docker_value("container", container, "{{.State.Running}}") == "true"


def _docker_targets(runner: _Runner) -> tuple[list[Target], str]:
    params = runner.module.params
    neighbour = params["neighbour"] or f"bottle-{runner.name}-resolver"
    network = params["network"] or f"bottle-{runner.name}"
    gateway = runner.docker_value("network", network, "{{range .IPAM.Config}}{{.Gateway}} {{end}}")
    gateway = next((g for g in gateway.split() if ":" not in g), "")
    targets = [Target("docker-embedded-dns", "127.0.0.11", control=NEIGHBOUR, query_name=neighbour)]
    if gateway:
        targets.append(Target("gateway", gateway, control=NEIGHBOUR, dot=True))
    return targets, gateway


def _measure(runner: _Runner, checks: Sequence[Check]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run every control and probe; outcomes and control outcomes keyed by check name."""
    controls: dict[str, Any] = {}
    for where in (HOST, NEIGHBOUR):
        batch = [c for c in checks if c.control_where == where]
        rows = runner.run(where, [c.control_spec for c in batch])
        for check, row in zip(batch, rows, strict=True):
            controls[check.name] = row
    inside = runner.run(BOTTLE, [c.spec for c in checks])
    return {c.name: row for c, row in zip(checks, inside, strict=True)}, controls


def _exit(
    module: AnsibleModule, verdict_: str, results: list[dict[str, Any]], notes: list[str]
) -> None:
    counts: dict[str, int] = {}
    for result in results:
        counts[result["verdict"]] = counts.get(result["verdict"], 0) + 1
    module.exit_json(changed=False, verdict=verdict_, results=results, summary=counts, notes=notes)


def run(module: AnsibleModule) -> None:
    params = module.params
    try:
        policy = policy_from_dict(params["policy"])
    except (PolicyError, ValueError, TypeError) as exc:
        module.fail_json(msg=f"policy of bottle {params['name']}: {exc} (pass the lookup's policy)")
    runner = _Runner(module)
    if not runner.running():
        _exit(
            module, "not-running", [], [f"bottle {params['name']} is not running: nothing probed"]
        )
    targets: list[Target] = []
    gateway = ""
    docker = params["backend"] == "docker"
    if docker:
        targets, gateway = _docker_targets(runner)
    checks = plan_checks(
        policy,
        entropy=os.urandom(10),
        targets=targets,
        literals=params["resolvers"],
        capabilities=docker,
    )
    if module.check_mode:
        planned = [
            {
                "name": c.name,
                "description": c.description,
                "expected": c.expect,
                "observed": "",
                "verdict": "planned",
                "evidence": {"probe": c.spec},
            }
            for c in checks
        ]
        _exit(module, "planned", planned, ["check mode: nothing was sent"])
    remember_probe_names(params["audit_dir"], params["name"], probe_names(checks))
    notes: list[str] = []
    if not docker:
        notes.append(
            "capabilities: not checked in a microVM (its PID 1 is the guest's own init; "
            "the VM is the seal)"
        )
    if gateway:
        with Responder(gateway) as responder:
            outcomes, controls = _measure(runner, checks)
        notes += [f"gateway {gateway} {note}" for note in responder.notes]
    else:
        outcomes, controls = _measure(runner, checks)
    results = evaluate(checks, outcomes, controls)
    module.exit_json(
        changed=False,
        verdict=verdict(results),
        results=[r.to_dict() for r in results],
        summary=summary(results),
        notes=notes,
    )


def _fail(module: AnsibleModule, message: str, **extra: Any) -> None:
    module.fail_json(msg=message, verdict=INCONCLUSIVE, results=[], **extra)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "backend": {"type": "str", "required": True, "choices": ["docker", "smolmachines"]},
            "policy": {"type": "dict", "required": True},
            "probe": {"type": "path", "required": True},
            "resolvers": {
                "type": "list",
                "elements": "str",
                "default": ["1.1.1.1", "2606:4700:4700::1111"],
            },
            "timeout_ms": {"type": "int", "default": 2000},
            "container": {"type": "str"},
            "neighbour": {"type": "str"},
            "network": {"type": "str"},
            "machine": {"type": "str"},
            "audit_dir": {"type": "path", "default": "/var/lib/bot-bottle/audit"},
            **CLIENT_ARGUMENT_SPEC,
        },
        supports_check_mode=True,
    )
    if not os.access(module.params["probe"], os.X_OK):
        _fail(
            module,
            f"probe {module.params['probe']} is not an executable file "
            "(fix: build it with the botbottle bottle_verify role, or pass probe=PATH)",
        )
    try:
        run(module)
    except ProbeError as exc:
        _fail(module, f"bottle {module.params['name']}: {exc}")
    except SmolvmError as exc:
        _fail(module, exc.describe(), code=exc.code)
    except Exception as exc:  # unexpected: say so, with the traceback
        module.fail_json(msg=f"bottle_probe failed: {exc}", exception=traceback.format_exc())


if __name__ == "__main__":
    main()
