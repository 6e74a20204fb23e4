"""The relay loop on two real SGLang servers (tiny models, nothing mocked)."""

from __future__ import annotations

import pytest
from conftest import QUESTION
from forcing import THINKING_PROMPT

from relaygen_sgl.relay import THINK_END, RelayConfig, relay_generate
from relaygen_sgl.relay.machine import CLOSE_THINK
from relaygen_sgl.testing.tiny_models import tiny_profile

TINY_PROFILE = tiny_profile(min_large_tokens=5, max_small_tokens=24)


def _run(runtimes, seed: int, *, profile=TINY_PROFILE, handoff="auto", messages=QUESTION, **config):
    config = {"sampling": {"temperature": 0.8, "sampling_seed": seed}, "max_tokens": 200, **config}
    return relay_generate(
        messages=messages,
        large=runtimes.large,
        small=runtimes.small,
        config=RelayConfig(**config),
        profile=profile,
        handoff=handoff,
    )


@pytest.fixture(scope="module")
def relayed(runtimes):
    """A few seeded relay runs: what they write is the model's, the invariants below hold for any."""
    return [_run(runtimes, seed) for seed in range(4)]


@pytest.fixture(scope="module")
def cue_forced(runtimes, forcing):
    """A relay whose every large turn stops at the cue (tests/forcing.py): with min_large_tokens 5
    and turns of 2 tokens, each switch comes after 6 large tokens, and the finisher, which never
    ends its sentence, writes max_small_tokens.  60 tokens are two such rounds."""
    profile = forcing.cue_profile(min_large_tokens=5, max_small_tokens=24)
    r = _run(runtimes, 0, profile=profile, sampling=forcing.cue_every_token(), max_tokens=60)
    return profile, r


def test_a_cue_hands_the_sentence_to_the_small_model_and_back(cue_forced):
    profile, r = cue_forced
    cue = profile.cue_texts[0]
    shape = [(s.role, s.kind, s.num_tokens, s.cue) for s in r.segments]
    assert shape == [("large", "reasoning", 6, cue), ("small", "finish", 24, None)] * 2, r.text
    assert r.stats.switches == 2 and r.stats.cue_counts == {cue: 2}
    # Each large turn is three calls (two early cues continue it), each finish one.
    calls = [(c.role, c.kind) for c in r.stats.calls]
    assert calls == ([("large", "reasoning")] * 3 + [("small", "finish")]) * 2
    assert r.text == f" {cue}" * 60 and r.stats.output_tokens == len(r.output_ids) == 60


def test_text_is_the_segments_in_order(relayed, cue_forced):
    for r in [*relayed, cue_forced[1]]:
        assert r.text == "".join(s.text for s in r.segments)
        kinds = [s.kind for s in r.segments]
        assert kinds.count("answer") <= 1 and (kinds[-1] == "answer" or "answer" not in kinds)
        for seg in r.segments:
            if seg.kind == "finish":
                assert seg.role == "small"


def test_cue_switches_respect_min_tokens_and_segment_cap(relayed, cue_forced):
    for profile, r in [*((TINY_PROFILE, r) for r in relayed), cue_forced]:
        for prev, seg in zip(r.segments, r.segments[1:], strict=False):
            if seg.kind == "finish":
                assert prev.role == "large" and prev.cue in profile.cue_texts
                # vLLM's min_tokens rule: a cue counts only after more than min_large tokens.
                assert prev.num_tokens > profile.min_large_tokens
                assert seg.num_tokens <= profile.max_small_tokens


def test_stats_add_up(relayed, cue_forced):
    for r in [*relayed, cue_forced[1]]:
        st = r.stats
        assert st.handoff == "ids"
        assert st.large_tokens + st.small_tokens == st.output_tokens
        # A reasoning closed for a model that stopped early carries ids nobody generated.
        closed = any(s.kind == "close" for s in r.segments)
        assert len(r.output_ids) > st.output_tokens if closed else len(r.output_ids) == st.output_tokens
        assert st.large_tokens == sum(s.num_tokens for s in r.segments if s.role == "large")
        assert st.small_tokens == sum(s.num_tokens for s in r.segments if s.role == "small")
        assert st.switches == sum(1 for s in r.segments if s.kind == "finish") or st.switches > 0
        assert 0.0 <= st.large_utilization <= 1.0
        assert st.latency_s >= max(st.large_time_s, st.small_time_s)
        assert sum(st.cue_counts.values()) == st.switches


def test_each_runtime_reuses_its_prefix_cache_after_a_switch(relayed, cue_forced):
    checked = 0
    for r in [*relayed, cue_forced[1]]:
        seen: dict[str, int] = {}
        for call in r.stats.calls:
            if call.role in seen:
                # All this runtime processed last time (minus the last, uncached token) is a hit.
                assert call.cached_tokens >= seen[call.role] - 1, call
                checked += 1
            seen[call.role] = call.prompt_tokens + call.kept_tokens
    assert checked >= 7  # the forced relay alone: 5 large calls after the first, 1 small


@pytest.mark.parametrize("answer_model", ["small", "large"])
def test_after_think_end_the_answer_model_answers(runtimes, forcing, answer_model):
    """The large model ends its reasoning with </think> after 4 tokens (forced); the 4 tokens left
    of the budget are the answer model's."""
    r = _run(runtimes, 0, sampling=forcing.think_end_after(4), max_tokens=9, answer_model=answer_model)
    f = forcing.filler_text
    assert [(s.role, s.kind, s.num_tokens) for s in r.segments] == [
        ("large", "reasoning", 5),
        (answer_model, "answer", 4),
    ], r.text
    assert r.text == f * 4 + THINK_END + f * 4
    assert r.answer == f * 4 and r.stats.finish_reason == "length"
    assert [(c.role, c.kind) for c in r.stats.calls] == [("large", "reasoning"), (answer_model, "answer")]


def test_baselines_use_one_model(runtimes):
    large = _run(runtimes, 3, mode="large_only")
    small = _run(runtimes, 3, mode="small_only")
    assert large.stats.small_tokens == 0 and large.stats.switches == 0
    assert small.stats.large_tokens == 0 and small.stats.switches == 0
    assert {s.role for s in large.segments} == {"large"}
    assert {s.role for s in small.segments} == {"small"}


def test_text_handoff_gives_the_same_shape(runtimes):
    r = _run(runtimes, 1, handoff="text")
    assert r.stats.handoff == "text" and r.output_ids is None
    assert r.text == "".join(s.text for s in r.segments)
    assert r.stats.output_tokens == sum(s.num_tokens for s in r.segments)


def test_bad_arguments_are_clear(runtimes):
    with pytest.raises(ValueError, match="max_tokens"):
        _run(runtimes, 0, max_tokens=0)
    with pytest.raises(ValueError, match="mode must be one of"):
        _run(runtimes, 0, mode="fastest")
    with pytest.raises(ValueError, match="answer_model"):
        _run(runtimes, 0, answer_model="medium")
    with pytest.raises(ValueError, match="needs a cue profile"):
        _run(runtimes, 0, profile=None)


@pytest.mark.parametrize(
    "mode,answerer", [("relay", "small"), ("large_only", "large"), ("small_only", "small")]
)
def test_eos_inside_the_reasoning_closes_it_and_the_answer_model_answers(runtimes, forcing, mode, answerer):
    """The reference's rule, in every mode: a thinking model that stops (EOS) before </think> gets
    its reasoning closed and the answer model answers.  The prompt opens the think block, and
    every call writes 4 tokens, then EOS (forced)."""
    r = relay_generate(
        THINKING_PROMPT,
        large=runtimes.large,
        small=runtimes.small,
        profile=TINY_PROFILE,
        config=RelayConfig(mode=mode, sampling=forcing.eos_after(4), max_tokens=40),
    )
    reasoner = "small" if mode == "small_only" else "large"
    f = forcing.filler_text
    assert r.thinking
    assert [(s.role, s.kind) for s in r.segments] == [
        (reasoner, "reasoning"),
        (reasoner, "close"),
        (answerer, "answer"),
    ], r.text
    close = r.segments[1]
    assert close.text == CLOSE_THINK and close.num_tokens == 0  # the relay's text, not a model's
    assert r.text == f * 4 + CLOSE_THINK + f * 4 and r.answer == f * 4
    assert r.stats.outcome == "eos" and r.stats.finish_reason == "stop"
    assert [(c.role, c.kind) for c in r.stats.calls] == [(reasoner, "reasoning"), (answerer, "answer")]
