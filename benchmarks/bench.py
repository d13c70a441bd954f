"""bot-bottle's benchmarks: each figure against a baseline measured in the same run.

Run from the project root: ``scripts/bench`` (or ``.venv/bin/python -m benchmarks.bench``).
Prints a table and writes JSON (``--json``, default ``benchmarks/results/latest.json``).
Every figure is the median of ``--runs`` runs, with min and max. Timings are never
assertions anywhere; ``benchmarks/README.md`` records a run and says which knobs matter.

All traffic stays on this machine: the bottles' upstream is a fake resolver this
runner serves on the gateway of its own egress network, and dnsperf and the latency
client query only that resolver and the bottle's resolver.
"""

from __future__ import annotations

import argparse
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dnslib import DNSRecord
from tests.fake_upstream import serve

from botbottle.manifest import resolve_all
from botbottle.policy import compile_policy, render_dnsmasq, render_firewall

ROOT = Path(__file__).resolve().parents[1]
BOTTLE = str(Path(sys.executable).parent / "bottle")
EGRESS = "bbbench-egress"
SUBNET = "172.29.248.0/24"
GATEWAY = "172.29.248.1"
IMAGE = "bot-bottle/netutils:latest"
BASELINE_SUBNET = "172.29.247.0/28"


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


def _run(argv: Sequence[str], *, quiet_fail: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BOTTLE_DEBUG"}
    proc = subprocess.run(
        list(argv), capture_output=True, text=True, check=False, env=env, cwd=ROOT, timeout=3600
    )
    if proc.returncode != 0 and not quiet_fail:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def timed(argv: Sequence[str]) -> float:
    """Wall time of one command that must succeed."""
    start = time.perf_counter()
    _run(argv)
    return time.perf_counter() - start


@dataclass
class Bench:
    """One benchmark run's shared state."""

    work: Path
    upstream: str
    runs: int
    results: dict[str, Any] = field(default_factory=dict)
    log: Callable[[str], None] = print
    save: Callable[[], None] = lambda: None

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
            "docker_bottle_upstream_dns": [self.upstream],
            "docker_bottle_egress_network": EGRESS,
            "docker_bottle_agent_image": IMAGE,
            "bottle_verify": verify,
            "bottle_verify_resolvers": [self.upstream],
        }
        path = self.work / f"{name}.inventory.yml"
        path.write_text(json.dumps({"all": {"hosts": {"localhost": host}}}))
        return path


# --------------------------------------------------------------------------- rollout


def _baseline_dir(bench: Bench, name: str) -> Path:
    """The files a hand-rolled bring-up needs, rendered by the same compiler."""
    policy = compile_policy({"egress": {"routes": [{"host": "api.bench.example"}]}})
    base = bench.work / f"baseline-{name}"
    (base / "log").mkdir(parents=True, exist_ok=True)
    resolver, _holder = _hosts(BASELINE_SUBNET)
    conf = render_dnsmasq(policy, [bench.upstream])
    conf += [
        f"listen-address={resolver}",
        "listen-address=127.0.0.1",
        "bind-dynamic",
        "user=root",
        "group=root",
        "log-queries=extra",
        "log-facility=/var/log/bottle/queries.log",
    ]
    (base / "dnsmasq.conf").write_text("\n".join(conf) + "\n")
    rules = render_firewall(policy, resolver, _gateway(BASELINE_SUBNET))
    (base / "rules.ipv4").write_text(rules["ipv4"])
    (base / "rules.ipv6").write_text(rules["ipv6"])
    (base / "resolv.conf").write_text(f"nameserver {resolver}\n")
    return base


def _gateway(subnet: str) -> str:
    prefix, _, _ = subnet.rpartition(".")
    return f"{prefix}.{int(subnet.split('.')[3].split('/', maxsplit=1)[0]) + 1}"


def _hosts(subnet: str) -> tuple[str, str]:
    prefix, _, last = subnet.partition("/")[0].rpartition(".")
    return f"{prefix}.{int(last) + 2}", f"{prefix}.{int(last) + 3}"


def bench_bringup(bench: Bench) -> None:
    """One bottle: `bottle up` versus the hand-rolled baseline script."""
    inventory = bench.inventory("one", [bench.manifest("bench1", ["api.bench.example"])])
    resolver, holder = _hosts(BASELINE_SUBNET)
    base = _baseline_dir(bench, "b1")
    script = [
        str(ROOT / "benchmarks" / "baseline-up.sh"),
        "b1",
        BASELINE_SUBNET,
        resolver,
        holder,
        EGRESS,
        IMAGE,
        IMAGE,
        str(base),
    ]
    ups, baselines = [], []
    for run in range(bench.runs):
        bench.log(f"bring-up run {run + 1}/{bench.runs}")
        ups.append(timed([BOTTLE, "up", "-i", str(inventory)]))
        _run([BOTTLE, "down", "-i", str(inventory)])
        baselines.append(timed(script))
        _run([str(ROOT / "benchmarks" / "baseline-down.sh"), "b1"])
    bench.results["bringup"] = {
        "bottle_up_s": summarize(ups),
        "baseline_script_s": summarize(baselines),
        "ratio": ratio(statistics.median(ups), statistics.median(baselines)),
    }


def remove_all_bottles() -> None:
    """Fast clean-up between scale runs (not timed): every bot-bottle container and network."""
    for kind in ("container", "network"):
        listed = _run(
            ["docker", kind, "ls", "-q", "--filter", "label=botbottle.managed-by=bot-bottle"]
            + (["-a"] if kind == "container" else [])
        )
        ids = listed.stdout.split()
        if ids:
            _run(["docker", kind, "rm", *(["-f"] if kind == "container" else []), *ids])


def _scale_runs(bench: Bench, inventory: Path, runs: int, noop: bool) -> dict[str, list[float]]:
    firsts, noops = [], []
    for run in range(runs):
        bench.log(f"{inventory.stem}: run {run + 1}/{runs}")
        firsts.append(timed([BOTTLE, "up", "-i", str(inventory)]))
        if noop:
            noops.append(timed([BOTTLE, "up", "-i", str(inventory)]))
        remove_all_bottles()
    return {"converge": firsts, "noop": noops}


def bench_scale(bench: Bench, sizes: Sequence[int], big_runs: int, noop_max: int) -> None:
    """Converge N bottles, re-run (no-op, up to ``noop_max`` bottles), remove (untimed)."""
    scale: dict[str, Any] = {}
    bench.results["scale"] = scale
    for size in sizes:
        manifests = [bench.manifest(f"s{size}n{i}", [f"api{i}.bench.example"]) for i in range(size)]
        inventory = bench.inventory(f"scale{size}", manifests)
        runs = bench.runs if size <= 10 else big_runs
        times = _scale_runs(bench, inventory, runs, size <= noop_max)
        first = statistics.median(times["converge"])
        figures: dict[str, Any] = {
            "converge_s": summarize(times["converge"]),
            "per_bottle_s": first / size,
        }
        if times["noop"]:
            figures["noop_s"] = summarize(times["noop"])
            figures["noop_ratio"] = ratio(statistics.median(times["noop"]), first)
        scale[str(size)] = figures
        bench.save()  # the 50-bottle run is long: keep what was measured
    if "10" in scale and "50" in scale:
        scale["growth_50_vs_10"] = ratio(scale["50"]["per_bottle_s"], scale["10"]["per_bottle_s"])
    if "1" in scale and "10" in scale:
        scale["growth_10_vs_1"] = ratio(scale["10"]["per_bottle_s"], scale["1"]["per_bottle_s"])


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
    if shutil.which("dnsperf") is None:
        raise RuntimeError("dnsperf is not installed (apt-get install dnsperf; scripts/setup does)")
    manifest = bench.manifest("benchdns", ["api.bench.example", "*.zone.bench.example"])
    inventory = bench.inventory("dns", [manifest])
    _run([BOTTLE, "up", "-i", str(inventory)])
    try:
        resolver = _run(
            [
                "docker",
                "inspect",
                "-f",
                '{{(index .NetworkSettings.Networks "bottle-benchdns").IPAddress}}',
                "bottle-benchdns-resolver",
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
        bench.results["resolver"] = figures
    finally:
        _run([BOTTLE, "down", "-i", str(inventory)], quiet_fail=True)


# --------------------------------------------------------------------------- policy


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


# --------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    docker = _run(["docker", "version", "--format", "{{.Server.Version}}"], quiet_fail=True)
    dnsmasq = _run(
        ["docker", "run", "--rm", "--network", "none", IMAGE, "dnsmasq", "--version"],
        quiet_fail=True,
    )
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "docker": docker.stdout.strip(),
        "dnsmasq": (dnsmasq.stdout.splitlines() or [""])[0],
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def _fmt(stats: dict[str, Any], unit: str = "s") -> str:
    return (
        f"{stats['median']:.3f} {unit} (min {stats['min']:.3f}, max {stats['max']:.3f}, "
        f"n={stats['runs']})"
    )


def table(results: dict[str, Any]) -> list[str]:
    """The human-readable summary."""
    lines = []
    if "bringup" in results:
        b = results["bringup"]
        lines += [
            f"bring-up, 1 bottle: bottle up {_fmt(b['bottle_up_s'])}",
            f"  baseline script {_fmt(b['baseline_script_s'])}; ratio {b['ratio']:.2f}",
        ]
    for size, s in results.get("scale", {}).items():
        if isinstance(s, dict) and "noop_s" not in s:
            lines.append(
                f"converge {size} bottle(s): {_fmt(s['converge_s'])}; "
                f"{s['per_bottle_s']:.2f} s/bottle (no-op re-run not timed)"
            )
        elif isinstance(s, dict):
            lines += [
                f"converge {size} bottle(s): {_fmt(s['converge_s'])}; "
                f"{s['per_bottle_s']:.2f} s/bottle",
                f"  no-op re-run {_fmt(s['noop_s'])}; ratio to converge {s['noop_ratio']:.2f}",
            ]
    if "growth_10_vs_1" in results.get("scale", {}):
        lines.append(f"per-bottle growth 10 vs 1: {results['scale']['growth_10_vs_1']:.2f}")
    if "growth_50_vs_10" in results.get("scale", {}):
        lines.append(f"per-bottle growth 50 vs 10: {results['scale']['growth_50_vs_10']:.2f}")
    for label, r in results.get("resolver", {}).items():
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--runs-50", type=int, default=1, help="runs of the 50-bottle converge")
    parser.add_argument("--sizes", default="1,10,50", help="bottles per converge (default 1,10,50)")
    parser.add_argument(
        "--noop-max",
        type=int,
        default=50,
        help="time the no-op re-run only up to this many bottles (default 50)",
    )
    parser.add_argument("--dnsperf-seconds", type=int, default=5)
    parser.add_argument("--only", help="comma-separated: policy,extends,bringup,scale,resolver")
    parser.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results" / "latest.json"
    )
    return parser


def _write(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    only = set((args.only or "policy,extends,bringup,scale,resolver").split(","))
    with tempfile.TemporaryDirectory(prefix="bottle-bench-") as tmp:
        work = Path(tmp)
        docker_needed = bool(only - {"policy", "extends"})
        servers: list[Any] = []
        upstream = ""
        if docker_needed:
            _run(
                ["docker", "network", "create", "--internal", "--subnet", SUBNET, EGRESS],
                quiet_fail=True,
            )
            port, servers = serve(GATEWAY, 0, work / "upstream.log")
            upstream = f"{GATEWAY}#{port}"
        bench = Bench(work, upstream, args.runs, log=lambda m: print(f"bench: {m}", flush=True))
        sections: dict[str, Callable[[], None]] = {
            "policy": lambda: bench_policy(bench),
            "extends": lambda: bench_extends(bench),
            "bringup": lambda: bench_bringup(bench),
            "scale": lambda: bench_scale(
                bench, [int(s) for s in args.sizes.split(",")], args.runs_50, args.noop_max
            ),
            "resolver": lambda: bench_resolver(bench, args.dnsperf_seconds),
        }
        report = {
            "machine": machine(),
            "knobs": vars(args) | {"json": str(args.json)},
            "results": bench.results,
        }
        bench.save = lambda: _write(args.json, report)
        try:
            for name, section in sections.items():
                if name in only:
                    section()
                    _write(args.json, report)  # a long run keeps what it measured so far
        finally:
            for server in servers:
                server.shutdown()
            if docker_needed:
                _run(["docker", "network", "rm", EGRESS], quiet_fail=True)
    _write(args.json, report)
    for line in table(bench.results):
        print(line)
    print(f"json: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
