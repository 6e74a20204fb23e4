"""bench_latency's maths and loop, with stand-in runtimes (no servers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from evals import bench_latency as bl
from evals.datasets import Problem
from relaygen_sgl.relay import CallRecord, RelayResult, RelayStats
from relaygen_sgl.runtime_client import GenerateResult


def test_ideal_speedup():
    assert bl.ideal_speedup(1.0, 0.1) == 1.0  # all large: nothing to gain
    assert bl.ideal_speedup(0.0, 0.1) == pytest.approx(10.0)  # all small: the cost ratio
    assert bl.ideal_speedup(0.5, 0.1) == pytest.approx(1 / 0.55)


def test_mean_std_is_the_sample_std():
    assert bl.mean_std([2.0]) == (2.0, 0.0)
    m, s = bl.mean_std([1.0, 2.0, 3.0])
    assert m == 2.0 and s == pytest.approx(1.0)


def rec(problem: str, run: int, mode: str, latency: float, tokens: int, large: int, **kw: Any) -> dict:
    return {"problem": problem, "run": run, "mode": mode, "latency_s": latency, "output_tokens": tokens,
            "large_tokens": large, "small_tokens": tokens - large, "switches": 2, **kw}  # fmt: skip


PROBES = {"start": {"large": {"per_token_s": 0.10}, "small": {"per_token_s": 0.01}},
          "end": {"large": {"per_token_s": 0.10}, "small": {"per_token_s": 0.03}}}  # fmt: skip


def test_summary_per_problem_overall_and_ideal():
    rows = [
        rec("a", 0, "large_only", 10.0, 100, 100), rec("a", 0, "relay", 5.0, 100, 50),
        rec("a", 1, "large_only", 12.0, 100, 100), rec("a", 1, "relay", 4.0, 100, 50),
        rec("b", 0, "large_only", 8.0, 100, 100), rec("b", 0, "relay", 4.0, 50, 40),
        rec("b", 1, "relay", 9.0, 100, 50),  # its large_only partner is missing: not paired
    ]  # fmt: skip
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


def test_summary_without_probes_has_no_ideal():
    s = bl.summarize_bench([rec("a", 0, "large_only", 2.0, 10, 10), rec("a", 0, "relay", 1.0, 10, 5)], {})
    assert s["problems"][0]["ideal_speedup"] is None and s["decode_probe"] is None
    assert "Decode probe" not in bl.markdown_bench(s)


class FakeClient:
    def __init__(self, name: str, per_token_s: float) -> None:
        self.name, self.per_token_s, self.flushes = name, per_token_s, 0

    def generate(self, *, text: str, sampling_params: dict[str, Any]) -> GenerateResult:
        n = sampling_params["max_new_tokens"]
        return GenerateResult("x" * n, [], 5, n, 0, "length", None, 0.5 + n * self.per_token_s)

    def flush_cache(self) -> None:
        self.flushes += 1


def test_run_bench_interleaves_modes_probes_and_resumes(monkeypatch, tmp_path: Path):
    clients = {"large": FakeClient("large", 0.1), "small": FakeClient("small", 0.02)}
    monkeypatch.setattr("relaygen_sgl.runtime_client.RuntimeClient.of",
                        classmethod(lambda cls, rt, name=None: clients[name]))  # fmt: skip
    calls: list[tuple[str, int, int]] = []

    def fake_relay(**kw: Any) -> RelayResult:
        calls.append((kw["mode"], kw["sampling"].get("sampling_seed"), kw["max_tokens"]))
        relay = kw["mode"] == "relay"
        st = RelayStats(mode=kw["mode"], handoff="ids", large_tokens=60 if relay else 100,
                        small_tokens=40 if relay else 0, latency_s=6.0 if relay else 10.0)  # fmt: skip
        st.calls = [CallRecord("large", "reasoning", 5, 0, st.large_tokens, st.large_tokens, 5.0)]
        if relay:
            st.calls.append(CallRecord("small", "finish", 5, 0, 40, 40, 1.0))
        return RelayResult(text="", segments=[], stats=st)

    monkeypatch.setattr("relaygen_sgl.relay.relay_generate", fake_relay)
    problems = [Problem(f"p{i}", "q", "1") for i in range(2)]
    kw = dict(large="L", small="S", profile=None, out_dir=tmp_path, runs=2, max_tokens=100,
              sampling={"temperature": 0.6}, probe_tokens=11, probe_reps=2, show_progress=False)  # fmt: skip
    s = bl.run_bench(problems, **kw)
    timed = [c for c in calls if c[2] == 100]
    assert len(calls) - len(timed) == 2  # one warm-up per mode
    # Mode order alternates per (run, problem); both modes share each (problem, run)'s seed.
    assert [m for m, _, _ in timed] == ["large_only", "relay", "relay", "large_only",
                                        "relay", "large_only", "large_only", "relay"]  # fmt: skip
    assert timed[0][1] == timed[1][1] and timed[0][1] != timed[2][1]
    assert clients["large"].flushes == 8  # before every timed request
    probe = json.loads((tmp_path / "probe.json").read_text())
    assert probe["start"]["large"]["per_token_s"] == pytest.approx(0.1)
    assert s["decode_probe"]["small_over_large"] == pytest.approx(0.2)
    assert s["overall"]["speedup"][0] == pytest.approx(10 / 6, abs=1e-3)
    assert s["overall"]["ideal_speedup"] == pytest.approx(1 / (0.6 + 0.4 * 0.2), abs=1e-3)
    assert s["call_level_small_over_large"] == pytest.approx((1 / 40) / (5 / 60), abs=1e-3)
    assert (tmp_path / "bench.md").read_text().startswith("| problem |")
    assert json.loads((tmp_path / "bench.json").read_text())["config"]["batch"] == 1
    # Resume: all done, nothing runs (no warm-up either).
    n = len(calls)
    bl.run_bench(problems, **kw)
    assert len(calls) == n
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 8
