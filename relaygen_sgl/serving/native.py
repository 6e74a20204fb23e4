"""SGLang's native ``/generate`` on the relay server, so ``sgl.RuntimeEndpoint(relay_url)``
and other native clients (lm-eval's ``sglang-generate``) relay unchanged.

A single text (or token-id) generation relays.  Everything a relay cannot split across two
models goes to the large runtime as it came: batches, ``max_new_tokens: 0`` (prefix caching,
``select``), logprob requests, and constrained decoding (``regex``, ``json_schema``, ``ebnf``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from relaygen_sgl.relay import RelayError, RelayMachine, RelayResult
from relaygen_sgl.runtime_client import RuntimeRequestError, RuntimeUnavailable
from relaygen_sgl.serving.errors import APIError, unavailable
from relaygen_sgl.serving.protocol import GenerateRequest, new_id
from relaygen_sgl.serving.service import SSE_DONE, RelayService, relay_fault, sse, sse_error

_PASSED_SAMPLING = ("temperature", "top_p", "top_k", "min_p", "ignore_eos", "sampling_seed",
                    "frequency_penalty", "presence_penalty", "repetition_penalty", "logit_bias",
                    "skip_special_tokens", "spaces_between_special_tokens")  # fmt: skip


def relayable(req: GenerateRequest) -> bool:
    sp = req.sampling_params
    ids = req.input_ids
    single = isinstance(req.text, str) or (ids is not None and bool(ids) and not isinstance(ids[0], list))
    return (single and sp.max_new_tokens != 0 and not req.return_logprob
            and sp.regex is None and sp.json_schema is None and sp.ebnf is None
            and not (req.model_extra or {}).get("top_logprobs_num"))  # fmt: skip


def _sampling(req: GenerateRequest) -> dict[str, Any]:
    sp = req.sampling_params
    return {k: v for k in _PASSED_SAMPLING if (v := getattr(sp, k)) is not None}


def _stops(req: GenerateRequest) -> tuple[str, ...]:
    stop = req.sampling_params.stop
    return (stop,) if isinstance(stop, str) else tuple(stop or ())


def _meta(r: RelayResult, rid: str) -> dict[str, Any]:
    st = r.stats
    finish: dict[str, Any] = {"type": "length", "length": st.output_tokens} if st.finish_reason == "length" \
        else {"type": "stop", "matched": None}  # fmt: skip
    return {"id": rid, "finish_reason": finish, "prompt_tokens": st.prompt_tokens,
            "completion_tokens": st.output_tokens,
            "cached_tokens": st.calls[0].cached_tokens if st.calls else 0,
            "relaygen": st.summary()}  # fmt: skip


def _out(r: RelayResult, rid: str) -> dict[str, Any]:
    out: dict[str, Any] = {"text": r.text, "meta_info": _meta(r, rid)}
    if r.output_ids is not None:
        out["output_ids"] = r.output_ids
    return out


async def generate(service: RelayService, req: GenerateRequest, body: dict[str, Any],
                   request: Request) -> Any:  # fmt: skip
    if req.sampling_params.stop_regex:
        raise APIError(400, "stop_regex is not supported on relayed requests (the relay's own cues use it); "
                       "use stop strings", param="sampling_params.stop_regex")  # fmt: skip
    if not relayable(req):
        return await service.proxy("large", "/generate", body)
    max_new = req.sampling_params.max_new_tokens or service.config.default_max_tokens
    prompt: str | list[int] = req.text if isinstance(req.text, str) else list(req.input_ids or [])  # type: ignore[arg-type]
    m = await service.machine(mode="relay", max_tokens=max_new, sampling=_sampling(req), stop=_stops(req),
                              prompt=prompt, param="text", top_cues=req.top_cues)  # fmt: skip
    rid = req.rid or new_id("generate")
    if req.stream:
        return StreamingResponse(_stream(service, m, rid), media_type="text/event-stream")
    try:
        (r,) = await service.run([m], request)
    except RelayError as e:
        raise relay_fault(e) from e
    return _out(r, rid)


async def _stream(service: RelayService, m: RelayMachine, rid: str) -> AsyncIterator[str]:
    """SGLang's streaming format: each chunk holds the whole text so far."""
    text = ""
    try:
        async for _, item in service.merged([m]):
            if isinstance(item, RelayResult):
                yield sse(_out(item, rid))
            else:
                text += item.text
                yield sse({"text": text, "meta_info": {"id": rid, "finish_reason": None,
                                                       "relaygen_model": item.model}})  # fmt: skip
    except Exception as e:  # noqa: BLE001 - reported on the stream
        yield sse_error(e)
    yield SSE_DONE


async def model_info(service: RelayService) -> dict[str, Any]:
    """The large runtime's model info (its chat template is the program's), plus the pair."""
    try:
        large = await service.pair.large.amodel_info()
        small = await service.pair.small.amodel_info()
    except (RuntimeUnavailable, RuntimeRequestError) as e:
        raise unavailable(str(e)) from e
    profile = service.config.profile
    pair = {"large": large, "small": small, "profile": profile.name or profile.large_model}
    return {**large, "relaygen": pair}


async def flush_cache(service: RelayService) -> dict[str, Any]:
    try:
        for c in service.pair.clients.values():
            await c.aflush_cache()
    except RuntimeRequestError as e:  # SGLang refuses while requests are running
        raise APIError(400, str(e)) from e
    except RuntimeUnavailable as e:
        raise unavailable(str(e)) from e
    return {"flushed": ["large", "small"]}
