"""Where one docker_bottle module call spends its time, step by step.

Run by the benchmark runner (section ``steps``) with the managed host's interpreter
(``/usr/bin/python3``, Debian's python3-docker) and ``PYTHONPATH=collections``:

    module_steps.py NAME EGRESS_NETWORK UPSTREAM STATE IMAGE

It does what ``plugins/modules/docker_bottle.py``'s ``run()`` does for a bottle with one
exact route and the agent ``IMAGE`` running ``sleep infinity`` - import the Docker SDK,
connect, choose the subnet, inspect the images, read the bottle, plan, carry out each
action - timing each step, and prints one JSON list of ``[step, seconds]``. What it
leaves out is Ansible's part of a module call (AnsiballZ, argument parsing, the result),
which the runner measures separately (a trivial module call).
"""

from __future__ import annotations

import json
import os
import sys
import time

STATE_DIR = "/var/lib/bot-bottle/docker"  # the module's default


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
    client = engine.connect(None)
    mark = step("connect and ping", mark)
    policy = compile_policy({"egress": {"routes": [{"host": "api.bench.example"}]}})
    guard = ""
    if state == "absent":
        wanted = want(name=name, state="absent", policy=policy)
    else:
        subnet = engine.network_subnet(client, Names(name).network)
        if subnet is None:
            subnet = choose_subnet(name, "172.30.0.0/16", 28, engine.used_subnets(client))
        netutils = engine.image_info(client, image, "netutils")
        agent = engine.image_info(client, image, "agent")
        guard = engine.ensure_guard(client, image, netutils["id"], f"{STATE_DIR}/.tools")
        entrypoint, cmd = agent_argv(agent["entrypoint"], agent["cmd"], ["sleep", "infinity"])
        settings = {
            "image": image,
            "image_id": agent["id"],
            "entrypoint": entrypoint,
            "cmd": cmd,
            "user": "",
            "workdir": "",
            "cpus": None,
            "memory_mib": None,
            "capabilities": [],
            "mounts": [],
            "labels": {},
        }
        wanted = want(
            name=name,
            state=state,
            policy=policy,
            subnet=subnet,
            upstreams=[upstream],
            egress_network=egress,
            netutils_image_id=netutils["id"],
            guard_binary=guard,
            state_dir=STATE_DIR,
            agent=settings,
            env={},
        )
        mark = step("subnet, two image inspects, seal guard (cached)", mark)
    directory = os.path.join(STATE_DIR, name)
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
    )
    for action in todo.actions:
        runner.run([action])
        mark = step(action, mark)
    step("total", start)
    print(json.dumps(steps))


if __name__ == "__main__":
    main()
