"""One rule for every entry point: the same request, sent to the OpenAI routes, the native
``/generate`` and the frontend backend, is relayed by all three or sent to one runtime by all
three (with the same reason), and a relayed one gets the same relay.  No server needed."""

from __future__ import annotations

from typing import Any

import pytest
from sglang.lang.ir import SglSamplingParams

from relaygen_sgl.frontend.sampling import native_body
from relaygen_sgl.relay.request_rules import direct_reason, meta_info, relay_config, stop_strings
from relaygen_sgl.relay.types import CallRecord, RelayResult, RelayStats
from relaygen_sgl.serving.protocol import ChatCompletionRequest, CompletionRequest, GenerateRequest

BASE = {"max_tokens": 64, "temperature": 0.7, "top_p": 0.9, "top_k": 20, "stop": ["\n\n", "Q:"]}
USER = [{"role": "user", "content": "What is 12 + 30?"}]
IMAGE = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:,"}},
        ],
    }
]

# (case, expected reason, OpenAI extras, native sampling extras, native request extras, frontend extras)
CASES: list[tuple[str, str | None, dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    ("plain", None, {}, {}, {}, {}),
    ("regex", "constrained decoding", {"regex": r"\d+"}, {"regex": r"\d+"}, {}, {"regex": r"\d+"}),
    (
        "json",
        "constrained decoding",
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "n", "schema": {"type": "integer"}},
            }
        },
        {"json_schema": '{"type": "integer"}'},
        {},
        {"json_schema": '{"type": "integer"}'},
    ),
    ("logprobs", "logprobs", {"logprobs": True}, {}, {"return_logprob": True}, {"return_logprob": True}),
    ("stop_regex", "stop_regex", {"stop_regex": ["x+"]}, {"stop_regex": ["x+"]}, {}, {"stop_regex": ["x+"]}),
    (
        "stop ids",
        "stop_token_ids",
        {"stop_token_ids": [7]},
        {"stop_token_ids": [7]},
        {},
        {"stop_token_ids": [7]},
    ),
    ("min tokens", "min_new_tokens", {"min_tokens": 5}, {"min_new_tokens": 5}, {}, {"min_new_tokens": 5}),
    ("images", "images", {"messages": IMAGE}, {}, {"image_data": "data:,"}, {"images": True}),
]


def _openai_chat(extra: dict[str, Any]) -> dict[str, Any]:
    return ChatCompletionRequest.model_validate({"messages": USER, **BASE, **extra}).native_view()


def _openai_completion(extra: dict[str, Any]) -> dict[str, Any] | None:
    if "messages" in extra:
        return None  # a text prompt has no images
    if extra.get("logprobs"):
        extra = {**extra, "logprobs": 1}  # the legacy API asks for logprobs by count
    return CompletionRequest.model_validate({"prompt": "Q: 12 + 30?", **BASE, **extra}).native_view()


def _native(sampling: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    sp = {
        "max_new_tokens": BASE["max_tokens"],
        **{k: BASE[k] for k in ("temperature", "top_p", "top_k", "stop")},
    }
    body = {"text": "Q: 12 + 30?", "sampling_params": {**sp, **sampling}, **request}
    return GenerateRequest.model_validate(body).model_dump(exclude_unset=True)


def _frontend(extra: dict[str, Any]) -> dict[str, Any]:
    extra = dict(extra)
    images = extra.pop("images", False)
    params = {
        "max_new_tokens": BASE["max_tokens"],
        **{k: BASE[k] for k in ("temperature", "top_p", "top_k")},
        "stop": BASE["stop"],
        **extra,
    }
    sp = SglSamplingParams(**params)
    return native_body(sp, "Q: 12 + 30?", images)


@pytest.mark.parametrize(
    ("case", "reason", "openai", "native", "request_extra", "frontend"), CASES, ids=[c[0] for c in CASES]
)
def test_every_entry_point_decides_alike(case, reason, openai, native, request_extra, frontend) -> None:
    views = {
        "chat": _openai_chat(openai),
        "completions": _openai_completion(openai),
        "generate": _native(native, request_extra),
        "frontend": _frontend(frontend),
    }
    views = {k: v for k, v in views.items() if v is not None}
    assert {k: direct_reason(v) for k, v in views.items()} == dict.fromkeys(views, reason)
    if reason is None:
        configs = {
            k: relay_config(v, mode="relay", answer_model="small", default_max_tokens=1)
            for k, v in views.items()
        }
        for config in configs.values():
            assert config.max_tokens == BASE["max_tokens"] and config.stop == tuple(BASE["stop"])
            assert {k: config.sampling[k] for k in ("temperature", "top_p", "top_k")} == {
                k: BASE[k] for k in ("temperature", "top_p", "top_k")
            }


def test_native_only_shapes_follow_the_same_rule() -> None:
    """What only the native route and the frontend can ask for (the OpenAI routes expand ``n`` into
    ``n`` relays and refuse ``max_tokens: 0``)."""
    assert direct_reason(_native({"n": 2}, {})) == direct_reason(_frontend({"n": 2})) == "n > 1"
    assert direct_reason(_native({"max_new_tokens": 0}, {})) == "max_new_tokens=0"
    assert direct_reason(_frontend({"max_new_tokens": 0})) == "max_new_tokens=0"
    assert direct_reason(_frontend({"dtype": int})) == "constrained decoding"
    batch = GenerateRequest.model_validate({"text": ["a", "b"]}).model_dump(exclude_unset=True)
    assert direct_reason(batch) == "batch"
    assert direct_reason({"input_ids": [[1, 2], [3]]}) == "batch"
    assert direct_reason({"input_ids": [1, 2]}) is None


def test_openai_choices_get_their_own_seeds_and_the_stop_strings_are_normalised() -> None:
    req = ChatCompletionRequest.model_validate({"messages": USER, "seed": 5, "n": 3, "stop": "Q:"})
    seeds = [
        relay_config(req.native_view(i), mode="relay", answer_model="small", default_max_tokens=9).sampling[
            "sampling_seed"
        ]
        for i in range(3)
    ]
    assert seeds == [5, 6, 7]
    assert stop_strings(["a", "", "a", "b"]) == ("a", "b") and stop_strings(None) == ()


def test_meta_info_is_sglangs_shape() -> None:
    stats = RelayStats(mode="relay", handoff="ids", large_tokens=3, small_tokens=2, finish_reason="length")
    stats.calls.append(CallRecord("large", "reasoning", "r-00000", 10, 4, 5, 3, 0.1))
    meta = meta_info(RelayResult(text="x", segments=[], stats=stats), "rid")
    assert meta["finish_reason"] == {"type": "length", "length": 5}
    assert (meta["prompt_tokens"], meta["completion_tokens"], meta["cached_tokens"]) == (10, 5, 4)
    assert meta["relaygen"]["switches"] == 0 and meta["id"] == "rid"
