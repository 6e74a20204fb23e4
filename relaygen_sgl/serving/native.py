"""SGLang's native ``/generate`` on the relay server, so ``sgl.RuntimeEndpoint(relay_url)``
and other native clients (lm-eval's ``sglang-generate``) relay unchanged.

A single text (or token-id) generation relays.  Everything a relay cannot split across two
models goes to the large runtime as it came: batches, ``max_new_tokens: 0`` (prefix caching,
``select``), logprob requests, constrained decoding, ``stop_regex``, ... (the one rule for every
entry point is :func:`relaygen_sgl.relay.request_rules.direct_reason`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from relaygen_sgl.relay import RelayError, RelayMachine, RelayResult
from relaygen_sgl.relay.request_rules import direct_reason, meta_info
from relaygen_sgl.runtime.client import RuntimeRequestError, RuntimeUnavailable
from relaygen_sgl.serving.errors import APIError, unavailable
from relaygen_sgl.serving.protocol import GenerateRequest, new_id
from relaygen_sgl.serving.service import (
    SSE_DONE,
    ChunkTemplate,
    RelayService,
    json_escaped,
    relay_fault,
    sse,
    sse_error,
)


def _out(r: RelayResult, rid: str) -> dict[str, Any]:
    out: dict[str, Any] = {"text": r.text, "meta_info": meta_info(r, rid)}
    if r.output_ids is not None:
        out["output_ids"] = r.output_ids
    return out


async def generate(
    service: RelayService, req: GenerateRequest, body: dict[str, Any], request: Request
) -> Any:
    if direct_reason(body) is not None:
        return await service.proxy("large", "/generate", body)
    prompt: str | list[int] = req.text if isinstance(req.text, str) else list(req.input_ids or [])  # type: ignore[arg-type]
    m = await service.machine(body, mode="relay", prompt=prompt, param="text", top_cues=req.top_cues)
    rid = req.rid or new_id("generate")
    if req.stream:
        return StreamingResponse(_stream(service, m, rid), media_type="text/event-stream")
    try:
        (r,) = await service.run([m], request)
    except RelayError as e:
        raise relay_fault(e) from e
    return _out(r, rid)


async def _stream(service: RelayService, m: RelayMachine, rid: str) -> AsyncIterator[bytes]:
    """SGLang's streaming format: each chunk holds the whole text so far."""
    text = bytearray()  # the text so far, JSON-escaped: each token's escape is appended once
    templates: dict[str, ChunkTemplate] = {}
    try:
        async for _, item in service.merged([m]):
            if isinstance(item, RelayResult):
                yield sse(_out(item, rid))
                continue
            text += json_escaped(item.text)
            if item.role not in templates:
                templates[item.role] = _progress_template(rid, item.role)
            yield templates[item.role].fill_escaped(text)
    except Exception as e:  # noqa: BLE001 - reported on the stream
        yield sse_error(e)
    yield SSE_DONE


def _progress_template(rid: str, role: str) -> ChunkTemplate:
    meta = {"id": rid, "finish_reason": None, "relaygen_model": role}
    return ChunkTemplate.of(lambda t: {"text": t, "meta_info": meta})


async def model_info(service: RelayService) -> dict[str, Any]:
    """The large runtime's model info (its chat template is the program's), plus the pair."""
    try:
        large = await service.pair.large.model_info()
        small = await service.pair.small.model_info()
    except (RuntimeUnavailable, RuntimeRequestError) as e:
        raise unavailable(str(e)) from e
    profile = service.config.profile
    pair = {"large": large, "small": small, "profile": profile.name or profile.large_model}
    return {**large, "relaygen": pair}


async def flush_cache(service: RelayService) -> dict[str, Any]:
    try:
        await service.pair.flush_cache()
    except RuntimeRequestError as e:  # SGLang refuses while requests are running
        raise APIError(400, str(e)) from e
    except RuntimeUnavailable as e:
        raise unavailable(str(e)) from e
    return {"flushed": ["large", "small"]}
