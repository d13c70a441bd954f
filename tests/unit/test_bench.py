"""The benchmark runner's arithmetic and parsing (no timing is asserted anywhere)."""

from __future__ import annotations

import pytest
from benchmarks.bench import parse_dnsperf, percentile, ratio, summarize, table

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


def test_table_names_each_figure_with_its_baseline() -> None:
    stats = summarize([1.0, 2.0])
    results = {
        "bringup": {"bottle_up_s": stats, "baseline_script_s": stats, "ratio": 1.0},
        "scale": {
            "10": {"converge_s": stats, "noop_s": stats, "per_bottle_s": 0.15, "noop_ratio": 1.0},
            "50": {"converge_s": stats, "noop_s": stats, "per_bottle_s": 0.2, "noop_ratio": 1.0},
            "growth_50_vs_10": 1.33,
        },
    }
    lines = table(results)
    assert any("baseline script" in line for line in lines)
    assert any(line.startswith("converge 50 bottle(s)") for line in lines)
    assert lines[-1] == "per-bottle growth 50 vs 10: 1.33"


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
