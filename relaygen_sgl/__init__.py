"""relaygen-sgl: RelayGen intra-generation model switching on SGLang runtimes."""

__version__ = "0.1.0"

from relaygen_sgl.profile import CueProfile, ProfileError
from relaygen_sgl.relay import RelayError, RelayResult, relay_generate
from relaygen_sgl.sgl_program import configure, relay_gen

__all__ = [
    "CueProfile",
    "ProfileError",
    "RelayError",
    "RelayResult",
    "configure",
    "relay_gen",
    "relay_generate",
]
