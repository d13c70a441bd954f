"""Running the ``bottle-probe`` program: in a Docker container, in a microVM, on the host.

Each runner copies the static probe into the target under a random name, runs all
specs in one call (as the target's own user), removes the copy (as root, through the
probe's ``unlink`` spec: the image needs no ``rm``) and returns one parsed JSON
object per spec, in order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

from ansible_collections.botbottle.bottle.plugins.module_utils._smolvm import SmolvmClient

#: (argv) -> (rc, stdout, stderr)
Command = Callable[[Sequence[str]], tuple[int, str, str]]


class ProbeError(Exception):
    """The probe could not be run (not a verdict: nothing was measured)."""


def parse_output(stdout: str, count: int) -> list[dict[str, Any]]:
    """One JSON object per spec; a short or garbled output is an error."""
    rows = []
    for raw in stdout.splitlines():
        line = raw.strip()
        if line.startswith("{"):
            value = json.loads(line)
            if isinstance(value, dict):
                rows.append(value)
    if len(rows) != count or any(r.get("op") == "invalid" for r in rows):
        raise ProbeError(f"bottle-probe printed {len(rows)} result(s) for {count} probe(s)")
    return rows


def _argv(path: str, specs: Sequence[str], timeout_ms: int) -> list[str]:
    return [path, "-t", str(timeout_ms), *specs]


def on_host(
    run: Command, probe: str, specs: Sequence[str], timeout_ms: int
) -> list[dict[str, Any]]:
    """Run the probe in the host's own network namespace (controls for literal addresses)."""
    if not specs:
        return []
    rc, out, err = run(_argv(probe, specs, timeout_ms))
    if rc != 0:
        raise ProbeError(f"bottle-probe failed on the host (rc {rc}): {err.strip()}")
    return parse_output(out, len(specs))


def in_container(
    run: Command, container: str, probe: str, specs: Sequence[str], timeout_ms: int
) -> list[dict[str, Any]]:
    """docker cp the probe into ``container``, docker exec it, remove it."""
    if not specs:
        return []
    inside = f"/tmp/.bottle-probe-{os.urandom(6).hex()}"
    rc, _out, err = run(["docker", "cp", probe, f"{container}:{inside}"])
    if rc != 0:
        raise ProbeError(f"cannot copy the probe into {container}: {err.strip()}")
    try:
        rc, out, err = run(["docker", "exec", container, *_argv(inside, specs, timeout_ms)])
        if rc != 0:
            raise ProbeError(f"the probe failed in {container} (rc {rc}): {err.strip()}")
        return parse_output(out, len(specs))
    finally:
        run(["docker", "exec", "--user", "0", container, inside, "unlink"])


def in_machine(
    client: SmolvmClient, machine: str, probe: str, specs: Sequence[str], timeout_ms: int
) -> list[dict[str, Any]]:
    """smolvm machine cp the probe into ``machine``, exec it, remove it."""
    if not specs:
        return []
    inside = f"/tmp/.bottle-probe-{os.urandom(6).hex()}"
    client.copy_in(machine, probe, inside)
    try:
        return parse_output(client.exec(machine, _argv(inside, specs, timeout_ms)), len(specs))
    finally:
        client.exec(machine, [inside, "unlink"], user="0")
