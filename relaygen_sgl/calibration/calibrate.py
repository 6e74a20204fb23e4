"""``relaygen calibrate``: traces -> margins -> cue statistics -> cue profile + report."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relaygen_sgl.calibration.io import CUE_LISTS, cue_list_path, load_cues, load_problems
from relaygen_sgl.calibration.margins import (
    KEEP_RULES,
    SEGMENT_SPANS,
    CueStat,
    KeepRule,
    ScoredTrace,
    SegmentSpan,
    cue_segments,
    cue_statistics,
)
from relaygen_sgl.cues import SENTENCE_END_REGEX, CueMatcher
from relaygen_sgl.jsonl import read_jsonl
from relaygen_sgl.pair_args import add_runtime_args, open_runtimes
from relaygen_sgl.problem_sets import SPEC_HELP, add_field_args
from relaygen_sgl.profile import CueProfile
from relaygen_sgl.runtime.client import RuntimeClient

KEEP_DESCRIPTIONS = {"paper": "delta > {}", "significant": "95% CI of delta above {}"}


@dataclass
class CalibrationResult:
    profile: CueProfile
    stats: list[CueStat]
    out_dir: Path
    files: dict[str, Path]


def analyze(
    scored: list[dict[str, Any]],
    cues: list[str],
    *,
    min_count: int,
    threshold: float,
    n_boot: int,
    seed: int,
    span: SegmentSpan = "after-cue",
    keep: KeepRule = "paper",
) -> tuple[list[ScoredTrace], list[CueStat]]:
    matcher = CueMatcher(cues)
    traces = [
        ScoredTrace(
            r["margins"], cue_segments(r["reasoning"], r["offsets"], matcher, SENTENCE_END_REGEX, span)
        )
        for r in scored
    ]
    stats = cue_statistics(
        traces, cues, min_count=min_count, threshold=threshold, n_boot=n_boot, seed=seed, keep=keep
    )
    return traces, stats


def calibrate(
    *,
    large: Any | None,
    small: Any,
    out_dir: str | Path,
    problems_path: str | Path | None = None,
    traces_path: str | Path | None = None,
    split: str | None = None,
    question_field: str | None = None,
    large_name: str | None = None,
    small_name: str | None = None,
    cues_file: str | Path | None = None,
    samples: int = 4,
    seed: int = 0,
    max_tokens: int = 32768,
    temperature: float = 0.6,
    top_p: float = 0.95,
    top_k: int | None = 20,
    segment_span: SegmentSpan = "after-cue",
    threshold: float = 0.0,
    keep: KeepRule = "paper",
    min_count: int = 3,
    n_boot: int = 1000,
    threads: int = 4,
    min_large_tokens: int = 5,
    max_small_tokens: int = 64,
    show_progress: bool = True,
) -> CalibrationResult:
    """Run all three steps; every step resumes from the files already in ``out_dir``.

    ``problems_path``: the calibration set, any specifier of :func:`relaygen_sgl.problem_sets.load_problems`
    (with ``split`` and ``question_field``); it is loaded before ``out_dir`` is made.

    The defaults are the paper's: 4 traces per problem at T 0.6 / top_p 0.95 / top_k 20 with
    the full 32768-token budget (clamped to the runtime's context), segments scored after the
    cue.  ``top_k`` None or <= 0 turns the top-k cut off.
    """
    from tqdm import tqdm

    from relaygen_sgl.calibration.report import markdown_table, plot_deltas, plot_margins, write_csv
    from relaygen_sgl.calibration.traces import generate_traces, score_traces

    # One client per runtime for the whole run: its pooled connections, model info and tokenizer.
    large_client = RuntimeClient.of(large, "large") if large is not None else None
    small_client = RuntimeClient.of(small, "small")
    cues = load_cues(cues_file)
    problems = None
    if traces_path is None and problems_path is not None:  # a bad set leaves no --out folder behind
        problems = load_problems(problems_path, split=split, question_field=question_field)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sampling = {"temperature": temperature, "top_p": top_p, "top_k": top_k if top_k and top_k > 0 else None}
    if traces_path is not None:
        traces = read_jsonl(Path(traces_path))
        if not traces:
            raise ValueError(f"{traces_path}: no traces in the file")
        missing = [k for k in ("id", "problem", "reasoning") if k not in traces[0]]
        if missing:
            raise ValueError(f"{traces_path}: trace records need field '{missing[0]}'")
    else:
        if problems is None or large_client is None:
            raise ValueError("give a calibration set and a large runtime, or saved traces")
        if not large_client.health():
            raise ConnectionError(f"large runtime at {large_client.url} is not reachable")
        total = len(problems) * samples
        with tqdm(total=total, desc="traces", disable=not show_progress) as bar:
            traces = generate_traces(
                problems,
                large_client,
                out / "traces.jsonl",
                samples=samples,
                seed=seed,
                max_tokens=max_tokens,
                threads=threads,
                sampling=sampling,
                progress=bar.update,
            )
    if not small_client.health():
        raise ConnectionError(f"small runtime at {small_client.url} is not reachable")
    with tqdm(total=len(traces), desc="scoring", disable=not show_progress) as bar:
        scored = score_traces(
            traces, small_client, out / "scores.jsonl", threads=threads, progress=bar.update
        )
    scored_traces, stats = analyze(
        scored,
        cues,
        min_count=min_count,
        threshold=threshold,
        n_boot=n_boot,
        seed=seed,
        span=segment_span,
        keep=keep,
    )
    budgets = [t["max_new_tokens"] for t in traces if "max_new_tokens" in t]
    kept = [s for s in stats if s.kept]

    def cue(s: CueStat) -> dict[str, Any]:
        return {
            "text": s.cue,
            "delta": round(s.delta, 5),
            "count": s.count,
            "ci": [round(s.ci_low, 5), round(s.ci_high, 5)],
        }

    profile = CueProfile.from_dict(
        {
            "name": f"{large_name or 'large'}__{small_name or 'small'}",
            "large_model": large_name or (large_client.model_info["model_path"] if large_client else "large"),
            "small_model": small_name or small_client.model_info["model_path"],
            "cues": [cue(s) for s in kept],
            "ranking": [cue(s) for s in stats],  # kept first, then the rest: what --top-cues reaches into
            "min_large_tokens": min_large_tokens,
            "max_small_tokens": max_small_tokens,
            "provenance": {
                "source": "calibrated",
                "calibration_set": str(problems_path or traces_path),
                "traces": len(traces),
                "scored": len(scored),
                "seed": seed,
                # Sampling settings describe step 1; saved traces (--traces) came from elsewhere.
                **(
                    {
                        "samples_per_problem": samples,
                        **sampling,
                        "max_tokens": max_tokens,
                        # The budget each trace really got, after clamping to the runtime's context.
                        "max_new_tokens_range": [min(budgets), max(budgets)] if budgets else None,
                        "finished_traces": sum(bool(t.get("finished")) for t in traces),
                    }
                    if traces_path is None
                    else {"traces_file": str(traces_path)}
                ),
                "scored_cut_to_context": sum(bool(r.get("cut")) for r in scored),
                "segment_span": segment_span,
                "threshold": threshold,
                "keep": keep,
                "min_count": min_count,
                "bootstrap": n_boot,
                "candidate_cues": cue_list_path(cues_file).name,
                "candidate_count": len(cues),
                "date": dt.date.today().isoformat(),
            },
        }
    )
    files = {
        "profile": profile.save(out / "profile.json"),
        "csv": write_csv(stats, out / "cue_report.csv"),
        "markdown": out / "cue_report.md",
        "deltas_png": plot_deltas(stats, out / "cue_deltas.png"),
    }
    files["markdown"].write_text(
        f"# Cue calibration\n\n{len(scored)} traces scored; {len(kept)} of {len(stats)} "
        f"observed cues kept ({KEEP_DESCRIPTIONS[keep].format(threshold)}, count >= {min_count})."
        f"\n\n{markdown_table(stats)}"
    )
    if scored_traces:
        # Show the trace with the most cue segments: the plot is about them.
        best = max(scored_traces, key=lambda t: len(t.segments))
        files["margins_png"] = plot_margins(best, {s.cue for s in kept}, out / "margins.png")
    return CalibrationResult(profile, stats, out, files)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="learn a cue profile for a model pair from probability margins",
        description="Generate large-model reasoning traces on a calibration set, score them "
        "teacher-forced with the small model (top-1 minus top-2 probability per reasoning "
        "token), and keep the cues whose segments have a higher mean margin than the rest. "
        "Writes profile.json, cue_report.csv/.md, cue_deltas.png and margins.png to --out. "
        "Every step resumes from the files already in --out.",
    )
    src = p.add_argument_group("input")
    src.add_argument("--problems", help=f"calibration set: {SPEC_HELP}; answers are not needed")
    add_field_args(src, answers=False)
    src.add_argument("--traces", help="saved traces JSONL (id, problem, reasoning) instead of step 1")
    src.add_argument(
        "--cues-file",
        default=None,
        help="candidate cue list: a file (one cue per line) or a bundled list by name: "
        f"{', '.join(CUE_LISTS)} (default: paper, the reference implementation's 91 candidates)",
    )
    rt = p.add_argument_group(
        "runtimes (URL of a running server, or a model folder to start; "
        "the large one is not needed with --traces)"
    )
    rt.add_argument("--large-url", help="URL of the large model's SGLang server")
    rt.add_argument("--small-url", help="URL of the small model's SGLang server")
    rt.add_argument("--large-model", help="HF folder of the large model (started for the run)")
    rt.add_argument("--small-model", help="HF folder of the small model (started for the run)")
    rt.add_argument("--large-name", help="large model id written into the profile")
    rt.add_argument("--small-name", help="small model id written into the profile")
    gen = p.add_argument_group("step 1: traces")
    gen.add_argument("--samples", type=int, default=4, help="traces per problem (default: %(default)s)")
    gen.add_argument("--seed", type=int, default=0, help="base seed for sampling and bootstrap")
    gen.add_argument(
        "--max-tokens",
        type=int,
        default=32768,
        help="token budget per trace, clamped to the runtime's context (default: %(default)s)",
    )
    gen.add_argument("--temperature", type=float, default=0.6, help="(default: %(default)s)")
    gen.add_argument("--top-p", type=float, default=0.95, help="(default: %(default)s)")
    gen.add_argument("--top-k", type=int, default=20, help="(default: %(default)s; -1: off)")
    gen.add_argument("--threads", type=int, default=4, help="concurrent requests per step")
    sel = p.add_argument_group("step 3: cue selection and profile")
    sel.add_argument(
        "--segment-span",
        choices=SEGMENT_SPANS,
        default="after-cue",
        help="tokens scored per cue: from after the cue (what the small model writes; "
        "the paper's) or from the cue itself, to the sentence end (default: %(default)s)",
    )
    sel.add_argument("--threshold", type=float, default=0.0, help="keep cues with delta above this")
    sel.add_argument(
        "--keep",
        choices=KEEP_RULES,
        default="paper",
        help="paper: keep a cue whose mean delta is above --threshold (the reference's "
        "rule); significant: only one whose whole 95%% bootstrap CI is (default: %(default)s)",
    )
    sel.add_argument("--min-count", type=int, default=3, help="keep cues seen at least this often")
    sel.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CI")
    sel.add_argument(
        "--min-large-tokens",
        type=int,
        default=5,
        help="profile: large tokens per turn before a cue may fire",
    )
    sel.add_argument("--max-small-tokens", type=int, default=64, help="profile: cap on a small-model segment")
    p.add_argument("--out", required=True, help="output folder (also the resume state)")
    add_runtime_args(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if not args.problems and not args.traces:
        print("relaygen calibrate: give --problems or --traces", file=sys.stderr)
        return 2
    # With saved traces the large model only names the profile: it is not started.
    roles = ("small",) if args.traces else ("large", "small")
    if any(not (getattr(args, f"{r}_url") or getattr(args, f"{r}_model")) for r in roles):
        print(
            "relaygen calibrate: give --small-url/--small-model and, without --traces, "
            "--large-url/--large-model",
            file=sys.stderr,
        )
        return 2
    with ExitStack() as stack:
        urls = open_runtimes(args, stack, roles)
        result = calibrate(
            large=urls.get("large") or args.large_url,
            small=urls["small"],
            out_dir=args.out,
            problems_path=args.problems,
            traces_path=args.traces,
            split=args.split,
            question_field=args.question_field,
            large_name=args.large_name or args.large_model,
            small_name=args.small_name or args.small_model,
            cues_file=args.cues_file,
            samples=args.samples,
            seed=args.seed,
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            segment_span=args.segment_span,
            threshold=args.threshold,
            keep=args.keep,
            min_count=args.min_count,
            n_boot=args.bootstrap,
            threads=args.threads,
            min_large_tokens=args.min_large_tokens,
            max_small_tokens=args.max_small_tokens,
        )
    print(result.files["markdown"].read_text())
    print(json.dumps({k: str(v) for k, v in result.files.items()}))
    return 0
