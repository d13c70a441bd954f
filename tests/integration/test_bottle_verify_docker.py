"""`bottle verify` and `bottle audit` end to end on the Docker example backend.

The bottles' literal "internet" resolver is a fake upstream this test runs on the
gateway of its own egress network (on this machine); no query leaves the machine.
It answers every name with ORIGIN, on the egress network 198.51.100.0/24
(TEST-NET-2, which the proxy does not refuse as private), where a test-owned HTTPS
origin (tests/egress_origin.py, certificate from a test CA the proxies trust through
docker_bottle_egress_trusted_ca) listens there: the allowed hosts answer through
the proxy, which is the positive control of the proxy checks.
The host runs two bottles, probed in one module call; the second one's only route
restricts its requests (matches: GET below /api/), so the proxy checks must send a
request those matches admit. The suite must pass on the
real bottles, and fail - exit 1, naming the leaks - on a bottle whose firewall was
flushed behind bot-bottle's back (and whose namespace was put on the egress network,
so a direct connection around the proxy reaches the origin), whose proxy was
replaced by one that lets a fronting Host and an IP-literal CONNECT through, or whose
agent was started with NET_ADMIN (which could flush it), while its peer stays sealed;
`bottle up` then restores it. The audit must show an encoded query the agent made,
flagged, and never the agent's secret.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fake_upstream import serve
from tests.helpers import ROOT, ansible, bottle, require_docker, with_net_admin
from tests.helpers import docker as _docker

pytestmark = pytest.mark.integration

NETWORK = "bbverify-egress"
SUBNET = "198.51.100.0/24"
GATEWAY = "198.51.100.254"
ORIGIN = "198.51.100.1"  # the fake upstream's answer for every name
ORIGIN_CONTAINER = "bbverify-origin"
PROXY_IMAGE = "bot-bottle/egress-proxy:latest"
HOSTS = ("verify.bbtest.example", "peer.bbtest.example")
PROXY_CHECKS = (
    "proxy-allowed-host",
    "proxy-host-mismatch",
    "proxy-direct-egress",
    "proxy-ip-literal",
)
NAME = "verifytest"
PEER = "verifypeer"  # a second bottle on the same host; its only route has matches
PEER_PREFIX = "/api/"  # ... which admit GET below this prefix only
SECRET = "bb-verify-secret-value-3a7c9d"
ENCODED = base64.b32encode(SECRET.encode()).decode().rstrip("=").lower()

require_docker()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return bottle(*args, BB_VERIFY_TOKEN=SECRET)


def _openssl(*args: str) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def _origin_certificate(work: Path) -> None:
    """A test CA (the proxies trust it for upstream) and the origin's certificate."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-noenc"]
    _openssl(
        "req", "-x509", *ec, "-days", "2", "-subj", "/CN=bbverify test origin CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
        "-keyout", str(work / "test-ca.key"), "-out", str(work / "test-ca.pem"),
    )  # fmt: skip
    _openssl(
        "req", *ec, "-subj", "/CN=origin", "-keyout", str(work / "origin.key"),
        "-out", str(work / "origin.csr"),
    )  # fmt: skip
    sans = ",".join([f"DNS:{h}" for h in HOSTS] + [f"IP:{ORIGIN}"])
    (work / "ext.cnf").write_text(
        f"subjectAltName={sans}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", str(work / "origin.csr"), "-CA", str(work / "test-ca.pem"),
        "-CAkey", str(work / "test-ca.key"), "-CAcreateserial", "-days", "2",
        "-extfile", str(work / "ext.cnf"), "-out", str(work / "origin.pem"),
    )  # fmt: skip
    for name in ("origin.key", "origin.pem", "test-ca.pem"):
        (work / name).chmod(0o644)
    work.chmod(0o755)


def _proxy_image() -> str:
    """The egress proxy's image (its Python runs the origin), built if missing."""
    if _docker("image", "inspect", PROXY_IMAGE).returncode != 0:
        extra = []
        if os.environ.get("PIP_CERT"):
            extra = ["-e", f"egress_proxy_image_pip_cert={os.environ['PIP_CERT']}"]
        done = ansible(
            "ansible-playbook", "tests/integration/playbooks/egress_proxy_image.yml", *extra
        )
        assert done.returncode == 0, done.stdout + done.stderr
    return PROXY_IMAGE


def _start_origin(work: Path) -> None:
    """The HTTPS origin at ORIGIN on the egress network, in the proxy's image (Python);
    started before `bottle up`, whose last step is the suite."""
    started = _docker(
        "run", "-d", "--name", ORIGIN_CONTAINER, "--network", NETWORK, "--ip", ORIGIN,
        "--dns", GATEWAY, "--user", "0:0", "--label", "botbottle.test=verify",
        "-v", f"{ROOT / 'tests'}:/tests:ro", "-v", f"{work}:/work:ro",
        "--entrypoint", "python3", _proxy_image(),
        "/tests/egress_origin.py", "/work/origin.pem", "/work/origin.key", "443", "80",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    code = (
        "import socket,sys,time\nend=time.time()+30\nwhile time.time()<end:\n"
        "    try: socket.create_connection(('127.0.0.1',443),timeout=1).close(); sys.exit(0)\n"
        "    except OSError: time.sleep(0.2)\nsys.exit(1)\n"
    )
    assert _docker("exec", ORIGIN_CONTAINER, "python3", "-c", code).returncode == 0


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("verify")
    _origin_certificate(base)
    _docker("rm", "-f", ORIGIN_CONTAINER)  # left over by an interrupted run
    _docker("network", "rm", NETWORK)
    created = _docker(
        "network", "create", "--internal", "--subnet", SUBNET, "--gateway", GATEWAY, NETWORK
    )
    assert created.returncode == 0, created.stderr
    port, servers = serve(GATEWAY, 0, base / "upstream.log", a_record=ORIGIN)
    (base / f"{NAME}.yml").write_text(
        "env:\n  TOKEN: ${BB_VERIFY_TOKEN}\n"
        "runtime:\n  command: [sleep, infinity]\n"
        "egress:\n  routes:\n    - host: verify.bbtest.example\n"
    )
    (base / f"{PEER}.yml").write_text(
        "runtime:\n  command: [sleep, infinity]\n"
        "egress:\n  log: 2\n  routes:\n    - host: peer.bbtest.example\n"
        f"      matches:\n        - paths: [{{type: prefix, value: {PEER_PREFIX}}}]\n"
        "          methods: [GET]\n"
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
        "docker_bottle_egress_trusted_ca": str(base / "test-ca.pem"),
    }
    path = base / "inventory.yml"
    path.write_text(json.dumps({"all": {"hosts": {"localhost": host}}}))
    try:
        _start_origin(base)
        up = run("up", "-i", str(path))
        assert up.returncode == 0, up.stdout + up.stderr
        yield path
    finally:
        _docker("rm", "-f", ORIGIN_CONTAINER)
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
        *PROXY_CHECKS,
    ):
        assert verdicts.get(name) == "pass", (name, output)
    assert {n: v for n, v in checks(data, PEER).items() if n in PROXY_CHECKS} == dict.fromkeys(
        PROXY_CHECKS, "pass"
    ), output
    results = {c["name"]: c for c in row(data)["results"]}
    # the allowed host answered through the proxy (the origin's echo, not a refusal) ...
    assert results["proxy-allowed-host"]["observed"] == "HTTP 200", output
    # ... and each attack was refused for its own reason
    assert "host-mismatch" in results["proxy-host-mismatch"]["observed"], output
    assert "ip-not-covered" in results["proxy-ip-literal"]["observed"], output
    assert f"to {ORIGIN}" in results["proxy-direct-egress"]["observed"], output
    # the probe left nothing behind in the agents
    for name in (NAME, PEER):
        listing = _docker("exec", f"bottle-{name}", "ls", "-a", "/tmp").stdout
        assert ".bottle-probe" not in listing


def _agent_request(name: str, url: str) -> str:
    """The agent's own HTTPS GET through its egress proxy (curl reads the agent's proxy
    and CA variables): the response heads and ``status=<code>``."""
    done = _docker(
        "exec", f"bottle-{name}", "curl", "-sS", "--max-time", "10", "-o", "/dev/null",
        "-D", "-", "-w", "status=%{http_code}\n", url,
    )  # fmt: skip
    return (done.stdout + done.stderr).lower()


def test_a_route_with_matches_gets_a_request_they_admit(inventory: Path) -> None:
    # positive control: the peer's matches are enforced - a request outside them is
    # refused (what the verifier's fixed request got before it read the matches, which
    # left the bottle inconclusive) and one they admit reaches the origin
    outside = _agent_request(PEER, "https://peer.bbtest.example/agent-outside")
    assert "status=403" in outside and "x-bot-bottle-refused: no-route-match" in outside
    inside = _agent_request(PEER, f"https://peer.bbtest.example{PEER_PREFIX}agent-inside")
    assert "status=200" in inside and "x-bot-bottle-refused" not in inside, inside
    code, data, output = verify(inventory)
    assert code == 0, output
    assert row(data, PEER)["verdict"] == "sealed", output
    results = {c["name"]: c for c in row(data, PEER)["results"]}
    assert {n: results[n]["verdict"] for n in PROXY_CHECKS} == dict.fromkeys(
        PROXY_CHECKS, "pass"
    ), output
    # the control sent a GET below the prefix, with the run's label as its last segment
    probe = results["proxy-allowed-host"]["evidence"]["probe"]
    assert f"GET {PEER_PREFIX}bottle-verify-" in probe, probe
    assert results["proxy-allowed-host"]["observed"] == "HTTP 200", output
    # the same request with another Host is refused for that reason, not for the matches
    assert "host-mismatch" in results["proxy-host-mismatch"]["observed"], output
    # the audit (egress.log 2) shows the verifier's request, told by its path, beside the
    # agent's own requests
    path = probe.split(" GET ", 1)[1].split()[0]
    proc = run("audit", PEER, "-i", str(inventory), "--since", "1h", "--format", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    seen = {(r.get("path"), r.get("verdict")) for r in rows if r["name"] == "peer.bbtest.example"}
    assert (path, "forwarded") in seen, rows
    assert (f"{PEER_PREFIX}agent-inside", "forwarded") in seen, rows
    assert ("/agent-outside", "no-route-match") in seen, rows


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
    assert ok.stdout.strip() == ORIGIN
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
    holder = f"bottle-{NAME}-net"
    # Plant the weakness the way an attacker with NET_ADMIN would: flush the bottle's
    # rules; and give its namespace a way to the origin that does not pass the proxy
    # (the egress network), so the direct connection has somewhere to go.
    connected = _docker("network", "connect", NETWORK, holder)
    assert connected.returncode == 0, connected.stderr
    try:
        flush = with_net_admin(holder, "sh", "-c", "iptables -F && iptables -X && ip6tables -F")
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
        # its control passed first: the origin answered through the proxy
        assert verdicts["proxy-allowed-host"] == "pass", output
        assert verdicts["proxy-direct-egress"] == "leak", output
        assert "LEAKS" in output
        # the text table names the leaking checks
        text = run("verify", "-i", str(inventory))
        assert text.returncode == 1 and "LEAK" in text.stdout and "gateway-udp" in text.stdout
        assert "proxy-direct-egress" in text.stdout
    finally:
        _docker("network", "disconnect", "--force", NETWORK, holder)
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
    env = [f"--env={e}" for e in info["Config"]["Env"] or []]  # its proxy and CA variables
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
            *env,
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


def _lax_proxy(name: str) -> None:
    """Replace bottle ``name``'s proxy by tests/egress_lax_proxy.py: the same image, code,
    configuration, CA, user, addresses and options, but its CONNECT targets and Host
    headers go unchecked."""
    proxy = f"bottle-{name}-proxy"
    [info] = json.loads(_docker("container", "inspect", proxy).stdout)
    argv = [*(info["Config"]["Entrypoint"] or []), *(info["Config"]["Cmd"] or [])]
    assert argv[:3] == ["python3", "-P", "-m"], argv
    networks = info["NetworkSettings"]["Networks"]
    [bottle_net] = [n for n in networks if n != NETWORK]
    mounts = [
        f"--mount=type=bind,source={m['Source']},target={m['Destination']}"
        + ("" if m["RW"] else ",readonly")
        for m in info["Mounts"]
    ]
    assert _docker("rm", "-f", proxy).returncode == 0
    created = _docker(
        "create", "--name", proxy, "--network", bottle_net,
        "--ip", networks[bottle_net]["IPAMConfig"]["IPv4Address"],
        "--user", info["Config"]["User"] or "65532:65532", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges:true", "--read-only", "--tmpfs", "/tmp",
        "--label", "botbottle.test=verify-lax-proxy", *mounts,
        "-v", f"{ROOT / 'tests'}:/tests:ro", "--entrypoint", "python3", info["Image"],
        "-P", "/tests/egress_lax_proxy.py", *argv[4:],
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert _docker("network", "connect", NETWORK, proxy).returncode == 0
    assert _docker("start", proxy).returncode == 0
    code = (
        "import socket,sys,time\nend=time.time()+30\nwhile time.time()<end:\n"
        "    try: socket.create_connection(('127.0.0.1',8080),timeout=1).close(); sys.exit(0)\n"
        "    except OSError: time.sleep(0.2)\nsys.exit(1)\n"
    )
    waited = _docker("exec", proxy, "python3", "-c", code)
    assert waited.returncode == 0, _docker("logs", proxy).stderr


def test_a_proxy_that_lets_attacks_through_fails_verify(inventory: Path) -> None:
    # positive control: the real proxy refuses both attacks, after the allowed host answered
    code, data, output = verify(inventory)
    assert code == 0, output
    assert {n: v for n, v in checks(data).items() if n in PROXY_CHECKS} == dict.fromkeys(
        PROXY_CHECKS, "pass"
    ), output
    proxy = f"bottle-{NAME}-proxy"
    try:
        _lax_proxy(NAME)
        code, data, output = verify(inventory)
        assert code == 1, output
        assert data["verdict"] == "leak"
        assert row(data, PEER)["verdict"] == "sealed", output
        verdicts = checks(data)
        # the allowed host still answers through it: its control passed ...
        assert verdicts["proxy-allowed-host"] == "pass", output
        # ... and the fronting Host and the IP literal went through
        assert verdicts["proxy-host-mismatch"] == "leak", output
        assert verdicts["proxy-ip-literal"] == "leak", output
        assert verdicts["proxy-direct-egress"] == "pass", output  # the rules still hold
        assert [n for n, v in verdicts.items() if v == "leak"] == [
            "proxy-host-mismatch",
            "proxy-ip-literal",
        ], output
        results = {c["name"]: c for c in row(data)["results"]}
        assert results["proxy-host-mismatch"]["observed"] == "HTTP 200", output
        assert results["proxy-ip-literal"]["observed"].startswith(f"CONNECT {ORIGIN} accepted")
        assert f"docker rm -f {proxy}" in output  # the fix names the proxy
    finally:
        _docker("rm", "-f", proxy)
        up = run("up", "-i", str(inventory))
    assert up.returncode == 0, up.stdout + up.stderr
    code, data, output = verify(inventory)
    assert code == 0 and data["verdict"] == "sealed", output
