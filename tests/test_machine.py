"""The relay machine on its own: scripted turns in, calls and deltas out.

No runtime, no network, no process: a codec with one token per character and a script of
what each ``/generate`` call streams and how it stops.  The drivers are run over the same
script at the end.  Every test runs in milliseconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from relaygen_sgl.profile import Cue, CueProfile
from relaygen_sgl.reasoning import THINK_END
from relaygen_sgl.relay.drivers import run
from relaygen_sgl.relay.machine import CLOSE_THINK, Call, RelayMachine, TurnResult
from relaygen_sgl.relay.sync import RelayPair
from relaygen_sgl.relay.types import Delta, RelayConfig, RelayError, RelayResult
from relaygen_sgl.runtime.client import GenerateResult, RuntimeUnavailable, StreamProgress


class CharCodec:
    """One token per character; a token's id is its code point."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(map(chr, ids))


CODEC = CharCodec()
PROFILE = CueProfile(
    large_model="large",
    small_model="small",
    cues=(Cue("So"), Cue("Therefore,")),
    min_large_tokens=3,
    max_small_tokens=32,
)
SO, THEREFORE = PROFILE.stop_regexes()  # word-ending and punctuation-ending cues
SENTENCE = PROFILE.sentence_end_regex
THINKING = {"large": "<L>Add 2 and 3.<think>\n", "small": "<S>Add 2 and 3.<think>\n"}  # R1-style prompts
PLAIN = {"large": "<L>Add 2 and 3.\n", "small": "<S>Add 2 and 3.\n"}


# -- the script ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Turn:
    """One scripted ``/generate`` call: the text it streams and how it stops."""

    text: str
    finish: str = "stop"  # "stop" or "length"
    matched: str | int | None = None  # the stop string or regex that fired; None is EOS
    chunks: tuple[str, ...] = ()  # how the text streams; one chunk per character by default


def cue(text: str, regex: str = SO) -> Turn:
    return Turn(text, matched=regex)


def sentence(text: str) -> Turn:
    return Turn(text, matched=SENTENCE)


def think(text: str) -> Turn:
    return Turn(text, matched=THINK_END)


def eos(text: str) -> Turn:
    return Turn(text)


def length(text: str) -> Turn:
    return Turn(text, finish="length")


@dataclass(frozen=True)
class Run:
    """What a scripted relay did: its calls, what each step released, and its result."""

    calls: list[Call]
    steps: list[list[list[Delta]]]  # per call: the deltas of each chunk, then of complete()
    result: RelayResult

    @property
    def kinds(self) -> list[tuple[str, str]]:
        return [(c.role, c.kind) for c in self.calls]

    @property
    def segments(self) -> list[tuple[str, str, str]]:
        return [(s.role, s.kind, s.text) for s in self.result.segments]

    def released(self, call: int) -> list[str]:
        """The text each chunk of a call made final, then what its completion did."""
        return ["".join(d.text for d in step) for step in self.steps[call]]

    def params(self, call: int) -> dict[str, Any]:
        return self.calls[call].body["sampling_params"]


def machine(
    mode: str = "relay",
    *,
    prompts: dict[str, str] = THINKING,
    ids: bool = False,
    profile: CueProfile | None = PROFILE,
    **config,
) -> RelayMachine:
    cfg = RelayConfig(mode=mode, **{"max_tokens": 200, **config})  # type: ignore[arg-type]
    prompt_ids = {r: CODEC.encode(p) for r, p in prompts.items()} if ids else None
    return RelayMachine(
        config=cfg,
        profile=profile,
        prompts=dict(prompts),
        prompt_ids=prompt_ids,  # type: ignore[arg-type]
        codecs={"large": CODEC, "small": CODEC},
        request_id="req",
    )


def turn_result(call: Call, turn: Turn) -> TurnResult:
    ids = CODEC.encode(turn.text)
    prompt = call.body.get("input_ids") or call.body["text"]
    return TurnResult(
        text=turn.text,
        output_ids=ids,
        prompt_tokens=len(prompt),
        cached_tokens=0,
        completion_tokens=len(ids),
        finish_type=turn.finish,
        matched=turn.matched,
        latency_s=0.5,
    )


def drive(m: RelayMachine, turns: Sequence[Turn]) -> Run:
    """Answer each call the machine makes with the next scripted turn, streamed chunk by chunk."""
    calls: list[Call] = []
    steps: list[list[list[Delta]]] = []
    script = list(turns)
    while (call := m.next_call()) is not None:
        assert script, f"an unscripted call: {call.role} {call.kind}"
        turn = script.pop(0)
        calls.append(call)
        call_steps, so_far = [], ""
        for piece in turn.chunks or turn.text:
            so_far += piece
            call_steps.append(m.progress(call, so_far))
        assert so_far == turn.text, "the chunks must add up to the text"
        call_steps.append(m.complete(call, turn_result(call, turn)))
        steps.append(call_steps)
    assert not script, f"{len(script)} scripted turn(s) never called"
    run = Run(calls, steps, m.result())
    # Deltas are final and complete: together they are exactly the output.
    assert "".join(d.text for s in steps for step in s for d in step) == run.result.text
    return run


# -- a whole relay -------------------------------------------------------------------------
RELAY = [cue("We add 2 and 3. So "), sentence("the sum is 5. "), think(" Done.</think>"), eos("\n\nIt is 5.")]


def test_a_relay_hands_the_sentence_to_the_small_model_and_the_answer_after_think_end() -> None:
    run = drive(machine(), RELAY)
    assert run.kinds == [
        ("large", "reasoning"),
        ("small", "finish"),
        ("large", "reasoning"),
        ("small", "answer"),
    ]
    assert run.segments == [
        ("large", "reasoning", "We add 2 and 3. So "),
        ("small", "finish", "the sum is 5."),  # the space after the sentence end is dropped
        ("large", "reasoning", " Done.</think>"),
        ("small", "answer", "\n\nIt is 5."),
    ]
    r = run.result
    assert (r.reasoning, r.answer, r.thinking) == ("We add 2 and 3. So the sum is 5. Done.", "It is 5.", True)
    st = r.stats
    assert (st.large_tokens, st.small_tokens) == (19 + 14, 13 + 10)
    assert (st.switches, st.discarded_tokens, st.cue_counts) == (1, 1, {"So": 1})
    assert (st.outcome, st.finish_reason) == ("eos", "stop")
    assert [c.kept_tokens for c in st.calls] == [19, 13, 14, 10]
    assert [s.cue for s in r.segments] == ["So", None, None, None]
    assert r.reasoning_tokens == 19 + 13 + 14
    assert (st.large_time_s, st.small_time_s) == (1.0, 1.0)


def test_each_phase_asks_its_runtime_for_its_own_stops_and_budget() -> None:
    run = drive(machine(stop=("##",), sampling={"temperature": 0.6, "top_p": None}), RELAY)
    common = {"temperature": 0.6, "no_stop_trim": True}  # unset sampling params are not sent
    assert run.params(0) == {
        **common,
        "stop": [THINK_END, "##"],
        "stop_regex": [SO, THEREFORE],
        "max_new_tokens": 200,
    }
    assert run.params(1) == {
        **common,
        "stop": [THINK_END, "##"],
        "stop_regex": [SENTENCE],
        "max_new_tokens": 32,
    }
    assert run.params(2)["max_new_tokens"] == 200 - 19 - 13  # what was discarded is not spent
    assert run.params(3) == {**common, "stop": ["##"], "max_new_tokens": 200 - 19 - 13 - 14}
    assert [c.rid for c in run.calls] == [c.body["rid"] for c in run.calls]
    assert [c.rid for c in run.calls] == ["req-00000", "req-00001", "req-00002", "req-00003"]


@pytest.mark.parametrize("ids", [False, True], ids=["text", "ids"])
def test_each_runtime_gets_its_own_prompt_and_the_whole_output_so_far(ids: bool) -> None:
    run = drive(machine(ids=ids), RELAY)
    before = [
        "",
        "We add 2 and 3. So ",
        "We add 2 and 3. So the sum is 5.",
        "We add 2 and 3. So the sum is 5. Done.</think>",
    ]
    for call, out in zip(run.calls, before, strict=True):
        context = THINKING[call.role] + out
        if ids:
            assert call.body["input_ids"] == CODEC.encode(context) and "text" not in call.body
        else:
            assert call.body["text"] == context and "input_ids" not in call.body
    r = run.result
    assert r.stats.handoff == ("ids" if ids else "text")
    assert r.output_ids == (CODEC.encode(r.text) if ids else None)


@pytest.mark.parametrize(
    "stop,turns",
    [
        ((), [eos("hmm"), eos("5")]),
        ((), [cue("Add. So "), length("it is 5. More"), think("</think>"), eos("5")]),
        (("END",), [think("ok</think>"), Turn("Hello END", matched="END")]),
        (("So the",), [cue("We add. So "), sentence("the sum is 5.")]),
    ],
    ids=["closed-think", "finisher-cut", "stop", "stop-across-models"],
)
def test_with_id_handoff_the_output_ids_are_the_output_text(stop: tuple[str, ...], turns: list[Turn]) -> None:
    run = drive(machine(ids=True, stop=stop), turns)
    assert run.result.output_ids == CODEC.encode(run.result.text)


# -- the finisher --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "written,kept",
    [
        ("the sum is 5. More", "the sum is 5."),
        ("it is 3.5 now. More", "it is 3.5 now."),  # a decimal point ends no sentence
        ("see e.g. this one. More", "see e.g. this one."),  # nor does an abbreviation
        ("ask Dr. Who. More", "ask Dr. Who."),
        ("is it? Yes", "is it?"),
        ("a list\n\nnext", "a list\n\n"),
        ("no end in sight", "no end in sight"),  # the cap: all of it is kept
    ],
)
def test_the_finisher_keeps_only_its_first_sentence(written: str, kept: str) -> None:
    # "length": the runtime missed the sentence end (or never met one) and ran to its cap.
    run = drive(machine(thinking=False), [cue("Add. So "), length(written), eos(" ok")])
    assert run.segments[1] == ("small", "finish", kept)
    assert "".join(run.released(1)) == kept  # the discarded rest was never shown
    r = run.result
    assert r.stats.discarded_tokens == len(written) - len(kept)
    assert run.calls[2].body["text"] == THINKING["large"] + "Add. So " + kept
    assert r.stats.switches == 1 and r.stats.small_tokens == len(kept)


def test_the_finisher_streams_up_to_its_sentence_end() -> None:
    run = drive(machine(thinking=False), [cue("Add. So "), sentence("it is 3.5. "), eos("")])
    assert run.released(1) == ["i", "t", " ", "i", "s", " ", "3", ".", "5", ".", "", ""]


# -- min_large_tokens ----------------------------------------------------------------------
PATIENT = dataclasses.replace(PROFILE, min_large_tokens=8)


@pytest.mark.parametrize("first,early", [("Hi. So ", True), ("Hey. So ", True), ("Well. So ", False)])
def test_a_cue_counts_only_once_the_large_turn_is_longer_than_min_large_tokens(
    first: str, early: bool
) -> None:
    more = [cue(" we add. So ")] if early else []
    run = drive(machine(profile=PATIENT, thinking=False), [cue(first), *more, sentence("it is 5."), eos("")])
    turn = first + (" we add. So " if early else "")
    assert run.kinds[: 2 + early] == [("large", "reasoning")] * (1 + early) + [("small", "finish")]
    assert run.segments[0] == ("large", "reasoning", turn)  # an early cue continues the same segment
    r = run.result
    assert r.segments[0].cue == "So" and r.stats.cue_counts == {"So": 1}
    if early:
        assert run.calls[1].body["text"] == THINKING["large"] + first
        assert run.params(1)["max_new_tokens"] == 200 - len(first)


def test_the_large_turn_count_restarts_after_each_handoff() -> None:
    run = drive(
        machine(profile=PATIENT, thinking=False),
        [
            cue("Well. So "),
            sentence("it is 5."),
            cue(" So "),
            cue("we check. So "),
            sentence("it holds."),
            eos(""),
        ],
    )
    assert [k for _, k in run.kinds] == [
        "reasoning",
        "finish",
        "reasoning",
        "reasoning",
        "finish",
        "reasoning",
    ]
    r = run.result
    assert r.stats.cue_counts == {"So": 2} and r.stats.switches == 2


def test_the_cue_is_named_whichever_regex_fired() -> None:
    run = drive(
        machine(thinking=False), [cue("We add 2 and 3. Therefore,", THEREFORE), sentence(" 5."), eos("")]
    )
    r = run.result
    assert r.stats.cue_counts == {"Therefore,": 1} and r.segments[0].cue == "Therefore,"


# -- </think> in each phase ----------------------------------------------------------------
@pytest.mark.parametrize("answer_model", ["small", "large"])
def test_think_end_in_the_reasoning_hands_over_to_the_answer_model(answer_model: str) -> None:
    run = drive(machine(answer_model=answer_model), [think("It is 5.</think>"), eos("\n\n5")])
    assert run.kinds == [("large", "reasoning"), (answer_model, "answer")]
    assert run.params(1) == {"max_new_tokens": 200 - 16, "no_stop_trim": True}  # no cue, no stop
    r = run.result
    assert (r.reasoning, r.answer, r.reasoning_tokens) == ("It is 5.", "5", 16)


def test_a_partial_think_end_is_held_back_while_reasoning() -> None:
    run = drive(machine(), [think("ok </think>"), eos("5")])
    assert run.released(0) == ["o", "k", " ", "", "", "", "", "", "", "", "</think>", ""]


def test_a_held_back_prefix_that_turns_out_otherwise_is_released() -> None:
    run = drive(machine(thinking=False), [eos("a </b> c")])
    assert run.released(0) == ["a", " ", "", "", "</b", ">", " ", "c", ""]


def test_a_think_end_the_runtime_let_through_is_cut_after() -> None:
    # SGLang sizes its stop window by the canonical tokenization; a "</think>" spelled in
    # other tokens can slip through, and the model goes on answering in the same call.
    run = drive(machine(), [eos("ok.</think>\n\nIt is 5."), eos("\n\n5")])
    assert run.kinds == [("large", "reasoning"), ("small", "answer")]
    assert run.segments[0] == ("large", "reasoning", "ok.</think>")
    assert "".join(run.released(0)) == "ok.</think>"
    r = run.result
    assert r.stats.discarded_tokens == len("\n\nIt is 5.") and r.answer == "5"


def test_a_turn_cut_at_a_let_through_think_end_did_not_end_on_a_cue() -> None:
    # The runtime missed "</think>" and stopped on a cue in the answer after it.
    run = drive(machine(), [cue("ok.</think>\n\nSo "), eos("5")])
    assert run.kinds == [("large", "reasoning"), ("small", "answer")]
    assert run.result.segments[0].cue is None and run.result.stats.cue_counts == {}


def test_think_end_from_the_finisher_is_cut_and_the_large_model_decides() -> None:
    run = drive(machine(), [cue("Add. So "), think("it is 5 </think>"), think("</think>"), eos("5")])
    assert run.kinds == [
        ("large", "reasoning"),
        ("small", "finish"),
        ("large", "reasoning"),
        ("small", "answer"),
    ]
    assert run.segments[1] == ("small", "finish", "it is 5 ")
    assert run.released(1)[-9:] == [""] * 9  # the marker was never shown
    r = run.result
    assert r.stats.discarded_tokens == len(THINK_END)


@pytest.mark.parametrize("stop", [(), ("##",)])
def test_think_end_in_the_answer_is_ordinary_text_and_streams_per_token(stop: tuple[str, ...]) -> None:
    # The answer may quote the marker (code, docs about the format); nothing waits for the end.
    answer = "Close it with </think> then a blank line. That is all."
    run = drive(machine(stop=stop), [think("ok</think>"), eos(answer)])
    assert run.released(1) == [*answer, ""]
    assert run.result.answer == answer and run.result.stats.outcome == "eos"


def test_a_partial_think_end_is_not_handed_to_the_other_model() -> None:
    # Capped in the middle of the marker: the large model could complete it where neither
    # runtime's stop check sees it whole, so the fragment is dropped with the rest.
    run = drive(machine(), [cue("Add. So "), length("it is </thi"), think("</think>"), eos("5")])
    assert run.segments[1] == ("small", "finish", "it is ")
    assert run.calls[2].body["text"] == THINKING["large"] + "Add. So it is "
    assert run.result.stats.discarded_tokens == len("</thi")


def test_random_switch_does_not_hand_over_a_partial_think_end() -> None:
    rng = random.Random(0)
    gap = max(PROFILE.min_large_tokens + 1, 1 + int(rng.expovariate(0.1)))
    capped = "x" * (gap - 5) + "</thi"
    m = machine("random_switch", seed=0, switch_rate=0.1, thinking=False)
    run = drive(m, [length(capped), sentence("y."), eos("z")])
    assert run.calls[1].body["text"] == THINKING["small"] + "x" * (gap - 5)


# -- a model that stops inside its reasoning ----------------------------------------------
@pytest.mark.parametrize(
    "prompts,first,thinking,closes",
    [
        (THINKING, "hmm", None, True),  # the prompt opened the think block (DeepSeek-R1)
        (PLAIN, "<think>\nhmm", None, True),  # the output opened it (Qwen3)
        (PLAIN, "hmm", None, False),  # not a thinking generation: the output is the answer
        (THINKING, "hmm", False, False),  # told it does not think
        (PLAIN, "hmm", True, True),  # told it does
    ],
)
def test_eos_before_think_end(
    prompts: dict[str, str], first: str, thinking: bool | None, closes: bool
) -> None:
    m = machine(prompts=prompts, thinking=thinking)
    run = drive(m, [eos(first), eos("It is 5.")] if closes else [eos(first)])
    r = run.result
    assert r.thinking == closes and r.stats.outcome == "eos"
    if not closes:
        assert run.segments == [("large", "reasoning", first)] and r.answer == first
        return
    # The reasoning is closed for the model, as the reference does, and the answerer answers.
    assert run.segments == [
        ("large", "reasoning", first),
        ("large", "close", CLOSE_THINK),
        ("small", "answer", "It is 5."),
    ]
    assert run.released(0)[-1] == CLOSE_THINK
    assert run.calls[1].body["text"] == prompts["small"] + first + CLOSE_THINK
    assert r.stats.large_tokens == len(first)  # the close was not generated
    assert (r.reasoning, r.answer) == ("hmm\n", "It is 5.")


def test_an_eos_token_id_is_an_eos() -> None:
    run = drive(machine(), [Turn("hmm", matched=151643), eos("5")])
    assert run.kinds == [("large", "reasoning"), ("small", "answer")]


# -- the token budget ----------------------------------------------------------------------
def test_the_budget_shrinks_with_each_kept_token_and_ends_the_relay() -> None:
    run = drive(machine(max_tokens=30), [cue("We add 2 and 3. So "), length("it is 5. X"), length("abc")])
    assert [run.params(i)["max_new_tokens"] for i in range(3)] == [30, 11, 3]
    r = run.result
    assert (r.stats.outcome, r.stats.finish_reason) == ("length", "length")
    assert r.stats.output_tokens == 30 and r.stats.discarded_tokens == 2


@pytest.mark.parametrize(
    "last",
    [cue("We add 2 and 3. So "), think("We add 2 and 3.</think>"), length("We add 2 and 3.")],
    ids=["cue", "think-end", "length"],
)
def test_a_turn_that_spends_the_budget_ends_the_relay(last: Turn) -> None:
    run = drive(machine(max_tokens=len(last.text)), [last])
    r = run.result
    assert (r.stats.outcome, r.stats.finish_reason) == ("length", "length")


def test_the_finisher_gets_at_most_the_remaining_budget() -> None:
    run = drive(machine(max_tokens=25), [cue("We add 2 and 3. So "), length("it is ")])
    assert run.params(1)["max_new_tokens"] == 6
    assert run.result.stats.outcome == "length"


# -- user stop strings ---------------------------------------------------------------------
def test_a_stop_string_split_across_chunks_is_never_shown() -> None:
    answer = Turn("Hello END", matched="END", chunks=("Hel", "lo E", "N", "D"))
    run = drive(machine(stop=("END",)), [think("ok</think>"), answer])
    assert run.released(1) == ["Hel", "lo ", "", "", ""]
    r = run.result
    assert r.text == "ok</think>Hello " and r.answer == "Hello "
    assert (r.stats.outcome, r.stats.finish_reason) == ("stop", "stop")


def test_a_stop_string_in_the_reasoning_ends_the_relay_without_closing_it() -> None:
    run = drive(machine(stop=("##",)), [Turn("We add ## more", matched="##")])
    r = run.result
    assert r.text == "We add " and r.stats.outcome == "stop"


def test_a_stop_string_spanning_two_models_ends_the_relay() -> None:
    run = drive(machine(stop=("So the",)), [cue("We add. So "), sentence("the sum is 5.")])
    assert "".join(run.released(0)) == "We add. "  # "So " might begin the stop string: held
    assert run.released(1) == [""] * 14
    r = run.result
    assert r.text == "We add. " and r.stats.outcome == "stop"
    assert run.segments == [("large", "reasoning", "We add. ")]


def test_text_held_back_for_a_stop_string_is_released_with_its_own_model() -> None:
    run = drive(
        machine(stop=("So then",), thinking=False), [cue("We add. So "), sentence("the sum is 5."), eos("")]
    )
    assert run.steps[1][3] == [Delta("large", "reasoning", "So "), Delta("small", "finish", "the ")]
    assert run.released(1)[:3] == ["", "", ""]  # "So t", "So th", "So the": a stop string still may come


def test_a_stop_string_from_the_finisher_ends_the_relay() -> None:
    run = drive(machine(stop=("##",)), [cue("Add. So "), Turn("it is ##", matched="##")])
    assert run.result.text == "Add. So it is " and run.result.stats.outcome == "stop"


def test_a_stop_string_past_the_finishers_sentence_end_is_discarded_with_it() -> None:
    # The runtime missed the sentence end and stopped at the user's stop string after it: that
    # part is dropped, so the stop string never reaches the output and the relay goes on.
    finish = Turn("it is 5. Then ##", matched="##")
    run = drive(machine(stop=("##",), thinking=False), [cue("Add. So "), finish, eos(" ok")])
    assert run.kinds == [("large", "reasoning"), ("small", "finish"), ("large", "reasoning")]
    assert run.result.text == "Add. So it is 5. ok" and run.result.stats.outcome == "eos"


# -- failures ------------------------------------------------------------------------------
def test_a_cancelled_call_ends_the_relay() -> None:
    m = machine()
    first = m.next_call()
    assert first is not None
    m.complete(first, turn_result(first, cue("We add. So ")))
    call = m.next_call()
    assert call is not None
    m.progress(call, "it is")
    assert m.fail(call) is None and m.error is None
    assert m.done and m.in_flight is None and m.next_call() is None
    with pytest.raises(RuntimeError, match="not the one in flight"):
        m.complete(call, turn_result(call, sentence("it is 5.")))
    assert m.result().text == "We add. So "  # what was kept before the cancelled call


def test_a_failed_call_ends_the_relay_and_keeps_its_error() -> None:
    m = machine()
    call = m.next_call()
    assert call is not None
    m.progress(call, "We add")
    cause = ConnectionError("reset")
    err = m.fail(call, cause)
    assert m.error is err and err.__cause__ is cause
    assert (str(err), err.role) == ("large runtime failed during the reasoning step: reset", "large")
    assert m.done and m.next_call() is None
    with pytest.raises(RelayError) as raised:
        m.result()
    assert raised.value is err


def test_calls_out_of_turn_are_refused() -> None:
    m = machine()
    call = m.next_call()
    assert call is not None
    with pytest.raises(RuntimeError, match="has not completed"):
        m.next_call()
    with pytest.raises(RuntimeError, match="not the one in flight"):
        m.progress(Call("large", "reasoning", "req-99999", {}), "x")


# -- modes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 5, 9])
def test_random_switch_hands_off_after_gaps_drawn_from_its_seed(seed: int) -> None:
    rng = random.Random(seed)  # the machine's draws: 1 + Exp(rate), at least min_large_tokens + 1
    gaps = [max(PROFILE.min_large_tokens + 1, 1 + int(rng.expovariate(0.1))) for _ in range(2)]
    m = machine("random_switch", seed=seed, switch_rate=0.1, thinking=False)
    run = drive(m, [length("x" * gaps[0]), sentence("y."), eos("z")])
    assert run.kinds == [("large", "reasoning"), ("small", "finish"), ("large", "reasoning")]
    assert [run.params(0)["max_new_tokens"], run.params(2)["max_new_tokens"]] == gaps
    assert "stop_regex" not in run.params(0) and run.params(1)["stop_regex"] == [SENTENCE]  # no cues
    r = run.result
    assert r.stats.cue_counts == {} and r.stats.switches == 1


@pytest.mark.parametrize("mode,role", [("large_only", "large"), ("small_only", "small")])
def test_a_baseline_uses_one_model_for_everything(mode: str, role: str) -> None:
    run = drive(machine(mode, profile=None), [think("We add. So it is 5.</think>"), eos("5")])
    assert run.kinds == [(role, "reasoning"), (role, "answer")]
    assert "stop_regex" not in run.params(0)
    assert run.calls[0].body["text"] == THINKING[role]
    r = run.result
    assert r.stats.switches == 0 and r.stats.mode == mode


def test_relay_mode_needs_a_profile() -> None:
    with pytest.raises(ValueError, match="cue profile"):
        machine(profile=None)


@pytest.mark.parametrize("ids", [False, True], ids=["text", "ids"])
def test_callers_read_the_prompts_through_the_machine(ids: bool) -> None:
    m = machine(ids=ids)
    assert (m.prompt(), m.prompt("small")) == (THINKING["large"], THINKING["small"])
    assert m.prompt_token_count("small") == len(THINKING["small"])
    assert machine("small_only", profile=None).prompt() == THINKING["small"]  # the reasoner's


# -- the drivers ---------------------------------------------------------------------------
class ScriptedRuntimes:
    """Both runtimes as the driver sees an AsyncRelayPair and its clients: every call, whichever
    runtime it goes to, streams the next scripted turn; ``fail_at`` makes that call fail."""

    def __init__(self, turns: Sequence[Turn], fail_at: int | None = None) -> None:
        self.turns = list(turns)
        self.fail_at = fail_at
        self.bodies: list[dict[str, Any]] = []
        self.aborted: list[str] = []
        self.faults: list[str] = []

    def client_for(self, role: str, request_id: str) -> ScriptedRuntimes:
        return self

    def report_fault(self, role: str, client: Any, e: Exception) -> None:
        self.faults.append(role)

    def _next(self, body: dict[str, Any]) -> Turn:
        self.bodies.append(body)
        if len(self.bodies) - 1 == self.fail_at:
            raise RuntimeUnavailable("connection reset")
        return self.turns.pop(0)

    def _result(self, body: dict[str, Any], turn: Turn) -> GenerateResult:
        prompt = body.get("input_ids") or body["text"]
        ids = CODEC.encode(turn.text)
        return GenerateResult(turn.text, ids, len(prompt), len(ids), 0, turn.finish, turn.matched, 0.5)

    async def generate(self, body: dict[str, Any]) -> GenerateResult:
        return self._result(body, self._next(body))

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[StreamProgress | GenerateResult]:
        turn = self._next(body)
        for i in range(1, len(turn.text) + 1):
            yield StreamProgress(turn.text[:i], CODEC.encode(turn.text[:i]))
        yield self._result(body, turn)

    async def abort(self, rid: str) -> None:
        self.aborted.append(rid)

    async def aclose(self) -> None:
        pass


def run_driver(how: str, m: RelayMachine, runtimes: ScriptedRuntimes, on_delta: Any = None) -> RelayResult:
    """The async driver, or its sync face (a RelayPair over the same runtimes, on its own loop)."""
    if how == "sync":
        with RelayPair.over(runtimes) as pair:  # type: ignore[arg-type]
            return pair.run(m, on_delta)
    return asyncio.run(run(m, runtimes, on_delta))  # type: ignore[arg-type]


@pytest.mark.parametrize("how", ["sync", "async"])
@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_the_drivers_give_what_the_machine_gives(how: str, streamed: bool) -> None:
    expected = drive(machine(), RELAY)
    got: list[Delta] = []
    r = run_driver(how, machine(), ScriptedRuntimes(RELAY), got.append if streamed else None)
    assert (r.text, r.segments) == (expected.result.text, expected.result.segments)
    assert r.stats.calls == expected.result.stats.calls
    assert got == ([d for s in expected.steps for step in s for d in step] if streamed else [])


@pytest.mark.parametrize("how", ["sync", "async"])
def test_a_runtime_fault_is_raised_as_the_machines_error(how: str) -> None:
    m, runtimes = machine(), ScriptedRuntimes(RELAY, fail_at=1)
    with pytest.raises(
        RelayError, match="small runtime failed during the finish step: connection reset"
    ) as e:
        run_driver(how, m, runtimes)
    assert e.value is m.error and e.value.role == "small"
    assert isinstance(e.value.__cause__, RuntimeUnavailable)
    assert runtimes.faults == ["small"] and runtimes.aborted == []


class HungUp(Exception):
    """The listener went away."""


@pytest.mark.parametrize("how", ["sync", "async"])
def test_a_listener_that_gives_up_aborts_the_call_in_flight(how: str) -> None:
    def hang_up(d: Delta) -> None:
        raise HungUp

    m, runtimes = machine(), ScriptedRuntimes(RELAY)
    with pytest.raises(HungUp):
        run_driver(how, m, runtimes, hang_up)
    assert runtimes.aborted == ["req-00000"] and m.done and m.error is None


def test_the_eos_id_a_runtime_lists_is_not_kept_nor_handed_on() -> None:
    m = machine(ids=True)
    call = m.next_call()
    assert call is not None
    eos_id = 151643
    res = dataclasses.replace(
        turn_result(call, eos("hmm")),
        output_ids=[*CODEC.encode("hmm"), eos_id],
        completion_tokens=4,
        matched=eos_id,
    )
    m.complete(call, res)
    answer = m.next_call()
    assert answer is not None and answer.kind == "answer"
    assert eos_id not in answer.body["input_ids"]
    assert m.segments[0].num_tokens == 3 and m.stats.large_tokens == 3


def test_relay_settings_outside_the_config_are_refused_before_any_call() -> None:
    from relaygen_sgl.relay import relay_generate, relay_generate_async

    dead = "http://127.0.0.1:9"  # never asked: the check comes first
    with pytest.raises(TypeError, match=r"\['max_tokens'\].*config=RelayConfig"):
        relay_generate(messages=[], large=dead, small=dead, max_tokens=5)
    with pytest.raises(TypeError, match=r"\['mode'\].*config=RelayConfig"):
        asyncio.run(relay_generate_async(messages=[], large=dead, small=dead, mode="relay"))
