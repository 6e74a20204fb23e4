"""SERVER TESTS (tiny pair, real SGLang runtimes): sets built on disk as parquet, CSV, JSON and a
save_to_disk folder, run through run_eval and `relaygen calibrate`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_problem_sets import GPQA, ROWS, datasets_cache, write_sets  # noqa: F401 (autouse fixture)

from evals.datasets import load_dataset
from evals.run_eval import run_eval


@pytest.mark.parametrize("kind", ["parquet", "csv", "json", "disk"])
def test_run_eval_on_every_format(kind: str, runtimes, tiny_profile, tmp_path: Path):
    problems = load_dataset(f"{kind}:{write_sets(tmp_path / 'data')[kind]}")
    out = tmp_path / "run"
    summary = run_eval(
        problems,
        large=runtimes.large.url,
        small=runtimes.small.url,
        profile=tiny_profile,
        modes=["large_only", "relay"],
        out_dir=out,
        max_tokens=24,
        show_progress=False,
        dataset=kind,
    )
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    prefix = "saved" if kind == "disk" else "set"
    assert sorted((r["mode"], r["id"]) for r in rows) == sorted(
        (m, f"{prefix}-{i}") for m in ("large_only", "relay") for i in (1, 2, 3)
    )
    for r in rows:  # the row without an answer ran, and is not graded
        answered = not r["id"].endswith("-3")
        assert r["expected"] == ({"1": "42", "2": "15"}[r["id"][-1]] if answered else None)
        assert isinstance(r["correct"], bool) if answered else r["correct"] is None
        assert r["output_tokens"] > 0
    for m in summary["modes"]:
        assert m["problems"] == 3 and m["n"] == 3 and m["ungraded"] == 1
        graded = [r["correct"] for r in rows if r["mode"] == m["mode"] and r["correct"] is not None]
        assert len(graded) == 2 and m["accuracy"] == pytest.approx(sum(graded) / 2, abs=1e-4)
    assert "relay 1" in (out / "summary.md").read_text()


def test_run_eval_on_a_multiple_choice_set(runtimes, tiny_profile, tmp_path: Path):
    problems = load_dataset(str(write_sets(tmp_path / "data", GPQA[:3])["parquet"]))
    out = tmp_path / "run"
    run_eval(
        problems,
        large=runtimes.large.url,
        small=runtimes.small.url,
        profile=tiny_profile,
        modes=["small_only"],
        out_dir=out,
        max_tokens=24,
        show_progress=False,
    )
    rows = {r["id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert set(rows) == {"rec0", "rec1", "rec2"}
    for p in problems:
        r = rows[p.id]
        assert r["expected"] == p.answer and r["expected"] in "ABCD"
        assert r["predicted"] is None or r["predicted"] in "ABCD"  # a letter or nothing, never a number
        assert r["correct"] is (r["predicted"] == p.answer)


def test_calibrate_cli_on_a_saved_dataset(runtimes, tmp_path: Path, capsys):
    from relaygen_sgl.cli import main

    saved = write_sets(tmp_path / "data")["disk"]
    cues = tmp_path / "cues.txt"
    cues.write_text("So\nTherefore,\nThus\nNow,\nWait,\nLet me\n")
    out = tmp_path / "calib"
    argv = [
        "calibrate",
        "--problems",
        f"disk:{saved}",
        "--question-field",
        "Problem",
        "--cues-file",
        str(cues),
        "--large-url",
        runtimes.large.url,
        "--small-url",
        runtimes.small.url,
        "--samples",
        "1",
        "--max-tokens",
        "48",
        "--min-count",
        "1",
        "--bootstrap",
        "20",
        "--threads",
        "2",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    traces = [json.loads(x) for x in (out / "traces.jsonl").read_text().splitlines()]
    assert sorted(t["problem"] for t in traces) == sorted(r["Problem"] for r in ROWS)
    profile = json.loads((out / "profile.json").read_text())
    assert profile["provenance"]["calibration_set"] == f"disk:{saved}"
    assert "cue_report.md" in capsys.readouterr().out
