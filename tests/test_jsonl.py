"""Resumable JSONL outputs: repair only what a kill cut short, and never pull a file from under a
process still appending to it (no servers, milliseconds)."""

from __future__ import annotations

import json
from pathlib import Path

from relaygen_sgl.jsonl import read_jsonl, repair_jsonl


def test_a_clean_file_is_left_as_it_is_and_a_running_appender_loses_nothing(tmp_path: Path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"id": 1}\n{"id": 2}\n')
    inode = path.stat().st_ino
    with path.open("a") as appender:  # another run, still writing
        assert repair_jsonl(path) == [{"id": 1}, {"id": 2}]
        appender.write(json.dumps({"id": 3}) + "\n")
    assert path.stat().st_ino == inode
    assert read_jsonl(path) == [{"id": 1}, {"id": 2}, {"id": 3}]


def test_a_line_cut_short_is_dropped_so_the_next_append_starts_clean(tmp_path: Path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"id": 1}\n{"id": 2}\n{"id": ')
    assert repair_jsonl(path) == [{"id": 1}, {"id": 2}]
    with path.open("a") as f:
        f.write(json.dumps({"id": 3}) + "\n")
    assert read_jsonl(path) == [{"id": 1}, {"id": 2}, {"id": 3}]
    assert repair_jsonl(tmp_path / "missing.jsonl") == []
