"""relaygen-sgl: RelayGen intra-generation model switching on SGLang runtimes."""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"

from relaygen_sgl.profile import CueProfile, ProfileError
from relaygen_sgl.relay import (
    AsyncRelayPair,
    RelayConfig,
    RelayError,
    RelayPair,
    RelayResult,
    RelayStats,
    relay_generate,
    relay_generate_async,
)

# The frontend backend imports SGLang's frontend (seconds); only those who use it pay for that.
_FRONTEND = ("RelayBackend", "single_model")


def __getattr__(name: str) -> Any:
    if name in _FRONTEND:
        from relaygen_sgl import frontend

        return getattr(frontend, name)
    raise AttributeError(f"module 'relaygen_sgl' has no attribute {name!r}")


__all__ = [
    "AsyncRelayPair",
    "CueProfile",
    "ProfileError",
    "RelayBackend",
    "RelayConfig",
    "RelayError",
    "RelayPair",
    "RelayResult",
    "RelayStats",
    "relay_generate",
    "relay_generate_async",
    "single_model",
]
