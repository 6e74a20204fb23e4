"""What an SGLang server needs per device, and speculative decoding on the large runtime.

Only the defaults are CPU-tuned: on CUDA, SGLang's own defaults (dtype ``auto``, KV cache
sized from ``--mem-fraction-static``, its watchdog) apply unless the user passes flags.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from relaygen_sgl._sglang_cpu_shims import missing_modules, shim_path

DEVICES = ("auto", "cpu", "cuda")
CPU_MAX_TOTAL_TOKENS = 16384


class LaunchError(ValueError):
    """A runtime cannot be started as configured; raised before any server starts."""


class DeviceError(LaunchError):
    """The requested device is not there."""


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def check_device(device: str, *, probe: bool = True) -> str:
    if device not in DEVICES:
        raise DeviceError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if probe and device == "cuda" and not cuda_available():
        raise DeviceError(
            "--device cuda: torch sees no CUDA device (torch.cuda.is_available() is False); "
            "use --device cpu, or auto to pick CUDA only when there is one"
        )
    return device


def resolve_device(device: str = "auto") -> str:
    """``auto`` becomes ``cuda`` when torch sees a GPU, else ``cpu``."""
    check_device(device, probe=False)
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    return check_device(device)


@dataclass(frozen=True)
class DeviceDefaults:
    dtype: str | None
    max_total_tokens: int | None
    watchdog_timeout_s: float | None


def device_defaults(device: str) -> DeviceDefaults:
    if device == "cpu":
        # bfloat16: the default pair's 1.5B model decodes 1.6x faster single-stream and 3.5x
        # faster at batch 8 than float32 on this AVX2 CPU (evals/bench_dtype.py); SGLang's
        # "auto" would pick float16, which CPUs without half GEMM run far slower.  A CPU
        # forward step over a long batch can exceed SGLang's 300 s watchdog, hence 3600 s.
        return DeviceDefaults("bfloat16", CPU_MAX_TOTAL_TOKENS, 3600.0)
    return DeviceDefaults(None, None, None)


def server_env(device: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment: on CPU, SGLang's CPU engine, one OMP thread and the shims."""
    env = dict(os.environ if base is None else base)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if device != "cpu":
        return env
    env.setdefault("SGLANG_USE_CPU_ENGINE", "1")
    env.setdefault("OMP_NUM_THREADS", "1")  # a second thread per server measured no faster here
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    if missing_modules():
        parts = [shim_path()] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


def _gpu_layout_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("--tp", "--tp-size", dest="tp", type=int, default=1)
    p.add_argument("--dp", "--dp-size", dest="dp", type=int, default=1)
    p.add_argument("--pp", "--pp-size", dest="pp", type=int, default=1)
    p.add_argument("--base-gpu-id", type=int, default=0)
    p.add_argument("--gpu-id-step", type=int, default=1)
    return p


def gpu_ids(sglang_args: Sequence[str]) -> frozenset[int]:
    """The GPU indices a server with these SGLang args occupies (as SGLang assigns them)."""
    ns, _ = _gpu_layout_parser().parse_known_args(list(sglang_args))
    n = ns.tp * ns.dp * ns.pp
    return frozenset(ns.base_gpu_id + i * ns.gpu_id_step for i in range(n))


# Our names -> SGLang's --speculative-algorithm values.  NGRAM needs no draft model.
SPECULATIVE_ALGORITHMS = {"eagle": "EAGLE", "eagle3": "EAGLE3", "standalone": "STANDALONE", "ngram": "NGRAM"}
_NEEDS_DRAFT = {"eagle", "eagle3", "standalone"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class Speculative:
    """Speculative decoding for the large runtime, mapped to SGLang's flags.

    ``standalone`` takes any smaller model of the same tokenizer as the draft (the pair's
    small model works); ``eagle3`` takes an Eagle-3 head such as
    ``RedHatAI/Qwen3-32B-speculator.eagle3``.  Unset step counts keep SGLang's defaults.
    """

    algorithm: str
    draft: str | None = None
    num_steps: int | None = None
    eagle_topk: int | None = None
    num_draft_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.algorithm not in SPECULATIVE_ALGORITHMS:
            raise LaunchError(
                f"unknown speculative algorithm {self.algorithm!r}; "
                f"choose one of {', '.join(SPECULATIVE_ALGORITHMS)}"
            )
        for name in ("num_steps", "eagle_topk", "num_draft_tokens"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise LaunchError(f"speculative {name} must be >= 1, got {v}")

    def check(self, runtime: str) -> None:
        """A missing draft is an error before start, not a server dying in its logs."""
        if self.algorithm not in _NEEDS_DRAFT:
            return
        if not self.draft:
            raise LaunchError(
                f"runtime {runtime!r}: --speculative {self.algorithm} needs --speculative-draft"
            )
        if not os.path.exists(self.draft) and not _HUB_ID.match(self.draft):
            raise LaunchError(
                f"runtime {runtime!r}: speculative draft {self.draft!r} is neither a local folder "
                "nor a model hub id (org/name)"
            )

    def args(self) -> list[str]:
        out = ["--speculative-algorithm", SPECULATIVE_ALGORITHMS[self.algorithm]]
        if self.draft:
            out += ["--speculative-draft-model-path", self.draft]
        for flag, v in (
            ("--speculative-num-steps", self.num_steps),
            ("--speculative-eagle-topk", self.eagle_topk),
            ("--speculative-num-draft-tokens", self.num_draft_tokens),
        ):
            if v is not None:
                out += [flag, str(v)]
        return out
