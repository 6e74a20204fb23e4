"""SERVER TESTS (tiny pair, real SGLang runtimes): bench_latency end to end, then resumed; the
switch-overhead bench."""

from __future__ import annotations

import json
from pathlib import Path

from evals import bench_latency, bench_switch_overhead


def _rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "runs.jsonl").read_text().splitlines()]


def test_bench_latency_interleaves_flushes_and_resumes_on_tiny_pair(runtimes, tiny_profile, tmp_path: Path):
    data = tmp_path / "sums.jsonl"
    data.write_text(
        "".join(
            json.dumps({"problem": f"What is {a} + {b}?", "answer": str(a + b)}) + "\n"
            for a, b in ((12, 30), (7, 8))
        )
    )
    profile = tiny_profile.save(tmp_path / "tiny.json")
    out = tmp_path / "bench"
    common = [
        "--dataset",
        f"jsonl:{data}",
        "--max-tokens",
        "48",
        "--probe-tokens",
        "16",
        "--probe-reps",
        "1",
        "--large-url",
        runtimes.large.url,
        "--small-url",
        runtimes.small.url,
        "--profile",
        str(profile),
    ]
    argv = [*common, "--problems", "2", "--runs", "2", "--out", str(out)]
    assert bench_latency.main(argv) == 0
    rows = _rows(out)
    # In the order they ran: the mode going first alternates per (run, problem) ...
    L, R = "large_only", "relay"  # noqa: N806
    assert [(r["run"], r["problem"], r["mode"]) for r in rows] == [
        (0, "sums-1", L),
        (0, "sums-1", R),
        (0, "sums-2", R),
        (0, "sums-2", L),
        (1, "sums-1", R),
        (1, "sums-1", L),
        (1, "sums-2", L),
        (1, "sums-2", R),
    ]
    # ... both modes of a (problem, run) share its seed, and every timed request met cold caches.
    seeds = {(r["problem"], r["run"]): set() for r in rows}
    for r in rows:
        seeds[(r["problem"], r["run"])].add(r["seed"])
    assert all(len(s) == 1 for s in seeds.values()) and len({s.pop() for s in seeds.values()}) == 4
    assert all(r["call_records"][0]["cached_tokens"] == 0 for r in rows)
    assert all(0 < r["output_tokens"] <= 48 and r["latency_s"] > 0 and r["calls"] >= 1 for r in rows)
    summary = json.loads((out / "bench.json").read_text())
    o = summary["overall"]
    assert o["problems"] == 2 and o["speedup"][0] > 0 and 0 <= o["large_utilization"] <= 1
    probe = summary["decode_probe"]
    assert probe["t_large_s"] > 0 and probe["t_small_s"] > 0 and o["ideal_speedup"] > 0
    assert summary["call_level_small_over_large"] is None or summary["call_level_small_over_large"] > 0
    assert (out / "bench.md").read_text().startswith("| problem |")
    # Resumed with everything done: nothing is timed or probed again.
    files = {f: (out / f).read_bytes() for f in ("runs.jsonl", "probe.json")}
    assert bench_latency.main(argv) == 0
    assert {f: (out / f).read_bytes() for f in files} == files
    # Killed mid-write: the cut line is dropped and only the missing runs are timed again.
    lines = (out / "runs.jsonl").read_text().splitlines()
    (out / "runs.jsonl").write_text("\n".join(lines[:5]) + "\n" + lines[5][:20])
    assert bench_latency.main(argv) == 0
    again = (out / "runs.jsonl").read_text().splitlines()
    assert again[:5] == lines[:5] and len(again) == 8
    assert [(r["run"], r["problem"], r["mode"]) for r in map(json.loads, again[5:])] == [
        (r["run"], r["problem"], r["mode"]) for r in rows[5:]
    ]
    # Without flushing, the warm-up has cached the prompt the first timed request sends.
    warm = tmp_path / "warm"
    assert (
        bench_latency.main([*common, "--problems", "1", "--runs", "1", "--no-flush", "--out", str(warm)]) == 0
    )
    assert all(r["call_records"][0]["cached_tokens"] > 0 for r in _rows(warm))


def test_switch_overhead_bench_on_tiny_pair(runtimes, tmp_path: Path):
    out = tmp_path / "overhead.json"
    argv = [
        "--large-url",
        runtimes.large.url,
        "--small-url",
        runtimes.small.url,
        "--requests",
        "2",
        "--max-tokens",
        "40",
        "--json",
        str(out),
    ]
    assert bench_switch_overhead.main(argv) == 0
    res = json.loads(out.read_text())
    assert res["requests"] == 2 and 0 < res["relay_tokens"] <= 80
    assert res["large_only_tokens"] == res["relay_tokens"]  # the baseline stops at the relay's length
    assert res["relay_calls"] >= 2 and 0 < res["large_utilization"] <= 1
