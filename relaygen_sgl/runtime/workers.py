"""One model's workers behind its entry URL: listed, ranked per relay request, marked down,
probed and reported on, over httpx.

An entry is an SGLang runtime (its own only worker), an sglang-router (a URL whose
``GET /workers`` lists the workers with the router's view of their health), or a
:class:`~relaygen_sgl.runtime.pool.RuntimePool` started here (whose workers and their processes
are known).  The router drops ``stop_regex`` (see :mod:`.pool`), so relay calls never go
through it: :meth:`Workers.worker_for` sends every call of one relay request to the same worker
(a rendezvous hash of the request id over the live workers), which keeps the cues and that
worker's prefix cache.  Everything else (model info, flush, the calls a relay does not split)
uses the entry, i.e. the router.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import httpx

from relaygen_sgl.runtime.client import DEFAULT_TIMEOUT_S, AsyncRuntimeClient, RuntimeUnavailable

if TYPE_CHECKING:
    from relaygen_sgl.runtime.pool import RuntimePool

logger = logging.getLogger(__name__)
RELIST_S = 5.0  # how often a router's worker list (and its health view) is read again
RECHECK_S = 2.0  # how often a worker marked down is probed again
PROBE_TIMEOUT_S = 2.0  # a dead worker refuses at once; this only bounds a hung one


def rank_workers(key: str, worker_urls: Sequence[str]) -> list[str]:
    """``worker_urls`` in rendezvous-hash order for ``key``: the first is the key's home worker.

    Stable across calls and processes, and when a worker leaves only the keys it was home to
    move (to their second choice).
    """

    def score(url: str) -> bytes:
        return hashlib.blake2b(f"{key}\0{url}".encode(), digest_size=8).digest()

    return sorted(worker_urls, key=score, reverse=True)


def parse_workers(resp: httpx.Response) -> list[dict[str, Any]] | None:
    """The workers of a ``GET /workers`` answer; None when the URL is no router (an SGLang runtime
    has no ``/workers``: 404)."""
    if resp.status_code != 200:
        return None
    try:
        workers = resp.json().get("workers")
    except ValueError:
        return None
    if not isinstance(workers, list):
        return None
    return [w for w in workers if isinstance(w, dict) and isinstance(w.get("url"), str)]


def router_workers(url: str, timeout: float = 5.0) -> list[dict[str, Any]] | None:
    """The workers an sglang-router at ``url`` routes to; None if ``url`` is no router or is down."""
    try:
        return parse_workers(httpx.get(f"{url.rstrip('/')}/workers", timeout=timeout))
    except httpx.HTTPError:
        return None


class Workers:
    """One model's workers behind its entry (``role``: which model), and which of them serves a
    relay request.

    A worker is *down* from a call that could not reach it (reported by the driver) until a
    probe finds it answering again; a pool started in this process also knows its dead
    worker processes at once.  Only the keys whose home is a down worker move.
    """

    def __init__(self, role: str, entry: AsyncRuntimeClient, pool: RuntimePool | None = None) -> None:
        self.role = role
        self.entry = entry
        self.pool = pool
        self.urls: list[str] | None = None  # None: not listed yet (refresh lists it)
        self.is_router = False
        self._clients: dict[str, AsyncRuntimeClient] = {}
        self._down: dict[str, float] = {}  # url -> when it was last found down
        self._routed: dict[str, bool] = {}  # url -> the router's view of its health
        self._listed_at = -RELIST_S
        if pool is not None:  # its workers are known (and, when it started them, their processes)
            self._set(dict.fromkeys(pool.worker_urls, True))

    @classmethod
    def of(cls, role: str, target: Any) -> Workers:
        """``target``: a URL (a runtime or a router), a client, an SGLangRuntime or a RuntimePool."""
        from relaygen_sgl.runtime.pool import RuntimePool

        pool = target if isinstance(target, RuntimePool) else None
        return cls(role, AsyncRuntimeClient.of(pool.url if pool else target, role), pool)

    def _set(self, listed: dict[str, bool]) -> None:
        now = time.monotonic()
        self.urls = list(listed)
        self.is_router = self.urls != [self.entry.url]
        self._routed = listed
        self._listed_at = now if listed else -RELIST_S  # an empty router is asked again next time
        for url, healthy in listed.items():
            # The router's health checks are a hint (a fresh pair has seen no failure yet); a
            # worker it doubts is left out until our own probe finds it answering.
            if self.is_router and not healthy:
                self._down.setdefault(url, now)

    # -- choosing a worker ------------------------------------------------------------------
    def client(self, url: str) -> AsyncRuntimeClient:
        """The pooled client of worker ``url`` (the entry client when it is the entry itself)."""
        if url == self.entry.url:
            return self.entry
        if url not in self._clients:
            timeout = self.entry.timeout.read or DEFAULT_TIMEOUT_S  # the entry's read timeout
            self._clients[url] = AsyncRuntimeClient(
                url, name=self.role, timeout_s=timeout, headers=self.entry.headers
            )
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

    def info_client(self) -> AsyncRuntimeClient:
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
        left = any(self._alive(u) for u in self.urls)
        logger.warning(
            "%s worker %s is down; its relay requests move to %s",
            self.role,
            url,
            "the other workers" if left else "no worker: none is left",
        )
        return left

    async def tokenizer(self) -> Any:
        """The model's tokenizer (any worker's is the model's).  Behind a router, a worker that does
        not answer is taken out of rotation and the next one asked."""
        while True:
            client = self.info_client()
            try:
                return await client.tokenizer()
            except RuntimeUnavailable:
                if not self.mark_down(client.url):
                    raise

    # -- refreshing what is known (the drivers call this in prepare) -------------------------
    async def refresh(self, *, relist: bool = False) -> None:
        """List a router's workers and probe down ones, where due (``relist``: list now)."""
        now = time.monotonic()
        fixed = self.pool is not None and bool(self.pool.workers)  # a pool started here keeps its workers
        due = self.is_router and not fixed and now - self._listed_at > RELIST_S
        if relist or self.urls is None or due:
            self._listed_at = now  # before awaiting: concurrent requests skip it
            try:
                resp = await self.entry.http.get(f"{self.entry.url}/workers", timeout=10)
                self._set(self._listed(resp))
            except (httpx.HTTPError, RuntimeUnavailable) as e:
                if self.urls is None:  # never listed: relaying through a router would lose the cues
                    raise RuntimeUnavailable(
                        f"{self.role} runtime at {self.entry.url} is not answering ({e})"
                    ) from e
                # Listed before: keep that list; the workers may well be fine without their router.
        for url in [u for u, t in list(self._down.items()) if now - t > RECHECK_S]:
            self._down[url] = time.monotonic()  # one probe at a time per worker
            self._probed(url, await self._answers(url))
        if self.urls == []:  # relaying through the router itself would lose the cues
            raise RuntimeUnavailable(f"{self.role} runtime: the router at {self.entry.url} lists no workers")

    def _listed(self, resp: httpx.Response) -> dict[str, bool]:
        """Worker URLs of a ``GET /workers`` answer, each with the router's view of its health;
        ``{entry: True}`` for a plain runtime."""
        if resp.status_code == 404:
            return {self.entry.url: True}  # an SGLang runtime has no /workers: it is its own only worker
        workers = parse_workers(resp)
        if workers is None:
            raise RuntimeUnavailable(
                f"{self.entry.url}/workers answered HTTP {resp.status_code}: {resp.text[:200]}"
            )
        return {w["url"].rstrip("/"): bool(w.get("is_healthy", True)) for w in workers}

    def _probed(self, url: str, ok: bool) -> None:
        if ok:
            if self._down.pop(url, None) is not None:
                logger.info("%s worker %s answers again; back in rotation", self.role, url)
        else:
            self._down[url] = time.monotonic()

    async def _answers(self, url: str) -> bool:
        # /get_model_info, not /health: SGLang's /health runs a generation step and takes >= 1 s.
        try:
            resp = await self.client(url).http.get(f"{url}/get_model_info", timeout=PROBE_TIMEOUT_S)
            return resp.is_success
        except httpx.HTTPError:
            return False

    # -- health ---------------------------------------------------------------------------
    async def health(self) -> dict[str, Any]:
        """Each worker's own ``/health`` (a router's ``/health`` is 200 even with no worker), and
        behind a router whether the router routes to it."""
        with suppress(RuntimeUnavailable):
            await self.refresh(relist=self.is_router)
        urls = self.urls if self.urls is not None else [self.entry.url]
        checks = [self.client(u).health() for u in urls]
        if self.is_router:
            checks.append(self.entry.health())
        oks = list(await asyncio.gather(*checks))
        router = {"url": self.entry.url, "alive": oks.pop()} if self.is_router else None
        workers: dict[str, dict[str, bool]] = {}
        for url, ok in zip(urls, oks, strict=True):
            ok = ok and (self.pool is None or self.pool.worker_alive(url))
            workers[url] = {"healthy": ok}
            if self.is_router:
                workers[url]["routed"] = self._routed.get(url, False)
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

    async def aclose(self) -> None:
        for c in [self.entry, *self._clients.values()]:
            await c.aclose()
