"""End-to-end calibration on the tiny pair: real servers, real files, resumable steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from relaygen_sgl.calibration.calibrate import calibrate
from relaygen_sgl.calibration.io import CalibrationInputError, load_problems
from relaygen_sgl.calibration.traces import generate_traces
from relaygen_sgl.profile import CueProfile
from relaygen_sgl.relay import RelayConfig, relay_generate
from relaygen_sgl.runtime.process import free_port

PROBLEMS = [f"What is {a} + {b}?" for a, b in ((12, 30), (7, 8), (21, 21), (5, 9), (33, 4), (2, 2))]


def _write_problems(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"problem": p}) + "\n" for p in PROBLEMS[:n]))
    return path


def test_calibration_produces_a_profile_the_runtime_loads(runtimes, tmp_path: Path):
    problems = _write_problems(tmp_path / "cal.jsonl", 3)
    cues = tmp_path / "cues.txt"
    cues.write_text("So\nTherefore,\nThus\nNow,\nWait,\nAlternatively,\nSimilarly,\nLet me\n# a comment\n")
    res = calibrate(
        large=runtimes.large.url,
        small=runtimes.small.url,
        out_dir=tmp_path / "out",
        problems_path=problems,
        cues_file=cues,
        samples=2,
        seed=1,
        max_tokens=160,
        min_count=1,
        n_boot=100,
        large_name="tiny-large",
        small_name="tiny-small",
        show_progress=False,
    )
    out = tmp_path / "out"
    for name in (
        "profile.json",
        "cue_report.csv",
        "cue_report.md",
        "cue_deltas.png",
        "margins.png",
        "traces.jsonl",
        "scores.jsonl",
    ):
        assert (out / name).stat().st_size > 0, name
    assert (out / "cue_deltas.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    traces = [json.loads(x) for x in (out / "traces.jsonl").read_text().splitlines()]
    assert len(traces) == 6 and len({t["id"] for t in traces}) == 6
    scores = [json.loads(x) for x in (out / "scores.jsonl").read_text().splitlines()]
    for s in scores:
        assert len(s["margins"]) == len(s["offsets"]) > 0
        assert all(-1e-6 <= m <= 1 + 1e-6 for m in s["margins"])
    # Which cues the sampled traces hold is the model's affair (test_cue_statistics_of_known_traces
    # counts known ones); whatever was kept makes the profile.
    profile = CueProfile.load(res.files["profile"])
    assert profile.large_model == "tiny-large" and profile.provenance["source"] == "calibrated"
    assert profile.cue_texts == [s.cue for s in res.stats if s.kept]
    assert all(s.delta > 0 for s in res.stats if s.kept)
    # The runtime takes the profile as it is.
    r = relay_generate(
        messages=[{"role": "user", "content": PROBLEMS[0]}],
        large=runtimes.large,
        small=runtimes.small,
        profile=profile,
        config=RelayConfig(max_tokens=60),
    )
    assert r.stats.output_tokens > 0
    # Re-running finds everything done and gives the same profile.
    again = calibrate(
        large=runtimes.large.url,
        small=runtimes.small.url,
        out_dir=out,
        problems_path=problems,
        cues_file=cues,
        samples=2,
        seed=1,
        max_tokens=160,
        min_count=1,
        n_boot=100,
        large_name="tiny-large",
        small_name="tiny-small",
        show_progress=False,
    )
    assert again.profile == res.profile


def test_cue_statistics_of_known_traces(runtimes, tmp_path: Path):
    """Traces written here, so their cues are known: every occurrence is counted, and each
    segment is scored by the real small model (teacher-forced)."""
    reasoning = (
        "<think>\nLet me think about 12 and 30. So 12 + 30 = 42. Therefore, the sum is 42. "
        "Wait, let me check. So the total is 42.\n</think>"
    )
    traces = tmp_path / "traces.jsonl"
    traces.write_text(
        "".join(
            json.dumps({"id": f"t{i}", "problem": p, "reasoning": reasoning}) + "\n"
            for i, p in enumerate(PROBLEMS[:3])
        )
    )
    cues = tmp_path / "cues.txt"
    cues.write_text("So\nTherefore,\nWait,\nThus\n")
    res = calibrate(
        large=None,
        small=runtimes.small.url,
        out_dir=tmp_path / "out",
        traces_path=traces,
        cues_file=cues,
        min_count=1,
        n_boot=100,
        large_name="tiny-large",
        small_name="tiny-small",
        show_progress=False,
    )
    assert {s.cue: s.count for s in res.stats} == {"So": 6, "Therefore,": 3, "Wait,": 3}
    assert all(0 <= s.segment_margin <= 1 and 0 <= s.elsewhere_margin <= 1 for s in res.stats)
    assert CueProfile.load(res.files["profile"]).cue_texts == [s.cue for s in res.stats if s.kept]


# Every trace runs to max_tokens (ignore_eos): the run is long by construction, so it is still
# going when two traces are saved.
KILLABLE = """
import sys
from relaygen_sgl.calibration.traces import generate_traces
generate_traces({problems!r}, {url!r}, {path!r}, samples=1, max_tokens=120, threads=1,
                sampling={{"temperature": 0, "ignore_eos": True}})
"""


def test_trace_generation_resumes_after_a_kill(runtimes, tmp_path: Path):
    path = tmp_path / "traces.jsonl"
    code = KILLABLE.format(problems=PROBLEMS, url=runtimes.large.url, path=str(path))
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (path.exists() and len(path.read_text().splitlines()) >= 2):
            assert proc.poll() is None, "the trace run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    before = path.read_text().splitlines()
    before = [ln for ln in before if ln.endswith("}")]
    assert 2 <= len(before) < len(PROBLEMS)
    rows = generate_traces(
        PROBLEMS,
        runtimes.large.url,
        path,
        max_tokens=120,
        threads=1,
        sampling={"temperature": 0, "ignore_eos": True},
    )
    lines = path.read_text().splitlines()
    assert lines[: len(before)] == before  # nothing finished was lost or rewritten
    ids = [json.loads(x)["id"] for x in lines]
    assert len(ids) == len(set(ids)) == len(PROBLEMS)  # no duplicates
    clean = generate_traces(
        PROBLEMS,
        runtimes.large.url,
        tmp_path / "clean.jsonl",
        max_tokens=120,
        threads=1,
        sampling={"temperature": 0, "ignore_eos": True},
    )
    assert [r["reasoning"] for r in rows] == [r["reasoning"] for r in clean]


def test_bad_calibration_inputs_are_clear(tmp_path: Path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(CalibrationInputError, match="empty"):
        load_problems(empty)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "ok"}\n{"question": "no"}\n')
    with pytest.raises(CalibrationInputError, match=r"bad.jsonl:2: .*'problem'"):
        load_problems(bad)
    with pytest.raises(CalibrationInputError, match="not found"):
        load_problems(tmp_path / "nope.jsonl")
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionError, match="not reachable"):
        calibrate(
            large=dead,
            small=dead,
            out_dir=tmp_path / "o",
            problems_path=_write_problems(tmp_path / "p.jsonl", 2),
            show_progress=False,
        )
    assert not (tmp_path / "o" / "traces.jsonl").exists()


def test_calibrate_cli_help_documents_every_option():
    out = subprocess.run(
        [sys.executable, "-m", "relaygen_sgl.cli", "calibrate", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for opt in (
        "--problems",
        "--traces",
        "--cues-file",
        "--large-url",
        "--small-url",
        "--large-model",
        "--small-model",
        "--samples",
        "--seed",
        "--max-tokens",
        "--temperature",
        "--top-p",
        "--top-k",
        "--segment-span",
        "--threads",
        "--threshold",
        "--min-count",
        "--bootstrap",
        "--min-large-tokens",
        "--max-small-tokens",
        "--out",
        "--device",
        "--dtype",
        "--max-total-tokens",
        "--large-sglang-args",
        "--small-sglang-args",
        "--speculative",
        "--log-dir",
        "--startup-timeout",
    ):
        assert opt in out
