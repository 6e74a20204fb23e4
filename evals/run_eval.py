"""Batch evaluation of RelayGen against its baselines, measured side by side in one run.

    python -m evals.run_eval --dataset gsm8k --limit 20 --modes large_only relay \\
        --large-url http://127.0.0.1:30000 --small-url http://127.0.0.1:30001 --out runs/gsm8k

Protocols: ``greedy`` (the default: temperature 0, one sample per problem) and ``paper``
(T 0.6 / top_p 0.95 / top_k 20, ``--samples 4``; pass@1 is the mean over samples).  Every
mode runs after the previous one at the same ``--concurrency`` with both runtimes up, so
each gets the same hardware; ``--throughput`` runs them with many requests in flight and
reports tokens/s and problems/s per mode.

Writes ``results.jsonl`` (one record per mode x problem x sample; rerunning skips the finished
ones), ``throughput.json``, ``summary.json``, ``summary.md`` and ``accuracy_vs_speedup.png``.
``random_switch`` is the control: it switches at random positions at the switch rate the relay
run measured, so it runs after ``relay``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack, aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from evals.datasets import SPEC_HELP, DatasetError, Problem, load_dataset, unanswered_note
from evals.summary import markdown, plot, summarize
from relaygen_sgl.concurrency import bounded
from relaygen_sgl.grading import THINKING_CHOICES, grade, templated_prompts, thinks
from relaygen_sgl.jsonl import repair_jsonl
from relaygen_sgl.pair_args import add_pair_args, open_pair, profile_from_args
from relaygen_sgl.problem_sets import add_field_args, field_kwargs
from relaygen_sgl.profile import CueProfile
from relaygen_sgl.relay import MODES, RelayConfig, RelayError, RelayPair, relay_generate_async

__all__ = ["EvalIncomplete", "PROTOCOLS", "markdown", "run_eval", "summarize"]


class EvalIncomplete(RuntimeError):
    """Some problems failed; the rest are saved and a rerun retries only the failed ones."""


ORDER = {m: i for i, m in enumerate(("large_only", "small_only", "relay", "random_switch"))}


def variant(label: str, profile: CueProfile) -> tuple[str, CueProfile]:
    """``"relay"`` -> (relay, profile); ``"relay@4"`` -> (relay, the profile's best 4 cues)."""
    mode, _, k = label.partition("@")
    if mode not in MODES:
        raise ValueError(f"unknown mode {label!r}: choose {', '.join(MODES)}, or relay@K / random_switch@K")
    if not k:
        return mode, profile
    if mode not in ("relay", "random_switch") or not k.isdigit():
        raise ValueError(f"{label!r}: only relay@K and random_switch@K take a cue count K (an integer)")
    return mode, profile.top_cues(int(k))


def _order(label: str) -> tuple[int, int]:
    mode, _, k = label.partition("@")
    return ORDER[mode], int(k or 0)


# The paper samples at the reference's get_sampling_params (Qwen3); greedy is this repo's default.
PROTOCOLS: dict[str, dict[str, Any]] = {
    "greedy": {"temperature": 0.0, "top_p": None, "top_k": None, "samples": 1},
    "paper": {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "samples": 4},
}
SAMPLE_STRIDE = 1_000_003  # sample k of problem i gets seed + i + k * stride; sample 0 keeps seed + i
THROUGHPUT_CONCURRENCY = 16


def sample_seed(seed: int, i: int, k: int) -> int:
    return seed + i + k * SAMPLE_STRIDE


def _key(row: dict[str, Any]) -> tuple[str, str, int]:
    return row["mode"], row["id"], int(row.get("sample", 0))  # rows from before samples are sample 0


def _grade(
    rec: dict[str, Any], p: Problem | None, thinking: str, prompt: Callable[[str, Problem], str]
) -> None:
    templated = prompt(rec["mode"], p) if thinking == "auto" and p is not None else ""
    think = thinks(thinking, rec["output"], templated)
    g = grade(
        rec["output"],
        rec["expected"],
        thinking=think,
        finish_reason=rec.get("finish_reason"),
        choices=len(p.choices) if p is not None else 0,
    )
    rec.update(predicted=g.predicted, correct=g.correct, truncated=g.truncated, thinking=g.thinking)


@dataclass
class _Run:
    """One eval run: what every generation shares, and what it has finished so far."""

    pair: RelayPair
    profile: CueProfile
    max_tokens: int
    sampling: dict[str, Any]
    seed: int
    concurrency: int
    thinking: str
    prompt: Callable[[str, Problem], str]
    done: dict[tuple[str, str, int], dict[str, Any]]
    out: IO[str]
    show_progress: bool

    async def evaluate(
        self, p: Problem, i: int, k: int, label: str, switch_rate: float | None
    ) -> dict[str, Any]:
        """One sample of one problem in one mode; the seed depends on (problem, sample), not the mode."""
        s = sample_seed(self.seed, i, k)
        mode, profile = variant(label, self.profile)
        config = RelayConfig(
            mode=mode,
            max_tokens=self.max_tokens,  # type: ignore[arg-type]
            sampling={**self.sampling, "sampling_seed": s},
            seed=s,
            switch_rate=switch_rate,
        )
        r = await relay_generate_async(messages=p.messages(), large=self.pair, config=config, profile=profile)
        top = {"top_cues": len(profile.cues)} if "@" in label else {}
        return {
            "id": p.id,
            "sample": k,
            "expected": p.answer,
            **r.stats.summary(),
            "mode": label,
            **top,
            "seed": s,
            "sampling": self.sampling,
            "concurrency": self.concurrency,
            "output": r.text,
        }

    async def mode(
        self, mode: str, todo: list[tuple[int, int, Problem]], switch_rate: float | None, failed: list[str]
    ) -> tuple[int, int]:
        """Run ``todo`` in ``mode``, ``concurrency`` in flight; returns (output tokens, failures)."""
        tokens, n_failed = 0, 0

        async def work(job: tuple[int, int, Problem]) -> dict[str, Any]:
            i, k, p = job
            return await self.evaluate(p, i, k, mode, switch_rate)

        with tqdm(total=len(todo), desc=mode, disable=not self.show_progress) as bar:
            async with aclosing(bounded(todo, work, self.concurrency, catch=(RelayError,))) as results:
                async for (_, k, p), rec in results:
                    bar.update()
                    if isinstance(rec, Exception):
                        # Keep going: the others' results are worth keeping; a rerun retries this one.
                        failed.append(f"{mode}/{p.id}/sample {k}: {rec}")
                        n_failed += 1
                        tqdm.write(f"FAILED {failed[-1]}")
                        continue
                    # Graded here, on the loop's (main) thread: math-verify's timeouts use signal.alarm.
                    _grade(rec, p, self.thinking, self.prompt)
                    self.done[_key(rec)] = rec
                    tokens += rec["output_tokens"]
                    self.out.write(json.dumps(rec) + "\n")
                    self.out.flush()
        return tokens, n_failed


async def _run_modes(
    run: _Run,
    problems: list[Problem],
    modes: list[str],
    samples: int,
    tp_records: dict[str, dict[str, Any]],
    tp_path: Path,
) -> list[str]:
    """Every mode after the previous one, at the same concurrency, so latencies and throughputs
    compare.  Returns the failures."""
    failed: list[str] = []
    try:
        for mode in modes:
            switch_rate = None
            if mode.startswith("random_switch"):
                twin = mode.replace("random_switch", "relay")  # random_switch@K matches relay@K
                relay_rows = [r for (m, _, _), r in run.done.items() if m == twin]
                if not relay_rows:
                    raise ValueError(f"{mode} needs {twin} in the same run (its switch rate)")
                large_toks = sum(r["large_tokens"] for r in relay_rows)
                switch_rate = max(sum(r["switches"] for r in relay_rows), 1) / max(large_toks, 1)
            had = sum(1 for (m, _, _) in run.done if m == mode)
            todo = [
                (i, k, p)
                for i, p in enumerate(problems)
                for k in range(samples)
                if (mode, p.id, k) not in run.done
            ]
            if not todo:
                continue
            t0 = time.perf_counter()
            tokens, n_failed = await run.mode(mode, todo, switch_rate, failed)
            rec_tp = {
                "wall_s": round(time.perf_counter() - t0, 3),
                "generations": len(todo) - n_failed,
                "output_tokens": tokens,
                "concurrency": run.concurrency,
                "complete": had == 0 and n_failed == 0,
            }
            # A batch that ran the whole mode at once is the measurement; pieces only stand in.
            if rec_tp["complete"] or not tp_records.get(mode, {}).get("complete"):
                tp_records[mode] = rec_tp
                tp_path.write_text(json.dumps(tp_records, indent=2))
    finally:
        await run.pair.aclose()  # this loop's connections; the pair stays usable
    return failed


def run_eval(
    problems: list[Problem],
    *,
    large: RelayPair | Any,
    small: Any = None,
    profile: CueProfile,
    modes: list[str],
    out_dir: Path,
    max_tokens: int = 1024,
    temperature: float | None = None,
    seed: int = 0,
    concurrency: int | None = None,
    show_progress: bool = True,
    protocol: str = "greedy",
    top_p: float | None = None,
    top_k: int | None = None,
    samples: int | None = None,
    thinking: str = "auto",
    throughput: bool = False,
    dataset: str | None = None,
    ignore_eos: bool = False,
    summary_name: str = "summary",
) -> dict[str, Any]:
    """Evaluate ``modes`` on ``problems``; options left None take the protocol's values.

    ``summary_name``: the stem of the summary files, so runs of other modes into the same folder
    (operating points beside the main modes) keep each other's summaries.

    ``ignore_eos``: every generation runs to ``max_tokens`` (a fixed amount of work per problem,
    for load and throughput measurements; the answers mean little then).

    ``large``: a :class:`RelayPair` (``small`` unused), or the large runtime beside ``small``.
    All generations run on one event loop, ``concurrency`` at a time.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if thinking not in THINKING_CHOICES:
        raise ValueError(f"thinking must be one of {', '.join(THINKING_CHOICES)}, got {thinking!r}")
    proto = PROTOCOLS[protocol]
    temperature = proto["temperature"] if temperature is None else temperature
    top_p = proto["top_p"] if top_p is None else top_p
    top_k = proto["top_k"] if top_k is None else (top_k if top_k > 0 else None)
    samples = proto["samples"] if samples is None else samples
    concurrency = concurrency or (THROUGHPUT_CONCURRENCY if throughput else 1)
    sampling = {
        k: v for k, v in (("temperature", temperature), ("top_p", top_p), ("top_k", top_k)) if v is not None
    }
    if ignore_eos:
        sampling["ignore_eos"] = True
    pair = RelayPair.of(large, small)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.jsonl"
    tp_path = out_dir / "throughput.json"
    tp_records: dict[str, dict[str, Any]] = json.loads(tp_path.read_text()) if tp_path.exists() else {}
    by_id = {p.id: p for p in problems}
    prompt = templated_prompts(pair)
    done = {_key(r): r for r in repair_jsonl(path)}
    for r in done.values():
        if "truncated" not in r:  # a row from before truncation was flagged: grade it the current way
            _grade(r, by_id.get(r["id"]), thinking, prompt)
    for label in modes:
        variant(label, profile)  # a bad label fails before anything runs
    modes = sorted(set(modes), key=_order)
    with path.open("a") as f:
        run = _Run(
            pair, profile, max_tokens, sampling, seed, concurrency, thinking, prompt, done, f, show_progress
        )
        failed = asyncio.run(_run_modes(run, problems, modes, samples, tp_records, tp_path))
    if failed:
        raise EvalIncomplete(
            f"{len(failed)} problem(s) failed; the finished ones are saved in {path}, "
            f"rerun the same command to retry the rest:\n" + "\n".join(failed)
        )
    rows = [r for (m, i, k), r in done.items() if i in by_id and m in modes and k < samples]
    summary = summarize(rows, modes, tp_records)
    summary["config"] = {
        "dataset": dataset,
        "problems": len(problems),
        "protocol": protocol,
        "samples": samples,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "seed": seed,
        "concurrency": concurrency,
        "throughput": throughput,
        "thinking": thinking,
        "ignore_eos": ignore_eos,
        "profile": profile.name or profile.large_model,
        "large_model": profile.large_model,
        "small_model": profile.small_model,
    }
    (out_dir / f"{summary_name}.json").write_text(json.dumps(summary, indent=2))
    (out_dir / f"{summary_name}.md").write_text(markdown(summary))
    prefix = "" if summary_name == "summary" else f"{summary_name}_"
    plot(summary, out_dir / f"{prefix}accuracy_vs_speedup.png")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", default="gsm8k", help=SPEC_HELP)
    add_field_args(p)
    p.add_argument("--limit", type=int, default=20, help="first N problems (0: all)")
    p.add_argument(
        "--modes",
        nargs="+",
        default=["large_only", "relay"],
        metavar="MODE",
        help=f"{', '.join(MODES)}; relay@K and random_switch@K run the profile's best K cues "
        "(an operating point; random_switch@K matches relay@K's switch rate)",
    )
    add_pair_args(p)
    p.add_argument(
        "--protocol",
        choices=list(PROTOCOLS),
        default="greedy",
        help="greedy: T 0, 1 sample (default); paper: T 0.6, top_p 0.95, top_k 20, 4 samples",
    )
    p.add_argument("--samples", type=int, default=None, help="samples per problem (default: the protocol's)")
    p.add_argument("--temperature", type=float, default=None, help="(default: the protocol's)")
    p.add_argument("--top-p", type=float, default=None, help="(default: the protocol's)")
    p.add_argument("--top-k", type=int, default=None, help="(default: the protocol's; -1: off)")
    p.add_argument("--max-tokens", type=int, default=1024, help="(default: %(default)s; the paper: 32768)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--thinking",
        choices=THINKING_CHOICES,
        default="auto",
        help="grade only after </think> (yes), the whole output (no), or yes when the output "
        "or the chat-templated prompt has <think> (auto, the default)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="requests in flight at once, the same for every mode "
        f"(default: 1, or {THROUGHPUT_CONCURRENCY} with --throughput)",
    )
    p.add_argument(
        "--throughput",
        action="store_true",
        help="measure throughput: each mode alone, many requests in flight; "
        "reports tokens/s and problems/s per mode",
    )
    p.add_argument(
        "--ignore-eos",
        action="store_true",
        help="generate --max-tokens tokens every time, wherever the model would stop (load tests)",
    )
    p.add_argument("--out", default="runs/eval")
    p.add_argument(
        "--summary-name",
        default="summary",
        help="stem of the summary files in --out (another name keeps an earlier run's summary there)",
    )
    args = p.parse_args(argv)
    if not re.fullmatch(r"[\w.-]+", args.summary_name):
        p.error(f"--summary-name must be a plain file name stem, got {args.summary_name!r}")
    try:
        profile = profile_from_args(args)
        for label in args.modes:
            variant(label, profile)  # a bad label or K fails here, before any server starts
    except ValueError as e:  # ProfileError included
        print(f"run_eval: error: {e}", file=sys.stderr)
        return 2
    try:  # before anything starts or is written: a set that does not load leaves no results behind
        problems = load_dataset(args.dataset, args.limit or None, **field_kwargs(args))
    except DatasetError as e:
        print(f"run_eval: error: {e}", file=sys.stderr)
        return 2
    if note := unanswered_note(problems, args.dataset):
        print(f"run_eval: {note}", file=sys.stderr)
    with ExitStack() as stack:
        pair = RelayPair(*open_pair(args, stack, profile))  # one pair (clients, tokenizers) for the run
        try:
            summary = run_eval(
                problems,
                large=pair,
                profile=profile,
                modes=args.modes,
                out_dir=Path(args.out),
                max_tokens=args.max_tokens,
                temperature=args.temperature,
                seed=args.seed,
                concurrency=args.concurrency,
                protocol=args.protocol,
                top_p=args.top_p,
                top_k=args.top_k,
                samples=args.samples,
                thinking=args.thinking,
                throughput=args.throughput,
                dataset=args.dataset,
                ignore_eos=args.ignore_eos,
                summary_name=args.summary_name,
            )
        except EvalIncomplete as e:
            print(f"run_eval: {e}", file=sys.stderr)
            return 1
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
