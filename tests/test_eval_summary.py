"""Eval summaries from hand-written result rows (no servers; the run_eval loop is in test_evals)."""

from __future__ import annotations

from typing import Any

import pytest

from evals.run_eval import sample_seed
from evals.summary import bootstrap_ci, markdown, per_problem_accuracy, summarize


def row(mode: str, pid: str, correct: bool, sample: int | None = 0, **kw: Any) -> dict[str, Any]:
    r = {
        "mode": mode,
        "id": pid,
        "correct": correct,
        "latency_s": 2.0,
        "output_tokens": 100,
        "large_tokens": 100 if mode == "large_only" else 40,
        "small_tokens": 0,
        "switches": 0,
        **kw,
    }
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
    tp = {
        "relay": {"wall_s": 10.0, "generations": 3, "output_tokens": 300, "concurrency": 4, "complete": True}
    }
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


def test_paired_differences_and_discordant_counts():
    # Problems p0..p9: large-only right on 0-5, relay on 0-4 and 7, random switching on 0-2.
    rows = [row("large_only", f"p{i}", i <= 5) for i in range(10)]
    rows += [row("relay", f"p{i}", i <= 4 or i == 7) for i in range(10)]
    rows += [row("random_switch", f"p{i}", i <= 2) for i in range(10)]
    s = summarize(rows, ["large_only", "relay", "random_switch"])
    by = {(d["a"], d["b"]): d for d in s["paired"]}
    assert set(by) == {("relay", "large_only"), ("random_switch", "large_only"), ("relay", "random_switch")}
    d = by[("relay", "large_only")]
    assert d["problems"] == 10 and d["difference"] == 0.0
    assert (d["a_only_right"], d["b_only_right"]) == (1, 1)  # p7 against p5
    d = by[("relay", "random_switch")]
    assert d["difference"] == 0.3 and (d["a_only_right"], d["b_only_right"]) == (3, 0)
    assert d["ci95"][0] >= 0  # relay never loses a problem to random switching here
    assert "| relay - random_switch | 10 | +0.300 |" in markdown(s)


def test_operating_points_are_compared_with_their_own_control():
    modes = ["large_only", "relay@2", "random_switch@2", "relay@8"]
    rows = [row(m, f"p{i}", True) for m in modes for i in range(3)]
    pairs = {(d["a"], d["b"]) for d in summarize(rows, modes)["paired"]}
    assert ("relay@2", "random_switch@2") in pairs and ("relay@8", "large_only") in pairs
    assert not any(b == "random_switch@8" for _, b in pairs)  # no control ran at K=8


def test_mode_labels_name_operating_points():
    from evals.run_eval import variant
    from relaygen_sgl.profile import CueProfile, ProfileError

    prof = CueProfile.from_dict(
        {
            "large_model": "l",
            "small_model": "s",
            "cues": ["So"],
            "ranking": [{"text": "So"}, {"text": "Wait,"}],
        }
    )
    assert variant("relay", prof) == ("relay", prof)
    mode, top = variant("random_switch@2", prof)
    assert mode == "random_switch" and top.cue_texts == ["So", "Wait,"]
    bad_labels = (("relay@x", "only relay@K"), ("large_only@2", "only relay@K"), ("relax", "unknown mode"))
    for bad, msg in bad_labels:
        with pytest.raises(ValueError, match=msg):
            variant(bad, prof)
    with pytest.raises(ProfileError, match="from 1 to 2"):
        variant("relay@3", prof)


def test_the_frontier_counts_only_modes_that_answered_every_problem():
    from evals.frontier import frontier

    ids = ["p0", "p1", "p2"]
    rows = [row(m, i, True) for m in ("large_only", "relay@1", "small_only") for i in ids]
    rows += [row("relay@4", "p0", True), row("relay@1", "p9", False)]  # partial; outside the first 3
    s = frontier(rows, ids)
    assert [m["mode"] for m in s["modes"]] == ["large_only", "small_only", "relay@1"]
    assert s["incomplete_modes"] == {"relay@4": 1} and s["problems"] == 3
