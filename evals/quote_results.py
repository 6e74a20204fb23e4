"""Keep the result tables in README.md and docs/ the committed result files, word for word.

A quoted block sits between two markers; the opening one names the file (from the repository
root) and, optionally, which of its markdown tables to take (1-based; default: the whole file)::

    <!-- quote: evals/results/<pair>/gsm8k100/frontier.md table=1 -->
    ...rewritten from the file...
    <!-- /quote -->

``python -m evals.quote_results`` rewrites every block; ``--check`` changes nothing and fails
naming each block that differs from its file (the test suite runs it).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(
    r"(?P<open><!-- quote: (?P<path>\S+)(?: table=(?P<table>\d+))? -->\n)"
    r"(?P<body>.*?)(?P<close><!-- /quote -->)",
    re.S,
)


class QuoteError(ValueError):
    """A marker names a file or a table that is not there."""


@dataclass(frozen=True)
class Quote:
    doc: Path
    line: int
    source: str
    table: int | None
    body: str


def tables(text: str) -> list[str]:
    """The markdown tables of ``text`` (runs of lines starting with ``|``), each with its newline."""
    found, current = [], []
    for line in text.splitlines(keepends=True):
        if line.startswith("|"):
            current.append(line)
        elif current:
            found.append("".join(current))
            current = []
    if current:
        found.append("".join(current))
    return found


def quoted(source: str, table: int | None, root: Path = REPO) -> str:
    """What a block quoting ``source`` (its ``table``-th table, or all of it) holds."""
    path = root / source
    if not path.is_file():
        raise QuoteError(f"{source}: no such file")
    text = path.read_text()
    if table is None:
        return text if text.endswith("\n") else text + "\n"
    found = tables(text)
    if not 1 <= table <= len(found):
        raise QuoteError(f"{source} has {len(found)} table(s), not a table {table}")
    return found[table - 1]


def quotes(doc: Path) -> list[Quote]:
    text = doc.read_text()
    return [
        Quote(
            doc,
            text.count("\n", 0, m.start()) + 1,
            m["path"],
            int(m["table"]) if m["table"] else None,
            m["body"],
        )
        for m in BLOCK.finditer(text)
    ]


def refresh(doc: Path, root: Path = REPO) -> bool:
    """Rewrite ``doc``'s blocks from their files; True when anything changed."""
    text = doc.read_text()

    def fill(m: re.Match[str]) -> str:
        table = int(m["table"]) if m["table"] else None
        return m["open"] + quoted(m["path"], table, root) + m["close"]

    new = BLOCK.sub(fill, text)
    if new != text:
        doc.write_text(new)
    return new != text


def documents(root: Path = REPO) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("**/*.md"))]


def stale(root: Path = REPO) -> list[str]:
    """Every block that differs from its file, as ``doc:line: source``."""
    out = []
    for doc in documents(root):
        for q in quotes(doc):
            if q.body != quoted(q.source, q.table, root):
                where = f"{doc.relative_to(root)}:{q.line}"
                out.append(f"{where}: {q.source} has changed; run python -m evals.quote_results")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--check", action="store_true", help="change nothing; fail if a block differs from its file"
    )
    args = p.parse_args(argv)
    try:
        if args.check:
            problems = stale()
            for line in problems:
                print(line, file=sys.stderr)
            return 1 if problems else 0
        for doc in documents():
            if refresh(doc):
                print(f"updated {doc.relative_to(REPO)}")
    except QuoteError as e:
        print(f"quote_results: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
