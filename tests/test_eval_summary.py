"""Eval summaries from hand-written result rows (no servers; the run_eval loop is in test_evals)."""

from __future__ import annotations

from typing import Any

from evals.run_eval import sample_seed
from evals.summary import bootstrap_ci, markdown, per_problem_accuracy, summarize


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


def test_sample_seeds_depend_on_problem_and_sample_only():
    assert sample_seed(0, 2, 0) == 2  # sample 0 keeps the greedy protocol's seed + i
    seeds = {sample_seed(5, i, k) for i in range(3) for k in range(4)}
    assert len(seeds) == 12


def test_problems_without_an_answer_count_but_are_not_graded():
    rows = [row("relay", "a", True), row("relay", "b", False), row("relay", "c", None)]
    (m,) = summarize(rows, ["relay"])["modes"]
    assert m["problems"] == 3 and m["n"] == 3 and m["ungraded"] == 1 and m["accuracy"] == 0.5
    md = markdown(summarize(rows, ["relay"]))
    assert "no answer to check (run and timed, not in pass@1): relay 1." in md
    (m,) = summarize([row("relay", "c", None)], ["relay"])["modes"]
    assert m["accuracy"] is None and m["ci95"] is None
