"""Calibration inputs, then the trace and scoring steps and calibrate's provenance on the tiny
pair (real SGLang servers: the chat template, the context clamp and the cut are the runtimes')."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relaygen_sgl import cli
from relaygen_sgl.calibration.calibrate import calibrate
from relaygen_sgl.calibration.io import CalibrationInputError, cue_list_path, load_cues
from relaygen_sgl.calibration.traces import generate_traces, score_traces, token_limit
from relaygen_sgl.reasoning import THINK_END
from relaygen_sgl.runtime.client import RuntimeClient

# DEFAULT_CUE_TOKENS of the reference (jiwonsong-dev/RelayGen utils/utils.py), in its order; its
# "So " and "so " are our word-boundary "So" and "so".
PAPER_CANDIDATES = [
    "Therefore",
    "Therefore,",
    "Thus",
    "Thus,",
    "So,",
    "So",
    "Similarly",
    "Similarly,",
    "Also",
    "Also,",
    "Alternatively",
    "Alternatively,",
    "Wait",
    "Wait,",
    "Hmm",
    "Hmm,",
    "But",
    "But,",
    "However",
    "However,",
    "Hence",
    "Hence,",
    "Another",
    "Another,",
    "Oh",
    "Oh,",
    "Maybe",
    "Maybe,",
    "Other",
    "Other,",
    "Again",
    "Again,",
    "Now",
    "Now,",
    "Ah",
    "Ah,",
    "Any",
    "Any,",
    "Specifically",
    "Specifically,",
    "therefore",
    "therefore,",
    "thus",
    "thus,",
    "so,",
    "so",
    "similarly",
    "similarly,",
    "also",
    "also,",
    "alternatively",
    "alternatively,",
    "wait",
    "wait,",
    "hmm",
    "hmm,",
    "but",
    "but,",
    "however",
    "however,",
    "hence",
    "hence,",
    "another",
    "another,",
    "oh",
    "oh,",
    "maybe",
    "maybe,",
    "other",
    "other,",
    "again",
    "again,",
    "now",
    "now,",
    "ah",
    "ah,",
    "any",
    "any,",
    "specifically",
    "specifically,",
    "check",
    "double-check",
    "verify",
    "then",
    "then,",
    "Then",
    "Then,",
    "next",
    "next,",
    "Next",
    "Next,",
]
COMPACT_CANDIDATES = [
    "Therefore,",
    "Therefore",
    "Thus,",
    "Thus",
    "So,",
    "So",
    "Hence,",
    "Hence",
    "Now,",
    "Now",
    "Next,",
    "Then,",
    "Similarly,",
    "Similarly",
    "Wait,",
    "Wait",
    "Alternatively,",
    "Alternatively",
    "But",
    "However,",
    "Also,",
    "Let me",
    "Let me check",
    "Let me think",
    "Okay,",
    "OK,",
    "First,",
    "Finally,",
    "In summary,",
]


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


PAPER = {"temperature": 0.6, "top_p": 0.95, "top_k": 20}
QUESTIONS = ["What is 12 + 30?", "What is 7 + 8?"]


def _templated(client: RuntimeClient, problem: str) -> str:
    return client.tokenizer.apply_chat_template(
        [{"role": "user", "content": problem}], tokenize=False, add_generation_prompt=True
    )


def _prompt_ids(client: RuntimeClient, problem: str) -> list[int]:
    return client.tokenizer.encode(_templated(client, problem), add_special_tokens=False)


@pytest.fixture(scope="module")
def clients(runtimes) -> dict[str, RuntimeClient]:
    return {
        role: RuntimeClient(rt.url, role)
        for role, rt in (("large", runtimes.large), ("small", runtimes.small))
    }


def test_traces_use_the_chat_template_the_paper_sampling_and_a_clamped_budget(clients, tmp_path: Path):
    large = clients["large"]
    limit = token_limit(large)
    assert limit is not None and 0 < limit < 32768  # the tiny model's context, from /server_info
    rows = generate_traces(
        QUESTIONS, large, tmp_path / "t.jsonl", samples=2, max_tokens=32768, sampling=PAPER, threads=2
    )
    assert [r["id"] for r in rows] == ["p00000-s00", "p00000-s01", "p00001-s00", "p00001-s01"]
    for r in rows:  # each trace gets what the context leaves after its chat-templated prompt
        assert r["max_new_tokens"] == limit - len(_prompt_ids(large, r["problem"]))
        assert r["sampling"] == {**PAPER, "max_tokens": 32768}
    assert len({r["seed"] for r in rows}) == 4
    # The prompt is the model's own chat template: greedy, the trace is what the templated prompt gives.
    (greedy,) = generate_traces(
        QUESTIONS[:1], large, tmp_path / "g.jsonl", max_tokens=40, sampling={"temperature": 0}, threads=1
    )
    direct = large.generate(
        text=_templated(large, QUESTIONS[0]),
        sampling_params={"temperature": 0, "max_new_tokens": 40, "stop": [THINK_END], "no_stop_trim": True},
    )
    assert greedy["reasoning"] == direct.text and greedy["reasoning"]
    # Resuming with other sampling would mix two calibrations: refused before anything runs.
    with pytest.raises(CalibrationInputError, match="sampled with"):
        generate_traces(
            QUESTIONS, large, tmp_path / "t.jsonl", samples=3, max_tokens=2048, sampling=PAPER, threads=1
        )
    # top_k <= 0 is "off": SGLang's default, so it is not sent (nor recorded).
    (off,) = generate_traces(
        QUESTIONS[:1], large, tmp_path / "u.jsonl", max_tokens=8, sampling={"top_k": -1}, threads=1
    )
    assert "top_k" not in off["sampling"] and off["sampling"]["temperature"] == 0.6


def test_scoring_skips_the_prompt_and_cuts_traces_to_the_small_context(clients, tmp_path: Path):
    small = clients["small"]
    tok, limit = small.tokenizer, token_limit(small)
    assert limit is not None
    short = {
        "id": "p00000-s00",
        "problem": QUESTIONS[0],
        "reasoning": "So we add 12 and 30. Thus the sum is 42.",
    }
    (full,) = score_traces([short], small, tmp_path / "a.jsonl", threads=1)
    n = len(tok.encode(short["reasoning"], add_special_tokens=False))
    assert len(full["margins"]) == len(full["offsets"]) == n and not full["cut"]  # reasoning tokens only
    assert all(-1e-6 <= m <= 1 + 1e-6 for m in full["margins"])
    long_ = {**short, "id": "p00000-s01", "reasoning": "So 1 + 1 = 2. " * (limit // 4)}
    assert len(tok.encode(long_["reasoning"], add_special_tokens=False)) > limit
    (cut,) = score_traces([long_], small, tmp_path / "b.jsonl", threads=1)
    assert cut["cut"] and len(cut["margins"]) == limit - len(_prompt_ids(small, QUESTIONS[0])) - 1
    assert json.loads((tmp_path / "b.jsonl").read_text())["id"] == "p00000-s01"


def test_calibrate_records_its_choices_in_the_provenance(runtimes, clients, tmp_path: Path):
    problems = tmp_path / "cal.jsonl"
    problems.write_text(json.dumps({"problem": QUESTIONS[0]}) + "\n")
    out = tmp_path / "out"
    res = calibrate(
        large=runtimes.large.url,
        small=runtimes.small.url,
        out_dir=out,
        problems_path=problems,
        min_count=1,
        n_boot=20,
        show_progress=False,
    )  # the paper's defaults
    prov = res.profile.provenance
    assert (prov["samples_per_problem"], prov["max_tokens"], prov["traces"]) == (4, 32768, 4)
    assert (prov["temperature"], prov["top_p"], prov["top_k"]) == (0.6, 0.95, 20)
    budget = token_limit(clients["large"]) - len(_prompt_ids(clients["large"], QUESTIONS[0]))
    assert prov["max_new_tokens_range"] == [budget, budget]  # clamped to the context, not 32768
    assert prov["segment_span"] == "after-cue"
    assert (prov["candidate_cues"], prov["candidate_count"]) == ("candidate_cues.txt", 91)
    assert res.profile.large_model == str(runtimes.large.model_path)  # asked of the runtime
    saved = {f: (out / f).read_bytes() for f in ("traces.jsonl", "scores.jsonl")}
    # Another span or cue list re-runs only the analysis: the saved traces and scores are reused.
    again = calibrate(
        large=runtimes.large.url,
        small=runtimes.small.url,
        out_dir=out,
        problems_path=problems,
        min_count=1,
        n_boot=20,
        show_progress=False,
        segment_span="with-cue",
        cues_file="compact",
    )
    assert {f: (out / f).read_bytes() for f in saved} == saved
    prov = again.profile.provenance
    assert prov["segment_span"] == "with-cue" and prov["candidate_cues"] == "candidate_cues_compact.txt"
    # From saved traces the large runtime is not needed: the CLI takes the small one alone.
    argv = [
        "calibrate",
        "--traces",
        str(out / "traces.jsonl"),
        "--small-url",
        runtimes.small.url,
        "--out",
        str(tmp_path / "from-traces"),
        "--min-count",
        "1",
        "--bootstrap",
        "20",
    ]
    assert cli.main(argv) == 0
    prov = json.loads((tmp_path / "from-traces" / "profile.json").read_text())["provenance"]
    assert prov["traces_file"] == str(out / "traces.jsonl") and prov["scored"] == 4
