"""The driver that runs a :class:`RelayMachine` over HTTP (async; :mod:`.sync` is its sync face).

All relay logic is in the machine; the driver only performs the calls it asks for, hands back
what each returned as a :class:`TurnResult`, streams each turn when someone listens, aborts the
in-flight call when it is cancelled, and raises the machine's :class:`RelayError` (naming the
role) on a runtime fault.  It holds no thread per request: hundreds of relays share one event
loop and pooled connections.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

from relaygen_sgl.profile import CueProfile
from relaygen_sgl.relay.machine import RelayMachine, TurnResult
from relaygen_sgl.relay.pair import AsyncRelayPair, Handoff
from relaygen_sgl.relay.prompts import PromptInput, adds_special_tokens, render_prompts
from relaygen_sgl.relay.types import Delta, RelayConfig, RelayError, RelayResult, roles_used
from relaygen_sgl.runtime.client import GenerateResult, RuntimeRequestError, RuntimeUnavailable

if TYPE_CHECKING:
    from typing_extensions import Unpack

RUNTIME_FAULTS = (RuntimeUnavailable, RuntimeRequestError)


def new_request_id() -> str:
    return f"relaygen-{uuid.uuid4().hex}"  # fixed length: no request's rids prefix another's


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


async def prepare(
    pair: AsyncRelayPair,
    config: RelayConfig,
    prompt: PromptInput = None,
    messages: Sequence[dict[str, Any]] | None = None,
    *,
    profile: CueProfile | None = None,
    handoff: Handoff = "auto",
    chat_template_kwargs: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> RelayMachine:
    """A machine for one request, its prompts rendered.

    ``prompt``: one text or token-id list for both runtimes, or a :class:`RenderedPrompt` per
    runtime used; ``messages``: rendered here with each runtime's own chat template."""
    if config.mode == "relay" and profile is None:
        raise ValueError("mode='relay' needs a cue profile")
    used = roles_used(config.mode)
    request_id = request_id or new_request_id()  # known now: it picks the worker of every call
    try:
        await pair.refresh(used)  # routers' worker lists, down workers back up
        mode = await pair.handoff(used, handoff)
        toks = {r: await pair.tokenizer(r) for r in used}  # behind a router: a live worker's
        texts, ids = render_prompts(
            prompt, messages, toks, handoff=mode, chat_template_kwargs=chat_template_kwargs
        )
        if mode == "ids" and ids is None:
            specials = {r: adds_special_tokens(prompt, r) for r in used}
            ids = {
                r: await pair.client_for(r, request_id).tokenize(texts[r], add_special_tokens=specials[r])
                for r in used
            }
    except RUNTIME_FAULTS as e:
        raise RelayError(f"could not prepare the relay: {e}") from e
    return RelayMachine(
        config=config, profile=profile, prompts=texts, prompt_ids=ids, codecs=toks, request_id=request_id
    )


async def stream(m: RelayMachine, pair: AsyncRelayPair, *, streamed: bool = True) -> AsyncIterator[Delta]:
    """Drive ``m``, yielding final deltas as they arrive (``streamed=False``: a turn's at its end).
    Cancelling the task or closing the generator aborts the in-flight call on its runtime."""
    while (call := m.next_call()) is not None:
        # Every call of this request meets the same worker (its prefix cache, its abort).
        client = pair.client_for(call.role, m.request_id)
        done = False
        try:
            if streamed:
                res = None
                async for item in client.stream(call.body):
                    if isinstance(item, GenerateResult):
                        res = item
                    else:
                        for d in m.progress(call, item.text):
                            yield d
            else:
                res = await client.generate(call.body)
            done = True
        except RUNTIME_FAULTS as e:
            err = m.fail(call, e)
            pair.report_fault(call.role, client, e)  # an unreachable worker leaves the rotation
            raise err from e
        finally:
            if not done and m.in_flight is call:
                m.fail(call)
                # Shielded: the abort must reach the runtime even while we are being cancelled.
                await asyncio.shield(client.abort(call.rid))
        for d in m.complete(call, _turn(res)):  # type: ignore[arg-type]
            yield d


async def run(
    m: RelayMachine,
    pair: AsyncRelayPair,
    on_delta: Callable[[Delta], None] | None = None,
    *,
    streamed: bool | None = None,
) -> RelayResult:
    """Drive ``m`` to the end; turns are streamed only when ``on_delta`` listens (or ``streamed``)."""
    deltas = stream(m, pair, streamed=on_delta is not None if streamed is None else streamed)
    try:
        async for d in deltas:
            if on_delta is not None:
                on_delta(d)
    finally:
        await deltas.aclose()
    return m.result()


class PrepareOptions(TypedDict, total=False):
    """The keyword arguments of :func:`prepare`, which the entry points pass on."""

    messages: Sequence[dict[str, Any]] | None
    profile: CueProfile | None
    handoff: Handoff
    chat_template_kwargs: dict[str, Any] | None
    request_id: str | None


def check_options(entry_point: str, options: Mapping[str, Any]) -> None:
    """An entry point's keywords beyond its own are :func:`prepare`'s; anything else is a mistake,
    most likely a relay setting that belongs in the RelayConfig."""
    if unknown := sorted(set(options) - set(PrepareOptions.__annotations__)):
        raise TypeError(
            f"{entry_point}() got unexpected keyword arguments {unknown}: the relay's settings "
            "(mode, max_tokens, sampling, stop, seed, ...) go in config=RelayConfig(...)"
        )


async def relay_generate_async(
    prompt: PromptInput = None,
    *,
    large: Any,
    small: Any = None,
    config: RelayConfig | None = None,
    on_delta: Callable[[Delta], None] | None = None,
    **options: Unpack[PrepareOptions],
) -> RelayResult:
    """Generate one output with RelayGen switching between two SGLang runtimes.

    ``large``/``small``: URLs, runtime clients, SGLangRuntimes or RuntimePools, or a relay pair
    as ``large`` (it reuses its tokenizers and handoff decision across calls).  ``config``: the
    mode, budget, sampling (both models), stop strings (they end the relayed output, whichever
    model writes them), ... (see :class:`RelayConfig`).  ``prompt`` or ``messages``, ``profile``
    (needed to relay), ``handoff``, ``chat_template_kwargs``: as :func:`prepare` takes them.
    ``on_delta`` receives the output as it is generated, token by token, tagged with the role
    that wrote it.
    """
    check_options("relay_generate_async", options)
    pair = AsyncRelayPair.of(large, small)
    try:
        m = await prepare(pair, config or RelayConfig(), prompt, **options)
        return await run(m, pair, on_delta)
    finally:
        if pair is not large and pair is not getattr(large, "aio", None):
            await pair.aclose()  # made here for this call
