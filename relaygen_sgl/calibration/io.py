"""Calibration inputs: the calibration set and the candidate cue lists."""

from __future__ import annotations

from pathlib import Path

from relaygen_sgl.problem_sets import DatasetError
from relaygen_sgl.problem_sets import load_problems as load_set
from relaygen_sgl.problem_sets.sources import file_kind

_DATA = Path(__file__).resolve().parent.parent / "data"
CANDIDATE_CUES = _DATA / "candidate_cues.txt"  # the reference implementation's 91 candidates
# Bundled candidate lists, selectable by name with --cues-file.
CUE_LISTS = {"paper": CANDIDATE_CUES, "compact": _DATA / "candidate_cues_compact.txt"}


class CalibrationInputError(DatasetError):
    """The calibration set or cue list is unusable; the message says where."""


def load_problems(
    spec: str | Path, *, split: str | None = None, question_field: str | None = None
) -> list[str]:
    """The calibration prompts of a set: any specifier the evals take (a JSONL file of
    ``{"problem": ...}`` lines as before, a hub set, parquet/CSV/JSON, a saved folder).  Answers
    are not needed; a multiple-choice question comes with its lettered options."""
    spec = str(spec)
    if Path(spec).is_file() and file_kind(spec) is None:
        spec = f"jsonl:{spec}"  # calibration sets were JSONL files by any name
    try:
        problems = load_set(spec, split=split, question_field=question_field, need_answers=False)
    except CalibrationInputError:
        raise
    except DatasetError as e:
        raise CalibrationInputError(str(e)) from e
    return [p.prompt for p in problems]


def cue_list_path(path_or_name: str | Path | None = None) -> Path:
    """A cue list file, or a bundled one by name (``paper``, the default, or ``compact``)."""
    if not path_or_name:
        return CANDIDATE_CUES
    if str(path_or_name) in CUE_LISTS and not Path(path_or_name).exists():
        return CUE_LISTS[str(path_or_name)]
    return Path(path_or_name)


def load_cues(path: str | Path | None = None) -> list[str]:
    path = cue_list_path(path)
    if not path.is_file():
        raise CalibrationInputError(f"{path}: cue list not found")
    cues = [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()]
    cues = list(dict.fromkeys(c for c in cues if c))
    if not cues:
        raise CalibrationInputError(f"{path}: no cues in the list")
    return cues
