"""The stand-in for the internet that the egress proxy's integration tests build: an
internal Docker network of the test module's own, a test dnsmasq, HTTPS origins
(``tests/egress_origin.py``) with a certificate from a test CA, clients that run
``tests/egress_client.py``, and, for the modules that run the proxy on its own
(test_egress_proxy, test_egress_matches, test_egress_dlp), the proxy's code, bottle CA
and container options as the Docker backend sets them up.

Each module keeps its own network, subnet, addresses and container names (a
:class:`Stand`); nothing here reaches an outside address.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ansible_collections.botbottle.bottle.plugins.module_utils import _egress
from tests.helpers import ROOT, ansible, docker

TESTS_DIR = ROOT / "tests"
#: Where a standalone proxy finds the test CA it trusts for the origins.
UPSTREAM_CA = "/etc/bot-bottle/test/upstream-ca.pem"
#: A test resolver's program; each module adds its own names and logging.
DNSMASQ = ("dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts")


def run(*argv: str, check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; with ``check``, a non-zero exit fails the test with its output."""
    done = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{argv}: {done.stdout}\n{done.stderr}")
    return done


def certificates(work: Path, label: str, names: Iterable[str], ips: Iterable[str] = ()) -> None:
    """A test CA (``work/test-ca.pem``: the proxy trusts it upstream) named after
    ``label``, and the origins' certificate and key (``work/origin.pem``, ``origin.key``)
    for DNS ``names`` and IP ``ips``, readable by the containers."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-noenc"]
    key, ca = str(work / "test-ca.key"), str(work / "test-ca.pem")
    run(
        "openssl", "req", "-x509", *ec, "-days", "2", "-subj", f"/CN={label} test origin CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
        "-keyout", key, "-out", ca,
    )  # fmt: skip
    run(
        "openssl", "req", *ec, "-subj", "/CN=origin",
        "-keyout", str(work / "origin.key"), "-out", str(work / "origin.csr"),
    )  # fmt: skip
    sans = ",".join([f"DNS:{n}" for n in names] + [f"IP:{ip}" for ip in ips])
    (work / "ext.cnf").write_text(
        f"subjectAltName={sans}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
    )
    run(
        "openssl", "x509", "-req", "-in", str(work / "origin.csr"), "-CA", ca, "-CAkey", key,
        "-CAcreateserial", "-days", "2", "-extfile", str(work / "ext.cnf"),
        "-out", str(work / "origin.pem"),
    )  # fmt: skip
    for name in ("origin.key", "origin.pem", "test-ca.pem"):
        (work / name).chmod(0o644)


@dataclass(frozen=True)
class Stand:
    """One test module's stand-in: containers ``PREFIX-NAME`` on the internal network
    ``network`` (``subnet``), labelled ``label``, resolving through ``resolver``."""

    prefix: str
    network: str
    subnet: str
    resolver: str
    label: str

    def name(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def create_network(self) -> None:
        run("docker", "network", "create", "--internal", "--subnet", self.subnet, self.network)

    def remove(self, names: Iterable[str]) -> None:
        """Remove the containers ``names`` and the network (what a run, or an interrupted
        one, left)."""
        for name in names:
            docker("rm", "-f", self.name(name))
        docker("network", "rm", self.network)

    def container(
        self,
        name: str,
        ip: str,
        image: str,
        *argv: str,
        options: Sequence[str] = (),
        dns: str | None = None,
    ) -> None:
        """Start ``PREFIX-name`` at ``ip`` with an explicit resolver (``dns``, or the
        stand-in's)."""
        run(
            "docker", "run", "-d", "--name", self.name(name), "--network", self.network,
            "--ip", ip, "--dns", dns or self.resolver, "--label", self.label,
            *options, image, *argv,
        )  # fmt: skip

    def origin(
        self, name: str, ip: str, image: str, work: Path, record: Path | None = None
    ) -> None:
        """An HTTPS (443) and plain HTTP (80) origin with ``work``'s certificate; with
        ``record`` (a directory), it also writes what it receives to ``origin.jsonl``
        there."""
        options = ["--user", "0:0", "-v", f"{TESTS_DIR}:/tests:ro", "-v", f"{work}:/work:ro"]
        recording: list[str] = []
        if record is not None:
            options += ["-v", f"{record}:/record"]
            recording = ["/record/origin.jsonl"]
        self.container(
            name, ip, image, "python3", "/tests/egress_origin.py", "/work/origin.pem",
            "/work/origin.key", "443", "80", *recording, options=options,
        )  # fmt: skip

    def proxy(
        self,
        name: str,
        ip: str,
        image: str,
        work: Path,
        config: Path,
        *extra: str,
        argv: Sequence[str] = (),
        dns: str | None = None,
    ) -> None:
        """A standalone proxy (:func:`proxy_options`; ``argv``, or the command the
        backend runs)."""
        command = argv or _egress.proxy_command(UPSTREAM_CA)
        self.container(
            name, ip, image, *command, options=proxy_options(work, config, *extra), dns=dns
        )

    def client(self, ip: str, image: str, work: Path, *extra: str) -> None:
        """``PREFIX-client``, where the probes run: ``tests/`` and the bottle CA
        (``/ca.pem``, what an agent trusts) mounted, and ``extra`` options."""
        self.container(
            "client", ip, image, "sleep", "infinity",
            options=[
                "-v", f"{TESTS_DIR}:/tests:ro", "-v", f"{work / 'agent-ca.pem'}:/ca.pem:ro", *extra
            ],
        )  # fmt: skip

    def wait_listening(self, client: str, *addresses: str, seconds: float = 30.0) -> None:
        """Until something listens on each ``HOST:PORT``, seen from ``PREFIX-client``
        (``client`` names a container with Python; polled, no fixed wait)."""
        for address in addresses:
            host, port = address.rsplit(":", 1)
            code = (
                "import socket,sys,time\n"
                f"end=time.time()+{seconds}\n"
                "while time.time()<end:\n"
                f"    try: socket.create_connection(({host!r},{port}),timeout=1).close(); "
                "sys.exit(0)\n"
                "    except OSError: time.sleep(0.1)\n"
                "sys.exit(1)\n"
            )
            done = docker("exec", self.name(client), "python3", "-c", code)
            assert done.returncode == 0, f"nothing listens on {address}"


def egress_client(container: str, kind: str, **spec: Any) -> dict[str, Any]:
    """One probe of tests/egress_client.py in ``container`` (its JSON answer)."""
    done = docker(
        "exec", container, "python3", "/tests/egress_client.py", json.dumps({"kind": kind, **spec})
    )
    assert done.returncode == 0, done.stdout + done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def ip_on(container: str, network: str) -> str:
    """``container``'s address on ``network``."""
    shown = f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}'
    return docker("inspect", "-f", shown, container).stdout.strip()


# --------------------------------------------------------------------------- a standalone proxy


def proxy_image() -> str:
    """Build the egress proxy image through its role (a no-op when it is current; with
    ``PIP_CERT``, pip trusts that CA) and return its reference."""
    extra = []
    if os.environ.get("PIP_CERT"):
        extra = ["-e", f"egress_proxy_image_pip_cert={os.environ['PIP_CERT']}"]
    done = ansible("ansible-playbook", "tests/integration/playbooks/egress_proxy_image.yml", *extra)
    assert done.returncode == 0, done.stdout + done.stderr
    match = re.search(r"egress_proxy_image_ref=(\S+)", done.stdout)
    assert match, done.stdout
    return match.group(1)


def proxy_files(work: Path, label: str) -> _egress.CaState:
    """What a standalone proxy mounts, as the Docker backend writes it: the bottle CA
    (``work/ca``; its certificate also in ``work/agent-ca.pem`` for the clients) and the
    proxy's code (``work/code``)."""
    ca = _egress.ensure_ca(
        str(work / "ca"), f"bot-bottle egress CA ({label} test)",
        owner=(_egress.PROXY_UID, _egress.PROXY_UID),
    )  # fmt: skip
    (work / "agent-ca.pem").write_text(ca.cert_pem)
    code = work / "code"
    for rel, source in _egress.proxy_code_files().items():
        (code / rel).parent.mkdir(parents=True, exist_ok=True)
        (code / rel).write_text(source)
    for item in [code, *code.rglob("*")]:
        item.chmod(0o755 if item.is_dir() else 0o644)
    return ca


def proxy_options(work: Path, config: Path, *extra: str) -> list[str]:
    """A standalone proxy's container options: confined as the backend confines it,
    ``proxy_files``' code and CA, the configuration file ``config``, the test CA as its
    upstream trust, and ``extra`` (its log directory, its runtime secrets)."""
    return [
        "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges",
        "-v", f"{work / 'code'}:{_egress.CONTAINER_CODE_ROOT}:ro",
        "-v", f"{config}:{_egress.CONTAINER_CONFIG}:ro",
        "-v", f"{work / 'ca'}:{_egress.CONTAINER_CONFDIR}:ro",
        "-v", f"{work / 'test-ca.pem'}:{UPSTREAM_CA}:ro",
        *extra,
    ]  # fmt: skip
