"""Eval summaries and the run_eval loop with a stand-in for relay_generate (no servers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import evals.run_eval as run_eval_mod
from evals.datasets import Problem
from evals.run_eval import run_eval, sample_seed
from evals.summary import bootstrap_ci, markdown, per_problem_accuracy, summarize
from relaygen_sgl.profile import CueProfile
from relaygen_sgl.relay import RelayResult, RelayStats

PROFILE = CueProfile.from_dict({"large_model": "L", "small_model": "S", "cues": ["So"]})


def row(mode: str, pid: str, correct: bool, sample: int | None = 0, **kw: Any) -> dict[str, Any]:
    r = {"mode": mode, "id": pid, "correct": correct, "latency_s": 2.0, "output_tokens": 100,
         "large_tokens": 100 if mode == "large_only" else 40, "small_tokens": 0, "switches": 0,
         **kw}  # fmt: skip
    if sample is not None:
        r["sample"] = sample
    return r


def test_pass_at_1_is_the_mean_over_samples_then_problems():
    rows = [row("relay", "a", c, k) for k, c in enumerate((True, True, False, False))]
    rows += [row("relay", "b", c, k) for k, c in enumerate((True, True, True, True))]
    assert per_problem_accuracy(rows) == {"a": 0.5, "b": 1.0}
    (m,) = summarize(rows, ["relay"])["modes"]
    assert m["accuracy"] == 0.75 and m["problems"] == 2 and m["samples_per_problem"] == 4 and m["n"] == 8


def test_bootstrap_ci_resamples_problems():
    assert bootstrap_ci([1.0]) is None  # one problem: no interval
    assert bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)
    lo, hi = bootstrap_ci([0.0, 0.25, 0.5, 1.0, 1.0, 0.0, 0.75, 0.5])
    assert lo < 0.5 < hi and 0.0 <= lo and hi <= 1.0
    assert bootstrap_ci([0.0, 0.25, 0.5, 1.0]) == bootstrap_ci([0.0, 0.25, 0.5, 1.0])  # seeded


def test_summary_carries_speed_truncation_and_throughput():
    rows = [row("large_only", p, True, latency_s=4.0) for p in "abc"]
    rows += [row("relay", p, p != "c", latency_s=2.0, truncated=p == "c") for p in "abc"]
    tp = {"relay": {"wall_s": 10.0, "generations": 3, "output_tokens": 300, "concurrency": 4,
                    "complete": True}}  # fmt: skip
    s = summarize(rows, ["large_only", "relay"], tp)
    base, relay = s["modes"]
    assert base["speedup_vs_large_only"] == 1.0 and relay["speedup_vs_large_only"] == 2.0
    assert relay["large_utilization"] == 0.4 and base["large_utilization"] == 1.0
    assert relay["truncated"] == 1 and base["truncated"] == 0
    assert relay["tokens_per_s"] == 30.0 and relay["problems_per_s"] == 0.3
    assert relay["throughput_concurrency"] == 4 and base["tokens_per_s"] is None
    assert "bootstrap over problems" in s["ci"]["method"]
    md = markdown(s)
    assert md.startswith("| mode | problems | samples | pass@1 | 95% CI |")
    assert "| relay | 3 | 1 | 0.6667 |" in md


def test_rows_from_before_samples_and_truncation_still_summarize():
    old = [row("relay", p, True, sample=None) for p in "ab"]  # no "sample", no "truncated"
    (m,) = summarize(old, ["relay"])["modes"]
    assert m["accuracy"] == 1.0 and m["truncated"] == 0 and m["samples_per_problem"] == 1


class FakeRelay:
    """Stands in for relay_generate: answers right on even seeds, and records each call."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kw: Any) -> RelayResult:
        self.calls.append(kw)
        st = RelayStats(mode=kw["mode"], handoff="ids", large_tokens=8, small_tokens=2, latency_s=0.01,
                        finish_reason="stop")  # fmt: skip
        if kw["mode"] == "large_only":
            st.large_tokens, st.small_tokens = 10, 0
        ans = "42" if kw["seed"] % 2 == 0 else "41"
        return RelayResult(text=f"<think>try \\boxed{{42}}</think>\\boxed{{{ans}}}", segments=[], stats=st)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeRelay:
    f = FakeRelay()
    monkeypatch.setattr(run_eval_mod, "relay_generate", f)
    monkeypatch.setattr(run_eval_mod, "templated_prompts", lambda large, small: lambda mode, p: "")
    return f


PROBLEMS = [Problem(f"p{i}", f"What is {i}?", "42") for i in range(3)]


def test_paper_protocol_samples_k_seeded_and_resumes(fake: FakeRelay, tmp_path: Path):
    kw = dict(large="L", small="S", profile=PROFILE, modes=["large_only", "relay"], out_dir=tmp_path,
              protocol="paper", show_progress=False)  # fmt: skip
    s = run_eval(PROBLEMS, **kw)
    assert len(fake.calls) == 2 * 3 * 4
    c = fake.calls[0]
    assert {k: c["sampling"][k] for k in ("temperature", "top_p", "top_k")} == {
        "temperature": 0.6, "top_p": 0.95, "top_k": 20}  # fmt: skip
    seeds = {(c["mode"], c["seed"]) for c in fake.calls}
    assert len(seeds) == 24  # every (problem, sample) its own seed ...
    assert {c["seed"] for c in fake.calls if c["mode"] == "relay"} == {
        c["seed"] for c in fake.calls if c["mode"] == "large_only"}  # ... the same in every mode  # fmt: skip
    assert sample_seed(0, 2, 0) == 2  # sample 0 keeps the greedy protocol's seed + i
    rows = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert sorted({(r["mode"], r["id"], r["sample"]) for r in rows}) == sorted(
        (m, p.id, k) for m in ("large_only", "relay") for p in PROBLEMS for k in range(4))
    assert all(r["thinking"] and not r["truncated"] for r in rows)
    relay = next(m for m in s["modes"] if m["mode"] == "relay")
    # Right exactly on even seeds: the answer part decides, not the \boxed{} in the reasoning.
    expected = sum(sample_seed(0, i, k) % 2 == 0 for i in range(3) for k in range(4)) / 12
    assert relay["accuracy"] == pytest.approx(expected, abs=1e-4) and relay["samples_per_problem"] == 4
    assert s["config"]["protocol"] == "paper" and s["config"]["samples"] == 4
    assert relay["tokens_per_s"] is not None and relay["throughput_complete"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["modes"] == s["modes"] and summary["ci"]["level"] == 0.95
    # Resume: nothing left to do; more samples only run the new ones.
    n = len(fake.calls)
    assert run_eval(PROBLEMS, **kw)["modes"] == s["modes"] and len(fake.calls) == n
    run_eval(PROBLEMS, **{**kw, "samples": 5})
    assert len(fake.calls) == n + 2 * 3


def test_greedy_protocol_reads_old_results_files(fake: FakeRelay, tmp_path: Path):
    # A results.jsonl written before samples and truncation flags (keys: mode + id).
    old = {"mode": "relay", "id": "p0", "expected": "42", "latency_s": 1.0, "output_tokens": 5,
           "large_tokens": 3, "small_tokens": 2, "switches": 1, "seed": 0, "finish_reason": "length",
           "concurrency": 1, "output": "<think>\\boxed{42} and then", "predicted": "42",
           "correct": True}  # fmt: skip
    (tmp_path / "results.jsonl").write_text(json.dumps(old) + "\n")
    s = run_eval(PROBLEMS, large="L", small="S", profile=PROFILE, modes=["relay"], out_dir=tmp_path,
                 show_progress=False)  # fmt: skip
    assert len(fake.calls) == 2  # p0 was done; p1, p2 ran
    assert [c["sampling"] for c in fake.calls] == [{"temperature": 0.0, "sampling_seed": s} for s in (1, 2)]
    (relay,) = s["modes"]
    assert relay["n"] == 3 and relay["truncated"] == 1  # the old row, regraded: no answer part
    assert relay["accuracy"] == pytest.approx(1 / 3, abs=1e-4)  # p2 (seed 2) right; old p0 now wrong
    assert (tmp_path / "results.jsonl").read_text().splitlines()[0] == json.dumps(old)  # left as it was


def test_throughput_mode_runs_many_in_flight(fake: FakeRelay, tmp_path: Path):
    s = run_eval(PROBLEMS, large="L", small="S", profile=PROFILE, modes=["large_only", "relay"],
                 out_dir=tmp_path, throughput=True, show_progress=False)  # fmt: skip
    tp = json.loads((tmp_path / "throughput.json").read_text())
    assert tp["relay"]["concurrency"] == 16 and tp["relay"]["generations"] == 3
    assert tp["relay"]["output_tokens"] == 30 and tp["large_only"]["complete"]
    assert all(m["tokens_per_s"] > 0 and m["problems_per_s"] > 0 for m in s["modes"])
    assert s["config"]["throughput"] is True
