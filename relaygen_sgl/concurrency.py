"""Many relays in flight on one event loop, at most N at once: how the evals and the demo run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TypeVar

J = TypeVar("J")
R = TypeVar("R")


async def bounded(
    jobs: Iterable[J],
    work: Callable[[J], Awaitable[R]],
    concurrency: int,
    *,
    catch: tuple[type[Exception], ...] = (),
) -> AsyncIterator[tuple[J, R | Exception]]:
    """``(job, result)`` for each job as it finishes, ``concurrency`` at most in flight.

    An exception of a ``catch`` type is yielded as that job's result, so one failed job does not
    stop the others; any other ends the run.  Closing the iterator (use ``contextlib.aclosing``)
    cancels what is still running, which aborts its requests on the runtimes.
    """
    sem = asyncio.Semaphore(concurrency)

    async def one(job: J) -> tuple[J, R | Exception]:
        async with sem:
            try:
                return job, await work(job)
            except catch as e:
                return job, e

    tasks = [asyncio.create_task(one(j)) for j in jobs]
    try:
        for fut in asyncio.as_completed(tasks):
            yield await fut
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
