"""The relay loop on two real SGLang servers (tiny models, nothing mocked)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from conftest import QUESTION

from relaygen_sgl.relay import THINK_END, RelayConfig, RelayError, RelayPair, relay_generate
from relaygen_sgl.relay.machine import CLOSE_THINK
from relaygen_sgl.runtime.process import process_group_alive
from relaygen_sgl.runtime.server import SGLangRuntime
from relaygen_sgl.tiny_models import tiny_profile

TINY_PROFILE = tiny_profile(min_large_tokens=5, max_small_tokens=24)


def _run(runtimes, seed: int, *, profile=TINY_PROFILE, handoff="auto", **config):
    config = {"sampling": {"temperature": 0.8, "sampling_seed": seed}, "max_tokens": 200, **config}
    return relay_generate(messages=QUESTION, large=runtimes.large, small=runtimes.small,
                          config=RelayConfig(**config), profile=profile, handoff=handoff)


@pytest.fixture(scope="module")
def relayed(runtimes):
    """A few seeded relay runs; the trained tiny models emit cues, so switches happen."""
    return [_run(runtimes, seed) for seed in range(4)]


def test_switches_happen_and_text_is_the_segments_in_order(relayed):
    assert sum(r.stats.switches for r in relayed) >= 1
    for r in relayed:
        assert r.text == "".join(s.text for s in r.segments)
        kinds = [s.kind for s in r.segments]
        assert kinds.count("answer") <= 1 and (kinds[-1] == "answer" or "answer" not in kinds)
        for seg in r.segments:
            if seg.kind == "finish":
                assert seg.model == "small"


def test_cue_switches_respect_min_tokens_and_segment_cap(relayed):
    for r in relayed:
        for prev, seg in zip(r.segments, r.segments[1:], strict=False):
            if seg.kind == "finish":
                assert prev.model == "large" and prev.cue in TINY_PROFILE.cue_texts
                # vLLM's min_tokens rule: a cue counts only after more than min_large tokens.
                assert prev.num_tokens > TINY_PROFILE.min_large_tokens
                assert seg.num_tokens <= TINY_PROFILE.max_small_tokens


def test_stats_add_up(relayed):
    for r in relayed:
        st = r.stats
        assert st.handoff == "ids"
        assert st.large_tokens + st.small_tokens == st.output_tokens == len(r.output_ids)
        assert st.large_tokens == sum(s.num_tokens for s in r.segments if s.model == "large")
        assert st.small_tokens == sum(s.num_tokens for s in r.segments if s.model == "small")
        assert st.switches == sum(1 for s in r.segments if s.kind == "finish") or st.switches > 0
        assert 0.0 <= st.large_utilization <= 1.0
        assert st.latency_s >= max(st.large_time_s, st.small_time_s)
        assert sum(st.cue_counts.values()) == st.switches


def test_each_runtime_reuses_its_prefix_cache_after_a_switch(relayed):
    checked = 0
    for r in relayed:
        seen: dict[str, int] = {}
        for call in r.stats.calls:
            if call.runtime in seen:
                # All this runtime processed last time (minus the last, uncached token) is a hit.
                assert call.cached_tokens >= seen[call.runtime] - 1, call
                checked += 1
            seen[call.runtime] = call.prompt_tokens + call.kept_tokens
    assert checked >= 2


def test_answer_model_is_honoured(runtimes):
    for answer_model in ("small", "large"):
        # The tiny model sometimes ends with EOS before </think>, and seeded sampling is not
        # bit-stable across runs (batching, cache state), so try seeds until two reach the answer.
        runs, done = [], []
        for seed in range(7, 31):
            runs.append(_run(runtimes, seed, answer_model=answer_model, max_tokens=400))
            if any(s.kind == "answer" for s in runs[-1].segments):
                done.append(runs[-1])
            if len(done) == 2:
                break
        assert done, [(r.stats.finish_reason, r.text[-80:]) for r in runs]
        for r in done:
            answers = [s for s in r.segments if s.kind == "answer"]
            assert [s.model for s in answers] == [answer_model]
            assert THINK_END in r.text and r.answer
            assert r.text.index(THINK_END) < r.text.index(r.answer)


def test_baselines_use_one_model(runtimes):
    large = _run(runtimes, 3, mode="large_only")
    small = _run(runtimes, 3, mode="small_only")
    assert large.stats.small_tokens == 0 and large.stats.switches == 0
    assert small.stats.large_tokens == 0 and small.stats.switches == 0
    assert {s.model for s in large.segments} == {"large"}
    assert {s.model for s in small.segments} == {"small"}


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


def test_runtime_dying_mid_request_is_a_clear_error(runtimes, tiny_pair, tmp_path: Path):
    victim = SGLangRuntime(tiny_pair.small, name="victim", log_dir=tmp_path, max_total_tokens=4096)
    with victim:
        pid = victim.pid
        pair = RelayPair(runtimes.large, victim)
        assert pair.small.tokenizer  # load it now so the kill lands mid-generation
        killer = threading.Timer(1.5, victim.stop)
        killer.start()
        t0 = time.monotonic()
        with pytest.raises(RelayError, match="small runtime failed") as err:
            relay_generate(messages=QUESTION, large=pair, config=RelayConfig(
                mode="small_only", sampling={"ignore_eos": True}, max_tokens=1800))
        killer.join()
        assert time.monotonic() - t0 < 60
        assert "not answering" in str(err.value)
    assert not process_group_alive(pid), "stop() must take the whole process group down"


def test_eos_inside_the_reasoning_closes_it_and_the_answer_model_answers(runtimes):
    """The reference's rule: a thinking model that stops before </think> gets it closed."""
    closed = None
    for seed in range(40, 80):
        r = _run(runtimes, seed, max_tokens=400)
        if any(s.kind == "close" for s in r.segments):
            closed = r
            break
    assert closed is not None, "no seed ended its reasoning with EOS"
    kinds = [s.kind for s in closed.segments]
    i = kinds.index("close")
    assert closed.segments[i].text == CLOSE_THINK and closed.segments[i].num_tokens == 0
    assert kinds[i + 1:] == ["answer"] and closed.segments[i + 1].model == "small"
    assert closed.answer and THINK_END in closed.text


def test_a_runtime_restarted_with_another_model_is_not_served_stale(runtimes, tiny_pair, tmp_path: Path):
    """No tokenizer or handoff decision outlives a restart on the same port."""
    victim = SGLangRuntime(tiny_pair.small, name="victim", log_dir=tmp_path / "a", max_total_tokens=2048)
    victim.start()
    port = victim.port
    pair = RelayPair(runtimes.large, victim)
    try:
        before = relay_generate(messages=QUESTION, large=pair, profile=TINY_PROFILE,
                                config=RelayConfig(max_tokens=60))
        assert Path(pair.small.model_info["model_path"]) == tiny_pair.small
        victim.stop()
        with pytest.raises(RelayError):
            relay_generate(messages=QUESTION, large=pair, config=RelayConfig(mode="small_only", max_tokens=8))
        victim = SGLangRuntime(tiny_pair.large, name="victim", port=port, log_dir=tmp_path / "b",
                               max_total_tokens=2048).start()  # fmt: skip
        after = relay_generate(messages=QUESTION, large=pair, profile=TINY_PROFILE,
                               config=RelayConfig(max_tokens=60))
        assert Path(pair.small.model_info["model_path"]) == tiny_pair.large
        assert pair.small.model_generation == 1
        assert before.stats.output_tokens and after.stats.output_tokens
    finally:
        victim.stop()
