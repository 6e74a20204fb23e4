"""bench_latency's maths and tables, from hand-written rows (no servers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from evals import bench_latency as bl


def test_ideal_speedup():
    assert bl.ideal_speedup(1.0, 0.1) == 1.0  # all large: nothing to gain
    assert bl.ideal_speedup(0.0, 0.1) == pytest.approx(10.0)  # all small: the cost ratio
    assert bl.ideal_speedup(0.5, 0.1) == pytest.approx(1 / 0.55)


def test_mean_std_is_the_sample_std():
    assert bl.mean_std([2.0]) == (2.0, 0.0)
    m, s = bl.mean_std([1.0, 2.0, 3.0])
    assert m == 2.0 and s == pytest.approx(1.0)


def rec(problem: str, run: int, mode: str, latency: float, tokens: int, large: int, **kw: Any) -> dict:
    return {
        "problem": problem,
        "run": run,
        "mode": mode,
        "latency_s": latency,
        "output_tokens": tokens,
        "large_tokens": large,
        "small_tokens": tokens - large,
        "switches": 2,
        **kw,
    }


PROBES = {
    "start": {"large": {"per_token_s": 0.10}, "small": {"per_token_s": 0.01}},
    "end": {"large": {"per_token_s": 0.10}, "small": {"per_token_s": 0.03}},
}


def test_summary_per_problem_overall_and_ideal():
    rows = [
        rec("a", 0, "large_only", 10.0, 100, 100),
        rec("a", 0, "relay", 5.0, 100, 50),
        rec("a", 1, "large_only", 12.0, 100, 100),
        rec("a", 1, "relay", 4.0, 100, 50),
        rec("b", 0, "large_only", 8.0, 100, 100),
        rec("b", 0, "relay", 4.0, 50, 40),
        rec("b", 1, "relay", 9.0, 100, 50),  # its large_only partner is missing: not paired
    ]
    s = bl.summarize_bench(rows, PROBES)
    assert s["decode_probe"]["small_over_large"] == pytest.approx(0.2)  # mean 0.02 / mean 0.10
    a, b = s["problems"]
    assert a["runs"] == 2 and a["speedup"] == [2.5, pytest.approx(0.707, abs=1e-3)]
    assert a["large_only_s"] == [11.0, pytest.approx(1.414, abs=1e-3)]
    assert a["large_utilization"] == 0.5 and a["ideal_speedup"] == pytest.approx(1 / 0.6, abs=1e-3)
    assert a["relay_over_ideal"] == pytest.approx(2.5 * 0.6, abs=1e-3)
    # b: the relay wrote half the tokens, so per-token speedup (1.0) differs from wall speedup (2.0).
    assert b["runs"] == 1 and b["speedup"] == [2.0, 0.0] and b["per_token_speedup"] == [1.0, 0.0]
    assert b["large_utilization"] == 0.8
    o = s["overall"]
    assert o["problems"] == 2 and o["speedup"][0] == pytest.approx(2.25)
    assert o["large_utilization"] == pytest.approx(140 / 250, abs=1e-3)  # every relay run, token-weighted
    assert o["ideal_speedup"] == pytest.approx(bl.ideal_speedup(140 / 250, 0.2), abs=1e-3)
    md = bl.markdown_bench(s)
    assert md.startswith("| problem | runs | large-only s | relay s |")
    assert "| a | 2 | 11.000 ± 1.414 | 4.500 ± 0.707 | 100 / 100 | 2.500 ± 0.707 |" in md
    assert "**all 2**" in md and "t_small/t_large 0.2000" in md


def test_plot_writes_a_png(tmp_path: Path):
    rows = [rec("a", 0, "large_only", 10.0, 100, 100), rec("a", 0, "relay", 5.0, 100, 50)]
    bl.plot_bench(bl.summarize_bench(rows, PROBES), tmp_path / "speedup.png")
    assert (tmp_path / "speedup.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_without_probes_has_no_ideal():
    s = bl.summarize_bench([rec("a", 0, "large_only", 2.0, 10, 10), rec("a", 0, "relay", 1.0, 10, 5)], {})
    assert s["problems"][0]["ideal_speedup"] is None and s["decode_probe"] is None
    assert "Decode probe" not in bl.markdown_bench(s)


def test_call_ratio_reads_call_records_and_rows_from_before_them():
    calls = [
        {"runtime": "large", "latency_s": 5.0, "completion_tokens": 60},
        {"runtime": "small", "latency_s": 1.0, "completion_tokens": 40},
    ]
    expected = (1 / 40) / (5 / 60)
    assert bl.call_ratio([{"calls": 2, "call_records": calls}]) == pytest.approx(expected)
    assert bl.call_ratio([{"calls": calls}]) == pytest.approx(expected)  # an older runs.jsonl row
    assert bl.call_ratio([{"calls": 1, "call_records": calls[:1]}]) is None  # no small-model call
