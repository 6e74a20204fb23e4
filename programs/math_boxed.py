"""Step-by-step math with RelayGen reasoning and a \\boxed{} answer.

python -m programs.math_boxed --question "What is 12 + 30?"
"""

from __future__ import annotations

import argparse
import json

import sglang as sgl

from programs._common import add_runtime_args, boxed_answer, relay_backend
from relaygen_sgl import relay_gen

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


@sgl.function
def solve_math(s, question: str):
    s += sgl.user(f"{question}\n{INSTRUCTION}")
    s += sgl.assistant_begin()
    result = relay_gen(s, "solution")
    s += sgl.assistant_end()
    s.set_var("answer", boxed_answer(result.answer or result.text))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--question", required=True, help="the math problem")
    add_runtime_args(p)
    args = p.parse_args(argv)
    with relay_backend(args):
        state = solve_math.run(question=args.question)
        print(state["solution"])
        print(json.dumps({"answer": state["answer"], "stats": _short(state.get_meta_info("solution"))}))
    return 0


def _short(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if k != "calls"}


if __name__ == "__main__":
    raise SystemExit(main())
