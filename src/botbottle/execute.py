"""``bottle exec`` and ``bottle shell``: run a command in a running bottle.

The inventory says which host runs the bottle (exactly one must be chosen), how to
reach that host (``ansible_connection``: local, ssh, or a Docker container through
community.docker.docker) and which backend holds the bottle (``bottle_backend``).
The command runs as the bottle's user with the bottle's environment:

* Docker: ``docker exec -i [-t] bottle-NAME CMD...`` -- Docker runs it as the
  container's configured user (the manifest's ``runtime.user``), in its working
  directory, with its environment. Only once the bottle is sealed: the holder has
  loaded its rules and marked the namespace (what the agent's seal guard waits for).
  The command is not run through the seal guard itself: the guard's static busybox
  would run its own applets (``ls``, ``sh``, ``env`` ...) instead of the image's.
* smolmachines: ``smolvm machine exec --name bottle-NAME [--user USER] -i [-t] --
  CMD...`` -- the machine's own environment; ``--user`` is the manifest's
  ``runtime.user`` when it sets one, else smolvm's default (the machine's user,
  then the image's USER).

Everything that decides *what* to run is a pure function of the inventory here
(tested without a host); :func:`run` is the only part that starts processes. No
argv is ever a shell string, except the one ssh needs: the remote command, built
with :func:`shlex.join`.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ansible_runner

from ansible_collections.botbottle.bottle.plugins.module_utils._bottle import object_name
from ansible_collections.botbottle.bottle.plugins.module_utils._docker_bottle import (
    GUARD_BINARY,
    SEAL,
)
from ansible_collections.botbottle.bottle.plugins.plugin_utils._manifest import Bottle, resolve_all
from ansible_collections.botbottle.bottle.plugins.plugin_utils._problem import Problem
from botbottle import fleet
from botbottle._paths import ansible_env

EXIT_FAILED = 1
EXIT_INVALID = 2

DEFAULT_SMOLVM_VENV = "/opt/bot-bottle/smolmachines"

#: ``bottle shell``: bash when the bottle has it, else sh. Not a login shell: a login
#: shell reads /etc/profile, which resets PATH, and the point is the agent's own env.
SHELL_ARGV = (
    "/bin/sh",
    "-c",
    "if command -v bash >/dev/null 2>&1; then exec bash; fi; exec sh",
    "bottle-shell",
)

#: Finds the smolvm CLI on the host the way the modules do (module_utils
#: _smolvm.find_binary): the newest in the host role's virtualenv ($1), else PATH.
#: Fixed text; every value reaches it as an argument.
SMOLVM_LOCATOR = (
    'v=$1; shift; b=; for c in "$v"/lib/python3*/site-packages/smol/smol-vmm; do '
    '[ -x "$c" ] && b=$c; done; '
    '[ -n "$b" ] || b=$(command -v smolvm || command -v smol-vmm) || '
    '{ echo "bottle: no smolvm CLI on this host (looked in $v and on PATH)" >&2; exit 127; }; '
    'exec "$b" "$@"'
)
#: Cloud credentials never reach smolvm: machines are always local (as in _smolvm).
SMOLVM_CLOUD_VARIABLES = ("SMOL_CLOUD_TOKEN", "SMOL_API_KEY", "SMOL_CLOUD_URL", "SMOL_TARGET")

_LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
_LOCAL_CONNECTIONS = ("local", "ansible.builtin.local", "ansible.legacy.local")
_SSH_CONNECTIONS = (
    "ssh",
    "smart",
    "paramiko",
    "paramiko_ssh",
    "ansible.builtin.ssh",
    "ansible.legacy.ssh",
    "ansible.builtin.paramiko_ssh",
    "ansible.legacy.paramiko_ssh",
)
_DOCKER_CONNECTIONS = (
    "docker",
    "community.docker.docker",
    "community.docker.docker_api",
)
BACKENDS = ("docker", "smolmachines", "auto")

#: (argv) -> (rc, stdout, stderr): a captured run (the state probe)
Probe = Callable[[Sequence[str]], tuple[int, str, str]]
#: (argv) -> exit code: the command itself, with the terminal passed through
Execute = Callable[[Sequence[str]], int]


class ExecError(Exception):
    """Why ``bottle exec`` cannot run the command; ``code`` is the CLI's exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --------------------------------------------------------------------------- the host


@dataclass(frozen=True)
class Transport:
    """How to reach a managed host: here (``local``), ``ssh``, or ``docker`` exec into
    the container that is the host (community.docker.docker)."""

    kind: str
    address: str = ""
    user: str = ""
    port: int | None = None
    #: ssh: its options (key, common and extra args); docker: the CLI's global options
    options: tuple[str, ...] = ()
    #: run the host-side command as this user through sudo (ansible_become)
    become_user: str = ""


@dataclass(frozen=True)
class Target:
    """The one bottle a ``bottle exec`` runs in, and where it is."""

    host: str
    bottle: str
    backend: str
    transport: Transport
    #: the manifest's runtime.user ("" when it sets none)
    user: str = ""
    smolvm_binary: str = ""
    smolvm_venv: str = DEFAULT_SMOLVM_VENV
    smolvm_data_home: str = ""


def _text(host: str, variables: Mapping[str, Any], *names: str) -> str:
    """The first of ``names`` the host sets, as text; a Jinja template is refused (the
    CLI reads the inventory as ``ansible-inventory`` prints it, untemplated)."""
    for name in names:
        value = variables.get(name)
        if value is None or value == "":
            continue
        text = str(value)
        if "{{" in text or "{%" in text:
            raise ExecError(
                EXIT_INVALID,
                f"host {host}: {name} is a template ({text!r}); bottle exec reads the inventory "
                "untemplated (fix: set a plain value for this host)",
            )
        return text
    return ""


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on", "y", "t")
    return bool(value)


def transport_for(host: str, variables: Mapping[str, Any]) -> Transport:
    """How to reach ``host``, from its inventory variables."""
    connection = _text(host, variables, "ansible_connection")
    become = ""
    if _truthy(variables.get("ansible_become")):
        method = _text(host, variables, "ansible_become_method") or "sudo"
        if method not in ("sudo", "ansible.builtin.sudo"):
            raise ExecError(
                EXIT_INVALID,
                f"host {host}: ansible_become_method {method} is not supported by bottle exec "
                "(sudo is)",
            )
        become = _text(host, variables, "ansible_become_user") or "root"
    if connection in _LOCAL_CONNECTIONS or (not connection and host in _LOCAL_NAMES):
        return Transport("local", become_user=become)
    if not connection or connection in _SSH_CONNECTIONS:
        options: list[str] = []
        key = _text(host, variables, "ansible_ssh_private_key_file", "ansible_private_key_file")
        if key:
            options += ["-i", key]
        for name in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
            options += shlex.split(_text(host, variables, name))
        port = _text(host, variables, "ansible_port", "ansible_ssh_port")
        try:
            number = int(port) if port else None
        except ValueError:
            raise ExecError(
                EXIT_INVALID, f"host {host}: ansible_port {port!r} is not a number"
            ) from None
        return Transport(
            "ssh",
            address=_text(host, variables, "ansible_host", "ansible_ssh_host") or host,
            user=_text(host, variables, "ansible_user", "ansible_ssh_user"),
            port=number,
            options=tuple(options),
            become_user=become,
        )
    if connection in _DOCKER_CONNECTIONS:
        # community.docker.docker: the last of these the host sets names the container
        address = _text(host, variables, "ansible_docker_host", "ansible_host") or host
        return Transport(
            "docker",
            address=address,
            user=_text(host, variables, "ansible_docker_user", "ansible_user"),
            options=tuple(_text(host, variables, "ansible_docker_extra_args").split()),
            become_user=become,
        )
    raise ExecError(
        EXIT_INVALID,
        f"host {host}: ansible_connection {connection} is not supported by bottle exec "
        "(local, ssh and community.docker.docker are)",
    )


def wrap(transport: Transport, argv: Sequence[str], *, tty: bool) -> list[str]:
    """``argv`` (a host-side command) as run from here through ``transport``."""
    inner = list(argv)
    if transport.become_user:
        inner = ["sudo", "-u", transport.become_user, "--", *inner]
    if transport.kind == "local":
        return inner
    if transport.kind == "ssh":
        command = ["ssh", "-t" if tty else "-T", *transport.options]
        if transport.port is not None:
            command += ["-p", str(transport.port)]
        if transport.user:
            command += ["-l", transport.user]
        # ssh hands the remote command to the login shell as one string: quote each word
        return [*command, "--", transport.address, shlex.join(inner)]
    if transport.kind == "docker":
        command = ["docker", *transport.options, "exec", "-i"]
        if tty:
            command.append("-t")
        if transport.user:
            command += ["-u", transport.user]
        return [*command, transport.address, *inner]
    raise ValueError(f"unknown transport {transport.kind!r}")


# --------------------------------------------------------------------------- the backend


def smolvm_prefix(target: Target) -> list[str]:
    """The host-side argv that runs smolvm (its arguments follow): no cloud credentials,
    the inventory's data directory, the CLI the modules would use."""
    command = ["env"]
    for variable in SMOLVM_CLOUD_VARIABLES:
        command += ["-u", variable]
    if target.smolvm_data_home:
        command.append(f"XDG_DATA_HOME={target.smolvm_data_home}")
    if target.smolvm_binary:
        return [*command, target.smolvm_binary]
    return [*command, "sh", "-c", SMOLVM_LOCATOR, "bottle-smolvm", target.smolvm_venv]


def backend_argv(target: Target, backend: str, command: Sequence[str], *, tty: bool) -> list[str]:
    """The host-side argv that runs ``command`` in the bottle, stdin kept open."""
    if not command:
        raise ExecError(EXIT_INVALID, "no command to run (bottle exec NAME -- COMMAND...)")
    name = object_name(target.bottle)
    if backend == "docker":
        return ["docker", "exec", "-i", *(["-t"] if tty else []), name, *command]
    if backend == "smolmachines":
        user = ["--user", target.user] if target.user else []
        return [
            *smolvm_prefix(target),
            "machine",
            "exec",
            "--name",
            name,
            *user,
            "-i",
            *(["-t"] if tty else []),
            "--",
            *command,
        ]
    raise ValueError(f"unknown backend {backend!r}")


def state_argv(target: Target, backend: str) -> list[str]:
    """The host-side argv whose output says the bottle's state on ``backend``."""
    name = object_name(target.bottle)
    if backend == "docker":
        return ["docker", "container", "inspect", "--format", "{{.State.Status}}", name]
    if backend == "smolmachines":
        return [
            *smolvm_prefix(target),
            "machine",
            "status",
            "--name",
            name,
            "--json",
            "--error-format",
            "json",
        ]
    raise ValueError(f"unknown backend {backend!r}")


ABSENT = "absent"
#: Where the agent's namespace says it is sealed (the holder sets it after its rules load).
SEAL_FILE = "/sys/class/net/lo/ifalias"


def seal_argv(target: Target) -> list[str]:
    """The host-side argv that prints the Docker bottle's seal mark (read with the seal
    guard's own busybox: the image needs no tools)."""
    return ["docker", "exec", object_name(target.bottle), GUARD_BINARY, "cat", SEAL_FILE]


def check_sealed(target: Target, rc: int, out: str, err: str) -> None:
    """A running Docker agent whose namespace is not sealed runs without its rules: no
    command goes in (exit 1)."""
    if rc == 0 and out.strip() == SEAL:
        return
    why = f"its seal mark is {out.strip()!r}" if rc == 0 else _last_line(err, rc)
    raise ExecError(
        EXIT_FAILED,
        f"bottle {target.bottle} on {target.host} runs but is not sealed: its firewall rules "
        f"are not loaded ({why}); nothing was run in it (fix: bottle status shows why; "
        "bottle up recreates it)",
    )


def parse_state(backend: str, rc: int, out: str, err: str) -> str:
    """The bottle's state from its backend's answer: Docker's container status or smolvm's
    machine state, ``absent`` when there is no such object. A backend that cannot be asked
    raises (exit 1)."""
    if backend == "docker":
        if rc == 0:
            return out.strip() or "unknown"
        if "no such container" in err.lower() or "no such object" in err.lower():
            return ABSENT
        raise ExecError(EXIT_FAILED, f"cannot ask Docker: {_last_line(err, rc)}")
    if backend == "smolmachines":
        if rc == 0:
            try:
                data = json.loads(out)
            except ValueError:
                data = None
            if isinstance(data, dict) and data.get("state"):
                return str(data["state"])
            raise ExecError(EXIT_FAILED, f"cannot read smolvm's machine status: {out.strip()!r}")
        if "machine" in err and "not found" in err:  # "machine 'bottle-x' not found"
            return ABSENT
        raise ExecError(EXIT_FAILED, f"cannot ask smolvm: {_last_line(err, rc)}")
    raise ValueError(f"unknown backend {backend!r}")


def _last_line(err: str, rc: int) -> str:
    lines = [x.strip() for x in err.splitlines() if x.strip() and "no packed assets" not in x]
    return lines[-1] if lines else f"exit code {rc}"


# --------------------------------------------------------------------------- the inventory


def hosts_with(bottles: Mapping[str, Sequence[Bottle]], name: str) -> list[str]:
    """The hosts whose ``bottles`` declare the bottle ``name``."""
    return sorted(host for host, found in bottles.items() if any(b.name == name for b in found))


def choose_host(
    bottles: Mapping[str, Sequence[Bottle]], name: str, inventory: str, limit: str | None
) -> str:
    """The one host to run in: exit 2 when none or several (then --limit must narrow)."""
    hosts = hosts_with(bottles, name)
    where = f"inventory {inventory}" + (f" (--limit {limit})" if limit else "")
    if not hosts:
        known = sorted({b.name for found in bottles.values() for b in found})
        listing = ", ".join(known) if known else "none"
        raise ExecError(
            EXIT_INVALID,
            f"no host in {where} declares bottle {name} (bottles there: {listing})",
        )
    if len(hosts) > 1:
        raise ExecError(
            EXIT_INVALID,
            f"bottle {name} is declared on {len(hosts)} hosts of {where}: {', '.join(hosts)} "
            "(fix: pick one with --limit HOST)",
        )
    return hosts[0]


def resolve_hosts(
    inventory: Mapping[str, Any], inventory_dir: Path
) -> tuple[dict[str, list[Bottle]], list[Problem]]:
    """Every host's resolved bottles (manifests relative to the inventory's folder)."""
    found: dict[str, list[Bottle]] = {}
    problems: list[Problem] = []
    for host, entries in fleet.inventory_bottles(inventory).items():
        paths = list(fleet.manifest_paths(host, entries, inventory_dir, problems))
        bottles, more = resolve_all(paths) if paths else ([], [])
        found[host] = bottles
        problems.extend(more)
    return found, problems


def target_for(
    inventory: Mapping[str, Any],
    bottles: Mapping[str, Sequence[Bottle]],
    name: str,
    inventory_path: str,
    limit: str | None,
) -> Target:
    """Where bottle ``name`` runs and how to get there."""
    host = choose_host(bottles, name, inventory_path, limit)
    variables = ((inventory.get("_meta") or {}).get("hostvars") or {}).get(host) or {}
    backend = _text(host, variables, "bottle_backend") or "smolmachines"
    if backend not in BACKENDS:
        raise ExecError(
            EXIT_INVALID,
            f"host {host}: bottle_backend is {backend!r}; use smolmachines, docker or auto",
        )
    bottle = next(b for b in bottles[host] if b.name == name)
    runtime = bottle.manifest.get("runtime") or {}
    return Target(
        host=host,
        bottle=name,
        backend=backend,
        transport=transport_for(host, variables),
        user=str(runtime.get("user") or ""),
        smolvm_binary=_text(host, variables, "bottle_host_smolvm_binary"),
        smolvm_venv=_text(host, variables, "smolmachines_host_venv") or DEFAULT_SMOLVM_VENV,
        smolvm_data_home=_text(host, variables, "bottle_smolvm_data_home"),
    )


def load_inventory(inventory: str, limit: str | None) -> dict[str, Any]:
    """``ansible-inventory --list [--limit PATTERN]``: only the hosts the pattern selects
    (Ansible's own pattern matching: groups, ``:&``, ``:!``, wildcards, ``~regex``)."""
    if not limit:
        return fleet.load_inventory(inventory)
    fleet._tools_on_path()
    out, err, rc = ansible_runner.run_command(
        executable_cmd="ansible-inventory",
        cmdline_args=["--list", "-i", inventory, "--limit", limit],
        envvars=ansible_env(),
        quiet=True,
        runner_mode="subprocess",  # stderr (warnings) apart from the JSON
    )
    if rc != 0 or not out:
        raise ValueError(f"cannot read inventory {inventory}: {(err or '').strip() or rc}")
    data = json.loads(out)
    if not isinstance(data, dict):
        raise ValueError(f"cannot read inventory {inventory}: not a mapping")
    return data


# --------------------------------------------------------------------------- running


def command_argv(target: Target, backend: str, command: Sequence[str], *, tty: bool) -> list[str]:
    """What runs here to run ``command`` in the bottle."""
    return wrap(target.transport, backend_argv(target, backend, command, tty=tty), tty=tty)


def probe_argv(target: Target, backend: str) -> list[str]:
    """What runs here to read the bottle's state (no terminal)."""
    return wrap(target.transport, state_argv(target, backend), tty=False)


def decide_backend(target: Target, probe: Probe) -> tuple[str, str]:
    """(backend, state) of the bottle. ``auto``: Docker when Docker holds the agent
    container (a Docker that does not answer holds nothing), else smolmachines."""
    if target.backend in ("docker", "auto"):
        rc, out, err = probe(probe_argv(target, "docker"))
        if target.backend == "docker":
            _unreachable(target, rc, err)
            return "docker", parse_state("docker", rc, out, err)
        if rc == 0:
            return "docker", parse_state("docker", rc, out, err)
        _unreachable(target, rc, err)
    rc, out, err = probe(probe_argv(target, "smolmachines"))
    _unreachable(target, rc, err)
    return "smolmachines", parse_state("smolmachines", rc, out, err)


def _unreachable(target: Target, rc: int, err: str) -> None:
    """ssh's own failure (255) or docker's for the host container: the host is not reached."""
    kind, text = target.transport.kind, err.lower()
    host_container = target.transport.address.lower()
    if (kind == "ssh" and rc == 255) or (
        kind == "docker"
        and rc != 0
        and host_container in text
        and ("no such container" in text or "is not running" in text)
    ):
        raise ExecError(EXIT_FAILED, f"cannot reach host {target.host}: {_last_line(err, rc)}")


def run(
    target: Target,
    command: Sequence[str],
    inventory: str,
    *,
    tty: bool,
    probe: Probe,
    execute: Execute,
) -> int:
    """Run ``command`` in the bottle: its exit code, or ExecError when the bottle is not
    running."""
    backend, state = decide_backend(target, probe)
    if state != "running":
        said = "does not exist" if state == ABSENT else f"is {state}"
        raise ExecError(
            EXIT_FAILED,
            f"bottle {target.bottle} is not running on {target.host} ({backend}: it {said}) "
            f"(fix: bottle up -i {inventory} --limit {target.host})",
        )
    if backend == "docker":
        check_sealed(target, *probe(wrap(target.transport, seal_argv(target), tty=False)))
    return execute(command_argv(target, backend, command, tty=tty))


def capture(argv: Sequence[str]) -> tuple[int, str, str]:
    """Run ``argv`` without stdin, capturing its output; a missing program is rc 127."""
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
    except OSError as exc:
        return 127, "", str(exc)
    except subprocess.TimeoutExpired:
        return 124, "", f"{argv[0]} did not answer in 120 s"
    return proc.returncode, proc.stdout, proc.stderr


def replace_process(argv: Sequence[str]) -> int:
    """Become ``argv`` (the terminal, signals and the exit code are the command's own)."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(argv[0], list(argv))
    except OSError as exc:
        raise ExecError(EXIT_FAILED, f"cannot run {argv[0]}: {exc.strerror}") from None
    return EXIT_FAILED  # pragma: no cover - execvp does not return


def stdin_is_tty() -> bool:
    try:
        return os.isatty(sys.stdin.fileno())
    except (AttributeError, ValueError, OSError):
        return False


__all__ = [
    "SHELL_ARGV",
    "ExecError",
    "Target",
    "Transport",
    "backend_argv",
    "capture",
    "choose_host",
    "command_argv",
    "decide_backend",
    "load_inventory",
    "parse_state",
    "probe_argv",
    "replace_process",
    "resolve_hosts",
    "run",
    "seal_argv",
    "state_argv",
    "stdin_is_tty",
    "target_for",
    "transport_for",
    "wrap",
]
