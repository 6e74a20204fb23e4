"""The relay server's serving logic shared by every route: the pair it owns, turning a
request into relay machines, running them (aborting on disconnect), and the usage and
stats a response reports.  Routes stay thin (see :mod:`relaygen_sgl.serving.app`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from contextlib import AbstractContextManager, suppress
from dataclasses import asdict, dataclass
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

import httpx
import orjson
from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from relaygen_sgl.profile import CueProfile, ProfileError
from relaygen_sgl.relay import (
    AsyncRelayPair,
    Delta,
    Mode,
    RelayConfig,
    RelayError,
    RelayMachine,
    RelayResult,
    Role,
    prepare,
    roles_used,
    stream,
)
from relaygen_sgl.relay.request_rules import relay_config
from relaygen_sgl.runtime.client import RuntimeRequestError
from relaygen_sgl.serving.errors import APIError, ClientGone, unavailable
from relaygen_sgl.serving.metrics import RelayTrack, ServerMetrics
from relaygen_sgl.serving.protocol import MODEL_MODES, CompletionTokensDetails, PromptTokensDetails, Usage

logger = logging.getLogger(__name__)
T = TypeVar("T")
DISCONNECT_POLL_S = 0.5
RELAY_ONLY_FIELDS = ("top_cues",)  # request fields the relay reads and a runtime does not know
WARM_UP_MESSAGES = [{"role": "user", "content": "Ready?"}]


@dataclass
class ServerConfig:
    large_url: str
    small_url: str
    profile: CueProfile
    answer_model: Role = "small"
    default_max_tokens: int = 1024
    max_input_tokens: int = 8192

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (how ``relaygen serve --workers N`` hands it to its worker processes)."""
        return {**asdict(self), "profile": self.profile.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServerConfig:
        return cls(**{**data, "profile": CueProfile.from_dict(data["profile"])})


class RelayService:
    def __init__(self, config: ServerConfig, metrics: ServerMetrics | None = None) -> None:
        self.config = config
        self.pair = AsyncRelayPair(config.large_url, config.small_url)
        self.metrics = metrics or ServerMetrics()
        self.ready = False  # see warm_up
        self.model_info: dict[str, Any] = {}  # the large model's, read at start-up
        # Each prepared relay's arrival time, until it runs.
        self._arrivals: WeakKeyDictionary[RelayMachine, float] = WeakKeyDictionary()

    async def warm_up(self) -> None:
        """Load everything the first request would otherwise wait for (each model's workers,
        model info and tokenizer, the handoff decision, a chat template rendered): a relay
        prepared once.  ``ready`` from then on."""
        config = RelayConfig(max_tokens=1)
        await prepare(self.pair, config, messages=WARM_UP_MESSAGES, profile=self.config.profile)
        self.model_info = await self.pair.workers["large"].info_client().model_info()
        self.ready = True
        self.metrics.ready.set(1)

    def mode_for(self, model: str) -> Mode:
        if model not in MODEL_MODES:
            raise APIError(
                404,
                f"The model '{model}' does not exist (available: {', '.join(MODEL_MODES)})",
                param="model",
                code="model_not_found",
            )
        return MODEL_MODES[model]

    async def machine(self, view: Mapping[str, Any], *, mode: Mode, **kw: Any) -> RelayMachine:
        """The relay of one request (``view``: its native ``/generate`` shape, which
        :func:`~relaygen_sgl.relay.request_rules.direct_reason` let through), ready to run; its
        templated input is checked against the length limit.  ``kw``: see :meth:`_prepare`."""
        started = time.perf_counter()
        try:
            m = await self._prepare(view, mode=mode, **kw)
        except APIError as e:
            self.metrics.refused(mode, e)
            raise
        self._arrivals[m] = started
        return m

    def _track(self, m: RelayMachine) -> AbstractContextManager[RelayTrack]:
        started = self._arrivals.pop(m, time.perf_counter())
        return self.metrics.track(m, started, input_tokens(m))

    async def _prepare(
        self,
        view: Mapping[str, Any],
        *,
        mode: Mode,
        prompt: str | list[int] | None = None,
        messages: list[dict[str, str]] | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
        param: str = "messages",
        top_cues: int | None = None,
    ) -> RelayMachine:
        profile = self.config.profile
        if top_cues is not None:
            try:
                profile = profile.top_cues(top_cues)
            except ProfileError as e:
                raise APIError(400, str(e), param="top_cues") from e
        try:
            config = relay_config(
                view,
                mode=mode,
                answer_model=self.config.answer_model,
                default_max_tokens=self.config.default_max_tokens,
            )
        except ValueError as e:
            raise APIError(400, str(e)) from e
        try:
            m = await prepare(
                self.pair,
                config,
                prompt,
                messages,
                profile=profile,
                chat_template_kwargs=chat_template_kwargs,
            )
        except RelayError as e:
            raise unavailable(f"runtime unavailable: {e}") from e
        except (ValueError, TypeError) as e:  # the prompt cannot be rendered (template kwargs, id prompt)
            raise APIError(400, f"Invalid '{param}': {e}", param=param) from e
        if (n := input_tokens(m)) > self.config.max_input_tokens:
            limit = self.config.max_input_tokens
            raise APIError(
                400,
                f"The input is {n} tokens; this server accepts at most {limit}.",
                param=param,
                code="context_length_exceeded",
            )
        return m

    async def run(self, machines: list[RelayMachine], request: Request) -> list[RelayResult]:
        """Run relays to the end together; a client disconnect cancels them (aborting their
        in-flight runtime calls)."""

        async def one(m: RelayMachine) -> RelayResult:
            with self._track(m) as track:
                async for _ in stream(m, self.pair, streamed=False):
                    pass
                return track.done(m.result())

        return await until_disconnect(asyncio.gather(*(one(m) for m in machines)), request)

    async def merged(self, machines: list[RelayMachine]) -> AsyncIterator[tuple[int, Delta | RelayResult]]:
        """Every relay's deltas as they come, tagged with its index, then its result.  Closing
        this iterator (a client disconnect) cancels all of them."""
        if len(machines) == 1:  # one relay: read it directly, no task and queue hop per token
            m = machines[0]
            with self._track(m) as track:
                deltas = stream(m, self.pair)
                try:
                    async for d in deltas:
                        track.token()
                        yield 0, d
                        break
                    async for d in deltas:  # the rest: nothing to time per token
                        yield 0, d
                finally:
                    await deltas.aclose()  # aborts the call in flight when the stream ends early
                result = track.done(m.result())
            yield 0, result
            return
        queue: asyncio.Queue[tuple[int, Delta | RelayResult | BaseException | None]] = asyncio.Queue()

        async def pump(i: int, m: RelayMachine) -> None:
            try:
                with self._track(m) as track:
                    async for d in stream(m, self.pair):
                        track.token()
                        queue.put_nowait((i, d))
                    queue.put_nowait((i, track.done(m.result())))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - handed to the consumer, which reports it
                queue.put_nowait((i, e))
            finally:
                queue.put_nowait((i, None))

        tasks = [asyncio.create_task(pump(i, m)) for i, m in enumerate(machines)]
        try:
            running = len(tasks)
            while running:
                i, item = await queue.get()
                if item is None:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield i, item
        finally:
            for t in tasks:
                t.cancel()
            # Wait for the aborts (shielded inside the drivers) to go out.
            await asyncio.gather(*tasks, return_exceptions=True)

    async def proxy(self, role: Role, path: str, body: dict[str, Any]) -> Response:
        """Forward a request the relay does not split to one runtime, as it came (its status,
        its body, its stream)."""
        client = self.pair.clients[role]
        http, url = client.http, f"{client.url}{path}"
        body = {k: v for k, v in body.items() if k not in RELAY_ONLY_FIELDS}  # a runtime would refuse them
        try:
            if body.get("stream"):
                resp = await http.send(http.build_request("POST", url, json=body), stream=True)

                async def chunks() -> AsyncIterator[bytes]:
                    try:
                        async for chunk in resp.aiter_raw():
                            yield chunk
                    finally:
                        await resp.aclose()

                if resp.status_code >= 500:
                    logger.warning("the %s runtime answered %d to %s", role, resp.status_code, path)
                self.metrics.direct(resp.status_code)
                return StreamingResponse(
                    chunks(), status_code=resp.status_code, media_type="text/event-stream"
                )
            resp = await http.post(url, json=body)
        except httpx.HTTPError as e:
            self.metrics.direct(None)
            raise unavailable(f"{role} runtime unavailable: {e}") from e
        self.metrics.direct(resp.status_code)
        if resp.status_code >= 500:
            logger.warning(
                "the %s runtime answered %d to %s: %s", role, resp.status_code, path, resp.text[:500]
            )
        return Response(
            resp.content,
            status_code=resp.status_code,
            media_type=resp.headers.get("content-type", "application/json"),
        )

    async def health(self) -> dict[str, dict[str, Any]]:
        """Each model's runtime or pool: ``ok``, and per worker whether it answers (a router's own
        ``/health`` is 200 even with no worker behind it, so the workers are asked themselves)."""
        large, small = await asyncio.gather(self.pair.health("large"), self.pair.health("small"))
        return {"large": large, "small": small}


async def until_disconnect(work: Awaitable[T], request: Request) -> T:
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
                raise ClientGone()
    finally:
        if not task.done():
            task.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await task


def relay_fault(e: RelayError) -> APIError:
    """A runtime that rejected the request is the client's 400; one that failed is a 503 (logged
    where it is answered)."""
    if isinstance(e.__cause__, RuntimeRequestError):
        logger.info("the %s runtime rejected a relayed request: %s", e.role, e)
        return APIError(400, str(e), param=None, code="runtime_rejected")
    return unavailable(str(e))


def input_tokens(m: RelayMachine) -> int:
    """A relay's input length: its longest prompt over the models it may call."""
    return max(m.prompt_token_count(role) for role in roles_used(m.config.mode))


def usage(results: Sequence[RelayResult], prompts: int = 1) -> Usage:
    """Usage over a response's choices: each distinct prompt counted once."""
    per_prompt = len(results) // max(prompts, 1) or 1
    prompt_tokens = sum(r.stats.prompt_tokens for r in results[::per_prompt])
    completion = sum(r.stats.output_tokens for r in results)
    cached = sum(r.stats.calls[0].cached_tokens for r in results[::per_prompt] if r.stats.calls)
    reasoning = sum(r.reasoning_tokens for r in results)
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion,
        total_tokens=prompt_tokens + completion,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached),
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=reasoning),
    )


def stats(results: Sequence[RelayResult]) -> dict[str, Any] | list[dict[str, Any]]:
    out = [r.stats.summary() for r in results]
    return out[0] if len(out) == 1 else out


def sse(obj: Any) -> bytes:
    """One server-sent event of a pydantic model (its fields that are not None) or plain data."""
    if hasattr(obj, "model_dump_json"):
        return b"data: " + obj.model_dump_json(exclude_none=True).encode() + b"\n\n"
    return b"data: " + orjson.dumps(obj) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"
_SLOT = "\x00relaygen-slot\x00"


class ChunkTemplate:
    """The event of a chunk whose one text field varies (a token's text): serialised once,
    then filled per token, at a fraction of what building and dumping the model costs."""

    def __init__(self, event: bytes) -> None:
        """``event``: the chunk serialised with :data:`_SLOT` as the text (see :meth:`of`)."""
        self.head, sep, self.tail = event.partition(orjson.dumps(_SLOT))
        if not sep:
            raise ValueError("the event holds no text slot")

    @classmethod
    def of(cls, build: Any) -> ChunkTemplate:
        """``build(text)`` makes the chunk (an event, a model or data) that carries ``text``."""
        chunk = build(_SLOT)
        return cls(chunk if isinstance(chunk, bytes) else sse(chunk))

    def fill(self, text: str) -> bytes:
        return self.head + orjson.dumps(text) + self.tail

    def fill_escaped(self, escaped: bytes | bytearray) -> bytes:
        """:meth:`fill` with a text already escaped (:func:`json_escaped`): a text that grows
        need not be escaped again whole per chunk."""
        return b"".join((self.head, b'"', escaped, b'"', self.tail))


def json_escaped(text: str) -> bytes:
    """``text`` as the inside of a JSON string.  Escaping goes character by character, so the
    escapes of two texts joined are the escape of the two joined."""
    return orjson.dumps(text)[1:-1]


def sse_error(e: Exception) -> bytes:
    """An error that ended a stream, as its last event (and in the log, when it is a 5xx)."""
    if isinstance(e, RelayError):
        e = relay_fault(e)
    if not isinstance(e, APIError):
        logger.error("a stream failed", exc_info=e)
        e = APIError(500, f"{type(e).__name__}: {e}", "internal_error")
    e.log("a stream")
    return sse(e.body())
