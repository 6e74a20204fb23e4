"""The result tables quoted in README.md and docs/ are their committed files (evals/quote_results.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from evals import quote_results
from evals.quote_results import QuoteError, refresh, stale

RESULT = "| mode | pass@1 |\n|---|---|\n| relay | 0.5 |\n\nnotes\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"


def _repo(tmp_path: Path, readme: str) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("no quotes here\n")
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "summary.md").write_text(RESULT)
    (tmp_path / "README.md").write_text(readme)
    return tmp_path


def test_the_committed_docs_quote_their_files_as_they_are():
    assert stale() == []
    assert any(quote_results.quotes(doc) for doc in quote_results.documents()), "no quoted block at all"


def test_a_block_is_rewritten_from_its_file_and_then_reads_fresh(tmp_path: Path):
    root = _repo(
        tmp_path,
        "# R\n<!-- quote: res/summary.md table=2 -->\nold\n<!-- /quote -->\n"
        "<!-- quote: res/summary.md -->\n<!-- /quote -->\ntail\n",
    )
    assert stale(root) == [
        "README.md:2: res/summary.md has changed; run python -m evals.quote_results",
        "README.md:5: res/summary.md has changed; run python -m evals.quote_results",
    ]
    assert refresh(root / "README.md", root)
    text = (root / "README.md").read_text()
    assert "<!-- quote: res/summary.md table=2 -->\n| a | b |\n|---|---|\n| 1 | 2 |\n<!-- /quote -->" in text
    assert "<!-- quote: res/summary.md -->\n" + RESULT + "<!-- /quote -->\ntail\n" in text
    assert stale(root) == [] and not refresh(root / "README.md", root)


@pytest.mark.parametrize(
    "marker, error",
    [
        ("<!-- quote: res/missing.md -->", "res/missing.md: no such file"),
        ("<!-- quote: res/summary.md table=3 -->", "res/summary.md has 2 table(s), not a table 3"),
    ],
)
def test_a_marker_naming_what_is_not_there_is_a_clear_error_and_changes_nothing(
    tmp_path: Path, marker: str, error: str
):
    readme = f"# R\n{marker}\nkept\n<!-- /quote -->\n"
    root = _repo(tmp_path, readme)
    with pytest.raises(QuoteError, match=error.replace("(", r"\(").replace(")", r"\)")):
        refresh(root / "README.md", root)
    assert (root / "README.md").read_text() == readme
