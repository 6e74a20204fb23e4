"""Where the default offline model pair lives, and its cue profile's name.

The default pair is one family with one tokenizer, as the paper's pairs are, so the context
crosses between the models as token ids: Qwen2.5-Coder-1.5B-Instruct writes the reasoning and
Qwen2.5-Coder-0.5B-Instruct finishes sentences and answers.  SmolLM2-135M-Instruct (another
family, text handoff) stays installable as ``small="smollm2"`` for comparison.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MODELS_DIR = Path(os.environ.get("RELAYGEN_MODELS_DIR", Path.home() / ".cache" / "relaygen" / "models"))
LARGE_DIR = "qwen2.5-coder-1.5b-instruct"
# small model name -> (folder, bundled profile calibrated for it with the default large model)
SMALL_MODELS = {
    "qwen2.5-coder-0.5b": ("qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b__qwen2.5-coder-0.5b"),
    "smollm2": ("smollm2-135m-instruct", "qwen2.5-coder-1.5b__smollm2-135m"),
}
DEFAULT_SMALL = "qwen2.5-coder-0.5b"
DEFAULT_PROFILE = SMALL_MODELS[DEFAULT_SMALL][1]


@dataclass(frozen=True)
class ModelPair:
    large: Path
    small: Path
    profile: str


def default_pair(models_dir: Path = MODELS_DIR, small: str = DEFAULT_SMALL) -> ModelPair:
    if small not in SMALL_MODELS:
        raise ValueError(f"unknown small model {small!r}: choose {', '.join(SMALL_MODELS)}")
    folder, profile = SMALL_MODELS[small]
    return ModelPair(large=models_dir / LARGE_DIR, small=models_dir / folder, profile=profile)
