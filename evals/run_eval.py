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
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from tqdm import tqdm

from evals.datasets import DATASETS, Problem, load_dataset
from evals.grading import THINKING_CHOICES, grade, thinks
from evals.summary import markdown, plot, summarize
from relaygen_sgl.jsonl import repair_jsonl
from relaygen_sgl.pair_args import add_pair_args, open_pair
from relaygen_sgl.profile import CueProfile
from relaygen_sgl.relay import MODES, RelayError, relay_generate, runtimes_used
from relaygen_sgl.runtime_client import RuntimeClient

__all__ = ["EvalIncomplete", "PROTOCOLS", "markdown", "run_eval", "summarize"]


class EvalIncomplete(RuntimeError):
    """Some problems failed; the rest are saved and a rerun retries only the failed ones."""


ORDER = {m: i for i, m in enumerate(("large_only", "small_only", "relay", "random_switch"))}
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


def _evaluate(p: Problem, i: int, k: int, *, mode: str, large: Any, small: Any, profile: CueProfile,
              max_tokens: int, sampling: dict[str, Any], seed: int, switch_rate: float | None,
              concurrency: int) -> dict[str, Any]:  # fmt: skip
    """One sample of one problem in one mode; the seed depends on (problem, sample), not the mode."""
    s = sample_seed(seed, i, k)
    r = relay_generate(
        messages=p.messages(),
        large=large, small=small, profile=profile, mode=mode,  # type: ignore[arg-type]
        sampling={**sampling, "sampling_seed": s}, max_tokens=max_tokens,
        seed=s, switch_rate=switch_rate,
    )  # fmt: skip
    st = r.stats
    return {"mode": mode, "id": p.id, "sample": k, "expected": p.answer,
            "latency_s": round(st.latency_s, 4), "output_tokens": st.output_tokens,
            "large_tokens": st.large_tokens, "small_tokens": st.small_tokens, "switches": st.switches,
            "seed": s, "sampling": sampling, "finish_reason": st.finish_reason,
            "concurrency": concurrency, "output": r.text}  # fmt: skip


def templated_prompts(large: Any, small: Any) -> Callable[[str, Problem], str]:
    """The chat-templated prompt a mode's reasoner sees, for ``--thinking auto``."""
    cache: dict[tuple[str, str], str] = {}

    def prompt(mode: str, p: Problem) -> str:
        role = runtimes_used(mode)[0]
        if (role, p.id) not in cache:
            try:
                tok = RuntimeClient.of(large if role == "large" else small).tokenizer
                text = tok.apply_chat_template(p.messages(), tokenize=False, add_generation_prompt=True)
            except (RuntimeError, OSError, ValueError):
                text = ""  # runtime down: decide from the output alone
            cache[(role, p.id)] = text
        return cache[(role, p.id)]

    return prompt


def _grade(rec: dict[str, Any], p: Problem | None, thinking: str,
           prompt: Callable[[str, Problem], str]) -> None:  # fmt: skip
    templated = prompt(rec["mode"], p) if thinking == "auto" and p is not None else ""
    think = thinks(thinking, rec["output"], templated)
    g = grade(rec["output"], rec["expected"], thinking=think, finish_reason=rec.get("finish_reason"))
    rec.update(predicted=g.predicted, correct=g.correct, truncated=g.truncated, thinking=g.thinking)


def run_eval(
    problems: list[Problem],
    *,
    large: Any,
    small: Any,
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
) -> dict[str, Any]:
    """Evaluate ``modes`` on ``problems``; options left None take the protocol's values."""
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
    sampling = {k: v for k, v in (("temperature", temperature), ("top_p", top_p), ("top_k", top_k))
                if v is not None}  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.jsonl"
    tp_path = out_dir / "throughput.json"
    tp_records: dict[str, dict[str, Any]] = json.loads(tp_path.read_text()) if tp_path.exists() else {}
    by_id = {p.id: p for p in problems}
    prompt = templated_prompts(large, small)
    done = {_key(r): r for r in repair_jsonl(path)}
    for r in done.values():
        if "truncated" not in r:  # a row from before truncation was flagged: grade it the current way
            _grade(r, by_id.get(r["id"]), thinking, prompt)
    modes = sorted(set(modes), key=ORDER.__getitem__)
    failed: list[str] = []
    with path.open("a") as f:
        for mode in modes:
            switch_rate = None
            if mode == "random_switch":
                relay_rows = [r for (m, _, _), r in done.items() if m == "relay"]
                if not relay_rows:
                    raise ValueError("random_switch needs the relay mode in the same run")
                large_toks = sum(r["large_tokens"] for r in relay_rows)
                switch_rate = max(sum(r["switches"] for r in relay_rows), 1) / max(large_toks, 1)
            had = sum(1 for (m, _, _) in done if m == mode)
            todo = [(i, k, p) for i, p in enumerate(problems) for k in range(samples)
                    if (mode, p.id, k) not in done]  # fmt: skip
            job = dict(mode=mode, large=large, small=small, profile=profile, max_tokens=max_tokens,
                       sampling=sampling, seed=seed, switch_rate=switch_rate,
                       concurrency=concurrency)  # fmt: skip
            batch_tokens, batch_failed = 0, 0
            t0 = time.perf_counter()
            # Every mode runs alone at the same concurrency, so latencies and throughputs compare.
            with ThreadPoolExecutor(max_workers=concurrency) as pool, \
                    tqdm(total=len(todo), desc=mode, disable=not show_progress) as bar:  # fmt: skip
                futures = {pool.submit(_evaluate, p, i, k, **job): (p, k) for i, k, p in todo}
                for fut in as_completed(futures):
                    p, k = futures[fut]
                    try:
                        rec = fut.result()
                    except RelayError as e:
                        # Keep going: the others' results are worth keeping; a rerun retries this one.
                        failed.append(f"{mode}/{p.id}/sample {k}: {e}")
                        batch_failed += 1
                        tqdm.write(f"FAILED {failed[-1]}")
                        bar.update()
                        continue
                    # Graded here, in the main thread: math-verify's timeouts use signal.alarm.
                    _grade(rec, p, thinking, prompt)
                    done[_key(rec)] = rec
                    batch_tokens += rec["output_tokens"]
                    f.write(json.dumps(rec) + "\n")
                    f.flush()
                    bar.update()
            if todo:
                wall = time.perf_counter() - t0
                rec_tp = {"wall_s": round(wall, 3), "generations": len(todo) - batch_failed,
                          "output_tokens": batch_tokens, "concurrency": concurrency,
                          "complete": had == 0 and batch_failed == 0}  # fmt: skip
                # A batch that ran the whole mode at once is the measurement; pieces only stand in.
                if rec_tp["complete"] or not tp_records.get(mode, {}).get("complete"):
                    tp_records[mode] = rec_tp
                    tp_path.write_text(json.dumps(tp_records, indent=2))
    if failed:
        raise EvalIncomplete(f"{len(failed)} problem(s) failed; the finished ones are saved in {path}, "
                             f"rerun the same command to retry the rest:\n" + "\n".join(failed))  # fmt: skip
    rows = [r for (m, i, k), r in done.items() if i in by_id and m in modes and k < samples]
    summary = summarize(rows, modes, tp_records)
    summary["config"] = {"dataset": dataset, "problems": len(problems), "protocol": protocol,
                         "samples": samples, "max_tokens": max_tokens, "temperature": temperature,
                         "top_p": top_p, "top_k": top_k, "seed": seed, "concurrency": concurrency,
                         "throughput": throughput, "thinking": thinking,
                         "profile": profile.name or profile.large_model,
                         "large_model": profile.large_model, "small_model": profile.small_model}  # fmt: skip
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    (out_dir / "summary.md").write_text(markdown(summary))
    plot(summary, out_dir / "accuracy_vs_speedup.png")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", default="gsm8k", help=f"{', '.join(DATASETS)} or jsonl:PATH")
    p.add_argument("--limit", type=int, default=20, help="first N problems (0: all)")
    p.add_argument("--modes", nargs="+", default=["large_only", "relay"], choices=MODES)
    add_pair_args(p)
    p.add_argument("--protocol", choices=list(PROTOCOLS), default="greedy",
                   help="greedy: T 0, 1 sample (default); paper: T 0.6, top_p 0.95, top_k 20, 4 samples")
    p.add_argument("--samples", type=int, default=None, help="samples per problem (default: the protocol's)")
    p.add_argument("--temperature", type=float, default=None, help="(default: the protocol's)")
    p.add_argument("--top-p", type=float, default=None, help="(default: the protocol's)")
    p.add_argument("--top-k", type=int, default=None, help="(default: the protocol's; -1: off)")
    p.add_argument("--max-tokens", type=int, default=1024, help="(default: %(default)s; the paper: 32768)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--thinking", choices=THINKING_CHOICES, default="auto",
                   help="grade only after </think> (yes), the whole output (no), or yes when the output "
                   "or the chat-templated prompt has <think> (auto, the default)")
    p.add_argument("--concurrency", type=int, default=None,
                   help="requests in flight at once, the same for every mode "
                   f"(default: 1, or {THROUGHPUT_CONCURRENCY} with --throughput)")
    p.add_argument("--throughput", action="store_true",
                   help="measure throughput: each mode alone, many requests in flight; "
                   "reports tokens/s and problems/s per mode")
    p.add_argument("--out", default="runs/eval")
    args = p.parse_args(argv)  # fmt: skip
    problems = load_dataset(args.dataset, args.limit or None)
    with ExitStack() as stack:
        large, small = open_pair(args, stack)
        try:
            summary = run_eval(problems, large=large, small=small, profile=CueProfile.load(args.profile),
                               modes=args.modes, out_dir=Path(args.out), max_tokens=args.max_tokens,
                               temperature=args.temperature, seed=args.seed, concurrency=args.concurrency,
                               protocol=args.protocol, top_p=args.top_p, top_k=args.top_k,
                               samples=args.samples, thinking=args.thinking, throughput=args.throughput,
                               dataset=args.dataset)  # fmt: skip
        except EvalIncomplete as e:
            print(f"run_eval: {e}", file=sys.stderr)
            return 1
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
