"""Latency benchmark in the paper's protocol: RelayGen vs the large model alone, batch 1.

    python -m evals.bench_latency --dataset aime25 --problems 5 --runs 3 --max-tokens 4096 \\
        --large-url http://127.0.0.1:30000 --small-url http://127.0.0.1:30001 --out runs/latency

One request at a time.  After a warm-up, each of N problems runs R times in both modes
(large_only, relay); the mode order alternates per (run, problem) so drift and cache warmth
cancel, both runtimes' prefix caches are flushed before every timed request, and both modes get
the same seed and ``--max-tokens`` (no ``ignore_eos`` unless asked: honest lengths, so tokens and
per-token latency are reported beside wall time).

Speedup is large_only latency / relay latency, per run, then mean ± std per problem and over
problems.  The ideal is what the relay would reach if switching were free:
``1 / (u + (1 - u) * t_small / t_large)``, with ``u`` the relay's large-model token share and
``t_small / t_large`` the per-output-token decode cost ratio, measured in the same run by a
decode probe on each runtime (time of N tokens minus time of 1, over N - 1) at its start and end.
``relay/ideal`` divides the per-token speedup (what the ideal models) by it.

Writes ``runs.jsonl`` (one record per problem x run x mode; a rerun skips finished ones),
``probe.json``, ``bench.json``, ``bench.md`` and ``speedup.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

BENCH_MODES = ("large_only", "relay")
RUN_STRIDE = 1_000_003  # run r of problem i gets seed + i + r * stride, in both modes
PROBE_PROMPT = "The numbers from 1 to 1000, separated by commas: 1, 2, 3, 4,"


# -- pure maths ------------------------------------------------------------------------------
def ideal_speedup(large_utilization: float, small_over_large: float) -> float:
    """Speedup over large-only if the relay cost nothing but its tokens' decode time."""
    u = large_utilization
    return 1.0 / (u + (1.0 - u) * small_over_large)


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    a = np.asarray(xs, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def probe_ratio(probes: dict[str, Any]) -> dict[str, float] | None:
    """Per-token decode seconds of each runtime (mean of the run's probes) and their ratio."""
    per: dict[str, list[float]] = {"large": [], "small": []}
    for phase in ("start", "end"):
        for role in per:
            v = probes.get(phase, {}).get(role, {}).get("per_token_s")
            if v:
                per[role].append(v)
    if not per["large"] or not per["small"]:
        return None
    t_large, t_small = statistics.mean(per["large"]), statistics.mean(per["small"])
    return {"t_large_s": t_large, "t_small_s": t_small, "small_over_large": t_small / t_large}


def call_ratio(rows: Sequence[dict[str, Any]]) -> float | None:
    """t_small / t_large from the relay's own calls (latency / completion tokens); calls carry
    HTTP and prefill overhead, so short small-model calls look costlier than pure decode."""
    tot = {"large": [0.0, 0], "small": [0.0, 0]}
    for r in rows:
        # Rows from before RelayStats.summary() was recorded keep their call list under "calls".
        calls = r.get("call_records", r.get("calls"))
        for c in calls if isinstance(calls, list) else []:
            role = c.get("role", c.get("runtime"))  # "runtime" in rows from before the rename
            tot[role][0] += c["latency_s"]
            tot[role][1] += c["completion_tokens"]
    if not tot["large"][1] or not tot["small"][1]:
        return None
    return (tot["small"][0] / tot["small"][1]) / (tot["large"][0] / tot["large"][1])


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def summarize_bench(rows: Sequence[dict[str, Any]], probes: dict[str, Any]) -> dict[str, Any]:
    """Per-problem and overall speedups, utilization and the ideal, from ``runs.jsonl`` rows."""
    ratio = probe_ratio(probes)
    r = ratio["small_over_large"] if ratio else None
    pairs: dict[str, dict[int, dict[str, dict[str, Any]]]] = {}
    for row in rows:
        pairs.setdefault(row["problem"], {}).setdefault(row["run"], {})[row["mode"]] = row
    problems, relay_rows = [], []
    for pid, runs in pairs.items():
        both = [m for m in runs.values() if all(k in m for k in BENCH_MODES)]
        if not both:
            continue
        L = [m["large_only"] for m in both]  # noqa: N806
        R = [m["relay"] for m in both]  # noqa: N806
        relay_rows += R
        speed = [a["latency_s"] / b["latency_s"] for a, b in zip(L, R, strict=True)]
        per_tok = [
            (a["latency_s"] / a["output_tokens"]) / (b["latency_s"] / b["output_tokens"])
            for a, b in zip(L, R, strict=True)
            if a["output_tokens"] and b["output_tokens"]
        ]
        out_tokens = sum(b["output_tokens"] for b in R)
        u = sum(b["large_tokens"] for b in R) / out_tokens if out_tokens else 1.0
        ideal = ideal_speedup(u, r) if r is not None else None
        s_mean, s_std = mean_std(speed)
        t_mean, t_std = mean_std(per_tok) if per_tok else (None, None)
        problems.append(
            {
                "problem": pid,
                "runs": len(both),
                "large_only_s": [_r(x) for x in mean_std([a["latency_s"] for a in L])],
                "relay_s": [_r(x) for x in mean_std([b["latency_s"] for b in R])],
                "large_only_tokens": _r(statistics.mean(a["output_tokens"] for a in L), 1),
                "relay_tokens": _r(statistics.mean(b["output_tokens"] for b in R), 1),
                "speedup": [_r(s_mean), _r(s_std)],
                "per_token_speedup": [_r(t_mean), _r(t_std)],
                "large_utilization": _r(u),
                "switches": _r(statistics.mean(b["switches"] for b in R), 1),
                "ideal_speedup": _r(ideal),
                "relay_over_ideal": _r(t_mean / ideal) if ideal and t_mean is not None else None,
            }
        )
    # Overall numbers use the paired runs only, the same ones the speedups come from.
    out_tokens = sum(row["output_tokens"] for row in relay_rows)
    u_all = sum(row["large_tokens"] for row in relay_rows) / out_tokens if out_tokens else None
    overall: dict[str, Any] = {"problems": len(problems)}
    if problems:
        sp = mean_std([p["speedup"][0] for p in problems])
        pt_vals = [p["per_token_speedup"][0] for p in problems if p["per_token_speedup"][0] is not None]
        pt = mean_std(pt_vals) if pt_vals else (None, None)
        ideal = ideal_speedup(u_all, r) if r is not None and u_all is not None else None
        overall.update(
            {
                "speedup": [_r(sp[0]), _r(sp[1])],
                "per_token_speedup": [_r(pt[0]), _r(pt[1])],
                "large_utilization": _r(u_all),
                "ideal_speedup": _r(ideal),
                "relay_over_ideal": _r(pt[0] / ideal) if ideal and pt[0] is not None else None,
                "large_only_tokens": _r(statistics.mean(p["large_only_tokens"] for p in problems), 1),
                "relay_tokens": _r(statistics.mean(p["relay_tokens"] for p in problems), 1),
            }
        )
    return {
        "problems": problems,
        "overall": overall,
        "decode_probe": {k: _r(v, 6) for k, v in ratio.items()} if ratio else None,
        "call_level_small_over_large": _r(call_ratio(relay_rows), 4),
    }


def _pm(v: list[float | None] | None) -> str:
    if not v or v[0] is None:
        return ""
    return f"{v[0]:.3f} ± {v[1]:.3f}"


def markdown_bench(summary: dict[str, Any]) -> str:
    """The per-problem table, an overall row, and the measured decode cost ratio."""
    head = [
        "problem",
        "runs",
        "large-only s",
        "relay s",
        "tokens (L / R)",
        "speedup",
        "per-token speedup",
        "large util.",
        "ideal",
        "relay/ideal",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in summary["problems"]:
        lines.append(
            "| "
            + " | ".join(
                [
                    p["problem"],
                    str(p["runs"]),
                    _pm(p["large_only_s"]),
                    _pm(p["relay_s"]),
                    f"{p['large_only_tokens']} / {p['relay_tokens']}",
                    _pm(p["speedup"]),
                    _pm(p["per_token_speedup"]),
                    str(p["large_utilization"]),
                    str(p["ideal_speedup"] or ""),
                    str(p["relay_over_ideal"] or ""),
                ]
            )
            + " |"
        )
    o = summary["overall"]
    if o.get("speedup"):
        lines.append(
            "| "
            + " | ".join(
                [
                    f"**all {o['problems']}** (mean ± std over problems)",
                    "",
                    "",
                    "",
                    f"{o['large_only_tokens']} / {o['relay_tokens']}",
                    _pm(o["speedup"]),
                    _pm(o["per_token_speedup"]),
                    str(o["large_utilization"]),
                    str(o["ideal_speedup"] or ""),
                    str(o["relay_over_ideal"] or ""),
                ]
            )
            + " |"
        )
    probe = summary.get("decode_probe")
    foot = ""
    if probe:
        foot = (
            f"\nDecode probe (same run): t_large {probe['t_large_s'] * 1000:.2f} ms/token, "
            f"t_small {probe['t_small_s'] * 1000:.2f} ms/token, "
            f"t_small/t_large {probe['small_over_large']:.4f}"
        )
        if summary.get("call_level_small_over_large") is not None:
            foot += f" (from the relay's calls: {summary['call_level_small_over_large']:.4f})"
        foot += ".\n"
    return "\n".join(lines) + "\n" + foot


def plot_bench(summary: dict[str, Any], path: Path) -> None:
    """Per-problem speedup (mean ± std over runs) beside its per-token speedup and the ideal."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    probs = summary["problems"]
    x = np.arange(len(probs))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(probs) + 2), 4))
    bars = ((-0.2, "speedup", "wall-clock speedup"), (0.2, "per_token_speedup", "per-token speedup"))
    for off, key, label in bars:
        mean = [p[key][0] or 0.0 for p in probs]
        std = [p[key][1] or 0.0 for p in probs]
        ax.bar(x + off, mean, 0.4, yerr=std, capsize=3, label=label)
    ideal = [p["ideal_speedup"] for p in probs]
    if any(v is not None for v in ideal):
        ax.scatter(
            x,
            [v if v is not None else np.nan for v in ideal],
            marker="_",
            s=600,
            color="black",
            zorder=3,
            label="ideal 1/(u+(1-u)t_s/t_l)",
        )
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xticks(x, [f"{p['problem']}\nu={p['large_utilization']}" for p in probs], fontsize=8)
    ax.set_ylabel("large-only / relay (batch 1)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- measurement -----------------------------------------------------------------------------
def decode_probe(client: Any, tokens: int = 64, reps: int = 3) -> dict[str, Any]:
    """Per-output-token decode time at batch 1: (time of N tokens - time of 1) / (N - 1)."""
    params = {"temperature": 0.0, "ignore_eos": True}
    per = []
    for _ in range(reps):
        one = client.generate(text=PROBE_PROMPT, sampling_params={**params, "max_new_tokens": 1})
        many = client.generate(text=PROBE_PROMPT, sampling_params={**params, "max_new_tokens": tokens})
        n = many.completion_tokens or tokens
        if n > 1:
            per.append((many.latency_s - one.latency_s) / (n - 1))
    return {
        "tokens": tokens,
        "reps": reps,
        "per_token_s": statistics.median(per) if per else None,
        "samples_s": [round(x, 6) for x in per],
    }


def _timed(
    p: Any, mode: str, *, pair: Any, profile: Any, sampling: dict[str, Any], max_tokens: int
) -> dict[str, Any]:
    """One timed request: its stats' summary, per-token latency and every call's record."""
    from dataclasses import asdict

    from relaygen_sgl.relay import RelayConfig, relay_generate

    config = RelayConfig(
        mode=mode,
        max_tokens=max_tokens,
        sampling=sampling,  # type: ignore[arg-type]
        seed=sampling.get("sampling_seed"),
    )
    res = relay_generate(messages=p.messages(), large=pair, config=config, profile=profile)
    st = res.stats.summary()
    per_token = round(st["latency_s"] / st["output_tokens"], 6) if st["output_tokens"] else None
    return {**st, "per_token_s": per_token, "call_records": [asdict(c) for c in res.stats.calls]}


def run_bench(
    problems: Sequence[Any],
    *,
    large: Any,
    small: Any = None,
    profile: Any,
    out_dir: Path,
    runs: int = 3,
    max_tokens: int = 1024,
    sampling: dict[str, Any] | None = None,
    seed: int = 0,
    ignore_eos: bool = False,
    flush_cache: bool = True,
    warmup_tokens: int = 32,
    probe_tokens: int = 64,
    probe_reps: int = 3,
    show_progress: bool = True,
) -> dict[str, Any]:
    from tqdm import tqdm

    from relaygen_sgl.jsonl import repair_jsonl
    from relaygen_sgl.relay import RelayPair

    pair = RelayPair.of(large, small)  # one pair for the run: probes, flushes and relays share it
    out_dir.mkdir(parents=True, exist_ok=True)
    path, probe_path = out_dir / "runs.jsonl", out_dir / "probe.json"
    done = {(r["problem"], r["run"], r["mode"]): r for r in repair_jsonl(path)}
    probes: dict[str, Any] = json.loads(probe_path.read_text()) if probe_path.exists() else {}
    clients = pair.clients
    base = {k: v for k, v in (sampling or {}).items() if v is not None}
    if ignore_eos:
        base["ignore_eos"] = True
    job = dict(pair=pair, profile=profile, max_tokens=max_tokens)
    todo = [
        (r, i, p, mode)
        for r in range(runs)
        for i, p in enumerate(problems)
        # Alternate which mode goes first, so neither always meets the warmer machine.
        for mode in (BENCH_MODES if (r + i) % 2 == 0 else BENCH_MODES[::-1])
        if (p.id, r, mode) not in done
    ]

    def probe_both() -> dict[str, Any]:
        return {role: decode_probe(c, probe_tokens, probe_reps) for role, c in clients.items()}

    def flush() -> None:
        for c in clients.values():
            try:
                c.flush_cache()
            except Exception as e:  # a cache that cannot be flushed only costs comparability
                print(f"bench_latency: could not flush {c.name}: {e}", file=sys.stderr)

    if todo:
        for mode in BENCH_MODES:  # warm-up: tokenizers, first-request paths; not recorded
            _timed(
                problems[0],
                mode,
                pair=pair,
                profile=profile,
                sampling={**base, "sampling_seed": seed},
                max_tokens=warmup_tokens,
            )
        if "start" not in probes:
            probes["start"] = probe_both()
            probe_path.write_text(json.dumps(probes, indent=2))
        with path.open("a") as f, tqdm(total=len(todo), desc="bench", disable=not show_progress) as bar:
            for r, i, p, mode in todo:
                if flush_cache:
                    flush()
                s = seed + i + r * RUN_STRIDE
                rec = _timed(p, mode, sampling={**base, "sampling_seed": s}, **job)
                rec = {"problem": p.id, "run": r, "mode": mode, "seed": s, **rec}
                done[(p.id, r, mode)] = rec
                f.write(json.dumps(rec) + "\n")
                f.flush()
                bar.update()
        probes["end"] = probe_both()
        probe_path.write_text(json.dumps(probes, indent=2))
    ids = {p.id for p in problems}
    rows = [r for (pid, run, _), r in done.items() if pid in ids and run < runs]
    summary = summarize_bench(rows, probes)
    summary["config"] = {
        "problems": len(problems),
        "runs": runs,
        "max_tokens": max_tokens,
        "sampling": base,
        "seed": seed,
        "ignore_eos": ignore_eos,
        "flush_cache": flush_cache,
        "batch": 1,
        "probe_tokens": probe_tokens,
        "probe_reps": probe_reps,
        "profile": getattr(profile, "name", "") or None,
    }
    (out_dir / "bench.json").write_text(json.dumps(summary, indent=2))
    (out_dir / "bench.md").write_text(markdown_bench(summary))
    if summary["problems"]:
        plot_bench(summary, out_dir / "speedup.png")
    return summary


def main(argv: list[str] | None = None) -> int:
    from evals.datasets import SPEC_HELP, load_dataset
    from relaygen_sgl.pair_args import add_pair_args, open_pair, profile_from_args
    from relaygen_sgl.problem_sets import add_field_args, field_kwargs
    from relaygen_sgl.relay import RelayPair

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", default="gsm8k", help=SPEC_HELP)
    add_field_args(p, answers=False)  # timed, not graded
    p.add_argument("--problems", type=int, default=3, help="first N problems (default: %(default)s)")
    p.add_argument("--runs", type=int, default=3, help="timed runs per problem and mode (default: 3)")
    p.add_argument("--max-tokens", type=int, default=1024, help="the same for both modes (default: 1024)")
    p.add_argument("--temperature", type=float, default=0.6, help="(default: %(default)s, the paper's)")
    p.add_argument("--top-p", type=float, default=0.95, help="(default: %(default)s)")
    p.add_argument("--top-k", type=int, default=20, help="(default: %(default)s; -1: off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--ignore-eos",
        action="store_true",
        help="both modes run to --max-tokens (equal lengths; default: honest stops)",
    )
    p.add_argument("--no-flush", action="store_true", help="keep prefix caches between timed requests")
    p.add_argument("--warmup-tokens", type=int, default=32)
    p.add_argument("--probe-tokens", type=int, default=64, help="decode probe length (default: %(default)s)")
    p.add_argument("--probe-reps", type=int, default=3)
    add_pair_args(p)
    p.add_argument("--out", default="runs/latency", help="output folder, also the resume state")
    args = p.parse_args(argv)
    try:  # before anything starts or is written
        profile = profile_from_args(args)
        problems = load_dataset(args.dataset, args.problems, need_answers=False, **field_kwargs(args))
    except ValueError as e:  # DatasetError and ProfileError included
        print(f"bench_latency: error: {e}", file=sys.stderr)
        return 2
    sampling = {
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k if args.top_k > 0 else None,
    }
    with ExitStack() as stack:
        pair = RelayPair(*open_pair(args, stack, profile))
        summary = run_bench(
            problems,
            large=pair,
            profile=profile,
            out_dir=Path(args.out),
            runs=args.runs,
            max_tokens=args.max_tokens,
            sampling=sampling,
            seed=args.seed,
            ignore_eos=args.ignore_eos,
            flush_cache=not args.no_flush,
            warmup_tokens=args.warmup_tokens,
            probe_tokens=args.probe_tokens,
            probe_reps=args.probe_reps,
        )
    print(markdown_bench(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
