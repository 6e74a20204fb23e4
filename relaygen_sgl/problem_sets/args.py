"""The command-line options every command that loads a set shares."""

from __future__ import annotations

import argparse
from typing import Any

from relaygen_sgl.problem_sets.fields import ANSWER_FIELDS, QUESTION_FIELDS, SOLUTION_FIELD


def add_field_args(p: Any, *, answers: bool = True) -> None:
    """``--split``, ``--question-field`` and (for graded runs) ``--answer-field``, on a parser or group."""
    p.add_argument(
        "--split",
        default=None,
        help="split of a hub set or saved DatasetDict (default: the only one, else test; a preset's own)",
    )
    p.add_argument(
        "--question-field",
        default=None,
        help=f"field holding the question (default: the first of {', '.join(QUESTION_FIELDS)})",
    )
    if answers:
        p.add_argument(
            "--answer-field",
            default=None,
            help=f"field holding the answer (default: the first of {', '.join(ANSWER_FIELDS)}, "
            f"else {SOLUTION_FIELD}'s last \\boxed{{}}); a GPQA-style set is multiple choice, "
            "graded on the letter",
        )


def field_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The :func:`load_problems` keywords the options above gave."""
    kw = {"split": args.split, "question_field": args.question_field}
    if hasattr(args, "answer_field"):
        kw["answer_field"] = args.answer_field
    return kw
