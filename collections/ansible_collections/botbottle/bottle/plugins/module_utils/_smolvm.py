# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one client that talks to smolvm. **PRIVATE** to the botbottle.bottle collection.

It drives the ``smolvm`` CLI bundled in the pinned ``smolmachines`` wheel
(``smol/smol-vmm``) with ``--error-format json`` for every machine operation --
create, update, start, stop, delete, list -- so creating and starting a machine
use the same tool, and the modules need no Python SDK on the managed host's
interpreter. What ``machine ls --json`` does not show (env, mounts, ports,
workdir) is read from smolvm's state database, opened read-only; it is never
written.

Cloud credentials (``SMOL_CLOUD_TOKEN`` …) are removed from the CLI's
environment: machines are always local.
"""

from __future__ import annotations

import builtins
import glob
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Runner = Callable[[Sequence[str], Mapping[str, str]], "tuple[int, str, str]"]

_CLOUD_VARIABLES = ("SMOL_CLOUD_TOKEN", "SMOL_API_KEY", "SMOL_CLOUD_URL", "SMOL_TARGET")
DEFAULT_VENV = "/opt/bot-bottle/smolmachines"

HINTS = {
    "NOT_FOUND": "the machine or a path it names does not exist; check the name and that "
    "mount sources are absolute host paths that exist",
    "CONFLICT": "a machine with this name already exists or is being created; re-run the task "
    "to read its state",
    "CONFIG_ERROR": "smolvm rejected the configuration; check the option it names (machine "
    "name: letters, digits, '-' and '_'; image path; CIDR; port; mount)",
    "MOUNT_ERROR": "mount targets must be absolute paths inside the machine, and staged mounts "
    "cannot be read-only",
    "KVM_UNAVAILABLE": "this host cannot run microVMs: /dev/kvm is missing or not accessible; "
    "enable KVM (kvm-intel/kvm-amd) and put the service user in the kvm group "
    "(the botbottle.bottle.smolmachines_host role does both)",
    "HYPERVISOR_UNAVAILABLE": "no usable hypervisor on this host; run bottles on a host that "
    "passes the boot probe of the botbottle.bottle.smolmachines_host role",
    "SMOLVM_ERROR": "smolvm failed; when starting, this usually means the host cannot boot "
    "microVMs (check the fact bottle_host_can_boot_microvms set by the "
    "botbottle.bottle.smolmachines_host role)",
    "INVALID_STATE": "the machine is not in a state that allows this; start or stop it first",
    "STORAGE_ERROR": "smolvm could not read or write its disks; check free space in its data "
    "directory",
    "TIMEOUT": "the machine did not become ready in time",
    "COMMAND_FAILED": "the command inside the machine failed",
    "INTERRUPTED": "the operation was interrupted; re-run the task",
}


class SmolvmError(Exception):
    """A smolvm failure with its stable code and a hint that says what to do."""

    def __init__(self, code: str, message: str, operation: str = "") -> None:
        self.code = code
        self.message = message
        self.operation = operation
        self.hint = HINTS.get(code, "see smolvm's message")
        super().__init__(self.describe())

    def describe(self) -> str:
        where = f"smolvm {self.operation}: " if self.operation else "smolvm: "
        return f"{where}{self.code}: {self.message} ({self.hint})"


def find_binary(explicit: str | None = None, venv: str = DEFAULT_VENV) -> str:
    """The smolvm CLI: ``explicit``, else the one in the host role's virtualenv, else PATH."""
    if explicit:
        return explicit
    bundled = sorted(
        glob.glob(os.path.join(venv, "lib", "python3*", "site-packages", "smol", "smol-vmm"))
    )
    if bundled:
        return bundled[-1]
    for name in ("smolvm", "smol-vmm"):
        found = shutil.which(name)
        if found:
            return found
    raise SmolvmError(
        "NOT_FOUND",
        f"no smolvm CLI found (looked in {venv} and on PATH)",
        "locate",
    )


def run_command(
    argv: Sequence[str], env: Mapping[str, str], timeout: int | None = None
) -> tuple[int, str, str]:
    """Run a command without stdin; a timeout or a missing program is a result, not a raise."""
    try:
        proc = subprocess.run(
            list(argv),
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return 124, "", f"timed out after {timeout}s"
    except OSError as exc:
        return 127, "", str(exc)
    return proc.returncode, proc.stdout, proc.stderr


def parse_error(rc: int, stderr: str, operation: str) -> SmolvmError:
    """The error of a failed CLI call: its JSON error line, else clap's usage text."""
    for raw in stderr.splitlines():
        line = raw.strip()
        if line.startswith('{"error"'):
            try:
                data = json.loads(line)["error"]
                code = str(data.get("code", "SMOLVM_ERROR"))
                message = str(data.get("message", ""))
                if code == "CONFIG_ERROR" and "already exists" in message:
                    code = "CONFLICT"  # the CLI reports a taken name as a config error
                return SmolvmError(code, message, operation)
            except (ValueError, KeyError, TypeError):
                break
    lines = [x for x in stderr.splitlines() if x.strip() and "no packed assets" not in x]
    text = " ".join(x.strip() for x in lines if not x.startswith(("For more", "Usage:")))
    code = "CONFIG_ERROR" if rc == 2 else "SMOLVM_ERROR"
    return SmolvmError(code, text or f"exit code {rc}", operation)


class SmolvmClient:
    """Every call into smolvm goes through here."""

    def __init__(
        self,
        binary: str,
        data_home: str | None = None,
        cache_home: str | None = None,
        runner: Runner | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.binary = binary
        self.data_home = data_home
        base = dict(os.environ if environ is None else environ)
        for variable in _CLOUD_VARIABLES:
            base.pop(variable, None)
        if data_home:
            base["XDG_DATA_HOME"] = data_home
        if cache_home:
            base["XDG_CACHE_HOME"] = cache_home
        self.env = base
        self.runner = runner or run_command
        self.calls: list[list[str]] = []

    # ------------------------------------------------------------------ plumbing

    def _run(self, operation: str, args: Sequence[str]) -> str:
        argv = [self.binary, "machine", operation, "--error-format", "json", *args]
        self.calls.append(argv)
        rc, out, err = self.runner(argv, self.env)
        if rc != 0:
            raise parse_error(rc, err, operation)
        return out

    def database(self) -> str:
        """Path of smolvm's state database for this client's data directory."""
        home = (
            self.data_home
            or self.env.get("XDG_DATA_HOME")
            or os.path.join(self.env.get("HOME", os.path.expanduser("~")), ".local", "share")
        )
        return os.path.join(home, "smolvm", "server", "smolvm.db")

    # ------------------------------------------------------------------ reads

    def list(self) -> list[dict[str, Any]]:
        """All machines, as ``machine ls --json`` reports them."""
        out = self._run("ls", ["--json"])
        data = json.loads(out or "[]")
        return list(data) if isinstance(data, list) else []

    def get(self, name: str) -> dict[str, Any] | None:
        """One machine's listing, or None."""
        for machine in self.list():
            if machine.get("name") == name:
                return machine
        return None

    def record(self, name: str) -> dict[str, Any] | None:
        """The machine's row in the state database (read-only), or None."""
        path = self.database()
        if not os.path.exists(path):
            return None
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            try:
                row = conn.execute("SELECT data FROM vms WHERE name = ?", (name,)).fetchone()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise SmolvmError("STORAGE_ERROR", f"cannot read {path}: {exc}", "read") from None
        if row is None:
            return None
        data = row[0].decode("utf-8") if isinstance(row[0], bytes) else row[0]
        parsed = json.loads(data)
        return parsed if isinstance(parsed, dict) else None

    def egress_events(self, name: str, limit: int = 200) -> builtins.list[dict[str, Any]]:
        """The machine's egress denials, newest ``limit`` (``machine egress-events --json``)."""
        out = self._run("egress-events", ["--name", name, "--json", "--limit", str(limit)])
        data = json.loads(out or "[]")
        if isinstance(data, dict):
            data = data.get("events", [])
        return [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []

    def exec(self, name: str, argv: Sequence[str], user: str | None = None) -> str:
        """Run ``argv`` in the running machine; its stdout (a non-zero exit raises)."""
        extra = ["--user", user] if user else []
        return self._run("exec", ["--name", name, *extra, "--", *argv])

    def copy_in(self, name: str, source: str, dest: str, mode: str = "755") -> None:
        """Copy the host file ``source`` to ``dest`` in the machine."""
        self._run("cp", ["--mode", mode, source, f"{name}:{dest}"])

    # ------------------------------------------------------------------ writes

    def create(self, args: Sequence[str]) -> None:
        self._run("create", args)

    def update(self, name: str, args: Sequence[str]) -> None:
        self._run("update", ["--name", name, *args])

    def start(self, name: str) -> None:
        self._run("start", ["--name", name])

    def stop(self, name: str) -> None:
        self._run("stop", ["--name", name])

    def delete(self, name: str) -> None:
        self._run("delete", ["--name", name, "-f"])


# Options of every module that talks to smolvm (documented in smolmachine's DOCUMENTATION).
CLIENT_ARGUMENT_SPEC: dict[str, Any] = {
    "binary": {"type": "path"},
    "data_home": {"type": "path"},
    "cache_home": {"type": "path"},
}


def client_from_params(params: Mapping[str, Any]) -> SmolvmClient:
    """The client for a module's ``binary``/``data_home``/``cache_home`` parameters."""
    return SmolvmClient(
        find_binary(params.get("binary")), params.get("data_home"), params.get("cache_home")
    )
