"""The benchmark runner's arithmetic and parsing (no timing is asserted anywhere)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest
from benchmarks import bench
from benchmarks.bench import (
    anatomy,
    latency_figures,
    load_events,
    parse_artifacts,
    parse_changes,
    parse_dnsperf,
    percentile,
    problems,
    proxy_ratios,
    proxy_share,
    ratio,
    rename_extends,
    status_rows,
    summarize,
    table,
    target,
)

from ansible_collections.botbottle.bottle.plugins.module_utils import _docker_bottle

BASELINE_UP = Path(__file__).resolve().parents[2] / "benchmarks" / "baseline-up.sh"

# The summary block dnsperf 2.10 prints (trimmed).
DNSPERF = """\
Statistics:

  Queries sent:         61205
  Queries completed:    61190 (99.98%)
  Queries lost:         15 (0.02%)

  Response codes:       NOERROR 61190 (100.00%)
  Average packet size:  request 35, response 51
  Run time (s):         5.000842
  Queries per second:   12235.939465

  Average Latency (s):  0.004012 (min 0.000118, max 0.063915)
  Latency StdDev (s):   0.002741
"""


def test_summaries_and_ratios() -> None:
    assert summarize([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "runs": 3}
    assert ratio(6.0, 2.0) == 3.0 and ratio(1.0, 0.0) == float("inf")
    samples = [float(i) for i in range(1, 101)]
    assert percentile(samples, 0.5) == 50.0 and percentile(samples, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0


def test_dnsperf_summary_is_parsed() -> None:
    figures = parse_dnsperf(DNSPERF)
    assert figures == {
        "sent": 61205.0,
        "completed": 61190.0,
        "lost": 15.0,
        "qps": 12235.939465,
        "avg_latency_s": 0.004012,
    }
    with pytest.raises(ValueError, match="qps"):
        parse_dnsperf("Queries sent: 1\nQueries completed: 1\nQueries lost: 0\n")


def test_table_names_each_figure_with_its_baseline_and_target() -> None:
    stats = summarize([1.0, 2.0])
    results = {
        "bringup": {
            "bottle_up_s": stats,
            "bottle_up_verify_s": stats,
            "bottle_down_s": stats,
            "baseline_up_s": stats,
            "baseline_down_s": stats,
            "up_down_s": stats,
            "baseline_up_down_s": stats,
            "ratio_up": 1.0,
            "ratio_down": 1.0,
            "ratio_up_down": 3.0,
            "verify_cost_s": 0.0,
            "changed": {"up": [1], "up_verify": [1], "down": [1, 1]},
        },
        "scale": {
            "10": {
                "converge_s": stats,
                "noop_s": stats,
                "per_bottle_s": 0.15,
                "noop_ratio": 0.2,
                "noop_changed": [0, 0],
            },
            "50": {"converge_s": stats, "per_bottle_s": 0.2},
            "converge_50_vs_10": 6.0,
            "growth_50_vs_10": 1.33,
        },
    }
    lines = table(results)
    assert any(line.startswith("bottle up, 1 bottle, no verify") for line in lines)
    assert any("ratio 3.00 (target <= 2: missed, 1.5x the target)" in line for line in lines)
    assert any("ratio to converge 0.20 (target <= 0.3: met); changed=0,0" in line for line in lines)
    assert any(line.startswith("converge 50 bottle(s)") for line in lines)
    assert "converge 50 vs 10 bottles: 6.00 (target <= 5: missed, 1.2x the target)" in lines
    assert lines[-1] == "per-bottle growth 50 vs 10: 1.33"


def test_an_older_result_still_prints() -> None:
    stats = summarize([1.0])
    lines = table({"bringup": {"bottle_up_s": stats, "baseline_script_s": stats, "ratio": 1.0}})
    assert lines[1].startswith("  baseline script")


def test_targets() -> None:
    assert target(2.0, "up_down_vs_baseline") == "target <= 2: met"
    assert target(30.0, "demo_up_status_s") == "target <= 20: missed, 1.5x the target"


def test_problems_are_a_changing_noop_or_a_converge_that_changed_nothing() -> None:
    stats = summarize([1.0])
    fine = {"converge_s": stats, "converge_changed": [1], "noop_changed": [0]}
    assert problems({"scale": {"10": fine, "growth_50_vs_10": 1.0}}) == []
    assert problems({"scale": {"10": fine | {"noop_changed": [0, 2]}}}) == [
        "the no-op re-run of 10 bottles changed: [0, 2]"
    ]
    assert problems({"scale": {"10": fine | {"converge_changed": [None]}}})
    assert problems({"bringup": {"changed": {"up": [1], "up_verify": [0], "down": [1]}}})


CLI_OUTPUT = """\
== Validate bottle manifests
localhost            changed     Bring each bottle to its state
ok      localhost: 1 change(s)
ok      other: 2 change(s)
artifacts: /root/.local/state/bot-bottle/runs/artifacts/20261201T221155-4146
"""


def test_cli_summary_is_parsed() -> None:
    assert parse_changes(CLI_OUTPUT) == 3
    assert parse_changes("ok      localhost: 0 change(s)\n") == 0
    assert parse_changes("FAILED  localhost: boom\n") is None
    assert parse_artifacts(CLI_OUTPUT) == Path(
        "/root/.local/state/bot-bottle/runs/artifacts/20261201T221155-4146"
    )
    assert parse_artifacts("nothing") is None


def test_status_rows() -> None:
    text = (
        "HOST                 BOTTLE               BACKEND       STATE     DECLARED  POLICY\n"
        "localhost            bbperf-demo-base     docker        running   started   sha256:ab\n"
        "localhost            bbperf-demo-web-dev  docker        absent    started   -  DRIFT: x\n"
        "ok      localhost: 0 change(s)\n"
    )
    rows = status_rows(text)
    assert [r[1] for r in rows] == ["bbperf-demo-base", "bbperf-demo-web-dev"]
    assert [r[3] for r in rows] == ["running", "absent"]


def _event(counter: int, event: str, second: float, **data: Any) -> dict[str, Any]:
    return {
        "counter": counter,
        "event": event,
        "created": f"2026-12-01T22:00:{second:06.3f}+00:00",
        "event_data": data,
    }


def test_anatomy_counts_tasks_module_calls_and_time(tmp_path: Path) -> None:
    events = [
        _event(1, "playbook_on_start", 0.0),
        _event(2, "playbook_on_task_start", 0.1, task="F", task_uuid="a", task_action="set_fact"),
        _event(3, "runner_on_ok", 0.2, task_uuid="a", duration=0.1, res={}),
        _event(
            4,
            "playbook_on_task_start",
            0.3,
            task="Bottles",
            task_uuid="b",
            task_action="botbottle.bottle.docker_bottle",
        ),
        _event(5, "runner_item_on_ok", 1.3, task_uuid="b"),
        _event(6, "runner_item_on_ok", 2.3, task_uuid="b"),
        _event(7, "runner_on_ok", 2.3, task_uuid="b", duration=2.0, res={"changed": True}),
        _event(8, "playbook_on_task_start", 2.4, task="Apt", task_uuid="c", task_action="apt"),
        _event(9, "runner_on_skipped", 2.5, task_uuid="c", duration=0.05),
        _event(10, "playbook_on_stats", 3.0),
    ]
    found = anatomy(events, wall=4.0)
    assert found["playbook_s"] == pytest.approx(3.0)
    assert found["outside_playbook_s"] == pytest.approx(1.0)
    assert (found["tasks"], found["tasks_run"], found["tasks_skipped"]) == (3, 2, 1)
    assert found["module_calls"] == 2  # one per loop item
    assert found["module_s"] == pytest.approx(2.0)
    assert found["controller_s"] == pytest.approx(0.1)
    assert found["skipped_s"] == pytest.approx(0.05)
    assert found["between_tasks_s"] == pytest.approx(3.0 - 2.15)
    assert found["slowest"] == [
        {"task": "Bottles", "action": "botbottle.bottle.docker_bottle", "seconds": 2.0, "calls": 2}
    ]
    (tmp_path / "job_events").mkdir()
    for event in events:
        (tmp_path / "job_events" / f"{event['counter']}-x.json").write_text(json.dumps(event))
    (tmp_path / "job_events" / "11-partial.json").write_text("{")
    assert anatomy(load_events(tmp_path)) == {
        k: v for k, v in found.items() if k not in ("wall_s", "outside_playbook_s")
    }


def test_demo_parents_are_renamed_in_extends_only() -> None:
    names = {"base": "bbperf-demo-base", "web-dev": "bbperf-demo-web-dev"}
    text = "---\ndescription: base of web-dev\nextends: [base]\nenv:\n  A: base\n---\n# base\n"
    assert rename_extends(text, names) == text.replace("[base]", "[bbperf-demo-base]")
    block = "extends:\n  - base\n  - web-dev\nruntime:\n  - base\n"
    assert rename_extends(block, names) == (
        "extends:\n  - bbperf-demo-base\n  - bbperf-demo-web-dev\nruntime:\n  - base\n"
    )
    assert rename_extends("extends: based\n", names) == "extends: based\n"


def _shell_value(text: str, variable: str) -> str:
    """The value a plain ``name=...`` assignment line of a shell script gives."""
    for line in text.splitlines():
        if line.startswith(f"{variable}="):
            words = shlex.split(line[len(variable) + 1 :])
            assert len(words) == 1, line
            return words[0]
    raise AssertionError(f"{variable} is not set")


def test_the_baseline_runs_the_modules_own_programs() -> None:
    """Like for like: the hand-written script's resolver start, holder start, read-back,
    seal guard and health name are the docker_bottle module's, word for word."""
    script = BASELINE_UP.read_text()
    assert _shell_value(script, "resolver_start") == _docker_bottle.RESOLVER_ARGV[2]
    assert _shell_value(script, "holder_start") == _docker_bottle.HOLDER_SCRIPT
    assert _shell_value(script, "read_rules") == _docker_bottle.READ_ARGV[2]
    assert _shell_value(script, "seal_guard") == _docker_bottle.GUARD_SCRIPT
    assert _shell_value(script, "health_name") == _docker_bottle.HEALTH_NAME
    assert _shell_value(script, "seal") == _docker_bottle.SEAL


def test_extends_rows_name_the_sizes_and_ratios() -> None:
    stats = summarize([0.01, 0.02])
    results = {
        "extends": {
            "chain_20_s": stats,
            "chain_200_s": stats,
            "chain_per_level_ratio": 0.1,
            "diamond_2_s": stats,
            "diamond_20_s": stats,
            "diamond_per_level_ratio": 0.1,
            "chain_300_refused_s": stats,
        }
    }
    lines = table(results)
    assert lines[0].startswith("validate a 200-deep extends chain")
    assert lines[0].endswith("per-level ratio to 20 deep 0.10")
    assert lines[1].startswith("validate a 20-level extends diamond")
    assert lines[2].startswith("refuse a 300-deep extends chain")


def test_proxy_figures_ratios_and_the_bringup_share() -> None:
    """Section ``proxy``: percentiles in ms and requests/s from a latency probe's raw
    samples, each figure's ratio through the proxy to direct, and the proxy's steps
    of a docker_bottle call against the rest of that call."""
    raw = {
        "keepalive_s": [i / 1000 for i in range(1, 101)],
        "new_connection_s": [0.01, 0.02, 0.03],
        "load": {"requests": 500, "seconds": 2.0, "threads": 8},
    }
    figures = latency_figures(raw)
    assert figures["keepalive_p50_ms"] == pytest.approx(50.0)
    assert figures["keepalive_p99_ms"] == pytest.approx(99.0)
    assert figures["new_connection_p50_ms"] == pytest.approx(20.0)
    assert figures["requests_per_s"] == 250.0
    slower = {k: v * 2 for k, v in figures.items()}
    ratios = proxy_ratios([slower, slower], [figures, figures])
    assert ratios["keepalive_p50_ms"]["ratio"] == pytest.approx(2.0)
    assert ratios["requests_per_s"]["proxy"]["median"] == 500.0
    run = [["write_files", 0.1], ["make_ca", 0.2], ["create_proxy", 0.3], ["wait_proxy", 0.5]]
    share = proxy_share([[*run, ["total", 2.0]], [*run, ["total", 3.0]]])
    assert share["proxy_s"]["median"] == pytest.approx(1.0)
    assert share["rest_s"]["median"] == pytest.approx(1.5)
    assert share["ratio_to_rest"] == pytest.approx(2.5 / 1.5)
    assert share["share"] == pytest.approx(1.0 / 2.5)
    assert share["steps_s"]["wait_proxy"]["median"] == 0.5
    lines = table(
        {
            "proxy": {
                "https": ratios,
                "bringup_in_process": share,
                "bringup_ansible_s": summarize([4.0]),
            }
        }
    )
    assert lines[0].startswith("HTTPS GET p50, kept-alive: through the proxy 100.00 ms")
    assert lines[0].endswith("ratio 2.00")
    assert "the proxy's steps (make_ca, create_proxy, wait_proxy) 1.00 s = 40%" in lines[5]
    assert lines[6].startswith("docker_bottle from nothing, through ansible: 4.000 s")


def test_dlp_ratios_and_lines() -> None:
    found = bench.dlp_ratios([0.1, 0.12, 0.1], [0.02, 0.02, 0.018])
    assert found["ratio"] == pytest.approx(5.0)
    lines = bench._dlp_lines({"big_p50_s": found, "small_p50_s": bench.dlp_ratios([2.0], [1.0])})
    assert lines[0] == "DLP 1 MiB POST p50: on 100.00 ms, off 20.00 ms; ratio 5.00"
    assert lines[1].endswith("ratio 2.00")
