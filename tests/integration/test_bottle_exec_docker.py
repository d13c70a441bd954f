"""`bottle exec` / `bottle shell` end to end: a Docker bottle brought up with the real
CLI (ansible-runner, site.yml, this machine's dockerd), then commands run in it through
the CLI as a user would.

Like test_bottle_cli_docker.py, the test creates its own egress network and answers
allowlisted names with a fake upstream bound to that network's gateway address (on
this machine); no query leaves the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import bottle, docker_host, egress_network, require_docker, write_inventory
from tests.helpers import docker as _docker

pytestmark = pytest.mark.integration

NETWORK = "bbexec-egress"
SUBNET = "172.29.245.0/24"
GATEWAY = "172.29.245.1"
NAME = "exectest"
AGENT = f"bottle-{NAME}"
TOKEN = "exec-env-value-5e0b"
USER = "4242"
SECRET = "bb-exec-secret-value-71d3"

require_docker()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return bottle(*args, BB_EXEC_SECRET=SECRET)


def _bottle_argv() -> list[str]:
    return [str(Path(sys.executable).parent / "bottle")]


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("exec")
    (base / f"{NAME}.yml").write_text(
        f"env:\n  TOKEN: {TOKEN}\n  FROM_HOST: ${{BB_EXEC_SECRET}}\n"
        f"runtime:\n  user: '{USER}'\n  command: [sleep, infinity]\n"
        "egress:\n  routes:\n    - host: exec.bbtest.example\n"
    )
    with egress_network(NETWORK, SUBNET, GATEWAY, base / "upstream.log") as port:
        host = docker_host(
            [{"manifest": f"{NAME}.yml"}],
            NETWORK,
            f"{GATEWAY}#{port}",
            # `up` ends with bottle verify: its literal resolver is this test's, on this machine
            bottle_verify_resolvers=[f"{GATEWAY}#{port}"],
            bottle_verify_audit_dir=str(base / "audit"),
        )
        path = write_inventory(base / "inventory.yml", host)
        try:
            up = run("up", "-i", str(path))
            assert up.returncode == 0, up.stdout + up.stderr
            yield path
        finally:
            run("down", "-i", str(path))


def test_exec_runs_as_the_bottles_user_with_its_env(inventory: Path) -> None:
    proc = run("exec", NAME, "-i", str(inventory), "--", "sh", "-c", 'echo "$TOKEN"; id -u')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [TOKEN, USER]
    # the host variable the manifest copies reached the bottle's env too
    proc = run("exec", NAME, "-i", str(inventory), "--", "printenv", "FROM_HOST")
    assert (proc.returncode, proc.stdout.strip()) == (0, SECRET)


def test_exec_keeps_arguments_apart_and_passes_stdin(inventory: Path) -> None:
    args = ["two words", "$TOKEN", "'quoted'", "--", "-i"]
    proc = run("exec", NAME, "-i", str(inventory), "--", "printf", "%s\\n", *args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == args
    piped = subprocess.run(
        [
            *_bottle_argv(),
            "exec",
            NAME,
            "-i",
            str(inventory),
            "--limit",
            "localhost",
            "--",
            "cat",
        ],
        input="through stdin\n",
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert (piped.returncode, piped.stdout) == (0, "through stdin\n"), piped.stderr


def test_exec_exit_code_propagates(inventory: Path) -> None:
    proc = run("exec", NAME, "-i", str(inventory), "--", "sh", "-c", "exit 7")
    assert proc.returncode == 7, proc.stderr


def test_shell_reads_commands_from_stdin(inventory: Path) -> None:
    shell = subprocess.run(
        [*_bottle_argv(), "shell", NAME, "-i", str(inventory)],
        input='echo "$TOKEN"; id -u; exit 3\n',
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert shell.returncode == 3, shell.stderr
    assert shell.stdout.splitlines() == [TOKEN, USER]


def test_bad_input_exits_2(inventory: Path) -> None:
    proc = run("exec", "nosuch", "-i", str(inventory), "--", "true")
    assert proc.returncode == 2
    assert "no host in inventory" in proc.stderr and "declares bottle nosuch" in proc.stderr
    assert f"bottles there: {NAME}" in proc.stderr
    proc = run("exec", NAME, "-i", str(inventory), "--limit", "nomatch", "--", "true")
    assert proc.returncode == 2 and "(--limit nomatch)" in proc.stderr
    proc = run("exec", NAME, "-i", str(inventory.parent / "missing.yml"), "--", "true")
    assert proc.returncode == 2 and "not found" in proc.stderr
    proc = run("exec", NAME, "-i", str(inventory))
    assert proc.returncode == 2 and "needs a command" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_stopped_bottle_exits_1(inventory: Path) -> None:
    assert _docker("stop", "-t", "1", AGENT).returncode == 0
    try:
        proc = run("exec", NAME, "-i", str(inventory), "--", "true")
        assert proc.returncode == 1
        assert f"bottle {NAME} is not running on localhost" in proc.stderr
        assert f"bottle up -i {inventory} --limit localhost" in proc.stderr
        shell = run("shell", NAME, "-i", str(inventory))
        assert shell.returncode == 1 and "is not running" in shell.stderr
    finally:
        up = run("up", "-i", str(inventory))
        assert up.returncode == 0, up.stdout + up.stderr
    proc = run("exec", NAME, "-i", str(inventory), "--", "true")
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------- a managed host


HOST = "bbexec-host"
FAKE_SMOLVM = """#!/bin/sh
# A stand-in for smolvm on the managed host: logs each call, answers `machine status`
# from a table, and runs `machine exec`'s command here (in the host container).
{
  printf 'call'
  printf ' [%s]' "$@"
  printf ' XDG_DATA_HOME=%s SMOL_CLOUD_TOKEN=%s\\n' "${XDG_DATA_HOME-}" "${SMOL_CLOUD_TOKEN-unset}"
} >> /tmp/smolvm.log
op=$2
name=
while [ $# -gt 0 ]; do
  case $1 in
    --name) name=$2; shift 2 ;;
    --) shift; break ;;
    *) shift ;;
  esac
done
case $op in
  status)
    case $name in
      bottle-runs) echo '{"name": "bottle-runs", "state": "running"}' ;;
      bottle-stopped) echo '{"name": "bottle-stopped", "state": "stopped"}' ;;
      *) printf '{"error": {"code": "CONFIG_ERROR", "message": "machine %s not found"}}\\n' \\
           "$name" >&2
         exit 1 ;;
    esac ;;
  exec) exec "$@" ;;
  *) exit 2 ;;
esac
"""
SMOLVM_PATH = "/opt/bot-bottle/smolmachines/lib/python3.11/site-packages/smol/smol-vmm"


@pytest.fixture(scope="module")
def managed_host(inventory: Path) -> Iterator[Path]:
    """A container as a managed host (community.docker.docker, as in test_fleet.py) with a
    fake smolvm. Uses the agent image `bottle up` provided for the ``inventory`` bottle."""
    base = inventory.parent
    _docker("rm", "-f", HOST)
    started = _docker(
        "run",
        "-d",
        "--name",
        HOST,
        "--network",
        "none",
        "--dns",
        "127.0.0.1",
        "-e",
        "SMOL_CLOUD_TOKEN=must-not-reach-smolvm",
        "--label",
        "botbottle.test=exec",
        "bot-bottle/netutils:latest",
        "sleep",
        "infinity",
    )
    assert started.returncode == 0, started.stderr
    fake = base / "smol-vmm"
    fake.write_text(FAKE_SMOLVM)
    fake.chmod(0o755)
    assert _docker("exec", HOST, "mkdir", "-p", SMOLVM_PATH.rsplit("/", 1)[0]).returncode == 0
    assert _docker("cp", str(fake), f"{HOST}:{SMOLVM_PATH}").returncode == 0
    for name in ("runs", "stopped", "missing"):
        (base / f"{name}.yml").write_text("runtime:\n  user: nobody\n")
    host = {
        "ansible_connection": "community.docker.docker",
        "ansible_host": HOST,
        "bottle_backend": "smolmachines",
        "bottle_smolvm_data_home": "/var/lib/smol data",
    }
    hosts = {
        "bbexec-a": {
            **host,
            "bottles": [{"manifest": f"{n}.yml"} for n in ("runs", "stopped", "missing")],
        },
        # a second inventory host declaring the same bottle (the same container: never reached)
        "bbexec-b": {**host, "bottles": [{"manifest": "runs.yml"}]},
    }
    path = base / "hosts.yml"
    path.write_text(json.dumps({"all": {"children": {"exec_hosts": {"hosts": hosts}}}}))
    try:
        yield path
    finally:
        _docker("rm", "-f", HOST)


def smol_log() -> list[str]:
    return _docker("exec", HOST, "cat", "/tmp/smolvm.log").stdout.splitlines()


def test_docker_connection_smolmachines_exec(managed_host: Path) -> None:
    inv = str(managed_host)
    proc = run(
        "exec", "runs", "-i", inv, "--limit", "bbexec-a", "--", "printf", "%s\\n", "a b", "$X"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["a b", "$X"]
    status, call = smol_log()[-2:]
    assert status.startswith("call [machine] [status] [--name] [bottle-runs] [--json]")
    assert call == (
        "call [machine] [exec] [--name] [bottle-runs] [--user] [nobody] [-i] [--] "
        "[printf] [%s\\n] [a b] [$X] XDG_DATA_HOME=/var/lib/smol data SMOL_CLOUD_TOKEN=unset"
    )
    proc = run("exec", "runs", "-i", inv, "--limit", "bbexec-a", "--", "sh", "-c", "exit 4")
    assert proc.returncode == 4, proc.stderr


def test_docker_connection_smolmachines_not_running_and_ambiguous(managed_host: Path) -> None:
    inv = str(managed_host)
    proc = run("exec", "stopped", "-i", inv, "--", "true")
    assert proc.returncode == 1
    assert "bottle stopped is not running on bbexec-a (smolmachines: it is stopped)" in proc.stderr
    proc = run("shell", "missing", "-i", inv)
    assert proc.returncode == 1 and "(smolmachines: it does not exist)" in proc.stderr
    assert "bottle up -i" in proc.stderr
    calls = len(smol_log())
    proc = run("exec", "runs", "-i", inv, "--", "true")
    assert proc.returncode == 2
    assert (
        "bottle runs is declared on 2 hosts" in proc.stderr and "bbexec-a, bbexec-b" in proc.stderr
    )
    proc = run("exec", "runs", "-i", inv, "--limit", "exec_hosts", "--", "true")
    assert proc.returncode == 2 and "(--limit exec_hosts)" in proc.stderr
    assert len(smol_log()) == calls  # nothing ran on any host
    proc = run("exec", "runs", "-i", inv, "--limit", "exec_hosts:!bbexec-a", "--", "true")
    assert proc.returncode == 0, proc.stderr
