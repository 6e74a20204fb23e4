"""SERVER TEST (tiny pair, real SGLang runtimes): bench_latency end to end, then resumed."""

from __future__ import annotations

import json
from pathlib import Path

from evals import bench_latency

TINY_CUES = ["So", "Therefore,", "Thus", "Now,", "Wait,", "Alternatively,", "Similarly,"]


def test_bench_latency_smoke_on_tiny_pair(runtimes, tmp_path: Path):
    data = tmp_path / "sums.jsonl"
    data.write_text("".join(json.dumps({"problem": f"What is {a} + {b}?", "answer": str(a + b)}) + "\n"
                            for a, b in ((12, 30), (7, 8))))  # fmt: skip
    profile = tmp_path / "tiny.json"
    profile.write_text(json.dumps({"large_model": "tiny-large", "small_model": "tiny-small",
                                   "cues": TINY_CUES}))  # fmt: skip
    out = tmp_path / "bench"
    argv = ["--dataset", f"jsonl:{data}", "--problems", "2", "--runs", "2", "--max-tokens", "48",
            "--probe-tokens", "16", "--probe-reps", "2", "--large-url", runtimes.large.url,
            "--small-url", runtimes.small.url, "--profile", str(profile), "--out", str(out)]  # fmt: skip
    assert bench_latency.main(argv) == 0
    rows = [json.loads(x) for x in (out / "runs.jsonl").read_text().splitlines()]
    assert sorted((r["problem"], r["run"], r["mode"]) for r in rows) == sorted(
        (p, r, m) for p in ("sums-1", "sums-2") for r in (0, 1) for m in ("large_only", "relay"))
    assert all(0 < r["output_tokens"] <= 48 and r["latency_s"] > 0 for r in rows)
    summary = json.loads((out / "bench.json").read_text())
    o = summary["overall"]
    assert o["problems"] == 2 and o["speedup"][0] > 0 and 0 <= o["large_utilization"] <= 1
    probe = summary["decode_probe"]
    assert probe["t_large_s"] > 0 and probe["t_small_s"] > 0 and o["ideal_speedup"] > 0
    assert (out / "bench.md").read_text().startswith("| problem |")
    assert bench_latency.main(argv) == 0  # resumed: nothing left to time
    assert len((out / "runs.jsonl").read_text().splitlines()) == 8
