"""RelayBackend on two real SGLang servers (tiny models): unmodified SGLang frontend programs,
written as SGLang's docs write them, relay every ``sgl.gen``.  Nothing mocked."""

from __future__ import annotations

import importlib

import pytest
import sglang as sgl
from sglang.lang.chat_template import ChatTemplate, get_chat_template
from transformers import AutoTokenizer

from relaygen_sgl import RelayBackend, RelayError, single_model
from relaygen_sgl.runtime.client import RuntimeClient
from relaygen_sgl.runtime.process import free_port
from relaygen_sgl.testing.tiny_models import tiny_profile

PROFILE = tiny_profile()
QUESTIONS = ["What is 7 + 8?", "What is 21 + 21?", "What is 12 + 30?"]
RUN = {"temperature": 0, "max_new_tokens": 160}  # .run() defaults, honoured by every gen


@pytest.fixture(scope="module")
def backend(runtimes):
    b = RelayBackend(runtimes.large, runtimes.small, PROFILE, chat_template="chatml")
    yield b
    b.shutdown()


@sgl.function
def two_turns(s, question):
    s += sgl.user(question)
    s += sgl.assistant(sgl.gen("first"))
    s += sgl.user("And what is 4 + 4?")
    s += sgl.assistant(sgl.gen("second"))


@sgl.function
def pick(s, question):
    s += sgl.user(question)
    s += sgl.assistant(sgl.gen("reasoning", max_tokens=80))
    s += sgl.user("Which is it?")
    s += sgl.assistant(sgl.select("answer", choices=["42", "15", "8"]))
    s += sgl.user("Once more.")
    s += sgl.assistant(sgl.gen("again", choices=["yes", "no"]))


@sgl.function
def drafts(s, question):
    s += sgl.user(question)
    s += sgl.assistant_begin()
    forks = s.fork(2)
    forks += lambda i: f"Draft {i + 1}: " + sgl.gen("draft", max_tokens=60)
    forks.join()
    s += "Best: " + sgl.gen("best", max_tokens=40)
    s += sgl.assistant_end()


@sgl.function
def choose(s):
    s += sgl.user("Hi")
    s += sgl.assistant(sgl.select("x", choices=["a", "b"]))


def relay_stats(state, name):
    meta = state.get_meta_info(name)
    assert meta is not None, name
    return meta["relaygen"]


def test_multi_turn_program_relays_each_gen_with_its_stats(backend):
    states = [two_turns.run(question=q, backend=backend, **RUN) for q in QUESTIONS[:2]]
    for state in states:
        assert state.error() is None
        assert [m["role"] for m in state.messages()] == ["user", "assistant", "user", "assistant"]
        for name in ("first", "second"):
            st = relay_stats(state, name)
            assert st["mode"] == "relay" and st["handoff"] == "ids"
            assert 0 < st["output_tokens"] <= RUN["max_new_tokens"]
            assert state[name] and state[name] in state.text()
            # What the tiny models write is theirs (switching itself is forced in test_relay.py),
            # but the stats of whatever they wrote add up.
            assert st["switches"] == sum(st["cue_counts"].values())
            assert st["large_tokens"] + st["small_tokens"] == st["output_tokens"]


def test_run_defaults_and_the_chat_templates_stop_strings_reach_the_relay(runtimes):
    # A ChatML template whose stop string is one the tiny models write in every answer.
    chatml = get_chat_template("chatml")
    template = ChatTemplate(
        name="chatml-stop-at-equals",
        default_system_prompt=None,
        role_prefix_and_suffix=chatml.role_prefix_and_suffix,
        stop_str=("=",),
    )
    b = RelayBackend(runtimes.large.url, runtimes.small.url, PROFILE, chat_template=template)

    @sgl.function
    def ask(s, question):
        s += sgl.user(question)
        s += sgl.assistant(sgl.gen("answer"))

    short = ask.run(question=QUESTIONS[0], backend=b, temperature=0, max_new_tokens=12)
    st = relay_stats(short, "answer")
    assert st["output_tokens"] <= 12
    free = ask.run(question=QUESTIONS[0], backend=b, temperature=0, max_new_tokens=160)
    assert free.error() is None and "=" not in free["answer"]
    b.shutdown()


def test_select_goes_to_the_large_runtime(backend):
    state = pick.run(question="What is 21 + 21?", backend=backend, **RUN)
    assert state.error() is None
    assert state["answer"] in ("42", "15", "8") and state["again"] in ("yes", "no")
    assert relay_stats(state, "reasoning")["mode"] == "relay"


def test_fork_and_join(backend):
    state = drafts.run(question="What is 21 + 21?", backend=backend, **RUN)
    assert state.error() is None
    assert len(state["draft"]) == 2 and all(state["draft"])
    assert relay_stats(state, "best")["mode"] == "relay"


def test_text_handoff_and_text_outside_chat_turns(runtimes):
    b = RelayBackend(runtimes.large.url, runtimes.small.url, PROFILE, chat_template="chatml", handoff="text")

    @sgl.function
    def notes(s, question):
        s += sgl.user(question)
        s += "(notes between turns)\n"  # no chat template can say this: the small model gets this text
        s += sgl.assistant(sgl.gen("answer", max_tokens=60))

    with pytest.warns(UserWarning, match="large model's chat template"):
        state = notes.run(question=QUESTIONS[1], backend=b, temperature=0)
        assert state.error() is None  # waits for the interpreter's thread, which warns
    assert state["answer"]
    assert relay_stats(state, "answer")["handoff"] == "text"
    b.shutdown()


def test_run_batch_with_a_progress_bar(backend, capfd):
    sgl.flush_cache(backend)  # both runtimes
    states = two_turns.run_batch(
        [{"question": q} for q in QUESTIONS], backend=backend, num_threads=3, progress_bar=True, **RUN
    )
    assert all(s.error() is None for s in states)
    assert all(relay_stats(s, "second")["mode"] == "relay" for s in states)
    assert "3/3" in capfd.readouterr().err


def test_streaming_yields_the_relayed_variable_token_by_token(runtimes):
    # The two-line switch: a RuntimeEndpoint for the large model, wrapped.
    large = sgl.RuntimeEndpoint(runtimes.large.url, chat_template_name="chatml")
    b = RelayBackend(large, runtimes.small.url, PROFILE)
    state = two_turns.run(question=QUESTIONS[0], backend=b, stream=True, **RUN)
    chunks = list(state.text_iter("first"))
    assert len(chunks) > 1
    assert "".join(chunks) == state["first"]
    assert relay_stats(state, "first")["output_tokens"] > 1
    state.sync()
    assert state.error() is None and state["second"]
    b.shutdown()


def test_trace_and_separate_reasoning(backend):
    traced = two_turns.trace(backend=backend)
    gens = [n.name for n in traced.flatten_nodes() if type(n).__name__ == "SglGen"]
    assert gens == ["first", "second"]

    @sgl.function
    def think(s, question):
        s += sgl.user(question)
        s += sgl.assistant(sgl.separate_reasoning(sgl.gen("answer"), model_type="qwen3"))

    state = think.run(question=QUESTIONS[1], backend=backend, **RUN)
    assert state.error() is None
    assert state["answer_reasoning_content"] and "</think>" not in state["answer"]
    assert relay_stats(state, "answer")["mode"] == "relay"


def test_single_model_sections_and_constrained_gens(runtimes):
    chatml = get_chat_template("chatml")
    # A large-model template that adds a default system turn; the small model's own (HF) template
    # has none, so the two prompts differ and the small one's can be checked token by token.
    template = ChatTemplate(
        name="chatml-with-system",
        default_system_prompt="You are tiny.",
        role_prefix_and_suffix=chatml.role_prefix_and_suffix,
        stop_str=chatml.stop_str,
    )
    b = RelayBackend(runtimes.large.url, runtimes.small.url, PROFILE, chat_template=template)

    @sgl.function
    def mixed(s, question):
        s += sgl.user(question)
        with single_model(s, "small"):
            s += sgl.assistant(sgl.gen("small_part", max_tokens=8))
        with single_model(s, "large"):
            s += sgl.user("Again.") + sgl.assistant(sgl.gen("large_part", max_tokens=8))
        s += sgl.user("A number.") + sgl.assistant(sgl.gen("number", regex=r"[0-9]{1,3}"))
        s += sgl.user("Once more.") + sgl.assistant(sgl.gen("relayed", max_tokens=40))

    state = mixed.run(question=QUESTIONS[1], backend=b, **RUN)
    assert state.error() is None
    small, large = relay_stats(state, "small_part"), relay_stats(state, "large_part")
    assert small["mode"] == "small_only" and small["large_tokens"] == 0
    assert large["mode"] == "large_only" and large["small_tokens"] == 0
    direct = {"mode": "direct", "role": "large", "reason": "constrained decoding"}
    assert relay_stats(state, "number") == direct
    assert state["number"].strip().isdigit()
    assert relay_stats(state, "relayed")["mode"] == "relay"
    # Counted by the runtimes themselves, as the relay's prompts are.
    tok = AutoTokenizer.from_pretrained(runtimes.small.model_path)
    asked = [{"role": "user", "content": QUESTIONS[1]}]
    small_text = tok.apply_chat_template(asked, tokenize=False, add_generation_prompt=True)
    small_prompt = RuntimeClient(runtimes.small.url).tokenize(small_text, add_special_tokens=False)
    large_text = template.get_prompt([{"role": "system", "content": None}, *asked])
    large_text += "<|im_start|>assistant\n"
    large_prompt = RuntimeClient(runtimes.large.url).tokenize(large_text)
    assert state.get_meta_info("small_part")["prompt_tokens"] == len(small_prompt) < len(large_prompt)
    assert state.get_meta_info("large_part")["prompt_tokens"] > len(large_prompt)
    b.shutdown()


def test_a_small_runtime_that_is_down_fails_the_program_cleanly(runtimes):
    dead = f"http://127.0.0.1:{free_port()}"
    b = RelayBackend(runtimes.large.url, dead, PROFILE, chat_template="chatml")
    state = two_turns.run(question=QUESTIONS[0], backend=b, **RUN)
    err = state.error()
    assert isinstance(err, RelayError) and err.role == "small" and dead in str(err)
    assert "first" not in state
    assert state.text().endswith("<|im_start|>assistant\n")  # nothing half-written
    # A program that only needs the large model still runs.
    assert choose.run(backend=b).error() is None
    b.shutdown()


@pytest.mark.parametrize("name", ["math_boxed", "multiple_choice", "batch_math"])
def test_example_programs_have_help(name, capsys):
    # In this process: a fresh interpreter per program spent its time importing SGLang again.
    program = importlib.import_module(f"programs.{name}")
    with pytest.raises(SystemExit) as done:
        program.main(["--help"])
    assert done.value.code == 0
    assert "--large-url" in capsys.readouterr().out
