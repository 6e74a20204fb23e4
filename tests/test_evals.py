"""Eval pipeline on a 3-problem tiny-model run, answer checking, offline datasets."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from evals.datasets import load_dataset
from evals.run_eval import EvalIncomplete, run_eval, sample_seed
from relaygen_sgl.grading import extract_answer, is_correct
from relaygen_sgl.relay import RelayPair, RelayStats

SUMMARY_FIELDS = set(RelayStats(mode="relay", handoff="ids").summary())


@pytest.mark.parametrize(
    "output,expected,right",
    [
        ("<think>12+30</think>\n\nThe answer is \\boxed{42}.", "42", True),
        ("The answer is \\boxed{41}.", "42", False),
        ("So the total is 1,234 dollars.", "1234", True),
        ("\\boxed{\\frac{1}{2}}", "0.5", True),
        ("<think>maybe 42</think> I am not sure.", "42", False),  # only the answer part counts
        ("no number here", "7", False),
        ("so \\boxed{2^{n-1}}", "2^(n-1)", True),  # CHAMP writes plain-text expressions
        ("\\boxed{\\binom{10}{5}}", "252", True),
        ("\\boxed{2^{n}}", "2^(n-1)", False),
    ],
)
def test_answer_checking(output: str, expected: str, right: bool):
    assert is_correct(output, expected) is right


def test_extract_answer():
    assert extract_answer("so \\boxed{70}") == "70"
    assert extract_answer("nothing") is None


def test_offline_datasets_load():
    gsm = load_dataset("gsm8k")
    assert len(gsm) == 100 and all(p.answer for p in gsm)
    assert gsm[0].problem.endswith("?") and gsm[0].answer == "10"
    aime = load_dataset("aime25", limit=5)
    assert len(aime) == 5 and aime[0].answer == "70"
    champ = {p.id: p for p in load_dataset("champ")}
    assert len(champ) == 136 and "@@" not in champ["P_Combinatorics_2"].problem
    assert champ["P_Combinatorics_2"].answer == "252"  # "@@C(10, 5)@@, or equivalently @@252@@"
    assert "P_Combinatorics_1" in champ and not any("No such" in p.answer for p in champ.values())
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("mmlu")


def _sums(tmp_path: Path) -> Path:
    data = tmp_path / "sums.jsonl"
    data.write_text(
        "".join(
            json.dumps({"problem": f"What is {a} + {b}?", "answer": str(a + b)}) + "\n"
            for a, b in ((12, 30), (7, 8), (21, 21))
        )
    )
    return data


def test_eval_pipeline_on_three_problems(runtimes, tiny_profile, tmp_path: Path):
    problems = load_dataset(f"jsonl:{_sums(tmp_path)}")
    out = tmp_path / "run"
    kw = dict(
        large=runtimes.large.url,
        small=runtimes.small.url,
        profile=tiny_profile,
        out_dir=out,
        modes=["large_only", "relay", "random_switch", "small_only"],
        max_tokens=150,
        temperature=0.8,
        seed=1,
        show_progress=False,
    )
    summary = run_eval(problems, **kw)
    rows = {r["mode"]: r for r in summary["modes"]}
    assert set(rows) == {"large_only", "small_only", "relay", "random_switch"}
    assert rows["large_only"]["speedup_vs_large_only"] == 1.0
    assert rows["large_only"]["large_utilization"] == 1.0 and rows["small_only"]["large_utilization"] == 0
    for r in rows.values():
        assert r["n"] == 3 and 0 <= r["accuracy"] <= 1
    assert (out / "summary.md").read_text().startswith("| mode |")
    assert json.loads((out / "summary.json").read_text())["config"]["seed"] == 1
    assert (out / "accuracy_vs_speedup.png").read_bytes()[:4] == b"\x89PNG"
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 12
    # Resumable: a rerun finds everything done and appends nothing.
    again = run_eval(problems, **kw)
    assert (out / "results.jsonl").read_text().splitlines() == lines
    assert again["modes"] == summary["modes"]
    # A run of some modes under another summary name (nothing new to run) keeps this summary.
    before = (out / "summary.md").read_text()
    some = run_eval(problems, **{**kw, "modes": ["relay"]}, summary_name="points")
    assert [r["mode"] for r in some["modes"]] == ["relay"]
    assert (out / "summary.md").read_text() == before
    assert (out / "points.md").read_text().startswith("| mode |")
    assert (out / "points_accuracy_vs_speedup.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_keeps_going_when_a_runtime_is_down_and_a_rerun_fills_the_gaps(
    runtimes, tiny_profile, tmp_path: Path
):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    problems = load_dataset("jsonl:" + str(_sums(tmp_path)))
    kw = dict(
        small=runtimes.small.url,
        profile=tiny_profile,
        out_dir=tmp_path / "run",
        modes=["small_only", "large_only"],
        max_tokens=40,
        show_progress=False,
    )
    with pytest.raises(EvalIncomplete, match=r"(?s)3 problem\(s\) failed.*large_only/sums-1") as err:
        run_eval(problems, large=dead, **kw)
    assert "rerun the same command" in str(err.value)
    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert sorted(r["mode"] for r in rows) == ["small_only"] * 3  # the finished work is kept
    summary = run_eval(problems, large=runtimes.large.url, **kw)
    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert sorted((r["mode"], r["id"]) for r in rows) == sorted({(r["mode"], r["id"]) for r in rows})
    assert len(rows) == 6  # no duplicates, nothing lost
    assert {r["mode"]: r["n"] for r in summary["modes"]} == {"large_only": 3, "small_only": 3}


def test_paper_protocol_and_throughput_on_three_problems(runtimes, tiny_profile, tmp_path: Path):
    """SERVER TEST: k samples per problem at the paper's sampling, seeded per (problem, sample) alike
    in every mode, in flight together on one pair, throughput per mode, resumable."""
    problems = load_dataset(f"jsonl:{_sums(tmp_path)}")
    out = tmp_path / "paper"
    pair = RelayPair(runtimes.large.url, runtimes.small.url)
    # ignore_eos: every generation is 60 tokens, so four in flight overlap by construction.
    kw = dict(
        large=pair,
        profile=tiny_profile,
        out_dir=out,
        modes=["large_only", "relay"],
        max_tokens=60,
        protocol="paper",
        samples=2,
        throughput=True,
        concurrency=4,
        show_progress=False,
        ignore_eos=True,
    )
    summary = run_eval(problems, **kw)
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((r["mode"], r["id"], r["sample"]) for r in rows) == sorted(
        (m, p.id, k) for m in ("large_only", "relay") for p in problems for k in range(2)
    )
    index = {p.id: i for i, p in enumerate(problems)}
    assert all(r["seed"] == sample_seed(0, index[r["id"]], r["sample"]) for r in rows)  # mode-free
    assert all(
        r["sampling"] == {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "ignore_eos": True} for r in rows
    )
    assert all(r["output_tokens"] == 60 for r in rows)
    assert all("truncated" in r and "thinking" in r and SUMMARY_FIELDS <= set(r) for r in rows)
    tp = json.loads((out / "throughput.json").read_text())
    for m in summary["modes"]:
        assert m["problems"] == 3 and m["samples_per_problem"] == 2 and m["tokens_per_s"] > 0
        assert m["throughput_concurrency"] == 4 and m["throughput_complete"]
        # Four in flight on one event loop: the requests overlapped, so their latencies sum past the wall.
        assert sum(r["latency_s"] for r in rows if r["mode"] == m["mode"]) > tp[m["mode"]]["wall_s"]
    assert json.loads((out / "summary.json").read_text())["config"]["protocol"] == "paper"
    lines = (out / "results.jsonl").read_text().splitlines()
    again = run_eval(problems, **kw)
    assert (out / "results.jsonl").read_text().splitlines() == lines and again["modes"] == summary["modes"]
    # One more sample runs only the new one, per problem and mode.
    more = run_eval(problems, **{**kw, "samples": 3})
    now = (out / "results.jsonl").read_text().splitlines()
    added = sorted((r["mode"], r["sample"]) for r in map(json.loads, now[12:]))
    assert now[:12] == lines and added == [("large_only", 2)] * 3 + [("relay", 2)] * 3
    # The whole-mode throughput measurement stands; the piece does not replace it.
    assert all(m["samples_per_problem"] == 3 and m["throughput_complete"] for m in more["modes"])


def test_greedy_protocol_regrades_old_results_files(runtimes, tiny_profile, tmp_path: Path):
    """SERVER TEST: a results.jsonl from before samples and truncation flags (keys: mode + id) is
    resumed, its row regraded by the current rules and left as it was on disk."""
    problems = load_dataset(f"jsonl:{_sums(tmp_path)}")
    old = {
        "mode": "relay",
        "id": "sums-1",
        "expected": "42",
        "latency_s": 1.0,
        "output_tokens": 5,
        "large_tokens": 3,
        "small_tokens": 2,
        "switches": 1,
        "seed": 0,
        "finish_reason": "length",
        "concurrency": 1,
        "output": "<think>\\boxed{42} and then",
        "predicted": "42",
        "correct": True,
    }
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.jsonl").write_text(json.dumps(old) + "\n")
    s = run_eval(
        problems,
        large=runtimes.large.url,
        small=runtimes.small.url,
        profile=tiny_profile,
        modes=["relay"],
        out_dir=out,
        max_tokens=40,
        throughput=True,
        show_progress=False,
    )
    lines = (out / "results.jsonl").read_text().splitlines()
    assert lines[0] == json.dumps(old)  # left as it was
    new = [json.loads(x) for x in lines[1:]]
    assert sorted((r["id"], r["seed"]) for r in new) == [("sums-2", 1), ("sums-3", 2)]
    assert all(r["sampling"] == {"temperature": 0.0} and r["concurrency"] == 16 for r in new)
    (relay,) = s["modes"]
    # The old row, regraded: its reasoning never closed, so it has no answer: wrong and truncated.
    assert relay["n"] == 3 and relay["truncated"] == 1 + sum(r["truncated"] for r in new)
    assert relay["accuracy"] == pytest.approx(sum(r["correct"] for r in new) / 3, abs=1e-4)
    assert relay["throughput_concurrency"] == 16 and not relay["throughput_complete"]  # resumed in pieces
