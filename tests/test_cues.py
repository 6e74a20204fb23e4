"""Cue and sentence-end rules (pure unit tests)."""

from __future__ import annotations

import re

import pytest
from sglang.srt.sampling.sampling_params import MAX_LEN, get_max_seq_length

from relaygen_sgl.cues import (
    MAX_STOP_REGEX_BYTES,
    MAX_STOP_REGEX_COUNT,
    CueMatcher,
    sentence_end,
    stop_regexes,
)

CUES = ["Therefore,", "Thus", "So", "Now,", "Wait,", "Alternatively"]


def fires(text: str, cues=CUES, case_sensitive: bool = True) -> bool:
    """Does SGLang's check (re.search of each stop_regex) fire on output that follows ". "?"""
    return any(re.search(p, ". " + text) for p in stop_regexes(cues, case_sensitive))


@pytest.mark.parametrize(
    "text,expected",
    [
        ("I know the answer", False),  # "now" inside "know"
        ("Now, we add", True),
        ("Now we add", False),  # cue is "Now," with its comma
        ("So we get 7", True),
        ("Some numbers", False),  # "So" is a prefix of "Some"
        ("So", False),  # next char unknown yet: could still become "Some"
        ("So,", True),
        ("Also the sum", False),  # "so" inside "Also"
        ("Thus 3", True),
        ("Thusly", False),
        ("Therefore the sum", False),  # cue needs the comma
        ("Therefore, the sum", True),
        ("Alternatively, count", True),
        ("Alternatively count", True),  # no comma in this cue: any non-word char ends it
        ("so we get 7", False),  # case-sensitive by default
        ("x=2.So, then", True),
    ],
)
def test_cue_matching(text: str, expected: bool):
    assert fires(text) is expected
    assert (CueMatcher(CUES).first(text) is not None) is expected


def test_case_insensitive_profiles():
    assert fires("so we get 7", case_sensitive=False)
    assert not fires("I know it", case_sensitive=False)
    assert CueMatcher(CUES, case_sensitive=False).first("therefore, yes").cue == "Therefore,"


def test_matcher_positions_and_longest_cue():
    m = CueMatcher(["Now", "Now,", "So"])
    hits = m.find_all("We know. Now, so. So it is")
    assert [(h.cue, h.start, h.end) for h in hits] == [("Now,", 9, 13), ("So", 18, 20)]


def test_multiword_cue():
    assert fires("Let me check this", cues=["Let me check"])
    assert not fires("Let me checkmate", cues=["Let me check"])


@pytest.mark.parametrize(
    "text,end",
    [
        ("the sum is 42. Next", 14),
        ("is it 3? yes", 8),
        ("wow! ok", 4),
        ("first line\n\nsecond", 12),
        ("x is 3.5 and y. Then", 15),  # decimal is not an end
        ("we use e.g. sums. Then", 17),  # abbreviation is not an end
        ("that is, i.e. the sum. ok", 22),
        ("see Fig. 2 here.", 16),
        ("the answer is 3. Then", 16),  # dot after a digit ends once whitespace follows
        ("the answer is 3.", None),  # ... and not before
        ("no end here", None),
    ],
)
def test_sentence_end(text: str, end: int | None):
    assert sentence_end(text) == end


def test_stop_regexes_respect_sglang_limits():
    many = [f"Cue{i}" for i in range(300)]
    pats = stop_regexes(many)
    assert 1 < len(pats) <= MAX_STOP_REGEX_COUNT
    assert all(len(p.encode()) <= MAX_STOP_REGEX_BYTES for p in pats)
    for cue in many[::37]:
        assert any(re.search(p, f"ok. {cue} then") for p in pats)
    # Bounded patterns keep SGLang's tail window short (it treats lookarounds as unbounded).
    assert all(get_max_seq_length(p) < 64 for p in stop_regexes(CUES))
    assert all(get_max_seq_length(p) < MAX_LEN for p in pats)


def test_too_many_cues_is_a_clear_error():
    with pytest.raises(ValueError, match="SGLang allows 32"):
        stop_regexes([f"LongCueWord{i:04d}" for i in range(2000)])
