#!/usr/bin/python
# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Module: one Docker bottle to its state in one call (read, plan, act)."""

from __future__ import annotations

import os
import traceback
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.botbottle.bottle.plugins.module_utils._docker_bottle import (
    STATES,
    Names,
    PlanError,
    Want,
    agent_argv,
    file_digest,
    plan,
    want,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._docker_engine import (
    Engine,
    EngineError,
    connect,
    ensure_guard,
    host_addresses,
    image_info,
    network_subnet,
    proxy_code_dir,
    read,
    used_subnets,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._docker_net import choose_subnet
from ansible_collections.botbottle.bottle.plugins.module_utils._policy import policy_from_dict
from ansible_collections.botbottle.bottle.plugins.module_utils._runtime import (
    MOUNT_FIX,
    RuntimeSettingError,
    check_capabilities,
    host_mount_refusal,
)

DOCUMENTATION = r"""
module: docker_bottle
short_description: Bring one bot-bottle bottle on the Docker example backend to its state
version_added: 0.2.0
author: bot-bottle contributors
description:
  - Reads everything the bottle is made of (its internal network, the resolver and its
    configuration, the namespace holder, the rules actually loaded in the namespace and its
    seal, the agent, the agent's namespace link, the files in the state directory), computes
    a plan with a pure function, and acts in order. One call per bottle.
  - The holder loads the bottle's rules (one C(iptables-restore) and one
    C(ip6tables-restore) transaction) every time it starts, marks the namespace sealed, then
    drops to C(nobody) with no capabilities. The agent runs behind a seal guard that waits for
    that mark, so however its containers are started (C(docker start), a restart policy, a
    reboot) the agent never runs without its rules. No long-lived process keeps C(NET_ADMIN).
  - Fails closed. If any step fails the agent is stopped (or never started), and the agent is
    started only after the rules were loaded and read back.
  - A changed allowlist restarts the resolver and reloads the rules; the agent keeps running.
  - Every bottle has an egress proxy (mitmproxy with bot-bottle's addon, nothing else), on
    the bottle network and the egress network, which is the agent's only way out; its rules
    accept the proxy's port, the resolver and C(cidr) routes, nothing else. The agent gets
    C(HTTP_PROXY), C(HTTPS_PROXY), C(ALL_PROXY), C(NO_PROXY) (both cases), the bottle CA's
    certificate at C(/etc/bot-bottle/ca.pem) and over C(/etc/ssl/certs/ca-certificates.crt),
    and C(SSL_CERT_FILE), C(REQUESTS_CA_BUNDLE), C(CURL_CA_BUNDLE), C(NODE_EXTRA_CA_CERTS),
    C(GIT_SSL_CAINFO), C(PIP_CERT) pointing at it. Each bottle has its own CA, made once
    with C(openssl) on the host; its key stays in the state directory and the proxy.
  - Talks to the Docker Engine through the Docker SDK for Python over its socket.
options:
  name:
    description:
      - Bottle name; its objects are called C(bottle-<name>) (agent and network),
        C(bottle-<name>-net) (holder), C(bottle-<name>-resolver) and C(bottle-<name>-proxy).
    type: str
    required: true
  state:
    description:
      - C(started) runs the agent; C(stopped) keeps the bottle with its agent stopped (created
        if missing); C(present) creates what is missing and leaves the agent's run state as it
        is; C(absent) removes the containers, the network and the state directory (with the
        bottle's CA).
    type: str
    choices: [absent, present, stopped, started]
    default: started
  policy:
    description:
      - The compiled egress policy (P(botbottle.bottle.egress_policy#filter), or the
        C(policy) of the P(botbottle.bottle.bottle_manifest#lookup) lookup).
    type: dict
  upstream_dns:
    description: Resolvers allowlisted names are forwarded to (C(IP) or C(IP#PORT)).
    type: list
    elements: str
    default: []
  egress_network:
    description: Docker network through which the resolver and the proxy reach the outside.
    type: str
    default: ""
  proxy_image:
    description:
      - The local egress proxy image, built by this project's C(egress_proxy_image) role
        (C(bot-bottle/egress-proxy:latest)). Required unless O(state=absent).
    type: str
  egress_trusted_ca:
    description:
      - A CA file (PEM) on the host that the proxy verifies origins' certificates against
        instead of the public roots, for origins with a private CA (the demo's stand-in, a
        company's internal services). Empty for the public roots.
    type: path
    default: ""
  egress_private_networks:
    description:
      - Private networks (CIDRs) that an allowed host name may resolve to, for services
        with private addresses reached by name through the proxy (a company's internal
        origins, the demo's stand-in). Otherwise the proxy refuses a name whose answer is
        private unless a C(cidr) route covers it. Only names are admitted there, never an
        IP literal, and the firewall is unchanged. Loopback, link-local, metadata and
        unspecified ranges are refused, and so are the bottle's gateway, the bottle subnet
        pool and the host's own addresses, whatever this says.
    type: list
    elements: str
    default: []
  egress_log_minimum:
    description:
      - The lowest level the egress proxy logs at, whatever the manifest's C(egress.log) says
        (C(1) blocks and DLP hits, C(2) also every request and response line), for operators
        who want every refusal in C(bottle audit). A manifest may raise it, never lower it.
    type: int
    choices: [0, 1, 2]
    default: 0
  proxy_wait_seconds:
    description: How long to wait for a (re)started proxy to listen; polled, never slept out.
    type: int
    default: 30
  netutils_image:
    description:
      - The local image the resolver and the holder run (dnsmasq, iptables, iproute2,
        dnsutils, busybox-static).
    type: str
  image:
    description: The agent's image (local; never pulled).
    type: str
  command:
    description: The agent's command (replaces the image's CMD).
    type: list
    elements: str
  workdir:
    description: The agent's working directory.
    type: str
  user:
    description: The user the agent runs as.
    type: str
  cpus:
    description: CPU cap.
    type: float
  memory_mib:
    description: Memory cap in MiB.
    type: int
  capabilities:
    description:
      - Capabilities added to the agent, in any spelling (C(cap_chown), C(CHOWN)). Only the
        allowlist that cannot undo the sandbox is accepted; anything else fails the module, even
        when a play skipped manifest validation.
    type: list
    elements: str
    default: []
  mounts:
    description:
      - Host folders bind-mounted into the agent. Refused, after resolving symlinks on this host,
        when a source is C(/), a Unix socket, a host system tree, container-runtime or bot-bottle
        state, or a folder holding one of them. The resolved path is what gets mounted.
    type: list
    elements: dict
    default: []
    suboptions:
      source:
        description: Absolute host path; it must exist.
        type: path
        required: true
      target:
        description: Absolute path inside the agent.
        type: str
        required: true
      read_only:
        description: Mount read-only.
        type: bool
        default: false
  labels:
    description: Extra labels on the agent.
    type: dict
    default: {}
  env:
    description: The agent's environment. Values are secrets; the module returns names only.
    type: dict
    default: {}
  credentials:
    description:
      - Route credentials by C(token_ref) (the variable names in the manifest's
        C(egress.routes[].auth)), handed to the running egress proxy alone, into a tmpfs
        (never the host's disk, the agent, or a result). Secret.
    type: dict
    default: {}
  known_secrets:
    description:
      - The bottle's own secret values (its secret C(env) values), handed to the proxy alone
        like O(credentials) for data-loss prevention to look for. Secret.
    type: list
    elements: str
    default: []
  state_dir:
    description: Where the bottle's files live on the host (C(<state_dir>/<name>)).
    type: path
    default: /var/lib/bot-bottle/docker
  subnet_pool:
    description: IPv4 pool the bottle networks' subnets come from (an existing one is kept).
    type: str
    default: 172.30.0.0/16
  subnet_prefix:
    description: Prefix length of each bottle network.
    type: int
    default: 28
  resolver_wait_seconds:
    description: How long to wait for a (re)started resolver to answer; polled, never slept out.
    type: int
    default: 30
extends_documentation_fragment:
  - botbottle.bottle.docker
attributes:
  check_mode:
    support: full
    details: The plan, C(changed), C(actions) and the diff are the same as a real run's.
  diff_mode:
    support: full
    details: Before and after of every part of the bottle; env values never appear, only names.
notes:
  - The bottle's own gateway, the host's own addresses, loopback, link-local and metadata
    addresses are rejected in the namespace before any C(cidr) route is accepted.
"""

EXAMPLES = r"""
- name: A bottle from a validated manifest
  botbottle.bottle.docker_bottle:
    name: "{{ bottle.name }}"
    state: started
    policy: "{{ bottle.policy }}"
    upstream_dns: [192.0.2.53]
    egress_network: bottle-egress
    netutils_image: bot-bottle/netutils:latest
    proxy_image: bot-bottle/egress-proxy:latest
    image: bot-bottle/netutils:latest
    command: [sleep, infinity]
  no_log: false

- name: Gone
  botbottle.bottle.docker_bottle:
    name: demo
    state: absent
"""

RETURN = r"""
actions:
  description: What was done (or would be, in check mode), in order.
  type: list
  elements: str
  returned: always
  sample: [write_files, make_ca, create_network, create_resolver, wait_resolver,
           create_holder, check_rules, create_proxy, wait_proxy, create_agent, start_agent]
changed_fields:
  description: >-
    Which parts differed (C(file:rules.ipv4), C(rules), C(agent_namespace), C(agent_env), ...).
  type: list
  elements: str
  returned: always
bottle:
  description: The bottle's names, subnet, addresses, policy hash and rules stamp.
  type: dict
  returned: unless state is absent
"""


def _argument_spec() -> dict[str, Any]:
    return {
        "name": {"type": "str", "required": True},
        "state": {"type": "str", "choices": list(STATES), "default": "started"},
        "policy": {"type": "dict"},
        "upstream_dns": {"type": "list", "elements": "str", "default": []},
        "egress_network": {"type": "str", "default": ""},
        "proxy_image": {"type": "str"},
        "egress_trusted_ca": {"type": "path", "default": ""},
        "egress_private_networks": {"type": "list", "elements": "str", "default": []},
        "egress_log_minimum": {"type": "int", "choices": [0, 1, 2], "default": 0},
        "proxy_wait_seconds": {"type": "int", "default": 30},
        "netutils_image": {"type": "str"},
        "image": {"type": "str"},
        "command": {"type": "list", "elements": "str"},
        "workdir": {"type": "str"},
        "user": {"type": "str"},
        "cpus": {"type": "float"},
        "memory_mib": {"type": "int"},
        "capabilities": {"type": "list", "elements": "str", "default": []},
        "mounts": {
            "type": "list",
            "elements": "dict",
            "default": [],
            "options": {
                "source": {"type": "path", "required": True},
                "target": {"type": "str", "required": True},
                "read_only": {"type": "bool", "default": False},
            },
        },
        "labels": {"type": "dict", "default": {}},
        "env": {"type": "dict", "default": {}, "no_log": True},
        "credentials": {"type": "dict", "default": {}, "no_log": True},
        "known_secrets": {"type": "list", "elements": "str", "default": [], "no_log": True},
        "state_dir": {"type": "path", "default": "/var/lib/bot-bottle/docker"},
        "subnet_pool": {"type": "str", "default": "172.30.0.0/16"},
        "subnet_prefix": {"type": "int", "default": 28},
        "resolver_wait_seconds": {"type": "int", "default": 30},
        "docker_host": {"type": "str"},
    }


def _mounts(module: AnsibleModule) -> list[dict[str, Any]]:
    params = module.params
    resolved = []
    for index, mount in enumerate(params["mounts"]):
        refusal = host_mount_refusal(mount["source"], [params["state_dir"]])
        if refusal is not None:
            module.fail_json(
                msg=f"bottle {params['name']}: mounts[{index}]: {refusal} (fix: {MOUNT_FIX})"
            )
        if not os.path.exists(mount["source"]):
            module.fail_json(
                msg=f"bottle {params['name']}: mounts[{index}]: {mount['source']} does not exist "
                "on this host (fix: create it, or correct runtime.mounts)"
            )
        resolved.append({**mount, "source": os.path.realpath(mount["source"])})
    return resolved


def _want(module: AnsibleModule, client: Any) -> tuple[Want, str]:
    """The wanted bottle and the path of the seal guard's busybox."""
    params = module.params
    name = params["name"]
    if params["state"] == "absent":
        return want(name=name, state="absent", policy=policy_from_dict({})), ""
    for required in ("policy", "netutils_image", "image", "proxy_image"):
        if not params[required]:
            module.fail_json(msg=f"bottle {name}: {required} is required unless state=absent")
    try:
        policy = policy_from_dict(params["policy"])
        capabilities = check_capabilities(params["capabilities"])
    except (ValueError, RuntimeSettingError) as exc:
        module.fail_json(msg=f"bottle {name}: {exc}")
    names = Names(name)
    subnet = network_subnet(client, names.network)
    if subnet is None:
        subnet = choose_subnet(
            name, params["subnet_pool"], params["subnet_prefix"], used_subnets(client)
        )
    netutils = image_info(client, params["netutils_image"], "netutils")
    agent_image = image_info(client, params["image"], "agent")
    proxy_image = image_info(client, params["proxy_image"], "egress proxy")
    code_dir, _ = proxy_code_dir(os.path.join(params["state_dir"], ".tools"))
    trusted_ca, trusted_digest = params["egress_trusted_ca"], ""
    if trusted_ca:
        try:
            with open(trusted_ca, encoding="ascii") as handle:
                trusted_digest = file_digest(handle.read())
        except (OSError, UnicodeDecodeError) as exc:
            if module.check_mode and not os.path.exists(trusted_ca):
                trusted_digest = "not made yet"  # an earlier task of the run makes it
            else:
                module.fail_json(
                    msg=f"bottle {name}: egress_trusted_ca {trusted_ca} cannot be read ({exc}); "
                    "give a PEM file on this host, or leave it empty for the public roots"
                )
        trusted_ca = os.path.realpath(trusted_ca)
    entrypoint, cmd = agent_argv(agent_image["entrypoint"], agent_image["cmd"], params["command"])
    guard = ensure_guard(
        client,
        params["netutils_image"],
        netutils["id"],
        os.path.join(params["state_dir"], ".tools"),
    )
    agent = {
        "image": params["image"],
        "image_id": agent_image["id"],
        "entrypoint": entrypoint,
        "cmd": cmd,
        "user": params["user"] or "",
        "workdir": params["workdir"] or "",
        "cpus": params["cpus"],
        "memory_mib": params["memory_mib"],
        "capabilities": capabilities,
        "mounts": _mounts(module),
        "labels": dict(sorted((str(k), str(v)) for k, v in params["labels"].items())),
    }
    wanted = want(
        name=name,
        state=params["state"],
        policy=policy,
        subnet=subnet,
        upstreams=params["upstream_dns"],
        egress_network=params["egress_network"],
        netutils_image_id=netutils["id"],
        guard_binary=guard,
        state_dir=params["state_dir"],
        agent=agent,
        env={str(k): str(v) for k, v in params["env"].items()},
        host_addresses=host_addresses(),
        subnet_pool=params["subnet_pool"],
        proxy_image_id=proxy_image["id"],
        proxy_code=code_dir,
        trusted_ca=trusted_ca,
        trusted_ca_digest=trusted_digest,
        credentials={str(k): str(v) for k, v in params["credentials"].items()},
        known_secrets=params["known_secrets"],
        private_networks=params["egress_private_networks"],
        log_minimum=params["egress_log_minimum"],
    )
    return wanted, guard


def run(module: AnsibleModule) -> None:
    params = module.params
    client = connect(params["docker_host"])
    wanted, guard = _want(module, client)
    directory = os.path.join(params["state_dir"], params["name"])
    seen = read(client, wanted.names, directory, wanted.stamp)
    todo = plan(seen, wanted)
    result: dict[str, Any] = {
        "changed": todo.changed,
        "actions": list(todo.actions),
        "changed_fields": list(todo.changed_fields),
        "diff": {"before": todo.before, "after": todo.after},
    }
    if wanted.state != "absent":
        result["bottle"] = {
            "names": {
                "agent": wanted.names.agent,
                "holder": wanted.names.holder,
                "resolver": wanted.names.resolver,
                "proxy": wanted.names.proxy,
                "network": wanted.names.network,
            },
            "subnet": wanted.subnet,
            "addresses": dict(wanted.addresses),
            "policy": wanted.policy_hash,
            "rules": wanted.stamp,
        }
    if module.check_mode or not todo.changed:
        module.exit_json(**result)
    engine = Engine(
        client,
        wanted,
        directory=directory,
        netutils_image=params["netutils_image"] or "",
        egress_network=params["egress_network"],
        guard=guard,
        proxy_image=params["proxy_image"] or "",
        resolver_wait=float(params["resolver_wait_seconds"]),
        proxy_wait=float(params["proxy_wait_seconds"]),
    )
    engine.run(todo.actions)
    module.exit_json(**result)


def _fail_closed(module: AnsibleModule) -> str:
    """Stop the agent after a failure outside the engine's actions (fail closed)."""
    if module.check_mode or module.params["state"] == "absent":
        return ""
    try:
        client = connect(module.params["docker_host"])
        agent = Names(module.params["name"]).agent
        info = client.inspect_container(agent)
        if (info.get("State") or {}).get("Running"):
            client.stop(agent, timeout=1)
            return " Its agent was stopped (fail closed)."
    except Exception:  # nothing there, or Docker is gone: nothing runs either way
        return ""
    return ""


def main() -> None:
    module = AnsibleModule(argument_spec=_argument_spec(), supports_check_mode=True)
    name = module.params["name"]
    try:
        run(module)
    except EngineError as exc:  # the engine stopped the agent already if it acted
        module.fail_json(msg=str(exc) + _fail_closed(module))
    except (PlanError, ValueError) as exc:
        module.fail_json(msg=f"bottle {name}: {exc}.{_fail_closed(module)}")
    except Exception as exc:  # unexpected: say so, with the traceback
        module.fail_json(
            msg=f"unexpected error managing bottle {name}: {exc}.{_fail_closed(module)}",
            exception=traceback.format_exc(),
        )


if __name__ == "__main__":
    main()
