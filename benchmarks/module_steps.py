"""Where one docker_bottle module call spends its time, step by step.

Run by the benchmark runner (section ``steps``) with the managed host's interpreter
(``/usr/bin/python3``, Debian's python3-docker) and ``PYTHONPATH=collections``:

    module_steps.py NAME EGRESS_NETWORK UPSTREAM STATE IMAGE [EXTRA_JSON]

It does what ``plugins/modules/docker_bottle.py``'s ``run()`` does for a bottle with one
exact route and the agent ``IMAGE`` running ``sleep infinity`` - import the Docker SDK,
connect, choose the subnet, inspect the images, read the bottle, plan, carry out each
action - timing each step, and prints one JSON list of ``[step, seconds]``. What it
leaves out is Ansible's part of a module call (AnsiballZ, argument parsing, the result),
which the runner measures separately (a trivial module call).

``EXTRA_JSON`` (section ``proxy``) changes the bottle: ``routes`` (the manifest's
``egress.routes``), ``proxy_image`` (default ``bot-bottle/egress-proxy:latest``),
``trusted_ca`` (the module's ``egress_trusted_ca``), ``agent_image``, ``mounts`` (the
module's, as dicts), ``state_dir`` and ``subnet_pool``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

STATE_DIR = "/var/lib/bot-bottle/docker"  # the module's default
PROXY_IMAGE = "bot-bottle/egress-proxy:latest"
ROUTES = [{"host": "api.bench.example"}]


def _agent_settings(
    image: str, info: dict[str, Any], mounts: list[dict[str, Any]], agent_argv: Any
) -> dict[str, Any]:
    """The agent's non-secret settings, as the module builds them (``sleep infinity``)."""
    entrypoint, cmd = agent_argv(info["entrypoint"], info["cmd"], ["sleep", "infinity"])
    return {
        "image": image,
        "image_id": info["id"],
        "entrypoint": entrypoint,
        "cmd": cmd,
        "user": "",
        "workdir": "",
        "cpus": None,
        "memory_mib": None,
        "capabilities": [],
        "mounts": [
            {**m, "source": os.path.realpath(m["source"]), "read_only": bool(m.get("read_only"))}
            for m in mounts
        ],
        "labels": {},
    }


def main() -> None:
    start = time.perf_counter()
    steps: list[tuple[str, float]] = []

    def step(label: str, since: float) -> float:
        now = time.perf_counter()
        steps.append((label, round(now - since, 4)))
        return now

    import docker  # noqa: F401, PLC0415 - the module's first import of the SDK, timed

    mark = step("import the Docker SDK", start)
    from ansible_collections.botbottle.bottle.plugins.module_utils import (  # noqa: PLC0415
        _docker_engine as engine,
    )
    from ansible_collections.botbottle.bottle.plugins.module_utils._docker_bottle import (  # noqa: PLC0415
        Names,
        agent_argv,
        file_digest,
        plan,
        want,
    )
    from ansible_collections.botbottle.bottle.plugins.module_utils._docker_net import (  # noqa: PLC0415
        choose_subnet,
    )
    from ansible_collections.botbottle.bottle.plugins.module_utils._policy import (  # noqa: PLC0415
        compile_policy,
    )

    mark = step("import the collection's module_utils", mark)
    name, egress, upstream, state, image = sys.argv[1:6]
    extra = json.loads(sys.argv[6]) if len(sys.argv) > 6 else {}
    state_dir = str(extra.get("state_dir", STATE_DIR))
    pool = str(extra.get("subnet_pool", "172.30.0.0/16"))
    proxy_image, agent_image, trusted_ca = (
        str(extra.get(k, default))
        for k, default in (("proxy_image", PROXY_IMAGE), ("agent_image", image), ("trusted_ca", ""))
    )
    client = engine.connect(None)
    mark = step("connect and ping", mark)
    policy = compile_policy({"egress": {"routes": extra.get("routes", ROUTES)}})
    guard = ""
    if state == "absent":
        wanted = want(name=name, state="absent", policy=policy)
    else:
        subnet = engine.network_subnet(client, Names(name).network)
        if subnet is None:
            subnet = choose_subnet(name, pool, 28, engine.used_subnets(client))
        netutils = engine.image_info(client, image, "netutils")
        agent = engine.image_info(client, agent_image, "agent")
        proxy = engine.image_info(client, proxy_image, "egress proxy")
        code_dir, _ = engine.proxy_code_dir(f"{state_dir}/.tools")
        trusted_digest = ""
        if trusted_ca:
            with open(trusted_ca, encoding="ascii") as handle:
                trusted_digest = file_digest(handle.read())
        guard = engine.ensure_guard(client, image, netutils["id"], f"{state_dir}/.tools")
        settings = _agent_settings(agent_image, agent, extra.get("mounts", []), agent_argv)
        wanted = want(
            name=name,
            state=state,
            policy=policy,
            subnet=subnet,
            upstreams=[upstream],
            egress_network=egress,
            netutils_image_id=netutils["id"],
            guard_binary=guard,
            state_dir=state_dir,
            agent=settings,
            env={},
            host_addresses=engine.host_addresses(),
            subnet_pool=pool,
            proxy_image_id=proxy["id"],
            proxy_code=code_dir,
            trusted_ca=os.path.realpath(trusted_ca) if trusted_ca else "",
            trusted_ca_digest=trusted_digest,
        )
        mark = step("subnet, three image inspects, seal guard (cached)", mark)
    directory = os.path.join(state_dir, name)
    seen = engine.read(client, wanted.names, directory, wanted.stamp)
    mark = step("read the bottle", mark)
    todo = plan(seen, wanted)
    mark = step("plan", mark)
    runner = engine.Engine(
        client,
        wanted,
        directory=directory,
        netutils_image=image,
        egress_network=egress,
        guard=guard,
        proxy_image=proxy_image,
    )
    for action in todo.actions:
        runner.run([action])
        mark = step(action, mark)
    step("total", start)
    print(json.dumps(steps))


if __name__ == "__main__":
    main()
