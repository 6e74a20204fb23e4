"""lm-eval 0.4.13, the harness users run benchmarks with, as a client of the relay server: its
``local-completions`` model scores (loglikelihood, sent as echo + logprobs) and generates
(generate_until) through ``relaygen serve``, and its ``local-chat-completions`` model chats.
Real lm-eval CLI (the ``lmeval`` extra, which scripts/setup installs), real servers on the tiny
pair, real HTTP; tasks from local JSON files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SUMS = [(3, 4), (12, 30), (8, 9), (21, 5)]

TASKS = """\
task: relay_sums_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "What is {{{{a}}}} + {{{{b}}}}? The answer is"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
---
task: relay_sums_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "What is {{{{a}}}} + {{{{b}}}}?"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["<|im_end|>"]
  max_gen_toks: 160  # room to close the tiny model's reasoning
  do_sample: false
metric_list:
  - metric: exact_match
"""


@pytest.fixture(scope="module")
def tasks(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("lm-eval-tasks")
    data = d / "sums.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {
                    "a": a,
                    "b": b,
                    "answer": str(a + b),
                    "label": 1,
                    "choices": [str(a + b - 1), str(a + b), str(a * b)],
                }
            )
            + "\n"
            for a, b in SUMS
        )
    )
    # One task per file: lm-eval reads the first document of a YAML file.
    for i, doc in enumerate(TASKS.format(data=data).split("---\n")):
        (d / f"task{i}.yaml").write_text(doc)
    return d


@pytest.fixture
def relay_url(shared_relay_server) -> str:
    return shared_relay_server[1]


def lm_eval(tasks: Path, out: Path, model: str, model_args: str, task: str, *extra: str) -> list[dict]:
    """Run the lm-eval CLI; returns its logged samples of ``task``, in document order."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "lm_eval",
            "--model",
            model,
            "--model_args",
            model_args,
            "--tasks",
            task,
            "--include_path",
            str(tasks),
            "--output_path",
            str(out),
            "--log_samples",
            *extra,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    (samples,) = out.rglob(f"samples_{task}_*.jsonl")
    return sorted((json.loads(line) for line in samples.read_text().splitlines()), key=lambda s: s["doc_id"])


def completions(url: str, model: str, tokenizer: Path) -> tuple[str, str]:
    """lm-eval's OpenAI-completions client: prompts go out as token ids of ``tokenizer``."""
    return "local-completions", (
        f"base_url={url}/v1/completions,model={model},tokenizer={tokenizer},"
        "tokenizer_backend=huggingface,num_concurrent=1,max_retries=1"
    )


def test_loglikelihood_through_the_relay_server_is_the_large_models(
    relay_url, runtimes, tiny_pair, tasks, tmp_path
):
    via = lm_eval(
        tasks, tmp_path / "via", *completions(relay_url, "relaygen", tiny_pair.large), "relay_sums_mc"
    )
    direct = lm_eval(
        tasks,
        tmp_path / "direct",
        *completions(runtimes.large.url, "default", tiny_pair.large),
        "relay_sums_mc",
    )
    assert len(via) == len(SUMS)
    for v, d in zip(via, direct, strict=True):
        scores = [float(resp[0][0]) for resp in v["resps"]]  # logged as strings
        assert len(scores) == 3 and all(s < 0 for s in scores)  # one real log-probability per choice
        assert scores == pytest.approx([float(resp[0][0]) for resp in d["resps"]], abs=1e-3)


def test_generate_until_and_chat_through_the_relay_server(relay_url, runtimes, tiny_pair, tasks, tmp_path):
    chat_template = "--apply_chat_template"
    large_only = lm_eval(
        tasks,
        tmp_path / "large",
        *completions(relay_url, "relaygen-large-only", tiny_pair.large),
        "relay_sums_gen",
        chat_template,
    )
    direct = lm_eval(
        tasks,
        tmp_path / "direct",
        *completions(runtimes.large.url, "default", tiny_pair.large),
        "relay_sums_gen",
        chat_template,
    )
    # Greedy and one request at a time: the relay's large-only mode is the large runtime.
    assert [s["resps"][0][0] for s in large_only] == [s["resps"][0][0] for s in direct]
    assert all(s["resps"][0][0].strip() for s in large_only)
    chat = lm_eval(
        tasks,
        tmp_path / "chat",
        "local-chat-completions",
        f"base_url={relay_url}/v1/chat/completions,model=relaygen,num_concurrent=2,max_retries=1",
        "relay_sums_gen",
        chat_template,
    )
    assert len(chat) == len(SUMS) and all(s["resps"][0][0].strip() for s in chat)
