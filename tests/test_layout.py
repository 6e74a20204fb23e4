"""The library stands alone: it imports nothing from the repository's evals/, programs/ or tests/
(so ``relaygen demo`` and the rest work from any directory), and only tests, benches and its own
testing subpackage import ``relaygen_sgl.testing``."""

from __future__ import annotations

import ast
from pathlib import Path

LIBRARY = Path(__file__).resolve().parents[1] / "relaygen_sgl"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _modules() -> list[Path]:
    return sorted(p for p in LIBRARY.rglob("*.py") if "_sglang_cpu_shims" not in p.parts)


def test_the_library_imports_no_repository_folder():
    offending = {
        str(p.relative_to(LIBRARY)): sorted(
            n for n in _imports(p) if n.split(".")[0] in ("evals", "programs", "tests")
        )
        for p in _modules()
    }
    assert {k: v for k, v in offending.items() if v} == {}


def test_only_the_testing_subpackage_imports_itself():
    users = [
        str(p.relative_to(LIBRARY))
        for p in _modules()
        if "testing" not in p.relative_to(LIBRARY).parts
        and any(n == "relaygen_sgl.testing" or n.startswith("relaygen_sgl.testing.") for n in _imports(p))
    ]
    assert users == []


def test_the_demo_is_a_library_module():
    from relaygen_sgl.cli import build_parser

    args = build_parser().parse_args(["demo", "--problems", "1", "--color", "never"])
    assert args.func.__module__ == "relaygen_sgl.demo" and args.problems == 1
