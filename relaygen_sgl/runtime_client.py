"""A thin HTTP client for one SGLang runtime's native ``/generate`` API.

The relay loop needs what the OpenAI routes do not give: ``input_ids`` in and
``output_ids`` out (token-id handoff), ``stop_regex``, and
``meta_info["cached_tokens"]`` (the RadixAttention prefix hit).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import requests


class RuntimeUnavailable(RuntimeError):
    """The runtime cannot be reached or died while serving a request."""


class RuntimeRequestError(RuntimeError):
    """The runtime rejected a request (4xx)."""


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


# A whole reasoning turn is one request, and a 1.5B model batched on a CPU can decode under one
# token/s per stream, so the read timeout is generous; a dead server still fails at once (reset).
DEFAULT_TIMEOUT_S = float(os.environ.get("RELAYGEN_REQUEST_TIMEOUT_S", 3 * 3600))
CONNECT_TIMEOUT_S = 10.0

_CLIENTS: dict[str, RuntimeClient] = {}
_CLIENTS_LOCK = threading.Lock()


class RuntimeClient:
    """Calls one SGLang server.  Thread-safe: one HTTP session per thread."""

    def __init__(self, url: str, name: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self.name = name or self.url
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._tokenizer = None
        self._tokenizer_lock = threading.Lock()

    @classmethod
    def of(cls, runtime: RuntimeClient | str | Any, name: str | None = None) -> RuntimeClient:
        """Accept a client, a URL, or anything with a ``url`` (an SGLangRuntime)."""
        if isinstance(runtime, RuntimeClient):
            return runtime
        url = runtime if isinstance(runtime, str) else getattr(runtime, "url", None)
        if isinstance(url, str):
            # One client per URL, so tokenizers and model info are loaded once.
            key = url.rstrip("/")
            with _CLIENTS_LOCK:
                if key not in _CLIENTS:
                    _CLIENTS[key] = cls(key, name=name or getattr(runtime, "name", None))
                return _CLIENTS[key]
        raise TypeError(f"expected a RuntimeClient, URL or SGLangRuntime, got {runtime!r}")

    @property
    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
        return s

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        timeout = kwargs.pop("timeout", self.timeout_s)
        try:
            resp = self._session.request(
                method, f"{self.url}{path}", timeout=(min(CONNECT_TIMEOUT_S, timeout), timeout), **kwargs
            )
        except requests.RequestException as e:
            raise RuntimeUnavailable(
                f"runtime {self.name!r} at {self.url} is not answering ({type(e).__name__}: {e})"
            ) from e
        if resp.status_code >= 500:
            raise RuntimeUnavailable(
                f"runtime {self.name!r} at {self.url} failed with HTTP {resp.status_code}: {resp.text[:500]}"
            )
        if resp.status_code >= 400:
            raise RuntimeRequestError(
                f"runtime {self.name!r} rejected the request with HTTP {resp.status_code}: {resp.text[:500]}"
            )
        return resp

    def health(self, timeout_s: float = 5.0) -> bool:
        try:
            return self._request("GET", "/health", timeout=timeout_s).status_code == 200
        except (RuntimeUnavailable, RuntimeRequestError):
            return False

    @cached_property
    def model_info(self) -> dict[str, Any]:
        return self._request("GET", "/get_model_info", timeout=30).json()

    @property
    def tokenizer(self):  # -> transformers.PreTrainedTokenizerBase
        # Loaded once per client, under a lock: server threads share clients.
        with self._tokenizer_lock:
            if self._tokenizer is None:
                from transformers import AutoTokenizer

                info = self.model_info
                path = info.get("tokenizer_path") or info["model_path"]
                self._tokenizer = AutoTokenizer.from_pretrained(path)
            return self._tokenizer

    def generate(
        self,
        *,
        text: str | None = None,
        input_ids: list[int] | None = None,
        sampling_params: dict[str, Any] | None = None,
        **extra: Any,
    ) -> GenerateResult:
        if (text is None) == (input_ids is None):
            raise ValueError("pass exactly one of text= or input_ids=")
        body: dict[str, Any] = {"sampling_params": dict(sampling_params or {}), **extra}
        if text is not None:
            body["text"] = text
        else:
            body["input_ids"] = input_ids
        t0 = time.perf_counter()
        out = self._request("POST", "/generate", json=body).json()
        latency = time.perf_counter() - t0
        meta = out.get("meta_info", {})
        finish = meta.get("finish_reason") or {}
        if finish.get("type") == "abort":
            raise RuntimeRequestError(
                f"runtime {self.name!r} aborted the request: {finish.get('message', finish)}"
            )
        return GenerateResult(
            text=out.get("text", ""),
            output_ids=list(out.get("output_ids") or []),
            prompt_tokens=int(meta.get("prompt_tokens", 0)),
            completion_tokens=int(meta.get("completion_tokens", 0)),
            cached_tokens=int(meta.get("cached_tokens", 0)),
            finish_type=str(finish.get("type", "")),
            matched=finish.get("matched"),
            latency_s=latency,
            meta_info=meta,
        )

    def flush_cache(self) -> None:
        self._request("POST", "/flush_cache", timeout=30)

    def __repr__(self) -> str:
        return f"RuntimeClient({self.name!r}, {self.url})"
