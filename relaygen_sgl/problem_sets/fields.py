"""Rows of any set -> :class:`Problem`: which field holds the question, the answer, the id and,
for a multiple-choice set, the options."""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from relaygen_sgl.problem_sets.problem import LETTERS, DatasetError, Problem

QUESTION_FIELDS = ("problem", "question", "Problem", "Question")
ANSWER_FIELDS = ("answer", "expected_answer", "Answer")
SOLUTION_FIELD = "solution"  # a worked solution (MATH style): its last \boxed{} is the answer
ID_FIELDS = ("id", "unique_id", "problem_idx", "Record ID", "ID")
# GPQA: the right option and the wrong ones, each in its own column.
CORRECT_FIELD = "Correct Answer"
_WRONG_FIELD = re.compile(r"Incorrect Answer \d+")
# MMLU style: one column with the list of options; the answer is a letter, an index or the text.
CHOICE_LIST_FIELDS = ("choices", "options")


@dataclass(frozen=True)
class Fields:
    """The fields named by the user (``--question-field``, ``--answer-field``); None: the defaults."""

    question: str | None = None
    answer: str | None = None


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (nested braces allowed), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip()
    return None


def _text(v: Any) -> str | None:
    """A cell as text; None for a missing or blank one."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)  # CSV and Arrow turn integer answers into floats when a column mixes them
    text = str(v)
    return text if text.strip() else None


def _field(
    columns: Sequence[str], named: str | None, candidates: Iterable[str], flag: str, source: str
) -> str | None:
    if named is None:
        return next((c for c in candidates if c in columns), None)
    if named not in columns:
        raise DatasetError(f"{source}: no field {named!r} ({flag}); the set has: {', '.join(columns)}")
    return named


@dataclass(frozen=True)
class _Layout:
    question: str
    answer: str | None
    from_solution: bool  # answer = the last \boxed{} of a worked solution
    wrong: tuple[str, ...]  # GPQA's wrong-option columns (multiple choice)
    choice_list: str | None  # a column holding the options (multiple choice)


def _layout(
    columns: Sequence[str], fields: Fields, source: str, need_answers: bool, first: Mapping[str, Any] | None
) -> _Layout:
    question = _field(columns, fields.question, QUESTION_FIELDS, "--question-field", source)
    if question is None:
        raise DatasetError(
            f"{source}: no question field (tried {', '.join(QUESTION_FIELDS)}); the set "
            f"has: {', '.join(columns)}; name one with --question-field"
        )
    wrong = tuple(c for c in columns if _WRONG_FIELD.fullmatch(c))
    if CORRECT_FIELD in columns and wrong and fields.answer in (None, CORRECT_FIELD):
        return _Layout(question, CORRECT_FIELD, False, wrong, None)
    choice_list = next(
        (
            c
            for c in CHOICE_LIST_FIELDS
            if c in columns and first is not None and isinstance(first.get(c), list)
        ),
        None,
    )
    answer = _field(columns, fields.answer, ANSWER_FIELDS, "--answer-field", source)
    from_solution = answer is None and fields.answer is None and SOLUTION_FIELD in columns
    if from_solution:
        answer = SOLUTION_FIELD
    if answer is None and need_answers:
        raise DatasetError(
            f"{source}: no answer field (tried {', '.join(ANSWER_FIELDS)}, {SOLUTION_FIELD}'s "
            f"last \\boxed{{}}); the set has: {', '.join(columns)}; name one with "
            "--answer-field"
        )
    return _Layout(question, answer, from_solution, (), choice_list)


def _answer(v: Any, from_solution: bool) -> str | None:
    text = _text(v)
    if text is None:
        return None
    boxed = last_boxed(text) if "\\boxed{" in text else None
    if from_solution:
        return boxed or None  # a solution without a boxed answer gives none
    return boxed or text


def _gpqa(row: Mapping[str, Any], layout: _Layout, pid: str) -> tuple[tuple[str, ...], str | None]:
    """GPQA's options shuffled, the same way on every run (seeded by the id); the answer's letter."""
    correct = _text(row.get(CORRECT_FIELD))
    options = [o.strip() for o in (_text(row.get(c)) for c in layout.wrong) if o]
    if correct is None:
        return tuple(options), None
    options.insert(0, correct.strip())
    rng = random.Random(int.from_bytes(hashlib.sha256(pid.encode()).digest()[:8], "big"))
    order = rng.sample(range(len(options)), len(options))
    return tuple(options[j] for j in order), LETTERS[order.index(0)]


def _listed(row: Mapping[str, Any], layout: _Layout) -> tuple[tuple[str, ...], str | None]:
    """Options from a list column; the answer given as a letter, an index or the option's text."""
    options = tuple(str(o).strip() for o in row.get(layout.choice_list) or ())  # type: ignore[arg-type]
    v = row.get(layout.answer) if layout.answer else None
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(options):
        return options, LETTERS[v]
    text = (_text(v) or "").strip()
    if len(text) == 1 and text.upper() in LETTERS[: len(options)]:
        return options, text.upper()
    return options, LETTERS[options.index(text)] if text in options else None


def to_problems(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    source: str,
    id_prefix: str,
    fields: Fields = Fields(),
    need_answers: bool = True,
    numbers: Sequence[int] | None = None,
    where: str = "{source} row {n}",
) -> list[Problem]:
    """Every row as a :class:`Problem`.  ``numbers``: each row's number for ids and messages
    (default 1, 2, ...; a JSONL file's line numbers); ``where`` formats a row's place."""
    rows = list(rows)
    if not rows:
        raise DatasetError(f"{source}: the set is empty")
    numbers = list(numbers) if numbers is not None else list(range(1, len(rows) + 1))
    layout = _layout(columns, fields, source, need_answers, rows[0])
    id_field = next((c for c in ID_FIELDS if c in columns), None)
    ids = [_text(r.get(id_field)) if id_field else None for r in rows]
    ids = [i if i is not None else f"{id_prefix}-{n}" for i, n in zip(ids, numbers, strict=True)]
    if len(set(ids)) < len(ids):  # results are keyed by id: a repeated one falls back to positions
        ids = [f"{id_prefix}-{n}" for n in numbers]
    out = []
    for row, n, pid in zip(rows, numbers, ids, strict=True):
        question = _text(row.get(layout.question))
        if question is None:
            place = where.format(source=source, n=n)
            raise DatasetError(
                f"{place}: no question in field {layout.question!r} (the set has: {', '.join(columns)})"
            )
        if layout.wrong:
            choices, answer = _gpqa(row, layout, pid)
            question = question.strip()
        elif layout.choice_list:
            choices, answer = _listed(row, layout)
        else:
            choices = ()
            answer = _answer(row.get(layout.answer), layout.from_solution) if layout.answer else None
        out.append(Problem(pid, question, answer, choices))
    return out


def unanswered_note(problems: Sequence[Problem], name: str) -> str | None:
    """The line that reports problems without an answer, or None when every one has one."""
    missing = [p.id for p in problems if p.answer is None]
    if not missing:
        return None
    shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
    return (
        f"{name}: {len(missing)} of {len(problems)} problems have no answer ({shown}); they run and "
        "count in the report, but are not graded"
    )
