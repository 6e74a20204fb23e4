"""Calibration inputs and trace/score steps against a fake runtime (no servers)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from relaygen_sgl.calibration import traces as traces_mod
from relaygen_sgl.calibration.io import CalibrationInputError, cue_list_path, load_cues
from relaygen_sgl.calibration.traces import generate_traces, score_traces
from relaygen_sgl.runtime_client import GenerateResult, RuntimeClient

# DEFAULT_CUE_TOKENS of the reference (jiwonsong-dev/RelayGen utils/utils.py), in its order; its
# "So " and "so " are our word-boundary "So" and "so".
PAPER_CANDIDATES = [
    "Therefore", "Therefore,", "Thus", "Thus,", "So,", "So", "Similarly", "Similarly,",
    "Also", "Also,", "Alternatively", "Alternatively,", "Wait", "Wait,", "Hmm", "Hmm,",
    "But", "But,", "However", "However,", "Hence", "Hence,", "Another", "Another,",
    "Oh", "Oh,", "Maybe", "Maybe,", "Other", "Other,", "Again", "Again,", "Now", "Now,",
    "Ah", "Ah,", "Any", "Any,", "Specifically", "Specifically,",
    "therefore", "therefore,", "thus", "thus,", "so,", "so", "similarly", "similarly,",
    "also", "also,", "alternatively", "alternatively,", "wait", "wait,", "hmm", "hmm,",
    "but", "but,", "however", "however,", "hence", "hence,", "another", "another,",
    "oh", "oh,", "maybe", "maybe,", "other", "other,", "again", "again,", "now", "now,",
    "ah", "ah,", "any", "any,", "specifically", "specifically,",
    "check", "double-check", "verify",
    "then", "then,", "Then", "Then,",
    "next", "next,", "Next", "Next,",
]  # fmt: skip
COMPACT_CANDIDATES = [
    "Therefore,", "Therefore", "Thus,", "Thus", "So,", "So", "Hence,", "Hence", "Now,", "Now", "Next,",
    "Then,", "Similarly,", "Similarly", "Wait,", "Wait", "Alternatively,", "Alternatively", "But",
    "However,", "Also,", "Let me", "Let me check", "Let me think", "Okay,", "OK,", "First,", "Finally,",
    "In summary,",
]  # fmt: skip


def test_default_candidates_are_the_reference_91():
    assert len(PAPER_CANDIDATES) == len(set(PAPER_CANDIDATES)) == 91
    assert load_cues() == PAPER_CANDIDATES
    assert load_cues("paper") == PAPER_CANDIDATES


def test_compact_candidates_stay_selectable_by_name_or_path(tmp_path: Path):
    assert load_cues("compact") == COMPACT_CANDIDATES
    assert cue_list_path("compact").name == "candidate_cues_compact.txt"
    own = tmp_path / "compact"  # a real file wins over a bundled name
    own.write_text("Hmm,\n")
    assert load_cues(own) == ["Hmm,"]
    with pytest.raises(CalibrationInputError, match="not found"):
        load_cues(tmp_path / "missing.txt")


class FakeTokenizer:
    """One token per character; the chat template wraps the user turn."""

    def apply_chat_template(self, messages: list[dict[str, str]], tokenize: bool = False,
                            add_generation_prompt: bool = True) -> str:  # fmt: skip
        return f"<u>{messages[-1]['content']}</u><a>"

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]

    def __call__(self, text: str, add_special_tokens: bool = False,
                 return_offsets_mapping: bool = False) -> dict[str, Any]:  # fmt: skip
        return {"input_ids": self.encode(text), "offset_mapping": [(i, i + 1) for i in range(len(text))]}


class FakeRuntime(RuntimeClient):
    def __init__(self) -> None:
        super().__init__("http://fake.invalid", name="fake")
        self.requests: list[dict[str, Any]] = []

    @property
    def tokenizer(self) -> FakeTokenizer:  # type: ignore[override]
        return FakeTokenizer()

    def generate(self, **kw: Any) -> GenerateResult:  # type: ignore[override]
        self.requests.append(kw)
        if kw.get("return_logprob"):
            n = len(kw["input_ids"]) - kw["logprob_start_len"]
            row = [[math.log(0.75), 1, None], [math.log(0.25), 2, None]]
            return GenerateResult("", [], 0, 1, 0, "length", None, 0.0,
                                  {"input_top_logprobs": [None] + [row] * (n - 1)})  # fmt: skip
        return GenerateResult("So we add. Done.", [], 0, 16, 0, "length", None, 0.0)


def test_traces_use_the_chat_template_the_paper_sampling_and_a_clamped_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(traces_mod, "token_limit", lambda client: 40)
    rt = FakeRuntime()
    sampling = {"temperature": 0.6, "top_p": 0.95, "top_k": 20}
    rows = generate_traces(["1+1?", "a much longer problem text"], rt, tmp_path / "t.jsonl", samples=2,
                           max_tokens=32768, sampling=sampling, threads=1)  # fmt: skip
    assert [r["id"] for r in rows] == ["p00000-s00", "p00000-s01", "p00001-s00", "p00001-s01"]
    prompts = {r["text"] for r in rt.requests}
    assert prompts == {"<u>1+1?</u><a>", "<u>a much longer problem text</u><a>"}
    by_prompt = {r["text"]: r["sampling_params"] for r in rt.requests}
    short, long_ = by_prompt["<u>1+1?</u><a>"], by_prompt["<u>a much longer problem text</u><a>"]
    assert short["max_new_tokens"] == 40 - len("<u>1+1?</u><a>")  # the context, not 32768
    assert long_["max_new_tokens"] == 40 - len("<u>a much longer problem text</u><a>")
    assert (short["temperature"], short["top_p"], short["top_k"]) == (0.6, 0.95, 20)
    assert len({r["sampling_params"]["sampling_seed"] for r in rt.requests}) == 4
    assert rows[0]["sampling"] == {**sampling, "max_tokens": 32768}
    # Resuming with other sampling would mix two calibrations: refused.
    with pytest.raises(CalibrationInputError, match="sampled with"):
        generate_traces(["1+1?"], rt, tmp_path / "t.jsonl", samples=3, max_tokens=2048,
                        sampling=sampling, threads=1)  # fmt: skip
    # top_k <= 0 is "off": SGLang's default.
    rt2 = FakeRuntime()
    generate_traces(["1+1?"], rt2, tmp_path / "u.jsonl", sampling={"top_k": -1}, threads=1)
    assert "top_k" not in rt2.requests[0]["sampling_params"]


def test_scoring_skips_the_prompt_and_cuts_traces_to_the_small_context(tmp_path, monkeypatch):
    trace = {"id": "p00000-s00", "problem": "1+1?", "reasoning": "So we add. Done."}
    monkeypatch.setattr(traces_mod, "token_limit", lambda client: None)
    (full,) = score_traces([trace], FakeRuntime(), tmp_path / "a.jsonl", threads=1)
    assert len(full["margins"]) == len(full["offsets"]) == len(trace["reasoning"]) and not full["cut"]
    assert full["margins"][0] == pytest.approx(0.5)
    monkeypatch.setattr(traces_mod, "token_limit", lambda client: 25)
    rt = FakeRuntime()
    (cut,) = score_traces([trace], rt, tmp_path / "b.jsonl", threads=1)
    prompt = len("<u>1+1?</u><a>")
    assert len(cut["margins"]) == 25 - prompt - 1 and cut["cut"]
    assert len(rt.requests[0]["input_ids"]) + 1 <= 25
    assert json.loads((tmp_path / "b.jsonl").read_text())["id"] == "p00000-s00"


class HealthyFake(FakeRuntime):
    model_info = {"model_path": "fake-model"}  # type: ignore[assignment]

    def health(self, timeout_s: float = 5.0) -> bool:
        return True


def test_calibrate_records_its_choices_in_the_provenance(tmp_path, monkeypatch):
    from relaygen_sgl.calibration.calibrate import calibrate

    monkeypatch.setattr(traces_mod, "token_limit", lambda client: 64)
    problems = tmp_path / "cal.jsonl"
    problems.write_text('{"problem": "1+1?"}\n')
    rt = HealthyFake()
    res = calibrate(large=rt, small=rt, out_dir=tmp_path / "out", problems_path=problems, min_count=1,
                    n_boot=20, show_progress=False)  # the paper's defaults  # fmt: skip
    prov = res.profile.provenance
    assert (prov["samples_per_problem"], prov["max_tokens"]) == (4, 32768)
    assert (prov["temperature"], prov["top_p"], prov["top_k"]) == (0.6, 0.95, 20)
    assert prov["max_new_tokens_range"] == [64 - len("<u>1+1?</u><a>")] * 2
    assert prov["segment_span"] == "after-cue"
    assert (prov["candidate_cues"], prov["candidate_count"]) == ("candidate_cues.txt", 91)
    assert prov["traces"] == 4
    so = next(s for s in res.stats if s.cue == "So")
    assert so.count == 4 and so.segment_margin == pytest.approx(0.5)
    calls = len(rt.requests)
    # Another span or cue list re-runs only the analysis: the saved traces and scores are reused.
    again = calibrate(large=rt, small=rt, out_dir=tmp_path / "out", problems_path=problems, min_count=1,
                      n_boot=20, show_progress=False, segment_span="with-cue", cues_file="compact")
    assert len(rt.requests) == calls
    prov = again.profile.provenance
    assert prov["segment_span"] == "with-cue" and prov["candidate_cues"] == "candidate_cues_compact.txt"
