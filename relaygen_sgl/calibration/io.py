"""Calibration inputs and resumable JSONL outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise CalibrationInputError(f"{path}:{i}: not valid JSON ({e})") from e
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


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Complete records only: a line cut short by a kill is dropped (and rewritten later)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def repair_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rewrite ``path`` with its complete records so appends start on a clean line."""
    rows = read_jsonl(path)
    if path.exists():
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.replace(path)
    return rows
