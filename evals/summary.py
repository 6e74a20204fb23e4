"""Eval summaries from result rows: pass@1 with a bootstrap CI, speed, truncation, throughput.

Pure functions of ``results.jsonl`` rows (and the per-mode throughput records), so the
README tables can be rebuilt from the committed ``summary.json`` or from the rows alone.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

CI_LEVEL = 0.95
CI_RESAMPLES = 10_000
CI_METHOD = f"percentile bootstrap over problems ({CI_RESAMPLES} resamples, seed 0)"


def per_problem_accuracy(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Each graded problem's mean correctness over its samples (a problem with no answer has
    ``correct`` None: it is left out)."""
    by_id: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        if r["correct"] is not None:
            by_id[r["id"]].append(bool(r["correct"]))
    return {i: sum(v) / len(v) for i, v in by_id.items()}


def bootstrap_ci(values: Sequence[float], seed: int = 0) -> tuple[float, float] | None:
    """95% CI of the mean, resampling problems (samples of one problem stay together)."""
    if len(values) < 2:
        return None
    res = stats.bootstrap(
        (np.asarray(values, dtype=float),),
        np.mean,
        confidence_level=CI_LEVEL,
        n_resamples=CI_RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    ci = res.confidence_interval
    return round(float(ci.low), 4), round(float(ci.high), 4)


def _rate(num: float, den: float, nd: int = 3) -> float | None:
    return round(num / den, nd) if den else None


def summarize(
    rows: Sequence[dict[str, Any]],
    modes: Sequence[str],
    throughput: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One table row per mode: pass@1 (mean over samples, then graded problems) with its CI, speedup
    over large-only (mean latency in the same run), utilization, truncation and throughput.
    Problems with no answer count everywhere but in pass@1 (``ungraded``: their rows)."""
    by_mode = {m: [r for r in rows if r["mode"] == m] for m in modes}
    base = by_mode.get("large_only")
    base_lat = statistics.mean(r["latency_s"] for r in base) if base else None
    table = []
    for m, rs in by_mode.items():
        if not rs:
            continue
        acc = per_problem_accuracy(rs)
        lat = statistics.mean(r["latency_s"] for r in rs)
        toks = sum(r["output_tokens"] for r in rs)
        ci = bootstrap_ci(list(acc.values()))
        samples = defaultdict(int)
        for r in rs:
            samples[r["id"]] += 1
        tp = (throughput or {}).get(m) or {}
        table.append(
            {
                "mode": m,
                "n": len(rs),
                "problems": len(samples),
                "samples_per_problem": max(samples.values()),
                "accuracy": round(statistics.mean(acc.values()), 4) if acc else None,
                "ungraded": sum(r["correct"] is None for r in rs),
                "ci95": list(ci) if ci else None,
                "mean_latency_s": round(lat, 3),
                "speedup_vs_large_only": round(base_lat / lat, 3) if base_lat and lat else None,
                "large_utilization": round(sum(r["large_tokens"] for r in rs) / toks, 3) if toks else 0.0,
                "switches_per_problem": round(sum(r["switches"] for r in rs) / len(rs), 2),
                "mean_output_tokens": round(toks / len(rs), 1),
                "truncated": sum(bool(r.get("truncated")) for r in rs),
                "tokens_per_s": _rate(tp.get("output_tokens", 0), tp.get("wall_s", 0)),
                "problems_per_s": _rate(tp.get("generations", 0), tp.get("wall_s", 0), 4),
                "throughput_concurrency": tp.get("concurrency"),
                "throughput_complete": tp.get("complete"),
            }
        )
    return {
        "modes": table,
        "paired": paired_comparisons(rows, [m for m in modes if by_mode[m]]),
        "ci": {"level": CI_LEVEL, "method": CI_METHOD},
    }


def comparison_pairs(modes: Sequence[str]) -> list[tuple[str, str]]:
    """What each mode is judged against: every mode against large-only, and each relay operating
    point against its random-switching control at the same switch rate."""
    pairs = [(m, "large_only") for m in modes if m != "large_only" and "large_only" in modes]
    for m in modes:
        control = m.replace("relay", "random_switch", 1)
        if m.partition("@")[0] == "relay" and control in modes:
            pairs.append((m, control))
    return pairs


def paired_difference(rows: Sequence[dict[str, Any]], a: str, b: str) -> dict[str, Any] | None:
    """``a`` minus ``b`` on the problems both answered: the mean per-problem difference in pass@1
    with a bootstrap CI over problems, and the discordant (problem, sample) counts."""
    acc_a = per_problem_accuracy([r for r in rows if r["mode"] == a])
    acc_b = per_problem_accuracy([r for r in rows if r["mode"] == b])
    common = sorted(acc_a.keys() & acc_b.keys())
    if not common:
        return None
    diffs = [acc_a[i] - acc_b[i] for i in common]
    right = {
        (r["mode"], r["id"], int(r.get("sample", 0))): bool(r["correct"])
        for r in rows
        if r["correct"] is not None
    }
    keys = [(i, k) for (m, i, k) in right if m == a and i in acc_b and (b, i, k) in right]
    ci = bootstrap_ci(diffs)
    return {
        "a": a,
        "b": b,
        "problems": len(common),
        "difference": round(statistics.mean(diffs), 4),
        "ci95": list(ci) if ci else None,
        "a_only_right": sum(right[(a, i, k)] and not right[(b, i, k)] for i, k in keys),
        "b_only_right": sum(right[(b, i, k)] and not right[(a, i, k)] for i, k in keys),
    }


def paired_comparisons(rows: Sequence[dict[str, Any]], modes: Sequence[str]) -> list[dict[str, Any]]:
    return [d for a, b in comparison_pairs(modes) if (d := paired_difference(rows, a, b))]


COLUMNS = [
    ("mode", "mode"),
    ("problems", "problems"),
    ("samples_per_problem", "samples"),
    ("accuracy", "pass@1"),
    ("ci95", "95% CI"),
    ("mean_latency_s", "mean latency s"),
    ("speedup_vs_large_only", "speedup"),
    ("large_utilization", "large util."),
    ("switches_per_problem", "switches"),
    ("mean_output_tokens", "tokens"),
    ("truncated", "truncated"),
    ("tokens_per_s", "tokens/s"),
    ("problems_per_s", "problems/s"),
]


def _cell(key: str, v: Any) -> str:
    if v is None:
        return ""
    if key == "ci95":
        return f"[{v[0]:.3f}, {v[1]:.3f}]"
    return str(v)


def markdown(summary: dict[str, Any]) -> str:
    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(k, row.get(k)) for k, _ in COLUMNS) + " |" for row in summary["modes"]]
    note = summary.get("ci", {}).get("method")
    text = (
        "\n".join(lines)
        + "\n"
        + (f"\npass@1: mean over samples, then problems; 95% CI: {note}.\n" if note else "")
    )
    if ungraded := [f"{row['mode']} {row['ungraded']}" for row in summary["modes"] if row.get("ungraded")]:
        text += f"\nResults with no answer to check (run and timed, not in pass@1): {', '.join(ungraded)}.\n"
    if summary.get("paired"):
        text += "\n" + paired_markdown(summary["paired"])
    return text


def paired_markdown(paired: Sequence[dict[str, Any]]) -> str:
    head = "| comparison | problems | difference in pass@1 | 95% CI | only first right | only second right |"
    lines = [head, "|---|---|---|---|---|---|"]
    for d in paired:
        ci = f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]" if d["ci95"] else ""
        lines.append(
            f"| {d['a']} - {d['b']} | {d['problems']} | {d['difference']:+.3f} | {ci} | "
            f"{d['a_only_right']} | {d['b_only_right']} |"
        )
    return "\n".join(lines) + "\n\nPaired over the problems both modes answered; CI by the same bootstrap.\n"


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for row in summary["modes"]:
        if row["accuracy"] is None:  # nothing graded
            continue
        x, y = row["speedup_vs_large_only"] or 0.0, row["accuracy"]
        ci = row.get("ci95")
        yerr = [[y - ci[0]], [ci[1] - y]] if ci else None
        ax.errorbar([x], [y], yerr=yerr, fmt="o", capsize=3)
        ax.annotate(row["mode"], (x, y), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("speedup vs large-only (mean latency, same run)")
    ax.set_ylabel("pass@1 (95% CI)")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
