"""The relay: a sans-I/O state machine (:mod:`.machine`), the async driver that runs it over
HTTP (:mod:`.drivers`, over an :class:`AsyncRelayPair`), and their sync face (:mod:`.sync`)."""

from relaygen_sgl.reasoning import THINK_END
from relaygen_sgl.relay.drivers import new_request_id, prepare, relay_generate_async, run, stream
from relaygen_sgl.relay.machine import Call, RelayMachine, TurnResult
from relaygen_sgl.relay.pair import AsyncRelayPair
from relaygen_sgl.relay.prompts import RenderedPrompt
from relaygen_sgl.relay.sync import RelayPair, relay_generate
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
    roles_used,
)

__all__ = [
    "MODES",
    "THINK_END",
    "AsyncRelayPair",
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
    "new_request_id",
    "prepare",
    "relay_generate",
    "relay_generate_async",
    "run",
    "roles_used",
    "stream",
]
