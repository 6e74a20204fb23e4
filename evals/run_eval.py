"""Batch evaluation of RelayGen against its baselines, measured side by side in one run.

    python -m evals.run_eval --dataset gsm8k --limit 20 --modes large_only relay \\
        --large-url http://127.0.0.1:30000 --small-url http://127.0.0.1:30001 --out runs/gsm8k

Writes ``results.jsonl`` (one record per mode x problem; rerunning skips the
finished ones), ``summary.json``, ``summary.md`` and ``accuracy_vs_speedup.png``.
``random_switch`` is the control: it switches at random positions at the switch
rate the relay run measured, so it runs after ``relay``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from tqdm import tqdm

from evals.datasets import DATASETS, Problem, load_dataset
from evals.grading import extract_answer, is_correct
from relaygen_sgl.calibration.io import repair_jsonl
from relaygen_sgl.pair_args import add_pair_args, open_pair
from relaygen_sgl.profile import CueProfile
from relaygen_sgl.relay import MODES, RelayError, relay_generate


class EvalIncomplete(RuntimeError):
    """Some problems failed; the rest are saved and a rerun retries only the failed ones."""


ORDER = {m: i for i, m in enumerate(("large_only", "small_only", "relay", "random_switch"))}


def _evaluate(p: Problem, i: int, *, mode: str, large: Any, small: Any, profile: CueProfile,
              max_tokens: int, temperature: float, seed: int, switch_rate: float | None,
              concurrency: int) -> dict[str, Any]:  # fmt: skip
    """One problem in one mode; problem i always gets seed + i, whatever the mode."""
    r = relay_generate(
        messages=p.messages(),
        large=large, small=small, profile=profile, mode=mode,  # type: ignore[arg-type]
        sampling={"temperature": temperature, "sampling_seed": seed + i}, max_tokens=max_tokens,
        seed=seed + i, switch_rate=switch_rate,
    )  # fmt: skip
    st = r.stats
    return {"mode": mode, "id": p.id, "expected": p.answer, "latency_s": round(st.latency_s, 4),
            "output_tokens": st.output_tokens, "large_tokens": st.large_tokens,
            "small_tokens": st.small_tokens, "switches": st.switches, "seed": seed + i,
            "finish_reason": st.finish_reason, "concurrency": concurrency, "output": r.text}  # fmt: skip


def run_eval(
    problems: list[Problem],
    *,
    large: Any,
    small: Any,
    profile: CueProfile,
    modes: list[str],
    out_dir: Path,
    max_tokens: int = 1024,
    temperature: float = 0.0,
    seed: int = 0,
    concurrency: int = 1,
    show_progress: bool = True,
) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.jsonl"
    done = {(r["mode"], r["id"]): r for r in repair_jsonl(path)}
    modes = sorted(set(modes), key=ORDER.__getitem__)
    failed: list[str] = []
    with path.open("a") as f:
        for mode in modes:
            switch_rate = None
            if mode == "random_switch":
                relay_rows = [r for (m, _), r in done.items() if m == "relay"]
                if not relay_rows:
                    raise ValueError("random_switch needs the relay mode in the same run")
                large_toks = sum(r["large_tokens"] for r in relay_rows)
                switch_rate = max(sum(r["switches"] for r in relay_rows), 1) / max(large_toks, 1)
            todo = [(i, p) for i, p in enumerate(problems) if (mode, p.id) not in done]
            job = dict(mode=mode, large=large, small=small, profile=profile, max_tokens=max_tokens,
                       temperature=temperature, seed=seed, switch_rate=switch_rate,
                       concurrency=concurrency)  # fmt: skip
            # Every mode runs at the same concurrency, so latencies stay comparable.
            with ThreadPoolExecutor(max_workers=concurrency) as pool, \
                    tqdm(total=len(todo), desc=mode, disable=not show_progress) as bar:  # fmt: skip
                futures = {pool.submit(_evaluate, p, i, **job): p for i, p in todo}
                for fut in as_completed(futures):
                    try:
                        rec = fut.result()
                    except RelayError as e:
                        # Keep going: the others' results are worth keeping; a rerun retries this one.
                        failed.append(f"{mode}/{futures[fut].id}: {e}")
                        tqdm.write(f"FAILED {failed[-1]}")
                        bar.update()
                        continue
                    # Graded here, in the main thread: math-verify's timeouts use signal.alarm.
                    rec["predicted"] = extract_answer(rec["output"])
                    rec["correct"] = is_correct(rec["output"], rec["expected"])
                    done[(mode, rec["id"])] = rec
                    f.write(json.dumps(rec) + "\n")
                    f.flush()
                    bar.update()
    if failed:
        raise EvalIncomplete(f"{len(failed)} problem(s) failed; the finished ones are saved in {path}, "
                             f"rerun the same command to retry the rest:\n" + "\n".join(failed))  # fmt: skip
    ids = {p.id for p in problems}
    summary = summarize([r for (m, i), r in done.items() if i in ids and m in modes], modes)
    summary["config"] = {"problems": len(problems), "max_tokens": max_tokens, "temperature": temperature,
                         "seed": seed, "concurrency": concurrency,
                         "profile": profile.name or profile.large_model,
                         "large_model": profile.large_model, "small_model": profile.small_model}  # fmt: skip
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    (out_dir / "summary.md").write_text(markdown(summary))
    plot(summary, out_dir / "accuracy_vs_speedup.png")
    return summary


def summarize(rows: list[dict[str, Any]], modes: list[str]) -> dict[str, Any]:
    by_mode = {m: [r for r in rows if r["mode"] == m] for m in modes}
    base = by_mode.get("large_only")
    base_lat = statistics.mean(r["latency_s"] for r in base) if base else None
    table = []
    for m, rs in by_mode.items():
        if not rs:
            continue
        lat = statistics.mean(r["latency_s"] for r in rs)
        toks = sum(r["output_tokens"] for r in rs)
        table.append({
            "mode": m, "n": len(rs), "accuracy": round(sum(r["correct"] for r in rs) / len(rs), 4),
            "mean_latency_s": round(lat, 3),
            "speedup_vs_large_only": round(base_lat / lat, 3) if base_lat else None,
            "large_utilization": round(sum(r["large_tokens"] for r in rs) / toks, 3) if toks else 0.0,
            "switches_per_problem": round(sum(r["switches"] for r in rs) / len(rs), 2),
            "mean_output_tokens": round(toks / len(rs), 1),
        })  # fmt: skip
    return {"modes": table}


def markdown(summary: dict[str, Any]) -> str:
    cols = ["mode", "n", "accuracy", "mean_latency_s", "speedup_vs_large_only", "large_utilization",
            "switches_per_problem", "mean_output_tokens"]  # fmt: skip
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(row[c]) for c in cols) + " |" for row in summary["modes"]]
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for row in summary["modes"]:
        x = row["speedup_vs_large_only"] or 0.0
        ax.scatter([x], [row["accuracy"]], s=50)
        ax.annotate(row["mode"], (x, row["accuracy"]), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("speedup vs large-only (mean latency, same run)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", default="gsm8k", help=f"{', '.join(DATASETS)} or jsonl:PATH")
    p.add_argument("--limit", type=int, default=20, help="first N problems (0: all)")
    p.add_argument("--modes", nargs="+", default=["large_only", "relay"], choices=MODES)
    add_pair_args(p)
    p.add_argument("--max-tokens", type=int, default=1024)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="problems in flight at once, the same for every mode (default: %(default)s)",
    )
    p.add_argument("--out", default="runs/eval")
    args = p.parse_args(argv)
    problems = load_dataset(args.dataset, args.limit or None)
    with ExitStack() as stack:
        large, small = open_pair(args, stack)
        try:
            summary = run_eval(problems, large=large, small=small, profile=CueProfile.load(args.profile),
                               modes=args.modes, out_dir=Path(args.out), max_tokens=args.max_tokens,
                               temperature=args.temperature, seed=args.seed,
                               concurrency=args.concurrency)  # fmt: skip
        except EvalIncomplete as e:
            print(f"run_eval: {e}", file=sys.stderr)
            return 1
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
