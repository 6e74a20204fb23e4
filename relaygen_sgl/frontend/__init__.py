"""RelayGen for SGLang frontend programs: a ``BaseBackend`` that relays every ``sgl.gen``."""

from relaygen_sgl.frontend.backend import RelayBackend, single_model

__all__ = ["RelayBackend", "single_model"]
