"""Command-line plumbing shared by the example programs: which runtimes, which profile."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import sglang as sgl

import relaygen_sgl
from relaygen_sgl.pair_args import add_pair_args, open_pair
from relaygen_sgl.profile import CueProfile


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("runtimes (URLs of running servers, or model folders to start)")
    add_pair_args(g)
    g.add_argument(
        "--chat-template", default="chatml", help="SGLang frontend chat template name (default: %(default)s)"
    )
    g.add_argument("--max-tokens", type=int, default=1024, help="output token budget")
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--answer-model", choices=("small", "large"), default="small")
    g.add_argument("--mode", choices=("relay", "large_only", "small_only"), default="relay")  # fmt: skip


@contextmanager
def relay_backend(args: argparse.Namespace) -> Iterator[None]:
    """Point the SGLang frontend at the large runtime and RelayGen at the small one."""
    with ExitStack() as stack:
        large, small = open_pair(args, stack)
        sgl.set_default_backend(sgl.RuntimeEndpoint(large, chat_template_name=args.chat_template))
        relaygen_sgl.configure(
            small=small,
            profile=CueProfile.load(args.profile),
            max_tokens=args.max_tokens,
            answer_model=args.answer_model,
            mode=args.mode,
            sampling={"temperature": args.temperature},
        )
        yield


def boxed_answer(text: str) -> str | None:
    """Content of the last \\boxed{...} (nested braces allowed)."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip()
    return None


def last_choice_letter(text: str, letters: str) -> str | None:
    hits = re.findall(rf"\b([{letters}])\b", text)
    return hits[-1] if hits else None
