"""What the relay does with a request, decided once for every entry point.

The OpenAI routes, the native ``/generate`` and the frontend backend each put what they got in
SGLang's native ``/generate`` shape (``GenerateReqInput``: ``text`` or ``input_ids``,
``sampling_params``, ``return_logprob``, ``image_data``, ...), and this module says the rest:

* :func:`direct_reason`: why a request cannot be split across two models (it then goes to one
  runtime as it came), or None;
* :func:`relay_sampling`: the sampling fields both models get on every turn;
* :func:`stop_strings`: the user's stop strings, once each;
* :func:`relay_config`: the :class:`RelayConfig` of a relayable request;
* :func:`meta_info`: SGLang's ``meta_info`` of a relayed result.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from relaygen_sgl.relay.types import Mode, RelayConfig, RelayResult, Role

# Sent to both models on every turn of the relay.
PASSED_SAMPLING = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "logit_bias",
    "ignore_eos",
    "sampling_seed",
    "skip_special_tokens",
    "spaces_between_special_tokens",
)
# Constrained decoding: the grammar state lives in one runtime.  ``dtype`` is the frontend's
# typed gen (``sgl.gen(dtype=int)``), which SGLang's RuntimeEndpoint turns into a regex.
CONSTRAINTS = ("regex", "json_schema", "ebnf", "dtype")


def direct_reason(body: Mapping[str, Any]) -> str | None:
    """Why the native ``/generate`` request ``body`` cannot be relayed, or None when it can."""
    sp: Mapping[str, Any] = body.get("sampling_params") or {}
    if body.get("image_data"):
        return "images"
    if _batch(body):
        return "batch"
    if any(sp.get(k) is not None for k in CONSTRAINTS):
        return "constrained decoding"
    if body.get("return_logprob") or body.get("top_logprobs_num"):
        return "logprobs"  # one model's scores
    if sp.get("stop_regex"):
        return "stop_regex"  # the relay's cues use SGLang's stop_regex slots
    if sp.get("stop_token_ids"):
        return "stop_token_ids"  # ids of one tokenizer
    if sp.get("n") not in (None, 1):
        return "n > 1"
    if sp.get("min_new_tokens"):
        return "min_new_tokens"  # per request, it would bind every turn of the relay
    if sp.get("max_new_tokens") == 0:
        return "max_new_tokens=0"  # prefix caching, select: nothing to generate
    return None


def _batch(body: Mapping[str, Any]) -> bool:
    """Not exactly one prompt: a list of texts, a list of id lists, or none at all."""
    text, ids = body.get("text"), body.get("input_ids")
    if isinstance(text, str):
        return False
    return not ids or isinstance(ids[0], list)


def relay_sampling(sampling_params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k in PASSED_SAMPLING if (v := sampling_params.get(k)) is not None}


def stop_strings(stop: str | Iterable[str] | None) -> tuple[str, ...]:
    """The stop strings, once each, in order (a chat template's may repeat the user's)."""
    items = (stop,) if isinstance(stop, str) else tuple(stop or ())
    return tuple(dict.fromkeys(s for s in items if s))


def relay_config(
    body: Mapping[str, Any], *, mode: Mode, answer_model: Role, default_max_tokens: int
) -> RelayConfig:
    """The relay of a request :func:`direct_reason` let through (a bad value is a ValueError)."""
    sp: Mapping[str, Any] = body.get("sampling_params") or {}
    return RelayConfig(
        mode=mode,
        max_tokens=sp.get("max_new_tokens") or default_max_tokens,
        answer_model=answer_model,
        sampling=relay_sampling(sp),
        stop=stop_strings(sp.get("stop")),
    )


def meta_info(r: RelayResult, rid: str) -> dict[str, Any]:
    """SGLang's ``meta_info`` of a relayed generation, with the relay stats under ``"relaygen"``."""
    st = r.stats
    finish: dict[str, Any] = (
        {"type": "length", "length": st.output_tokens}
        if st.finish_reason == "length"
        else {"type": "stop", "matched": None}
    )
    return {
        "id": rid,
        "finish_reason": finish,
        "prompt_tokens": st.prompt_tokens,
        "completion_tokens": st.output_tokens,
        "cached_tokens": st.calls[0].cached_tokens if st.calls else 0,
        "relaygen": st.summary(),
    }
