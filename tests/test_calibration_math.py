"""Margin, segmentation and cue statistics on hand-built numbers."""

from __future__ import annotations

import math

import pytest

from relaygen_sgl.calibration.margins import (
    CueSegment,
    ScoredTrace,
    cue_segments,
    cue_statistics,
    token_margins,
)
from relaygen_sgl.cues import CueMatcher

TEXT = "We add. So the sum is 7. Done."
TOKENS = ["We", " add", ".", " So", " the", " sum", " is", " 7", ".", " Done", "."]
MARGINS = [0.1, 0.2, 0.3, 0.9, 0.8, 0.7, 0.9, 0.8, 0.9, 0.2, 0.1]


def offsets() -> list[tuple[int, int]]:
    out, pos = [], 0
    for t in TOKENS:
        out.append((pos, pos + len(t)))
        pos += len(t)
    assert "".join(TOKENS) == TEXT
    return out


def test_token_margins_are_top1_minus_top2_probability():
    tops = [
        [[math.log(0.7), 5, None], [math.log(0.2), 9, None]],
        [[math.log(0.5), 1, None], [math.log(0.5), 2, None]],
        [[0.0, 3, None]],  # a single candidate: margin is its probability
    ]
    assert token_margins(tops) == pytest.approx([0.5, 0.0, 1.0])
    with pytest.raises(ValueError, match="top_logprobs_num=2"):
        token_margins([[]])


def test_with_cue_segments_run_from_cue_to_sentence_end():
    segs = cue_segments(TEXT, offsets(), CueMatcher(["So", "Done"]), span="with-cue")
    assert [(s.cue, s.start_token, s.end_token, s.start_char, s.end_char) for s in segs] == [
        ("So", 3, 9, 8, 24),
        ("Done", 9, 11, 25, 30),
    ]


def test_after_cue_segments_are_what_the_small_model_writes():
    segs = cue_segments(TEXT, offsets(), CueMatcher(["So", "Done"]))  # the default span
    assert [(s.cue, s.start_token, s.end_token, s.start_char, s.end_char) for s in segs] == [
        ("So", 4, 9, 10, 24),  # " the sum is 7." : the cue token " So" is the large model's
        ("Done", 10, 11, 29, 30),  # just the final "."
    ]
    assert "".join(TOKENS[4:9]) == " the sum is 7."


def test_after_cue_skips_a_token_that_straddles_the_cue_end():
    # Tokens "Now", ", we" and " add": the large model wrote ", we" (it holds the cue's comma).
    text, toks = "Now, we add. Ok", ["Now", ", we", " add", ".", " Ok"]
    offs, pos = [], 0
    for t in toks:
        offs.append((pos, pos + len(t)))
        pos += len(t)
    matcher = CueMatcher(["Now,"])
    (seg,) = cue_segments(text, offs, matcher)
    assert (seg.start_token, seg.end_token) == (2, 4)
    (seg,) = cue_segments(text, offs, matcher, span="with-cue")
    assert (seg.start_token, seg.end_token) == (0, 4)
    # A cue whose sentence ends inside its own last token leaves nothing for the small model.
    assert cue_segments("So. x", [(0, 3), (3, 5)], CueMatcher(["So"])) == []
    with pytest.raises(ValueError, match="span must be"):
        cue_segments(text, offs, matcher, span="cue-only")  # type: ignore[arg-type]


def test_segments_ignore_substrings_and_decimals():
    text = "I know 3.5 is half. Now, 2.5 is less. Done"
    toks = list(text)  # one char per token
    offs = [(i, i + 1) for i in range(len(toks))]
    segs = cue_segments(text, offs, CueMatcher(["now", "Now,"]), span="with-cue")
    assert [(s.cue, text[s.start_char : s.end_char]) for s in segs] == [("Now,", "Now, 2.5 is less.")]
    segs = cue_segments(text, offs, CueMatcher(["now", "Now,"]))
    assert [(s.cue, text[s.start_char : s.end_char]) for s in segs] == [("Now,", " 2.5 is less.")]


def test_cue_statistics_exact_numbers():
    trace = ScoredTrace(MARGINS, cue_segments(TEXT, offsets(), CueMatcher(["So", "Done"]), span="with-cue"))
    stats = {s.cue: s for s in cue_statistics([trace], ["So", "Done", "Never"], min_count=1, n_boot=50)}
    assert set(stats) == {"So", "Done"}  # a cue that never occurs has no statistic
    so, done = stats["So"], stats["Done"]
    assert so.count == 1
    assert so.segment_margin == pytest.approx(5.0 / 6)
    assert so.elsewhere_margin == pytest.approx(0.9 / 5)
    assert so.delta == pytest.approx(5.0 / 6 - 0.18)
    assert so.ci_low == pytest.approx(so.delta) and so.ci_high == pytest.approx(so.delta)
    assert so.kept
    assert done.segment_margin == pytest.approx(0.15)
    assert done.elsewhere_margin == pytest.approx(5.6 / 9)
    assert done.delta == pytest.approx(0.15 - 5.6 / 9) and not done.kept


def test_after_cue_statistics_exact_numbers():
    trace = ScoredTrace(MARGINS, cue_segments(TEXT, offsets(), CueMatcher(["So", "Done"])))
    stats = {s.cue: s for s in cue_statistics([trace], ["So", "Done"], min_count=1, n_boot=50)}
    so, done = stats["So"], stats["Done"]
    assert so.segment_margin == pytest.approx(4.1 / 5)  # tokens 4..8, without " So"
    assert so.elsewhere_margin == pytest.approx(1.8 / 6)  # " So" now counts as elsewhere
    assert done.segment_margin == pytest.approx(0.1) and done.elsewhere_margin == pytest.approx(5.8 / 10)


def test_min_count_threshold_and_ranking():
    trace = ScoredTrace(MARGINS, cue_segments(TEXT, offsets(), CueMatcher(["So", "Done"]), span="with-cue"))
    stats = cue_statistics([trace, trace], ["Done", "So"], min_count=3, n_boot=10)
    assert [s.cue for s in stats] == ["So", "Done"]  # ranked by delta
    assert stats[0].count == 2 and not stats[0].kept  # seen twice < min_count 3
    stats = cue_statistics([trace], ["So"], min_count=1, threshold=0.7, n_boot=10)
    assert not stats[0].kept  # delta 0.653 is below the threshold


def test_bootstrap_ci_brackets_delta_with_varied_segments():
    text = "So a. So b. So c. x y z."
    toks = list(text)
    offs = [(i, i + 1) for i in range(len(toks))]
    margins = [0.9, 0.9, 0.9, 0.9, 0.9, 0.1] + [0.5] * 6 + [0.7] * 6 + [0.1] * (len(toks) - 18)
    trace = ScoredTrace(margins, cue_segments(text, offs, CueMatcher(["So"]), span="with-cue"))
    (st,) = cue_statistics([trace], ["So"], min_count=1, n_boot=400, seed=3)
    assert st.count == 3
    assert st.ci_low < st.delta < st.ci_high


def test_keep_significant_drops_a_cue_whose_ci_reaches_below_zero():
    # "So": segments of mean 0.9, 0.0 and 0.6 against 0.4 elsewhere: delta +0.1, but a resample
    # of its low segment alone is -0.4.  "Thus": every segment well above elsewhere.
    noisy = ScoredTrace(
        [0.9] * 3 + [0.0] * 3 + [0.6] * 3 + [0.4] * 6,
        [CueSegment("So", a, a + 3, a, a + 3) for a in (0, 3, 6)],
    )
    steady = ScoredTrace([0.9] * 9 + [0.4] * 6, [CueSegment("Thus", a, a + 3, a, a + 3) for a in (0, 3, 6)])
    kw = {"min_count": 3, "n_boot": 400, "seed": 0}
    traces, cues = [noisy, steady], ["So", "Thus"]
    paper = {s.cue: s for s in cue_statistics(traces, cues, **kw)}
    significant = {s.cue: s for s in cue_statistics(traces, cues, keep="significant", **kw)}
    assert paper["So"].delta == pytest.approx(0.1) and paper["So"].ci_low < 0 < paper["So"].ci_high
    assert paper["So"].kept and not significant["So"].kept
    assert paper["Thus"].kept and significant["Thus"].kept and significant["Thus"].ci_low > 0
    with pytest.raises(ValueError, match="keep must be one of paper, significant"):
        cue_statistics([steady], ["Thus"], keep="loose")  # type: ignore[arg-type]
