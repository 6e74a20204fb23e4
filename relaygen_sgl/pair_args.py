"""The command-line options every entry point shares: which two runtimes, how to start them,
which profile.  ``serve-runtimes``, ``serve``, ``calibrate``, ``demo``, the evals and the
benchmarks all take the same flags, parsed here once."""

from __future__ import annotations

import argparse
import logging
import shlex
from collections.abc import Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from relaygen_sgl.default_pair import default_pair
from relaygen_sgl.launch_options import DEVICES, SPECULATIVE_ALGORITHMS, Speculative
from relaygen_sgl.profile import CueProfile

if TYPE_CHECKING:
    from relaygen_sgl.runtime.pool import RuntimePair
    from relaygen_sgl.runtime.server import SGLangRuntime

ROLES = ("large", "small")
logger = logging.getLogger(__name__)


def _replicas(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"needs at least one replica, got {value}")
    return n


def add_runtime_args(p: argparse.ArgumentParser | Any) -> None:
    """How runtimes are started: device, dtype, KV size, per-runtime SGLang args, speculation."""
    g = p.add_argument_group("starting runtimes")
    g.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="auto: CUDA when torch sees a GPU, else CPU (default: %(default)s)",
    )
    g.add_argument(
        "--dtype",
        default=None,
        help="model dtype for both runtimes (default: bfloat16 on CPU, SGLang's auto on CUDA)",
    )
    g.add_argument(
        "--max-total-tokens",
        type=int,
        default=None,
        help="KV-cache token cap per runtime (default: 16384 on CPU; on CUDA SGLang "
        "sizes it from --mem-fraction-static)",
    )
    g.add_argument(
        "--large-sglang-args",
        default="",
        metavar="ARGS",
        help="extra sglang.launch_server arguments for the large runtime, passed verbatim "
        '(e.g. "--tp 2 --context-length 40960")',
    )
    g.add_argument(
        "--small-sglang-args",
        default="",
        metavar="ARGS",
        help="extra sglang.launch_server arguments for the small runtime, passed verbatim "
        '(e.g. "--mem-fraction-static 0.2")',
    )
    g.add_argument(
        "--speculative",
        choices=sorted(SPECULATIVE_ALGORITHMS),
        default=None,
        help="speculative decoding on the large runtime: eagle3/eagle (draft head), "
        "standalone (any small draft model), ngram (no draft)",
    )
    g.add_argument(
        "--speculative-draft",
        default=None,
        metavar="PATH",
        help="draft model folder or hub id (e.g. RedHatAI/Qwen3-32B-speculator.eagle3)",
    )
    g.add_argument("--speculative-num-steps", type=int, default=None)
    g.add_argument("--speculative-eagle-topk", type=int, default=None)
    g.add_argument("--speculative-num-draft-tokens", type=int, default=None)
    g.add_argument(
        "--large-replicas",
        type=_replicas,
        default=1,
        metavar="N",
        help="SGLang workers for the large model; more than one get an sglang-router in front, "
        "and each relay request stays on one of them (default: %(default)s)",
    )
    g.add_argument(
        "--small-replicas",
        type=_replicas,
        default=1,
        metavar="M",
        help="the same for the small model (default: %(default)s)",
    )
    g.add_argument("--log-dir", default=None, help="where SGLang server logs go (default: a temp dir)")
    g.add_argument(
        "--startup-timeout",
        type=float,
        default=600.0,
        help="seconds to wait for each server to become healthy (default: %(default)s)",
    )


def add_pair_args(p: argparse.ArgumentParser | Any, *, models_default: bool = True) -> None:
    """--large-url/--small-url for running servers, else --large-model/--small-model to start."""
    pair = default_pair()
    p.add_argument("--large-url", help="URL of a running SGLang server for the large model")
    p.add_argument("--small-url", help="URL of a running SGLang server for the small model")
    p.add_argument(
        "--large-model",
        default=str(pair.large) if models_default else None,
        help="HF folder of the large model, started if no URL (default: %(default)s)",
    )
    p.add_argument(
        "--small-model",
        default=str(pair.small) if models_default else None,
        help="HF folder of the small model, started if no URL (default: %(default)s)",
    )
    p.add_argument(
        "--profile", default=pair.profile, help="cue profile file or bundled name (default: %(default)s)"
    )
    p.add_argument(
        "--top-cues",
        type=int,
        default=None,
        metavar="K",
        help="switch on the profile's best K cues instead of its kept set: K above the kept "
        "set means more switches (faster, riskier), below it fewer (default: the kept set)",
    )
    add_runtime_args(p)


def profile_from_args(args: argparse.Namespace) -> CueProfile:
    """``--profile``, narrowed or widened to ``--top-cues`` when given; a bad value is a ProfileError."""
    profile = CueProfile.load(args.profile)
    k = getattr(args, "top_cues", None)
    return profile if k is None else profile.top_cues(k)


def speculative_from_args(args: argparse.Namespace) -> Speculative | None:
    if not getattr(args, "speculative", None):
        return None
    return Speculative(
        args.speculative,
        args.speculative_draft,
        args.speculative_num_steps,
        args.speculative_eagle_topk,
        args.speculative_num_draft_tokens,
    )


def runtime_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for :class:`~relaygen_sgl.runtime.pool.RuntimePair` from the shared flags."""
    return {
        "device": args.device,
        "dtype": args.dtype,
        "max_total_tokens": args.max_total_tokens,
        "log_dir": args.log_dir,
        "startup_timeout": args.startup_timeout,
        "large_args": shlex.split(args.large_sglang_args or ""),
        "small_args": shlex.split(args.small_sglang_args or ""),
        "speculative": speculative_from_args(args),
    }


def pair_from_args(args: argparse.Namespace, large: Any = None, small: Any = None) -> RuntimePair:
    """The two pools to start: ``--large-replicas``/``--small-replicas`` workers each (one by default)."""
    from relaygen_sgl.runtime.pool import RuntimePair

    return RuntimePair(
        large or args.large_model,
        small or args.small_model,
        large_replicas=getattr(args, "large_replicas", 1),
        small_replicas=getattr(args, "small_replicas", 1),
        **runtime_kwargs(args),
    )


def runtime_from_args(args: argparse.Namespace, role: str, model: Any = None) -> SGLangRuntime:
    """One :class:`~relaygen_sgl.runtime.server.SGLangRuntime` of the pair, for a command that needs
    only one started (``calibrate --traces`` scores with the small model alone)."""
    from relaygen_sgl.runtime.server import SGLangRuntime

    kw = runtime_kwargs(args)
    own = kw.pop(f"{role}_args")
    kw.pop("small_args" if role == "large" else "large_args")
    speculative = kw.pop("speculative")
    return SGLangRuntime(
        model or getattr(args, f"{role}_model"),
        name=role,
        sglang_args=own,
        speculative=speculative if role == "large" else None,
        **kw,
    )


def open_runtimes(
    args: argparse.Namespace, stack: ExitStack, roles: Sequence[str] = ROLES
) -> dict[str, str | None]:
    """Each of ``roles``' URL: ``--ROLE-url``, else ``--ROLE-model`` started (stopped when
    ``stack`` closes), else None.  Two to start are started as a pair (at once, sharing a GPU
    fairly)."""
    urls: dict[str, str | None] = {r: getattr(args, f"{r}_url", None) for r in roles}
    start = [r for r in roles if not urls[r] and getattr(args, f"{r}_model", None)]
    if len(start) == 2:
        pair = stack.enter_context(pair_from_args(args))
        return {"large": pair.large.url, "small": pair.small.url}
    for role in start:
        urls[role] = stack.enter_context(runtime_from_args(args, role)).url
    return urls


def open_pair(
    args: argparse.Namespace, stack: ExitStack, profile: CueProfile | None = None
) -> tuple[str, str]:
    """URLs of the two runtimes; starts those without a URL (stopped when ``stack`` closes).
    With ``profile``, warns when the runtimes serve other models than it was calibrated for."""
    urls = open_runtimes(args, stack)
    missing = [r for r in ROLES if urls[r] is None]
    if missing:
        raise ValueError(f"give --{missing[0]}-url or --{missing[0]}-model")
    if profile is not None:
        warn_on_mismatch(profile, urls["large"], urls["small"])  # type: ignore[arg-type]
    return urls["large"], urls["small"]  # type: ignore[return-value]


def warn_on_mismatch(profile: CueProfile, large_url: str, small_url: str) -> str | None:
    """Log (and return) a warning naming both sides when the runtimes' models are not the profile's."""
    from relaygen_sgl.runtime.client import RuntimeClient

    paths = []
    for url in (large_url, small_url):
        client = RuntimeClient(url)
        try:
            paths.append(str(client.model_info.get("model_path", "")))
        except RuntimeError:
            return None  # nothing to compare; the run itself will say the runtime is down
        finally:
            client.close()
    warning = profile.pair_mismatch(*paths)
    if warning:
        logger.warning("%s", warning)
    return warning
