"""The accuracy-vs-speedup frontier of a relay, from an eval run's ``results.jsonl``.

The paper gives one operating point per pair (its kept cues).  ``relay@K`` rows (``run_eval
--modes relay@2 relay@8 ...``) switch on the profile's best K cues, so K moves the large model's
share of the tokens both ways; each ``random_switch@K`` is the control at the switch rate
relay@K measured.  This reads the rows of the first ``--limit`` problems, for every mode the run
has, and writes ``frontier.json``, ``frontier.md`` and ``frontier.png``::

    python -m evals.run_eval --dataset gsm8k --limit 50 --max-tokens 512 --concurrency 10 \\
        --modes large_only small_only relay random_switch relay@2 random_switch@2 --out runs/gsm8k
    python -m evals.frontier runs/gsm8k --dataset gsm8k --limit 50
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from evals.datasets import load_dataset
from evals.summary import markdown, summarize
from relaygen_sgl.jsonl import read_jsonl


def _order(mode: str) -> tuple[int, int]:
    base, _, k = mode.partition("@")
    rank = {"large_only": 0, "small_only": 1, "relay": 2, "random_switch": 3}[base]
    return rank, int(k or 0)


def frontier(rows: list[dict[str, Any]], ids: list[str]) -> dict[str, Any]:
    """The summary (one row per mode, paired differences) over ``ids``; only modes that answered
    every one of them count, so every point is measured on the same problems."""
    wanted = set(ids)
    rows = [r for r in rows if r["id"] in wanted]
    answered: dict[str, set[str]] = {}
    for r in rows:
        answered.setdefault(r["mode"], set()).add(r["id"])
    modes = sorted((m for m, got in answered.items() if got == wanted), key=_order)
    summary = summarize([r for r in rows if r["mode"] in modes], modes)
    summary["incomplete_modes"] = {m: len(got) for m, got in answered.items() if m not in modes}
    summary["problems"] = len(ids)
    return summary


def plot_frontier(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {r["mode"]: r for r in summary["modes"]}
    fig, ax = plt.subplots(figsize=(6, 4.5))
    # Labels are short (K or "kept", then the large-model share) and each family's sit on its own
    # side of the point: the operating points crowd together.
    for family, style, offset in (("relay", "o-", (4, 5)), ("random_switch", "s--", (4, -11))):
        pts = sorted(
            (r["speedup_vs_large_only"] or 0.0, r["accuracy"], m)
            for m, r in rows.items()
            if m.partition("@")[0] == family
        )
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=family.replace("_", " "))
            for x, y, m in pts:
                k = m.partition("@")[2] or "kept"
                util = rows[m]["large_utilization"]
                ax.annotate(f"{k} {util:.2f}", (x, y), textcoords="offset points", xytext=offset, fontsize=7)
    for m, marker in (("large_only", "^"), ("small_only", "v")):
        if m in rows:
            r = rows[m]
            x, y = r["speedup_vs_large_only"], r["accuracy"]
            ax.plot([x], [y], marker, markersize=9, label=m.replace("_", " "))
    ax.set_xlabel("speedup vs large-only (mean latency, same run)")
    ax.set_title("labels: top-K cues (kept = the profile's set), large-model share", fontsize=8)
    ax.set_ylabel(f"pass@1 on {summary['problems']} problems")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, help="a run_eval --out folder")
    p.add_argument("--dataset", required=True, help="the run's dataset (it fixes which problems come first)")
    p.add_argument("--limit", type=int, default=50, help="the first N problems (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: the run folder)")
    args = p.parse_args(argv)
    results = args.run_dir / "results.jsonl"
    if not results.is_file():
        p.error(f"{results}: no such file (run evals.run_eval with --out {args.run_dir} first)")
    ids = [q.id for q in load_dataset(args.dataset, args.limit)]
    summary = frontier(read_jsonl(results), ids)  # read only: a run may still be appending
    summary["config"] = {"dataset": args.dataset, "limit": args.limit, "run_dir": str(args.run_dir)}
    out = args.out or args.run_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "frontier.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = markdown(summary)
    if summary["incomplete_modes"]:
        text += f"\nLeft out (not every problem answered yet): {summary['incomplete_modes']}\n"
    (out / "frontier.md").write_text(text)
    plot_frontier(summary, out / "frontier.png")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
