"""The two models of a relay, as one object that a server, eval or program owns (the async core;
:class:`~relaygen_sgl.relay.sync.RelayPair` is its sync face).

It holds each model's workers (:class:`~relaygen_sgl.runtime.workers.Workers`: the entry
client, the replicas behind it, their pooled connections and tokenizers) and the handoff
decision (token ids when the two tokenizers are the same, text otherwise).  The decision is
made once per pair and made again when either runtime comes back with another model, so
nothing stale outlives a restart; there is no process-wide cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Literal

from relaygen_sgl.relay.types import Role
from relaygen_sgl.runtime.client import AsyncRuntimeClient, RuntimeUnavailable
from relaygen_sgl.runtime.workers import Workers

Handoff = Literal["auto", "ids", "text"]
ROLES: tuple[Role, Role] = ("large", "small")


def same_tokenizer(a: Any, b: Any) -> bool:
    """Whether two models can exchange token ids: the same vocabulary, added tokens included
    (``</think>`` and the chat markers are added tokens in the Qwen families)."""
    return len(a) == len(b) and a.get_vocab() == b.get_vocab()


class AsyncRelayPair:
    """``large``/``small``: each a URL (a runtime or an sglang-router), a runtime client, an
    SGLangRuntime or a RuntimePool."""

    def __init__(self, large: Any, small: Any) -> None:
        self.workers: dict[Role, Workers] = {
            "large": Workers.of("large", large),
            "small": Workers.of("small", small),
        }
        self._same: tuple[tuple[tuple[str, int], ...], bool] | None = None

    @classmethod
    def of(cls, large: Any, small: Any = None) -> AsyncRelayPair:
        """``large`` as a pair when it is one (or a sync RelayPair's), else a new pair of the two."""
        if isinstance(large, AsyncRelayPair):
            return large
        aio = getattr(large, "aio", None)  # a sync RelayPair
        return aio if isinstance(aio, AsyncRelayPair) else cls(large, small)

    @property
    def clients(self) -> dict[Role, AsyncRuntimeClient]:
        """Each model's entry: its runtime, or the router in front of its replicas."""
        return {r: self.workers[r].entry for r in ROLES}

    @property
    def large(self) -> AsyncRuntimeClient:
        return self.workers["large"].entry

    @property
    def small(self) -> AsyncRuntimeClient:
        return self.workers["small"].entry

    # -- workers ----------------------------------------------------------------------------
    def client_for(self, role: Role, request_id: str) -> AsyncRuntimeClient:
        """The client of the worker that serves every call of relay request ``request_id`` on ``role``."""
        workers = self.workers[role]
        return workers.client(workers.worker_for(request_id))

    async def refresh(self, roles: Sequence[Role] = ROLES) -> None:
        """List routers' workers and probe down ones, where due (raises RuntimeUnavailable)."""
        for r in roles:
            await self.workers[r].refresh()

    def report_fault(self, role: Role, client: AsyncRuntimeClient, error: Exception) -> None:
        """A call to ``client`` failed: a worker that could not be reached leaves the rotation."""
        if isinstance(error, RuntimeUnavailable):
            self.workers[role].mark_down(client.url)

    async def health(self, role: Role) -> dict[str, Any]:
        return await self.workers[role].health()

    async def tokenizer(self, role: Role) -> Any:
        return await self.workers[role].tokenizer()

    async def flush_cache(self) -> None:
        """Empty both models' prefix caches (a router passes it to every worker)."""
        await asyncio.gather(*(c.flush_cache() for c in self.clients.values()))

    # -- handoff --------------------------------------------------------------------------
    async def handoff(self, used: Sequence[Role], requested: Handoff = "auto") -> str:
        """How the context crosses between the models: ``ids`` or ``text``."""
        if requested != "auto":
            return requested
        if len(used) == 1:
            return "ids"
        toks = {r: await self.tokenizer(r) for r in ROLES}
        key = tuple((c.url, c.model_generation) for c in (self.workers[r].info_client() for r in ROLES))
        if self._same is None or self._same[0] != key:
            one_url = self.large.url == self.small.url
            self._same = (key, one_url or same_tokenizer(toks["large"], toks["small"]))
        return "ids" if self._same[1] else "text"

    async def aclose(self) -> None:
        """Close the running loop's connections; the pair stays usable."""
        for workers in self.workers.values():
            await workers.aclose()
