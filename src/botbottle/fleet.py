"""Fleet operations of the ``bottle`` CLI: validate an inventory's bottles, then run
the playbooks through ansible-runner's Python API with live progress.

The pure parts -- turning runner events into progress lines, summarising a run,
collecting an inventory's bottle entries -- are functions here, tested without
Ansible. :func:`run_playbook` is the only place that calls ansible-runner.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import ansible_runner

from ansible_collections.botbottle.bottle.plugins.plugin_utils import _enforcement as enforcement
from ansible_collections.botbottle.bottle.plugins.plugin_utils._manifest import (
    bottle_record,
    env_summary,
    resolve_all,
)
from ansible_collections.botbottle.bottle.plugins.plugin_utils._problem import Problem
from botbottle._paths import PLAYBOOKS_DIR, ansible_env

ARTIFACTS_ENV = "BOTTLE_ARTIFACTS_DIR"
_RESULT_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "FAILED",
    "runner_on_unreachable": "UNREACHABLE",
    "runner_on_skipped": "skipped",
    "runner_item_on_failed": "FAILED",
}
_REDACTED = "********"


def _tools_on_path() -> None:
    """ansible-runner looks up ansible-playbook/ansible-inventory on PATH: use this
    virtualenv's even when the console script runs without the venv activated."""
    here = os.path.dirname(sys.executable)
    parts = os.environ.get("PATH", "").split(os.pathsep)
    if here not in parts:
        os.environ["PATH"] = os.pathsep.join([here, *parts])


def artifacts_root() -> Path:
    """Where runs keep artifacts: $BOTTLE_ARTIFACTS_DIR, else ~/.local/state/bot-bottle/runs."""
    configured = os.environ.get(ARTIFACTS_ENV)
    if configured:
        return Path(configured)
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(state) / "bot-bottle" / "runs"


# --------------------------------------------------------------------------- inventory


def inventory_bottles(inventory: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Each host's ``bottles`` entries from ``ansible-inventory --list`` output."""
    hostvars = (inventory.get("_meta") or {}).get("hostvars") or {}
    found: dict[str, list[dict[str, Any]]] = {}
    for host, variables in sorted(hostvars.items()):
        entries = variables.get("bottles") or []
        if isinstance(entries, list):
            found[host] = [e if isinstance(e, dict) else {"manifest": e} for e in entries]
        else:
            found[host] = [{"manifest": entries}]
    return found


def inventory_answers(inventory: Mapping[str, Any]) -> list[str]:
    """Every answer to a prompted env entry in the inventory (``bottle_secrets`` and the
    Docker role's ``docker_bottle_secrets``: bottle -> variable -> value)."""
    answers: list[str] = []
    hostvars = (inventory.get("_meta") or {}).get("hostvars") or {}
    for variables in hostvars.values():
        for key in ("bottle_secrets", "docker_bottle_secrets"):
            by_bottle = variables.get(key) or {}
            if not isinstance(by_bottle, Mapping):
                continue
            for values in by_bottle.values():
                if isinstance(values, Mapping):
                    answers += [str(v) for v in values.values() if v not in (None, "")]
    return sorted(set(answers))


def host_backend(variables: Mapping[str, Any], override: str | None = None) -> str:
    """The backend a host's bottles run on, as site.yml decides it."""
    return str(override or variables.get("bottle_backend") or enforcement.BACKENDS[0])


def _backend_problems(
    host: str, backend: str, source: str, bottles: Sequence[Any], states: Mapping[str, str]
) -> list[Problem]:
    """The keys of a host's bottles that its backend does not enforce (bottles it
    removes are not checked: removing needs nothing enforced)."""
    if "{{" in backend:
        return []  # a template: site.yml's validation play checks the value it renders to
    if backend not in (*enforcement.BACKENDS, enforcement.AUTO):
        return [
            Problem(
                f"inventory host {host}",
                "bottle_backend",
                f"bottle_backend {backend!r} is not one of smolmachines, docker, auto",
                "use smolmachines (the default), docker (the example backend) or auto (demo only)",
            )
        ]
    context = f"inventory host {host} runs it on {source} {backend}" + (
        ", which may use either backend" if backend == enforcement.AUTO else ""
    )
    keep = [b for b in bottles if states.get(os.path.realpath(b.file), "started") != "absent"]
    return enforcement.check_bottles(keep, backend, context)[1]


def manifest_paths(
    host: str, entries: Sequence[Mapping[str, Any]], inventory_dir: Path, problems: list[Problem]
) -> dict[str, str]:
    """A host's manifest paths (relative ones against the inventory's folder), each with its
    declared state, in order; an entry without a manifest is added to ``problems``."""
    found: dict[str, str] = {}
    for entry in entries:
        manifest = entry.get("manifest")
        if not isinstance(manifest, str):
            problems.append(
                Problem(
                    f"inventory host {host}",
                    "bottles",
                    "an entry has no 'manifest'",
                    "write {manifest: PATH, state: started}",
                )
            )
            continue
        path = manifest if os.path.isabs(manifest) else str(inventory_dir / manifest)
        found[path] = str(entry.get("state", "started"))
    return found


@dataclass
class InventoryCheck:
    """What :func:`validate_inventory` found."""

    count: int  # bottle entries
    problems: list[Problem]  # empty when every host's bottles are valid
    secrets: list[str]  # values to redact: host variables the env copies, prompted answers
    # host -> its bottles as the playbooks take them (bottle_record), for every host whose
    # bottles were checked as fully as the validate play would (its backend is not a
    # template); the playbooks resolve the others themselves
    resolved: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def validate_inventory(
    inventory: Mapping[str, Any],
    inventory_dir: Path,
    *,
    check_backends: bool = False,
    backend_override: str | None = None,
) -> InventoryCheck:
    """Resolve every host's manifests (relative to the inventory's folder), once.

    With ``check_backends`` (every command but ``bottle down``, as the validate play
    does), a bottle the host creates or keeps must not set a key its backend
    (``bottle_backend``, or ``backend_override``) does not enforce.
    """
    problems: list[Problem] = []
    secrets: list[str] = inventory_answers(inventory)
    hostvars = (inventory.get("_meta") or {}).get("hostvars") or {}
    resolved: dict[str, list[dict[str, Any]]] = {}
    count = 0
    for host, entries in inventory_bottles(inventory).items():
        declared = manifest_paths(host, entries, inventory_dir, problems)
        paths = list(declared)
        states = {os.path.realpath(path): state for path, state in declared.items()}
        count += len(paths)
        bottles: list[Any] = []
        if paths:
            bottles, found = resolve_all(paths)
            problems.extend(found)
        backend = host_backend(hostvars.get(host) or {}, backend_override)
        if check_backends and paths:
            source = "--backend" if backend_override else "bottle_backend"
            problems.extend(_backend_problems(host, backend, source, bottles, states))
        if not check_backends or "{{" not in backend:
            resolved[host] = [
                bottle_record(b, states.get(os.path.realpath(b.file), "started")) for b in bottles
            ]
        for bottle in bottles:
            for info in env_summary(bottle.manifest).values():
                value = os.environ.get(info.get("variable", ""), "")
                if info["kind"] == "host" and value:
                    secrets.append(value)
    return InventoryCheck(count, problems, secrets, resolved)


# --------------------------------------------------------------------------- progress


def failure_message(result: Mapping[str, Any]) -> str:
    """Why a task failed; for a loop, each failed item's own message (Ansible's is only
    "One or more items failed")."""
    items = [r for r in result.get("results") or [] if isinstance(r, Mapping) and r.get("failed")]
    if items:
        return "; ".join(
            f"{item.get('_ansible_item_label', item.get('item', '?'))}: "
            f"{item.get('msg') or item.get('stderr') or 'failed'}"
            for item in items
        )
    return str(result.get("msg") or result.get("stderr") or "failed")


@dataclass
class Progress:
    """Turns ansible-runner events into progress output and remembers failures."""

    out: TextIO
    tty: bool = False
    secrets: Sequence[str] = ()
    failures: dict[str, str] = field(default_factory=dict)
    changed: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    set_stats: dict[str, Any] = field(default_factory=dict)
    _task: str = ""
    _started: float = field(default_factory=time.monotonic)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret and len(secret) >= 4:
                text = text.replace(secret, _REDACTED)
        return text

    def line(self, event: Mapping[str, Any]) -> str | None:
        """The progress line for one event, or None."""
        kind = str(event.get("event", ""))
        data = event.get("event_data") or {}
        if kind == "playbook_on_play_start":
            return f"== {data.get('play', '')}"
        if kind == "playbook_on_task_start":
            self._task = str(data.get("task", ""))
        elif kind == "playbook_on_stats":
            self.stats = {
                key: data.get(key) or {} for key in ("ok", "changed", "failures", "dark", "skipped")
            }
            self.set_stats = dict(data.get("artifact_data") or {})
        elif kind in _RESULT_EVENTS:
            return self._result_line(_RESULT_EVENTS[kind], data)
        return None

    def _result_line(self, state: str, data: Mapping[str, Any]) -> str | None:
        host = str(data.get("host", "?"))
        result = data.get("res") or {}
        if state == "ok" and result.get("changed"):
            state = "changed"
            self.changed[host] = self.changed.get(host, 0) + 1
        if state in ("FAILED", "UNREACHABLE") and not data.get("ignore_errors"):
            self.failures[host] = f"{self._task}: {failure_message(result)}"
        notice = str(result.get("msg", ""))
        if state == "ok" and notice.startswith("NOTICE"):
            return self.redact(notice)  # plays say NOTICE for what a user must read
        if state in ("ok", "skipped") and not self.tty:
            return None  # plain output lists what changed or failed, not every no-op
        label = f"{host:<20} {state:<11} {self._task}"
        if state in ("FAILED", "UNREACHABLE"):
            label += f" -- {failure_message(result)}"
        return self.redact(label)

    def __call__(self, event: Mapping[str, Any]) -> bool:
        text = self.line(event)
        if text is not None:
            if self.tty:
                elapsed = time.monotonic() - self._started
                self.out.write(f"\r\x1b[K[{elapsed:6.1f}s] {text}\n")
            else:
                self.out.write(text + "\n")
            self.out.flush()
        return True  # keep the event in the artifacts


def summary(progress: Progress, rc: int) -> tuple[int, list[str]]:
    """Exit code (0 success, 1 a host failed) and the summary lines."""
    failed = sorted(
        set(progress.failures)
        | set(progress.stats.get("failures") or {})
        | set(progress.stats.get("dark") or {})
    )
    lines = []
    hosts = sorted(set(progress.stats.get("ok") or {}) | set(failed))
    for host in hosts:
        changes = (progress.stats.get("changed") or {}).get(host, 0)
        if host in failed:
            reason = progress.failures.get(host, "failed")
            lines.append(progress.redact(f"FAILED  {host}: {reason}"))
        else:
            lines.append(f"ok      {host}: {changes} change(s)")
    code = 1 if failed or rc != 0 else 0
    return code, lines


# --------------------------------------------------------------------------- running


def run_playbook(
    playbook: str,
    inventory: str,
    progress: Progress,
    *,
    limit: str | None = None,
    check: bool = False,
    extravars: Mapping[str, Any] | None = None,
    resolved: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    runner_run: Callable[..., Any] | None = None,
) -> tuple[int, Path]:
    """Run one of the collection's playbooks through ansible-runner; returns (rc, artifacts dir).

    ``resolved`` (host -> bottle records, from :func:`validate_inventory`) goes to the
    playbooks in a file named by the extra variable ``bottle_resolved_file``: the
    validate play takes those hosts' bottles from it instead of resolving the manifests
    again. A file, not extra variables: Ansible treats extra variables as trusted
    templates, and a manifest's text must never be templated.
    """
    _tools_on_path()
    runner_run = runner_run or ansible_runner.run
    root = artifacts_root()
    root.mkdir(parents=True, exist_ok=True)
    ident = time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"
    cmdline = "--check --diff" if check else None
    artifacts = root / "artifacts" / ident
    variables = dict(extravars or {})
    handoff = root / "inputs" / f"{ident}.json"
    if resolved is not None:
        handoff.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(handoff, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(resolved, stream, sort_keys=True)
        variables["bottle_resolved_file"] = str(handoff)
    try:
        runner = runner_run(
            private_data_dir=str(root),
            project_dir=str(PLAYBOOKS_DIR),
            playbook=str(PLAYBOOKS_DIR / playbook),
            inventory=inventory,
            limit=limit,
            cmdline=cmdline,
            extravars=variables,
            envvars={
                **ansible_env(),
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_FORCE_COLOR": "0",
            },
            event_handler=progress,
            quiet=True,
            suppress_env_files=True,
            ident=ident,
        )
    finally:  # an interrupted run (Ctrl-C) is scrubbed too
        handoff.unlink(missing_ok=True)
        scrub_artifacts(artifacts, progress.secrets)
    return int(runner.rc or 0), artifacts


def scrub_artifacts(artifacts: Path, secrets: Sequence[str]) -> None:
    """Keep secrets out of a run's artifacts.

    ansible-runner records the whole environment of the run in ``command``; only
    the ANSIBLE_*/RUNNER_* entries are kept there. Every other file (job events,
    stdout) gets the known secret values replaced.
    """
    command = artifacts / "command"
    if command.is_file():
        try:
            data = json.loads(command.read_text())
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("env"), dict):
            data["env"] = {
                k: v
                for k, v in data["env"].items()
                if k.startswith(("ANSIBLE_", "RUNNER_", "AWX_"))
            }
            command.write_text(json.dumps(data))
    values = [s for s in secrets if s and len(s) >= 4]
    if not values or not artifacts.is_dir():
        return
    for path in artifacts.rglob("*"):
        if not path.is_file():
            continue
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            continue
        scrubbed = text
        for value in values:
            scrubbed = scrubbed.replace(value, _REDACTED)
        if scrubbed != text:
            path.write_text(scrubbed)


def load_inventory(inventory: str) -> dict[str, Any]:
    """``ansible-inventory --list`` through ansible-runner."""
    _tools_on_path()
    out, err = ansible_runner.get_inventory(
        action="list",
        inventories=[inventory],
        response_format="json",
        quiet=True,
        envvars=ansible_env(),
    )
    if isinstance(out, dict):
        return out
    if not out:
        raise ValueError(
            f"cannot read inventory {inventory}: {err.strip() if err else 'no output'}"
        )
    return dict(json.loads(out))


def is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


__all__ = [
    "InventoryCheck",
    "Progress",
    "artifacts_root",
    "host_backend",
    "inventory_bottles",
    "is_tty",
    "load_inventory",
    "run_playbook",
    "summary",
    "validate_inventory",
]
