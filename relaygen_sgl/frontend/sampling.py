"""From the interpreter's resolved sampling parameters to a relay request, or why there is none.

The interpreter has already merged the program's ``.run(...)`` defaults with the ``sgl.gen``'s own
values and appended the chat template's stop strings (``StreamExecutor._resolve_sampling_params``),
so everything here is per gen.
"""

from __future__ import annotations

from typing import Any

from sglang.lang.global_config import global_config
from sglang.lang.ir import SglSamplingParams

from relaygen_sgl.relay import Mode, RelayConfig, Role

# Sent to both models on every turn of the relay.
_PASSED = ("temperature", "top_p", "top_k", "min_p", "frequency_penalty", "presence_penalty", "ignore_eos")


def direct_reason(sp: SglSamplingParams, has_images: bool) -> str | None:
    """Why this gen cannot be split across two models (it then goes to one runtime as it came),
    or None.  The same rule as the relay server's native ``/generate``."""
    if has_images:
        return "images"
    if sp.regex is not None or sp.json_schema is not None or sp.dtype is not None:
        return "constrained decoding"  # the grammar state lives in one runtime
    if sp.return_logprob or sp.top_logprobs_num:
        return "logprobs"
    if sp.stop_regex:
        return "stop_regex"  # the relay's cues use SGLang's stop_regex slots
    if sp.stop_token_ids:
        return "stop_token_ids"  # ids of one tokenizer
    if sp.n not in (None, 1):
        return "n > 1"
    if sp.min_new_tokens:
        return "min_new_tokens"  # per request, it would bind every turn of the relay
    if not sp.max_new_tokens:
        return "max_new_tokens=0"
    return None


def relay_config(sp: SglSamplingParams, *, mode: Mode, answer_model: Role) -> RelayConfig:
    sampling: dict[str, Any] = {k: v for k in _PASSED if (v := getattr(sp, k)) is not None}
    # As RuntimeEndpoint sends them.
    sampling["skip_special_tokens"] = global_config.skip_special_tokens_in_output
    sampling["spaces_between_special_tokens"] = global_config.spaces_between_special_tokens_in_out
    return RelayConfig(mode=mode, max_tokens=int(sp.max_new_tokens), answer_model=answer_model,
                       sampling=sampling, stop=stop_strings(sp.stop))  # fmt: skip


def stop_strings(stop: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """The user's and the chat template's stop strings, once each, in order."""
    items = (stop,) if isinstance(stop, str) else tuple(stop or ())
    return tuple(dict.fromkeys(s for s in items if s))
