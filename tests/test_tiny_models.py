"""The tiny pair builds the same way every time (a short recipe stands in for the full one)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from relaygen_sgl.testing.tiny_models import BUILD_VERSION, build_tiny_pair


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_two_builds_are_byte_identical_and_leave_torch_as_it_was(tmp_path: Path):
    threads = torch.get_num_threads()
    a = build_tiny_pair(tmp_path / "a", steps_large=2, steps_small=2)
    b = build_tiny_pair(tmp_path / "b", steps_large=2, steps_small=2)
    assert torch.get_num_threads() == threads and not torch.are_deterministic_algorithms_enabled()
    fa, fb = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert any(name.endswith(".safetensors") for name in fa) and (a.large / "tokenizer.json").exists()
    assert fa.keys() == fb.keys()
    assert [n for n in fa if fa[n] != fb[n]] == []
    stamp = json.loads((tmp_path / "a" / "relaygen-tiny.json").read_text())
    assert stamp == {"version": BUILD_VERSION, "steps_large": 2, "steps_small": 2}
    # The same recipe is reused as it is.
    mtime = (b.large / "model.safetensors").stat().st_mtime_ns
    build_tiny_pair(tmp_path / "b", steps_large=2, steps_small=2)
    assert (b.large / "model.safetensors").stat().st_mtime_ns == mtime
