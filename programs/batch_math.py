"""Batch math through ``run_batch`` (threads, progress bar), one JSON line per problem; every
``sgl.gen`` of every program is relayed by the backend.

python -m programs.batch_math --problems problems.jsonl --num-threads 8
(each line: {"problem": "...", "answer": "..."}; "answer" is optional)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from programs._common import add_runtime_args, relay_backend, relay_summary, run_defaults
from programs.math_boxed import solve_math
from relaygen_sgl.problem_sets.fields import last_boxed as boxed_answer

DEMO = [
    {"problem": "What is 12 + 30?", "answer": "42"},
    {"problem": "What is 7 + 8?", "answer": "15"},
    {"problem": "What is 21 + 21?", "answer": "42"},
]


def load_problems(path: str | None) -> list[dict]:
    if path is None:
        return DEMO
    rows = []
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row, dict) or "problem" not in row:
            raise SystemExit(f"{path}:{i}: each line needs a 'problem' field")
        rows.append(row)
    if not rows:
        raise SystemExit(f"{path}: no problems")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--problems", help="JSONL file (default: three built-in sums)")
    p.add_argument("--num-threads", type=int, default=4)
    add_runtime_args(p)
    args = p.parse_args(argv)
    problems = load_problems(args.problems)
    with relay_backend(args) as backend:
        states = solve_math.run_batch(
            [{"question": row["problem"]} for row in problems],
            backend=backend,
            num_threads=args.num_threads,
            progress_bar=True,
            **run_defaults(args),
        )
        failed = 0
        for row, state in zip(problems, states, strict=True):
            if state.error() is not None:
                failed += 1
                print(json.dumps({"problem": row["problem"], "error": str(state.error())}))
                continue
            stats = relay_summary(state.get_meta_info("solution"))
            print(
                json.dumps(
                    {
                        "problem": row["problem"],
                        "answer": boxed_answer(state["solution"]),
                        "expected": row.get("answer"),
                        "large_utilization": stats["large_utilization"],
                        "switches": stats["switches"],
                    }
                )
            )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
