"""An HTTP client for one SGLang runtime's native API: :class:`AsyncRuntimeClient` over pooled
httpx connections, and :class:`RuntimeClient`, its sync face (the same calls on a private loop).

The relay needs what the OpenAI routes do not give: ``input_ids`` in and ``output_ids`` out
(token-id handoff), ``stop_regex``, ``rid`` (abort) and ``meta_info["cached_tokens"]`` (the
RadixAttention prefix hit).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
import orjson

from relaygen_sgl.private_loop import PrivateLoop

logger = logging.getLogger(__name__)


class RuntimeUnavailable(RuntimeError):
    """The runtime cannot be reached or died while serving a request."""


class RuntimeRequestError(RuntimeError):
    """The runtime rejected a request (4xx) or aborted it."""


@dataclass
class GenerateResult:
    text: str
    output_ids: list[int]
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    finish_type: str  # "stop", "length" or "abort"
    matched: str | int | None  # stop string, stop regex or stop token id
    latency_s: float
    meta_info: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def spec_accept_length(self) -> float | None:
        """Accepted tokens per verify step, when the runtime decodes speculatively."""
        v = self.meta_info.get("spec_accept_length")
        if v:
            return float(v)
        steps = self.meta_info.get("spec_verify_ct")
        return self.completion_tokens / steps if steps else None


@dataclass(frozen=True)
class StreamProgress:
    """One streamed chunk: the call's output so far (cumulative)."""

    text: str
    output_ids: list[int]


# A whole reasoning turn is one request, and a 1.5B model batched on a CPU can decode under one
# token/s per stream, so the read timeout is generous; a dead server still fails at once (reset).
DEFAULT_TIMEOUT_S = float(os.environ.get("RELAYGEN_REQUEST_TIMEOUT_S", 3 * 3600))
CONNECT_TIMEOUT_S = 10.0
# Enough for hundreds of concurrent relays on one runtime; httpx queues beyond it.  Idle
# connections are dropped before the server's keep-alive timeout (uvicorn's 5 s), so a
# request never races the server closing the connection it reuses.
POOL_LIMITS = httpx.Limits(max_connections=1024, max_keepalive_connections=256, keepalive_expiry=2.0)


def _result(out: dict[str, Any], name: str, latency: float) -> GenerateResult:
    meta = out.get("meta_info", {})
    finish = meta.get("finish_reason") or {}
    if finish.get("type") == "abort":
        raise RuntimeRequestError(f"runtime {name!r} aborted the request: {finish.get('message', finish)}")
    return GenerateResult(
        text=out.get("text") or "",
        output_ids=list(out.get("output_ids") or []),
        prompt_tokens=int(meta.get("prompt_tokens", 0)),
        completion_tokens=int(meta.get("completion_tokens", 0)),
        cached_tokens=int(meta.get("cached_tokens", 0)),
        finish_type=str(finish.get("type", "")),
        matched=finish.get("matched"),
        latency_s=latency,
        meta_info=meta,
    )


def generate_body(
    *,
    text: str | None = None,
    input_ids: list[int] | None = None,
    sampling_params: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A ``/generate`` body: one prompt (text or token ids), its sampling params, other fields."""
    if (text is None) == (input_ids is None):
        raise ValueError("pass exactly one of text= or input_ids=")
    body: dict[str, Any] = {"sampling_params": dict(sampling_params or {}), **extra}
    body["text" if text is not None else "input_ids"] = text if text is not None else input_ids
    return body


class StreamState:
    """Folds the bytes of SGLang's streamed ``/generate`` into the call's output so far.

    SGLang sends the whole output in each event by default, only the new part when started
    with ``--incremental-streaming-output`` (what relaygen starts its runtimes with);
    ``completion_tokens`` (always cumulative) tells which.  An incremental event costs the same
    at any length.  A cumulative one is parsed whole, so of several read at once only the last
    is parsed: it holds the others."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.text = ""
        self.ids: list[int] = []
        self.meta: dict[str, Any] = {}
        self._buf = b""

    def feed(self, data: bytes) -> StreamProgress | None:
        """Bytes read from the stream; the output so far when they completed an event."""
        buf = self._buf + data if self._buf else data
        if b"\r" in buf:  # "\r\n" line ends (a proxy's), kept whole across reads
            buf = buf.replace(b"\r\n", b"\n")
        end = buf.find(b"\n")
        if end < 0:
            self._buf = buf
            return None
        # The usual read: one whole event of one data line.
        if end + 2 == len(buf) and buf.endswith(b"\n\n") and buf.startswith(b"data: {"):
            self._buf = b""
            self._fold(orjson.loads(buf[6:end]))
            return StreamProgress(self.text, self.ids)
        *events, self._buf = buf.split(b"\n\n")
        outs = []
        for event in reversed(events):
            if (out := _event(event)) is not None:
                outs.append(out)
                if "error" in out or _whole(out):
                    break  # what came before it does not matter
        for out in reversed(outs):
            self._fold(out)
        return StreamProgress(self.text, self.ids) if outs else None

    def _fold(self, out: dict[str, Any]) -> None:
        if "error" in out:
            raise RuntimeRequestError(f"runtime {self.name!r} failed the request: {out['error']}")
        ids, text = out.get("output_ids") or [], out.get("text") or ""
        if _whole(out):
            self.ids, self.text = ids, text
        else:
            self.ids += ids
            self.text += text
        self.meta = out.get("meta_info") or {}

    def result(self, latency: float) -> GenerateResult:
        if not self.meta:
            raise RuntimeUnavailable(f"runtime {self.name!r} closed the stream without output")
        return _result(
            {"text": self.text, "output_ids": self.ids, "meta_info": self.meta}, self.name, latency
        )


def _event(event: bytes) -> dict[str, Any] | None:
    """One server-sent event's JSON data (None for ``[DONE]`` and data-less events)."""
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            data = line[5:].strip()
            return None if data == b"[DONE]" else orjson.loads(data)
    return None


def _whole(out: dict[str, Any]) -> bool:
    """A cumulative event: it lists every output id so far."""
    ids = out.get("output_ids") or []
    return len(ids) >= int((out.get("meta_info") or {}).get("completion_tokens", len(ids)))


class AsyncRuntimeClient:
    """Calls one SGLang server.  Usable from any event loop (each gets its own pooled
    connections) and any thread.

    The model behind the URL is read from ``/get_model_info`` and re-read after the runtime
    has been unreachable, so a runtime restarted on the same port with another model never
    leaves a stale tokenizer behind (``model_generation`` counts such changes).
    """

    def __init__(
        self,
        url: str,
        name: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.name = name or self.url
        self.timeout = httpx.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s))
        self.headers = dict(headers or {})
        self._http: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
        self._streams: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}
        self._lock = threading.Lock()
        self._model_info: dict[str, Any] | None = None
        self._tokenizer: Any = None
        self._stale = False
        self.model_generation = 0

    @classmethod
    def of(
        cls, runtime: AsyncRuntimeClient | RuntimeClient | str | Any, name: str | None = None
    ) -> AsyncRuntimeClient:
        """Accept a client, a URL, or anything with a ``url`` (an SGLangRuntime, a RuntimePool)."""
        if isinstance(runtime, AsyncRuntimeClient):
            return runtime
        if isinstance(runtime, RuntimeClient):
            return runtime.aio
        url = runtime if isinstance(runtime, str) else getattr(runtime, "url", None)
        if isinstance(url, str):
            return cls(url, name=name or getattr(runtime, "name", None))
        raise TypeError(f"expected a RuntimeClient, URL or SGLangRuntime, got {runtime!r}")

    # -- transport -------------------------------------------------------------------------
    @property
    def http(self) -> httpx.AsyncClient:
        """The running loop's pooled connections (an httpx client belongs to one loop)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            for old in [lp for lp in self._http if lp.is_closed()]:
                del self._http[old]
            if loop not in self._http:
                self._http[loop] = httpx.AsyncClient(
                    timeout=self.timeout, limits=POOL_LIMITS, headers=self.headers
                )
            return self._http[loop]

    @property
    def streams(self) -> aiohttp.ClientSession:
        """The running loop's pooled connections for streamed calls: aiohttp, whose C parser
        reads an event for a fraction of what httpx's layers (httpcore, anyio, line decoding)
        cost, and a relay reads one event per token."""
        loop = asyncio.get_running_loop()
        with self._lock:
            for old in [lp for lp in self._streams if lp.is_closed()]:
                _forget(self._streams.pop(old))
            if loop not in self._streams:
                connector = aiohttp.TCPConnector(
                    limit=POOL_LIMITS.max_connections or 0, keepalive_timeout=POOL_LIMITS.keepalive_expiry
                )
                timeout = aiohttp.ClientTimeout(
                    sock_connect=self.timeout.connect, sock_read=self.timeout.read
                )
                self._streams[loop] = aiohttp.ClientSession(
                    connector=connector, timeout=timeout, headers=self.headers
                )
            return self._streams[loop]

    def _unavailable(self, e: Exception) -> RuntimeUnavailable:
        self._stale = True  # it may come back with another model
        why = f"{type(e).__name__}: {e}"
        return RuntimeUnavailable(f"runtime {self.name!r} at {self.url} is not answering ({why})")

    def _check(self, status: int, body: str) -> None:
        if status >= 500:
            self._stale = True
            raise RuntimeUnavailable(
                f"runtime {self.name!r} at {self.url} failed with HTTP {status}: {body[:500]}"
            )
        if status >= 400:
            raise RuntimeRequestError(
                f"runtime {self.name!r} rejected the request with HTTP {status}: {body[:500]}"
            )

    async def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """``method path`` on the runtime; a fault is RuntimeUnavailable, a 4xx RuntimeRequestError.

        A GET whose connection the server dropped before answering is sent once more, on a new
        connection: a pooled connection can close under a request (a busy server, a keep-alive
        race), and a GET is safe to repeat."""
        attempts = 2 if method == "GET" else 1
        for attempt in range(attempts):
            try:
                resp = await self.http.request(method, f"{self.url}{path}", **kw)
                break
            except (httpx.ReadError, httpx.RemoteProtocolError) as e:
                if attempt + 1 == attempts:
                    raise self._unavailable(e) from e
            except httpx.HTTPError as e:
                raise self._unavailable(e) from e
        self._check(resp.status_code, resp.text)
        return resp

    # -- model info and tokenizer ----------------------------------------------------------
    async def health(self, timeout_s: float = 5.0) -> bool:
        try:
            return (await self.request("GET", "/health", timeout=timeout_s)).status_code == 200
        except (RuntimeUnavailable, RuntimeRequestError):
            return False

    async def model_info(self) -> dict[str, Any]:
        if self._model_info is None or self._stale:
            info = (await self.request("GET", "/get_model_info", timeout=30)).json()
            with self._lock:
                old = self._model_info
                if old is not None and old.get("model_path") != info.get("model_path"):
                    self._tokenizer = None
                    self.model_generation += 1
                self._model_info, self._stale = info, False
            return info
        return self._model_info

    async def tokenizer(self) -> Any:  # transformers.PreTrainedTokenizerBase
        info = await self.model_info()
        tok = self._tokenizer
        # Loading reads files for a second or so: off the event loop.
        return tok if tok is not None else await asyncio.to_thread(self._load_tokenizer, info)

    def _load_tokenizer(self, info: dict[str, Any]) -> Any:
        with self._lock:
            if self._tokenizer is None:
                # Not `from transformers import AutoTokenizer`: transformers' lazy top-level module
                # fails that import when two threads make it at once (two models' first loads).
                from transformers.models.auto.tokenization_auto import AutoTokenizer

                path = info.get("tokenizer_path") or info["model_path"]
                self._tokenizer = AutoTokenizer.from_pretrained(path)
            return self._tokenizer

    async def server_info(self) -> dict[str, Any]:
        """``/server_info`` (``/get_server_info`` on older SGLang): the runtime's limits."""
        try:
            return (await self.request("GET", "/server_info", timeout=60)).json()
        except RuntimeRequestError:
            return (await self.request("GET", "/get_server_info", timeout=60)).json()

    async def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """The ids the runtime itself makes of ``text`` (its tokenizer, its settings); where it
        has no ``/tokenize`` (sglang-router does not route it), the local tokenizer's."""
        body = {"prompt": text, "add_special_tokens": add_special_tokens}
        try:
            return list((await self.request("POST", "/tokenize", json=body, timeout=60)).json()["tokens"])
        except RuntimeRequestError:
            tok = await self.tokenizer()
            return list(tok.encode(text, add_special_tokens=add_special_tokens))

    # -- generation ------------------------------------------------------------------------
    async def generate(self, body: dict[str, Any]) -> GenerateResult:
        """``/generate`` with ``body`` (see :func:`generate_body`), not streamed."""
        t0 = time.perf_counter()
        out = (await self.request("POST", "/generate", json=body)).json()
        return _result(out, self.name, time.perf_counter() - t0)

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[StreamProgress | GenerateResult]:
        """Streamed ``/generate``: progress chunks, then the GenerateResult."""
        t0, state = time.perf_counter(), StreamState(self.name)
        data = orjson.dumps({**body, "stream": True})
        headers = {"Content-Type": "application/json"}
        try:
            async with self.streams.post(f"{self.url}/generate", data=data, headers=headers) as resp:
                if resp.status >= 400:
                    self._check(resp.status, (await resp.read()).decode(errors="replace"))
                content = resp.content
                # Whatever has arrived, in one read: events that came together are folded together.
                while chunk := await content.readany():
                    if (p := state.feed(chunk)) is not None:
                        yield p
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise self._unavailable(e) from e
        yield state.result(time.perf_counter() - t0)

    async def abort(self, rid: str) -> None:
        try:
            await self.request("POST", "/abort_request", json={"rid": rid}, timeout=10)
        except (RuntimeUnavailable, RuntimeRequestError):
            pass  # a dead runtime runs nothing

    async def flush_cache(self) -> None:
        await self.request("POST", "/flush_cache", timeout=30)

    async def running_requests(self) -> int:
        """How many requests the runtime is decoding or queueing now (``/v1/loads``)."""
        resp = await self.request("GET", "/v1/loads", params={"include": "core"}, timeout=10)
        loads = resp.json()["loads"]
        return sum(int(x.get("num_running_reqs", 0)) + int(x.get("num_waiting_reqs", 0)) for x in loads)

    async def aclose(self) -> None:
        """Close the running loop's connections (other loops' go with their loop)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            http, streams = self._http.pop(loop, None), self._streams.pop(loop, None)
        if http is not None:
            await http.aclose()
        if streams is not None:
            await streams.close()

    def __del__(self) -> None:
        # Sessions of loops that have closed (an asyncio.run() that used this client) hold
        # nothing left to close; drop them quietly instead of aiohttp's unclosed-session warning.
        for loop, session in list(getattr(self, "_streams", {}).items()):
            if loop.is_closed():
                _forget(session)

    def __repr__(self) -> str:
        return f"AsyncRuntimeClient({self.name!r}, {self.url})"


def _forget(session: aiohttp.ClientSession) -> None:
    """Drop a session whose loop has closed (its connections went with the loop) without the
    warning aiohttp gives an unclosed session: there is nothing left to await."""
    connector = session.connector
    session.detach()
    if connector is not None:
        connector._close()  # marks it closed; its loop is gone, so it touches no transport


class RuntimeClient:
    """The sync face of an :class:`AsyncRuntimeClient` (``aio``): each call runs on a private
    event loop, its own or one it is given (a :class:`~relaygen_sgl.relay.sync.RelayPair`'s).
    Thread-safe."""

    def __init__(
        self,
        url: str | AsyncRuntimeClient,
        name: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        headers: dict[str, str] | None = None,
        *,
        loop: PrivateLoop | None = None,
    ) -> None:
        if not isinstance(url, AsyncRuntimeClient):
            url = AsyncRuntimeClient(url, name, timeout_s, headers)
        self.aio = url
        self.loop = loop or PrivateLoop(f"runtime-{self.aio.name}")
        self._owns_loop = loop is None

    @classmethod
    def of(
        cls, runtime: RuntimeClient | AsyncRuntimeClient | str | Any, name: str | None = None
    ) -> RuntimeClient:
        """Accept a client, a URL, or anything with a ``url`` (an SGLangRuntime, a RuntimePool)."""
        return runtime if isinstance(runtime, RuntimeClient) else cls(AsyncRuntimeClient.of(runtime, name))

    @property
    def url(self) -> str:
        return self.aio.url

    @property
    def name(self) -> str:
        return self.aio.name

    @property
    def model_generation(self) -> int:
        return self.aio.model_generation

    @property
    def model_info(self) -> dict[str, Any]:
        return self.loop.run(self.aio.model_info())

    @property
    def tokenizer(self) -> Any:
        return self.loop.run(self.aio.tokenizer())

    def health(self, timeout_s: float = 5.0) -> bool:
        return self.loop.run(self.aio.health(timeout_s))

    def server_info(self) -> dict[str, Any]:
        return self.loop.run(self.aio.server_info())

    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.loop.run(self.aio.tokenize(text, add_special_tokens))

    def generate(
        self,
        *,
        text: str | None = None,
        input_ids: list[int] | None = None,
        sampling_params: dict[str, Any] | None = None,
        **extra: Any,
    ) -> GenerateResult:
        body = generate_body(text=text, input_ids=input_ids, sampling_params=sampling_params, **extra)
        return self.loop.run(self.aio.generate(body))

    def stream(self, body: dict[str, Any]) -> Iterator[StreamProgress | GenerateResult]:
        return self.loop.iterate(self.aio.stream(body))

    def abort(self, rid: str) -> None:
        self.loop.run(self.aio.abort(rid))

    def flush_cache(self) -> None:
        self.loop.run(self.aio.flush_cache())

    def running_requests(self) -> int:
        return self.loop.run(self.aio.running_requests())

    def close(self) -> None:
        """Close the connections and stop the loop, if the loop is this client's own."""
        if self._owns_loop:
            self.loop.run(self.aio.aclose())
            self.loop.close()

    def __repr__(self) -> str:
        return f"RuntimeClient({self.name!r}, {self.url})"
