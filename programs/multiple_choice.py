"""Multiple choice: the reasoning is relayed, then ``sgl.select`` picks the letter on the large model.

python -m programs.multiple_choice --question "Which is prime?" --choices 4 6 7 9
"""

from __future__ import annotations

import argparse
import json
import string

import sglang as sgl

from programs._common import add_runtime_args, relay_backend, relay_summary, run_defaults


@sgl.function
def answer_choice(s, question: str, choices: list[str]):
    letters = list(string.ascii_uppercase[: len(choices)])
    options = "\n".join(f"({letter}) {c}" for letter, c in zip(letters, choices, strict=True))
    s += sgl.user(question + "\n" + options + "\nThink it through, then answer with one letter.")
    s += sgl.assistant_begin()
    s += sgl.gen("reasoning")
    s += "\nFinal answer: (" + sgl.select("choice", choices=letters) + ")"
    s += sgl.assistant_end()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--question", required=True)
    p.add_argument("--choices", nargs="+", required=True, help="two or more options")
    add_runtime_args(p)
    args = p.parse_args(argv)
    if len(args.choices) < 2:
        p.error("--choices needs at least two options")
    with relay_backend(args) as backend:
        state = answer_choice.run(
            question=args.question, choices=args.choices, backend=backend, **run_defaults(args)
        )
        if state.error() is not None:
            raise SystemExit(f"error: {state.error()}")
        print(state["reasoning"])
        stats = relay_summary(state.get_meta_info("reasoning"))
        print(json.dumps({"choice": state["choice"], "stats": stats}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
