"""Where the default offline model pair lives, and its cue profile's name."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MODELS_DIR = Path(os.environ.get("RELAYGEN_MODELS_DIR", Path.home() / ".cache" / "relaygen" / "models"))
DEFAULT_PROFILE = "qwen2.5-coder-1.5b__smollm2-135m"


@dataclass(frozen=True)
class ModelPair:
    large: Path
    small: Path
    profile: str


def default_pair(models_dir: Path = MODELS_DIR) -> ModelPair:
    return ModelPair(
        large=models_dir / "qwen2.5-coder-1.5b-instruct",
        small=models_dir / "smollm2-135m-instruct",
        profile=DEFAULT_PROFILE,
    )
