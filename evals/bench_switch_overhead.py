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

from relaygen_sgl.profile import CueProfile
from relaygen_sgl.relay import RelayResult, relay_generate
from relaygen_sgl.runtimes import RuntimePair
from relaygen_sgl.tiny_models import build_tiny_pair

TINY_CUES = ["So", "Therefore,", "Thus", "Now,", "Wait,", "Alternatively,", "Similarly,"]


def reprefill_per_switch(r: RelayResult) -> list[int]:
    """Tokens each runtime had to prefill on every call after its first one."""
    seen: set[str] = set()
    out = []
    for call in r.stats.calls:
        if call.runtime in seen:
            out.append(call.prompt_tokens - call.cached_tokens)
        seen.add(call.runtime)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--large-url")
    p.add_argument("--small-url")
    p.add_argument("--profile", help="cue profile (default: the tiny pair's cue list)")
    p.add_argument("--tiny-dir", default=str(Path.home() / ".cache" / "relaygen" / "tiny"))
    p.add_argument("--requests", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=300)
    p.add_argument("--json", help="also write the numbers to this file")
    args = p.parse_args(argv)
    profile = (
        CueProfile.load(args.profile)
        if args.profile
        else CueProfile.from_dict(
            {"large_model": "tiny-large", "small_model": "tiny-small", "cues": TINY_CUES}
        )  # fmt: skip
    )
    with ExitStack() as stack:
        if args.large_url and args.small_url:
            large, small = args.large_url, args.small_url
        else:
            tiny = build_tiny_pair(args.tiny_dir)
            pair = stack.enter_context(RuntimePair(tiny.large, tiny.small))
            large, small = pair.large, pair.small
        messages = [{"role": "user", "content": "What is 12 + 30?"}]
        # Warm both runtimes (tokenizers, first-request compile paths) before timing.
        relay_generate(messages=messages, large=large, small=small, profile=profile, max_tokens=16)
        rows = []
        for i in range(args.requests):
            sampling = {"temperature": 0.8, "sampling_seed": i}
            relay = relay_generate(messages=messages, large=large, small=small, profile=profile,
                                   sampling=sampling, max_tokens=args.max_tokens)  # fmt: skip
            n = relay.stats.output_tokens
            # Same token count: the baseline ignores EOS and stops at the relay's length.
            fixed = {**sampling, "ignore_eos": True}
            base = relay_generate(messages=messages, large=large, small=small,
                                  mode="large_only", sampling=fixed, max_tokens=n)  # fmt: skip
            rows.append((relay, base))
    relay_s = sum(r.stats.latency_s for r, _ in rows)
    base_s = sum(b.stats.latency_s for _, b in rows)
    tokens = sum(r.stats.output_tokens for r, _ in rows)
    base_tokens = sum(b.stats.output_tokens for _, b in rows)
    switches = sum(r.stats.switches for r, _ in rows)
    reprefill = [x for r, _ in rows for x in reprefill_per_switch(r)]
    result = {
        "requests": len(rows),
        "relay_tokens": tokens,
        "large_only_tokens": base_tokens,
        "relay_wall_s": round(relay_s, 3),
        "large_only_wall_s": round(base_s, 3),
        "relay_over_large_only": round(relay_s / base_s, 3) if base_s else None,
        "switches": switches,
        "large_utilization": round(sum(r.stats.large_tokens for r, _ in rows) / tokens, 3),
        "reprefill_tokens_per_switch_call": round(statistics.mean(reprefill), 2) if reprefill else 0,
        "relay_calls": sum(len(r.stats.calls) for r, _ in rows),
    }
    print("| metric | value |\n|---|---|")
    for k, v in result.items():
        print(f"| {k} | {v} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
