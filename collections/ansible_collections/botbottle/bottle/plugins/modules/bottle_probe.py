#!/usr/bin/python
# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: run the sandbox-escape suite inside a host's running bottles, all at once."""

from __future__ import annotations

import json
import os
import subprocess
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.botbottle.bottle.plugins.module_utils import _proxy_check
from ansible_collections.botbottle.bottle.plugins.module_utils._audit_store import (
    remember_probe_names,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._docker_net import (
    bottle_addresses,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._policy import (
    PolicyError,
    policy_from_dict,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._probe import (
    BACKENDS,
    BOTTLE,
    HOST,
    INCONCLUSIVE,
    NEIGHBOUR,
    NOT_RUNNING,
    NOT_SENT,
    PLANNED,
    BottleSpec,
    Check,
    ProxyFacts,
    Target,
    evaluate,
    host_verdict,
    is_proxy_check,
    parse_bottles,
    parse_proxy_output,
    plan_checks,
    plan_proxy_checks,
    probe_names,
    proxy_facts,
    proxy_outcomes,
    proxy_run_argv,
    random_label,
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
    SmolvmClient,
    SmolvmError,
    client_from_params,
)

DOCUMENTATION = r"""
module: bottle_probe
short_description: Prove from inside running bottles that they cannot reach what they must not
version_added: 0.2.0
author: bot-bottle contributors
description:
  - Copies a small static probe program (C(bottle-probe), built on the host by the
    C(bottle_verify) role) into each running bottle - with C(docker cp) for Docker example
    bottles, C(smolvm machine cp) for microVMs - runs every probe in one call as the
    bottle's own user, and removes it again. The bottle image needs no tools.
  - "O(bottles) probes a host's bottles in one call, all at the same time (up to O(parallel)):
    each bottle's checks wait on network timeouts, so a host takes about as long as its
    slowest bottle. O(name) probes one bottle and returns its result at the top level."
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
  - "Docker bottles also get four checks of their egress proxy, run from the agent's own
    network namespace by one throw-away container of the proxy's image (C(docker run
    --network container:<holder>), no capability, read-only, the proxy's user, the bottle
    CA mounted read-only): C(proxy-allowed-host) - CONNECT to the allowed host (an exact
    route, else C(www.) below a wildcard zone; a route without C(matches) first) on port 443
    through the proxy, TLS verified against the bottle CA, a request answered by something
    other than a proxy refusal (the positive control of the other three). The request is one
    the route's C(matches) admit - C(GET /bottle-verify-<base32>) without matches, else made
    from one entry (GET, HEAD or OPTIONS when allowed; an exact path, a prefix followed by
    the run's label, or a simple path a regular expression matches; the exact header values
    it names); when no entry admits one the verifier can make, nothing is sent and the four
    checks are C(inconclusive), saying why. C(proxy-host-mismatch) - the same request with
    another Host is refused with rule C(host-mismatch); C(proxy-direct-egress) - a
    TCP connection to the host's address (from the bottle's resolver) around the proxy fails
    (passes without trying when a C(cidr) route covers that address); C(proxy-ip-literal) - a
    CONNECT to that address (or to a documentation address when a C(cidr) route covers it)
    is refused with rule C(ip-not-covered). A refusal is told by the proxy's
    C(x-bot-bottle-refused) header. A bottle with C(cidr) routes only gets no proxy
    check; microVM bottles have no proxy."
  - Controls run outside the seal - the literal resolvers from the host, C(127.0.0.11) and
    the gateway from the bottle's resolver container, which shares the bottle network.
  - A C(leak) needs no control. The bottle's C(verdict) is C(leak) if any check leaked,
    C(inconclusive) if any check could not be decided, otherwise C(sealed).
  - Probe names start with C(bottle-verify-) and are remembered in O(audit_dir), so the
    audit marks their refusals as the verifier's own.
  - A bottle whose probe cannot be run (it vanished, C(docker exec) failed) fails the module,
    naming it; the other bottles' results are still returned in RV(bottles).
attributes:
  check_mode:
    support: partial
    details: >-
      In check mode nothing is copied or sent (the probe need not exist yet); the planned
      checks are returned.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: Leaves nothing behind in the bottle; never reports a change.
options:
  bottles:
    description:
      - The bottles to probe at once, each C({bottle, backend, policy}) - the rows of the
        C(botbottle.bottle.bottle_verify_targets) filter fit as they are (other keys are
        ignored) - with optional C(container), C(neighbour), C(network) and C(machine), which
        mean what the options of the same names mean for one bottle.
      - Mutually exclusive with O(name).
    type: list
    elements: dict
  name:
    description:
      - One bottle's name (with O(backend) and O(policy)); its result is returned at the top
        level. Mutually exclusive with O(bottles).
    type: str
  backend:
    description: Where the bottle O(name) runs.
    type: str
    choices: [docker, smolmachines]
  policy:
    description:
      - The compiled egress policy of the bottle O(name), as the
        C(botbottle.bottle.bottle_manifest) lookup or the C(botbottle.bottle.egress_policy)
        filter return it.
    type: dict
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
  parallel:
    description: How many of O(bottles) are probed at the same time.
    type: int
    default: 16
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
- name: Prove every running bottle of this host sealed, all at once
  botbottle.bottle.bottle_probe:
    bottles:
      - {bottle: web-dev, backend: docker, policy: "{{ web_dev.policy }}"}
      - {bottle: python-dev, backend: smolmachines, policy: "{{ python_dev.policy }}"}
    probe: /var/lib/bot-bottle/probe/bottle-probe
  register: probes
  failed_when: probes.verdict == 'leak'

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
  description:
    - C(sealed), C(leak), C(inconclusive), or C(not-running) (nothing was probed); C(planned)
      in check mode.
    - With O(bottles), the most serious verdict of all the bottles.
  returned: always
  type: str
  sample: sealed
bottles:
  description:
    - With O(bottles), one entry per bottle, in the order given - C(bottle), C(backend), and
      C(verdict), C(summary), C(results) and C(notes) as they are returned for one bottle.
    - A bottle whose probe could not be run also has C(error) (and C(code) for smolvm errors).
  returned: when O(bottles) is given
  type: list
  elements: dict
  sample:
    - bottle: web-dev
      backend: docker
      verdict: sealed
      summary: {pass: 14, leak: 0, inconclusive: 0}
      results: []
      notes: []
results:
  description: One entry per check, in the order they ran.
  returned: when O(name) is given
  type: list
  elements: dict
  contains:
    name:
      description: >-
        The check, for example C(subdomain-nxdomain-tcp), C(gateway-udp), C(capabilities) or
        C(proxy-host-mismatch).
      type: str
    description:
      description: What the check proves.
      type: str
    expected:
      description: >-
        C(resolves), C(nxdomain), C(blocked), C(capabilities-allowed), or for the proxy checks
        C(reaches-through-proxy), C(refused-by-proxy) or C(blocked-around-proxy).
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
  description: Counts of C(pass), C(leak) and C(inconclusive) (with O(bottles), of all bottles).
  returned: always
  type: dict
  sample: {pass: 16, leak: 0, inconclusive: 0}
notes:
  description:
    - How the gateway responder ran, and why nothing was probed if so (with O(bottles), each
      note starts with its bottle's name).
  returned: always
  type: list
  elements: str
"""


def _command(argv: Sequence[str]) -> tuple[int, str, str]:
    """Run ``argv`` (safe from any thread: no module state, never exits the module)."""
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            errors="replace",
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except OSError as exc:
        return 127, "", f"{argv[0]}: {exc}"
    return proc.returncode, proc.stdout, proc.stderr


class _Runner:
    """Runs the probe at each vantage point of one bottle."""

    def __init__(
        self, spec: BottleSpec, probe: str, timeout_ms: int, client: SmolvmClient | None
    ) -> None:
        self.spec = spec
        self.probe = probe
        self.timeout = timeout_ms
        self.client = client

    def docker_value(self, kind: str, name: str, template: str) -> str:
        rc, out, _err = _command(["docker", kind, "inspect", "-f", template, name])
        return out.strip() if rc == 0 else ""

    def run(self, where: str, specs: Sequence[str]) -> list[dict[str, Any]]:
        if where == HOST:
            return on_host(_command, self.probe, specs, self.timeout)
        if self.client is not None:
            return in_machine(self.client, self.spec.agent, self.probe, specs, self.timeout)
        container = self.spec.resolver if where == NEIGHBOUR else self.spec.agent
        return in_container(_command, container, self.probe, specs, self.timeout)

    def docker_containers(self) -> list[dict[str, Any]]:
        """``docker container inspect`` of the agent and its proxy, in one call (a
        missing one is left out: the call fails, and prints the others)."""
        _rc, out, _err = _command(
            ["docker", "container", "inspect", self.spec.agent, self.spec.proxy]
        )
        try:
            rows = json.loads(out) if out.strip() else []
        except ValueError:
            return []
        return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []

    def running(self, rows: Sequence[dict[str, Any]] = ()) -> bool:
        if self.client is not None:
            machine = self.client.get(self.spec.agent)
            return machine is not None and machine.get("state") == "running"
        agent = [r for r in rows if str(r.get("Name", "")).lstrip("/") == self.spec.agent]
        return bool(agent) and bool((agent[0].get("State") or {}).get("Running"))


def _docker_targets(runner: _Runner) -> tuple[list[Target], str, str]:
    """The near resolvers to probe, the bottle network's gateway and its resolver's
    address (the fixed addresses of the network's subnet; ``""`` when unknown)."""
    spec = runner.spec
    configs = runner.docker_value(
        "network", spec.bottle_network, "{{range .IPAM.Config}}{{.Subnet}},{{.Gateway}} {{end}}"
    )
    pairs = [c.split(",", 1) for c in configs.split() if "," in c and ":" not in c]
    subnet, gateway = pairs[0] if pairs else ("", "")
    resolver = ""
    if subnet:
        try:
            resolver = str(bottle_addresses(subnet, gateway or None)["resolver"])
        except ValueError:
            resolver = ""
    targets = [
        Target("docker-embedded-dns", "127.0.0.11", control=NEIGHBOUR, query_name=spec.resolver)
    ]
    if gateway:
        targets.append(Target("gateway", gateway, control=NEIGHBOUR, dot=True))
    return targets, gateway, resolver


def _proxy_client_source() -> str:
    """The proxy client's source, read through its loader (a checkout or the module's
    payload alike)."""
    loader = getattr(_proxy_check.__spec__, "loader", None)
    source = loader.get_source(_proxy_check.__name__) if loader is not None else None
    if not source:
        raise ProbeError("the proxy client's source cannot be read")
    return str(source)


def _run_proxy_client(
    spec: BottleSpec, facts: ProxyFacts, client_spec: dict[str, Any]
) -> tuple[dict[str, Any], str]:
    """Run the proxy client once for the bottle: its output, or an empty dict and why
    (``{"not_sent": why}`` when its route's matches admit no request it can make)."""
    if client_spec.get("problem"):
        return {NOT_SENT: client_spec["problem"]}, f"proxy checks not run: {client_spec['problem']}"
    if facts.problem:
        return {}, f"proxy checks not run: {facts.problem}"
    argv = proxy_run_argv(facts, spec.name, client_spec, _proxy_client_source())
    rc, out, err = _command(argv)
    try:
        return parse_proxy_output(out), ""
    except ValueError as exc:
        return {}, f"proxy checks: the client failed (rc {rc}): {err.strip() or exc}"


def _measure(runner: _Runner, checks: Sequence[Check]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run every control, then every probe; outcomes and control outcomes keyed by check.
    The proxy checks are not the probe's (:func:`_run_proxy_client` runs them)."""
    checks = [c for c in checks if not is_proxy_check(c)]
    controls: dict[str, Any] = {}
    for where in (HOST, NEIGHBOUR):
        batch = [c for c in checks if c.control_where == where]
        rows = runner.run(where, [c.control_spec for c in batch])
        for check, row in zip(batch, rows, strict=True):
            controls[check.name] = row
    inside = runner.run(BOTTLE, [c.spec for c in checks])
    return {c.name: row for c, row in zip(checks, inside, strict=True)}, controls


def _outcome(
    spec: BottleSpec,
    verdict_: str,
    results: list[dict[str, Any]],
    summary_: dict[str, int],
    notes: list[str],
) -> dict[str, Any]:
    return {
        "bottle": spec.name,
        "backend": spec.backend,
        "verdict": verdict_,
        "summary": summary_,
        "results": results,
        "notes": notes,
    }


@dataclass
class _Bottle:
    """One bottle on its way through the suite: planned, then measured (unless its
    ``outcome`` was settled before: not running, check mode, or an error)."""

    spec: BottleSpec
    runner: _Runner | None = None
    checks: list[Check] = field(default_factory=list)
    gateway: str = ""
    outcome: dict[str, Any] | None = None
    facts: ProxyFacts = field(default_factory=ProxyFacts)
    proxy_spec: dict[str, Any] = field(default_factory=dict)


class _Suite:
    """The escape suite for a host's bottles, all probed at the same time."""

    def __init__(self, module: AnsibleModule) -> None:
        self.params = module.params
        self.check_mode = module.check_mode

    def _guarded(self, step: Callable[[_Bottle], None], bottle: _Bottle) -> _Bottle:
        """Run ``step``; an error that means "nothing was measured" settles the bottle
        as an error (its verdict inconclusive, never pass)."""
        if bottle.outcome is not None:
            return bottle
        try:
            step(bottle)
        except ProbeError as exc:
            bottle.outcome = self._error(bottle.spec, str(exc))
        except SmolvmError as exc:
            bottle.outcome = self._error(bottle.spec, exc.describe(), exc.code)
        return bottle

    @staticmethod
    def _error(spec: BottleSpec, message: str, code: str = "") -> dict[str, Any]:
        outcome = _outcome(spec, INCONCLUSIVE, [], {}, [])
        outcome["error"] = f"bottle {spec.name}: {message}"
        if code:
            outcome["code"] = code
        return outcome

    def _plan(self, bottle: _Bottle) -> None:
        spec, params = bottle.spec, self.params
        client = None if spec.docker else client_from_params(params)
        runner = _Runner(spec, params["probe"], params["timeout_ms"], client)
        bottle.runner = runner
        rows = runner.docker_containers() if spec.docker else []
        if not runner.running(rows):
            note = f"bottle {spec.name} is not running: nothing probed"
            bottle.outcome = _outcome(spec, NOT_RUNNING, [], {}, [note])
            return
        targets: list[Target] = []
        resolver = ""
        if spec.docker:
            targets, bottle.gateway, resolver = _docker_targets(runner)
        policy = policy_from_dict(spec.policy)
        entropy = os.urandom(10)
        bottle.checks = plan_checks(
            policy,
            entropy=entropy,
            targets=targets,
            literals=params["resolvers"],
            capabilities=spec.docker,
        )
        if spec.docker:
            bottle.facts = proxy_facts(rows, spec.agent, spec.proxy)
            if not resolver:
                problem = f"the resolver address of network {spec.bottle_network} is unknown"
                bottle.facts = replace(bottle.facts, problem=bottle.facts.problem or problem)
            proxy_checks, bottle.proxy_spec = plan_proxy_checks(
                policy,
                label=random_label(entropy),
                proxy=bottle.facts.proxy,
                resolver=resolver,
                timeout_ms=params["timeout_ms"],
            )
            bottle.checks += proxy_checks
        if self.check_mode:
            planned = [
                {
                    "name": c.name,
                    "description": c.description,
                    "expected": c.expect,
                    "observed": "",
                    "verdict": PLANNED,
                    "evidence": {"probe": c.spec},
                }
                for c in bottle.checks
            ]
            counts = {PLANNED: len(planned)} if planned else {}
            notes = ["check mode: nothing was sent"]
            bottle.outcome = _outcome(spec, PLANNED, planned, counts, notes)
            return
        remember_probe_names(params["audit_dir"], spec.name, probe_names(bottle.checks))

    def _probe(self, bottle: _Bottle) -> None:
        assert bottle.runner is not None  # planned first
        notes = []
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="proxy-client") as side:
            proxied = (
                side.submit(_run_proxy_client, bottle.spec, bottle.facts, bottle.proxy_spec)
                if bottle.proxy_spec
                else None
            )
            outcomes, controls = _measure(bottle.runner, bottle.checks)
            if proxied is not None:
                output, problem = proxied.result()
                outcomes.update(proxy_outcomes(bottle.checks, output))
                if problem:
                    notes.append(problem)
        results = evaluate(bottle.checks, outcomes, controls)
        if not bottle.spec.docker:
            notes.append(
                "capabilities: not checked in a microVM (its PID 1 is the guest's own init; "
                "the VM is the seal)"
            )
            notes.append(
                "proxy checks: not run on smolmachines (a microVM bottle has no egress proxy)"
            )
        elif not bottle.proxy_spec:
            notes.append("proxy checks: not run (the bottle has no host route to reach)")
        bottle.outcome = _outcome(
            bottle.spec,
            verdict(results),
            [r.to_dict() for r in results],
            summary(results),
            notes,
        )

    def run(self, specs: Sequence[BottleSpec]) -> list[dict[str, Any]]:
        """Plan every bottle, start one gateway responder per gateway, then probe every
        bottle at once (each waits on its own network timeouts); results in input order."""
        bottles = [_Bottle(spec) for spec in specs]
        workers = max(1, min(len(bottles), int(self.params["parallel"])))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bottle-probe") as pool:
            list(pool.map(lambda b: self._guarded(self._plan, b), bottles))
            gateways = sorted({b.gateway for b in bottles if b.outcome is None and b.gateway})
            with ExitStack() as stack:
                responders = {g: stack.enter_context(Responder(g)) for g in gateways}
                list(pool.map(lambda b: self._guarded(self._probe, b), bottles))
        outcomes = []
        for bottle in bottles:
            assert bottle.outcome is not None
            if bottle.gateway in responders and bottle.outcome["verdict"] != NOT_RUNNING:
                notes = responders[bottle.gateway].notes
                bottle.outcome["notes"] += [f"gateway {bottle.gateway} {n}" for n in notes]
            outcomes.append(bottle.outcome)
        return outcomes


def _specs(module: AnsibleModule) -> list[BottleSpec]:
    """The bottles to probe: the list O(bottles), or the one bottle O(name)."""
    params = module.params
    entries = params["bottles"]
    if entries is None:
        entries = [
            {
                "bottle": params["name"],
                **{k: params[k] for k in ("backend", "policy")},
                **{k: params[k] for k in ("container", "neighbour", "network", "machine")},
            }
        ]
    try:
        specs = parse_bottles(entries)
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    problems = []
    for spec in specs:  # refused here, before anything is probed
        try:
            policy_from_dict(spec.policy)
        except (PolicyError, ValueError, TypeError) as exc:
            problems.append(f"policy of bottle {spec.name}: {exc} (pass the lookup's policy)")
    if problems:
        module.fail_json(msg="; ".join(problems))
    return specs


def run(module: AnsibleModule) -> None:
    specs = _specs(module)
    outcomes = _Suite(module).run(specs)
    errors = [o for o in outcomes if "error" in o]
    if module.params["bottles"] is None:  # one bottle: its outcome is the result
        [outcome] = outcomes
        if errors:
            extra = {"code": outcome["code"]} if "code" in outcome else {}
            _fail(module, outcome["error"], **extra)
        module.exit_json(
            changed=False, **{k: v for k, v in outcome.items() if k not in ("bottle", "backend")}
        )
    totals: dict[str, int] = {}
    for outcome in outcomes:
        for key, count in outcome["summary"].items():
            totals[key] = totals.get(key, 0) + count
    result = {
        "changed": False,
        "verdict": host_verdict(o["verdict"] for o in outcomes),
        "summary": totals,
        "notes": [f"{o['bottle']}: {n}" for o in outcomes for n in o["notes"]],
        "bottles": outcomes,
    }
    if errors:
        module.fail_json(msg="; ".join(o["error"] for o in errors), **result)
    module.exit_json(**result)


def _fail(module: AnsibleModule, message: str, **extra: Any) -> None:
    module.fail_json(msg=message, verdict=INCONCLUSIVE, results=[], **extra)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "bottles": {"type": "list", "elements": "dict"},
            "name": {"type": "str"},
            "backend": {"type": "str", "choices": list(BACKENDS)},
            "policy": {"type": "dict"},
            "probe": {"type": "path", "required": True},
            "resolvers": {
                "type": "list",
                "elements": "str",
                "default": ["1.1.1.1", "2606:4700:4700::1111"],
            },
            "timeout_ms": {"type": "int", "default": 2000},
            "parallel": {"type": "int", "default": 16},
            "container": {"type": "str"},
            "neighbour": {"type": "str"},
            "network": {"type": "str"},
            "machine": {"type": "str"},
            "audit_dir": {"type": "path", "default": "/var/lib/bot-bottle/audit"},
            **CLIENT_ARGUMENT_SPEC,
        },
        mutually_exclusive=[("name", "bottles")],
        required_one_of=[("name", "bottles")],
        required_by={"name": ("backend", "policy")},
        supports_check_mode=True,
    )
    if not module.check_mode and not os.access(module.params["probe"], os.X_OK):
        _fail(
            module,
            f"probe {module.params['probe']} is not an executable file "
            "(fix: build it with the botbottle bottle_verify role, or pass probe=PATH)",
        )
    try:
        run(module)
    except Exception as exc:  # unexpected: say so, with the traceback
        module.fail_json(msg=f"bottle_probe failed: {exc}", exception=traceback.format_exc())


if __name__ == "__main__":
    main()
