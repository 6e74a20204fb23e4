"""Shared fixtures: tiny models built here, real SGLang servers on CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from relaygen_sgl.runtimes import RuntimePair
from relaygen_sgl.tiny_models import TinyPair, build_tiny_pair

# Tiny models take ~1 min to build; keep them between runs unless told not to.
TINY_DIR = Path(os.environ.get("RELAYGEN_TINY_DIR", Path.home() / ".cache" / "relaygen" / "tiny"))


@pytest.fixture(scope="session")
def tiny_pair() -> TinyPair:
    return build_tiny_pair(TINY_DIR)


@pytest.fixture(scope="session")
def runtimes(tiny_pair: TinyPair, tmp_path_factory: pytest.TempPathFactory):
    """Two real SGLang servers (large + small) shared by the whole session."""
    pair = RuntimePair(
        tiny_pair.large,
        tiny_pair.small,
        max_total_tokens=8192,
        log_dir=tmp_path_factory.mktemp("sglang-logs"),
    )
    with pair:
        yield pair
