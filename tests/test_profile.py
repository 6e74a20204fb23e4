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


# The reference's lists (jiwonsong-dev/RelayGen utils/utils.py: QWEN3_SWITCH_CUES, R1_SWITCH_CUES), in
# its order; its "So " (a stop string with a trailing space) is our word-boundary cue "So".
PAPER_QWEN3 = ["Oh,", "another,", "Thus", "Now", "Alternatively", "alternatively,", "Thus,", "Therefore",
               "similarly", "similarly,", "now", "Again", "specifically,", "Again,", "Similarly,", "Now,",
               "Specifically,", "Hence", "Similarly", "Other", "now,", "hence", "Specifically", "So",
               "Therefore,", "Wait,", "Also", "So,"]  # fmt: skip
PAPER_R1 = ["Wait", "Thus", "thus", "similarly", "Again,", "Now", "Therefore", "hence", "Hence,", "Now,",
            "Thus,", "Oh,", "Similarly,", "Any", "Therefore,", "Alternatively,", "now,", "So,", "now",
            "verify", "Specifically,", "Alternatively", "Ah,", "wait", "So"]  # fmt: skip


@pytest.mark.parametrize(
    "name,cues,count",
    [("paper-qwen3-32b__qwen3-1.7b", PAPER_QWEN3, 28),
     ("paper-deepseek-r1-distill-qwen-32b__1.5b", PAPER_R1, 25)],
)  # fmt: skip
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
