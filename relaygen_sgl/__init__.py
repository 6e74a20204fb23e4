"""relaygen-sgl: RelayGen intra-generation model switching on SGLang runtimes."""

__version__ = "0.1.0"
