"""Route credentials, end to end (issue 14 item 2's proof): ``bottle up`` through the
real CLI (site.yml, the docker_bottle_example role, its ``bottle_credentials`` lookup,
the ``docker_bottle`` module), a real mitmproxy in the bottle's egress proxy and a
test-owned HTTPS origin that records what it receives.

The bottle ``authbot`` has three routes: ``cred.auth.test`` (``auth: token`` from
``BB_AUTH_TEST_TOKEN``), ``bearer.auth.test`` (``auth: Bearer`` from
``BB_AUTH_TEST_BEARER``) and ``open.auth.test`` (no auth); all three names resolve to
the one origin. Its manifest's env has ``MY_SECRET: ${BB_TEST_SECRET}``: a secret the
CLI reads from the controller's environment, which its proxy's data-loss prevention
must know and block. The stand-in for the internet is network ``bbauth-egress``
(172.29.242.0/24, internal): a dnsmasq that answers the ``.test`` names, the origin
(``tests/egress_origin.py`` with a record file: it writes what it received there and
answers ``[recorded]`` for Authorization values, so the agent never gets a token
back), and nothing else. The agent runs the egress-proxy image (Python and the probe
client, ``tests/egress_client.py``) with ``tests/`` mounted read-only; every probe runs
inside it. Every attack follows its positive control. Every container has an explicit
``--dns``; nothing leaves the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.botbottle.bottle.plugins.module_utils import _dlp, _egress
from tests.egress_lab import DNSMASQ, Stand, certificates, egress_client, ip_on
from tests.helpers import (
    ROOT,
    bottle,
    docker_host,
    require_docker,
    require_images,
    write_inventory,
)
from tests.helpers import docker as _docker

pytestmark = pytest.mark.integration

require_docker()

NAME, MISSING_NAME = "authbot", "authmiss"
AGENT, PROXY_CONTAINER = f"bottle-{NAME}", f"bottle-{NAME}-proxy"
NET = "bbauth-egress"
SUBNET = "172.29.242.0/24"  # free: grep -rn "172.29." tests molecule
RESOLVER, ORIGIN = "172.29.242.53", "172.29.242.20"
SUBNET_POOL = "172.28.241.0/24"  # the bottle networks' /28s (172.28.240.0/24 is the proxy test's)
NETUTILS = "bot-bottle/netutils:latest"
PROXY_IMAGE = "bot-bottle/egress-proxy:latest"
LABEL = "botbottle.test=docker-bottle-auth"
TOKEN = "bbauth-tok-" + uuid.uuid4().hex  # fresh per run: a leftover cannot pass for it
BEARER = "bbauth-bearer-" + uuid.uuid4().hex
TOKEN_VAR, BEARER_VAR, MISSING_VAR = (
    "BB_AUTH_TEST_TOKEN",
    "BB_AUTH_TEST_BEARER",
    "BB_AUTH_TEST_GONE",
)
#: the bottle's secret env entry and the controller variable it copies (fresh per run)
SECRET_NAME, SECRET_VAR = "MY_SECRET", "BB_TEST_SECRET"
SECRET = "bbauth-secret-" + uuid.uuid4().hex
NAMES = ("cred.auth.test", "bearer.auth.test", "open.auth.test")
AGENT_CA = _egress.AGENT_CA_FILE


STAND = Stand("bbauth", NET, SUBNET, RESOLVER, LABEL)


@dataclass(frozen=True)
class Lab:
    work: Path
    state: Path
    artifacts: Path
    inventory: Path
    missing_inventory: Path
    outputs: list[str]
    proxy_ip: str

    @property
    def proxy(self) -> str:
        return f"{self.proxy_ip}:{_egress.PROXY_PORT}"

    @property
    def record(self) -> Path:
        return self.work / "record" / "origin.jsonl"


def up(lab_artifacts: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return bottle(*args, BOTTLE_ARTIFACTS_DIR=str(lab_artifacts), **env)


#: what ``bottle up`` finds in the controller's environment
CONTROLLER_ENV = {TOKEN_VAR: TOKEN, BEARER_VAR: BEARER, SECRET_VAR: SECRET}


def _manifest(routes: str, env: str = "") -> str:
    return (
        "runtime:\n  command: [sleep, infinity]\n"
        f"  mounts:\n    - {{source: {ROOT / 'tests'}, target: /tests, read_only: true}}\n"
        f"{env}egress:\n  log: 2\n  routes:\n{routes}"
    )


def _host(manifest: str, state: Path, work: Path) -> dict[str, Any]:
    return docker_host(
        [{"manifest": manifest}],
        NET,
        RESOLVER,
        docker_bottle_agent_image=PROXY_IMAGE,
        docker_bottle_proxy_image=PROXY_IMAGE,
        docker_bottle_egress_trusted_ca=str(work / "test-ca.pem"),
        docker_bottle_egress_private_networks=[SUBNET],
        docker_bottle_state_dir=str(state),
        docker_bottle_subnet_pool=SUBNET_POOL,
    )


def _cleanup() -> None:
    STAND.remove(("resolver", "origin"))


def _bottle_containers(name: str) -> list[str]:
    listed = _docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
    return [c for c in listed if c == f"bottle-{name}" or c.startswith(f"bottle-{name}-")]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_images(NETUTILS, PROXY_IMAGE)
    base = tmp_path_factory.mktemp("docker-auth")
    base.chmod(0o755)
    work, state, artifacts = base / "work", base / "state", base / "artifacts"
    work.mkdir(mode=0o755)
    (work / "record").mkdir(mode=0o755)
    (base / f"{NAME}.yml").write_text(
        _manifest(
            f"    - host: cred.auth.test\n      auth: {{scheme: token, token_ref: {TOKEN_VAR}}}\n"
            "    - host: bearer.auth.test\n"
            f"      auth: {{scheme: Bearer, token_ref: {BEARER_VAR}}}\n"
            "    - host: open.auth.test\n",
            env=f'env:\n  {SECRET_NAME}: "${{{SECRET_VAR}}}"\n',
        )
    )
    (base / f"{MISSING_NAME}.yml").write_text(
        _manifest(
            "    - host: open.auth.test\n"
            f"    - host: cred.auth.test\n      auth: {{scheme: token, token_ref: {MISSING_VAR}}}\n"
        )
    )
    inventory = write_inventory(base / "inventory.json", _host(f"{NAME}.yml", state, work))
    missing = write_inventory(base / "missing.json", _host(f"{MISSING_NAME}.yml", state, work))
    _cleanup()
    try:
        certificates(work, "bbauth", NAMES)
        STAND.create_network()
        STAND.container(
            "resolver", RESOLVER, NETUTILS, *DNSMASQ,
            *[f"--address=/{name}/{ORIGIN}" for name in NAMES], dns="127.0.0.1",
        )  # fmt: skip
        STAND.origin("origin", ORIGIN, PROXY_IMAGE, work, record=work / "record")
        proc = up(artifacts, "up", "-i", str(inventory), **CONTROLLER_ENV)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        yield Lab(work, state, artifacts, inventory, missing, [proc.stdout + proc.stderr],
                  ip_on(PROXY_CONTAINER, AGENT))  # fmt: skip
    finally:
        if not os.environ.get("BBAUTH_KEEP"):
            for inv in (inventory, missing):
                up(artifacts, "down", "-i", str(inv))
            _cleanup()


# --------------------------------------------------------------------------- probes


def https(lab: Lab, authority: str, *requests: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """From the agent: CONNECT ``authority``, TLS trusting the bottle CA, the requests."""
    return egress_client(
        AGENT, "https", proxy=lab.proxy, ca=AGENT_CA, authority=authority,
        requests=list(requests), **spec,
    )  # fmt: skip


def probe(host: str, *headers: tuple[str, str], **extra: Any) -> tuple[str, dict[str, Any]]:
    """A request carrying a fresh ``X-Probe`` id (how the origin's record is searched)."""
    ident = uuid.uuid4().hex
    request = {"host": host, "target": "/", "headers": [("X-Probe", ident), *headers]}
    return ident, {**request, **extra}


def received(lab: Lab, ident: str) -> list[dict[str, Any]]:
    """What the origin recorded for probe ``ident`` (waits briefly for the write)."""
    for _ in range(20):
        lines = lab.record.read_text().splitlines() if lab.record.exists() else []
        found = [json.loads(x) for x in lines if ident in x]
        if found:
            return found
        time.sleep(0.05)
    return []


def auth_headers(echo: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (k.lower(), v)
        for k, v in echo["headers"]
        if k.lower() in ("authorization", "proxy-authorization")
    ]


def assert_refused(answer: dict[str, Any], status: int, rule: str) -> None:
    assert answer.get("status") == status, answer
    assert ("x-bot-bottle-refused", rule) in [tuple(h) for h in answer["headers"]], answer


def _search_script() -> str:
    """Where the value on standard input (never on a command line) occurs in the
    container: files (not /proc, /sys, /dev), every process's environ and cmdline, and
    the exec's own environment."""
    return (
        "import os,sys\n"
        "needle=sys.stdin.buffer.read(); found=[]\n"
        "for root, dirs, files in os.walk('/'):\n"
        "    if root == '/': dirs[:] = [d for d in dirs if d not in ('proc','sys','dev')]\n"
        "    for f in files:\n"
        "        p=os.path.join(root,f)\n"
        "        try:\n"
        "            if os.path.isfile(p) and os.path.getsize(p) < 16_000_000:\n"
        "                with open(p,'rb') as h:\n"
        "                    if needle in h.read(): found.append(p)\n"
        "        except OSError: pass\n"
        "for pid in [d for d in os.listdir('/proc') if d.isdigit()]:\n"
        "    for part in ('environ','cmdline'):\n"
        "        try:\n"
        "            with open(f'/proc/{pid}/{part}','rb') as h:\n"
        "                if needle in h.read(): found.append(f'/proc/{pid}/{part}')\n"
        "        except OSError: pass\n"
        "if needle in repr(dict(os.environ)).encode(): found.append('env')\n"
        "print('\\n'.join(found))\n"
    )


def search(container: str, secret: str) -> list[str]:
    done = subprocess.run(
        ["docker", "exec", "-i", container, "python3", "-c", _search_script()],
        input=secret.encode(), capture_output=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.decode().split()


# --------------------------------------------------------------------------- tests


def test_the_origin_sees_the_token_on_the_credentialed_route_only(lab: Lab) -> None:
    """The positive control of every test below: each credentialed route's request
    reaches the origin with its scheme and value; the open route's carries none."""
    cases = {
        "cred.auth.test": [("authorization", f"token {TOKEN}")],
        "bearer.auth.test": [("authorization", f"Bearer {BEARER}")],
        "open.auth.test": [],
    }
    for host, expected in cases.items():
        ident, request = probe(host)
        result = https(lab, f"{host}:443", request)
        assert result["connect"]["status"] == 200, result
        response = result["responses"][0]
        assert response["status"] == 200, result
        # what the agent got back holds no token (the origin answers [recorded])
        assert TOKEN not in json.dumps(result) and BEARER not in json.dumps(result)
        seen = received(lab, ident)
        assert len(seen) == 1, (host, seen)
        assert seen[0]["sni"] == host and seen[0]["tls"] is True, seen
        assert auth_headers(seen[0]) == expected, (host, seen)


def test_the_agents_own_authorization_is_replaced(lab: Lab) -> None:
    """Control: on the open route the agent's own headers arrive as sent. On the
    credentialed route every Authorization and Proxy-Authorization it sent is gone and
    the proxy's credential is the only one."""
    own = (("Authorization", "token agent-guess"), ("Proxy-Authorization", "Basic YWdlbnQ="))
    ident, request = probe("open.auth.test", *own)
    assert https(lab, "open.auth.test:443", request)["responses"][0]["status"] == 200
    assert auth_headers(received(lab, ident)[0]) == [
        ("authorization", "token agent-guess"),
        ("proxy-authorization", "Basic YWdlbnQ="),
    ]
    ident, request = probe("cred.auth.test", *own, ("authorization", "Bearer second-copy"))
    assert https(lab, "cred.auth.test:443", request)["responses"][0]["status"] == 200
    assert auth_headers(received(lab, ident)[0]) == [("authorization", f"token {TOKEN}")]


def test_a_spoofed_host_towards_the_credentialed_origin_gets_no_token(lab: Lab) -> None:
    """From the open route (its CONNECT and SNI), a request naming cred.auth.test in
    Host: 421, and the origin records nothing of it; nor does a tunnel whose SNI names
    the credentialed host. Each after its control on the same route."""
    ident, request = probe("open.auth.test")
    assert https(lab, "open.auth.test:443", request)["responses"][0]["status"] == 200
    assert received(lab, ident)  # the control: the open route reaches the origin
    ident, request = probe("cred.auth.test")
    spoofed = https(lab, "open.auth.test:443", request)
    assert_refused(spoofed["responses"][0], 421, "host-mismatch")
    # the second request on one connection: the first (correct) passes, the spoof does not
    first, good = probe("open.auth.test")
    second, bad = probe("cred.auth.test")
    both = https(lab, "open.auth.test:443", good, bad)
    assert both["responses"][0]["status"] == 200, both
    assert_refused(both["responses"][1], 421, "host-mismatch")
    ident_sni, request = probe("cred.auth.test")
    wrong_sni = https(lab, "open.auth.test:443", request, sni="cred.auth.test")
    assert "echo" not in json.dumps(wrong_sni), wrong_sni
    assert received(lab, first)
    for spoof in (ident, second, ident_sni):
        assert received(lab, spoof) == [], spoof
    assert TOKEN not in json.dumps([spoofed, both, wrong_sni])


def test_no_credential_over_plain_http(lab: Lab) -> None:
    """Plain http:// to the open route passes (the control); to a credentialed route it
    is refused with its own reason, and never reaches the origin."""
    ident, request = probe("open.auth.test", target="http://open.auth.test/")
    plain = egress_client(AGENT, "plain", proxy=lab.proxy, requests=[request])["responses"][0]
    assert plain.get("status") == 200, plain
    assert received(lab, ident)
    ident, request = probe("cred.auth.test", target="http://cred.auth.test/")
    plain = egress_client(AGENT, "plain", proxy=lab.proxy, requests=[request])["responses"][0]
    assert_refused(plain, 403, "auth-over-http")
    assert received(lab, ident) == []


def test_the_agent_never_holds_the_token(lab: Lab) -> None:
    """The proxy holds it (the control: found in its tmpfs by the same search); the
    agent's files, its processes' environ and cmdline and its environment do not."""
    in_proxy = search(PROXY_CONTAINER, TOKEN)
    assert f"{_egress.CONTAINER_SECRETS_DIR}/{_egress.SECRETS_FILE_NAME}" in in_proxy, in_proxy
    for secret in (TOKEN, BEARER):
        assert search(AGENT, secret) == []
    env = _docker("exec", AGENT, "env").stdout
    assert "HTTPS_PROXY=" in env and TOKEN not in env  # the control: this is its environment


def test_the_token_is_in_no_artifact_or_log(lab: Lab) -> None:
    """Not in the ansible-runner artifacts, the CLI's output, the bottle's state
    directory (the egress log at level 2 included: the control is that it logged the
    credentialed requests, naming the variable), nor any bottle container's inspect."""
    status = up(lab.artifacts, "status", "-i", str(lab.inventory), **CONTROLLER_ENV)
    assert status.returncode == 0, status.stdout + status.stderr
    log = lab.state / NAME / "log" / "egress" / _egress.LOG_FILE_NAME
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    credentialed = [e for e in entries if e.get("event") == "request" and e.get("credential")]
    assert {e["credential"] for e in credentialed} == {TOKEN_VAR, BEARER_VAR}, entries[-5:]
    assert any(e.get("event") == "response" for e in entries)
    assert any(e.get("rule") == "auth-over-http" for e in entries)
    assert lab.artifacts.is_dir() and any(lab.artifacts.rglob("job_events/*.json"))
    # `bottle audit` finds the proxy's log under the host's own docker_bottle_state_dir
    audit = up(lab.artifacts, "audit", NAME, "-i", str(lab.inventory), **CONTROLLER_ENV)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "egress-proxy" in audit.stdout and "auth-over-http" in audit.stdout, audit.stdout
    lab.outputs.append(audit.stdout + audit.stderr)
    containers = _bottle_containers(NAME)
    assert AGENT in containers and PROXY_CONTAINER in containers, containers
    inspected = [_docker("inspect", c).stdout for c in containers]
    for secret in (TOKEN, BEARER):
        for root in (lab.artifacts, lab.state):
            leaks = [
                p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()
            ]
            assert leaks == [], leaks
        for text in [*lab.outputs, status.stdout + status.stderr, *inspected]:
            assert secret not in text


def test_a_secret_env_value_is_blocked_at_the_proxy(lab: Lab) -> None:
    """Data-loss prevention through the real path (issue 14 item 3): the env entry
    ``MY_SECRET: ${BB_TEST_SECRET}``, read from the controller's environment by ``bottle
    up`` (the role's ``bottle_env`` lookup), reaches the agent as its value and the proxy
    as a known secret. A benign query to the open route passes and is recorded (the
    control); the same request carrying the value in its query string gets 403
    ``dlp-blocked``, and the origin never sees it."""
    env = _docker("exec", AGENT, "env").stdout.splitlines()
    assert f"{SECRET_NAME}={SECRET}" in env  # the agent was given it: the leak is its own
    in_proxy = search(PROXY_CONTAINER, SECRET)
    assert f"{_egress.CONTAINER_SECRETS_DIR}/{_egress.SECRETS_FILE_NAME}" in in_proxy, in_proxy
    ident, benign = probe("open.auth.test", target="/search?q=benign-words")
    passed = https(lab, "open.auth.test:443", benign)["responses"][0]
    assert passed["status"] == 200, passed
    seen = received(lab, ident)
    assert [echo["target"] for echo in seen] == ["/search?q=benign-words"], seen
    ident, leak = probe("open.auth.test", target=f"/search?q={SECRET}")
    blocked = https(lab, "open.auth.test:443", leak)["responses"][0]
    assert_refused(blocked, 403, _dlp.REASON_BLOCKED)
    assert SECRET not in json.dumps(blocked)
    assert received(lab, ident) == []
    assert SECRET not in lab.record.read_text()
    log = (lab.state / NAME / "log" / "egress" / _egress.LOG_FILE_NAME).read_text()
    hits = [e for e in map(json.loads, log.splitlines()) if e.get("event") == "dlp"]
    assert [(e["detector"], e["surface"], e["action"]) for e in hits] == [
        (_dlp.KNOWN_SECRETS, "url", "block")
    ], hits
    assert SECRET not in log


def test_a_missing_token_ref_fails_that_bottles_bring_up(lab: Lab) -> None:
    """Control: the same inventory's bottle comes up when its variable is set (the
    fixture's bring-up did, with the same role and lookup). Without BB_AUTH_TEST_GONE,
    ``bottle up`` fails naming the variable, the bottle and the route, and nothing of
    that bottle exists."""
    assert AGENT in _bottle_containers(NAME)
    env = {k: v for k, v in os.environ.items() if k != MISSING_VAR}
    assert MISSING_VAR not in env
    proc = up(lab.artifacts, "up", "-i", str(lab.missing_inventory), **CONTROLLER_ENV)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text
    assert MISSING_VAR in text and "bottle 'authmiss'" in text, text
    assert "route 1 (host cred.auth.test)" in text, text
    assert _bottle_containers(MISSING_NAME) == []
    assert _docker("network", "inspect", f"bottle-{MISSING_NAME}").returncode != 0
