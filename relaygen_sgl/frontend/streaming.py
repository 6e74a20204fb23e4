"""The relay's token stream as an iterator, for ``BaseBackend.generate_stream``.

The interpreter pulls chunks from a generator, while ``run_sync`` pushes deltas into a callback;
a thread of its own runs the relay and a queue joins the two.  Closing the iterator early makes
the next delta raise inside ``run_sync``, which aborts the runtime call in flight.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from relaygen_sgl.relay import Delta, RelayMachine, RelayPair, RelayResult, run_sync


class _Abandoned(Exception):
    """Nobody reads the stream any more."""


@dataclass(frozen=True)
class _Failed:
    error: BaseException


def stream_relay(m: RelayMachine, pair: RelayPair) -> Iterator[Delta | RelayResult]:
    """Final deltas as they arrive, then the result; a relay error is raised here."""
    items: queue.Queue[Delta | RelayResult | _Failed] = queue.Queue()
    abandoned = threading.Event()

    def on_delta(d: Delta) -> None:
        if abandoned.is_set():
            raise _Abandoned
        items.put(d)

    def work() -> None:
        try:
            items.put(run_sync(m, pair, on_delta))
        except BaseException as e:  # noqa: BLE001 - handed to the reader
            items.put(_Failed(e))

    threading.Thread(target=work, name=f"relay-{m.request_id}", daemon=True).start()
    try:
        while True:
            item = items.get()
            if isinstance(item, _Failed):
                raise item.error
            yield item
            if isinstance(item, RelayResult):
                return
    finally:
        abandoned.set()
