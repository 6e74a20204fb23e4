"""Command-line plumbing shared by the example programs: which runtimes, which profile, and the
``.run()`` sampling defaults.  The programs themselves are plain SGLang; RelayGen is the backend."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from relaygen_sgl.frontend import RelayBackend
from relaygen_sgl.pair_args import add_pair_args, open_pair, profile_from_args


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("runtimes (URLs of running servers, or model folders to start)")
    add_pair_args(g)
    g.add_argument(
        "--chat-template",
        default="chatml",
        help="SGLang frontend chat template of the large model (default: %(default)s); "
        "the small model gets the same turns in its own HF chat template",
    )
    g.add_argument("--max-tokens", type=int, default=1024, help="output token budget of each gen")
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--answer-model", choices=("small", "large"), default="small")
    g.add_argument("--mode", choices=("relay", "large_only", "small_only"), default="relay")


@contextmanager
def relay_backend(args: argparse.Namespace) -> Iterator[RelayBackend]:
    """The RelayBackend over the two runtimes (started here unless URLs were given)."""
    profile = profile_from_args(args)  # a bad --profile or --top-cues fails before anything starts
    with ExitStack() as stack:
        large, small = open_pair(args, stack, profile)
        backend = RelayBackend(
            large,
            small,
            profile,
            chat_template=args.chat_template,
            mode=args.mode,
            answer_model=args.answer_model,
        )
        stack.callback(backend.shutdown)
        yield backend


def run_defaults(args: argparse.Namespace) -> dict[str, Any]:
    """Sampling defaults for ``program.run(...)`` / ``run_batch(...)``; every gen inherits them."""
    return {"max_new_tokens": args.max_tokens, "temperature": args.temperature}


def relay_summary(meta: dict[str, Any] | None) -> dict[str, Any]:
    """The relay stats of one gen (``s.get_meta_info(name)["relaygen"]``), without per-call detail."""
    return {k: v for k, v in ((meta or {}).get("relaygen") or {}).items() if k != "calls"}
