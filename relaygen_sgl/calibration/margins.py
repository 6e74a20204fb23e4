"""Probability margins and cue segments: the pure maths of calibration."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from relaygen_sgl.cues import SENTENCE_END_REGEX, CueMatcher


def token_margins(top_logprobs: Sequence[Sequence[Sequence[float | int | None]]]) -> list[float]:
    """Top-1 minus top-2 probability per position, from SGLang ``*_top_logprobs`` entries
    (each a list of ``[logprob, token_id, text]``, best first)."""
    out = []
    for entry in top_logprobs:
        if not entry:
            raise ValueError("a position has no top logprobs; request top_logprobs_num=2")
        p1 = math.exp(float(entry[0][0]))
        p2 = math.exp(float(entry[1][0])) if len(entry) > 1 else 0.0
        out.append(p1 - p2)
    return out


SegmentSpan = Literal["after-cue", "with-cue"]
SEGMENT_SPANS: tuple[str, ...] = ("after-cue", "with-cue")


@dataclass(frozen=True)
class CueSegment:
    cue: str
    start_token: int  # first scored token: after the cue, or the first overlapping it (with-cue)
    end_token: int  # one past the token that holds the sentence end
    start_char: int
    end_char: int


def cue_segments(
    text: str,
    offsets: Sequence[tuple[int, int]],
    matcher: CueMatcher,
    sentence_end_regex: str = SENTENCE_END_REGEX,
    span: SegmentSpan = "after-cue",
) -> list[CueSegment]:
    """Each cue occurrence's segment up to the end of its sentence, in token indices.

    ``after-cue`` (the paper's span, the default) starts at the first token that begins
    after the cue: what the small model writes, since the large model wrote the cue and any
    token that straddles its end.  ``with-cue`` starts at the first token overlapping the cue.
    Both keep the token holding the sentence end, which the small model writes too (the
    reference implementation stops one token short of it).
    """
    if span not in SEGMENT_SPANS:
        raise ValueError(f"span must be one of {', '.join(SEGMENT_SPANS)}, got {span!r}")
    end_re = re.compile(sentence_end_regex)
    segs = []
    for hit in matcher.find_all(text):
        m = end_re.search(text, hit.end)
        end_char = m.end() if m else len(text)
        if span == "with-cue":
            start_char = hit.start
            start_tok = next((i for i, (_, e) in enumerate(offsets) if e > hit.start), len(offsets))
        else:
            start_char = hit.end
            start_tok = next((i for i, (s, _) in enumerate(offsets) if s >= hit.end), len(offsets))
        end_tok = next((i + 1 for i, (s, e) in enumerate(offsets) if e >= end_char), len(offsets))
        if end_tok > start_tok:
            segs.append(CueSegment(hit.cue, start_tok, end_tok, start_char, end_char))
    return segs


KeepRule = Literal["paper", "significant"]
KEEP_RULES: tuple[str, ...] = ("paper", "significant")


@dataclass
class ScoredTrace:
    margins: list[float]
    segments: list[CueSegment]


@dataclass
class CueStat:
    cue: str
    count: int
    segment_margin: float
    elsewhere_margin: float
    delta: float
    ci_low: float
    ci_high: float
    kept: bool = False


def cue_statistics(
    traces: Sequence[ScoredTrace],
    cues: Sequence[str],
    *,
    min_count: int = 3,
    threshold: float = 0.0,
    n_boot: int = 1000,
    seed: int = 0,
    keep: KeepRule = "paper",
) -> list[CueStat]:
    """Per cue: mean margin in its segments vs. elsewhere in the same traces.

    "Elsewhere" is every token of the traces that contain the cue, outside that
    cue's segments.  The CI bootstraps over segments (each segment's tokens stay
    together).  A cue seen at least ``min_count`` times is kept when its delta is above
    ``threshold`` (``keep="paper"``, the reference's rule) or when its whole 95% CI is
    (``keep="significant"``).  Returned ranked by delta, kept cues first.
    """
    if keep not in KEEP_RULES:
        raise ValueError(f"keep must be one of {', '.join(KEEP_RULES)}, got {keep!r}")
    rng = random.Random(seed)
    stats = []
    for cue in cues:
        seg_tokens: list[list[float]] = []
        elsewhere: list[float] = []
        for tr in traces:
            mine = [s for s in tr.segments if s.cue == cue]
            if not mine:
                continue
            inside = set()
            for s in mine:
                idx = range(s.start_token, min(s.end_token, len(tr.margins)))
                seg_tokens.append([tr.margins[i] for i in idx])
                inside.update(idx)
            elsewhere += [m for i, m in enumerate(tr.margins) if i not in inside]
        seg_tokens = [t for t in seg_tokens if t]
        if not seg_tokens or not elsewhere:
            continue
        flat = [m for t in seg_tokens for m in t]
        seg_mean = sum(flat) / len(flat)
        else_mean = sum(elsewhere) / len(elsewhere)
        boots = []
        for _ in range(n_boot):
            sample = [seg_tokens[rng.randrange(len(seg_tokens))] for _ in seg_tokens]
            f = [m for t in sample for m in t]
            boots.append(sum(f) / len(f) - else_mean)
        boots.sort()
        lo = boots[int(0.025 * (n_boot - 1))] if boots else seg_mean - else_mean
        hi = boots[int(0.975 * (n_boot - 1))] if boots else seg_mean - else_mean
        delta = seg_mean - else_mean
        above = (lo if keep == "significant" else delta) > threshold
        stats.append(
            CueStat(
                cue,
                len(seg_tokens),
                seg_mean,
                else_mean,
                delta,
                lo,
                hi,
                kept=above and len(seg_tokens) >= min_count,
            )
        )
    stats.sort(key=lambda s: (not s.kept, -s.delta))
    return stats
