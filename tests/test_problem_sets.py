"""The one set loader (relaygen_sgl.problem_sets), no servers: sets built on disk in every format
`datasets` reads, field mapping, multiple choice, the hub's cache and offline mode, bad input.
The same sets run through run_eval and calibrate on the tiny pair in test_problem_sets_e2e.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from evals.datasets import load_dataset
from relaygen_sgl.calibration.io import CalibrationInputError
from relaygen_sgl.calibration.io import load_problems as calibration_problems
from relaygen_sgl.grading import grade
from relaygen_sgl.problem_sets import DatasetError, Problem, load_problems, unanswered_note
from relaygen_sgl.runtime.process import free_port

ROOT = Path(__file__).resolve().parent.parent
# A private set under its own column names: no `problem`/`answer`, one row without an answer.
ROWS = [
    {"qid": "s1", "Problem": "What is 12 + 30?", "expected_answer": "42", "level": 1},
    {"qid": "s2", "Problem": "What is 7 + 8?", "expected_answer": "15", "level": 1},
    {"qid": "s3", "Problem": "What is 21 + 21?", "expected_answer": None, "level": 2},
]
GPQA = [
    {
        "Record ID": f"rec{i}",
        "Question": f"Which gas is number {i}?",
        "Correct Answer": f"right {i}",
        "Incorrect Answer 1": f"wrong {i}a",
        "Incorrect Answer 2": f"wrong {i}b",
        "Incorrect Answer 3": f"wrong {i}c",
    }
    for i in range(6)
]


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`datasets` writes its Arrow cache here, not into the user's cache; the hub is a dead port."""
    cache = tmp_path / "hf-datasets"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    return cache


def write_sets(d: Path, rows: list[dict] = ROWS) -> dict[str, Path]:
    """The same rows as parquet, CSV, JSON, JSON Lines and a save_to_disk folder."""
    d.mkdir(parents=True, exist_ok=True)
    ds = datasets.Dataset.from_list(rows)
    paths = {
        "parquet": d / "set.parquet",
        "csv": d / "set.csv",
        "json": d / "set.json",
        "jsonl": d / "set.jsonl",
        "disk": d / "saved",
    }
    ds.to_parquet(paths["parquet"])
    ds.to_csv(paths["csv"], index=False)
    paths["json"].write_text(json.dumps(rows))
    paths["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds.save_to_disk(str(paths["disk"]))
    return paths


def hub_cache(
    cache: Path, repo: str, splits: dict[str, list[dict] | datasets.Dataset], config: str = "default"
) -> None:
    """What `datasets.load_dataset(repo)` leaves in its cache after a download, built from rows here
    (the hub is not reachable): <namespace>___<name>/<config>/<version>/<hash>."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    files = {}
    for split, rows in splits.items():
        files[split] = str(cache.parent / f"{repo.replace('/', '_')}-{split}.parquet")
        ds = rows if isinstance(rows, datasets.Dataset) else datasets.Dataset.from_list(rows)
        ds.to_parquet(files[split])
    work = cache.parent / "hub-build"
    builder = Parquet(
        cache_dir=str(work),
        dataset_name=repo.split("/")[1],
        config_name=config,
        data_files=files,
        hash="0123abcd",
    )
    builder.download_and_prepare()
    namespace, name = repo.split("/")
    dest = cache / f"{namespace}___{name.lower()}" / config / "0.0.0"
    dest.mkdir(parents=True)
    shutil.move(builder.cache_dir, dest / "0123abcd")


# ---- the bundled sets are what they were -----------------------------------------------------


def test_bundled_sets_keep_their_problems():
    gsm = load_dataset("gsm8k")
    assert len(gsm) == 100 and len({p.id for p in gsm}) == 100
    assert (gsm[0].id, gsm[0].answer, gsm[-1].id, gsm[-1].answer) == ("gsm8k-473", "10", "gsm8k-1141", "20")
    assert gsm[0].problem.endswith("?") and gsm[0].choices == ()
    for name, first, last in (("aime24", "73", "721"), ("aime25", "70", "240"), ("aime26", "277", "393")):
        s = load_dataset(name)
        assert [p.id for p in s] == [f"{name}-{i}" for i in range(30)]
        assert (s[0].answer, s[-1].answer) == (first, last)
    champ = load_dataset("champ")
    assert len(champ) == 136 and (champ[0].id, champ[-1].id, champ[-1].answer) == (
        "P_Combinatorics_1",
        "P_Sequence_42",
        "601",
    )
    aime = load_dataset("aime25", limit=1)[0]
    assert aime.messages() == [
        {
            "role": "user",
            "content": aime.problem + "\nPlease reason step by step, "
            "and put your final answer within \\boxed{}.",
        }
    ]


def test_jsonl_files_keep_their_ids_and_answers(tmp_path: Path):
    """jsonl:PATH as before: ids from "id" or the file's stem and line number, answers as text."""
    f = tmp_path / "sums.jsonl"
    f.write_text(
        '{"problem": "What is 12 + 30?", "answer": 42}\n\n'
        '{"problem": "What is 7 + 8?", "answer": "15", "id": "own"}\n'
        '{"problem": "What is 1 + 1?", "answer": 2.5}\n'
    )
    got = [(p.id, p.problem, p.answer) for p in load_dataset(f"jsonl:{f}")]
    assert got == [
        ("sums-1", "What is 12 + 30?", "42"),
        ("own", "What is 7 + 8?", "15"),
        ("sums-4", "What is 1 + 1?", "2.5"),
    ]


# ---- every format, one loader -----------------------------------------------------------------


def test_every_format_loads_the_same_problems(tmp_path: Path):
    paths = write_sets(tmp_path)
    specs = [f"{kind}:{p}" for kind, p in paths.items()] + [str(p) for p in paths.values()]
    loaded = {spec: load_dataset(spec) for spec in specs}
    for spec, problems in loaded.items():
        assert [(p.problem, p.answer) for p in problems] == [
            ("What is 12 + 30?", "42"),
            ("What is 7 + 8?", "15"),
            ("What is 21 + 21?", None),
        ], spec
    # No id field among the defaults: the file's (or folder's) name and the row number.
    assert [p.id for p in loaded[f"parquet:{paths['parquet']}"]] == ["set-1", "set-2", "set-3"]
    assert [p.id for p in loaded[f"disk:{paths['disk']}"]] == ["saved-1", "saved-2", "saved-3"]
    assert unanswered_note(loaded[str(paths["csv"])], "mine") == (
        "mine: 1 of 3 problems have no answer (set-3); they run and count in the report, but are not graded"
    )
    assert len(load_dataset(str(paths["parquet"]), limit=2)) == 2


def test_csv_cells_stay_as_written(tmp_path: Path):
    f = tmp_path / "a.csv"
    f.write_text('question,answer,id\n"Is 0.50 a half, then?",0.50,007\nWhat is 1+1?,2,8\n')
    assert [(p.id, p.problem, p.answer) for p in load_dataset(str(f))] == [
        ("007", "Is 0.50 a half, then?", "0.50"),
        ("8", "What is 1+1?", "2"),
    ]


def test_named_fields_and_solution_answers(tmp_path: Path):
    rows = [
        {"prompt": "What is 2 + 2?", "solution": "2 + 2 = \\boxed{4}.", "gold": "four"},
        {"prompt": "What is 3 + 3?", "solution": "It is 6.", "gold": "six"},
    ]
    paths = write_sets(tmp_path, rows)
    with pytest.raises(DatasetError, match=r"no question field .*the set has: prompt, solution, gold"):
        load_dataset(str(paths["parquet"]))
    # The default answer: the solution's last \boxed{}; a solution without one gives none.
    got = load_dataset(str(paths["parquet"]), question_field="prompt")
    assert [(p.problem, p.answer) for p in got] == [("What is 2 + 2?", "4"), ("What is 3 + 3?", None)]
    named = load_dataset(str(paths["json"]), question_field="prompt", answer_field="gold")
    assert [p.answer for p in named] == ["four", "six"]
    with pytest.raises(DatasetError, match=r"no field 'answers' \(--answer-field\); the set has: prompt, "):
        load_dataset(str(paths["csv"]), question_field="prompt", answer_field="answers")


def test_calibration_takes_the_same_specifiers(tmp_path: Path):
    paths = write_sets(tmp_path)
    for spec in [str(p) for p in paths.values()] + [f"csv:{paths['csv']}", f"disk:{paths['disk']}"]:
        assert calibration_problems(spec) == [r["Problem"] for r in ROWS], spec
    # A calibration set needs no answers; an old calibration file by any name is JSON Lines.
    old = tmp_path / "calibration.txt"
    old.write_text('{"problem": "What is 12 + 30?"}\n{"problem": "What is 2 + 2?"}\n')
    assert calibration_problems(old) == ["What is 12 + 30?", "What is 2 + 2?"]
    gpqa = write_sets(tmp_path / "gpqa", GPQA)["parquet"]
    first = calibration_problems(gpqa)[0]
    assert first.startswith("Which gas is number 0?\n\nOptions:\nA: ") and "right 0" in first
    with pytest.raises(CalibrationInputError, match=r"no question field .*the set has: a"):
        write_sets(tmp_path / "x", [{"a": "1"}])
        calibration_problems(tmp_path / "x" / "set.parquet")


# ---- multiple choice --------------------------------------------------------------------------


def test_gpqa_style_sets_are_multiple_choice_graded_on_the_letter(tmp_path: Path):
    paths = write_sets(tmp_path, GPQA)
    problems = load_dataset(str(paths["parquet"]))
    again = load_dataset(f"disk:{paths['disk']}")
    assert [(p.id, p.choices, p.answer) for p in problems] == [(p.id, p.choices, p.answer) for p in again]
    assert [p.id for p in problems] == [f"rec{i}" for i in range(6)]
    for i, p in enumerate(problems):  # the letter points at the right option, wherever it landed
        assert sorted(p.choices) == sorted([f"right {i}", f"wrong {i}a", f"wrong {i}b", f"wrong {i}c"])
        assert p.choices["ABCD".index(p.answer)] == f"right {i}"
    assert len({p.answer for p in problems}) > 1  # shuffled, not always A
    content = problems[0].messages()[0]["content"]
    assert content.startswith("Which gas is number 0?\n\nOptions:\nA: ")
    assert content.endswith("put the letter of your answer (A, B, C or D) within \\boxed{}.")
    right = problems[0].answer
    wrong = next(x for x in "ABCD" if x != right)
    assert grade(f"So \\boxed{{{right}}}", right, thinking=False, choices=4).correct
    assert grade(f"The answer is ({right}).", right, thinking=False, choices=4).correct
    assert not grade(f"\\boxed{{{wrong}}}", right, thinking=False, choices=4).correct
    assert grade("\\boxed{42}", right, thinking=False, choices=4).predicted is None


def test_a_list_of_options_with_an_index_or_a_letter(tmp_path: Path):
    rows = [
        {"question": "2 + 2?", "choices": ["3", "4", "5"], "answer": 1},
        {"question": "3 + 3?", "choices": ["6", "7"], "answer": 0},
    ]
    got = load_dataset(str(write_sets(tmp_path, rows)["parquet"]))
    assert [(p.choices, p.answer) for p in got] == [(("3", "4", "5"), "B"), (("6", "7"), "A")]
    f = tmp_path / "mixed.jsonl"  # a letter, the option's text, and one that is neither
    f.write_text(
        '{"question": "2 + 2?", "options": ["3", "4"], "answer": "B"}\n'
        '{"question": "3 + 3?", "options": ["6", "7"], "answer": "6"}\n'
        '{"question": "4 + 4?", "options": ["8", "9"], "answer": "10"}\n'
    )
    assert [p.answer for p in load_dataset(f"jsonl:{f}")] == ["B", "A", None]


# ---- the hub: its cache, offline mode, and plain errors ---------------------------------------


def test_a_hub_set_loads_from_the_local_cache_when_the_hub_is_unreachable(datasets_cache: Path):
    rows = [
        {
            "problem": "What is 1 + 1?",
            "solution": "\\boxed{2}",
            "answer": "2",
            "unique_id": "test/algebra/1.json",
        }
    ]
    hub_cache(datasets_cache, "HuggingFaceH4/MATH-500", {"test": rows})
    (p,) = load_dataset("math500")
    assert (p.id, p.problem, p.answer) == ("test/algebra/1.json", "What is 1 + 1?", "2")
    assert load_dataset("hf:HuggingFaceH4/MATH-500", split="test") == [p]
    with pytest.raises(DatasetError, match=r"math500 \(HuggingFaceH4/MATH-500\): .*split.*\['test'\]"):
        load_dataset("math500", split="train")


def test_presets_say_plainly_that_the_hub_is_out_of_reach_and_how_to_get_the_set(datasets_cache: Path):
    with pytest.raises(DatasetError) as err:
        load_dataset("gpqa-diamond")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("gpqa-diamond (Idavidrein/gpqa:gpqa_diamond): not available")
    assert "is not reachable from here" in msg and str(datasets_cache) in msg
    assert "datasets.load_dataset('Idavidrein/gpqa', 'gpqa_diamond', split='train')" in msg
    assert "parquet:gpqa.parquet" in msg and "gated" in msg
    with pytest.raises(DatasetError, match=r"^amc23 \(math-ai/amc23\): not available"):
        load_dataset("amc23")


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )


def test_offline_mode_reads_the_cache_and_the_clis_fail_in_one_line(tmp_path: Path):
    cache = tmp_path / "offline-cache"
    hub_cache(cache, "math-ai/amc23", {"test": [{"id": 0, "question": "What is 3 + 4?", "answer": 7.0}]})
    env = {"HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(cache)}
    code = "from relaygen_sgl.problem_sets import load_problems; print(load_problems('amc23'))"
    r = _cli(["-c", code], env, tmp_path)
    assert r.returncode == 0 and "Problem(id='0', problem='What is 3 + 4?', answer='7'" in r.stdout
    dead = f"http://127.0.0.1:{free_port()}"
    for argv in (
        [
            "-m",
            "evals.run_eval",
            "--dataset",
            "math500",
            "--out",
            "runs/x",
            "--large-url",
            dead,
            "--small-url",
            dead,
        ],
        [
            "-m",
            "evals.bench_latency",
            "--dataset",
            "hf:nobody/nothing",
            "--out",
            "runs/x",
            "--large-url",
            dead,
            "--small-url",
            dead,
        ],
        [
            "-m",
            "relaygen_sgl.cli",
            "calibrate",
            "--problems",
            "gpqa-diamond",
            "--out",
            "runs/x",
            "--large-url",
            dead,
            "--small-url",
            dead,
        ],
    ):
        r = _cli(argv, env, tmp_path)
        assert r.returncode == 2, r.stderr
        (line,) = r.stderr.strip().splitlines()
        assert "not available: offline mode is on (HF_DATASETS_OFFLINE/HF_HUB_OFFLINE)" in line
        assert not (tmp_path / "runs").exists()  # nothing written before the set loads


# ---- bad input --------------------------------------------------------------------------------


def test_bad_input_is_one_clear_line(tmp_path: Path, datasets_cache: Path):
    hub_cache(datasets_cache, "someone/sums", {"test": [{"problem": "x", "answer": "1"}]})
    datasets.Dataset.from_dict({"problem": [], "answer": []}).to_parquet(tmp_path / "empty.parquet")
    bad_line = tmp_path / "bad.jsonl"
    bad_line.write_text('{"problem": "ok", "answer": "1"}\n{"problem": \n')
    no_question = tmp_path / "noq.jsonl"
    no_question.write_text('{"problem": "ok", "answer": "1"}\n{"question": "no", "answer": "2"}\n')
    two = tmp_path / "two"
    datasets.DatasetDict(
        {s: datasets.Dataset.from_list([{"problem": "x", "answer": "1"}]) for s in ("train", "validation")}
    ).save_to_disk(str(two))
    cases = {
        "mmlu": "unknown dataset 'mmlu': choose gsm8k, ",
        str(tmp_path / "missing.parquet"): "missing.parquet: file not found",
        f"csv:{tmp_path}": "not a file",
        f"disk:{tmp_path}": "not a folder written by save_to_disk",
        str(tmp_path / "empty.parquet"): "empty.parquet: the set is empty",
        "hf:someone/else": "hf:someone/else: not available: the hub .* is not reachable from here",
        f"jsonl:{bad_line}": r"bad.jsonl:2: not valid JSON",
        f"jsonl:{no_question}": r"noq.jsonl:2: no question in field 'problem' \(the set has: problem, "
        r"answer, question\)",
        str(two): r"two: it has several splits \(train, validation\); pick one with --split",
        "hf:": "hf: needs a set name",
    }
    for spec, msg in cases.items():
        with pytest.raises(DatasetError, match=msg) as err:
            load_dataset(spec)
        assert "\n" not in str(err.value), spec
    with pytest.raises(DatasetError, match=r'^hf:someone/sums: Instruction "test\[:0\]" corresponds to no'):
        load_dataset("hf:someone/sums", split="test[:0]")  # an empty slice of a split
    assert load_dataset("hf:someone/sums", split="test[:1]") == [Problem("sums-1", "x", "1")]
    with pytest.raises(DatasetError, match=r"no split 'dev'; it has: train, validation"):
        load_dataset(str(two), split="dev")
    with pytest.raises(DatasetError, match="one file is one split; drop --split test"):
        load_dataset(f"jsonl:{no_question}", split="test")
    with pytest.raises(DatasetError, match="a bundled set has one split"):
        load_dataset("gsm8k", split="test")
    assert load_problems(str(two), split="validation") == [Problem("two-1", "x", "1")]
