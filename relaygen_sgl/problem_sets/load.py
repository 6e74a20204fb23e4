"""The one loader: a set's specifier -> its problems, for the evals, the demo and calibration.

Specifiers: a bundled offline set (``gsm8k``, ``aime24``, ``aime25``, ``aime26``, ``champ``), a
preset for one of the paper's hub sets (``math500``, ``gpqa-diamond``, ``amc23``), ``hf:NAME[:CONFIG]``
(a hub set, or a local folder laid out like one), ``parquet:PATH``, ``json:PATH``, ``jsonl:PATH``,
``csv:PATH``, ``tsv:PATH``, ``disk:PATH`` (a ``save_to_disk`` folder), or a bare path whose suffix
(or saved folder) says which.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from relaygen_sgl.problem_sets.bundled import BUNDLED, bundled_rows
from relaygen_sgl.problem_sets.fields import Fields, to_problems
from relaygen_sgl.problem_sets.problem import DatasetError, Problem
from relaygen_sgl.problem_sets.sources import (
    Rows,
    disk_rows,
    file_kind,
    file_rows,
    hub_rows,
    is_saved_dataset,
)


@dataclass(frozen=True)
class Preset:
    hub: str
    config: str | None
    split: str
    about: str
    hint: str = ""


# The paper's hub sets, as the reference implementation loads them.
PRESETS = {
    "math500": Preset("HuggingFaceH4/MATH-500", None, "test", "MATH-500: 500 MATH test problems"),
    "gpqa-diamond": Preset(
        "Idavidrein/gpqa",
        "gpqa_diamond",
        "train",
        "GPQA-Diamond: 198 multiple-choice science questions",
        "the set is gated: accept its terms on the hub and set HF_TOKEN",
    ),
    "amc23": Preset("math-ai/amc23", None, "test", "AMC 2023: 40 problems"),
}
FILE_PREFIXES = ("parquet", "json", "jsonl", "csv", "tsv")
SPEC_HELP = (
    f"{', '.join(BUNDLED)} (bundled, offline), {', '.join(PRESETS)} (the paper's hub sets), "
    "hf:NAME[:CONFIG], parquet:PATH, json:PATH, jsonl:PATH, csv:PATH, disk:PATH "
    "(a save_to_disk folder), or a path"
)


def _hub(rest: str, split: str | None) -> Rows:
    name, _, config = rest.partition(":")
    if not name:
        raise DatasetError("hf: needs a set name, as in hf:HuggingFaceH4/MATH-500")
    label = f"hf:{rest}"
    return hub_rows(name, config or None, split, label=label, id_prefix=Path(name).name)


def _path(path: str, split: str | None) -> Rows:
    p = Path(path).expanduser()
    if is_saved_dataset(p):
        return disk_rows(p, split, label=path)
    if p.is_dir():
        return hub_rows(str(p), None, split, label=path, id_prefix=p.name)
    kind = file_kind(p)
    if kind is None:
        raise DatasetError(f"unknown dataset {path!r}: choose {SPEC_HELP}")
    return file_rows(kind, p, split, label=path)


def rows_of(spec: str, split: str | None = None) -> tuple[Rows, Fields]:
    """A specifier's rows, and the fields it implies (bundled sets name theirs)."""
    if spec in BUNDLED:
        if split is not None:
            raise DatasetError(f"{spec}: a bundled set has one split; drop --split {split}")
        return Rows(bundled_rows(spec), ["id", "problem", "answer"], spec, spec), Fields("problem", "answer")
    if spec in PRESETS:
        pre = PRESETS[spec]
        label = f"{spec} ({pre.hub}{f':{pre.config}' if pre.config else ''})"
        return hub_rows(
            pre.hub, pre.config, split or pre.split, label=label, id_prefix=spec, hint=pre.hint
        ), Fields()
    prefix, sep, rest = spec.partition(":")
    if sep and prefix == "hf":
        return _hub(rest, split), Fields()
    if sep and prefix in FILE_PREFIXES:
        return file_rows(prefix, rest, split, label=spec), Fields()
    if sep and prefix == "disk":
        return disk_rows(rest, split, label=spec), Fields()
    if Path(spec).expanduser().exists() or file_kind(spec) is not None:
        return _path(spec, split), Fields()
    raise DatasetError(f"unknown dataset {spec!r}: choose {SPEC_HELP}")


def load_problems(
    spec: str,
    *,
    split: str | None = None,
    question_field: str | None = None,
    answer_field: str | None = None,
    limit: int | None = None,
    need_answers: bool = True,
) -> list[Problem]:
    """The first ``limit`` problems of ``spec``.  ``need_answers`` False (calibration): a set
    without an answer field loads too.  Raises :class:`DatasetError`, one line, on bad input."""
    rows, implied = rows_of(spec, split)
    fields = Fields(question_field or implied.question, answer_field or implied.answer)
    problems = to_problems(
        rows.rows,
        rows.columns,
        source=rows.source,
        id_prefix=rows.id_prefix,
        fields=fields,
        need_answers=need_answers,
        numbers=rows.numbers,
        where=rows.where,
    )
    return problems[:limit] if limit else problems
