"""bot-bottle's benchmarks: each figure against a baseline measured in the same run.

Run from the project root: ``scripts/bench`` (or ``.venv/bin/python -m benchmarks.bench``).
Prints a table and writes JSON (``--json``, default ``benchmarks/results/latest.json``).
Every figure is the median of ``--runs`` runs, with min and max. Timings are never
assertions anywhere; ``benchmarks/README.md`` records a run and says which knobs matter.

All traffic stays on this machine: the bottles' upstream is a fake resolver this
runner serves on the gateway of its own internal egress network, the escape suite's
literal resolvers are that fake resolver too, and dnsperf and the latency client query
only it and the bottle's resolver. Every bottle, network and container the runner makes
is named ``bbperf-...`` (bottles ``bottle-bbperf-...``), and only those are ever removed,
so it can run beside other users of the same Docker engine (their load still shows in
the figures: the 1-minute load average is recorded beside every section).
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from dnslib import DNSRecord
from tests.fake_upstream import serve

from ansible_collections.botbottle.bottle.plugins.module_utils._policy import (
    compile_policy,
    render_dnsmasq,
    render_firewall,
    render_smolvm,
)
from ansible_collections.botbottle.bottle.plugins.plugin_utils._manifest import resolve_all
from botbottle import fleet

ROOT = Path(__file__).resolve().parents[1]
COLLECTION = ROOT / "collections" / "ansible_collections" / "botbottle" / "bottle"
BOTTLE = str(Path(sys.executable).parent / "bottle")
PREFIX = "bbperf"  # every bottle, network and container of the benchmark
EGRESS = f"{PREFIX}-egress"
IMAGE = "bot-bottle/netutils:latest"
BASELINE = f"{PREFIX}-base"  # the hand-rolled bottle's network and containers
# The egress network's /24 and the hand-rolled bottle's /28 come from the first of these
# with room (the module's bottles use 172.30.0.0/16; the DNS guard of scripts/dockerd
# lets containers ask resolvers in 172.16.0.0/12).
POOLS = ("172.29.0.0/16", "172.28.0.0/16", "172.27.0.0/16")
STATE_DIR = Path("/var/lib/bot-bottle/docker")  # the docker_bottle module's default
DEMO_INVENTORY = ROOT / "examples" / "inventory" / "local.yml"
DEMO_BOTTLES = ROOT / "examples" / "bottles"

# Targets of issue 12 (reported beside the figures, never asserted).
TARGETS = {
    "up_down_vs_baseline": 2.0,
    "noop_vs_converge": 0.3,
    "converge_50_vs_10": 5.0,
    "demo_up_status_s": 20.0,
    "demo_down_s": 5.0,
}


def summarize(samples: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and count of ``samples``."""
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "runs": len(samples),
    }


def ratio(value: float, baseline: float) -> float:
    """``value / baseline`` (inf for a zero baseline)."""
    return value / baseline if baseline else float("inf")


def percentile(samples: Sequence[float], share: float) -> float:
    """Nearest-rank percentile of ``samples`` (share in 0..1)."""
    ordered = sorted(samples)
    rank = max(1, round(share * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


_DNSPERF = {
    "sent": re.compile(r"Queries sent:\s+(\d+)"),
    "completed": re.compile(r"Queries completed:\s+(\d+)"),
    "lost": re.compile(r"Queries lost:\s+(\d+)"),
    "qps": re.compile(r"Queries per second:\s+([\d.]+)"),
    "avg_latency_s": re.compile(r"Average Latency \(s\):\s+([\d.]+)"),
}


def parse_dnsperf(text: str) -> dict[str, float]:
    """The summary numbers of a dnsperf 2.x run."""
    found = {}
    for key, pattern in _DNSPERF.items():
        match = pattern.search(text)
        if match is None:
            raise ValueError(f"dnsperf output has no {key!r}: {text[-400:]}")
        found[key] = float(match.group(1))
    return found


# --------------------------------------------------------------------------- the CLI's output

_CHANGES = re.compile(r"^ok\s+(\S+): (\d+) change\(s\)\s*$", re.MULTILINE)
_ARTIFACTS = re.compile(r"^artifacts: (\S.*?)\s*$", re.MULTILINE)


def parse_changes(text: str) -> int | None:
    """Changed tasks summed over the hosts of a `bottle up`/`down` summary (None: no summary).

    The CLI counts a task once however many loop items (bottles) it changed.
    """
    found = _CHANGES.findall(text)
    return sum(int(count) for _, count in found) if found else None


def parse_artifacts(text: str) -> Path | None:
    """The run's artifacts folder the CLI printed last."""
    found = _ARTIFACTS.findall(text)
    return Path(found[-1]) if found else None


# Actions that never start a module process on the host: the controller evaluates them.
CONTROLLER_ACTIONS = frozenset(
    f"{prefix}{name}"
    for prefix in ("", "ansible.builtin.", "ansible.legacy.")
    for name in (
        "set_fact",
        "debug",
        "assert",
        "fail",
        "include_tasks",
        "include_role",
        "import_tasks",
        "import_role",
        "set_stats",
        "validate_argument_spec",
        "meta",
        "add_host",
        "group_by",
    )
)
_DONE = {"runner_on_ok": "ok", "runner_on_failed": "failed", "runner_on_unreachable": "failed"}
_ITEMS = ("runner_item_on_ok", "runner_item_on_failed")


def _when(event: Mapping[str, Any]) -> float:
    return datetime.fromisoformat(str(event["created"])).timestamp()


def anatomy(events: Sequence[Mapping[str, Any]], wall: float | None = None) -> dict[str, Any]:
    """Where a run's time went, from ansible-runner's job events.

    ``playbook_s`` is first event to last; with ``wall`` (the command's wall time),
    ``outside_playbook_s`` is the rest (interpreter and CLI start, manifest checks,
    ansible-runner and ansible-playbook start-up and parsing, the summary). Each task
    that ran is one row; a task whose action is not evaluated on the controller costs
    one module process per loop item (``module_calls``).
    """
    ordered = sorted(events, key=lambda e: int(e.get("counter", 0)))
    tasks: dict[str, dict[str, Any]] = {}
    for event in ordered:
        data = event.get("event_data") or {}
        uuid = str(data.get("task_uuid", ""))
        kind = str(event.get("event", ""))
        if kind == "playbook_on_task_start":
            tasks.setdefault(
                uuid,
                {
                    "task": str(data.get("task", "")),
                    "action": str(data.get("task_action", "")),
                    "state": "",
                    "seconds": 0.0,
                    "items": 0,
                    "changed": False,
                },
            )
        elif uuid in tasks and kind in _ITEMS:
            tasks[uuid]["items"] += 1
        elif uuid in tasks and (kind in _DONE or kind == "runner_on_skipped"):
            row = tasks[uuid]
            row["state"] = _DONE.get(kind, "skipped")
            row["seconds"] += float(data.get("duration") or 0.0)
            row["changed"] = row["changed"] or bool((data.get("res") or {}).get("changed"))
    ran = [t for t in tasks.values() if t["state"] in ("ok", "failed")]
    modules = [t for t in ran if t["action"] not in CONTROLLER_ACTIONS]
    playbook = _when(ordered[-1]) - _when(ordered[0]) if len(ordered) > 1 else 0.0
    tasks_s = sum(t["seconds"] for t in tasks.values())
    found: dict[str, Any] = {
        "playbook_s": playbook,
        "tasks": len(tasks),
        "tasks_run": len(ran),
        "tasks_skipped": sum(1 for t in tasks.values() if t["state"] == "skipped"),
        "module_calls": sum(max(t["items"], 1) for t in modules),
        "module_s": sum(t["seconds"] for t in modules),
        "controller_s": sum(t["seconds"] for t in ran if t not in modules),
        "skipped_s": sum(t["seconds"] for t in tasks.values() if t["state"] == "skipped"),
        "between_tasks_s": playbook - tasks_s,
        "slowest": [
            {
                "task": t["task"],
                "action": t["action"],
                "seconds": round(t["seconds"], 3),
                "calls": max(t["items"], 1),
            }
            for t in sorted(modules, key=lambda t: -t["seconds"])[:12]
        ],
    }
    if wall is not None:
        found["wall_s"] = wall
        found["outside_playbook_s"] = wall - playbook
    return found


def load_events(artifacts: Path) -> list[dict[str, Any]]:
    """The job events of one ansible-runner run."""
    events = []
    for path in sorted((artifacts / "job_events").glob("*.json")):
        try:
            events.append(json.loads(path.read_text()))
        except ValueError:
            continue  # a partial event (should not happen once the run is over)
    return events


# --------------------------------------------------------------------------- running things


def _run(
    argv: Sequence[str], *, quiet_fail: bool = False, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BOTTLE_DEBUG"} | dict(env or {})
    proc = subprocess.run(
        list(argv), capture_output=True, text=True, check=False, env=env, cwd=ROOT, timeout=3600
    )
    if proc.returncode != 0 and not quiet_fail:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def timed(argv: Sequence[str], env: Mapping[str, str] | None = None) -> float:
    """Wall time of one command that must succeed."""
    start = time.perf_counter()
    _run(argv, env=env)
    return time.perf_counter() - start


@dataclass
class CliRun:
    """One timed `bottle` command: wall time, changed tasks, where its events are."""

    seconds: float
    changed: int | None
    artifacts: Path | None
    output: str

    def anatomy(self) -> dict[str, Any]:
        if self.artifacts is None or not self.artifacts.is_dir():
            return {}
        return anatomy(load_events(self.artifacts), self.seconds)


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def load1() -> float:
    return os.getloadavg()[0]


@dataclass
class Bench:
    """One benchmark run's shared state."""

    work: Path
    upstream: str
    runs: int
    results: dict[str, Any] = field(default_factory=dict)
    log: Callable[[str], None] = print
    save: Callable[[], None] = lambda: None
    loads: list[float] = field(default_factory=list)

    def cli(self, *args: str) -> CliRun:
        """Time one `bottle` command that must succeed; the load average before it is kept."""
        self.loads.append(load1())
        start = time.perf_counter()
        proc = _run([BOTTLE, *args])
        seconds = time.perf_counter() - start
        text = proc.stdout + "\n" + proc.stderr
        return CliRun(seconds, parse_changes(text), parse_artifacts(text), text)

    def manifest(self, name: str, routes: Sequence[str]) -> Path:
        lines = ["runtime:", "  command: [sleep, infinity]", "egress:", "  routes:"]
        lines += [f'    - host: "{route}"' for route in routes]
        path = self.work / "bottles" / f"{name}.yml"
        path.parent.mkdir(exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        return path

    def inventory(self, name: str, manifests: Sequence[Path], *, verify: bool = False) -> Path:
        host = {
            "ansible_connection": "local",
            "ansible_python_interpreter": "/usr/bin/python3",
            "bottle_backend": "docker",
            "bottles": [{"manifest": str(m)} for m in manifests],
            **self.network_vars(),
            "docker_bottle_agent_image": IMAGE,
            "bottle_verify": verify,
        }
        path = self.work / f"{name}.inventory.yml"
        path.write_text(json.dumps({"all": {"hosts": {"localhost": host}}}))
        return path

    def network_vars(self) -> dict[str, Any]:
        """Where bottles may talk: the fake upstream, over the benchmark's own network."""
        return {
            "docker_bottle_upstream_dns": [self.upstream],
            "docker_bottle_egress_network": EGRESS,
            "bottle_verify_resolvers": [self.upstream],
            "bottle_verify_audit_dir": str(self.work / "audit"),
        }

    def section_load(self, since: int) -> dict[str, Any]:
        """The 1-minute load average before each timed command since index ``since``."""
        return summarize(self.loads[since:]) if self.loads[since:] else {}


def remove_bench_bottles() -> None:
    """Remove the benchmark's own bottles (untimed): containers, networks, state folders.

    Only objects labelled as a bottle named ``bbperf-...`` go; nobody else's bottles.
    """
    for kind in ("container", "network"):
        listed = _run(
            [
                "docker",
                kind,
                "ls",
                *(["-a"] if kind == "container" else []),
                "--filter",
                "label=botbottle.managed-by=bot-bottle",
                "--format",
                '{{.ID}} {{.Label "botbottle.bottle"}}',
            ]
        )
        ids = [
            ident
            for ident, _, bottle in (line.partition(" ") for line in listed.stdout.splitlines())
            if bottle.startswith(f"{PREFIX}-")
        ]
        if ids:
            _run(["docker", kind, "rm", *(["-f"] if kind == "container" else []), *ids])
    for folder in STATE_DIR.glob(f"{PREFIX}-*"):
        shutil.rmtree(folder, ignore_errors=True)


def free_subnet(pools: Sequence[str], prefix: int) -> str:
    """A /``prefix`` of the first of ``pools`` that has one no Docker network overlaps."""
    names = _run(["docker", "network", "ls", "-q"]).stdout.split()
    shown = "{{range .IPAM.Config}}{{.Subnet}} {{end}}"
    got = _run(["docker", "network", "inspect", "-f", shown, *names], quiet_fail=True)
    used = [ipaddress.ip_network(s, strict=False) for s in got.stdout.split()]
    for pool in pools:
        for candidate in ipaddress.ip_network(pool).subnets(new_prefix=prefix):
            if not any(candidate.overlaps(u) for u in used if u.version == 4):
                return str(candidate)
    raise RuntimeError(f"no free /{prefix} in {', '.join(pools)}")


def _changes(runs: Sequence[CliRun]) -> list[int | None]:
    return [r.changed for r in runs]


# --------------------------------------------------------------------------- rollout


@dataclass(frozen=True)
class Baseline:
    """The hand-written bring-up and removal of one bottle (benchmarks/baseline-*.sh)."""

    up: list[str]
    down: list[str]


def prepare_baseline(bench: Bench) -> Baseline:
    """Render the hand-rolled bottle's files with the module's own functions, copy the
    seal guard's busybox out of the image once (as the module caches it), pick a subnet."""
    # importable once botbottle is imported (it puts the collection on the path)
    from ansible_collections.botbottle.bottle.plugins.module_utils._docker_bottle import (  # noqa: PLC0415
        want,
    )

    subnet = free_subnet(POOLS, 28)
    policy = compile_policy({"egress": {"routes": [{"host": "api.bench.example"}]}})
    state = bench.work / "baseline-state" / BASELINE
    wanted = want(
        name=BASELINE,
        state="started",
        policy=policy,
        subnet=subnet,
        upstreams=[bench.upstream],
        egress_network=EGRESS,
        state_dir=str(state.parent),
    )
    source = bench.work / "baseline-src"
    source.mkdir(exist_ok=True)
    for name, content in wanted.files.items():
        (source / name).write_text(content)
    guard = bench.work / "busybox"
    if not guard.exists():
        created = _run(["docker", "create", "--network", "none", IMAGE, "true"]).stdout.strip()
        try:
            _run(["docker", "cp", f"{created}:/bin/busybox", str(guard)])
        finally:
            _run(["docker", "rm", "-f", created], quiet_fail=True)
    addresses = wanted.addresses
    script = ROOT / "benchmarks"
    return Baseline(
        up=[
            str(script / "baseline-up.sh"),
            BASELINE,
            subnet,
            addresses["gateway"],
            addresses["resolver"],
            addresses["holder"],
            EGRESS,
            IMAGE,
            IMAGE,
            str(source),
            str(state),
            str(guard),
            wanted.stamp,
        ],
        down=[str(script / "baseline-down.sh"), BASELINE, str(state)],
    )


FLOOR_TASKS = 5


def bench_floor(bench: Bench, inventory: Path) -> dict[str, Any]:
    """What any run costs before bot-bottle does anything, on the same inventory:
    ansible-playbook with no task, with ``FLOOR_TASKS`` trivial module calls (so the cost
    of one module process), and the managed host's interpreter with and without the
    Docker SDK every docker_bottle call imports."""
    ansible = str(Path(sys.executable).parent / "ansible-playbook")
    env = {"ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    plays = {
        "empty": [{"hosts": "all", "gather_facts": False, "tasks": []}],
        "tasks": [
            {
                "hosts": "all",
                "gather_facts": False,
                "tasks": [
                    {"name": f"t{i}", "ansible.builtin.command": {"argv": ["true"]}}
                    for i in range(FLOOR_TASKS)
                ],
            }
        ],
    }
    samples: dict[str, list[float]] = {
        k: [] for k in ("empty", "tasks", "python", "python_docker", "bottle_validate")
    }
    manifest = bench.manifest(f"{PREFIX}-one", ["api.bench.example"])
    for _ in range(bench.runs):
        for name, play in plays.items():
            path = bench.work / f"floor-{name}.yml"
            path.write_text(json.dumps(play))
            samples[name].append(timed([ansible, "-i", str(inventory), str(path)], env))
        samples["python"].append(timed(["/usr/bin/python3", "-c", "pass"]))
        samples["python_docker"].append(timed(["/usr/bin/python3", "-c", "import docker"]))
        samples["bottle_validate"].append(timed([BOTTLE, "validate", str(manifest)]))
    median = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "ansible_playbook_no_task_s": summarize(samples["empty"]),
        f"ansible_playbook_{FLOOR_TASKS}_commands_s": summarize(samples["tasks"]),
        "per_module_call_s": (median["tasks"] - median["empty"]) / FLOOR_TASKS,
        "python3_start_s": summarize(samples["python"]),
        "python3_import_docker_s": median["python_docker"] - median["python"],
        "bottle_validate_one_s": summarize(samples["bottle_validate"]),
    }


def bench_bringup(bench: Bench) -> None:
    """One bottle: `bottle up` with and without the escape suite, `bottle down`, and the
    hand-written script doing the same Docker work and the same checks."""
    since = len(bench.loads)
    one = bench.manifest(f"{PREFIX}-one", ["api.bench.example"])
    plain = bench.inventory("one", [one])
    verified = bench.inventory("one-verify", [one], verify=True)
    base = prepare_baseline(bench)
    _run(base.down, quiet_fail=True)
    bench.log("bring-up: warm-up (untimed: builds the probe, caches the seal guard)")
    bench.cli("up", "-i", str(verified))
    bench.cli("down", "-i", str(verified))
    _run(base.up)
    _run(base.down)
    ups: list[CliRun] = []
    verified_ups: list[CliRun] = []
    downs: list[CliRun] = []
    base_ups: list[float] = []
    base_downs: list[float] = []
    for run in range(bench.runs):
        bench.log(f"bring-up run {run + 1}/{bench.runs}")
        ups.append(bench.cli("up", "-i", str(plain)))
        downs.append(bench.cli("down", "-i", str(plain)))
        verified_ups.append(bench.cli("up", "-i", str(verified)))
        downs.append(bench.cli("down", "-i", str(verified)))
        bench.loads.append(load1())
        base_ups.append(timed(base.up))
        bench.loads.append(load1())
        base_downs.append(timed(base.down))
    up_s = [r.seconds for r in ups]
    down_s = [r.seconds for r in downs]
    # up + down of the same run: the down right after the plain up (even indexes)
    up_down = [u.seconds + d.seconds for u, d in zip(ups, downs[::2], strict=True)]
    base_up_down = [u + d for u, d in zip(base_ups, base_downs, strict=True)]
    bench.results["bringup"] = {
        "bottle_up_s": summarize(up_s),
        "bottle_up_verify_s": summarize([r.seconds for r in verified_ups]),
        "bottle_down_s": summarize(down_s),
        "baseline_up_s": summarize(base_ups),
        "baseline_down_s": summarize(base_downs),
        "up_down_s": summarize(up_down),
        "baseline_up_down_s": summarize(base_up_down),
        "ratio_up": ratio(statistics.median(up_s), statistics.median(base_ups)),
        "ratio_down": ratio(statistics.median(down_s), statistics.median(base_downs)),
        "ratio_up_down": ratio(statistics.median(up_down), statistics.median(base_up_down)),
        "verify_cost_s": statistics.median(r.seconds for r in verified_ups)
        - statistics.median(up_s),
        "changed": {
            "up": _changes(ups),
            "up_verify": _changes(verified_ups),
            "down": _changes(downs),
        },
        "anatomy": {
            "up": ups[-1].anatomy(),
            "up_verify": verified_ups[-1].anatomy(),
            "down": downs[-2].anatomy(),
        },
        "floor": bench_floor(bench, plain),
        "load1": bench.section_load(since),
    }


def bench_steps(bench: Bench) -> None:
    """One docker_bottle call's own time by step (benchmarks/module_steps.py under the
    managed host's python3): a bring-up, its no-op re-run, the removal."""
    since = len(bench.loads)
    argv = ["/usr/bin/python3", str(ROOT / "benchmarks" / "module_steps.py"), f"{PREFIX}-steps"]
    argv += [EGRESS, bench.upstream]
    env = {"PYTHONPATH": str(ROOT / "collections")}
    found: dict[str, dict[str, list[float]]] = {"up": {}, "noop": {}, "down": {}}
    for run in range(bench.runs):
        bench.log(f"module steps run {run + 1}/{bench.runs}")
        for kind, state in (("up", "started"), ("noop", "started"), ("down", "absent")):
            bench.loads.append(load1())
            out = _run([*argv, state, IMAGE], env=env).stdout.strip().splitlines()[-1]
            for label, seconds in json.loads(out):
                found[kind].setdefault(label, []).append(float(seconds))
    bench.results["steps"] = {
        kind: {label: summarize(values) for label, values in steps.items()}
        for kind, steps in found.items()
    } | {"load1": bench.section_load(since)}


def bench_scale(bench: Bench, sizes: Sequence[int], big_runs: int, noop_max: int) -> None:
    """Converge N bottles, re-run it (the no-op, up to ``noop_max`` bottles), remove them
    (untimed, between runs, so every converge starts from nothing)."""
    scale: dict[str, Any] = {}
    bench.results["scale"] = scale
    for size in sizes:
        since = len(bench.loads)
        manifests = [
            bench.manifest(f"{PREFIX}-s{size}-{i}", [f"api{i}.bench.example"]) for i in range(size)
        ]
        inventory = bench.inventory(f"scale{size}", manifests)
        runs = bench.runs if size <= 10 else big_runs
        converges: list[CliRun] = []
        noops: list[CliRun] = []
        remove_bench_bottles()
        for run in range(runs):
            bench.log(f"{size} bottles: run {run + 1}/{runs}")
            converges.append(bench.cli("up", "-i", str(inventory)))
            if size <= noop_max:
                noops.append(bench.cli("up", "-i", str(inventory)))
            remove_bench_bottles()
        first = statistics.median(r.seconds for r in converges)
        figures: dict[str, Any] = {
            "converge_s": summarize([r.seconds for r in converges]),
            "per_bottle_s": first / size,
            "converge_changed": _changes(converges),
            "anatomy_converge": converges[-1].anatomy(),
        }
        if noops:
            figures["noop_s"] = summarize([r.seconds for r in noops])
            figures["noop_ratio"] = ratio(statistics.median(r.seconds for r in noops), first)
            figures["noop_changed"] = _changes(noops)
            figures["anatomy_noop"] = noops[-1].anatomy()
        figures["load1"] = bench.section_load(since)
        scale[str(size)] = figures
        bench.save()  # the 50-bottle run is long: keep what was measured
    if "10" in scale and "50" in scale:
        scale["converge_50_vs_10"] = ratio(
            scale["50"]["converge_s"]["median"], scale["10"]["converge_s"]["median"]
        )
        scale["growth_50_vs_10"] = ratio(scale["50"]["per_bottle_s"], scale["10"]["per_bottle_s"])
    if "1" in scale and "10" in scale:
        scale["growth_10_vs_1"] = ratio(scale["10"]["per_bottle_s"], scale["1"]["per_bottle_s"])


def rename_extends(text: str, names: Mapping[str, str]) -> str:
    """``text`` (a manifest) with every parent named in ``extends`` renamed by ``names``."""
    pattern = re.compile(
        r"(?<![\w-])(" + "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)) + ")"
        r"(?![\w-])"
    )
    lines, inside = [], False
    for line in text.splitlines(keepends=True):
        renamed = line
        if line.startswith("extends:"):
            renamed = pattern.sub(lambda m: names[m.group(1)], line)
            inside = not line[len("extends:") :].strip()
        elif inside and line.lstrip().startswith("- "):
            renamed = pattern.sub(lambda m: names[m.group(1)], line)
        else:
            inside = False
        lines.append(renamed)
    return "".join(lines)


def demo_copy(bench: Bench) -> tuple[Path, Path]:
    """The README's demo (examples/inventory/local.yml and examples/bottles), copied with
    the bottles named ``bbperf-demo-<name>`` and the network-facing values (upstream
    resolver, egress network, the escape suite's literal resolvers, the audit folder)
    pointed at the benchmark's own. Everything else - backend auto, the agent image,
    the secrets, creating the egress network - is the demo's. (inventory, bottles)"""
    folder = bench.work / "demo"
    bottles = folder / "bottles"
    bottles.mkdir(parents=True, exist_ok=True)
    (folder / "inventory").mkdir(exist_ok=True)
    sources = [p for p in DEMO_BOTTLES.iterdir() if p.suffix in (".yml", ".md")]
    sources = [p for p in sources if p.name != "README.md"]
    names = {p.stem: f"{PREFIX}-demo-{p.stem}" for p in sources}
    for path in sources:
        (bottles / (names[path.stem] + path.suffix)).write_text(
            rename_extends(path.read_text(), names)
        )
    data = yaml.safe_load(DEMO_INVENTORY.read_text())
    for host in data["all"]["hosts"].values():
        host["bottles"] = [
            {
                **b,
                "manifest": f"../bottles/{names[Path(b['manifest']).stem]}"
                f"{Path(b['manifest']).suffix}",
            }
            for b in host.get("bottles", [])
        ]
        host["bottle_secrets"] = {
            names.get(k, k): v for k, v in (host.get("bottle_secrets") or {}).items()
        }
        host.update(bench.network_vars())
    inventory = folder / "inventory" / "local.yml"
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    return inventory, bottles


def status_rows(text: str) -> list[list[str]]:
    """The rows of `bottle status`'s table (host, bottle, backend, state, declared, policy)."""
    rows = []
    for line in text.splitlines():
        cells = line.split()
        if len(cells) >= 6 and cells[0] != "HOST" and cells[3] in _STATUS_STATES:
            rows.append(cells[:6])
    return rows


_STATUS_STATES = frozenset(
    {"running", "created", "exited", "stopped", "absent", "unknown", "paused", "dead"}
)


APT_STAMP = Path("/var/lib/apt/periodic/update-success-stamp")
APT_LISTS = Path("/var/lib/apt/lists")
SMOLMACHINES_DEFAULTS = COLLECTION / "roles" / "smolmachines_host" / "defaults" / "main.yml"


def demo_offline_problems(margin_s: float = 3600.0) -> list[str]:
    """Why the demo's host preparation would leave the machine during the benchmark.

    With ``bottle_backend: auto`` the demo runs the smolmachines host role: apt with
    ``update_cache`` and ``cache_valid_time: 86400`` (refreshes the package lists when
    they are a day old), pip of the pinned smolmachines (installs when missing), and the
    boot probe (boots a microVM unless a verdict is stored; a stale one is probed anew,
    which this cannot foresee - the run's anatomy shows it).
    """
    found = []
    stamp = APT_STAMP if APT_STAMP.exists() else APT_LISTS
    age = time.time() - stamp.stat().st_mtime if stamp.exists() else float("inf")
    if age > 86400 - margin_s:
        found.append(
            f"the package lists are {age / 3600:.0f} h old: the demo's apt task would "
            "refresh them from the network (run apt-get update before the benchmark)"
        )
    defaults = yaml.safe_load(SMOLMACHINES_DEFAULTS.read_text())
    package = str(defaults["smolmachines_host_package"])
    venv = Path(str(defaults["smolmachines_host_venv"]))
    name, _, version = package.partition("==")
    shown = _run([str(venv / "bin" / "python"), "-m", "pip", "show", name], quiet_fail=True)
    if f"Version: {version}" not in shown.stdout:
        found.append(
            f"{package} is not installed in {venv}: the demo's pip task would install it "
            "from the network (run the demo once before the benchmark)"
        )
    verdict = Path(str(defaults["smolmachines_host_probe_cache_path"]))
    if not verdict.is_file():
        found.append(
            f"no stored boot-probe verdict ({verdict}): the demo's first run would boot a "
            "microVM (30 s or more; run the demo once before the benchmark)"
        )
    return found


def bench_demo(bench: Bench) -> None:
    """The README's main job on a warm machine: `bottle up` then `bottle status` of the
    demo inventory, and its `bottle down` (each from a clean slate; `validate` beside)."""
    offline = demo_offline_problems()
    if offline:
        raise RuntimeError("demo: not a warm machine: " + "; ".join(offline))
    since = len(bench.loads)
    inventory, bottles = demo_copy(bench)
    remove_bench_bottles()
    validates: list[CliRun] = []
    ups: list[CliRun] = []
    statuses: list[CliRun] = []
    downs: list[CliRun] = []
    for run in range(bench.runs):
        bench.log(f"demo run {run + 1}/{bench.runs}")
        validates.append(bench.cli("validate", str(bottles)))
        ups.append(bench.cli("up", "-i", str(inventory)))
        statuses.append(bench.cli("status", "-i", str(inventory)))
        rows = status_rows(statuses[-1].output)
        if not rows or any(r[3] != "running" for r in rows):
            raise RuntimeError(f"bottle status after bottle up: {statuses[-1].output}")
        downs.append(bench.cli("down", "-i", str(inventory)))
        remove_bench_bottles()  # nothing should be left; makes sure of it
    up_status = [u.seconds + s.seconds for u, s in zip(ups, statuses, strict=True)]
    bench.results["demo"] = {
        "bottles": len(status_rows(statuses[-1].output)),
        "backend": status_rows(statuses[-1].output)[0][2],
        "validate_s": summarize([r.seconds for r in validates]),
        "up_s": summarize([r.seconds for r in ups]),
        "status_s": summarize([r.seconds for r in statuses]),
        "up_status_s": summarize(up_status),
        "down_s": summarize([r.seconds for r in downs]),
        "changed": {"up": _changes(ups), "down": _changes(downs)},
        "anatomy": {
            "up": ups[-1].anatomy(),
            "status": statuses[-1].anatomy(),
            "down": downs[-1].anatomy(),
        },
        "load1": bench.section_load(since),
    }


# --------------------------------------------------------------------------- resolver


def _dnsperf(server: str, port: int, data: Path, seconds: int) -> dict[str, float]:
    proc = _run(
        [
            "dnsperf",
            "-s",
            server,
            "-p",
            str(port),
            "-d",
            str(data),
            "-l",
            str(seconds),
            "-c",
            "4",
            "-q",
            "50",
            "-t",
            "2",
        ]
    )
    return parse_dnsperf(proc.stdout)


def _latencies(server: str, port: int, names: Sequence[str]) -> list[float]:
    samples = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        for name in names:
            query = DNSRecord.question(name).pack()
            start = time.perf_counter()
            sock.sendto(query, (server, port))
            sock.recvfrom(4096)
            samples.append(time.perf_counter() - start)
    return samples


def _latency_figures(server: str, port: int, names: Sequence[str]) -> dict[str, float]:
    samples = _latencies(server, port, names)
    return {"p50_ms": percentile(samples, 0.5) * 1000, "p99_ms": percentile(samples, 0.99) * 1000}


def bench_resolver(bench: Bench, seconds: int) -> None:
    """Allowlisted queries through the bottle's resolver versus the fake upstream directly."""
    since = len(bench.loads)
    if shutil.which("dnsperf") is None:
        raise RuntimeError("dnsperf is not installed (apt-get install dnsperf; scripts/setup does)")
    manifest = bench.manifest(f"{PREFIX}-dns", ["api.bench.example", "*.zone.bench.example"])
    inventory = bench.inventory("dns", [manifest])
    _run([BOTTLE, "up", "-i", str(inventory)])
    try:
        resolver = _run(
            [
                "docker",
                "inspect",
                "-f",
                f'{{{{(index .NetworkSettings.Networks "bottle-{PREFIX}-dns").IPAddress}}}}',
                f"bottle-{PREFIX}-dns-resolver",
            ]
        ).stdout.strip()
        upstream_ip, _, upstream_port = bench.upstream.partition("#")
        cached = bench.work / "cached.txt"
        cached.write_text("api.bench.example A\n")
        forwarded = bench.work / "forwarded.txt"
        forwarded.write_text("".join(f"n{i}.zone.bench.example A\n" for i in range(400_000)))
        figures: dict[str, Any] = {}
        for label, data in (("cached", cached), ("forwarded", forwarded)):
            through = [_dnsperf(resolver, 53, data, seconds) for _ in range(bench.runs)]
            direct = [
                _dnsperf(upstream_ip, int(upstream_port), data, seconds) for _ in range(bench.runs)
            ]
            qps_through = statistics.median(r["qps"] for r in through)
            qps_direct = statistics.median(r["qps"] for r in direct)
            figures[label] = {
                "resolver": {
                    "qps": summarize([r["qps"] for r in through]),
                    "lost": sum(r["lost"] for r in through),
                },
                "upstream": {
                    "qps": summarize([r["qps"] for r in direct]),
                    "lost": sum(r["lost"] for r in direct),
                },
                "qps_ratio": ratio(qps_through, qps_direct),
            }
        names = [f"lat{i}.zone.bench.example" for i in range(2000)]
        through_lat = _latency_figures(resolver, 53, names)
        direct_lat = _latency_figures(upstream_ip, int(upstream_port), names)
        figures["latency_forwarded"] = {
            "resolver": through_lat,
            "upstream": direct_lat,
            "p50_ratio": ratio(through_lat["p50_ms"], direct_lat["p50_ms"]),
            "p99_ratio": ratio(through_lat["p99_ms"], direct_lat["p99_ms"]),
        }
        bench.loads.append(load1())
        figures["load1"] = bench.section_load(since)
        bench.results["resolver"] = figures
    finally:
        _run([BOTTLE, "down", "-i", str(inventory)], quiet_fail=True)


# --------------------------------------------------------------------------- proxy

PROXY_IMAGE = "bot-bottle/egress-proxy:latest"
PROXY_BOTTLE = f"{PREFIX}-proxy"
#: The section's stand-in for the internet on the benchmark's egress network: an HTTPS
#: origin (tests/egress_origin.py) with a CA of the run's own, the resolver that names
#: it, and the "outside" client that is not behind any bottle's firewall.
PROXY_LAB = {"origin": 200, "dns": 201, "outside": 202}  # host offsets in the egress /24
PROXY_NAME = "api.proxy.bench.test"
#: Per run and path: kept-alive GETs, GETs on a new connection each, then concurrent
#: kept-alive connections for requests/s.
PROXY_LOAD = {"count": 500, "new": 100, "threads": 8, "seconds": 5}
#: The steps of a started-from-nothing docker_bottle call that exist for the proxy.
PROXY_STEPS = ("make_ca", "create_proxy", "wait_proxy")


def latency_figures(raw: Mapping[str, Any]) -> dict[str, float]:
    """p50/p99 in ms of one latency probe's kept-alive and new-connection samples
    (tests/egress_client.py ``latency``), and its requests/s under load."""
    keep, new, load = raw["keepalive_s"], raw["new_connection_s"], raw["load"]
    return {
        "keepalive_p50_ms": percentile(keep, 0.5) * 1000,
        "keepalive_p99_ms": percentile(keep, 0.99) * 1000,
        "new_connection_p50_ms": percentile(new, 0.5) * 1000,
        "new_connection_p99_ms": percentile(new, 0.99) * 1000,
        "requests_per_s": ratio(float(load["requests"]), float(load["seconds"])),
    }


def proxy_ratios(
    proxied: Sequence[Mapping[str, float]], direct: Sequence[Mapping[str, float]]
) -> dict[str, Any]:
    """Each figure through the proxy and direct (median of the runs), and their ratio."""
    found: dict[str, Any] = {}
    for key in proxied[0]:
        through = [r[key] for r in proxied]
        straight = [r[key] for r in direct]
        found[key] = {
            "proxy": summarize(through),
            "direct": summarize(straight),
            "ratio": ratio(statistics.median(through), statistics.median(straight)),
        }
    return found


def proxy_share(runs: Sequence[Sequence[Sequence[Any]]]) -> dict[str, Any]:
    """The proxy's part of started-from-nothing docker_bottle calls (module_steps.py
    output, one list of ``[step, seconds]`` per run): :data:`PROXY_STEPS` against the
    rest of the same call, the bottle's other steps (the baseline)."""
    totals, proxy, rest = [], [], []
    steps: dict[str, list[float]] = {k: [] for k in PROXY_STEPS}
    for run in runs:
        timings = {str(label): float(seconds) for label, seconds in run}
        share = sum(timings.get(k, 0.0) for k in PROXY_STEPS)
        for key in PROXY_STEPS:
            steps[key].append(timings.get(key, 0.0))
        totals.append(timings["total"])
        proxy.append(share)
        rest.append(timings["total"] - share)
    return {
        "total_s": summarize(totals),
        "proxy_s": summarize(proxy),
        "rest_s": summarize(rest),
        "steps_s": {k: summarize(v) for k, v in steps.items()},
        "ratio_to_rest": ratio(statistics.median(totals), statistics.median(rest)),
        "share": ratio(statistics.median(proxy), statistics.median(totals)),
    }


def _proxy_lab_names() -> list[str]:
    return [f"{PREFIX}-proxylab-{role}" for role in PROXY_LAB]


def _proxy_certificates(folder: Path, origin: str) -> None:
    """The run's own CA (the bottle's proxy trusts it for the origin) and the origin's
    certificate for :data:`PROXY_NAME`."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-noenc"]
    _run(
        ["openssl", "req", "-x509", *ec, "-days", "2", "-subj", "/CN=bbperf origin CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign",
         "-keyout", str(folder / "ca.key"), "-out", str(folder / "ca.pem")]
    )  # fmt: skip
    _run(
        ["openssl", "req", *ec, "-subj", "/CN=origin", "-keyout", str(folder / "origin.key"),
         "-out", str(folder / "origin.csr")]
    )  # fmt: skip
    (folder / "ext.cnf").write_text(
        f"subjectAltName=DNS:{PROXY_NAME},IP:{origin}\nbasicConstraints=CA:FALSE\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _run(
        ["openssl", "x509", "-req", "-in", str(folder / "origin.csr"), "-CA",
         str(folder / "ca.pem"), "-CAkey", str(folder / "ca.key"), "-CAcreateserial",
         "-days", "2", "-extfile", str(folder / "ext.cnf"), "-out", str(folder / "origin.pem")]
    )  # fmt: skip
    for name in ("ca.pem", "origin.pem", "origin.key"):
        (folder / name).chmod(0o644)


def _proxy_lab(bench: Bench) -> dict[str, str]:
    """Start the stand-in on the benchmark's egress network; its addresses."""
    shown = "{{(index .IPAM.Config 0).Subnet}}"
    found = _run(["docker", "network", "inspect", "-f", shown, EGRESS]).stdout.strip()
    subnet = ipaddress.ip_network(found)
    at = {role: str(subnet.network_address + offset) for role, offset in PROXY_LAB.items()}
    folder = bench.work / "proxylab"
    _proxy_certificates(folder, at["origin"])
    tests = str(ROOT / "tests")
    common = ["--network", EGRESS, "--label", f"botbottle.bench={PREFIX}"]
    for name in _proxy_lab_names():
        _run(["docker", "rm", "-f", name], quiet_fail=True)
    _run(
        ["docker", "run", "-d", "--name", f"{PREFIX}-proxylab-dns", *common, "--ip", at["dns"],
         "--dns", "127.0.0.1", IMAGE, "dnsmasq", "--keep-in-foreground", "--no-resolv",
         "--no-hosts", f"--address=/{PROXY_NAME}/{at['origin']}"]
    )  # fmt: skip
    _run(
        ["docker", "run", "-d", "--name", f"{PREFIX}-proxylab-origin", *common, "--ip",
         at["origin"], "--dns", at["dns"], "--user", "0:0", "-v", f"{tests}:/tests:ro",
         "-v", f"{folder}:/work:ro", PROXY_IMAGE, "python3", "/tests/egress_origin.py",
         "/work/origin.pem", "/work/origin.key", "443", "80"]
    )  # fmt: skip
    _run(
        ["docker", "run", "-d", "--name", f"{PREFIX}-proxylab-outside", *common, "--ip",
         at["outside"], "--dns", at["dns"], "-v", f"{tests}:/tests:ro",
         "-v", f"{folder}/ca.pem:/test-ca.pem:ro", PROXY_IMAGE, "sleep", "infinity"]
    )  # fmt: skip
    wait = (
        "import socket,sys,time\nend=time.time()+30\nwhile time.time()<end:\n"
        f"    try: socket.create_connection(({at['origin']!r},443),timeout=1).close()\n"
        "    except OSError: time.sleep(0.1)\n    else: sys.exit(0)\n"
        "sys.exit(1)\n"
    )
    _run(["docker", "exec", f"{PREFIX}-proxylab-outside", "python3", "-c", wait])
    return at | {"ca": str(folder / "ca.pem")}


def _probe(container: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    argv = ["docker", "exec", container, "python3", "/tests/egress_client.py", json.dumps(spec)]
    found: dict[str, Any] = json.loads(_run(argv).stdout)
    if "error" in found or found.get("errors"):
        why = found.get("error") or found["errors"][:3]
        raise RuntimeError(f"proxy: probe in {container} failed: {why}")
    return found


def _ansible_module(args: Mapping[str, Any]) -> float:
    """Wall time of one docker_bottle call through ``ansible`` (ad hoc), which must work."""
    argv = [
        str(Path(sys.executable).parent / "ansible"), "localhost", "-i", "localhost,", "-c",
        "local", "-e", "ansible_python_interpreter=/usr/bin/python3",
        "-m", "botbottle.bottle.docker_bottle", "-a", json.dumps(args),
    ]  # fmt: skip
    env = {
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_STDOUT_CALLBACK": "json",
    }
    start = time.perf_counter()
    proc = _run(argv, env=env)
    seconds = time.perf_counter() - start
    result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    if result.get("failed") or "create_proxy" not in result.get("actions", []):
        raise RuntimeError(f"proxy: docker_bottle did not bring the bottle up: {result}")
    return seconds


def bench_proxy(bench: Bench) -> None:
    """HTTPS through a bottle's egress proxy (from its agent) against the same origin
    straight from a container outside any bottle, and what the proxy adds to a
    started-from-nothing docker_bottle call."""
    since = len(bench.loads)
    for image in (IMAGE, PROXY_IMAGE):
        _run(["docker", "image", "inspect", image])  # both built by the project's roles
    at = _proxy_lab(bench)
    routes = [{"host": PROXY_NAME}, {"cidr": f"{at['origin']}/32"}]  # a private origin
    mounts = [{"source": str(ROOT / "tests"), "target": "/tests", "read_only": True}]
    extra = {"routes": routes, "trusted_ca": at["ca"], "agent_image": PROXY_IMAGE, "mounts": mounts}
    steps = ["/usr/bin/python3", str(ROOT / "benchmarks" / "module_steps.py"), PROXY_BOTTLE]
    steps += [EGRESS, at["dns"]]
    env = {"PYTHONPATH": str(ROOT / "collections")}

    def module_steps(state: str) -> list[list[Any]]:
        out = _run([*steps, state, IMAGE, json.dumps(extra)], env=env).stdout.strip()
        parsed: list[list[Any]] = json.loads(out.splitlines()[-1])
        return parsed

    args = {
        "name": PROXY_BOTTLE,
        "policy": compile_policy({"egress": {"routes": routes}}).to_dict(),
        "upstream_dns": [at["dns"]],
        "egress_network": EGRESS,
        "egress_trusted_ca": at["ca"],
        "netutils_image": IMAGE,
        "proxy_image": PROXY_IMAGE,
        "image": PROXY_IMAGE,
        "command": ["sleep", "infinity"],
        "mounts": mounts,
    }
    try:
        module_steps("absent")
        module_steps("started")  # warm-up (untimed): the proxy code folder, the guard
        in_process: list[list[list[Any]]] = []
        through_ansible: list[float] = []
        for run in range(bench.runs):
            bench.log(f"proxy bring-up run {run + 1}/{bench.runs}")
            module_steps("absent")
            bench.loads.append(load1())
            in_process.append(module_steps("started"))
            module_steps("absent")
            bench.loads.append(load1())
            through_ansible.append(_ansible_module(args))
        shown = f'{{{{(index .NetworkSettings.Networks "bottle-{PROXY_BOTTLE}").IPAddress}}}}'
        proxy_ip = _run(["docker", "inspect", "-f", shown, f"bottle-{PROXY_BOTTLE}-proxy"])
        proxied_spec = {
            "kind": "latency", "mode": "proxy", "proxy": f"{proxy_ip.stdout.strip()}:8080",
            "ca": "/etc/bot-bottle/ca.pem", "authority": f"{PROXY_NAME}:443", **PROXY_LOAD,
        }  # fmt: skip
        direct_spec = {
            "kind": "latency", "mode": "direct", "address": f"{at['origin']}:443",
            "direct_ca": "/test-ca.pem", "authority": f"{PROXY_NAME}:443", **PROXY_LOAD,
        }  # fmt: skip
        proxied: list[dict[str, float]] = []
        direct: list[dict[str, float]] = []
        for run in range(bench.runs):
            bench.log(f"proxy latency run {run + 1}/{bench.runs}")
            order = [("proxy", f"bottle-{PROXY_BOTTLE}", proxied_spec, proxied)]
            order.append(("direct", f"{PREFIX}-proxylab-outside", direct_spec, direct))
            for _, container, spec, into in order if run % 2 == 0 else order[::-1]:
                bench.loads.append(load1())
                into.append(latency_figures(_probe(container, spec)))
        bench.results["proxy"] = {
            "load_per_run": PROXY_LOAD,
            "https": proxy_ratios(proxied, direct),
            "bringup_in_process": proxy_share(in_process),
            "bringup_ansible_s": summarize(through_ansible),
            "load1": bench.section_load(since),
        }
    finally:
        module_steps("absent")
        for name in _proxy_lab_names():
            _run(["docker", "rm", "-f", name], quiet_fail=True)


# --------------------------------------------------------------------------- policy


DLP_BODY = 1024 * 1024


def dlp_ratios(on: Sequence[float], off: Sequence[float]) -> dict[str, Any]:
    """Per-run p50s (seconds) with DLP on and off, and the ratio of their medians."""
    return {
        "on": summarize(on),
        "off": summarize(off),
        "ratio": ratio(statistics.median(on), statistics.median(off)),
    }


def bench_dlp(bench: Bench, big: int = 20, small: int = 300) -> None:
    """The egress proxy's latency with DLP on (the defaults: known_secrets and
    token_patterns, one known secret delivered) against the same proxy with
    ``egress.dlp: {outbound_detectors: false}``, in the same run, from one client to one
    origin (tests/integration/test_egress_dlp.py's lab, containers ``bbperf-dlp-*``):
    p50 of ``big`` 1 MiB JSON POSTs and of ``small`` GETs on a kept-alive connection."""
    from tests.integration import test_egress_dlp as lab_module  # noqa: PLC0415

    since = len(bench.loads)
    lab = lab_module.start_lab(bench.work / "dlp", prefix="bbperf-dlp", net="bbperf-dlp-net")
    samples: dict[str, dict[str, list[float]]] = {
        "big": {"on": [], "off": []},
        "small": {"on": [], "off": []},
    }
    try:
        for run in range(bench.runs):
            order = [("on", lab_module.PROXY), ("off", lab_module.PROXY_OFF)]
            for mode, proxy in order if run % 2 == 0 else order[::-1]:
                bench.loads.append(load1())
                raw = lab_module.probe(
                    "body_latency", proxy=proxy, prefix="bbperf-dlp",
                    authority="api.dlp.test:443", size=DLP_BODY, big=big, small=small,
                )  # fmt: skip
                if "error" in raw:
                    raise RuntimeError(f"dlp bench ({mode}): {raw['error']}")
                for kind in ("big", "small"):
                    samples[kind][mode].append(statistics.median(raw[kind]))
                bench.log(
                    f"dlp run {run + 1} {mode}: 1 MiB p50 "
                    f"{statistics.median(raw['big']) * 1000:.1f} ms, small p50 "
                    f"{statistics.median(raw['small']) * 1000:.2f} ms"
                )
    finally:
        lab_module.stop_lab(lab)
    bench.results["dlp"] = {
        "body_bytes": DLP_BODY,
        "requests": {"big": big, "small": small},
        "big_p50_s": dlp_ratios(samples["big"]["on"], samples["big"]["off"]),
        "small_p50_s": dlp_ratios(samples["small"]["on"], samples["small"]["off"]),
        "load1": bench.loads[since:],
    }


def _dlp_lines(d: Mapping[str, Any]) -> list[str]:
    lines = []
    for key, label in (("big_p50_s", "1 MiB POST"), ("small_p50_s", "small GET")):
        row = d[key]
        lines.append(
            f"DLP {label} p50: on {row['on']['median'] * 1000:.2f} ms, off "
            f"{row['off']['median'] * 1000:.2f} ms; ratio {row['ratio']:.2f}"
        )
    return lines


def _median_time(func: Callable[[], object], runs: int) -> dict[str, Any]:
    func()  # warm-up, not counted: the first call pays for imports and the schema validator
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        samples.append(time.perf_counter() - start)
    return summarize(samples)


def _routes(count: int) -> dict[str, Any]:
    routes = [{"host": f"h{i}.example{i % 97}.com"} for i in range(count - count // 10)]
    routes += [{"host": f"*.z{i}.example.org"} for i in range(count // 20)]
    routes += [{"cidr": f"10.{i // 256 % 256}.{i % 256}.0/24"} for i in range(count - len(routes))]
    return {"egress": {"routes": routes}}


def _manifests(base: Path, count: int) -> Path:
    folder = base / f"manifests{count}"
    folder.mkdir(exist_ok=True)
    (folder / "parent.yml").write_text("runtime:\n  command: [sleep, infinity]\n")
    for i in range(count - 1):
        (folder / f"m{i}.yml").write_text(
            f"extends: parent\negress:\n  routes:\n    - host: api{i}.example.com\n"
        )
    return folder


def bench_policy(bench: Bench) -> None:
    """Compile 10,000 routes (baseline 100) and validate 1,000 manifests (baseline 10)."""
    small, big = _routes(100), _routes(10_000)
    compile_small = _median_time(lambda: compile_policy(small), bench.runs)
    compile_big = _median_time(lambda: compile_policy(big), bench.runs)
    few, many = _manifests(bench.work, 10), _manifests(bench.work, 1000)
    validate_few = _median_time(lambda: resolve_all([few]), bench.runs)
    validate_many = _median_time(lambda: resolve_all([many]), bench.runs)
    bench.results["policy"] = {
        "compile_100_routes_s": compile_small,
        "compile_10000_routes_s": compile_big,
        "compile_per_route_ratio": ratio(
            compile_big["median"] / 10_000, compile_small["median"] / 100
        ),
        "validate_10_manifests_s": validate_few,
        "validate_1000_manifests_s": validate_many,
        "validate_per_manifest_ratio": ratio(
            validate_many["median"] / 1000, validate_few["median"] / 10
        ),
    }
    bench.results["policy"].update(_plan_rows(bench))


#: Plan (render) sizes per backend, the big one against a tenth of it.
PLAN_ROUTES = (5_000, 50_000)
_RENDERERS: dict[str, Callable[[Any], object]] = {
    "smolvm": render_smolvm,
    "dnsmasq": lambda policy: render_dnsmasq(policy, ["192.0.2.53"]),
    "firewall": lambda policy: render_firewall(policy, "10.89.0.2", "10.89.0.1"),
}


def _plan_rows(bench: Bench) -> dict[str, Any]:
    """Render every backend's rules for 50,000 routes against 5,000: time per route."""
    small, big = (compile_policy(_routes(n)) for n in PLAN_ROUTES)
    rows: dict[str, Any] = {}
    for backend, render in _RENDERERS.items():
        times = {
            n: _median_time(functools.partial(render, policy), bench.runs)
            for n, policy in zip(PLAN_ROUTES, (small, big), strict=True)
        }
        rows[f"plan_{backend}_{PLAN_ROUTES[1]}_routes_s"] = times[PLAN_ROUTES[1]]
        rows[f"plan_{backend}_per_route_ratio"] = ratio(
            times[PLAN_ROUTES[1]]["median"] / PLAN_ROUTES[1],
            times[PLAN_ROUTES[0]]["median"] / PLAN_ROUTES[0],
        )
    return rows


def _chain(base: Path, depth: int) -> Path:
    """A chain of ``depth`` manifests, each extending the one before; the last one."""
    folder = base / f"chain{depth}"
    folder.mkdir(exist_ok=True)
    (folder / "c0.yml").write_text("runtime:\n  command: [sleep, infinity]\n")
    for i in range(1, depth):
        (folder / f"c{i}.yml").write_text(f"extends: c{i - 1}\nenv:\n  V{i}: x\n")
    return folder / f"c{depth - 1}.yml"


def _diamond(base: Path, levels: int) -> Path:
    """``levels`` levels of two manifests, each extending both of the level below."""
    folder = base / f"diamond{levels}"
    folder.mkdir(exist_ok=True)
    for side in "ab":
        (folder / f"l0{side}.yml").write_text("runtime:\n  command: [sleep, infinity]\n")
    for i in range(1, levels):
        for side in "ab":
            (folder / f"l{i}{side}.yml").write_text(
                f"extends: [l{i - 1}a, l{i - 1}b]\nenv:\n  V{i}{side}: x\n"
            )
    top = folder / "top.yml"
    top.write_text(f"extends: [l{levels - 1}a, l{levels - 1}b]\n")
    return top


# Extends sizes, each against a tenth of its size; the longest chain stays within the
# 256-bottle limit (a 300-deep chain is refused: timed too, as the refusal's cost).
CHAIN_DEPTHS = (20, 200)
DIAMOND_LEVELS = (2, 20)
REFUSED_DEPTH = 300


def bench_extends(bench: Bench) -> None:
    """Validate extends chains and diamond lattices: time per level against 1/10 the size."""

    def validate(path: Path, valid: bool = True) -> Callable[[], None]:
        def run() -> None:
            bottles, problems = resolve_all([path])
            if bool(bottles) != valid or bool(problems) == valid:
                raise RuntimeError(f"{path}: unexpected result {problems[:1]}")

        return run

    figures: dict[str, Any] = {}
    for kind, make, (small, big) in (
        ("chain", _chain, CHAIN_DEPTHS),
        ("diamond", _diamond, DIAMOND_LEVELS),
    ):
        times = {n: _median_time(validate(make(bench.work, n)), bench.runs) for n in (small, big)}
        figures[f"{kind}_{small}_s"] = times[small]
        figures[f"{kind}_{big}_s"] = times[big]
        figures[f"{kind}_per_level_ratio"] = ratio(
            times[big]["median"] / big, times[small]["median"] / small
        )
    refused = _chain(bench.work, REFUSED_DEPTH)
    figures[f"chain_{REFUSED_DEPTH}_refused_s"] = _median_time(
        validate(refused, valid=False), bench.runs
    )
    bench.results["extends"] = figures


#: Hosts of the resolve section's inventory (each with the example bottles).
RESOLVE_HOSTS = 20


def _resolve_inventory(base: Path, hosts: int) -> Path:
    """An inventory of ``hosts`` local hosts, each declaring the example bottles."""
    shutil.copytree(ROOT / "examples" / "bottles", base / "bottles", dirs_exist_ok=True)
    entries = [{"manifest": f"bottles/{n}"} for n in ("base.yml", "python-dev.yml", "web-dev.md")]
    inventory = {
        "all": {
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                "bottle_backend": "docker",
                "bottles": entries,
            },
            "hosts": {f"bbperf-h{i}": {} for i in range(hosts)},
        }
    }
    path = base / "resolve-inventory.yml"
    path.write_text(yaml.safe_dump(inventory))
    return path


def bench_resolve(bench: Bench, hosts: int = RESOLVE_HOSTS) -> None:
    """A run resolves each host's manifests once: the CLI's preflight hands its bottles to the
    validate play (bottle_resolved_file) instead of the play resolving them again."""
    inventory = _resolve_inventory(bench.work, hosts)
    data = fleet.load_inventory(str(inventory))
    handoff = bench.work / "resolved.json"

    def preflight() -> None:
        checked = fleet.validate_inventory(data, inventory.parent, check_backends=True)
        if checked.problems or len(checked.resolved) != hosts:
            raise RuntimeError(f"resolve bench: {checked.problems[:1]}")
        handoff.write_text(json.dumps(checked.resolved))

    play = ["ansible-playbook", "botbottle.bottle.validate", "-i", str(inventory)]
    pre = _median_time(preflight, bench.runs)
    resolving, handed = [], []
    for _ in range(bench.runs):
        bench.loads.append(load1())
        resolving.append(timed(play))
        handed.append(timed([*play, "-e", f"bottle_resolved_file={handoff}"]))
    before = pre["median"] + statistics.median(resolving)  # the preflight, then the play again
    after = pre["median"] + statistics.median(handed)
    bench.results["resolve"] = {
        "hosts": hosts,
        "bottles_per_host": 3,
        "preflight_s": pre,
        "play_resolving_s": summarize(resolving),
        "play_handed_s": summarize(handed),
        "play_handed_vs_resolving": ratio(statistics.median(handed), statistics.median(resolving)),
        "run_after_vs_before": ratio(after, before),
        "lookups_per_run": {"before": hosts, "after": 0},
        "load1": bench.loads[-bench.runs :],
    }


def _resolve_lines(r: Mapping[str, Any]) -> list[str]:
    return [
        f"resolve {r['hosts']} hosts x {r['bottles_per_host']} bottles: preflight "
        f"{_fmt(r['preflight_s'])}; validate play resolving {_fmt(r['play_resolving_s'])}, "
        f"handed the preflight's bottles {_fmt(r['play_handed_s'])} (ratio "
        f"{r['play_handed_vs_resolving']:.2f}); preflight + play {r['run_after_vs_before']:.2f} "
        f"of before; lookups per run {r['lookups_per_run']['before']} -> "
        f"{r['lookups_per_run']['after']}",
    ]


# --------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    docker = _run(["docker", "version", "--format", "{{.Server.Version}}"], quiet_fail=True)
    dnsmasq = _run(
        ["docker", "run", "--rm", "--network", "none", IMAGE, "dnsmasq", "--version"],
        quiet_fail=True,
    )
    ansible = _run([str(Path(sys.executable).parent / "ansible"), "--version"], quiet_fail=True)
    commit = _run(["git", "rev-parse", "--short", "HEAD"], quiet_fail=True)
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], quiet_fail=True)
    others = _run(["docker", "ps", "-q"], quiet_fail=True)
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "docker": docker.stdout.strip(),
        "dnsmasq": (dnsmasq.stdout.splitlines() or [""])[0],
        "ansible": (ansible.stdout.splitlines() or [""])[0],
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "commit": commit.stdout.strip(),
        # the benchmark times the working tree, other people's uncommitted work included
        "modified_tracked_files": sorted(line[3:] for line in dirty.stdout.splitlines()),
        "containers_running_at_start": len(others.stdout.split()),
        "load1_at_start": round(load1(), 2),
        "started": _now(),
    }


def _fmt(stats: Mapping[str, Any], unit: str = "s") -> str:
    return (
        f"{stats['median']:.3f} {unit} (min {stats['min']:.3f}, max {stats['max']:.3f}, "
        f"n={stats['runs']})"
    )


def target(value: float, key: str) -> str:
    """How ``value`` compares with the issue's target ``TARGETS[key]``."""
    limit = TARGETS[key]
    if value <= limit:
        return f"target <= {limit:g}: met"
    return f"target <= {limit:g}: missed, {value / limit:.1f}x the target"


def _anatomy_line(label: str, found: Mapping[str, Any]) -> str:
    if not found:
        return f"  {label}: no job events"
    return (
        f"  {label}: playbook {found['playbook_s']:.1f} s + "
        f"{found.get('outside_playbook_s', 0.0):.1f} s outside it; {found['tasks']} tasks "
        f"({found['tasks_run']} ran, {found['tasks_skipped']} skipped), "
        f"{found['module_calls']} module calls {found['module_s']:.1f} s"
    )


def _changed(values: Sequence[int | None]) -> str:
    return "changed=" + ",".join("?" if v is None else str(v) for v in values)


def _bringup_lines(b: Mapping[str, Any]) -> list[str]:
    if "baseline_up_s" not in b:  # a result of the runner before the baseline did the checks
        return [
            f"bring-up, 1 bottle: bottle up {_fmt(b['bottle_up_s'])}",
            f"  baseline script {_fmt(b['baseline_script_s'])}; ratio {b['ratio']:.2f}",
        ]
    lines = [
        f"bottle up, 1 bottle, no verify: {_fmt(b['bottle_up_s'])}; baseline up "
        f"{_fmt(b['baseline_up_s'])}; ratio {b['ratio_up']:.2f}",
        f"bottle up, 1 bottle, with the escape suite: {_fmt(b['bottle_up_verify_s'])}; "
        f"the suite adds {b['verify_cost_s']:.1f} s",
        f"bottle down, 1 bottle: {_fmt(b['bottle_down_s'])}; baseline down "
        f"{_fmt(b['baseline_down_s'])}; ratio {b['ratio_down']:.2f}",
        f"bottle up + down, no verify: {_fmt(b['up_down_s'])}; baseline "
        f"{_fmt(b['baseline_up_down_s'])}; ratio {b['ratio_up_down']:.2f} "
        f"({target(b['ratio_up_down'], 'up_down_vs_baseline')})",
    ]
    changed = b.get("changed") or {}
    if changed:
        lines.append(
            f"  up {_changed(changed['up'])}; up with verify {_changed(changed['up_verify'])}; "
            f"down {_changed(changed['down'])}"
        )
    for label, found in (b.get("anatomy") or {}).items():
        lines.append(_anatomy_line(label, found))
    floor = b.get("floor")
    if floor:
        lines += [
            f"ansible-playbook with no task: {_fmt(floor['ansible_playbook_no_task_s'])}; "
            f"one trivial module call {floor['per_module_call_s']:.2f} s",
            f"managed host's python3 start {_fmt(floor['python3_start_s'])}; importing the "
            f"Docker SDK adds {floor['python3_import_docker_s']:.2f} s",
            f"bottle validate of one manifest: {_fmt(floor['bottle_validate_one_s'])}",
        ]
    return lines


def _steps_lines(steps: Mapping[str, Any]) -> list[str]:
    lines = []
    for kind in ("up", "noop", "down"):
        found = steps.get(kind) or {}
        if not found:
            continue
        parts = [f"{label} {s['median']:.2f}" for label, s in found.items() if label != "total"]
        lines.append(
            f"docker_bottle in-process, {kind}: {found['total']['median']:.2f} s = "
            + "; ".join(parts)
        )
    return lines


def _scale_lines(scale: Mapping[str, Any]) -> list[str]:
    lines = []
    for size, s in scale.items():
        if not isinstance(s, dict):
            continue
        line = (
            f"converge {size} bottle(s): {_fmt(s['converge_s'])}; {s['per_bottle_s']:.2f} s/bottle"
        )
        if "converge_changed" in s:
            line += f"; {_changed(s['converge_changed'])}"
        if "noop_s" not in s:
            lines.append(line + " (no-op re-run not timed)")
            continue
        noop = (
            f"  no-op re-run {_fmt(s['noop_s'])}; ratio to converge {s['noop_ratio']:.2f} "
            f"({target(s['noop_ratio'], 'noop_vs_converge')})"
        )
        if "noop_changed" in s:
            ok = all(c == 0 for c in s["noop_changed"])
            noop += f"; {_changed(s['noop_changed'])}" + ("" if ok else " NOT A NO-OP")
        lines += [line, noop]
        if s.get("anatomy_converge"):
            lines.append(_anatomy_line("converge", s["anatomy_converge"]))
        if s.get("anatomy_noop"):
            lines.append(_anatomy_line("no-op", s["anatomy_noop"]))
    if "converge_50_vs_10" in scale:
        lines.append(
            f"converge 50 vs 10 bottles: {scale['converge_50_vs_10']:.2f} "
            f"({target(scale['converge_50_vs_10'], 'converge_50_vs_10')})"
        )
    if "growth_10_vs_1" in scale:
        lines.append(f"per-bottle growth 10 vs 1: {scale['growth_10_vs_1']:.2f}")
    if "growth_50_vs_10" in scale:
        lines.append(f"per-bottle growth 50 vs 10: {scale['growth_50_vs_10']:.2f}")
    return lines


def _demo_lines(d: Mapping[str, Any]) -> list[str]:
    up_status = d["up_status_s"]["median"]
    lines = [
        f"demo ({d['bottles']} bottles, {d['backend']} backend): bottle up {_fmt(d['up_s'])}; "
        f"bottle status {_fmt(d['status_s'])}",
        f"  up + status {_fmt(d['up_status_s'])} ({target(up_status, 'demo_up_status_s')})",
        f"  bottle down {_fmt(d['down_s'])} ({target(d['down_s']['median'], 'demo_down_s')})",
        f"  bottle validate {_fmt(d['validate_s'])}",
        f"  up {_changed(d['changed']['up'])}; down {_changed(d['changed']['down'])}",
    ]
    for label, found in (d.get("anatomy") or {}).items():
        lines.append(_anatomy_line(label, found))
    return lines


def _proxy_lines(p: Mapping[str, Any]) -> list[str]:
    lines = []
    https = p["https"]
    for key, label in (
        ("keepalive_p50_ms", "HTTPS GET p50, kept-alive"),
        ("keepalive_p99_ms", "HTTPS GET p99, kept-alive"),
        ("new_connection_p50_ms", "HTTPS GET p50, new connection"),
        ("new_connection_p99_ms", "HTTPS GET p99, new connection"),
        ("requests_per_s", "HTTPS requests/s"),
    ):
        row = https[key]
        unit = "/s" if key == "requests_per_s" else " ms"
        lines.append(
            f"{label}: through the proxy {row['proxy']['median']:.2f}{unit}, direct "
            f"{row['direct']['median']:.2f}{unit}; ratio {row['ratio']:.2f}"
        )
    b = p["bringup_in_process"]
    lines.append(
        f"docker_bottle from nothing, in process: {_fmt(b['total_s'])}; the proxy's steps "
        f"({', '.join(PROXY_STEPS)}) {b['proxy_s']['median']:.2f} s = {b['share']:.0%}; "
        f"ratio to the rest {b['ratio_to_rest']:.2f}"
    )
    lines.append(f"docker_bottle from nothing, through ansible: {_fmt(p['bringup_ansible_s'])}")
    return lines


def table(results: Mapping[str, Any]) -> list[str]:
    """The human-readable summary."""
    lines = []
    sections: tuple[tuple[str, Callable[[Any], list[str]]], ...] = (
        ("bringup", _bringup_lines),
        ("steps", _steps_lines),
        ("scale", _scale_lines),
        ("demo", _demo_lines),
        ("proxy", _proxy_lines),
        ("dlp", _dlp_lines),
        ("resolve", _resolve_lines),
    )
    for name, lines_of in sections:
        if name in results:
            lines += lines_of(results[name])
    for label, r in results.get("resolver", {}).items():
        if not isinstance(r, dict) or label == "load1":
            continue
        if "qps_ratio" in r:
            lines.append(
                f"resolver {label}: {r['resolver']['qps']['median']:.0f} qps vs upstream "
                f"{r['upstream']['qps']['median']:.0f} qps; ratio {r['qps_ratio']:.2f}"
            )
        else:
            lines.append(
                f"resolver latency (forwarded): p50 {r['resolver']['p50_ms']:.2f} ms / "
                f"p99 {r['resolver']['p99_ms']:.2f} ms vs upstream "
                f"{r['upstream']['p50_ms']:.2f} / {r['upstream']['p99_ms']:.2f} ms; "
                f"ratios {r['p50_ratio']:.2f} / {r['p99_ratio']:.2f}"
            )
    if "policy" in results:
        p = results["policy"]
        lines += [
            f"compile 10,000 routes {_fmt(p['compile_10000_routes_s'])}; per-route ratio "
            f"to 100 routes {p['compile_per_route_ratio']:.2f}",
            f"validate 1,000 manifests {_fmt(p['validate_1000_manifests_s'])}; per-manifest "
            f"ratio to 10 {p['validate_per_manifest_ratio']:.2f}",
        ]
        small, big = PLAN_ROUTES
        lines += [
            f"plan {big:,} routes for {backend} {_fmt(p[f'plan_{backend}_{big}_routes_s'])}; "
            f"per-route ratio to {small:,} {p[f'plan_{backend}_per_route_ratio']:.2f}"
            for backend in _RENDERERS
            if f"plan_{backend}_per_route_ratio" in p
        ]
    if "extends" in results:
        e = results["extends"]
        (small, big), (few, many) = CHAIN_DEPTHS, DIAMOND_LEVELS
        lines += [
            f"validate a {big}-deep extends chain {_fmt(e[f'chain_{big}_s'])}; per-level "
            f"ratio to {small} deep {e['chain_per_level_ratio']:.2f}",
            f"validate a {many}-level extends diamond {_fmt(e[f'diamond_{many}_s'])}; "
            f"per-level ratio to {few} levels {e['diamond_per_level_ratio']:.2f}",
            f"refuse a {REFUSED_DEPTH}-deep extends chain "
            f"{_fmt(e[f'chain_{REFUSED_DEPTH}_refused_s'])}",
        ]
    return lines


def problems(results: Mapping[str, Any]) -> list[str]:
    """What is wrong with a run regardless of speed: a no-op re-run that changed
    something, or a converge that changed nothing (it would not have converged)."""
    found = []
    for size, s in (results.get("scale") or {}).items():
        if not isinstance(s, dict):
            continue
        if any(c != 0 for c in s.get("noop_changed", [])):
            found.append(f"the no-op re-run of {size} bottles changed: {s['noop_changed']}")
        if any(not c for c in s.get("converge_changed", [])):
            found.append(f"a converge of {size} bottles changed nothing: {s['converge_changed']}")
    changed = (results.get("bringup") or {}).get("changed") or {}
    for label in ("up", "up_verify", "down"):
        if any(not c for c in changed.get(label, [])):
            found.append(f"a bring-up benchmark `bottle {label}` changed nothing")
    return found


SECTIONS = (
    "policy",
    "extends",
    "resolve",
    "bringup",
    "steps",
    "scale",
    "demo",
    "resolver",
    "proxy",
    "dlp",
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--runs-50", type=int, default=1, help="runs of the 50-bottle converge")
    parser.add_argument(
        "--sizes",
        default="10,50",
        help="bottles per converge (default 10,50; the 50-bottle run takes minutes)",
    )
    parser.add_argument(
        "--noop-max",
        type=int,
        default=50,
        help="time the no-op re-run only up to this many bottles (default 50)",
    )
    parser.add_argument("--dnsperf-seconds", type=int, default=5)
    parser.add_argument("--only", help=f"comma-separated: {','.join(SECTIONS)}")
    parser.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results" / "latest.json"
    )
    return parser


def _write(path: Path, report: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


def _egress() -> str:
    """The benchmark's internal egress network (a free /24, made if missing): its gateway."""
    if _run(["docker", "network", "inspect", EGRESS], quiet_fail=True).returncode != 0:
        subnet = ipaddress.ip_network(free_subnet(POOLS, 24))
        gateway = str(next(subnet.hosts()))
        create = ["docker", "network", "create", "--internal", "--subnet", str(subnet)]
        _run([*create, "--gateway", gateway, EGRESS])
    shown = "{{.Internal}} {{(index .IPAM.Config 0).Subnet}} {{(index .IPAM.Config 0).Gateway}}"
    info = _run(["docker", "network", "inspect", "-f", shown, EGRESS]).stdout.split()
    if info[0] != "true":
        raise RuntimeError(f"network {EGRESS} exists and is not internal: remove it")
    return info[2] if len(info) > 2 else str(next(ipaddress.ip_network(info[1]).hosts()))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    only = set((args.only or ",".join(SECTIONS)).split(","))
    unknown = only - set(SECTIONS)
    if unknown:
        raise SystemExit(f"bench: unknown section(s) {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="bottle-bench-") as tmp:
        work = Path(tmp)
        docker_needed = bool(only - {"policy", "extends", "resolve", "dlp"})
        servers: list[Any] = []
        bench = Bench(work, "", args.runs, log=lambda m: print(f"bench: {m}", flush=True))
        sections: dict[str, Callable[[], None]] = {
            "policy": lambda: bench_policy(bench),
            "extends": lambda: bench_extends(bench),
            "resolve": lambda: bench_resolve(bench),
            "bringup": lambda: bench_bringup(bench),
            "steps": lambda: bench_steps(bench),
            "scale": lambda: bench_scale(
                bench, [int(s) for s in args.sizes.split(",")], args.runs_50, args.noop_max
            ),
            "demo": lambda: bench_demo(bench),
            "resolver": lambda: bench_resolver(bench, args.dnsperf_seconds),
            "proxy": lambda: bench_proxy(bench),
            "dlp": lambda: bench_dlp(bench),
        }
        report: dict[str, Any] = {
            "machine": machine(),
            "knobs": vars(args) | {"json": str(args.json)},
            "targets": TARGETS,
            "results": bench.results,
        }
        bench.save = lambda: _write(args.json, report)
        try:
            if docker_needed:
                remove_bench_bottles()  # what a crashed earlier run left (ours only)
                gateway = _egress()
                port, servers = serve(gateway, 0, work / "upstream.log")
                bench.upstream = f"{gateway}#{port}"
            for name, section in sections.items():
                if name in only:
                    section()
                    _write(args.json, report)  # a long run keeps what it measured so far
        finally:
            report["machine"]["load1_at_end"] = round(load1(), 2)
            report["machine"]["finished"] = _now()
            for server in servers:
                server.shutdown()
            if docker_needed:
                remove_bench_bottles()
                _run(["docker", "network", "rm", EGRESS], quiet_fail=True)
    _write(args.json, report)
    for line in table(bench.results):
        print(line)
    wrong = problems(bench.results)
    for line in wrong:
        print(f"PROBLEM: {line}")
    print(f"json: {args.json}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
