"""The command-line options every entry point shares: which two runtimes, which profile."""

from __future__ import annotations

import argparse
from contextlib import ExitStack
from typing import Any

from relaygen_sgl.default_pair import default_pair


def add_pair_args(p: argparse.ArgumentParser | Any) -> None:
    """--large-url/--small-url for running servers, else --large-model/--small-model to start."""
    pair = default_pair()
    p.add_argument("--large-url", help="URL of a running SGLang server for the large model")
    p.add_argument("--small-url", help="URL of a running SGLang server for the small model")
    p.add_argument(
        "--large-model",
        default=str(pair.large),
        help="HF folder of the large model, started if no URL (default: %(default)s)",
    )
    p.add_argument(
        "--small-model",
        default=str(pair.small),
        help="HF folder of the small model, started if no URL (default: %(default)s)",
    )
    p.add_argument("--profile", default=pair.profile,
                   help="cue profile file or bundled name (default: %(default)s)")  # fmt: skip


def open_pair(args: argparse.Namespace, stack: ExitStack) -> tuple[str, str]:
    """URLs of the two runtimes; starts them (stopped when ``stack`` closes) if no URLs were given."""
    if args.large_url and args.small_url:
        return args.large_url, args.small_url
    from relaygen_sgl.runtimes import RuntimePair

    pair = stack.enter_context(RuntimePair(args.large_model, args.small_model))
    return pair.large.url, pair.small.url
