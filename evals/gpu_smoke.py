"""GPU smoke test: the tiny pair on CUDA, relay and large-only, and speculative decoding.

Needs no network: it builds the tiny test pair locally, starts both SGLang runtimes with
``--device cuda`` (sharing one GPU, so the memory split is exercised), runs the relay and
the large-only baseline, then restarts the large runtime with SGLang's STANDALONE
speculative decoding (the tiny small model as the draft; both share a tokenizer) and
relays again: the cue ``stop_regex`` must still fire with several tokens accepted per step.
Prints a pass/fail table and exits 1 on any failure.

    python -m evals.gpu_smoke [--out runs/gpu_smoke]
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from relaygen_sgl.launch_options import Speculative, resolve_device
from relaygen_sgl.profile import CueProfile
from relaygen_sgl.relay import RelayConfig, RelayPair, relay_generate
from relaygen_sgl.runtime.pool import RuntimePair
from relaygen_sgl.testing.tiny_models import build_tiny_pair, default_tiny_dir, tiny_profile

QUESTION = [{"role": "user", "content": "What is 12 + 30?"}]


def _relay(pair: RelayPair, profile: CueProfile, mode: str, seeds: range) -> list[Any]:
    configs = [
        RelayConfig(mode=mode, max_tokens=200, sampling={"temperature": 0.8, "sampling_seed": s})  # type: ignore[arg-type]
        for s in seeds
    ]
    return [relay_generate(messages=QUESTION, large=pair, config=c, profile=profile) for c in configs]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default="runs/gpu_smoke")
    p.add_argument(
        "--tiny-dir",
        default=str(default_tiny_dir()),
        help="default: $RELAYGEN_TINY_DIR or ~/.cache/relaygen/tiny",
    )
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, bool, str]] = []

    def check(name: str, fn: Callable[[], str]) -> None:
        try:
            rows.append((name, True, fn()))
        except Exception as e:  # noqa: BLE001 - a smoke table reports every failure and goes on
            rows.append((name, False, f"{type(e).__name__}: {e}"))
            traceback.print_exc()

    device = resolve_device("auto")
    rows.append(("torch sees CUDA", device == "cuda", f"device auto -> {device}"))
    tiny = build_tiny_pair(args.tiny_dir)
    profile = tiny_profile()
    if device == "cuda":
        with RuntimePair(tiny.large, tiny.small, device="cuda", log_dir=out / "logs") as rp:
            pair = RelayPair(rp.large, rp.small)

            def relay() -> str:
                rs = _relay(pair, profile, "relay", range(4))
                switches = sum(r.stats.switches for r in rs)
                assert switches > 0, "no switch in 4 runs"
                return f"{switches} switches in 4 runs, handoff {rs[0].stats.handoff}"

            def large_only() -> str:
                (r,) = _relay(pair, profile, "large_only", range(1))
                assert r.stats.output_tokens > 0 and r.stats.small_tokens == 0
                return f"{r.stats.output_tokens} tokens"

            fractions = [pool.workers[0].mem_fraction_static for pool in (rp.large, rp.small)]
            split = f"large {fractions[0]}, small {fractions[1]}"
            check(f"shared GPU split ({split})", lambda: "both runtimes healthy")
            check("relay on CUDA", relay)
            check("large-only on CUDA", large_only)
        spec = Speculative("standalone", str(tiny.small), num_steps=3, eagle_topk=1, num_draft_tokens=4)
        spec_pair = RuntimePair(
            tiny.large, tiny.small, device="cuda", speculative=spec, log_dir=out / "logs-spec"
        )
        with spec_pair as rp:
            pair = RelayPair(rp.large, rp.small)

            def speculative() -> str:
                rs = _relay(pair, profile, "relay", range(4))
                switches = sum(r.stats.switches for r in rs)
                accept = [r.stats.spec_accept_length for r in rs if r.stats.spec_accept_length]
                assert switches > 0, "no cue fired under speculative decoding"
                assert accept, "the large runtime reported no spec_accept_length"
                for r in rs:  # a cue must end its large segment exactly, even with multi-token accepts
                    for seg in r.segments:
                        if seg.cue:
                            assert profile.matcher().last(seg.text[-24:]) is not None
                return f"{switches} switches, accept length {sum(accept) / len(accept):.2f}"

            check("relay with STANDALONE speculative large", speculative)
    print("| check | result | detail |\n|---|---|---|")
    for name, ok, detail in rows:
        print(f"| {name} | {'PASS' if ok else 'FAIL'} | {detail} |")
    table = [{"check": n, "pass": ok, "detail": d} for n, ok, d in rows]
    (out / "gpu_smoke.json").write_text(json.dumps(table, indent=2))
    return 0 if all(ok for _, ok, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
