# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Can this host boot smolmachines microVMs? **PRIVATE** to the botbottle.bottle collection.

First ``smol.local_availability()`` (run with the Python of the virtualenv that
holds the pinned ``smolmachines``: is KVM present and usable?), then a real
boot: create a throw-away machine with the bundled CLI, start it, run one
command in it, delete it. Only a machine that ran the command counts; the
reason says which step failed and smolvm's own words.

A host that cannot boot spends up to the start timeout finding that out, so the
verdict is kept in a small JSON file on the host (:data:`DEFAULT_CACHE_PATH`)
under a key of everything that decides it (:func:`cache_key`): the smolmachines
version, the kernel release, ``/dev/kvm`` (whether it exists, its device numbers,
mode and owner), the prober's user and groups, and the start timeout. A stored
verdict is reused only while its key equals the host's current one
(:func:`cached_verdict`); anything else probes again.
"""

from __future__ import annotations

import datetime
import glob
import json
import os
import re
import stat
import tempfile
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ansible_collections.botbottle.bottle.plugins.module_utils._smolvm import (
    parse_error,
    run_command,
)

Runner = Callable[[Sequence[str], Mapping[str, str], int], "tuple[int, str, str]"]

_AVAILABILITY = "import json, smol; print(json.dumps(list(smol.local_availability())))"

#: Where the smolmachines_host role keeps the verdict (the role's state directory).
DEFAULT_CACHE_PATH = "/var/lib/bot-bottle/smolmachines/boot-probe.json"
#: Bumped when the key or the stored entry changes shape: older entries are ignored.
CACHE_FORMAT = 1
KVM_DEVICE = "/dev/kvm"


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
    """``{"can_boot": bool, "reason": str, "availability": [ok, code, reason], "step": str}``;
    ``step`` names the step that failed (``availability``, ``create``, ``start``, ``exec``),
    empty when the machine booted."""
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
        result.update(can_boot=False, reason=f"{avail[1]}: {avail[2]}", step="availability")
        return result
    name = "bot-bottle-boot-probe-" + uuid.uuid4().hex[:8]

    def machine(operation: str, *args: str, limit: int = 60) -> str | None:
        argv = [cli, "machine", operation, "--error-format", "json", "--name", name, *args]
        rc, _out, err = runner(argv, env, limit)
        return None if rc == 0 else parse_error(rc, err, operation).describe()

    try:
        failure = machine("create")
        if failure:
            result.update(
                can_boot=False, reason=f"creating a probe machine failed: {failure}", step="create"
            )
            return result
        failure = machine("start", limit=timeout)
        if failure:
            result.update(
                can_boot=False,
                reason=f"KVM is present but a microVM did not boot: {failure}",
                step="start",
            )
            return result
        failure = machine("exec", "--", "true")
        if failure:
            result.update(
                can_boot=False,
                reason=f"a microVM booted but could not run a command: {failure}",
                step="exec",
            )
            return result
        result.update(can_boot=True, reason="a probe microVM booted and ran a command", step="")
        return result
    finally:
        machine("delete", "-f")


# --------------------------------------------------------------------------- the verdict's cache


def device_identity(st: os.stat_result | None) -> dict[str, Any]:
    """What changes when access to a device node changes: whether it exists, its type
    and device numbers, its permission bits and its owner. ``st`` is the node's
    ``os.stat`` result, or None when it does not exist."""
    if st is None:
        return {"exists": False}
    return {
        "exists": True,
        "char": stat.S_ISCHR(st.st_mode),
        "rdev": [os.major(st.st_rdev), os.minor(st.st_rdev)],
        "mode": f"{stat.S_IMODE(st.st_mode):04o}",
        "uid": st.st_uid,
        "gid": st.st_gid,
    }


_DIST_INFO = re.compile(r"^smolmachines-([^-/]+)\.dist-info$")


def dist_version(names: Iterable[str]) -> str:
    """The smolmachines version from its ``smolmachines-<version>.dist-info`` folder
    names (the last one when several are there); empty when there is none."""
    found = sorted(
        match.group(1)
        for match in (_DIST_INFO.match(os.path.basename(name.rstrip("/"))) for name in names)
        if match
    )
    return found[-1] if found else ""


def cache_key(
    *,
    smolmachines: str,
    kernel: str,
    kvm: Mapping[str, Any],
    uid: int,
    groups: Iterable[int],
    timeout: int,
) -> dict[str, Any]:
    """Everything the verdict depends on. Equal keys mean the probe would answer the same:
    the same smolmachines on the same kernel, the same ``/dev/kvm`` node with the same
    permissions, probed by the same user with the same groups and start timeout."""
    return {
        "format": CACHE_FORMAT,
        "smolmachines": smolmachines,
        "kernel": kernel,
        "kvm": dict(kvm),
        "uid": uid,
        "groups": sorted(set(groups)),
        "timeout": timeout,
    }


def cacheable(result: Mapping[str, Any]) -> bool:
    """Whether a probe result is a verdict about booting worth keeping. A boot, or a
    refusal by KVM, smolvm's start or the guest, is; a smolmachines that cannot be
    imported, or a machine that could not even be created (disk, smolvm's state), says
    nothing about booting and is probed again next time."""
    if not isinstance(result.get("can_boot"), bool):
        return False
    if result.get("step") == "create":
        return False
    availability = result.get("availability")
    return not (
        isinstance(availability, list)
        and len(availability) == 3
        and availability[1] == "RUNTIME_NOT_INSTALLED"
    )


def cache_entry(key: Mapping[str, Any], result: Mapping[str, Any], now: float) -> dict[str, Any]:
    """The stored form of a verdict: its key, the verdict, and when it was made (UTC)."""
    when = datetime.datetime.fromtimestamp(now, tz=datetime.UTC)
    return {
        "key": dict(key),
        "probed_at": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "verdict": {
            "can_boot": bool(result["can_boot"]),
            "reason": str(result["reason"]),
            "availability": list(result.get("availability") or [None, None, None]),
            "step": str(result.get("step") or ""),
        },
    }


def cached_verdict(entry: Any, key: Mapping[str, Any]) -> dict[str, Any] | None:
    """The stored verdict when ``entry`` (what the cache file holds, of any shape) is a
    well-formed entry whose key equals ``key``; else None (probe again)."""
    if not isinstance(entry, dict) or entry.get("key") != dict(key):
        return None
    verdict = entry.get("verdict")
    if not isinstance(verdict, dict):
        return None
    if not isinstance(verdict.get("can_boot"), bool) or not isinstance(verdict.get("reason"), str):
        return None
    availability = verdict.get("availability")
    if not isinstance(availability, list) or len(availability) != 3:
        return None
    probed_at = entry.get("probed_at")
    return {
        "can_boot": verdict["can_boot"],
        "reason": verdict["reason"],
        "availability": list(availability),
        "step": str(verdict.get("step") or ""),
        "probed_at": probed_at if isinstance(probed_at, str) else "",
    }


def host_key(venv: str, timeout: int, kvm_path: str = KVM_DEVICE) -> dict[str, Any]:
    """:func:`cache_key` for this host and process (reads the venv, uname and the node)."""
    try:
        st: os.stat_result | None = os.stat(kvm_path)
    except FileNotFoundError:
        st = None
    return cache_key(
        smolmachines=dist_version(
            glob.glob(os.path.join(venv, "lib", "python3*", "site-packages", "*.dist-info"))
        ),
        kernel=os.uname().release,
        kvm=device_identity(st),
        uid=os.getuid(),
        groups=[os.getgid(), *os.getgroups()],
        timeout=timeout,
    )


def read_cache(path: str) -> Any:
    """What the cache file holds, or None when it is missing or not JSON."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def write_cache(path: str, entry: Mapping[str, Any]) -> str:
    """Store ``entry`` atomically (readable by all, like the role's other state); returns
    an error message, empty on success."""
    folder = os.path.dirname(path) or "."
    try:
        os.makedirs(folder, mode=0o755, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".boot-probe-", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(entry, handle, indent=2, sort_keys=True)
                handle.write("\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as exc:
        return f"cannot store the boot probe's verdict in {path}: {exc}"
    return ""


def probe_with_cache(
    run_probe: Callable[[], Mapping[str, Any]],
    key: Mapping[str, Any],
    *,
    path: str = DEFAULT_CACHE_PATH,
    use: bool = True,
    refresh: bool = False,
    store: bool = True,
    now: Callable[[], float] = lambda: datetime.datetime.now(datetime.UTC).timestamp(),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The verdict (the probe's result plus ``cached`` and ``probed_at``) and what happened
    to the cache (``{"path", "hit", "stored", "error"}``).

    With ``use``, a stored verdict whose key equals ``key`` is returned without probing,
    unless ``refresh``. A new verdict is stored when ``use`` and ``store`` (False in check
    mode) and it is :func:`cacheable`. Not being able to store it is reported, not fatal.
    """
    info: dict[str, Any] = {"path": path, "hit": False, "stored": False, "error": ""}
    if use and not refresh:
        found = cached_verdict(read_cache(path), key)
        if found is not None:
            info["hit"] = True
            return {**found, "cached": True}, info
    result = dict(run_probe())
    entry = cache_entry(key, result, now())
    result.update(cached=False, probed_at=entry["probed_at"])
    if use and store and cacheable(result):
        info["error"] = write_cache(path, entry)
        info["stored"] = not info["error"]
    return result, info
