"""The ``bottle`` command.

Exit codes (a contract): 0 success; 2 invalid input (manifests, arguments),
nothing touched; 1 an operation failed or an unexpected error happened (for
``bottle verify``: a bottle leaks); 3 ``bottle verify`` found no leak but could
not decide every check (a positive control failed), so nothing is proven.

This module parses the arguments, runs each command and picks its exit code; how
results look (text tables, JSON documents) is :mod:`botbottle.report`'s job.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from ansible_collections.botbottle.bottle.plugins.plugin_utils import _enforcement as enforcement
from ansible_collections.botbottle.bottle.plugins.plugin_utils._manifest import Bottle, resolve_all
from ansible_collections.botbottle.bottle.plugins.plugin_utils._problem import Problem
from botbottle import __version__, execute, fleet, report

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_INCONCLUSIVE = 3

BACKENDS = ("smolmachines", "docker")
# Documentation addresses (RFC 5737) used by `bottle plan` when the real ones
# are only known on the host; the Docker role passes its own.
PLACEHOLDER_UPSTREAM = "192.0.2.53"
PLACEHOLDER_RESOLVER = "192.0.2.2"
PLACEHOLDER_GATEWAY = "192.0.2.1"
DEFAULT_INVENTORY = "inventory.yml"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # pragma: no cover - exercised via main()
        self.print_usage(sys.stderr)
        self.exit(EXIT_INVALID, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bottle", description="Provision sandboxes for AI coding agents.")
    parser.add_argument("--version", action="version", version=f"bottle {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    validate = sub.add_parser("validate", help="check manifests against the schema")
    validate.add_argument(
        "paths", nargs="+", metavar="PATH", help="manifest files or folders of manifests"
    )
    validate.add_argument(
        "--backend",
        choices=BACKENDS,
        help="also refuse keys this backend does not enforce "
        "(default: refuse what any backend does not enforce, as bottle_backend: auto needs)",
    )
    validate.add_argument("--format", choices=("text", "json"), default="text")

    plan = sub.add_parser("plan", help="show the compiled egress policy, touching nothing")
    plan.add_argument(
        "paths", nargs="*", metavar="PATH", help="manifest files or folders of manifests"
    )
    plan.add_argument(
        "-i",
        "--inventory",
        help="instead of PATHs: the fleet-wide plan of an inventory "
        "(site.yml in check mode with diff, through ansible-runner)",
    )
    plan.add_argument("--limit", metavar="PATTERN", help="with -i: only these hosts")
    plan.add_argument(
        "--backend",
        choices=BACKENDS,
        help="which backend's rules to render; keys it does not enforce are refused "
        "(default: smolmachines; with -i: override every host's bottle_backend)",
    )
    plan.add_argument("--format", choices=("text", "json"), default="text")
    plan.add_argument(
        "--upstream-dns",
        action="append",
        metavar="IP[#PORT]",
        help="upstream resolver for the docker backend's dnsmasq lines "
        f"(repeatable; default: the placeholder {PLACEHOLDER_UPSTREAM})",
    )
    plan.add_argument(
        "--resolver-ip",
        default=PLACEHOLDER_RESOLVER,
        metavar="IP",
        help="the bottle resolver's address in the docker backend's rules",
    )
    plan.add_argument(
        "--gateway-ip",
        default=PLACEHOLDER_GATEWAY,
        metavar="IP",
        help="the bottle network's gateway in the docker backend's rules",
    )
    for name, text in (
        ("up", "bring every host's bottles to their declared state (site.yml)"),
        ("down", "remove every host's bottles"),
        ("status", "show which bottles run where"),
        ("verify", "prove every running bottle sealed (the sandbox-escape suite)"),
        ("audit", "show a bottle's refused DNS queries and egress proxy log, by source"),
    ):
        command = sub.add_parser(name, help=text)
        if name == "audit":
            command.add_argument("name", metavar="NAME", help="the bottle")
            command.add_argument(
                "--since",
                metavar="WHEN",
                help="only refusals since WHEN: a duration (15m, 2h, 7d) or an ISO 8601 time",
            )
        command.add_argument(
            "-i",
            "--inventory",
            default=DEFAULT_INVENTORY,
            help="inventory file (default: %(default)s)",
        )
        command.add_argument(
            "--limit", metavar="PATTERN", help="only these hosts (Ansible pattern)"
        )
        if name in ("up", "down"):
            command.add_argument(
                "--check",
                action="store_true",
                help="show what would change (check mode with diff), change nothing",
            )
        else:
            command.add_argument("--format", choices=("text", "json"), default="text")
        if name == "verify":
            command.add_argument(
                "--details", action="store_true", help="list every check, passed ones too"
            )
        if name == "up":
            command.add_argument(
                "--backend",
                choices=(*BACKENDS, "auto"),
                help="override every host's bottle_backend for this run",
            )
    for name, text, usage in (
        (
            "exec",
            "run a command in a running bottle, as its user, with its environment",
            "bottle exec NAME [-i INVENTORY] [--limit PATTERN] -- COMMAND [ARG...]",
        ),
        (
            "shell",
            "an interactive shell in a running bottle (bash if it has one, else sh)",
            "bottle shell NAME [-i INVENTORY] [--limit PATTERN]",
        ),
    ):
        command = sub.add_parser(name, help=text, description=text, usage=usage)
        command.add_argument("name", metavar="NAME", help="the bottle")
        command.add_argument(
            "-i",
            "--inventory",
            default=DEFAULT_INVENTORY,
            help="inventory file (default: %(default)s)",
        )
        command.add_argument(
            "--limit",
            metavar="PATTERN",
            help="only these hosts (Ansible pattern); needed when several hosts declare NAME",
        )
    return parser


# --------------------------------------------------------------------------- commands


def _resolve(paths: Sequence[str], err: TextIO) -> tuple[list[Bottle], list[Problem]]:
    """resolve_all, printing what a folder holds but is skipped (a README.md) to ``err``."""
    skipped: list[Problem] = []
    bottles, problems = resolve_all(paths, warnings=skipped)
    report.print_problems(skipped, err, level="warning")
    return bottles, problems


_EVERY_BACKEND_NOTE = "validate checks both backends unless given --backend"


def _cmd_validate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    bottles, problems = _resolve(args.paths, err)
    backend = args.backend or enforcement.AUTO
    bottles, refused = enforcement.check_bottles(
        bottles, backend, "" if args.backend else _EVERY_BACKEND_NOTE
    )
    problems += refused
    report.print_validate(
        bottles, problems, out, err, fmt=args.format, backends=enforcement.backends_for(backend)
    )
    return EXIT_INVALID if problems else EXIT_OK


def _cmd_plan(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.inventory:
        if args.paths:
            print("error: bottle plan takes PATHs or -i INVENTORY, not both", file=err)
            return EXIT_INVALID
        args.check = True
        args.command = "up"
        return _cmd_fleet(args, out, err)
    if not args.paths:
        print("error: bottle plan needs manifest PATHs or -i INVENTORY", file=err)
        return EXIT_INVALID
    args.backend = args.backend or "smolmachines"
    bottles, problems = _resolve(args.paths, err)
    bottles, refused = enforcement.check_bottles(bottles, args.backend)
    problems += refused
    upstreams = args.upstream_dns or [PLACEHOLDER_UPSTREAM]
    try:
        entries = [
            report.plan_entry(
                b,
                args.backend,
                upstreams=upstreams,
                resolver_ip=args.resolver_ip,
                gateway_ip=args.gateway_ip,
            )
            for b in bottles
        ]
    except ValueError as exc:
        print(
            f"error: bottle plan: {exc} (fix: pass --upstream-dns IP[#PORT] and --resolver-ip / "
            "--gateway-ip as IPv4 addresses)",
            file=err,
        )
        return EXIT_INVALID
    placeholder = args.backend == "docker" and not args.upstream_dns
    report.print_plan(
        entries,
        problems,
        out,
        err,
        fmt=args.format,
        placeholder_upstream=PLACEHOLDER_UPSTREAM if placeholder else None,
    )
    return EXIT_INVALID if problems else EXIT_OK


def _fleet_preflight(
    args: argparse.Namespace, err: TextIO
) -> tuple[str, fleet.InventoryCheck] | int:
    """Read and validate the inventory's bottles: the inventory path and what was found
    (the resolved bottles go on to the playbooks), or an exit code."""
    inventory = os.path.abspath(args.inventory)
    if not os.path.exists(inventory):
        print(f"error: inventory {args.inventory} not found (fix: pass -i INVENTORY)", file=err)
        return EXIT_INVALID
    try:
        data = fleet.load_inventory(inventory)
    except ValueError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_INVALID
    checked = fleet.validate_inventory(
        data,
        Path(inventory).parent,
        # as the validate play: what a bottle kept on a host sets must be enforced there;
        # down only removes
        check_backends=args.command != "down",
        backend_override=getattr(args, "backend", None),
    )
    if checked.problems:
        report.print_problems(checked.problems, err)
        print(
            f"{len(checked.problems)} error(s) in the inventory's bottles; nothing was touched",
            file=err,
        )
        return EXIT_INVALID
    return inventory, checked


def _cmd_fleet(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    checked = _fleet_preflight(args, err)
    if isinstance(checked, int):
        return checked
    inventory, found = checked
    extravars: dict[str, Any] = {}
    playbook = "site.yml"
    if args.command == "down":
        extravars.update(bottle_state_override="absent", bottle_verify=False)
    elif args.command == "status":
        playbook = "status.yml"
    elif args.command == "verify":
        playbook = "verify_fleet.yml"
    elif args.command == "audit":
        playbook = "audit.yml"
        extravars.update(bottle_audit_name=args.name, bottle_audit_since=args.since or "")
    if getattr(args, "backend", None):
        extravars["bottle_backend_override"] = args.backend
    stream = err if args.command in _REPORTS else out
    progress = fleet.Progress(out=stream, tty=fleet.is_tty(stream), secrets=found.secrets)
    rc, artifacts = fleet.run_playbook(
        playbook,
        inventory,
        progress,
        limit=args.limit,
        check=getattr(args, "check", False),
        extravars=extravars,
        resolved=found.resolved,
    )
    code, lines = fleet.summary(progress, rc)
    if args.command in _REPORTS:
        code = _REPORTS[args.command](progress.set_stats, args, out, code)
    report_to = err if code else stream
    for line in lines:
        print(line, file=report_to)
    print(f"artifacts: {artifacts}", file=report_to)
    return code


def _status_report(stats: dict[str, Any], args: argparse.Namespace, out: TextIO, code: int) -> int:
    status = dict(stats.get("bottle_status") or {})
    report.print_status(status, out, fmt=args.format)
    drift = [row for rows in status.values() for row in rows if not row.get("state_ok", True)]
    if drift and code == EXIT_OK:
        return EXIT_FAILED  # drift or a backend that cannot be seen: not "all is well"
    return code


def _verify_report(stats: dict[str, Any], args: argparse.Namespace, out: TextIO, code: int) -> int:
    data = dict(stats.get("bottle_verify") or {})
    outcome = report.verify_outcome(data)
    report.print_verify(data, outcome, out, fmt=args.format, details=args.details)
    if outcome == report.LEAK:
        return EXIT_FAILED
    if code == EXIT_OK and outcome == report.INCONCLUSIVE:
        return EXIT_INCONCLUSIVE
    return code


def _audit_report(stats: dict[str, Any], args: argparse.Namespace, out: TextIO, code: int) -> int:
    report.print_audit(dict(stats.get("bottle_audit") or {}), out, fmt=args.format)
    return code


_REPORTS = {"status": _status_report, "verify": _verify_report, "audit": _audit_report}


def _split_command(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``bottle exec NAME [options] -- COMMAND...``: the CLI's own arguments and the
    command (argparse cannot take a positional list after options and ``--``)."""
    words = list(argv)
    first = next((w for w in words if not w.startswith("-")), "")
    if first == "exec" and "--" in words:
        cut = words.index("--")
        return words[:cut], words[cut + 1 :]
    return words, []


def _cmd_exec(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """bottle exec / bottle shell: the command's own exit code; 2 bad input; 1 the bottle
    is not running or its host cannot be reached."""
    command = list(execute.SHELL_ARGV) if args.command == "shell" else args.command_argv
    if not command:
        print("error: bottle exec needs a command: bottle exec NAME -- COMMAND [ARG...]", file=err)
        return EXIT_INVALID
    inventory = os.path.abspath(args.inventory)
    if not os.path.exists(inventory):
        print(f"error: inventory {args.inventory} not found (fix: pass -i INVENTORY)", file=err)
        return EXIT_INVALID
    try:
        data = execute.load_inventory(inventory, args.limit)
    except ValueError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_INVALID
    bottles, problems = execute.resolve_hosts(data, Path(inventory).parent)
    if problems:
        report.print_problems(problems, err)
        print(f"{len(problems)} error(s) in the inventory's bottles", file=err)
        return EXIT_INVALID
    try:
        target = execute.target_for(data, bottles, args.name, args.inventory, args.limit)
        return execute.run(
            target,
            command,
            args.inventory,
            tty=execute.stdin_is_tty(),
            probe=execute.capture,
            execute=execute.replace_process,
        )
    except execute.ExecError as exc:
        print(f"error: {exc.message}", file=err)
        return exc.code


def _cmd_audit(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.since:
        try:
            report.since_cutoff(args.since, datetime.now(UTC))
        except ValueError as exc:
            print(f"error: --{exc}", file=err)
            return EXIT_INVALID
    return _cmd_fleet(args, out, err)


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    out = out or sys.stdout
    err = err or sys.stderr
    words, command_argv = _split_command(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(words)
    args.command_argv = command_argv
    commands = {
        "validate": _cmd_validate,
        "plan": _cmd_plan,
        "up": _cmd_fleet,
        "down": _cmd_fleet,
        "status": _cmd_fleet,
        "verify": _cmd_fleet,
        "audit": _cmd_audit,
        "exec": _cmd_exec,
        "shell": _cmd_exec,
    }
    try:
        return commands[args.command](args, out, err)
    except BrokenPipeError:
        # The reader went away (e.g. `bottle plan | head`): exit quietly, as cat does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=err)
        return 130
    except Exception as exc:
        if os.environ.get("BOTTLE_DEBUG"):
            traceback.print_exc(file=err)
        print(
            f"error: internal error in 'bottle {args.command}': {type(exc).__name__}: {exc} "
            "(this is a bug; re-run with BOTTLE_DEBUG=1 for details)",
            file=err,
        )
        return EXIT_FAILED


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
