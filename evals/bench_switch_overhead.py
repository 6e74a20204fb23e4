"""Switch overhead: relay wall time vs large-only for the same output tokens, in one run.

By default it builds the tiny test pair and starts two SGLang servers on them;
pass --large-url/--small-url to measure running servers instead.

    python -m evals.bench_switch_overhead --requests 8
"""

from __future__ import annotations

import argparse
import json
import statistics
from contextlib import ExitStack
from pathlib import Path

from relaygen_sgl.pair_args import add_runtime_args, pair_from_args
from relaygen_sgl.profile import CueProfile
from relaygen_sgl.relay import RelayConfig, RelayPair, RelayResult, relay_generate
from relaygen_sgl.testing.tiny_models import build_tiny_pair, default_tiny_dir, tiny_profile


def reprefill_per_switch(r: RelayResult) -> list[int]:
    """Tokens each runtime had to prefill on every call after its first one."""
    seen: set[str] = set()
    out = []
    for call in r.stats.calls:
        if call.role in seen:
            out.append(call.prompt_tokens - call.cached_tokens)
        seen.add(call.role)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--large-url")
    p.add_argument("--small-url")
    p.add_argument("--profile", help="cue profile (default: the tiny pair's cue list)")
    p.add_argument(
        "--tiny-dir",
        default=str(default_tiny_dir()),
        help="default: $RELAYGEN_TINY_DIR or ~/.cache/relaygen/tiny",
    )
    p.add_argument("--requests", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=300)
    p.add_argument("--json", help="also write the numbers to this file")
    add_runtime_args(p)
    args = p.parse_args(argv)
    profile = CueProfile.load(args.profile) if args.profile else tiny_profile()
    with ExitStack() as stack:
        if args.large_url and args.small_url:
            pair = RelayPair(args.large_url, args.small_url)
        else:
            tiny = build_tiny_pair(args.tiny_dir)
            rts = stack.enter_context(pair_from_args(args, tiny.large, tiny.small))
            pair = RelayPair(rts.large, rts.small)
        stack.callback(pair.close)
        messages = [{"role": "user", "content": "What is 12 + 30?"}]
        # Warm both runtimes (tokenizers, first-request compile paths) before timing.
        relay_generate(messages=messages, large=pair, config=RelayConfig(max_tokens=16), profile=profile)
        rows = []
        for i in range(args.requests):
            sampling = {"temperature": 0.8, "sampling_seed": i}
            relay = relay_generate(
                messages=messages,
                large=pair,
                profile=profile,
                config=RelayConfig(max_tokens=args.max_tokens, sampling=sampling),
            )
            n = relay.stats.output_tokens
            # Same token count: the baseline ignores EOS and stops at the relay's length.
            fixed = {**sampling, "ignore_eos": True}
            base = relay_generate(
                messages=messages,
                large=pair,
                config=RelayConfig(mode="large_only", max_tokens=n, sampling=fixed),
            )
            rows.append((relay, base))
    result = overhead(rows)
    print("| metric | value |\n|---|---|")
    for k, v in result.items():
        print(f"| {k} | {v} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def overhead(rows: list[tuple[RelayResult, RelayResult]]) -> dict[str, object]:
    """The table, from each (relay, large-only) pair's :meth:`RelayStats.summary`."""
    relay = [r.stats.summary() for r, _ in rows]
    base = [b.stats.summary() for _, b in rows]
    relay_s, base_s = sum(s["latency_s"] for s in relay), sum(s["latency_s"] for s in base)
    tokens = sum(s["output_tokens"] for s in relay)
    reprefill = [x for r, _ in rows for x in reprefill_per_switch(r)]
    return {
        "requests": len(rows),
        "relay_tokens": tokens,
        "large_only_tokens": sum(s["output_tokens"] for s in base),
        "relay_wall_s": round(relay_s, 3),
        "large_only_wall_s": round(base_s, 3),
        "relay_over_large_only": round(relay_s / base_s, 3) if base_s else None,
        "switches": sum(s["switches"] for s in relay),
        "large_utilization": round(sum(s["large_tokens"] for s in relay) / tokens, 3) if tokens else 0.0,
        "reprefill_tokens_per_switch_call": round(statistics.mean(reprefill), 2) if reprefill else 0,
        "relay_calls": sum(s["calls"] for s in relay),
    }


if __name__ == "__main__":
    raise SystemExit(main())
