"""The two runtimes of a relay, as one object that a server, eval or program owns.

It holds both entry clients (their pooled connections and tokenizers), the handoff decision
(token ids when the two tokenizers are the same, text otherwise) and, per model, the
replicas behind the entry URL.  The decision is made once per pair and made again when
either runtime comes back with another model, so nothing stale outlives a restart; there
is no process-wide cache.

Replicas: an entry may be an sglang-router (a URL, or a :class:`RuntimePool`).  The router
drops ``stop_regex`` (see :mod:`relaygen_sgl.runtime.pool`), so relay calls never go through
it: :meth:`RelayPair.client_for` sends every call of one relay request to the same worker
of each model (a rendezvous hash of the request id over the live workers), which keeps the
cues and that worker's prefix cache.  Everything else (model info, tokenizers, flush, the
calls a relay does not split) uses the entry client, i.e. the router.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from relaygen_sgl.relay.types import Role
from relaygen_sgl.runtime.client import DEFAULT_TIMEOUT_S, RuntimeClient, RuntimeUnavailable
from relaygen_sgl.runtime.pool import RuntimePool
from relaygen_sgl.runtime.workers import rank_workers

Handoff = Literal["auto", "ids", "text"]
ROLES: tuple[Role, Role] = ("large", "small")
RELIST_S = 5.0  # how often a router's worker list (and its health view) is read again
RECHECK_S = 2.0  # how often a worker marked down is probed again
PROBE_TIMEOUT_S = 2.0  # a dead worker refuses at once; this only bounds a hung one


def _listed(resp: httpx.Response, url: str) -> dict[str, bool]:
    """Worker URLs from a ``GET /workers`` answer, each with whether the router finds it healthy;
    ``{url: True}`` for a plain runtime."""
    if resp.status_code == 404:
        return {url: True}  # an SGLang runtime has no /workers: it is its own only worker
    if resp.status_code != 200:
        raise RuntimeUnavailable(f"{url}/workers answered HTTP {resp.status_code}: {resp.text[:200]}")
    workers = resp.json().get("workers")
    if not isinstance(workers, list):
        raise RuntimeUnavailable(f"{url}/workers did not list workers: {resp.text[:200]}")
    return {w["url"].rstrip("/"): bool(w.get("is_healthy", True))
            for w in workers if isinstance(w, dict) and isinstance(w.get("url"), str)}  # fmt: skip


def same_tokenizer(a: Any, b: Any) -> bool:
    """Whether two models can exchange token ids: the same vocabulary, added tokens included
    (``</think>`` and the chat markers are added tokens in the Qwen families)."""
    return len(a) == len(b) and a.get_vocab() == b.get_vocab()


class Replicas:
    """One model's workers behind its entry URL, and which of them serves a relay request.

    A worker is *down* from a call that could not reach it (reported by the driver) until a
    probe finds it answering again; a pool started in this process also knows its dead
    worker processes at once.  Only the keys whose home is a down worker move.
    """

    def __init__(self, role: Role, entry: RuntimeClient, pool: RuntimePool | None = None) -> None:
        self.role = role
        self.entry = entry
        self.pool = pool
        self.urls: list[str] | None = None  # None: not listed yet (prepare lists it)
        self.is_router = False
        self._clients: dict[str, RuntimeClient] = {}
        self._down: dict[str, float] = {}  # url -> when it was last found down
        self._listed_at = -RELIST_S
        self._lock = threading.Lock()
        if pool is not None:  # its workers are known (and, when it started them, their processes)
            self._set(dict.fromkeys(pool.worker_urls, True))

    def _set(self, listed: dict[str, bool]) -> None:
        now = time.monotonic()
        self.urls = list(listed)
        self.is_router = self.urls != [self.entry.url]
        self._listed_at = now if listed else -RELIST_S  # an empty router is asked again next time
        for url, healthy in listed.items():
            # The router's health checks are a hint (a fresh pair has seen no failure yet); a
            # worker it doubts is left out until our own probe finds it answering.
            if self.is_router and not healthy:
                self._down.setdefault(url, now)

    # -- choosing a worker ------------------------------------------------------------------
    def client(self, url: str) -> RuntimeClient:
        """The pooled client of worker ``url`` (the entry client when it is the entry itself)."""
        if url == self.entry.url:
            return self.entry
        with self._lock:
            if url not in self._clients:
                timeout = self.entry.timeout.read or DEFAULT_TIMEOUT_S  # the entry's read timeout
                self._clients[url] = RuntimeClient(url, name=self.role, timeout_s=timeout)
            return self._clients[url]

    def _alive(self, url: str) -> bool:
        return url not in self._down and (self.pool is None or self.pool.worker_alive(url))

    def worker_for(self, key: str) -> str:
        """Home worker of ``key`` among the live ones; with none live, its home anyway (the call
        then fails fast and says which runtime, instead of waiting)."""
        if not self.urls:
            return self.entry.url  # never listed (only a hand-driven machine gets here)
        ranked = rank_workers(key, self.urls)
        return next((u for u in ranked if self._alive(u)), ranked[0])

    def info_client(self) -> RuntimeClient:
        """Where the model info and tokenizer come from: the entry, or behind a router a live worker.
        The router sends ``/get_model_info`` to one worker without trying another, so for a few
        seconds after a replica dies it can answer 500."""
        if not self.is_router or not self.urls:
            return self.entry
        return self.client(next((u for u in self.urls if self._alive(u)), self.urls[0]))

    def mark_down(self, url: str) -> bool:
        """Take ``url`` out of rotation; whether it was in rotation and another live worker is left."""
        if not (self.urls and url in self.urls and self.is_router) or url in self._down:
            return False
        self._down[url] = time.monotonic()
        return any(self._alive(u) for u in self.urls)

    # -- refreshing what is known (the drivers call this in prepare, where I/O is allowed) ---
    def _due(self, now: float) -> tuple[bool, list[str]]:
        # A router someone else runs may gain or lose workers; a pool started here does not.
        fixed = self.pool is not None and bool(self.pool.workers)
        relist = self.urls is None or (self.is_router and not fixed and now - self._listed_at > RELIST_S)
        probe = [u for u, t in list(self._down.items()) if now - t > RECHECK_S]
        return relist, probe

    def _list_failed(self, e: Exception) -> None:
        if self.urls is None:  # never listed: relaying through a router would silently lose the cues
            raise RuntimeUnavailable(f"{self.role} runtime at {self.entry.url} is not answering ({e})") from e
        # Listed before: keep that list; the workers may well be fine without their router.

    def _probed(self, url: str, ok: bool) -> None:
        if ok:
            self._down.pop(url, None)
        else:
            self._down[url] = time.monotonic()

    def _check_listed(self) -> None:
        if self.urls == []:  # relaying through the router itself would lose the cues
            raise RuntimeUnavailable(f"{self.role} runtime: the router at {self.entry.url} lists no workers")

    def refresh(self) -> None:
        relist, probe = self._due(time.monotonic())
        if relist:
            self._listed_at = time.monotonic()
            try:
                resp = self.entry.sync_client.get(f"{self.entry.url}/workers", timeout=10)
                self._set(_listed(resp, self.entry.url))
            except (httpx.HTTPError, RuntimeUnavailable, ValueError) as e:
                self._list_failed(e)
        for url in probe:
            self._probed(url, self._answers(url))
        self._check_listed()

    async def arefresh(self) -> None:
        relist, probe = self._due(time.monotonic())
        if relist:
            self._listed_at = time.monotonic()  # set before awaiting: concurrent requests skip it
            try:
                resp = await self.entry.async_client.get(f"{self.entry.url}/workers", timeout=10)
                self._set(_listed(resp, self.entry.url))
            except (httpx.HTTPError, RuntimeUnavailable, ValueError) as e:
                self._list_failed(e)
        for url in probe:
            self._down[url] = time.monotonic()  # one probe at a time per worker
            self._probed(url, await self._aanswers(url))
        self._check_listed()

    def _answers(self, url: str) -> bool:
        # /get_model_info, not /health: SGLang's /health runs a generation step and takes >= 1 s.
        try:
            resp = self.client(url).sync_client.get(f"{url}/get_model_info", timeout=PROBE_TIMEOUT_S)
            return resp.is_success
        except httpx.HTTPError:
            return False

    async def _aanswers(self, url: str) -> bool:
        try:
            resp = await self.client(url).async_client.get(f"{url}/get_model_info", timeout=PROBE_TIMEOUT_S)
            return resp.is_success
        except httpx.HTTPError:
            return False

    # -- health ---------------------------------------------------------------------------
    async def ahealth(self) -> dict[str, Any]:
        """Each worker's own ``/health`` (a router's ``/health`` is 200 even with no worker)."""
        with suppress(RuntimeUnavailable):
            await self.arefresh()
        urls = self.urls if self.urls is not None else [self.entry.url]
        checks = [self.client(u).ahealth() for u in urls]
        if self.is_router:
            checks.append(self.entry.ahealth())
        oks = list(await asyncio.gather(*checks))
        router = {"url": self.entry.url, "alive": oks.pop()} if self.is_router else None
        workers: dict[str, dict[str, bool]] = {}
        for url, ok in zip(urls, oks, strict=True):
            ok = ok and (self.pool is None or self.pool.worker_alive(url))
            workers[url] = {"healthy": ok}
            if self.is_router:
                self._probed(url, ok)  # fresh news: a worker back up is routed to again at once
        healthy = sum(w["healthy"] for w in workers.values())
        return {
            "ok": healthy > 0 and (router is None or router["alive"]),
            "url": self.entry.url,
            "healthy_workers": healthy,
            "total_workers": len(workers),
            "router": router,
            "workers": workers,
        }

    def clients(self) -> list[RuntimeClient]:
        return [self.entry, *self._clients.values()]


class RelayPair:
    """``large``/``small``: each a URL (a runtime or an sglang-router), a :class:`RuntimeClient`,
    an SGLangRuntime or a :class:`RuntimePool`."""

    def __init__(self, large: RuntimeClient | RuntimePool | str | Any,
                 small: RuntimeClient | RuntimePool | str | Any) -> None:  # fmt: skip
        self.replicas: dict[Role, Replicas] = {}
        for role, target in (("large", large), ("small", small)):
            pool = target if isinstance(target, RuntimePool) else None
            entry = RuntimeClient.of(pool.url if pool else target, role)
            self.replicas[role] = Replicas(role, entry, pool)  # type: ignore[arg-type]
        self.clients: dict[Role, RuntimeClient] = {r: self.replicas[r].entry for r in ROLES}
        self._same: tuple[tuple[tuple[str, int], ...], bool] | None = None

    @classmethod
    def of(cls, large: Any, small: Any) -> RelayPair:
        return large if isinstance(large, RelayPair) else cls(large, small)

    @property
    def large(self) -> RuntimeClient:
        return self.clients["large"]

    @property
    def small(self) -> RuntimeClient:
        return self.clients["small"]

    # -- replicas -------------------------------------------------------------------------
    def client_for(self, role: Role, request_id: str) -> RuntimeClient:
        """The client of the worker that serves every call of relay request ``request_id`` on ``role``."""
        reps = self.replicas[role]
        return reps.client(reps.worker_for(request_id))

    def refresh(self, roles: Sequence[Role] = ROLES) -> None:
        """List routers' workers and probe down ones, where due (raises RuntimeUnavailable)."""
        for r in roles:
            self.replicas[r].refresh()

    async def arefresh(self, roles: Sequence[Role] = ROLES) -> None:
        for r in roles:
            await self.replicas[r].arefresh()

    def report_fault(self, role: Role, client: RuntimeClient, error: Exception) -> None:
        """A call to ``client`` failed: a worker that could not be reached leaves the rotation."""
        if isinstance(error, RuntimeUnavailable):
            self.replicas[role].mark_down(client.url)

    async def ahealth(self, role: Role) -> dict[str, Any]:
        return await self.replicas[role].ahealth()

    def tokenizer(self, role: Role) -> Any:
        """``role``'s tokenizer (one per model: any worker's is the model's).  Behind a router, a
        worker that does not answer is taken out of rotation and the next one asked."""
        reps = self.replicas[role]
        while True:
            client = reps.info_client()
            try:
                return client.tokenizer
            except RuntimeUnavailable:
                if not reps.mark_down(client.url):
                    raise

    async def atokenizer(self, role: Role) -> Any:
        reps = self.replicas[role]
        while True:
            client = reps.info_client()
            try:
                return await client.atokenizer()
            except RuntimeUnavailable:
                if not reps.mark_down(client.url):
                    raise

    # -- handoff --------------------------------------------------------------------------
    def _decide(self, tokenizers: dict[Role, Any]) -> bool:
        infos = [self.replicas[r].info_client() for r in ROLES]
        key = tuple((c.url, c.model_generation) for c in infos)
        if self._same is None or self._same[0] != key:
            one_url = self.large.url == self.small.url
            self._same = (key, one_url or same_tokenizer(tokenizers["large"], tokenizers["small"]))
        return self._same[1]

    def handoff(self, used: Sequence[Role], requested: Handoff = "auto") -> str:
        if requested != "auto":
            return requested
        if len(used) == 1:
            return "ids"
        return "ids" if self._decide({r: self.tokenizer(r) for r in ROLES}) else "text"

    async def ahandoff(self, used: Sequence[Role], requested: Handoff = "auto") -> str:
        if requested != "auto":
            return requested
        if len(used) == 1:
            return "ids"
        toks = {r: await self.atokenizer(r) for r in ROLES}
        return "ids" if self._decide(toks) else "text"

    async def aclose(self) -> None:
        for reps in self.replicas.values():
            for c in reps.clients():
                await c.aclose()

    def close(self) -> None:
        for reps in self.replicas.values():
            for c in reps.clients():
                c.close()


@dataclass(frozen=True)
class RenderedPrompt:
    """One runtime's prompt, already rendered (a frontend program's text, say).  ``templated``:
    an HF chat template wrote it, with its own special tokens, so tokenizing it adds none."""

    text: str
    templated: bool = False


PromptInput = str | list[int] | Mapping[Role, RenderedPrompt] | None


def render_prompts(
    prompt: PromptInput,
    messages: Sequence[dict[str, Any]] | None,
    tokenizers: dict[Role, Any],
    *,
    handoff: str,
    chat_template_kwargs: dict[str, Any] | None = None,
) -> tuple[dict[Role, str], dict[Role, list[int]] | None]:
    """Each runtime's prompt text (its own chat template), and the ids of a token-id prompt.
    Text prompts are tokenized by the runtimes themselves (:func:`runtime_prompt_ids`), so
    the ids are exactly what a text request would prefill."""
    if (prompt is None) == (messages is None):
        raise ValueError("pass exactly one of prompt= or messages=")
    roles = list(tokenizers)
    if isinstance(prompt, list):  # token ids: the same ids go to both (id handoff only)
        if handoff != "ids":
            raise ValueError("a token-id prompt needs both models to share a tokenizer")
        text = tokenizers[roles[0]].decode(prompt)
        return {r: text for r in roles}, {r: list(prompt) for r in roles}
    if isinstance(prompt, Mapping):
        if missing := [r for r in roles if r not in prompt]:
            raise ValueError(f"no rendered prompt for the {', '.join(missing)} runtime")
        return {r: prompt[r].text for r in roles}, None
    if prompt is not None:
        texts = {r: prompt for r in roles}
    else:
        if not messages:
            raise ValueError("messages must not be empty")
        kwargs = dict(chat_template_kwargs or {})
        # Each model gets its own chat template; only the generated text is shared.
        texts = {r: tokenizers[r].apply_chat_template(list(messages), tokenize=False,
                                                      add_generation_prompt=True, **kwargs)
                 for r in roles}  # fmt: skip
    return texts, None


def adds_special_tokens(prompt: PromptInput, role: Role) -> bool:
    """Whether the runtime's tokenizer should add special tokens to ``role``'s prompt text:
    not to chat-templated text, which already has them."""
    if isinstance(prompt, Mapping):
        return not prompt[role].templated
    return prompt is not None
