"""``/v1/chat/completions`` and ``/v1/completions``: OpenAI requests in, relays, OpenAI
responses out (SSE when ``stream``).  ``n`` choices are ``n`` relays run in parallel.

A request the relay cannot split (:func:`~relaygen_sgl.relay.request_rules.direct_reason`:
token logprobs, which lm-eval's loglikelihood tasks send with ``echo``; constrained decoding;
``stop_token_ids``; images; ...) goes whole to the large runtime (the small one for
``relaygen-small-only``) and its answer comes back as SGLang gave it.

Chat answers follow SGLang's reasoning parser: text before ``</think>`` is
``reasoning_content``, the rest ``content``; a model that does not think has it all in
``content``.  A whole answer is the relay's own split (``RelayResult.reasoning``/``answer``); a
stream is split as it comes, from what the prompt and the output's start say.
Streamed deltas carry ``relaygen_model`` (``large``/``small``): who wrote it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from relaygen_sgl.reasoning import ReasoningStream
from relaygen_sgl.relay import RelayError, RelayMachine, RelayResult, Role
from relaygen_sgl.relay.request_rules import direct_reason
from relaygen_sgl.serving.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatStreamChoice,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    DeltaMessage,
    new_id,
    now,
)
from relaygen_sgl.serving.service import (
    SSE_DONE,
    ChunkTemplate,
    RelayService,
    relay_fault,
    sse,
    sse_error,
    stats,
    usage,
)


def _finish(r: RelayResult) -> str:
    return r.stats.finish_reason or "stop"


def _message(r: RelayResult, separate: bool) -> AssistantMessage:
    if not separate:
        return AssistantMessage(content=r.text)
    return AssistantMessage(content=r.answer, reasoning_content=r.reasoning or None)  # the machine's split


def _scorer(mode: str) -> Role:
    return "small" if mode == "small_only" else "large"


async def chat(service: RelayService, req: ChatCompletionRequest, request: Request, raw: bytes) -> Any:
    mode = service.mode_for(req.model)
    if direct_reason(req.native_view()) is not None:
        return await service.proxy(_scorer(mode), "/v1/chat/completions", json.loads(raw))
    messages = req.plain_messages()
    machines = [
        await service.machine(
            req.native_view(i),
            mode=mode,
            messages=messages,
            chat_template_kwargs=req.chat_template_kwargs,
            top_cues=req.top_cues,
        )
        for i in range(req.n)
    ]
    rid = new_id("chatcmpl")
    if req.stream:
        return StreamingResponse(_chat_stream(service, req, machines, rid), media_type="text/event-stream")
    try:
        results = await service.run(machines, request)
    except RelayError as e:
        raise relay_fault(e) from e
    choices = [
        ChatChoice(index=i, message=_message(r, req.separate_reasoning), finish_reason=_finish(r))
        for i, r in enumerate(results)
    ]
    return ChatCompletionResponse(
        id=rid, model=req.model, choices=choices, usage=usage(results), relaygen=stats(results)
    )


async def _chat_stream(
    service: RelayService, req: ChatCompletionRequest, machines: list[RelayMachine], rid: str
) -> AsyncIterator[bytes]:
    created = now()

    def chunk(i: int, delta: DeltaMessage, finish: str | None = None, **extra: Any) -> bytes:
        choice = ChatStreamChoice(index=i, delta=delta, finish_reason=finish)
        return sse(ChatCompletionChunk(id=rid, created=created, model=req.model, choices=[choice], **extra))

    templates: dict[tuple[int, str, str | None], ChunkTemplate] = {}

    def text_chunk(i: int, field: str, text: str, role: str | None) -> bytes:
        """A token's chunk, filled into the event of its choice, field and model."""
        key = (i, field, role)
        if key not in templates:
            templates[key] = ChunkTemplate.of(
                lambda t: chunk(i, _delta(field, t, role, req.separate_reasoning))
            )
        return templates[key].fill(text)

    splitters = [ReasoningStream(thinking=m.thinking or None) for m in machines]
    results: dict[int, RelayResult] = {}
    for i in range(len(machines)):
        yield chunk(i, DeltaMessage(role="assistant", content=""))
    try:
        async for i, item in service.merged(machines):
            if isinstance(item, RelayResult):
                for field, text in splitters[i].flush():
                    yield chunk(i, _delta(field, text, None, req.separate_reasoning))
                results[i] = item
                yield chunk(i, DeltaMessage(), _finish(item), relaygen=item.stats.summary())
                continue
            pieces = splitters[i].feed(item.text) if req.separate_reasoning else [("answer", item.text)]
            for field, text in pieces:
                yield text_chunk(i, field, text, item.role)
    except Exception as e:  # noqa: BLE001 - reported on the stream, as OpenAI does
        yield sse_error(e)
    else:
        if req.include_usage:
            yield sse(
                ChatCompletionChunk(
                    id=rid,
                    created=created,
                    model=req.model,
                    choices=[],
                    usage=usage([results[i] for i in sorted(results)]),
                )
            )
    yield SSE_DONE


def _delta(field: str, text: str, role: str | None, separate: bool) -> DeltaMessage:
    if field == "reasoning" and separate:
        return DeltaMessage(reasoning_content=text, relaygen_model=role)
    return DeltaMessage(content=text, relaygen_model=role)


async def completions(service: RelayService, req: CompletionRequest, request: Request, raw: bytes) -> Any:
    mode = service.mode_for(req.model)
    if direct_reason(req.native_view()) is not None:
        return await service.proxy(_scorer(mode), "/v1/completions", json.loads(raw))
    prompts = req.prompts()
    machines = [
        await service.machine(req.native_view(j), mode=mode, prompt=p, param="prompt", top_cues=req.top_cues)
        for p in prompts
        for j in range(req.n)
    ]
    rid = new_id("cmpl")
    if req.stream:
        return StreamingResponse(
            _completion_stream(service, req, machines, rid, len(prompts)), media_type="text/event-stream"
        )
    try:
        results = await service.run(machines, request)
    except RelayError as e:
        raise relay_fault(e) from e
    choices = [
        CompletionChoice(index=i, text=_echo(req, m) + r.text, finish_reason=_finish(r))
        for i, (r, m) in enumerate(zip(results, machines, strict=True))
    ]
    return CompletionResponse(
        id=rid, model=req.model, choices=choices, usage=usage(results, len(prompts)), relaygen=stats(results)
    )


def _echo(req: CompletionRequest, m: RelayMachine) -> str:
    return m.prompt() if req.echo else ""


async def _completion_stream(
    service: RelayService, req: CompletionRequest, machines: list[RelayMachine], rid: str, n_prompts: int
) -> AsyncIterator[bytes]:
    created = now()

    def chunk(i: int, text: str, finish: str | None = None, role: str | None = None, **extra: Any) -> bytes:
        choice = CompletionChoice(index=i, text=text, finish_reason=finish, relaygen_model=role)
        return sse(CompletionResponse(id=rid, created=created, model=req.model, choices=[choice], **extra))

    templates: dict[tuple[int, str], ChunkTemplate] = {}

    def text_chunk(i: int, text: str, role: str) -> bytes:
        """A token's chunk, filled into the event of its choice and model."""
        if (i, role) not in templates:
            templates[i, role] = ChunkTemplate.of(lambda t: chunk(i, t, role=role))
        return templates[i, role].fill(text)

    results: dict[int, RelayResult] = {}
    try:
        if req.echo:
            for i, m in enumerate(machines):
                yield chunk(i, _echo(req, m))
        async for i, item in service.merged(machines):
            if isinstance(item, RelayResult):
                results[i] = item
                yield chunk(i, "", _finish(item), relaygen=item.stats.summary())
            else:
                yield text_chunk(i, item.text, item.role)
    except Exception as e:  # noqa: BLE001 - reported on the stream, as OpenAI does
        yield sse_error(e)
    else:
        if req.include_usage:
            yield sse(
                CompletionResponse(
                    id=rid,
                    created=created,
                    model=req.model,
                    choices=[],
                    usage=usage([results[i] for i in sorted(results)], n_prompts),
                )
            )
    yield SSE_DONE
