"""The relay: a sans-I/O state machine (:mod:`.machine`) with sync and async drivers."""

from relaygen_sgl.reasoning import THINK_END
from relaygen_sgl.relay.drivers import (
    aprepare,
    new_request_id,
    prepare,
    relay_generate,
    relay_generate_async,
    run_async,
    run_sync,
    stream_async,
)
from relaygen_sgl.relay.machine import Call, RelayMachine, TurnResult
from relaygen_sgl.relay.pair import RelayPair, RenderedPrompt
from relaygen_sgl.relay.types import (
    MODES,
    CallRecord,
    Delta,
    Mode,
    Outcome,
    RelayConfig,
    RelayError,
    RelayResult,
    RelayStats,
    Role,
    Segment,
    runtimes_used,
)

__all__ = [
    "MODES",
    "THINK_END",
    "Call",
    "CallRecord",
    "Delta",
    "Mode",
    "Outcome",
    "RelayConfig",
    "RelayError",
    "RelayMachine",
    "RelayPair",
    "RelayResult",
    "RelayStats",
    "RenderedPrompt",
    "Role",
    "Segment",
    "TurnResult",
    "aprepare",
    "new_request_id",
    "prepare",
    "relay_generate",
    "relay_generate_async",
    "run_async",
    "run_sync",
    "stream_async",
    "runtimes_used",
]
