"""Calibration inputs: the calibration set and the candidate cue lists."""

from __future__ import annotations

from pathlib import Path

from relaygen_sgl.jsonl import JsonlError, numbered_records

_DATA = Path(__file__).resolve().parent.parent / "data"
CANDIDATE_CUES = _DATA / "candidate_cues.txt"  # the reference implementation's 91 candidates
# Bundled candidate lists, selectable by name with --cues-file.
CUE_LISTS = {"paper": CANDIDATE_CUES, "compact": _DATA / "candidate_cues_compact.txt"}


class CalibrationInputError(ValueError):
    """The calibration set or cue list is unusable; the message says where."""


def load_problems(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise CalibrationInputError(f"{path}: calibration set not found")
    problems = []
    try:
        rows = list(numbered_records(path.read_text(), str(path)))
    except JsonlError as e:
        raise CalibrationInputError(str(e)) from e
    for i, row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("problem"), str):
            raise CalibrationInputError(f"{path}:{i}: each line needs a string 'problem' field")
        problems.append(row["problem"])
    if not problems:
        raise CalibrationInputError(f"{path}: the calibration set is empty")
    return problems


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
