"""The relay server's own overhead: large-only through ``relaygen serve`` vs SGLang's server
directly, same requests, at several concurrency levels, measured side by side in one run.

Both targets get OpenAI streaming chat requests with the same prompt, ``max_tokens`` and
``ignore_eos`` (so every stream decodes exactly the same number of tokens); the order of the
two alternates per level and repeat, so drift cancels.  Reported per level: output tokens/s of
each, their ratio, p50/p99 time to first token, and errors.

    python -m evals.bench_server --levels 1 16 64 256 --out evals/results/server
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from relaygen_sgl.testing.tiny_models import build_tiny_pair, tiny_profile

QUESTION = [{"role": "user", "content": "What is 12 + 30?"}]


async def one_stream(
    client: httpx.AsyncClient, url: str, model: str, max_tokens: int, seed: int
) -> dict[str, Any]:
    body = {
        "model": model,
        "messages": QUESTION,
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0.8,
        "seed": seed,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    ttft, tokens = None, 0
    try:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as resp:
            resp.raise_for_status()
            async for line in resp.aiter_lines():
                if not line.startswith("data:") or line.endswith("[DONE]"):
                    continue
                data = json.loads(line[5:])
                if "error" in data:
                    raise RuntimeError(data["error"])
                delta = data["choices"][0]["delta"] if data.get("choices") else {}
                if ttft is None and (delta.get("content") or delta.get("reasoning_content")):
                    ttft = time.perf_counter() - t0
                if data.get("usage"):
                    tokens = data["usage"]["completion_tokens"]
    except (httpx.HTTPError, RuntimeError, json.JSONDecodeError) as e:
        return {"error": f"{type(e).__name__}: {e}"}
    return {"ttft_s": ttft, "tokens": tokens, "latency_s": time.perf_counter() - t0}


async def level(url: str, model: str, concurrency: int, max_tokens: int, seed: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency + 8)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600, connect=30), limits=limits) as client:
        t0 = time.perf_counter()
        rows = await asyncio.gather(
            *(one_stream(client, url, model, max_tokens, seed + i) for i in range(concurrency))
        )
        wall = time.perf_counter() - t0
    ok = [r for r in rows if "error" not in r]
    ttfts = sorted(r["ttft_s"] for r in ok if r["ttft_s"] is not None)
    tokens = sum(r["tokens"] for r in ok)

    def pct(q: float) -> float | None:
        return round(ttfts[min(len(ttfts) - 1, int(q * len(ttfts)))], 4) if ttfts else None

    return {
        "concurrency": concurrency,
        "wall_s": round(wall, 3),
        "tokens": tokens,
        "tok_s": round(tokens / wall, 2) if wall else 0.0,
        "ttft_p50_s": pct(0.5),
        "ttft_p99_s": pct(0.99),
        "errors": len(rows) - len(ok),
        "error_samples": [r["error"] for r in rows if "error" in r][:3],
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| streams | direct tok/s | relay tok/s | relay / direct | TTFT p50 direct / relay (s) | "
        "TTFT p99 direct / relay (s) | errors direct / relay |",
        "|---:|---:|---:|---:|---|---|---|",
    ]
    for r in results:
        d, y = r["direct"], r["relay"]
        lines.append(
            f"| {r['concurrency']} | {d['tok_s']} | {y['tok_s']} | {r['ratio']} | "
            f"{d['ttft_p50_s']} / {y['ttft_p50_s']} | {d['ttft_p99_s']} / {y['ttft_p99_s']} | "
            f"{d['errors']} / {y['errors']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--levels", type=int, nargs="+", default=[1, 16, 64, 256])
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--tiny-dir", default=str(Path.home() / ".cache" / "relaygen" / "tiny"))
    p.add_argument("--out", default="runs/bench_server")
    args = p.parse_args(argv)
    import subprocess
    import sys

    from relaygen_sgl.runtime.pool import RuntimePair
    from relaygen_sgl.runtime.process import free_port

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tiny = build_tiny_pair(args.tiny_dir)
    profile = tiny_profile().save(out / "tiny-profile.json")
    results = []
    with ExitStack() as stack:
        # Room for 256 streams of prompt + max_tokens in each runtime's KV cache.
        pair = stack.enter_context(
            RuntimePair(tiny.large, tiny.small, max_total_tokens=65536, log_dir=out / "logs")
        )
        port = free_port()
        log = stack.enter_context(open(out / "relay-server.log", "wb"))
        relay = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "relaygen_sgl.cli",
                "serve",
                "--large-url",
                pair.large.url,
                "--small-url",
                pair.small.url,
                "--profile",
                str(profile),
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stack.callback(lambda: (relay.terminate(), relay.wait(30)))
        relay_url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{relay_url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        targets = {"direct": (pair.large.url, "default"), "relay": (relay_url, "relaygen-large-only")}
        asyncio.run(level(relay_url, "relaygen-large-only", 2, 8, 0))  # warm-up both paths
        asyncio.run(level(pair.large.url, "default", 2, 8, 0))
        for conc in args.levels:
            runs: dict[str, list[dict[str, Any]]] = {"direct": [], "relay": []}
            for rep in range(args.repeats):
                order = ["direct", "relay"] if rep % 2 == 0 else ["relay", "direct"]
                for name in order:
                    url, model = targets[name]
                    runs[name].append(asyncio.run(level(url, model, conc, args.max_tokens, seed=1000 * rep)))
                    print(name, runs[name][-1], flush=True)
            agg = {}
            for name, rs in runs.items():
                agg[name] = {
                    "tok_s": round(statistics.mean(r["tok_s"] for r in rs), 2),
                    "ttft_p50_s": _mean(r["ttft_p50_s"] for r in rs),
                    "ttft_p99_s": _mean(r["ttft_p99_s"] for r in rs),
                    "errors": sum(r["errors"] for r in rs),
                    "runs": rs,
                }
            ratio = (
                round(agg["relay"]["tok_s"] / agg["direct"]["tok_s"], 3) if agg["direct"]["tok_s"] else None
            )
            results.append({"concurrency": conc, "ratio": ratio, **agg})
    (out / "bench_server.json").write_text(
        json.dumps({"max_tokens": args.max_tokens, "repeats": args.repeats, "levels": results}, indent=2)
    )
    (out / "bench_server.md").write_text(table(results))
    print(table(results))
    return 0


def _mean(xs: Any) -> float | None:
    vals = [x for x in xs if x is not None]
    return round(statistics.mean(vals), 4) if vals else None


if __name__ == "__main__":
    raise SystemExit(main())
