#!/usr/bin/python
# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: manage one smolmachines microVM (a bot-bottle bottle)."""

from __future__ import annotations

import os
import traceback
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.botbottle.bottle.plugins.module_utils._bottle import STATES
from ansible_collections.botbottle.bottle.plugins.module_utils._policy import (
    policy_from_dict,
    render_smolvm,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._runtime import (
    MOUNT_FIX,
    host_mount_refusal,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._smolmachine import (
    MachineSpec,
    PlanError,
    actual_spec,
    create_args,
    desired_spec,
    egress_matches,
    plan,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._smolvm import (
    CLIENT_ARGUMENT_SPEC,
    SmolvmClient,
    SmolvmError,
    client_from_params,
)

DOCUMENTATION = r"""
module: smolmachine
short_description: Manage a smolmachines microVM for a bot-bottle bottle
version_added: 0.1.0
author: bot-bottle contributors
description:
  - Creates, updates, starts, stops and deletes one local smolvm machine, idempotently.
  - Reads the machine's record first, computes a plan, then acts; check mode only reads, and
    C(changed) and the diff are the same in check mode as in a real run.
  - Egress comes from the bot-bottle policy compiler (P(botbottle.bottle.egress_policy#filter)).
    Exact host names become smolvm's C(=host) patterns (exactly that name), wildcard zones
    C(*.zone), and CIDRs C(--allow-cidr). A bare allow-list entry, which smolvm would match with
    all its subdomains, is never written. A policy with no routes means no network at all.
  - A policy with CIDRs but no host names also gets the host pattern
    C(=no-names.bot-bottle.invalid), a name that never resolves, so that smolvm's DNS filter is
    on (smolvm filters names only when the allow list holds a host entry, and otherwise forwards
    every query upstream).
  - Every machine with a network is created with deny rules (C(--deny-cidr)) for smolvm's guest
    gateway (C(100.96.0.0/16), C(fd53:4d00::/64)), which smolvm relays to the host's loopback,
    and for loopback, link-local, metadata and unspecified addresses. smolvm checks them before
    any allow, so no route, however wide, reaches the host through the gateway. smolvm takes deny
    rules only at create (and C(machine update --no-net) drops them), so a machine whose record
    lacks them is deleted and created again, even without O(recreate=true); B(its disk is lost).
    Giving a machine created without routes its first route is therefore a new machine too.
  - Fails closed. After every create or update the stored allow lists and deny rules are read
    back; if they differ from the compiled policy, the machine is stopped and the task fails.
  - Drift smolvm can change in place (allow lists, cpus, memory, env, workdir, mounts, ports) is
    fixed in place, stopping a running machine first when smolvm needs that (allow lists alone
    apply live). Drift it cannot change (image, command, labels, storage) fails the task and
    names the fields, unless O(recreate=true).
  - Machines are always local (cloud credentials such as E(SMOL_CLOUD_TOKEN) are removed from
    smolvm's environment) and persistent; started through the CLI, they run detached and outlive
    the task. They are labelled C(botbottle.managed-by=bot-bottle) and
    C(botbottle.policy=<hash of the policy at creation>).
  - All smolvm calls go through the bundled C(smolvm) CLI (C(smol/smol-vmm) of the pinned
    C(smolmachines) wheel) with C(--error-format json), whose stable error codes are turned
    into messages that say what to do.
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: partial
    details: Not idempotent when O(recreate=true) and a field only a new machine can change differs.
options:
  name:
    description: >-
      Machine name (letters, digits, C(-) and C(_)); for bottles, C(bottle-<bottle name>).
    type: str
    required: true
  state:
    description:
      - C(present) - the machine exists with this configuration (a new one is created stopped).
      - C(started) - it exists and runs (booting needs a host that passes the boot probe).
      - C(stopped) - it exists and does not run.
      - C(absent) - it does not exist. Where no smolvm CLI is found (O(binary) unset, none in
        the C(smolmachines_host) virtualenv or on E(PATH)) no machine can exist, and C(absent)
        is reached without one.
    type: str
    choices: [present, started, stopped, absent]
    default: present
  egress:
    description:
      - The compiled egress policy, the output of P(botbottle.bottle.egress_policy#filter)
        (keys C(exact_hosts), C(wildcard_zones), C(cidrs), C(hash)).
      - Required unless O(state=absent). There is no default - a machine's egress is always
        stated explicitly.
    type: dict
  image:
    description:
      - A registry reference, a local C(docker save)/OCI archive (C(.tar), C(.tar.gz), C(.tgz)),
        or a root file system directory. Local archives are compared by their sha256,
        directories by their real path.
    type: str
  command:
    description: The machine's workload command.
    type: list
    elements: str
  cpus:
    description: Virtual CPUs (a cap). Not compared when unset.
    type: int
  memory:
    description: Memory in MiB (a cap). Not compared when unset.
    type: int
  storage:
    description: Storage disk size in GiB. Not compared when unset.
    type: int
  workdir:
    description: Working directory of the workload.
    type: str
  env:
    description: Environment of the workload. Values are treated as secrets (never logged).
    type: dict
  mounts:
    description: Host directories shared with the machine.
    type: list
    elements: dict
    suboptions:
      source:
        description:
          - Absolute host path; it must exist.
          - Refused, after resolving symlinks on the managed host, when it is C(/), a Unix
            socket, a host system tree, container-runtime or bot-bottle state (smolvm's data
            directory included), or a folder holding one of them.
        type: path
        required: true
      target:
        description: Absolute path inside the machine.
        type: str
        required: true
      read_only:
        description: Mount read-only.
        type: bool
        default: false
  ports:
    description: Ports published from the machine to the host.
    type: list
    elements: dict
    suboptions:
      host:
        description: Host port.
        type: int
        required: true
      guest:
        description: Port inside the machine.
        type: int
        required: true
  labels:
    description: Extra labels (the bot-bottle labels are always added).
    type: dict
  recreate:
    description:
      - Delete and recreate the machine when a field only a new machine can change differs.
      - B(This destroys the machine's disk), including anything the agent wrote inside it.
    type: bool
    default: false
extends_documentation_fragment:
  - botbottle.bottle.smolvm
notes:
  - Starting a machine needs C(/dev/kvm) that can boot guests; the
    C(smolmachines_host) role's boot probe sets C(bottle_host_can_boot_microvms).
  - smolvm has no label update, so C(botbottle.policy) records the policy a machine was created
    with; the allow lists themselves are compared on every run.
seealso:
  - module: botbottle.bottle.smolmachine_info
"""

EXAMPLES = r"""
- name: A bottle's machine, stopped, with exactly its allowlisted hosts
  botbottle.bottle.smolmachine:
    name: bottle-dev
    image: /srv/images/agent.tar
    cpus: 2
    memory: 2048
    command: [sleep, infinity]
    egress: "{{ bottle.manifest | botbottle.bottle.egress_policy }}"
    state: present

- name: Start it
  botbottle.bottle.smolmachine:
    name: bottle-dev
    image: /srv/images/agent.tar
    command: [sleep, infinity]
    egress: "{{ bottle.manifest | botbottle.bottle.egress_policy }}"
    state: started

- name: Remove it
  botbottle.bottle.smolmachine:
    name: bottle-dev
    state: absent
"""

RETURN = r"""
actions:
  description: What was (or, in check mode, would be) done, in order.
  returned: always
  type: list
  elements: str
  sample: [update, start]
changed_fields:
  description: Fields that differed from the desired configuration.
  returned: always
  type: list
  elements: str
  sample: [allow_hosts]
machine:
  description: The machine's normalised configuration after the task (env values redacted).
  returned: when the machine exists after the task
  type: dict
  sample:
    image: local-dir:/srv/rootfs
    command: [sleep, infinity]
    cpus: 2
    memory_mib: 2048
    network: true
    allow_hosts: ["=api.example.com", "*.cdn.example"]
    allow_cidrs: [203.0.113.0/24]
    deny_cidrs: [0.0.0.0/8, 100.96.0.0/16, 127.0.0.0/8, "...", fd53:4d00::/64, fe80::/10]
    labels: {botbottle.managed-by: bot-bottle, botbottle.policy: "sha256:..."}
state:
  description: >-
    smolvm's state of the machine after the task (C(created), C(stopped), C(running)),
    or C(absent).
  returned: always
  type: str
  sample: created
"""

ARGUMENT_SPEC: dict[str, Any] = {
    "name": {"type": "str", "required": True},
    "state": {
        "type": "str",
        "default": "present",
        "choices": list(STATES),
    },
    "egress": {"type": "dict"},
    "image": {"type": "str"},
    "command": {"type": "list", "elements": "str"},
    "cpus": {"type": "int"},
    "memory": {"type": "int"},
    "storage": {"type": "int"},
    "workdir": {"type": "str"},
    "env": {"type": "dict", "no_log": True},
    "mounts": {
        "type": "list",
        "elements": "dict",
        "options": {
            "source": {"type": "path", "required": True},
            "target": {"type": "str", "required": True},
            "read_only": {"type": "bool", "default": False},
        },
    },
    "ports": {
        "type": "list",
        "elements": "dict",
        "options": {
            "host": {"type": "int", "required": True},
            "guest": {"type": "int", "required": True},
        },
    },
    "labels": {"type": "dict"},
    "recreate": {"type": "bool", "default": False},
    **CLIENT_ARGUMENT_SPEC,
}


def _read(client: SmolvmClient, name: str) -> tuple[MachineSpec | None, str]:
    listing = client.get(name)
    if listing is None:
        return None, "absent"
    return actual_spec(listing, client.record(name)), str(listing.get("state", "stopped"))


def _desired(module: AnsibleModule) -> MachineSpec | None:
    params = module.params
    if params["state"] == "absent":
        return None
    if params["egress"] is None:
        module.fail_json(
            msg="egress is required unless state=absent: pass the bottle's compiled "
            'policy, e.g. egress: "{{ manifest | botbottle.bottle.egress_policy }}"'
        )
    try:
        policy = policy_from_dict(params["egress"])
    except ValueError as exc:
        module.fail_json(msg=f"egress: {exc} (pass the output of botbottle.bottle.egress_policy)")
    try:
        return desired_spec(
            image=params["image"],
            command=params["command"],
            cpus=params["cpus"],
            memory_mib=params["memory"],
            storage_gib=params["storage"],
            workdir=params["workdir"],
            env=params["env"],
            mounts=params["mounts"],
            ports=params["ports"],
            labels=params["labels"],
            smolvm_allow=render_smolvm(policy),
            policy_hash=policy.digest,
        )
    except OSError as exc:
        module.fail_json(msg=f"image: cannot read {params['image']}: {exc} (fix the path)")
    return None  # unreachable: fail_json exits


def _fail_closed(
    module: AnsibleModule,
    client: SmolvmClient,
    name: str,
    desired: MachineSpec,
    result: dict[str, Any],
) -> None:
    """Read the stored egress back; on any difference stop the machine and fail."""
    actual, state = _read(client, name)
    if actual is not None and egress_matches(actual, desired):
        return
    stopped = ""
    if state == "running":
        try:
            client.stop(name)
            stopped = " The machine was stopped."
        except SmolvmError as exc:
            stopped = f" Stopping it failed too: {exc.describe()}"
    have = actual.to_dict() if actual else {}
    module.fail_json(
        msg=(
            f"smolvm stored different egress for {name} than the compiled policy: stored hosts "
            f"{have.get('allow_hosts')}, cidrs {have.get('allow_cidrs')}, network "
            f"{have.get('network')}, deny rules {have.get('deny_cidrs')}; wanted "
            f"{list(desired.allow_hosts)}, {list(desired.allow_cidrs)}, network "
            f"{desired.network}, deny rules {list(desired.deny_cidrs)}.{stopped} This is a smolvm "
            "bug or a concurrent change; the machine must not run with this allow list."
        ),
        **result,
    )


def _check_mounts(module: AnsibleModule, client: SmolvmClient, desired: MachineSpec | None) -> None:
    """Refuse, on this host and with symlinks resolved, mounts that hand over the host."""
    if desired is None:
        return
    state_dir = os.path.dirname(os.path.dirname(client.database()))
    for source, _target, _read_only in desired.mounts:
        refusal = host_mount_refusal(source, [state_dir])
        if refusal is not None:
            module.fail_json(
                msg=f"machine {module.params['name']}: {refusal} (fix: {MOUNT_FIX})",
                changed=False,
            )


def _client(module: AnsibleModule) -> SmolvmClient:
    """The smolvm client; without a smolvm CLI on the host (one never prepared, e.g. by
    `bottle down`) no machine can exist, so state=absent is already reached."""
    params = module.params
    try:
        return client_from_params(params)
    except SmolvmError as exc:
        if params["state"] != "absent" or exc.code != "NOT_FOUND":
            raise
        module.exit_json(
            changed=False,
            actions=[],
            changed_fields=[],
            state="absent",
            diff={"before": {"state": "absent"}, "after": {"state": "absent"}},
            msg=f"no smolvm CLI on this host, so no machine {params['name']}: {exc.message}",
        )
        raise  # unreachable: exit_json exits


def run(module: AnsibleModule) -> None:
    params = module.params
    name = params["name"]
    client = _client(module)
    desired = _desired(module)
    _check_mounts(module, client, desired)
    actual, actual_state = _read(client, name)
    try:
        todo = plan(
            actual,
            None if actual is None else actual_state,
            desired,
            params["state"],
            params["recreate"],
        )
    except PlanError as exc:
        module.fail_json(msg=f"machine {name}: {exc}", changed=False)
    before = {"state": actual_state, **(actual.to_dict() if actual else {})}
    if desired is None:
        after: dict[str, Any] = {"state": "absent"}
    else:
        want_state = {"started": "running", "stopped": "stopped"}.get(
            params["state"],
            actual_state if actual is not None and "delete" not in todo.actions else "created",
        )
        after = {"state": want_state, **desired.to_dict()}
    result: dict[str, Any] = {
        "changed": todo.changed,
        "actions": todo.actions,
        "changed_fields": todo.changed_fields,
        "diff": {"before": before, "after": after},
    }
    if module.check_mode or not todo.changed:
        result["state"] = actual_state
        if actual is not None:
            result["machine"] = actual.to_dict()
        module.exit_json(**result)

    for action in todo.actions:
        if action == "delete":
            client.delete(name)
        elif action == "create":
            assert desired is not None
            client.create(create_args(name, desired))
            _fail_closed(module, client, name, desired, result)
        elif action == "update":
            assert desired is not None
            client.update(name, todo.update)
            _fail_closed(module, client, name, desired, result)
        elif action == "stop":
            client.stop(name)
        elif action == "start":
            assert desired is not None
            _fail_closed(module, client, name, desired, result)
            client.start(name)
    final, final_state = _read(client, name)
    result["state"] = final_state
    if final is not None:
        result["machine"] = final.to_dict()
    module.exit_json(**result)


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
        required_if=[
            ("state", "started", ("egress",)),
            ("state", "stopped", ("egress",)),
            ("state", "present", ("egress",)),
        ],
    )
    try:
        run(module)
    except SmolvmError as exc:
        module.fail_json(msg=f"machine {module.params['name']}: {exc.describe()}", code=exc.code)
    except Exception as exc:  # unexpected: say so, with the traceback
        module.fail_json(
            msg=f"unexpected error managing machine {module.params['name']}: {exc}",
            exception=traceback.format_exc(),
        )


if __name__ == "__main__":
    main()
