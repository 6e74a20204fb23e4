"""Thin drivers that run a :class:`RelayMachine` over HTTP: one sync, one async.

All relay logic is in the machine; a driver only performs the calls it asks for, hands
back what each returned as a :class:`TurnResult`, streams each turn when someone listens,
aborts the in-flight call when it is cancelled, and raises the machine's
:class:`RelayError` (naming the runtime) on a runtime fault.  The async driver holds no
thread per request: hundreds of relays share one event loop and pooled connections.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from relaygen_sgl.profile import CueProfile
from relaygen_sgl.relay.machine import RelayMachine, TurnResult
from relaygen_sgl.relay.pair import Handoff, PromptInput, RelayPair, adds_special_tokens, render_prompts
from relaygen_sgl.relay.types import (
    Delta,
    Mode,
    RelayConfig,
    RelayError,
    RelayResult,
    Role,
    Segment,
    runtimes_used,
)
from relaygen_sgl.runtime.client import GenerateResult, RuntimeRequestError, RuntimeUnavailable

RUNTIME_FAULTS = (RuntimeUnavailable, RuntimeRequestError)


def new_request_id() -> str:
    return f"relaygen-{uuid.uuid4().hex}"  # fixed length: no request's rids prefix another's


def _machine(texts: dict[Role, str], ids: dict[Role, list[int]] | None, tokenizers: dict[Role, Any],
             profile: CueProfile | None, config: RelayConfig,
             request_id: str | None) -> RelayMachine:  # fmt: skip
    return RelayMachine(config=config, profile=profile, prompts=texts, prompt_ids=ids, codecs=tokenizers,
                        request_id=request_id or new_request_id())  # fmt: skip


def _turn(res: GenerateResult) -> TurnResult:
    """The machine's record of a finished call."""
    return TurnResult(
        text=res.text,
        output_ids=res.output_ids,
        prompt_tokens=res.prompt_tokens,
        cached_tokens=res.cached_tokens,
        completion_tokens=res.completion_tokens,
        finish_type=res.finish_type,
        matched=res.matched,
        latency_s=res.latency_s,
        spec_accept_length=res.spec_accept_length,
    )


def prepare(pair: RelayPair, config: RelayConfig, prompt: PromptInput = None, messages: Any = None, *,
            profile: CueProfile | None = None, handoff: Handoff = "auto",
            chat_template_kwargs: dict[str, Any] | None = None,
            request_id: str | None = None) -> RelayMachine:  # fmt: skip
    """A machine for one request, its prompts rendered (sync: may load tokenizers).

    ``prompt``: one text or token-id list for both runtimes, or a :class:`RenderedPrompt` per
    runtime used; ``messages``: rendered here with each runtime's own chat template."""
    used = runtimes_used(config.mode)
    request_id = request_id or new_request_id()  # known now: it picks the replica of every call
    try:
        pair.refresh(used)  # routers' worker lists, down replicas back up
        mode = pair.handoff(used, handoff)
        toks = {r: pair.tokenizer(r) for r in used}  # behind a router: a live worker's
        texts, ids = render_prompts(prompt, messages, toks, handoff=mode,
                                    chat_template_kwargs=chat_template_kwargs)  # fmt: skip
        if mode == "ids" and ids is None:
            specials = {r: adds_special_tokens(prompt, r) for r in used}
            ids = {r: pair.client_for(r, request_id).tokenize(texts[r], add_special_tokens=specials[r])
                   for r in used}  # fmt: skip
    except RUNTIME_FAULTS as e:
        raise RelayError(f"could not prepare the relay: {e}") from e
    return _machine(texts, ids, toks, profile, config, request_id)


async def aprepare(pair: RelayPair, config: RelayConfig, prompt: PromptInput = None, messages: Any = None, *,
                   profile: CueProfile | None = None, handoff: Handoff = "auto",
                   chat_template_kwargs: dict[str, Any] | None = None,
                   request_id: str | None = None) -> RelayMachine:  # fmt: skip
    used = runtimes_used(config.mode)
    request_id = request_id or new_request_id()
    try:
        await pair.arefresh(used)
        mode = await pair.ahandoff(used, handoff)
        toks = {r: await pair.atokenizer(r) for r in used}
        texts, ids = render_prompts(prompt, messages, toks, handoff=mode,
                                    chat_template_kwargs=chat_template_kwargs)  # fmt: skip
        if mode == "ids" and ids is None:
            specials = {r: adds_special_tokens(prompt, r) for r in used}
            ids = {r: await pair.client_for(r, request_id).atokenize(texts[r], add_special_tokens=specials[r])
                   for r in used}  # fmt: skip
    except RUNTIME_FAULTS as e:
        raise RelayError(f"could not prepare the relay: {e}") from e
    return _machine(texts, ids, toks, profile, config, request_id)


# -- sync ----------------------------------------------------------------------------------
def run_sync(m: RelayMachine, pair: RelayPair,
             on_delta: Callable[[Delta], None] | None = None) -> RelayResult:  # fmt: skip
    """Drive ``m`` to the end; turns are streamed only when ``on_delta`` listens."""
    while (call := m.next_call()) is not None:
        # Every call of this request meets the same replica (its prefix cache, its abort).
        client = pair.client_for(call.role, m.request_id)
        deltas: list[Delta] = []
        try:
            if on_delta is None:
                res = client.generate_body(call.body)
            else:
                for item in client.stream(call.body):
                    if isinstance(item, GenerateResult):
                        res = item
                    else:
                        for d in m.progress(call, item.text):
                            on_delta(d)
        except RUNTIME_FAULTS as e:
            err = m.fail(call, e)
            pair.report_fault(call.role, client, e)  # an unreachable replica leaves the rotation
            raise err from e
        except BaseException:
            m.fail(call)
            client.abort(call.rid)  # Ctrl-C: the runtime must not go on for nobody
            raise
        deltas = m.complete(call, _turn(res))
        if on_delta is not None:
            for d in deltas:
                on_delta(d)
    return m.result()


# -- async ---------------------------------------------------------------------------------
async def stream_async(m: RelayMachine, pair: RelayPair, *, stream: bool = True) -> AsyncIterator[Delta]:
    """Drive ``m``, yielding final deltas as they arrive.  Cancelling the task or closing
    the generator aborts the in-flight call on its runtime."""
    while (call := m.next_call()) is not None:
        client = pair.client_for(call.role, m.request_id)  # the abort below goes to this replica too
        done = False
        try:
            if stream:
                res = None
                async for item in client.astream(call.body):
                    if isinstance(item, GenerateResult):
                        res = item
                    else:
                        for d in m.progress(call, item.text):
                            yield d
            else:
                res = await client.agenerate_body(call.body)
            done = True
        except RUNTIME_FAULTS as e:
            err = m.fail(call, e)
            pair.report_fault(call.role, client, e)
            raise err from e
        finally:
            if not done and m.in_flight is call:
                m.fail(call)
                # Shielded: the abort must reach the runtime even while we are being cancelled.
                await asyncio.shield(client.aabort(call.rid))
        for d in m.complete(call, _turn(res)):  # type: ignore[arg-type]
            yield d


async def run_async(m: RelayMachine, pair: RelayPair, on_delta: Callable[[Delta], None] | None = None,
                    *, stream: bool | None = None) -> RelayResult:  # fmt: skip
    gen = stream_async(m, pair, stream=on_delta is not None if stream is None else stream)
    try:
        async for d in gen:
            if on_delta is not None:
                on_delta(d)
    finally:
        await gen.aclose()
    return m.result()


# -- the library entry points --------------------------------------------------------------
def _config(mode: Mode, max_tokens: int, answer_model: Role, sampling: dict[str, Any] | None,
            seed: int | None, switch_rate: float | None, stop: Sequence[str] | str | None,
            profile: CueProfile | None, thinking: bool | None) -> RelayConfig:  # fmt: skip
    if mode == "relay" and profile is None:
        raise ValueError("mode='relay' needs a cue profile")
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    return RelayConfig(mode=mode, max_tokens=max_tokens, answer_model=answer_model,
                       sampling=dict(sampling or {}), stop=stops, seed=seed, switch_rate=switch_rate,
                       thinking=thinking)  # fmt: skip


def _segment_listener(on_segment: Callable[[Segment], None] | None) -> Callable[[Delta], None] | None:
    if on_segment is None:
        return None
    return lambda d: on_segment(Segment(d.model, d.kind, d.text, 0))


def relay_generate(
    prompt: str | list[int] | None = None,
    *,
    messages: Sequence[dict[str, Any]] | None = None,
    large: RelayPair | Any,
    small: Any = None,
    profile: CueProfile | None = None,
    sampling: dict[str, Any] | None = None,
    max_tokens: int = 2048,
    mode: Mode = "relay",
    answer_model: Role = "small",
    handoff: Handoff = "auto",
    on_segment: Callable[[Segment], None] | None = None,
    seed: int | None = None,
    switch_rate: float | None = None,
    stop: Sequence[str] | str | None = None,
    on_delta: Callable[[Delta], None] | None = None,
    chat_template_kwargs: dict[str, Any] | None = None,
    thinking: bool | None = None,
) -> RelayResult:
    """Generate one output with RelayGen switching between two SGLang runtimes.

    ``large``/``small``: URLs, :class:`RuntimeClient` s or SGLangRuntimes, or a
    :class:`RelayPair` as ``large`` (reuses its tokenizers and handoff decision across
    calls).  ``sampling`` (temperature, top_p, top_k, min_p, sampling_seed, ...) is used for
    both models.  ``stop`` strings end the relayed output (not included), whichever model
    writes them.  ``on_delta`` receives the output as it is generated, token by token,
    tagged with the model that wrote it.  ``mode="random_switch"`` is the control: it hands
    off after a random number of large tokens (``switch_rate`` per large token).
    """
    config = _config(mode, max_tokens, answer_model, sampling, seed, switch_rate, stop, profile, thinking)
    pair = RelayPair.of(large, small)
    m = prepare(pair, config, prompt, messages, profile=profile, handoff=handoff,
                chat_template_kwargs=chat_template_kwargs)  # fmt: skip
    return run_sync(m, pair, on_delta or _segment_listener(on_segment))


async def relay_generate_async(
    prompt: str | list[int] | None = None,
    *,
    messages: Sequence[dict[str, Any]] | None = None,
    large: RelayPair | Any,
    small: Any = None,
    profile: CueProfile | None = None,
    sampling: dict[str, Any] | None = None,
    max_tokens: int = 2048,
    mode: Mode = "relay",
    answer_model: Role = "small",
    handoff: Handoff = "auto",
    on_segment: Callable[[Segment], None] | None = None,
    seed: int | None = None,
    switch_rate: float | None = None,
    stop: Sequence[str] | str | None = None,
    on_delta: Callable[[Delta], None] | None = None,
    chat_template_kwargs: dict[str, Any] | None = None,
    thinking: bool | None = None,
) -> RelayResult:
    """The async twin of :func:`relay_generate` (same arguments, no thread)."""
    config = _config(mode, max_tokens, answer_model, sampling, seed, switch_rate, stop, profile, thinking)
    pair = RelayPair.of(large, small)
    m = await aprepare(pair, config, prompt, messages, profile=profile, handoff=handoff,
                       chat_template_kwargs=chat_template_kwargs)  # fmt: skip
    return await run_async(m, pair, on_delta or _segment_listener(on_segment))
