"""Every Python block of README.md and docs/**/*.md runs, against the tiny pair where it needs servers.

The conventions for those blocks:

* A block runs on its own, in a fresh interpreter, from a scratch folder; it passes when it
  exits 0.
* These literals stand for the test's resources and are replaced before the block runs:
  ``http://127.0.0.1:30000`` (a large runtime) and ``http://127.0.0.1:30001`` (a small one), both
  the session's tiny runtimes; ``"models/large"`` and ``"models/small"``, the tiny model folders;
  ``"profile.json"``, the tiny pair's cue profile saved to a file; ``http://127.0.0.1:8000``, a
  relay server (``relaygen serve``) in front of the tiny runtimes.  Bundled profiles load as they
  are: a profile is a list of cues, and the tiny models run with any.
* ``<!-- test: skip (why) -->`` on the line before a block's opening fence keeps it from running
  (a block that needs GPUs, starts a fleet of servers, or is a fragment of a larger program);
  the reason is required and is reported.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("**/*.md"))]
LARGE_URL, SMALL_URL = "http://127.0.0.1:30000", "http://127.0.0.1:30001"
RELAY_URL = "http://127.0.0.1:8000"
SKIP = re.compile(r"^\s*<!--\s*test:\s*skip\s*\((?P<why>.*\S.*)\)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>\S*)\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    code: str
    skip: str | None  # the reason, when marked not to run

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def python_blocks(path: Path) -> list[Block]:
    """The ```python blocks of one Markdown file, dedented to their fence."""
    lines = path.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m or not m["lang"]:
            i += 1
            continue
        start, indent, body = i, len(m["indent"]), []
        i += 1
        while i < len(lines) and not FENCE.match(lines[i]):
            body.append(lines[i][indent:])
            i += 1
        i += 1  # the closing fence
        if m["lang"] == "python":
            before = next((x for x in reversed(lines[:start]) if x.strip()), "")
            skip = SKIP.match(before)
            blocks.append(Block(path, start + 1, "\n".join(body) + "\n", skip["why"] if skip else None))
    return blocks


BLOCKS = [b for path in DOCS for b in python_blocks(path)]


def test_the_docs_have_python_blocks_and_every_skip_marker_is_on_one():
    assert len(BLOCKS) >= 3
    for path in DOCS:
        lines = path.read_text().splitlines()
        marked = [n for n, x in enumerate(lines) if SKIP.match(x) or "test: skip" in x]
        for n in marked:
            assert SKIP.match(lines[n]), f"{path.name}:{n + 1}: write it <!-- test: skip (reason) -->"
            following = next((x for x in lines[n + 1 :] if x.strip()), "")
            assert following.strip() == "```python", f"{path.name}:{n + 1}: no python block follows"


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_python_block_runs(block: Block, request: pytest.FixtureRequest, tmp_path: Path):
    if block.skip:
        pytest.skip(f"marked not to run: {block.skip}")
    code = block.code
    if LARGE_URL in code or SMALL_URL in code:
        runtimes = request.getfixturevalue("runtimes")
        code = code.replace(LARGE_URL, runtimes.large.url).replace(SMALL_URL, runtimes.small.url)
    if RELAY_URL in code:
        code = code.replace(RELAY_URL, request.getfixturevalue("shared_relay_server")[1])
    if '"models/large"' in code or '"models/small"' in code:
        tiny = request.getfixturevalue("tiny_pair")
        for name, folder in (('"models/large"', tiny.large), ('"models/small"', tiny.small)):
            code = code.replace(name, repr(str(folder)))
    if '"profile.json"' in code:
        saved = request.getfixturevalue("tiny_profile").save(tmp_path / "profile.json")
        code = code.replace('"profile.json"', repr(str(saved)))
    # This checkout's package, whatever the venv's editable install points at.
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, f"{block.id} failed:\n{code}\n--- stderr ---\n{run.stderr[-4000:]}"
