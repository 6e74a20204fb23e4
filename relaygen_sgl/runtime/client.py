"""An HTTP client for one SGLang runtime's native API, sync and async over pooled httpx clients.

The relay needs what the OpenAI routes do not give: ``input_ids`` in and ``output_ids`` out
(token-id handoff), ``stop_regex``, ``rid`` (abort) and ``meta_info["cached_tokens"]`` (the
RadixAttention prefix hit).  Both flavours share the request building and the parsing here;
only the transport differs.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson


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


def _body(text: str | None, input_ids: list[int] | None, sampling_params: dict[str, Any] | None,
          extra: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    if (text is None) == (input_ids is None):
        raise ValueError("pass exactly one of text= or input_ids=")
    body: dict[str, Any] = {"sampling_params": dict(sampling_params or {}), **extra}
    body["text" if text is not None else "input_ids"] = text if text is not None else input_ids
    return body


class _StreamState:
    """Folds SGLang's streamed chunks into the call's output so far.  SGLang sends the whole
    output in each chunk by default, only the new part with --incremental-streaming-output;
    ``completion_tokens`` (always cumulative) tells which."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.text = ""
        self.ids: list[int] = []
        self.last: dict[str, Any] = {}

    def feed(self, line: str) -> StreamProgress | None:
        if not line.startswith("data:"):
            return None
        data = line[5:].strip()
        if data == "[DONE]":
            return None
        out = orjson.loads(data)  # SGLang sends the whole output in every chunk: parse it fast
        if "error" in out:
            raise RuntimeRequestError(f"runtime {self.name!r} failed the request: {out['error']}")
        ids = list(out.get("output_ids") or [])
        n = int(out.get("meta_info", {}).get("completion_tokens", len(ids)))
        if len(ids) >= n:
            self.ids, self.text = ids, out.get("text") or ""
        else:
            self.ids += ids
            self.text += out.get("text") or ""
        self.last = {**out, "text": self.text, "output_ids": self.ids}
        return StreamProgress(self.text, self.ids)

    def result(self, latency: float) -> GenerateResult:
        if not self.last:
            raise RuntimeUnavailable(f"runtime {self.name!r} closed the stream without output")
        return _result(self.last, self.name, latency)


class RuntimeClient:
    """Calls one SGLang server.  Thread-safe (one pooled httpx client per flavour).

    The model behind the URL is read from ``/get_model_info`` and re-read after the runtime
    has been unreachable, so a runtime restarted on the same port with another model never
    leaves a stale tokenizer behind (``model_generation`` counts such changes).
    """

    def __init__(self, url: str, name: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 headers: dict[str, str] | None = None) -> None:  # fmt: skip
        self.url = url.rstrip("/")
        self.name = name or self.url
        self.timeout = httpx.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s))
        self.headers = dict(headers or {})
        self._sync: httpx.Client | None = None
        self._async: httpx.AsyncClient | None = None
        self._async_loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._model_info: dict[str, Any] | None = None
        self._tokenizer: Any = None
        self._stale = False
        self.model_generation = 0

    @classmethod
    def of(cls, runtime: RuntimeClient | str | Any, name: str | None = None) -> RuntimeClient:
        """Accept a client, a URL, or anything with a ``url`` (an SGLangRuntime)."""
        if isinstance(runtime, RuntimeClient):
            return runtime
        url = runtime if isinstance(runtime, str) else getattr(runtime, "url", None)
        if isinstance(url, str):
            return cls(url, name=name or getattr(runtime, "name", None))
        raise TypeError(f"expected a RuntimeClient, URL or SGLangRuntime, got {runtime!r}")

    # -- transports ------------------------------------------------------------------------
    @property
    def sync_client(self) -> httpx.Client:
        with self._lock:
            if self._sync is None:
                self._sync = httpx.Client(timeout=self.timeout, limits=POOL_LIMITS, headers=self.headers)
            return self._sync

    @property
    def async_client(self) -> httpx.AsyncClient:
        # An AsyncClient belongs to the loop it was made in; a new loop (asyncio.run) gets its own.
        loop = asyncio.get_running_loop()
        if self._async is None or self._async_loop is not loop:
            self._async = httpx.AsyncClient(timeout=self.timeout, limits=POOL_LIMITS, headers=self.headers)
            self._async_loop = loop
        return self._async

    def _unavailable(self, e: Exception) -> RuntimeUnavailable:
        self._stale = True  # it may come back with another model
        why = f"{type(e).__name__}: {e}"
        return RuntimeUnavailable(f"runtime {self.name!r} at {self.url} is not answering ({why})")

    def _check(self, resp: httpx.Response, body: str) -> None:
        if resp.status_code >= 500:
            self._stale = True
            raise RuntimeUnavailable(
                f"runtime {self.name!r} at {self.url} failed with HTTP {resp.status_code}: {body[:500]}"
            )
        if resp.status_code >= 400:
            raise RuntimeRequestError(
                f"runtime {self.name!r} rejected the request with HTTP {resp.status_code}: {body[:500]}"
            )

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            resp = self.sync_client.request(method, f"{self.url}{path}", **kw)
        except httpx.HTTPError as e:
            raise self._unavailable(e) from e
        self._check(resp, resp.text)
        return resp

    async def _arequest(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            resp = await self.async_client.request(method, f"{self.url}{path}", **kw)
        except httpx.HTTPError as e:
            raise self._unavailable(e) from e
        self._check(resp, resp.text)
        return resp

    # -- model info and tokenizer ----------------------------------------------------------
    def health(self, timeout_s: float = 5.0) -> bool:
        try:
            return self._request("GET", "/health", timeout=timeout_s).status_code == 200
        except (RuntimeUnavailable, RuntimeRequestError):
            return False

    async def ahealth(self, timeout_s: float = 5.0) -> bool:
        try:
            return (await self._arequest("GET", "/health", timeout=timeout_s)).status_code == 200
        except (RuntimeUnavailable, RuntimeRequestError):
            return False

    def _set_model_info(self, info: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            old = self._model_info
            if old is not None and old.get("model_path") != info.get("model_path"):
                self._tokenizer = None
                self.model_generation += 1
            self._model_info, self._stale = info, False
            return info

    @property
    def model_info(self) -> dict[str, Any]:
        if self._model_info is None or self._stale:
            return self._set_model_info(self._request("GET", "/get_model_info", timeout=30).json())
        return self._model_info

    async def amodel_info(self) -> dict[str, Any]:
        if self._model_info is None or self._stale:
            resp = await self._arequest("GET", "/get_model_info", timeout=30)
            return self._set_model_info(resp.json())
        return self._model_info

    @property
    def tokenizer(self) -> Any:  # transformers.PreTrainedTokenizerBase
        info = self.model_info
        with self._lock:
            if self._tokenizer is None:
                from transformers import AutoTokenizer

                path = info.get("tokenizer_path") or info["model_path"]
                self._tokenizer = AutoTokenizer.from_pretrained(path)
            return self._tokenizer

    async def atokenizer(self) -> Any:
        await self.amodel_info()
        if self._tokenizer is None:
            # Loading reads files for a second or so: off the event loop.
            return await asyncio.to_thread(lambda: self.tokenizer)
        return self._tokenizer

    def server_info(self) -> dict[str, Any]:
        """``/server_info`` (``/get_server_info`` on older SGLang): the runtime's limits."""
        try:
            return self._request("GET", "/server_info", timeout=60).json()
        except RuntimeRequestError:
            return self._request("GET", "/get_server_info", timeout=60).json()

    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """The ids the runtime itself makes of ``text`` (its tokenizer, its settings); where it
        has no ``/tokenize`` (sglang-router does not route it), the local tokenizer's."""
        body = {"prompt": text, "add_special_tokens": add_special_tokens}
        try:
            return list(self._request("POST", "/tokenize", json=body, timeout=60).json()["tokens"])
        except RuntimeRequestError:
            return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens))

    async def atokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        body = {"prompt": text, "add_special_tokens": add_special_tokens}
        try:
            return list((await self._arequest("POST", "/tokenize", json=body, timeout=60)).json()["tokens"])
        except RuntimeRequestError:
            tok = await self.atokenizer()
            return list(tok.encode(text, add_special_tokens=add_special_tokens))

    # -- generation ------------------------------------------------------------------------
    def generate(self, *, text: str | None = None, input_ids: list[int] | None = None,
                 sampling_params: dict[str, Any] | None = None, **extra: Any) -> GenerateResult:  # fmt: skip
        return self.generate_body(_body(text, input_ids, sampling_params, extra))

    def generate_body(self, body: dict[str, Any]) -> GenerateResult:
        t0 = time.perf_counter()
        out = self._request("POST", "/generate", json=body).json()
        return _result(out, self.name, time.perf_counter() - t0)

    async def agenerate_body(self, body: dict[str, Any]) -> GenerateResult:
        t0 = time.perf_counter()
        out = (await self._arequest("POST", "/generate", json=body)).json()
        return _result(out, self.name, time.perf_counter() - t0)

    def stream(self, body: dict[str, Any]) -> Iterator[StreamProgress | GenerateResult]:
        """Streamed ``/generate``: progress chunks, then the GenerateResult."""
        t0, state = time.perf_counter(), _StreamState(self.name)
        try:
            body = {**body, "stream": True}
            with self.sync_client.stream("POST", f"{self.url}/generate", json=body) as resp:
                if resp.status_code >= 400:
                    self._check(resp, resp.read().decode(errors="replace"))
                for line in resp.iter_lines():
                    if (p := state.feed(line)) is not None:
                        yield p
        except httpx.HTTPError as e:
            raise self._unavailable(e) from e
        yield state.result(time.perf_counter() - t0)

    async def astream(self, body: dict[str, Any]) -> AsyncIterator[StreamProgress | GenerateResult]:
        t0, state = time.perf_counter(), _StreamState(self.name)
        try:
            async with self.async_client.stream("POST", f"{self.url}/generate",
                                                json={**body, "stream": True}) as resp:  # fmt: skip
                if resp.status_code >= 400:
                    self._check(resp, (await resp.aread()).decode(errors="replace"))
                async for line in resp.aiter_lines():
                    if (p := state.feed(line)) is not None:
                        yield p
        except httpx.HTTPError as e:
            raise self._unavailable(e) from e
        yield state.result(time.perf_counter() - t0)

    def abort(self, rid: str) -> None:
        try:
            self._request("POST", "/abort_request", json={"rid": rid}, timeout=10)
        except (RuntimeUnavailable, RuntimeRequestError):
            pass  # a dead runtime runs nothing

    async def aabort(self, rid: str) -> None:
        try:
            await self._arequest("POST", "/abort_request", json={"rid": rid}, timeout=10)
        except (RuntimeUnavailable, RuntimeRequestError):
            pass

    def flush_cache(self) -> None:
        self._request("POST", "/flush_cache", timeout=30)

    async def aflush_cache(self) -> None:
        await self._arequest("POST", "/flush_cache", timeout=30)

    def running_requests(self) -> int:
        """How many requests the runtime is decoding or queueing now (``/v1/loads``)."""
        loads = self._request("GET", "/v1/loads", params={"include": "core"}, timeout=10).json()["loads"]
        return sum(int(x.get("num_running_reqs", 0)) + int(x.get("num_waiting_reqs", 0)) for x in loads)

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    async def aclose(self) -> None:
        if self._async is not None:
            await self._async.aclose()
            self._async = None
        self.close()

    def __repr__(self) -> str:
        return f"RuntimeClient({self.name!r}, {self.url})"
