"""float32 vs bfloat16 on CPU: decode speed side by side in one run, and whether answers change.

One runtime at a time serves the large model (the float32 one alone takes 8 GB of RAM); the
dtypes alternate within the run, in a different order each repeat, so drift on a noisy machine
cancels.  Single stream and batch 8, every request decoding exactly ``--tokens`` tokens
(``ignore_eos``).  ``--agreement N`` then solves the first N GSM8K problems greedily with
both (one server at a time) and reports how many outputs and answers agree.  Each phase's
results are saved as it ends, so a rerun resumes.

    python -m evals.bench_dtype --repeats 2 --agreement 10 --out evals/results/dtype
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from relaygen_sgl.default_pair import MODELS_DIR, default_pair
from relaygen_sgl.runtime.client import RuntimeClient
from relaygen_sgl.runtime.server import SGLangRuntime

DTYPES = ("float32", "bfloat16")
PROMPT = "<|im_start|>user\nWrite a long story about a lighthouse keeper.<|im_end|>\n<|im_start|>assistant\n"


def decode_rate(client: RuntimeClient, batch: int, tokens: int, seed: int) -> float:
    """Aggregate output tokens/s for ``batch`` concurrent requests of ``tokens`` tokens each."""
    # A distinct prompt per request and repeat: nothing is served from the prefix cache.
    params = {"max_new_tokens": tokens, "ignore_eos": True, "temperature": 0}

    def one(i: int) -> int:
        return client.generate(text=f"[{seed}-{i}] " + PROMPT, sampling_params=params).completion_tokens

    t0 = time.perf_counter()
    with ThreadPoolExecutor(batch) as pool:
        n = sum(pool.map(one, range(batch)))
    return n / (time.perf_counter() - t0)


def speed(runtime: Callable[[str], SGLangRuntime], repeats: int, tokens: int) -> dict[str, Any]:
    """One server at a time (the float32 1.5B model alone takes 8 GB of RAM), the dtype order
    alternating per repeat, each server warmed up before it is timed."""
    rates: dict[str, dict[str, list[float]]] = {d: {"single": [], "batch8": []} for d in DTYPES}
    for rep in range(repeats):
        order = list(DTYPES) if rep % 2 == 0 else list(reversed(DTYPES))
        for d in order:
            with runtime(d) as rt:
                client = RuntimeClient(rt.url, d)
                client.generate(text=PROMPT, sampling_params={"max_new_tokens": 4})
                rates[d]["single"].append(decode_rate(client, 1, tokens, seed=rep))
                rates[d]["batch8"].append(decode_rate(client, 8, tokens, seed=rep))
            print(
                f"repeat {rep}: {d}: single {rates[d]['single'][-1]:.2f} tok/s, "
                f"batch 8 {rates[d]['batch8'][-1]:.2f} tok/s",
                flush=True,
            )
    out: dict[str, Any] = {"tokens_per_request": tokens, "repeats": repeats, "tok_s": rates}
    for shape in ("single", "batch8"):
        f32, bf16 = (statistics.mean(rates[d][shape]) for d in DTYPES)
        out[f"{shape}_float32_tok_s"] = round(f32, 3)
        out[f"{shape}_bfloat16_tok_s"] = round(bf16, 3)
        out[f"{shape}_bf16_over_fp32"] = round(bf16 / f32, 3)
    return out


def solve(client: RuntimeClient, n: int, max_tokens: int) -> list[str]:
    """Greedy outputs for the first ``n`` GSM8K problems, all in flight at once."""
    from evals.datasets import load_dataset

    tok = client.tokenizer
    prompts = [
        tok.apply_chat_template(p.messages(), tokenize=False, add_generation_prompt=True)
        for p in load_dataset("gsm8k", n)
    ]
    params = {"max_new_tokens": max_tokens, "temperature": 0}
    with ThreadPoolExecutor(len(prompts)) as pool:
        futures = [pool.submit(client.generate, text=t, sampling_params=params) for t in prompts]
        return [f.result().text for f in futures]


def agreement(outputs: dict[str, list[str]], n: int, max_tokens: int) -> dict[str, Any]:
    from evals.datasets import load_dataset
    from relaygen_sgl.grading import extract_answer, is_correct

    problems = load_dataset("gsm8k", n)
    rows = []
    for i, p in enumerate(problems):
        a, b = outputs["float32"][i], outputs["bfloat16"][i]
        common = next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        rows.append(
            {
                "id": p.id,
                "same_text": a == b,
                "same_answer": extract_answer(a) == extract_answer(b),
                "float32_correct": is_correct(a, p.answer),
                "bfloat16_correct": is_correct(b, p.answer),
                "common_prefix_chars": common,
                "float32_chars": len(a),
                "bfloat16_chars": len(b),
            }
        )
    return {
        "problems": n,
        "max_tokens": max_tokens,
        "same_text": sum(r["same_text"] for r in rows),
        "same_answer": sum(r["same_answer"] for r in rows),
        "float32_correct": sum(r["float32_correct"] for r in rows),
        "bfloat16_correct": sum(r["bfloat16_correct"] for r in rows),
        "rows": rows,
        "outputs": outputs,
    }


def markdown(res: dict[str, Any]) -> str:
    s = res["speed"]
    lines = [
        "| shape | float32 tok/s | bfloat16 tok/s | bf16 / fp32 |",
        "|---|---:|---:|---:|",
        *(
            f"| {label} | {s[f'{k}_float32_tok_s']} | {s[f'{k}_bfloat16_tok_s']} "
            f"| {s[f'{k}_bf16_over_fp32']} |"
            for k, label in (("single", "single stream"), ("batch8", "batch of 8 (aggregate)"))
        ),
    ]
    if "agreement" in res:
        a = res["agreement"]
        lines += [
            "",
            f"Greedy GSM8K, first {a['problems']} problems, {a['max_tokens']} tokens: "
            f"{a['same_text']}/{a['problems']} identical outputs, "
            f"{a['same_answer']}/{a['problems']} "
            f"same final answer; correct: float32 {a['float32_correct']}, "
            f"bfloat16 {a['bfloat16_correct']}.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--float32-model",
        default=str(default_pair(MODELS_DIR / "float32").large),
        help="float32 weights (default: the float32 copy from "
        "`python -m relaygen_sgl.model_install --models-dir ~/.cache/relaygen/models/float32 "
        "--dtype float32`, else the bfloat16 folder served as float32)",
    )
    p.add_argument("--bfloat16-model", default=str(default_pair().large))
    p.add_argument("--tokens", type=int, default=64, help="decoded tokens per request")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument(
        "--agreement", type=int, default=10, help="GSM8K problems for the agreement check (0: skip)"
    )
    p.add_argument("--agreement-max-tokens", type=int, default=320)
    p.add_argument("--max-total-tokens", type=int, default=8192)
    p.add_argument("--out", default="runs/bench_dtype")
    args = p.parse_args(argv)
    f32_path = args.float32_model if Path(args.float32_model, "config.json").exists() else args.bfloat16_model
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"float32": f32_path, "bfloat16": args.bfloat16_model}

    def runtime(d: str) -> SGLangRuntime:
        return SGLangRuntime(
            paths[d],
            name=d,
            device="cpu",
            dtype=d,
            max_total_tokens=args.max_total_tokens,
            log_dir=out / "logs",
        )

    speed_file = out / "speed.json"
    if speed_file.exists():  # resumable: the speed phase is done
        speed_res = json.loads(speed_file.read_text())
    else:
        speed_res = speed(runtime, args.repeats, args.tokens)
        speed_file.write_text(json.dumps(speed_res, indent=2))
    res: dict[str, Any] = {
        "float32_model": f32_path,
        "bfloat16_model": args.bfloat16_model,
        "speed": speed_res,
    }
    if args.agreement:
        # One server at a time: the float32 1.5B model alone takes 8 GB of RAM.
        outputs = {}
        for d in DTYPES:
            f = out / f"agreement-{d}.json"
            if not f.exists():
                with runtime(d) as rt:
                    f.write_text(
                        json.dumps(solve(RuntimeClient(rt.url, d), args.agreement, args.agreement_max_tokens))
                    )
            outputs[d] = json.loads(f.read_text())
        res["agreement"] = agreement(outputs, args.agreement, args.agreement_max_tokens)
    (out / "bench_dtype.json").write_text(json.dumps(res, indent=2))
    (out / "bench_dtype.md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
