"""The one JSONL reader: inputs (datasets, calibration sets) and resumable outputs alike.

Inputs are read ``strict``: a bad line is an error naming ``file:line``.  Outputs that a run
appends to are read leniently: a line cut short by a kill is dropped, and
:func:`repair_jsonl` rewrites the file so the next append starts on a clean line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class JsonlError(ValueError):
    """A line of a JSONL input is not valid JSON; the message says where."""


def numbered_records(text: str, source: str = "<jsonl>", *, strict: bool = True) -> Iterator[tuple[int, Any]]:
    """``(line number, record)`` for every non-blank line, so callers can name a bad field's line."""
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield i, json.loads(line)
        except json.JSONDecodeError as e:
            if strict:
                raise JsonlError(f"{source}:{i}: not valid JSON ({e})") from e


def read_jsonl(path: str | Path, *, strict: bool = False) -> list[Any]:
    """All records of ``path`` ([] when it does not exist yet)."""
    path = Path(path)
    if not path.exists():
        return []
    return [r for _, r in numbered_records(path.read_text(), str(path), strict=strict)]


def repair_jsonl(path: str | Path) -> list[Any]:
    """Rewrite ``path`` with its complete records so appends start on a clean line; a file with
    nothing to repair is left as it is (the same file, untouched), so calling this on a file
    another process still appends to loses none of its later records."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text()
    rows = [r for _, r in numbered_records(text, str(path), strict=False)]
    if text and (not text.endswith("\n") or len(rows) != sum(1 for x in text.splitlines() if x.strip())):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.replace(path)
    return rows
