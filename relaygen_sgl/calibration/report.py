"""Calibration report: CSV, markdown table and two PNG plots."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from relaygen_sgl.calibration.margins import CueStat, ScoredTrace

FIELDS = [
    "cue",
    "count",
    "segment_margin",
    "elsewhere_margin",
    "delta",
    "ci_low",
    "ci_high",
    "kept",
]


def write_csv(stats: Sequence[CueStat], path: Path) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FIELDS)
        for s in stats:
            w.writerow([s.cue, s.count] + [f"{getattr(s, k):.4f}" for k in FIELDS[2:7]] + [s.kept])
    return path


def markdown_table(stats: Sequence[CueStat]) -> str:
    lines = [
        "| cue | count | segment margin | elsewhere | delta | 95% CI | kept |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for s in stats:
        lines.append(
            f"| `{s.cue}` | {s.count} | {s.segment_margin:.3f} | {s.elsewhere_margin:.3f} | "
            f"{s.delta:+.3f} | [{s.ci_low:+.3f}, {s.ci_high:+.3f}] | {'yes' if s.kept else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def plot_margins(trace: ScoredTrace, kept: set[str], path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 3.2))
    ax.plot(range(len(trace.margins)), trace.margins, lw=0.8, color="#333")
    for seg in trace.segments:
        color = "#2a9d8f" if seg.cue in kept else "#e9c46a"
        ax.axvspan(seg.start_token, seg.end_token, color=color, alpha=0.35, lw=0)
    ax.set_xlabel("reasoning token position")
    ax.set_ylabel("top-1 − top-2 probability")
    ax.set_ylim(0, 1.02)
    ax.set_title(title or "small-model margin over a large-model trace (green: kept cue segments)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_deltas(stats: Sequence[CueStat], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(stats) + 2), 3.8))
    xs = range(len(stats))
    deltas = [s.delta for s in stats]
    err = [[s.delta - s.ci_low for s in stats], [s.ci_high - s.delta for s in stats]]
    colors = ["#2a9d8f" if s.kept else "#bbb" for s in stats]
    ax.bar(xs, deltas, yerr=err, color=colors, capsize=3)
    ax.axhline(0, color="#333", lw=0.8)
    ax.set_xticks(list(xs), [s.cue for s in stats], rotation=60, ha="right")
    ax.set_ylabel("Δ mean margin (segment − elsewhere)")
    ax.set_title("per-cue margin gap with 95% bootstrap CI (green: kept)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
