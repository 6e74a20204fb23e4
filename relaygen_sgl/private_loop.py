"""A private event loop on a thread of its own: how sync code drives an async core.

SGLang's ``Engine`` keeps a loop of its own for its sync methods; this one also serves many
threads at once (an SGLang frontend program runs its gens on several), so it runs on its own
thread and every caller waits for its coroutine there.  The loop starts at the first call and
stops on :meth:`PrivateLoop.close` or when its owner is collected.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import weakref
from collections.abc import AsyncGenerator, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
CLEANUP_S = 30.0  # how long an interrupted call may take to clean up (abort its runtime call)
_DONE = object()


class PrivateLoop:
    def __init__(self, name: str = "relaygen") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: weakref.finalize | None = None
        self._lock = threading.Lock()

    def _running(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=f"{self.name}-loop", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
                self._stop = weakref.finalize(self, _shut_down, loop, thread)
            if threading.current_thread() is self._thread:
                raise RuntimeError(
                    f"{self.name}: a sync call from inside its own event loop would "
                    "deadlock; await the async API instead"
                )
            return self._loop

    def _submit(self, coro: Coroutine[Any, Any, T]) -> tuple[concurrent.futures.Future[T], Any]:
        """Start ``coro`` on the loop; its outcome, and a function that cancels it."""
        loop = self._running()
        outcome: concurrent.futures.Future[T] = concurrent.futures.Future()
        tasks: list[asyncio.Task[T]] = []

        def start() -> None:
            task = loop.create_task(coro)
            tasks.append(task)
            task.add_done_callback(lambda t: _settle(t, outcome))

        loop.call_soon_threadsafe(start)
        # Callbacks run in order, so the task exists by the time a cancel reaches the loop.
        return outcome, lambda: loop.call_soon_threadsafe(lambda: tasks[0].cancel())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and return its result.  An interrupted caller (Ctrl-C) cancels
        it and waits for its clean-up, so a runtime call it had in flight is aborted."""
        outcome, cancel = self._submit(coro)
        try:
            return outcome.result()
        except BaseException:
            if not outcome.done():
                cancel()
                _wait(outcome)
            raise

    def iterate(self, items: AsyncGenerator[T, None]) -> Iterator[T]:
        """The items of ``items`` as the caller takes them: the generator waits on the loop while
        the caller holds an item.  Closing the iterator early closes the generator there (its
        ``finally`` clauses run, and this waits for them)."""
        box: queue.SimpleQueue[Any] = queue.SimpleQueue()
        taken: list[asyncio.Queue[None]] = []  # the caller's "next, please", made on the loop

        async def pump() -> None:
            taken.append(asyncio.Queue())
            try:
                async for item in items:
                    box.put(item)
                    await taken[0].get()
            finally:
                await items.aclose()

        loop = self._running()
        outcome, cancel = self._submit(pump())
        outcome.add_done_callback(lambda _: box.put(_DONE))
        try:
            while (item := box.get()) is not _DONE:
                yield item
                loop.call_soon_threadsafe(taken[0].put_nowait, None)
            outcome.result()  # raises what the generator raised
        finally:
            if not outcome.done():
                cancel()
                _wait(outcome)

    def close(self) -> None:
        """Stop the loop (after the calls in flight); a later call starts a new one."""
        with self._lock:
            stop, self._loop, self._thread, self._stop = self._stop, None, None, None
        if stop is not None:
            stop()


def _settle(task: asyncio.Task[T], outcome: concurrent.futures.Future[T]) -> None:
    if task.cancelled():
        outcome.set_exception(asyncio.CancelledError())
    elif (e := task.exception()) is not None:
        outcome.set_exception(e)
    else:
        outcome.set_result(task.result())


def _wait(outcome: concurrent.futures.Future[Any]) -> None:
    try:
        outcome.exception(timeout=CLEANUP_S)
    except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
        pass


def _shut_down(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    if loop.is_closed():
        return
    loop.call_soon_threadsafe(loop.stop)
    if thread is not threading.current_thread():
        thread.join(timeout=CLEANUP_S)
        loop.close()
