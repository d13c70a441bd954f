"""The docker_bottle module on a real dockerd: all four states and their transitions,
idempotence, honest check mode, repairs, failing steps, and the seal.

Every container gets an explicit resolver (the bottle's own, or a test-owned
address); the bottle's upstream is a fake resolver this test runs on the gateway of
its own egress network. Nothing leaves the machine.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.botbottle.bottle.plugins.module_utils._docker_bottle import SEAL
from ansible_collections.botbottle.bottle.plugins.module_utils._egress import PROXY_ENV_NAMES
from ansible_collections.botbottle.bottle.plugins.module_utils._policy import build_policy
from tests.helpers import (
    ROOT,
    egress_network,
    require_docker,
    require_images,
    run_module,
    with_net_admin,
)
from tests.helpers import docker as _docker

pytestmark = pytest.mark.integration

NETWORK = "bbmodule-egress"
SUBNET = "172.29.247.0/24"
GATEWAY = "172.29.247.1"
NAME = "modtest"
IMAGE = "bot-bottle/netutils:latest"
PROXY_IMAGE = "bot-bottle/egress-proxy:latest"
SECRET = "bb-module-secret-8e1f"

require_docker()
require_images(IMAGE, PROXY_IMAGE)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    base = tmp_path_factory.mktemp("module")
    with egress_network(NETWORK, SUBNET, GATEWAY, base / "upstream.log") as port:
        try:
            yield port
        finally:
            run_module({"name": NAME, "state": "absent", "state_dir": str(STATE)})


STATE = Path("/var/lib/bot-bottle/test-docker-bottle")
POLICY = build_policy(["ok.bbtest.example"]).to_dict()


def bottle_args(port: int, state: str = "started", **changes: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "name": NAME,
        "state": state,
        "policy": POLICY,
        "upstream_dns": [f"{GATEWAY}#{port}"],
        "egress_network": NETWORK,
        "netutils_image": IMAGE,
        "proxy_image": PROXY_IMAGE,
        "image": IMAGE,
        "command": ["sleep", "infinity"],
        "env": {"TOKEN": SECRET},
        "state_dir": str(STATE),
    }
    args.update(changes)
    return args


def status(name: str) -> str:
    proc = _docker("inspect", "-f", "{{.State.Status}}", name)
    return proc.stdout.strip() if proc.returncode == 0 else "absent"


def agent_dig(name: str, *args: str) -> str:
    return _docker("exec", f"bottle-{NAME}", "dig", "+time=1", "+tries=1", *args, name).stdout


def test_lifecycle(upstream: int) -> None:
    # started from nothing: built in order, the agent last
    first = run_module(bottle_args(upstream))
    assert first.get("failed") is not True, first
    assert first["changed"] and first["actions"][-2:] == ["create_agent", "start_agent"]
    assert status(f"bottle-{NAME}") == "running"
    assert "status: NOERROR" in agent_dig("ok.bbtest.example")  # positive control
    assert "status: NXDOMAIN" in agent_dig("x.ok.bbtest.example")
    assert SECRET not in json.dumps(first)  # env by name only, never its value
    assert first["diff"]["after"]["agent_env"] == sorted(["TOKEN", *PROXY_ENV_NAMES])

    # a re-run changes nothing; so does its check mode
    again = run_module(bottle_args(upstream))
    assert not again["changed"] and again["actions"] == [], again
    assert not run_module(bottle_args(upstream), check=True)["changed"]

    # check mode reports exactly what the real run then does, and changes nothing
    wider = build_policy(["ok.bbtest.example", "two.bbtest.example"]).to_dict()
    predicted = run_module(bottle_args(upstream, policy=wider), check=True)
    assert predicted["changed"]
    assert "status: NXDOMAIN" in agent_dig("two.bbtest.example")  # nothing changed yet
    done = run_module(bottle_args(upstream, policy=wider))
    assert (done["actions"], done["diff"]) == (predicted["actions"], predicted["diff"])
    assert "start_agent" not in done["actions"] and "remove_agent" not in done["actions"]
    assert "status: NOERROR" in agent_dig("two.bbtest.example")

    # stopped: the agent stops, the bottle stays; started brings it back
    stopped = run_module(bottle_args(upstream, "stopped", policy=wider))
    assert stopped["actions"] == ["stop_agent"]
    assert status(f"bottle-{NAME}") == "exited" and status(f"bottle-{NAME}-net") == "running"
    assert not run_module(bottle_args(upstream, "stopped", policy=wider))["changed"]
    assert not run_module(bottle_args(upstream, "present", policy=wider))["changed"]
    restarted = run_module(bottle_args(upstream, policy=wider))
    assert restarted["actions"] == ["start_agent"] and status(f"bottle-{NAME}") == "running"


def test_flushed_rules_and_a_restarted_holder_are_repaired(upstream: int) -> None:
    run_module(bottle_args(upstream))
    flush = with_net_admin(f"bottle-{NAME}-net", "iptables", "-F")
    assert flush.returncode == 0, flush.stderr
    # positive control: with the rules flushed, Docker's resolver answers the agent
    assert "ANSWER SECTION" in agent_dig(f"bottle-{NAME}-net", "@127.0.0.11")
    repaired = run_module(bottle_args(upstream))
    assert repaired["actions"] == ["load_rules", "check_rules"], repaired
    assert "ANSWER SECTION" not in agent_dig(f"bottle-{NAME}-net", "@127.0.0.11")

    # a restarted holder has a new namespace (it sealed itself); the agent rejoins it
    assert _docker("restart", f"bottle-{NAME}-net").returncode == 0
    moved = run_module(bottle_args(upstream))
    assert moved["actions"] == ["restart_agent"], moved
    assert not run_module(bottle_args(upstream))["changed"]


def test_no_long_lived_process_holds_net_admin_and_the_agent_holds_nothing(upstream: int) -> None:
    run_module(bottle_args(upstream))
    for container in (f"bottle-{NAME}-net", f"bottle-{NAME}"):
        pid = _docker("inspect", "-f", "{{.State.Pid}}", container).stdout.strip()
        status_text = Path(f"/proc/{pid}/status").read_text()
        caps = dict(
            line.split(":\t") for line in status_text.splitlines() if line.startswith("Cap")
        )
        assert int(caps["CapEff"], 16) == 0 and int(caps["CapPrm"], 16) == 0, (container, caps)
    pid = _docker("inspect", "-f", "{{.State.Pid}}", f"bottle-{NAME}").stdout.strip()
    assert int(Path(f"/proc/{pid}/status").read_text().split("CapBnd:\t")[1][:16], 16) == 0


def test_a_missing_image_leaves_no_running_agent(upstream: int) -> None:
    run_module(bottle_args(upstream))
    assert status(f"bottle-{NAME}") == "running"
    failed = run_module(bottle_args(upstream, image="bot-bottle/no-such-image:1"))
    assert failed.get("failed") and "not on this host" in failed["msg"], failed
    assert status(f"bottle-{NAME}") != "running"
    assert "stopped" in failed["msg"]
    assert run_module(bottle_args(upstream))["actions"] == ["start_agent"]


def test_a_step_failing_mid_apply_leaves_no_running_agent(upstream: int) -> None:
    """The resolver is recreated on a network that does not exist: the step fails after
    others were done, and the agent is stopped."""
    run_module(bottle_args(upstream))
    bad = run_module(bottle_args(upstream, egress_network="bbmodule-no-such-network"))
    assert bad.get("failed"), bad
    assert "create resolver failed" in bad["msg"] and "stopped" in bad["msg"], bad["msg"]
    assert status(f"bottle-{NAME}") != "running"
    assert run_module(bottle_args(upstream)).get("failed") is not True
    assert status(f"bottle-{NAME}") == "running"


def _first_answers(since: str) -> str:
    """What the agent's own command got from Docker's resolver since ``since``."""
    return _docker("logs", "--since", since, f"bottle-{NAME}").stdout


PROBE = [
    "sh",
    "-c",
    f"dig +short +time=1 +tries=1 @127.0.0.11 bottle-{NAME}-resolver; "
    f"echo probe-done; exec sleep infinity",
]


def _restart_dockerd() -> None:
    pid_file = ROOT / ".cache" / "dockerd.pid"
    pid = int(pid_file.read_text()) if pid_file.is_file() else 0
    if pid <= 0 or not Path(f"/proc/{pid}").exists():
        if os.environ.get("CI"):  # .ci/run starts dockerd through scripts/dockerd
            raise AssertionError("dockerd was not started by scripts/dockerd; cannot restart it")
        pytest.skip("dockerd was not started by scripts/dockerd here; cannot restart it")
    os.kill(pid, signal.SIGTERM)
    try:
        deadline = time.monotonic() + 60
        while _docker("version", "--format", "{{.Server.Version}}").returncode == 0:
            assert time.monotonic() < deadline, "dockerd did not stop within 60 s"
            time.sleep(0.2)
        # while Docker is down, the bottles are unknown - never reported absent
        seen = run_module({"names": []}, module="docker_bottle_info")
        assert seen.get("available") is False, seen
        assert "does not answer" in seen["reason"] and seen.get("failed") is not True, seen
    finally:
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        started = subprocess.run(
            [str(ROOT / "scripts" / "dockerd")], capture_output=True, check=False
        )
    assert started.returncode == 0, started.stderr


@pytest.mark.parametrize(
    "order",
    [
        ["net", "agent"],
        ["agent", "net", "agent"],
        ["resolver", "net", "agent"],
        ["net+agent"],
    ],
)
def test_containers_started_by_hand_never_run_the_agent_without_its_rules(
    upstream: int, order: list[str]
) -> None:
    args = bottle_args(upstream, command=PROBE)
    assert run_module(args).get("failed") is not True
    # positive control: an unprotected container on the bottle network gets an answer
    control = _docker(
        "run", "--rm", "--network", f"bottle-{NAME}", "--dns", GATEWAY, IMAGE,
        "dig", "+short", "+time=2", "+tries=1", "@127.0.0.11", f"bottle-{NAME}-resolver",
    )  # fmt: skip
    assert control.stdout.strip(), control
    if order == ["net", "agent"]:
        _restart_dockerd()  # as after a reboot: the holder and the agent stay exited
    else:
        _docker(
            "stop", "-t", "1", f"bottle-{NAME}", f"bottle-{NAME}-net", f"bottle-{NAME}-resolver"
        )
    assert status(f"bottle-{NAME}") == "exited" and status(f"bottle-{NAME}-net") == "exited"
    since = str(int(time.time()))
    for step in order:
        names = [
            f"bottle-{NAME}-{p}" if p != "agent" else f"bottle-{NAME}" for p in step.split("+")
        ]
        _docker("start", *names)
    deadline = time.monotonic() + 20
    while "probe-done" not in _first_answers(since) and time.monotonic() < deadline:
        if status(f"bottle-{NAME}") != "running":
            break
        time.sleep(0.2)
    logs = _first_answers(since)
    running = status(f"bottle-{NAME}") == "running"
    if running:
        assert "probe-done" in logs, logs
        answers = [line for line in logs.splitlines() if re.fullmatch(r"[0-9.]+", line.strip())]
        assert answers == [], f"the agent's first query was answered: {logs}"
    # either way, the next run leaves a sealed bottle
    assert run_module(args).get("failed") is not True


def test_the_seal_guard_holds_the_command_until_the_namespace_is_sealed(upstream: int) -> None:
    run_module(bottle_args(upstream))  # provides the guard binary
    guard = _docker(
        "inspect", "-f",
        '{{range .Mounts}}{{if eq .Destination "/.bot-bottle/busybox"}}{{.Source}}{{end}}{{end}}',
        f"bottle-{NAME}",
    ).stdout.strip()  # fmt: skip
    assert guard.startswith(str(STATE / ".tools" / "busybox-")), guard
    holder, agent = "bbguard-net", "bbguard-agent"
    try:
        assert _docker(
            "run", "-d", "--name", holder, "--network", f"bottle-{NAME}", "--dns", GATEWAY,
            IMAGE, "sleep", "infinity",
        ).returncode == 0  # fmt: skip
        script = " ".join(
            json.loads(
                _docker("inspect", "-f", "{{json .Config.Entrypoint}}", f"bottle-{NAME}").stdout
            )[3:4]
        )  # the guard script the module gives agents
        assert _docker(
            "run", "-d", "--name", agent, "--network", f"container:{holder}", "--cap-drop", "ALL",
            "-v", f"{guard}:/.bot-bottle/busybox:ro", "--entrypoint", "/.bot-bottle/busybox",
            IMAGE, "sh", "-c", script, "guard", "echo", "command-ran",
        ).returncode == 0  # fmt: skip
        time.sleep(2)  # the guard polls every 50 ms: 2 s is 40 chances to run too early
        assert "command-ran" not in _docker("logs", agent).stdout
        assert status(agent) == "running"
        seal = with_net_admin(holder, "ip", "link", "set", "dev", "lo", "alias", SEAL)
        assert seal.returncode == 0, seal.stderr
        deadline = time.monotonic() + 10
        while "command-ran" not in _docker("logs", agent).stdout and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "command-ran" in _docker("logs", agent).stdout
    finally:
        _docker("rm", "-f", agent, holder)


def test_the_guard_runs_the_images_own_program(upstream: int) -> None:
    """Busybox prefers its applets: the guard must exec the image's `sleep`, not its own."""
    run_module(bottle_args(upstream))
    init = _docker("inspect", "-f", "{{.State.Pid}}", f"bottle-{NAME}").stdout.strip()
    children = Path(f"/proc/{init}/task/{init}/children").read_text().split()
    assert len(children) == 1, children
    assert os.readlink(f"/proc/{children[0]}/exe") == "/usr/bin/sleep"
    assert Path(f"/proc/{children[0]}/cmdline").read_bytes().split(b"\0")[1] == b"infinity"
