"""The sync face of the relay: :class:`RelayPair` and :func:`relay_generate` run the async core
(:mod:`.pair`, :mod:`.drivers`) on a private event loop, as SGLang's ``Engine`` does for its
sync methods.  Any number of threads may relay through one pair at once (an SGLang frontend
program's gens run on several); they share its loop and its pooled connections.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from typing import TYPE_CHECKING, Any

from relaygen_sgl.private_loop import PrivateLoop
from relaygen_sgl.relay import drivers
from relaygen_sgl.relay.drivers import PrepareOptions, check_options
from relaygen_sgl.relay.machine import RelayMachine
from relaygen_sgl.relay.pair import ROLES, AsyncRelayPair
from relaygen_sgl.relay.prompts import PromptInput
from relaygen_sgl.relay.types import Delta, RelayConfig, RelayResult, Role
from relaygen_sgl.runtime.client import RuntimeClient

if TYPE_CHECKING:
    from typing_extensions import Unpack


class RelayPair:
    """A relay pair for sync code: ``aio`` is the :class:`AsyncRelayPair` it drives (async code
    may use it directly; both share the workers, tokenizers and handoff decision)."""

    def __init__(self, large: Any, small: Any) -> None:
        self.aio = AsyncRelayPair(large, small)
        self.loop = PrivateLoop("relay-pair")

    @classmethod
    def of(cls, large: Any, small: Any = None) -> RelayPair:
        """``large`` when it is a pair (an async one gets a sync face), else a new pair of the two."""
        if isinstance(large, RelayPair):
            return large
        if isinstance(large, AsyncRelayPair):
            return cls.over(large)
        return cls(large, small)

    @classmethod
    def over(cls, aio: AsyncRelayPair) -> RelayPair:
        """The sync face of an existing async pair."""
        pair = cls.__new__(cls)
        pair.aio, pair.loop = aio, PrivateLoop("relay-pair")
        return pair

    @property
    def clients(self) -> dict[Role, RuntimeClient]:
        """Each model's entry client (its runtime, or the router in front of its replicas)."""
        return {r: RuntimeClient(self.aio.clients[r], loop=self.loop) for r in ROLES}

    @property
    def large(self) -> RuntimeClient:
        return self.clients["large"]

    @property
    def small(self) -> RuntimeClient:
        return self.clients["small"]

    # -- relaying -----------------------------------------------------------------------------
    def prepare(
        self, config: RelayConfig, prompt: PromptInput = None, **options: Unpack[PrepareOptions]
    ) -> RelayMachine:
        """:func:`.drivers.prepare`: a machine for one request, its prompts rendered."""
        return self.loop.run(drivers.prepare(self.aio, config, prompt, **options))

    def run(self, m: RelayMachine, on_delta: Callable[[Delta], None] | None = None) -> RelayResult:
        """Drive ``m`` to the end; turns are streamed only when ``on_delta`` listens (it is called
        on this thread; if it raises, the call in flight is aborted)."""
        if on_delta is None:
            return self.loop.run(drivers.run(m, self.aio))
        with closing(self.stream(m)) as deltas:
            for d in deltas:
                on_delta(d)
        return m.result()

    def stream(self, m: RelayMachine) -> Iterator[Delta]:
        """``m``'s final deltas as they arrive; closing the iterator aborts the call in flight."""
        return self.loop.iterate(drivers.stream(m, self.aio))

    # -- the pair -----------------------------------------------------------------------------
    def tokenizer(self, role: Role) -> Any:
        return self.loop.run(self.aio.tokenizer(role))

    def health(self, role: Role) -> dict[str, Any]:
        return self.loop.run(self.aio.health(role))

    def refresh(self, roles: Sequence[Role] = ROLES) -> None:
        self.loop.run(self.aio.refresh(roles))

    def flush_cache(self) -> None:
        self.loop.run(self.aio.flush_cache())

    async def aclose(self) -> None:
        """From async code that relays through ``aio``: close the running loop's connections."""
        await self.aio.aclose()

    def close(self) -> None:
        """Close the connections and stop the loop (a later call starts them again)."""
        self.loop.run(self.aio.aclose())
        self.loop.close()

    def __enter__(self) -> RelayPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def relay_generate(
    prompt: PromptInput = None,
    *,
    large: Any,
    small: Any = None,
    config: RelayConfig | None = None,
    on_delta: Callable[[Delta], None] | None = None,
    **options: Unpack[PrepareOptions],
) -> RelayResult:
    """:func:`~relaygen_sgl.relay.drivers.relay_generate_async` for sync code (same arguments);
    ``on_delta`` is called on this thread."""
    check_options("relay_generate", options)
    pair = RelayPair.of(large, small)
    try:
        return pair.run(pair.prepare(config or RelayConfig(), prompt, **options), on_delta)
    finally:
        if pair is not large:
            pair.close()  # made here for this call
