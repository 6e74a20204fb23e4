"""Step-by-step math with a \\boxed{} answer: a plain SGLang program, relayed by the backend.

python -m programs.math_boxed --question "What is 12 + 30?"
"""

from __future__ import annotations

import argparse
import json

import sglang as sgl

from programs._common import add_runtime_args, relay_backend, relay_summary, run_defaults
from relaygen_sgl.problem_sets.fields import last_boxed as boxed_answer

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


@sgl.function
def solve_math(s, question: str):
    s += sgl.user(question + "\n" + INSTRUCTION)
    s += sgl.assistant(sgl.gen("solution"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--question", required=True, help="the math problem")
    add_runtime_args(p)
    args = p.parse_args(argv)
    with relay_backend(args) as backend:
        state = solve_math.run(question=args.question, backend=backend, **run_defaults(args))
        if state.error() is not None:
            raise SystemExit(f"error: {state.error()}")
        print(state["solution"])
        stats = relay_summary(state.get_meta_info("solution"))
        print(json.dumps({"answer": boxed_answer(state["solution"]), "stats": stats}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
