"""Step 1 and 2: large-model reasoning traces, then small-model teacher-forced scoring.

Both steps append one JSONL record per finished item and skip items already
in the file, so an interrupted run resumes where it stopped and loses nothing.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from relaygen_sgl.calibration.io import CalibrationInputError
from relaygen_sgl.jsonl import repair_jsonl
from relaygen_sgl.reasoning import THINK_END
from relaygen_sgl.runtime.client import RuntimeClient, RuntimeRequestError


def _messages(problem: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": problem}]


def trace_id(problem_index: int, sample: int) -> str:
    return f"p{problem_index:05d}-s{sample:02d}"


def token_limit(client: RuntimeClient) -> int | None:
    """The most prompt + output tokens one request may hold on this runtime, or None if unknown.

    SGLang's ``max_req_input_len`` is the smaller of the model's context and the KV cache,
    less a small margin; a request over the context is refused, so traces are clamped to it.
    """
    try:
        value = client.server_info().get("max_req_input_len")
    except RuntimeRequestError:
        return None
    return int(value) if value else None


def _check_same_sampling(path: Path, rows: Sequence[dict[str, Any]], sampling: dict[str, Any]) -> None:
    """Resuming must not mix traces sampled under other settings into one calibration."""
    for r in rows:
        if "sampling" in r and r["sampling"] != sampling:
            raise CalibrationInputError(
                f"{path}: trace {r['id']} was sampled with {r['sampling']}, this run asks for "
                f"{sampling}; use another --out or the same sampling options"
            )


def _append_all(
    path: Path,
    todo: Sequence[Any],
    work: Callable[[Any], dict],
    threads: int,
    progress: Callable[[], None] | None,
) -> None:
    lock = threading.Lock()
    with path.open("a") as f:

        def run(item: Any) -> None:
            rec = work(item)
            with lock:  # whole lines only, flushed at once: a kill loses at most the item in flight
                f.write(json.dumps(rec) + "\n")
                f.flush()
                if progress:
                    progress()

        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for fut in [pool.submit(run, it) for it in todo]:
                fut.result()


def generate_traces(
    problems: Sequence[str],
    large: RuntimeClient | str,
    out_path: str | Path,
    *,
    samples: int = 1,
    seed: int = 0,
    max_tokens: int = 2048,
    sampling: dict[str, Any] | None = None,
    threads: int = 4,
    progress: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Sample ``samples`` reasoning traces per problem from the large model (seeded).

    Each trace may use up to ``max_tokens``, clamped to what the runtime's context leaves after
    the chat-templated prompt.  ``relaygen calibrate`` passes the paper's settings (4 samples,
    32768 tokens, T 0.6 / top_p 0.95 / top_k 20); these library defaults are the cheap ones.
    """
    client = RuntimeClient.of(large, "large")  # one client (and tokenizer) for the whole step
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sampling = {"temperature": 0.6, "top_p": 0.95, **(sampling or {})}
    sampling = {k: v for k, v in sampling.items() if v is not None}
    if sampling.get("top_k", 1) <= 0:
        sampling.pop("top_k")  # SGLang's default: no top-k cut
    record = {**sampling, "max_tokens": max_tokens}
    existing = repair_jsonl(path)
    _check_same_sampling(path, existing, record)
    done = {r["id"] for r in existing}
    todo = [(i, k) for i in range(len(problems)) for k in range(samples) if trace_id(i, k) not in done]
    tok = client.tokenizer
    limit = token_limit(client) if todo else None

    def work(item: tuple[int, int]) -> dict[str, Any]:
        i, k = item
        # The model's own chat template, as at inference time.
        prompt = tok.apply_chat_template(_messages(problems[i]), tokenize=False, add_generation_prompt=True)
        budget = max_tokens
        if limit is not None:
            budget = min(max_tokens, limit - len(tok.encode(prompt, add_special_tokens=False)))
            if budget < 1:
                raise CalibrationInputError(f"problem {i}: its prompt fills the runtime's context ({limit})")
        item_seed = seed * 1_000_003 + i * 101 + k
        params = {
            **sampling,
            "max_new_tokens": budget,
            "stop": [THINK_END],
            "no_stop_trim": True,
            "sampling_seed": item_seed,
        }
        res = client.generate(text=prompt, sampling_params=params)
        return {
            "id": trace_id(i, k),
            "problem_index": i,
            "sample": k,
            "seed": item_seed,
            "problem": problems[i],
            "reasoning": res.text,
            "sampling": record,
            "max_new_tokens": budget,
            "finished": THINK_END in res.text,
        }

    _append_all(path, todo, work, threads, progress)
    return _sorted(repair_jsonl(path))


def score_traces(
    traces: Sequence[dict[str, Any]],
    small: RuntimeClient | str,
    out_path: str | Path,
    *,
    threads: int = 4,
    progress: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Teacher-force each trace through the small model; keep top-2 margins of reasoning tokens.

    The small model sees its own chat template around the problem, then the
    trace; logprobs start after the prompt, so prompt tokens are never scored.
    """
    from relaygen_sgl.calibration.margins import token_margins

    client = RuntimeClient.of(small, "small")
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = {r["id"] for r in repair_jsonl(path)}
    todo = [t for t in traces if t["id"] not in done and t["reasoning"]]
    tok = client.tokenizer
    limit = token_limit(client) if todo else None

    def work(tr: dict[str, Any]) -> dict[str, Any]:
        prompt = tok.apply_chat_template(_messages(tr["problem"]), tokenize=False, add_generation_prompt=True)
        prompt_ids = tok.encode(prompt, add_special_tokens=False)
        enc = tok(tr["reasoning"], add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]
        cut = len(ids) if limit is None else max(0, limit - len(prompt_ids) - 1)
        # A full-length trace can outgrow a small runtime's context: score what fits.
        ids, offsets = ids[:cut], offsets[:cut]
        res = client.generate(
            input_ids=prompt_ids + ids,
            sampling_params={"max_new_tokens": 1, "temperature": 0},
            return_logprob=True,
            # SGLang leaves the entry at logprob_start_len empty, so start one token early:
            # entry j+1 is then the distribution that predicts reasoning token j.
            logprob_start_len=len(prompt_ids) - 1,
            top_logprobs_num=2,
        )
        tops = res.meta_info["input_top_logprobs"][1:]
        if len(tops) != len(ids):
            raise RuntimeError(f"trace {tr['id']}: got {len(tops)} logprob rows for {len(ids)} tokens")
        return {
            "id": tr["id"],
            "margins": [round(m, 6) for m in token_margins(tops)],
            "offsets": offsets,
            "reasoning": tr["reasoning"],
            "cut": len(enc["input_ids"]) > len(ids),
        }

    _append_all(path, todo, work, threads, progress)
    return _sorted(repair_jsonl(path))


def _sorted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted({r["id"]: r for r in rows}.values(), key=lambda r: r["id"])
