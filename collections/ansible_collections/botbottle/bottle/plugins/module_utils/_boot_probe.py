# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Can this host boot smolmachines microVMs? **PRIVATE** to the botbottle.bottle collection.

First ``smol.local_availability()`` (run with the Python of the virtualenv that
holds the pinned ``smolmachines``: is KVM present and usable?), then a real
boot: create a throw-away machine with the bundled CLI, start it, run one
command in it, delete it. Only a machine that ran the command counts; the
reason says which step failed and smolvm's own words.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ansible_collections.botbottle.bottle.plugins.module_utils._smolvm import (
    parse_error,
    run_command,
)

Runner = Callable[[Sequence[str], Mapping[str, str], int], "tuple[int, str, str]"]

_AVAILABILITY = "import json, smol; print(json.dumps(list(smol.local_availability())))"


def availability(python: str, env: Mapping[str, str], runner: Runner = run_command) -> list[Any]:
    """``[ok, code, reason]`` from ``smol.local_availability()`` in ``python``."""
    rc, out, err = runner([python, "-c", _AVAILABILITY], env, 60)
    if rc != 0:
        return [
            False,
            "RUNTIME_NOT_INSTALLED",
            f"cannot import smolmachines with {python}: {err.strip()[-300:]}",
        ]
    data = json.loads(out.strip().splitlines()[-1])
    return list(data)


def probe(
    cli: str,
    python: str,
    *,
    data_home: str | None = None,
    timeout: int = 120,
    runner: Runner = run_command,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``{"can_boot": bool, "reason": str, "availability": [ok, code, reason]}``."""
    env = {
        k: v
        for k, v in (os.environ if environ is None else environ).items()
        if not k.startswith("SMOL_CLOUD")
    }
    if data_home:
        env["XDG_DATA_HOME"] = data_home
    avail = availability(python, env, runner)
    result: dict[str, Any] = {"availability": avail}
    if not avail[0]:
        result.update(can_boot=False, reason=f"{avail[1]}: {avail[2]}")
        return result
    name = "bot-bottle-boot-probe-" + uuid.uuid4().hex[:8]

    def machine(operation: str, *args: str, limit: int = 60) -> str | None:
        argv = [cli, "machine", operation, "--error-format", "json", "--name", name, *args]
        rc, _out, err = runner(argv, env, limit)
        return None if rc == 0 else parse_error(rc, err, operation).describe()

    try:
        failure = machine("create")
        if failure:
            result.update(can_boot=False, reason=f"creating a probe machine failed: {failure}")
            return result
        failure = machine("start", limit=timeout)
        if failure:
            result.update(
                can_boot=False, reason=f"KVM is present but a microVM did not boot: {failure}"
            )
            return result
        failure = machine("exec", "--", "true")
        if failure:
            result.update(
                can_boot=False, reason=f"a microVM booted but could not run a command: {failure}"
            )
            return result
        result.update(can_boot=True, reason="a probe microVM booted and ran a command")
        return result
    finally:
        machine("delete", "-f")
