"""The demo's rendering and speed line (pure), then the demo itself on the tiny pair (server)."""

from __future__ import annotations

import argparse
import io
import json

import pytest

from relaygen_sgl.demo import (
    DEMO_PROBLEMS,
    format_speed,
    legend,
    pick_problems,
    render,
    speed_summary,
    use_colour,
)
from relaygen_sgl.problem_sets import DatasetError, load_problems
from relaygen_sgl.relay import RelayStats, Segment

SEGMENTS = [
    Segment("large", "reasoning", "We add 12 and 30. So", 6, cue="So"),
    Segment("small", "finish", " the sum is 42.", 5),
    Segment("large", "reasoning", "<think>", 1),
    Segment("large", "reasoning", " Done", 1),
    Segment("small", "answer", "", 0),
    Segment("small", "answer", " \\boxed{42}", 4),
]


def test_tags_mark_each_models_part():
    assert render(SEGMENTS, colour=False) == (
        "[L]We add 12 and 30. So[S] the sum is 42.[L]<think> Done[S] \\boxed{42}"
    )
    assert legend(False) == "[L] large model  [S] small model"


def test_colour_marks_each_models_part():
    out = render(SEGMENTS[:2], colour=True)
    assert out == "\x1b[1;34mWe add 12 and 30. So\x1b[0m\x1b[32m the sum is 42.\x1b[0m"
    assert "[L]" not in out


def test_colour_only_on_a_terminal(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_colour("auto", Tty()) and not use_colour("auto", io.StringIO())
    assert use_colour("always", io.StringIO()) and not use_colour("never", Tty())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_colour("auto", Tty())


def stats(large: int, small: int, latency: float) -> dict:
    return RelayStats(
        mode="relay", handoff="ids", large_tokens=large, small_tokens=small, latency_s=latency
    ).summary()


def test_speed_line_from_both_passes():
    relay = [stats(60, 40, 10.0), stats(30, 70, 20.0)]
    base = [stats(100, 0, 30.0), stats(100, 0, 30.0)]
    s = speed_summary(relay, base, relay_wall_s=20.0, base_wall_s=30.0)
    assert s["large_utilization"] == 0.45 and s["speedup"] == 2.0 and s["per_token_speedup"] == 1.5
    line = format_speed(s, 2)
    assert "speedup 2.0x over the large model alone" in line and "utilization 45.0%" in line
    only = speed_summary(relay, [], 20.0, 0.0)
    assert "speedup" not in only and "speedup" not in format_speed(only, 2)


def test_the_demo_runs_its_chosen_problems_unless_told_otherwise():
    gsm = load_problems("gsm8k")

    def pick(dataset: str = "gsm8k", problems: int | None = None, ids: list[str] | None = None) -> list[str]:
        args = argparse.Namespace(dataset=dataset, problems=problems, ids=ids)
        return [p.id for p in pick_problems(gsm, args)]

    assert pick() == list(DEMO_PROBLEMS)
    assert pick(problems=2) == [gsm[0].id, gsm[1].id]
    assert pick(ids=["gsm8k-400"]) == ["gsm8k-400"]
    assert pick(dataset="jsonl:sums.jsonl") == [p.id for p in gsm[:3]]  # another set: its first three
    with pytest.raises(DatasetError, match="gsm8k has no problem gsm8k-0"):
        pick(ids=["gsm8k-0"])


def test_demo_on_tiny_pair(runtimes, tiny_profile, tmp_path, capsys):
    """SERVER TEST: both passes, all problems in flight on one event loop, then the speed line."""
    from relaygen_sgl.cli import main

    data = tmp_path / "sums.jsonl"
    data.write_text(
        "".join(
            json.dumps({"problem": f"What is {a} + {b}?", "answer": str(a + b)}) + "\n"
            for a, b in ((12, 30), (7, 8))
        )
    )
    argv = [
        "demo",
        "--large-url",
        runtimes.large.url,
        "--small-url",
        runtimes.small.url,
        "--profile",
        str(tiny_profile.save(tmp_path / "tiny.json")),
        "--dataset",
        f"jsonl:{data}",
        "--problems",
        "2",
        "--max-tokens",
        "40",
        "--color",
        "never",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("--- output ---") == 2 and "[L]" in out and "(expected 42)" in out
    assert "relaygen: " in out and "/2 right; large model alone: " in out
    assert "large-model utilization" in out and "2 in flight, measured in this run" in out
