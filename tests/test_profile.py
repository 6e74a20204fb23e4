"""Cue profile files: round trip, validation errors that name the field, bundled profiles."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sglang.srt.sampling.sampling_params import get_max_seq_length

from relaygen_sgl.cues import MAX_STOP_REGEX_BYTES, MAX_STOP_REGEX_COUNT
from relaygen_sgl.profile import CueProfile, ProfileError, bundled_profiles

GOOD = {
    "large_model": "Qwen/Qwen3-32B",
    "small_model": "Qwen/Qwen3-1.7B",
    "cues": ["Therefore,", {"text": "So", "delta": 0.12, "count": 40, "ci": [0.05, 0.2]}],
}


def test_round_trip(tmp_path: Path):
    prof = CueProfile.from_dict(GOOD)
    assert prof.cue_texts == ["Therefore,", "So"]
    assert prof.min_large_tokens == 5 and prof.max_small_tokens == 64
    again = CueProfile.load(prof.save(tmp_path / "p.json"))
    assert again == prof


@pytest.mark.parametrize(
    "patch,field",
    [
        ({"large_model": ""}, "large_model"),
        ({"cues": "So"}, "cues"),
        ({"cues": ["So", "So"]}, "cues"),
        ({"cues": [{"delta": 1}]}, "cues[0].text"),
        ({"cues": [" So"]}, "cues[0].text"),
        ({"cues": [{"text": "So", "count": -1}]}, "cues[0].count"),
        ({"cues": [{"text": "So", "ci": [1]}]}, "cues[0].ci"),
        ({"min_large_tokens": -1}, "min_large_tokens"),
        ({"max_small_tokens": 0}, "max_small_tokens"),
        ({"sentence_end_regex": "("}, "sentence_end_regex"),
        ({"case_sensitive": "yes"}, "case_sensitive"),
        ({"version": 9}, "version"),
        ({"mystery": 1}, "mystery"),
    ],
)
def test_bad_profiles_name_the_field(patch: dict, field: str, tmp_path: Path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**GOOD, **patch}))
    with pytest.raises(ProfileError, match=re.escape(f"field '{field}'")):
        CueProfile.load(path)
    assert json.loads(path.read_text()) == {**GOOD, **patch}  # the file is left as it was


def test_not_json_and_missing_file(tmp_path: Path):
    bad = tmp_path / "x.json"
    bad.write_text("{nope")
    with pytest.raises(ProfileError, match="not valid JSON"):
        CueProfile.load(bad)
    with pytest.raises(ProfileError, match="no such profile"):
        CueProfile.load(tmp_path / "missing.json")


def test_bundled_profiles_load():
    names = bundled_profiles()
    assert "paper-qwen3-32b__qwen3-1.7b" in names
    assert "paper-deepseek-r1-distill-qwen-32b__1.5b" in names
    for name in names:
        prof = CueProfile.load(name)
        assert prof.cues and prof.provenance.get("source")
    # The default pair ships the output of `relaygen calibrate`, the 32B pairs the paper's lists.
    assert CueProfile.load("qwen2.5-coder-1.5b__smollm2-135m").provenance["source"] == "calibrated"
    assert CueProfile.load("paper-qwen3-32b__qwen3-1.7b").provenance["source"] == "paper"


def test_the_line_end_variant_differs_from_the_default_profile_only_where_a_segment_ends():
    base = CueProfile.load("qwen2.5-coder-1.5b__qwen2.5-coder-0.5b")
    line = CueProfile.load("qwen2.5-coder-1.5b__qwen2.5-coder-0.5b-line-end")
    assert (line.cues, line.ranking, line.min_large_tokens, line.max_small_tokens) == (
        base.cues,
        base.ranking,
        base.min_large_tokens,
        base.max_small_tokens,
    )
    # What the instruct pair writes after a cue: words, then a display equation on its own line.
    text = "the total is:\n\\[ 3.5 + 2 = 5.5 \\]\n"
    assert re.search(line.sentence_end_regex, text).start() == text.index("\n")
    assert re.search(base.sentence_end_regex, text) is None  # runs on through the equation
    for s in ("It costs 3.5 dollars. Then", "e.g. this. Then"):  # decimals and abbreviations as before
        assert re.search(line.sentence_end_regex, s).start() == re.search(base.sentence_end_regex, s).start()


# The reference's lists (jiwonsong-dev/RelayGen utils/utils.py: QWEN3_SWITCH_CUES, R1_SWITCH_CUES), in
# its order; its "So " (a stop string with a trailing space) is our word-boundary cue "So".
PAPER_QWEN3 = [
    "Oh,",
    "another,",
    "Thus",
    "Now",
    "Alternatively",
    "alternatively,",
    "Thus,",
    "Therefore",
    "similarly",
    "similarly,",
    "now",
    "Again",
    "specifically,",
    "Again,",
    "Similarly,",
    "Now,",
    "Specifically,",
    "Hence",
    "Similarly",
    "Other",
    "now,",
    "hence",
    "Specifically",
    "So",
    "Therefore,",
    "Wait,",
    "Also",
    "So,",
]
PAPER_R1 = [
    "Wait",
    "Thus",
    "thus",
    "similarly",
    "Again,",
    "Now",
    "Therefore",
    "hence",
    "Hence,",
    "Now,",
    "Thus,",
    "Oh,",
    "Similarly,",
    "Any",
    "Therefore,",
    "Alternatively,",
    "now,",
    "So,",
    "now",
    "verify",
    "Specifically,",
    "Alternatively",
    "Ah,",
    "wait",
    "So",
]


@pytest.mark.parametrize(
    "name,cues,count",
    [
        ("paper-qwen3-32b__qwen3-1.7b", PAPER_QWEN3, 28),
        ("paper-deepseek-r1-distill-qwen-32b__1.5b", PAPER_R1, 25),
    ],
)
def test_paper_profiles_ship_the_reference_lists(name: str, cues: list[str], count: int):
    prof = CueProfile.load(name)
    assert len(cues) == len(set(cues)) == count
    assert prof.cue_texts == cues
    assert "utils/utils.py" in prof.provenance["reference_file"]
    assert "AMC 2023" in prof.provenance["calibration_set"]
    # Every cue still fires through SGLang's stop_regex check, within its limits.
    pats = prof.stop_regexes()
    assert 0 < len(pats) <= MAX_STOP_REGEX_COUNT
    assert all(len(p.encode()) <= MAX_STOP_REGEX_BYTES for p in pats)
    assert all(get_max_seq_length(p) < 64 for p in pats)  # bounded: SGLang's tail window stays short
    for cue in cues:
        assert any(re.search(p, f"ok. {cue} x") for p in pats), cue
    # Stricter than the reference's substring stop strings.
    assert not any(re.search(p, "ok. I know Otherwise x") for p in pats)


RANKED = {
    **GOOD,
    "cues": [{"text": "So", "delta": 0.3}, {"text": "Therefore,", "delta": 0.2}],
    "ranking": [
        {"text": "So", "delta": 0.3},
        {"text": "Therefore,", "delta": 0.2},
        {"text": "Wait,", "delta": -0.1},
        {"text": "Now,", "delta": -0.2},
    ],
}


def test_top_cues_turns_the_dial_both_ways(tmp_path: Path):
    prof = CueProfile.from_dict(RANKED)
    assert prof.top_cues(1).cue_texts == ["So"]  # fewer switches than the kept set
    assert prof.top_cues(2).cue_texts == prof.cue_texts  # the kept set
    assert prof.top_cues(4).cue_texts == ["So", "Therefore,", "Wait,", "Now,"]  # down the ranking
    saved = prof.top_cues(3).save(tmp_path / "p.json")
    assert CueProfile.load(saved).cue_texts == ["So", "Therefore,", "Wait,"]
    assert CueProfile.load(prof.save(tmp_path / "q.json")) == prof  # the ranking survives a round trip
    # A profile without a ranking (the paper's lists) ranks its own cues in order.
    assert CueProfile.from_dict(GOOD).top_cues(1).cue_texts == ["Therefore,"]


@pytest.mark.parametrize("k", [0, -1, 5, True, 1.5])
def test_top_cues_out_of_range_is_a_clear_error(k):
    with pytest.raises(ProfileError, match="top_cues must be an integer from 1 to 4"):
        CueProfile.from_dict(RANKED).top_cues(k)


def test_ranking_must_start_with_the_kept_cues():
    bad = {**RANKED, "ranking": list(reversed(RANKED["ranking"]))}
    with pytest.raises(ProfileError, match="field 'ranking' must start with the profile's cues"):
        CueProfile.from_dict(bad)
    with pytest.raises(ProfileError, match="field 'ranking' lists 'So' twice"):
        CueProfile.from_dict({**RANKED, "ranking": [*RANKED["ranking"], {"text": "So"}]})


def test_a_profile_names_both_sides_of_a_pair_mismatch():
    prof = CueProfile.from_dict(
        {**GOOD, "large_model": "qwen2.5-coder-1.5b", "small_model": "qwen2.5-coder-0.5b"}
    )
    assert prof.pair_mismatch("/m/qwen2.5-coder-1.5b-instruct", "/m/Qwen2.5-Coder-0.5B-Instruct/") is None
    warning = prof.pair_mismatch("/models/qwen2.5-coder-1.5b-instruct", "/models/smollm2-135m-instruct")
    assert warning is not None and "small runtime serves '/models/smollm2-135m-instruct'" in warning
    assert "calibrated for 'qwen2.5-coder-0.5b'" in warning and "large runtime" not in warning


def test_a_narrowed_profile_can_be_widened_again():
    assert CueProfile.from_dict(GOOD).top_cues(1).top_cues(2).cue_texts == ["Therefore,", "So"]
    assert CueProfile.from_dict(RANKED).top_cues(1).top_cues(4).cue_texts[-1] == "Now,"
