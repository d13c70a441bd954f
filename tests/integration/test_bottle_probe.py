"""The real bottle-probe program and the gateway responder, on loopback only.

The probe is compiled from the role's source exactly as the bottle_verify role
compiles it (gcc -static), then asked about a fake upstream on 127.0.0.1, a closed
port, the responder bound to a loopback address, and the capability sets of its own
process and of PID 1. The role's build is cached per content (check mode, then a
build, then no change). Nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.botbottle.bottle.plugins.module_utils._probe import (
    capability_check,
    evaluate,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._probe_exec import (
    ProbeError,
    on_host,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._responder import Responder
from ansible_collections.botbottle.bottle.plugins.module_utils._runtime import (
    CAPABILITY_BITS,
    capabilities_in_mask,
    forbidden_in_mask,
)
from tests.fake_upstream import serve
from tests.helpers import ON_LOCALHOST, ansible

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COLLECTION = ROOT / "collections" / "ansible_collections" / "botbottle" / "bottle"
SOURCE = COLLECTION / "roles" / "bottle_verify" / "files" / "bottle-probe.c"


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.fail("gcc is not installed; scripts/setup installs gcc and libc6-dev")
    binary = tmp_path_factory.mktemp("probe") / "bottle-probe"
    subprocess.run(
        ["gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(binary), str(SOURCE)],
        check=True,
    )
    return binary


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    log = tmp_path_factory.mktemp("upstream") / "upstream.log"
    port, servers = serve("127.0.0.1", 0, log)
    yield port, log
    for server in servers:
        server.shutdown()
        server.server_close()  # type: ignore[attr-defined]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(probe: Path, *specs: str) -> list[dict[str, Any]]:
    def command(argv: Any) -> tuple[int, str, str]:
        proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
        return proc.returncode, proc.stdout, proc.stderr

    return on_host(command, str(probe), specs, 800)


def test_the_probe_is_static(probe: Path) -> None:
    out = subprocess.run(["ldd", str(probe)], capture_output=True, text=True, check=False)
    assert "not a dynamic executable" in out.stdout + out.stderr


def test_dns_answers_over_udp_and_tcp(probe: Path, upstream: tuple[int, Path]) -> None:
    port, log = upstream
    udp, tcp = _run(
        probe,
        f"dns 127.0.0.1 {port} udp TXT bottle-verify-probe.example",
        f"dns 127.0.0.1 {port} tcp AAAA bottle-verify-probe.example",
    )
    assert udp == {
        "op": "dns",
        "server": "127.0.0.1",
        "port": port,
        "proto": "udp",
        "qtype": "TXT",
        "name": "bottle-verify-probe.example",
        "outcome": "answer",
        "rcode": "NOERROR",
        "ancount": 1,
    }
    assert tcp["outcome"] == "answer" and tcp["proto"] == "tcp"
    # the queries the probe built are the ones the server saw
    assert "udp TXT bottle-verify-probe.example" in log.read_text()
    assert "tcp AAAA bottle-verify-probe.example" in log.read_text()


def test_closed_ports_and_connections(probe: Path, upstream: tuple[int, Path]) -> None:
    port, _log = upstream
    closed = _closed_port()
    udp, tcp, connect_closed, connect_open = _run(
        probe,
        f"dns 127.0.0.1 {closed} udp A x.example",
        f"dns 127.0.0.1 {closed} tcp A x.example",
        f"tcp 127.0.0.1 {closed}",
        f"tcp 127.0.0.1 {port}",
    )
    assert udp["outcome"] == "refused" and tcp["outcome"] == "refused"
    assert connect_closed["outcome"] == "refused" and connect_open["outcome"] == "connected"


def test_no_ipv6_route_is_reported_as_unreachable_or_refused(probe: Path) -> None:
    [row] = _run(probe, "dns ::1 9 udp A x.example")
    assert row["outcome"] in ("refused", "unreachable")  # ::1 absent → unreachable


def test_invalid_specs_are_refused_whole(probe: Path) -> None:
    proc = subprocess.run(
        [str(probe), "dns nowhere 53 udp A x", "dns 127.0.0.1 53 smtp A x", "bogus"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert [json.loads(line)["op"] for line in proc.stdout.splitlines()] == ["invalid"] * 3
    with pytest.raises(ProbeError):
        _run(probe, "bogus")


def test_specs_run_at_once_and_report_in_their_order(probe: Path) -> None:
    closed = _closed_port()
    proc = subprocess.run(
        [
            str(probe),
            "-t",
            "300",
            f"dns 127.0.0.1 {closed} udp A x.example",
            "bogus",
            "resolv",
            f"tcp 127.0.0.1 {closed}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2  # one spec was invalid; the others still ran
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["op"] for r in rows] == ["dns", "invalid", "resolv", "tcp"]
    assert rows[0]["outcome"] == "refused" and rows[3]["outcome"] == "refused"


def test_resolv_reads_the_nameservers(probe: Path) -> None:
    [row] = _run(probe, "resolv")
    assert row["op"] == "resolv" and isinstance(row["nameservers"], list)


def test_unlink_removes_the_probe_itself(probe: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copy2(probe, copy)
    [row] = _run(copy, "unlink")
    assert row == {"op": "unlink", "removed": True} and not copy.exists()


_CAP_FIELDS = (("eff", "CapEff"), ("prm", "CapPrm"), ("bnd", "CapBnd"))


def _masks(status: str) -> dict[str, str]:
    """The masks of a /proc/PID/status text, keyed as the probe keys them."""
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    return {key: fields[field].strip() for key, field in _CAP_FIELDS}


def test_caps_reads_the_real_capability_sets_of_itself_and_pid_1(probe: Path) -> None:
    [row] = _run(probe, "caps")
    assert row["op"] == "caps" and row["outcome"] == "read"
    # a sibling process started the same way holds the same sets; PID 1 is this machine's
    sibling = subprocess.run(
        ["cat", "/proc/self/status"], capture_output=True, text=True, check=True
    ).stdout
    assert row["self"] == _masks(sibling)
    assert row["init"] == _masks(Path("/proc/1/status").read_text())
    for process in ("self", "init"):
        for mask in row[process].values():
            assert len(mask) == 16
            names = capabilities_in_mask(mask)
            known = sum(1 << CAPABILITY_BITS[n] for n in names if n in CAPABILITY_BITS)
            unknown = sum(int(n.split()[1], 16) for n in names if n.startswith("bits "))
            assert known | unknown == int(mask, 16)  # the names decode back to the mask


@pytest.mark.parametrize(
    ("hide", "errno"),
    [
        ("mount --bind /dev/null /proc/1/status", "No data available"),  # no Cap* lines
        ("mount -t tmpfs none /proc", "No such file or directory"),  # no /proc at all
    ],
)
def test_caps_reports_unreadable_masks_as_an_error_the_suite_never_passes(
    probe: Path, hide: str, errno: str
) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("hiding /proc from the probe takes root and unshare (a mount namespace)")
    proc = subprocess.run(
        ["unshare", "--mount", "sh", "-ec", f'{hide} && exec "$0" caps', str(probe)],
        capture_output=True,
        text=True,
        check=True,
    )
    row = json.loads(proc.stdout)
    assert row["outcome"] == "error" and row["errno"] == errno
    assert row["init"] == {"errno": errno}
    [result] = evaluate([capability_check()], {"capabilities": row}, {})
    # what was read still counts: this test's own sets leak when it runs with full privileges
    leaks = "eff" in row["self"] and any(forbidden_in_mask(m) for m in row["self"].values())
    assert result.verdict == ("leak" if leaks else "inconclusive")


def test_the_responder_answers_dns_and_accepts_dot_while_it_runs(probe: Path) -> None:
    address = "127.0.0.73"
    with Responder(address) as responder:
        udp, tcp, dot = _run(
            probe,
            f"dns {address} 53 udp A anything.example",
            f"dns {address} 53 tcp TXT anything.example",
            f"tcp {address} 853",
        )
    assert responder.notes == [
        "udp/53: answered by bottle verify",
        "tcp/53: answered by bottle verify",
        "tcp/853: answered by bottle verify",
    ]
    assert udp["outcome"] == "answer" and udp["rcode"] == "NOERROR" and udp["ancount"] == 0
    assert tcp["outcome"] == "answer" and dot["outcome"] == "connected"
    [after] = _run(probe, f"dns {address} 53 udp A anything.example")
    assert after["outcome"] == "refused"  # stopped with the block


def test_the_responder_leaves_a_taken_port_to_its_owner(probe: Path) -> None:
    address = "127.0.0.74"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind((address, 853))
        holder.listen(1)
        with Responder(address) as responder:
            [dot] = _run(probe, f"tcp {address} 853")
    assert "tcp/853: already served on the host" in responder.notes
    assert dot["outcome"] == "connected"  # the owner's socket answered


_BUILD_PLAY = """
- name: Build the probe as bottle verify does
  hosts: localhost
  gather_facts: false
  tasks:
    - name: The role's probe tasks
      ansible.builtin.include_role:
        name: botbottle.bottle.bottle_verify
        tasks_from: probe
      vars:
        bottle_verify_probe_dir: {cache}
        bottle_verify_install_build_deps: false
    - name: Say which binary it chose
      ansible.builtin.debug:
        msg: "probe={{{{ _bottle_verify_probe }}}}"
"""


def _build(tmp_path: Path, cache: Path, *extra: str) -> tuple[int, str]:
    """Run the role's build; (changed count, the probe path it chose)."""
    play = tmp_path / "build.yml"
    play.write_text(_BUILD_PLAY.format(cache=cache))
    proc = ansible("ansible-playbook", *ON_LOCALHOST, *extra, str(play))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    changed = re.search(r"localhost\s+: ok=\d+\s+changed=(\d+)", proc.stdout)
    chosen = re.search(r"probe=(\S+?)\"?$", proc.stdout, re.MULTILINE)
    assert changed and chosen, proc.stdout
    return int(changed.group(1)), chosen.group(1)


def test_the_role_builds_the_probe_once_per_content(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("gcc") is None:
        pytest.skip("the role's build needs root (root-owned cache) and gcc")
    cache = tmp_path / "cache"
    # the name: sha256 of the flags and the source, each followed by a space
    key = hashlib.sha256(b"-static -O2 " + SOURCE.read_bytes()).hexdigest()
    expected = cache / f"bottle-probe-{key}"
    # check mode on an empty cache reports the build and builds nothing
    changed, chosen = _build(tmp_path, cache, "--check")
    assert changed > 0 and chosen == str(expected) and not expected.exists()
    changed, chosen = _build(tmp_path, cache)
    assert changed > 0 and chosen == str(expected)
    assert os.access(expected, os.X_OK)
    ldd = subprocess.run(["ldd", str(expected)], capture_output=True, text=True, check=False)
    assert "not a dynamic executable" in ldd.stdout + ldd.stderr
    assert sorted(p.name for p in cache.iterdir()) == [expected.name, f"{expected.name}.c"]
    built = expected.stat().st_mtime_ns
    # a re-run, and check mode on the warm cache, change nothing and build nothing
    assert _build(tmp_path, cache) == (0, str(expected))
    assert _build(tmp_path, cache, "--check") == (0, str(expected))
    assert expected.stat().st_mtime_ns == built
