"""Relay throughput with 1 vs 2 large replicas, measured in one run (interleaved).

Starts two large SGLang workers behind an sglang-router and one small worker (the tiny
test pair by default, or --large-model/--small-model).  Each round runs the same relays
(same prompts, same seeds) --concurrency at a time in both arms:

* ``1 replica``: every relay's large calls go to large worker 0 (a plain runtime URL);
* ``2 replicas``: the relay is given the router URL, so each relay request stays on one
  of the two workers (``AsyncRelayPair.client_for``), the requests spread over both.

Prefix caches are flushed before each arm's turn and the arm order alternates per round,
so drift (other jobs on the machine, warm-up) hits both arms alike.  It prints a table
and the numbers as JSON.  On a machine with fewer cores than workers it need not scale:
it reports what it measured.

    python -m evals.bench_replicas --rounds 3 --requests 32 --json runs/replicas.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

from relaygen_sgl.profile import CueProfile
from relaygen_sgl.relay import AsyncRelayPair, RelayConfig, RelayError, RelayResult, prepare, run
from relaygen_sgl.runtime.client import RuntimeClient
from relaygen_sgl.runtime.pool import RuntimePool, start_pools
from relaygen_sgl.testing.tiny_models import build_tiny_pair, default_tiny_dir, tiny_profile

ARMS = ("1 replica", "2 replicas")


def _messages(i: int) -> list[dict[str, str]]:
    # Distinct prompts: requests must not share a prefix beyond the chat template.
    return [{"role": "user", "content": f"What is {12 + i} + {30 + 7 * i}?"}]


def _cache_ratios(r: RelayResult) -> list[float]:
    """cached_tokens / that runtime's previous context, for every call but each runtime's first."""
    seen: dict[str, int] = {}
    out = []
    for c in r.stats.calls:
        if c.role in seen and seen[c.role]:
            out.append(c.cached_tokens / seen[c.role])
        seen[c.role] = c.prompt_tokens + c.kept_tokens
    return out


async def _run_arm(
    pair: AsyncRelayPair, profile: CueProfile, requests: int, concurrency: int, max_tokens: int, seed: int
) -> tuple[list[RelayResult], int, float]:
    """All relays of one arm's turn; returns the results, how many failed, and the wall time."""
    gate = asyncio.Semaphore(concurrency)
    failed = 0

    async def one(i: int) -> RelayResult | None:
        nonlocal failed
        async with gate:
            cfg = RelayConfig(max_tokens=max_tokens, sampling={"temperature": 0.8, "sampling_seed": seed + i})
            try:
                m = await prepare(pair, cfg, messages=_messages(i), profile=profile)
                return await run(m, pair)
            except RelayError:
                failed += 1
                return None

    t0 = time.perf_counter()
    try:
        results = await asyncio.gather(*(one(i) for i in range(requests)))
    finally:
        await pair.aclose()
    return [r for r in results if r is not None], failed, time.perf_counter() - t0


def _flush(*pools: RuntimePool) -> None:
    """Empty every worker's prefix cache."""
    for url in [u for pool in pools for u in pool.worker_urls]:
        client = RuntimeClient(url)
        try:
            client.flush_cache()
        finally:
            client.close()


def _summary(turns: list[dict[str, Any]]) -> dict[str, Any]:
    results = [r for t in turns for r in t["results"]]
    tokens = sum(r.stats.output_tokens for r in results)
    wall = sum(t["wall_s"] for t in turns)
    ratios = [x for r in results for x in _cache_ratios(r)]
    return {
        "rounds": len(turns),
        "requests": len(results),
        "failed": sum(t["failed"] for t in turns),
        "output_tokens": tokens,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 2) if wall else None,
        "requests_per_s": round(len(results) / wall, 3) if wall else None,
        "mean_latency_s": round(statistics.mean(r.stats.latency_s for r in results), 2) if results else None,
        "switches_per_request": round(sum(r.stats.switches for r in results) / len(results), 2)
        if results
        else 0,
        "repeat_call_cache_hit_mean": round(statistics.mean(ratios), 3) if ratios else None,
        "repeat_call_cache_hit_min": round(min(ratios), 3) if ratios else None,
        "tokens_per_s_by_round": [
            round(sum(r.stats.output_tokens for r in t["results"]) / t["wall_s"], 2) for t in turns
        ],
    }


def _table(arms: dict[str, dict[str, Any]]) -> str:
    cols = [
        "requests",
        "failed",
        "output_tokens",
        "wall_s",
        "tokens_per_s",
        "requests_per_s",
        "mean_latency_s",
        "switches_per_request",
        "repeat_call_cache_hit_min",
    ]
    lines = ["| arm | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, s in arms.items():
        lines.append(f"| {name} | " + " | ".join(str(s[c]) for c in cols) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--large-model", help="HF folder of the large model (default: the tiny pair)")
    p.add_argument("--small-model", help="HF folder of the small model (default: the tiny pair)")
    p.add_argument("--profile", help="cue profile (default: the tiny pair's cue list)")
    p.add_argument(
        "--tiny-dir",
        default=str(default_tiny_dir()),
        help="default: $RELAYGEN_TINY_DIR or ~/.cache/relaygen/tiny",
    )
    p.add_argument("--rounds", type=int, default=3, help="rounds; each runs both arms (default: %(default)s)")
    p.add_argument("--requests", type=int, default=32, help="relays per arm and round (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=16, help="relays in flight (default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=200)
    p.add_argument("--max-total-tokens", type=int, default=8192, help="KV-cache tokens per worker")
    p.add_argument("--startup-timeout", type=float, default=900.0)
    p.add_argument("--log-dir", default=None)
    p.add_argument("--json", help="also write the numbers to this file")
    args = p.parse_args(argv)
    if args.large_model and args.small_model:
        large_model, small_model = args.large_model, args.small_model
    else:
        tiny = build_tiny_pair(args.tiny_dir)
        large_model, small_model = str(tiny.large), str(tiny.small)
    profile = CueProfile.load(args.profile) if args.profile else tiny_profile()
    common = {
        "max_total_tokens": args.max_total_tokens,
        "startup_timeout": args.startup_timeout,
        "log_dir": args.log_dir,
    }
    large = RuntimePool(large_model, replicas=2, name="large", **common)
    small = RuntimePool(small_model, replicas=1, name="small", **common)
    start_pools(large, small)
    try:
        pairs = {
            "1 replica": lambda: AsyncRelayPair(large.worker_urls[0], small.url),
            "2 replicas": lambda: AsyncRelayPair(large.url, small.url),
        }
        for arm in ARMS:  # warm-up: tokenizers, first-request paths, on every worker
            asyncio.run(_run_arm(pairs[arm](), profile, 4, 4, 16, seed=10_000))
        turns: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
        for rnd in range(args.rounds):
            for arm in ARMS if rnd % 2 == 0 else ARMS[::-1]:
                _flush(large, small)
                results, failed, wall = asyncio.run(
                    _run_arm(
                        pairs[arm](),
                        profile,
                        args.requests,
                        args.concurrency,
                        args.max_tokens,
                        seed=rnd * 1000,
                    )
                )
                turns[arm].append({"results": results, "failed": failed, "wall_s": wall})
                tps = sum(r.stats.output_tokens for r in results) / wall
                print(
                    f"round {rnd + 1}/{args.rounds} {arm}: {tps:.1f} tokens/s, {wall:.1f}s, {failed} failed",
                    flush=True,
                )
    finally:
        large.stop()
        small.stop()
    arms = {arm: _summary(t) for arm, t in turns.items()}
    one, two = arms["1 replica"]["tokens_per_s"], arms["2 replicas"]["tokens_per_s"]
    by_round = [
        b / a
        for a, b in zip(
            arms["1 replica"]["tokens_per_s_by_round"],
            arms["2 replicas"]["tokens_per_s_by_round"],
            strict=True,
        )
        if a
    ]
    out = {
        "config": {
            "rounds": args.rounds,
            "requests": args.requests,
            "concurrency": args.concurrency,
            "max_tokens": args.max_tokens,
            "large_model": large_model,
            "small_model": small_model,
        },
        "arms": arms,
        "speedup_2_over_1": round(two / one, 3) if one and two else None,
        "speedup_by_round": [round(x, 3) for x in by_round],
    }
    print(_table(arms))
    print(
        f"2 replicas / 1 replica throughput: {out['speedup_2_over_1']} (by round: {out['speedup_by_round']})"
    )
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
