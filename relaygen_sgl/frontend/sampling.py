"""A gen's resolved sampling parameters in SGLang's native ``/generate`` shape, for the request
rules (:mod:`relaygen_sgl.relay.request_rules`) that every entry point shares.

The interpreter has already merged the program's ``.run(...)`` defaults with the ``sgl.gen``'s own
values and appended the chat template's stop strings (``StreamExecutor._resolve_sampling_params``),
so everything here is per gen.
"""

from __future__ import annotations

from typing import Any

from sglang.lang.global_config import global_config
from sglang.lang.ir import SglSamplingParams

# Request fields beside sampling_params that SGLang's RuntimeEndpoint sends when they are set.
_REQUEST_FIELDS = ("return_logprob", "logprob_start_len", "top_logprobs_num", "return_text_in_logprobs")
DEFAULT_MAX_NEW_TOKENS = SglSamplingParams.max_new_tokens  # the interpreter's own default


def native_body(sp: SglSamplingParams, text: str, has_images: bool = False) -> dict[str, Any]:
    """The ``/generate`` body SGLang's RuntimeEndpoint would send for this gen (its image as a flag)."""
    params: dict[str, Any] = {
        "skip_special_tokens": global_config.skip_special_tokens_in_output,
        "spaces_between_special_tokens": global_config.spaces_between_special_tokens_in_out,
        **sp.to_srt_kwargs(),
        "regex": sp.regex,
        "dtype": sp.dtype,  # RuntimeEndpoint makes it a regex
    }
    body: dict[str, Any] = {"text": text, "sampling_params": params}
    body.update({k: v for k in _REQUEST_FIELDS if (v := getattr(sp, k, None)) is not None})
    if has_images:
        body["image_data"] = True
    return body
