"""The frontend backend's pure parts (no servers): re-rendering a program's turns for the small
model, the sampling it relays with, and profiles refused when the backend is built.

Program states come from SGLang's own interpreter, run with a backend that only names a chat
template (the programs here never generate)."""

from __future__ import annotations

import pytest
import sglang as sgl
from sglang.lang.backend.base_backend import BaseBackend
from sglang.lang.chat_template import get_chat_template
from sglang.lang.ir import SglSamplingParams
from transformers import AutoTokenizer

from relaygen_sgl.frontend import RelayBackend
from relaygen_sgl.frontend.prompts import Conversation, conversation, render_for
from relaygen_sgl.frontend.sampling import native_body
from relaygen_sgl.profile import Cue, CueProfile
from relaygen_sgl.relay import RenderedPrompt
from relaygen_sgl.relay.prompts import adds_special_tokens, render_prompts
from relaygen_sgl.relay.request_rules import direct_reason, relay_config, stop_strings

NOWHERE = "http://127.0.0.1:9"  # nothing listens: a refused profile must fail before any request


class TemplateOnly(BaseBackend):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.chat_template = get_chat_template(name)


def state_of(program, template: str, **kwargs):
    state = program.run(backend=TemplateOnly(template), use_thread=False, **kwargs)
    exe = state.stream_executor
    conv = conversation(exe.text_, exe.messages_, exe.cur_role, exe.cur_role_begin_pos, exe.chat_template)
    return exe, conv


@sgl.function
def mid_answer(s):
    s += sgl.system("Be brief.")
    s += sgl.user("Hi")
    s += sgl.assistant("  Hello!")  # the interpreter records it left-stripped
    s += sgl.user("What is 2+2?")
    s += sgl.assistant_begin()
    s += "Let me see. "


TURNS = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "What is 2+2?"},
]


@pytest.mark.parametrize("template", ["chatml", "default", "llama-2-chat", "llama-3-instruct", "claude"])
def test_turns_are_recovered_from_any_frontend_template(template):
    _, conv = state_of(mid_answer, template)
    assert conv == Conversation(TURNS, "assistant", "Let me see. ")


def test_the_frontend_default_system_prompt_is_left_to_the_small_models_template(tiny_pair):
    @sgl.function
    def ask(s):
        s += sgl.user("What is 12 + 30?")
        s += sgl.assistant_begin()

    exe, conv = state_of(ask, "qwen")  # "qwen" inserts "You are a helpful assistant."
    assert conv.messages[0] == {"role": "system", "content": "You are a helpful assistant."}
    tok = AutoTokenizer.from_pretrained(tiny_pair.small)
    text = render_for(conv, tok, frontend_default_system=exe.chat_template.default_system_prompt)
    assert text == "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n"


def test_small_prompt_is_the_same_turns_in_the_small_models_hf_template(tiny_pair):
    exe, conv = state_of(mid_answer, "llama-3-instruct")
    tok = AutoTokenizer.from_pretrained(tiny_pair.small)
    text = render_for(conv, tok, frontend_default_system=None)
    assert text == tok.apply_chat_template(TURNS, tokenize=False, add_generation_prompt=True) + "Let me see. "
    assert "<|start_header_id|>" in exe.text_ and "<|start_header_id|>" not in text


def test_completion_programs_and_raw_text_outside_turns():
    @sgl.function
    def plain(s):
        s += "Q: What is 2+2?\nA:"

    @sgl.function
    def raw_between(s):
        s += sgl.user("Hi")
        s += "some notes\n"
        s += sgl.assistant_begin()

    @sgl.function
    def tail_after_turns(s):
        s += sgl.user("Hi")
        s += "Answer:"

    @sgl.function
    def open_user(s):
        s += sgl.user_begin()
        s += "I want"

    assert state_of(plain, "chatml")[1].plain
    assert state_of(raw_between, "chatml")[1] is None
    conv = state_of(tail_after_turns, "chatml")[1]
    assert conv == Conversation([{"role": "user", "content": "Hi"}], None, "Answer:")
    conv = state_of(open_user, "chatml")[1]
    assert conv.open_role == "user" and render_for(conv, None, frontend_default_system=None) is None


def test_sampling_is_the_interpreters_resolved_params():
    sp = SglSamplingParams(
        max_new_tokens=77, temperature=0.6, top_p=0.9, top_k=20, stop=["\n\n", "<|im_end|>", "<|im_end|>"]
    )
    config = relay_config(native_body(sp, "x"), mode="relay", answer_model="small", default_max_tokens=128)
    assert config.max_tokens == 77 and config.stop == ("\n\n", "<|im_end|>")
    assert config.sampling["temperature"] == 0.6 and config.sampling["top_k"] == 20
    assert stop_strings("x") == ("x",) and stop_strings(()) == ()

    def reason(sp: SglSamplingParams, images: bool = False) -> str | None:
        return direct_reason(native_body(sp, "x", images))

    assert reason(sp) is None
    assert reason(SglSamplingParams(regex=r"\d+")) == "constrained decoding"
    assert reason(SglSamplingParams(dtype=int)) == "constrained decoding"
    assert reason(SglSamplingParams(stop_regex=["x"])) == "stop_regex"
    assert reason(SglSamplingParams(return_logprob=True)) == "logprobs"
    assert reason(sp, True) == "images"


def test_profiles_sglang_would_refuse_are_refused_when_the_backend_is_built():
    too_long = CueProfile("l", "s", (Cue("x" * 300),), name="too-long")
    with pytest.raises(ValueError, match="too-long.*256 bytes"):
        RelayBackend(NOWHERE, NOWHERE, too_long)
    # Each cue near the byte limit takes a regex of its own: 40 of them need 40 > 32 slots.
    too_many = CueProfile("l", "s", tuple(Cue(f"{i:03d}" + "y" * 200) for i in range(40)), name="too-many")
    with pytest.raises(ValueError, match="too-many.*SGLang allows 32"):
        RelayBackend(NOWHERE, NOWHERE, too_many)
    bad_end = CueProfile("l", "s", (Cue("So"),), sentence_end_regex="[.]" * 100, name="bad-end")
    with pytest.raises(ValueError, match="bad-end.*sentence_end_regex"):
        RelayBackend(NOWHERE, NOWHERE, bad_end)
    with pytest.raises(ValueError, match="needs a cue profile"):
        RelayBackend(NOWHERE, NOWHERE, None)


def test_per_runtime_rendered_prompts_keep_their_own_text_and_special_token_rule():
    prompts = {"large": RenderedPrompt("plain"), "small": RenderedPrompt("<|im_start|>..", templated=True)}
    texts, ids = render_prompts(prompts, None, {"large": None, "small": None}, handoff="ids")
    assert texts == {"large": "plain", "small": "<|im_start|>.."} and ids is None
    # Template output already carries its special tokens; a program's plain text gets them added.
    assert adds_special_tokens(prompts, "large") and not adds_special_tokens(prompts, "small")
    assert adds_special_tokens("text", "small") and not adds_special_tokens(None, "small")
    with pytest.raises(ValueError, match="no rendered prompt for the small runtime"):
        render_prompts({"large": prompts["large"]}, None, {"large": None, "small": None}, handoff="text")
