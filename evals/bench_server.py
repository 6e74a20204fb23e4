"""The relay server's own overhead: large-only through ``relaygen serve`` vs SGLang's server
directly, the same requests, measured side by side in one run.

Two parts, both on the tiny pair (or ``--tiny-dir``), both alternating the order of the two
targets per repeat, so drift cancels:

* **Long streams** (``--long-tokens``): one stream of N tokens (``ignore_eos``) on each route,
  ``/v1/chat/completions``, ``/v1/completions`` and ``/generate``, through the relay and
  directly.  The relay server's CPU time (its process and children, from ``/proc``) before and
  after gives the relay's CPU µs per streamed token, which should not grow with N.
* **Concurrency** (``--levels``): OpenAI streaming chat requests (``--max-tokens`` each) at
  several numbers of streams: output tokens/s of each, their ratio, p50/p99 time to first token,
  errors.  ``--workers 1 2`` repeats it with each number of relay server worker processes.

    python -m evals.bench_server --long-tokens 1000 4000 16000 --levels 1 16 64 256 \\
        --out evals/results/server

``/generate`` always relays; its relay server's cue profile has a cue no output contains, so
the relay runs the one large-model call that large-only would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from relaygen_sgl.testing.tiny_models import build_tiny_pair, default_tiny_dir, tiny_profile

QUESTION = [{"role": "user", "content": "What is 12 + 30?"}]
PROMPT = "Question: What is 12 + 30?\nAnswer:"
ROUTES = ("chat", "completions", "generate")
NEVER_CUE = "qzxjvq"  # a cue the tiny models never write: /generate relays one large call


@dataclass(frozen=True)
class Target:
    url: str
    model: str  # the OpenAI model id ("default" on SGLang, a relay mode on the relay server)


def process_tree_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid``'s threads and every live descendant's, to the nanosecond
    (``/proc/<pid>/task/<tid>/schedstat``; ``/proc/<pid>/stat`` counts in 10 ms ticks)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                total += int((task / "schedstat").read_text().split()[0])
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / 1e9


def request(route: str, target: Target, max_tokens: int, seed: int) -> tuple[str, dict[str, Any]]:
    """The path and streaming body of one request of ``max_tokens`` tokens on ``route``."""
    sampling = {"max_tokens": max_tokens, "ignore_eos": True, "temperature": 0.8, "seed": seed}
    openai = {"model": target.model, "stream": True, "stream_options": {"include_usage": True}}
    if route == "chat":
        return "/v1/chat/completions", {**openai, **sampling, "messages": QUESTION}
    if route == "completions":
        return "/v1/completions", {**openai, **sampling, "prompt": PROMPT}
    params = {"max_new_tokens": max_tokens, "ignore_eos": True, "temperature": 0.8, "sampling_seed": seed}
    return "/generate", {"text": PROMPT, "sampling_params": params, "stream": True}


async def one_stream(
    client: httpx.AsyncClient, route: str, target: Target, max_tokens: int, seed: int
) -> dict[str, Any]:
    """Stream one request; its time to first text, output tokens, chunks and latency."""
    path, body = request(route, target, max_tokens, seed)
    t0 = time.perf_counter()
    ttft, tokens, chunks = None, 0, 0
    try:
        async with client.stream("POST", f"{target.url}{path}", json=body) as resp:
            resp.raise_for_status()
            async for line in resp.aiter_lines():
                if not line.startswith("data:") or line.endswith("[DONE]"):
                    continue
                data = json.loads(line[5:])
                if "error" in data:
                    raise RuntimeError(data["error"])
                chunks += 1
                text, n = _chunk_text(route, data)
                if ttft is None and text:
                    ttft = time.perf_counter() - t0
                tokens = n or tokens
    except (httpx.HTTPError, RuntimeError, json.JSONDecodeError) as e:
        return {"error": f"{type(e).__name__}: {e}"}
    return {"ttft_s": ttft, "tokens": tokens, "chunks": chunks, "latency_s": time.perf_counter() - t0}


def _chunk_text(route: str, data: dict[str, Any]) -> tuple[str, int | None]:
    """A chunk's text and, where it says, the output's token count so far."""
    if route == "generate":
        return data.get("text") or "", data.get("meta_info", {}).get("completion_tokens")
    n = (data.get("usage") or {}).get("completion_tokens")
    if not data.get("choices"):
        return "", n
    choice = data["choices"][0]
    if route == "completions":
        return choice.get("text") or "", n
    delta = choice.get("delta") or {}
    return delta.get("content") or delta.get("reasoning_content") or "", n


def _client(concurrency: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency + 8)
    return httpx.AsyncClient(timeout=httpx.Timeout(3600, connect=30), limits=limits)


async def level(target: Target, concurrency: int, max_tokens: int, seed: int) -> dict[str, Any]:
    async with _client(concurrency) as client:
        t0 = time.perf_counter()
        rows = await asyncio.gather(
            *(one_stream(client, "chat", target, max_tokens, seed + i) for i in range(concurrency))
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


async def long_stream(route: str, target: Target, tokens: int, seed: int, pid: int | None) -> dict[str, Any]:
    """One long stream; with ``pid`` (the relay server's), the CPU it spent on it."""
    async with _client(1) as client:
        cpu0 = process_tree_cpu_s(pid) if pid else 0.0
        r = await one_stream(client, route, target, tokens, seed)
        cpu = process_tree_cpu_s(pid) - cpu0 if pid else None
    if "error" in r:
        return r
    r["tok_s"] = round(r["tokens"] / r["latency_s"], 2)
    if cpu is not None and r["tokens"]:
        r["relay_cpu_s"] = round(cpu, 3)
        r["relay_cpu_us_per_token"] = round(1e6 * cpu / r["tokens"], 1)
    return r


async def warm_up(targets: dict[str, Target], routes: list[str]) -> None:
    """A short stream on every route of both targets: first-request costs stay out of the rows."""
    async with _client(1) as client:
        for route in routes:
            for target in targets.values():
                await one_stream(client, route, target, 8, 0)


def run_long(
    targets: dict[str, Target], relay_pid: int, lengths: list[int], routes: list[str], repeats: int
) -> list[dict[str, Any]]:
    rows = []
    for n in lengths:
        for route in routes:
            runs: dict[str, list[dict[str, Any]]] = {"direct": [], "relay": []}
            for rep in range(repeats):
                for name in ("direct", "relay") if rep % 2 == 0 else ("relay", "direct"):
                    pid = relay_pid if name == "relay" else None
                    runs[name].append(asyncio.run(long_stream(route, targets[name], n, 7 + rep, pid)))
                    print("long", n, route, name, runs[name][-1], flush=True)
            rows.append(_long_row(n, route, runs))
    return rows


def _long_row(n: int, route: str, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    ok = {k: [r for r in rs if "error" not in r] for k, rs in runs.items()}
    direct = _mean(r["tok_s"] for r in ok["direct"])
    relay = _mean(r["tok_s"] for r in ok["relay"])
    return {
        "tokens": n,
        "route": route,
        "direct_tok_s": direct,
        "relay_tok_s": relay,
        "ratio": round(relay / direct, 3) if relay and direct else None,
        "relay_cpu_us_per_token": _mean(r.get("relay_cpu_us_per_token") for r in ok["relay"]),
        "relay_chunks_per_token": _mean(r["chunks"] / r["tokens"] for r in ok["relay"] if r["tokens"]),
        "errors": sum(len(rs) - len(ok[k]) for k, rs in runs.items()),
        "runs": runs,
    }


def run_levels(
    targets: dict[str, Target], levels: list[int], max_tokens: int, repeats: int
) -> list[dict[str, Any]]:
    results = []
    for conc in levels:
        runs: dict[str, list[dict[str, Any]]] = {"direct": [], "relay": []}
        for rep in range(repeats):
            for name in ("direct", "relay") if rep % 2 == 0 else ("relay", "direct"):
                runs[name].append(asyncio.run(level(targets[name], conc, max_tokens, seed=1000 * rep)))
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
        ratio = round(agg["relay"]["tok_s"] / agg["direct"]["tok_s"], 3) if agg["direct"]["tok_s"] else None
        results.append({"concurrency": conc, "ratio": ratio, **agg})
    return results


def markdown(head: list[str], rows: list[list[Any]]) -> str:
    """A markdown table; the first columns (numbers) right-aligned."""
    align = [
        "---:" if h in ("tokens", "workers", "streams") or "tok/s" in h or "/" in h else "---" for h in head
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def long_table(rows: list[dict[str, Any]]) -> str:
    head = [
        "tokens",
        "route",
        "direct tok/s",
        "relay tok/s",
        "relay / direct",
        "relay CPU µs per token",
        "errors",
    ]
    keys = ["tokens", "route", "direct_tok_s", "relay_tok_s", "ratio", "relay_cpu_us_per_token", "errors"]
    return markdown(head, [[r[k] for k in keys] for r in rows])


def scripted_table(rows: list[dict[str, Any]]) -> str:
    head = ["upstream", "route"] + [f"{n} tokens: µs/token" for n in sorted({r["tokens"] for r in rows})]
    lines = {}
    for r in rows:
        lines.setdefault((r["upstream"], r["route"]), []).append(r.get("relay_cpu_us_per_token"))
    return markdown(head, [[u, route, *vals] for (u, route), vals in lines.items()])


def table(results: list[dict[str, Any]]) -> str:
    head = ["workers", "streams", "direct tok/s", "relay tok/s", "relay / direct"]
    head += ["TTFT p50 direct / relay (s)", "TTFT p99 direct / relay (s)", "errors direct / relay"]
    rows = []
    for r in results:
        d, y = r["direct"], r["relay"]
        rows.append(
            [r.get("workers", 1), r["concurrency"], d["tok_s"], y["tok_s"], r["ratio"]]
            + [f"{d[k]} / {y[k]}" for k in ("ttft_p50_s", "ttft_p99_s", "errors")]
        )
    return markdown(head, rows)


@contextmanager
def scripted_pair(tiny: Any, cumulative: bool, logs: Path) -> Iterator[tuple[str, str]]:
    """Two scripted runtimes (:mod:`evals.scripted_runtime`) in place of the tiny pair's."""
    from relaygen_sgl.runtime.process import free_port, spawn_group, stop_groups, wait_for

    procs, urls = [], []
    try:
        for name, model in (("large", tiny.large), ("small", tiny.small)):
            port = free_port()
            cmd = [sys.executable, "-m", "evals.scripted_runtime", "--port", str(port), "--model", str(model)]
            log = logs / f"scripted-{name}.log"
            procs.append(spawn_group(cmd + (["--cumulative"] if cumulative else []), log))
            urls.append(f"http://127.0.0.1:{port}")
            wait_for(
                procs[-1],
                _answers(urls[-1]),
                what=name,
                until="up",
                timeout=60,
                log_path=log,
                error=RuntimeError,
            )
        yield urls[0], urls[1]
    finally:
        stop_groups(procs)


def _answers(url: str) -> Any:
    def check() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def run_scripted(
    tiny: Any, profile: Path, lengths: list[int], routes: list[str], out: Path
) -> list[dict[str, Any]]:
    """The relay server's CPU per token over scripted runtimes, incremental and cumulative."""
    rows = []
    for cumulative in (False, True):
        upstream = "cumulative" if cumulative else "incremental"
        with scripted_pair(tiny, cumulative, out / "logs") as (large, small):
            log = out / "logs" / f"relay-server-scripted-{upstream}.log"
            with relay_server(large, small, profile, 1, log) as (proc, url):
                target = Target(url, "relaygen-large-only")
                asyncio.run(warm_up({"relay": target}, routes))
                for n in lengths:
                    for route in routes:
                        r = asyncio.run(long_stream(route, target, n, 7, proc.pid))
                        print("scripted", upstream, n, route, r, flush=True)
                        rows.append({"upstream": upstream, "tokens": n, "route": route} | _pick(r))
    return rows


def _pick(r: dict[str, Any]) -> dict[str, Any]:
    keys = ("tok_s", "relay_cpu_us_per_token", "chunks", "error")
    return {k: r[k] for k in keys if k in r}


@contextmanager
def relay_server(large_url: str, small_url: str, profile: Path, workers: int, log: Path) -> Iterator[Any]:
    """``relaygen serve`` in front of the pair (``--workers`` passed when more than one)."""
    from relaygen_sgl.runtime.process import free_port, spawn_group, stop_group, wait_for

    port = free_port()
    cmd = [sys.executable, "-m", "relaygen_sgl.cli", "serve", "--large-url", large_url]
    cmd += ["--small-url", small_url, "--profile", str(profile), "--port", str(port)]
    cmd += ["--max-input-tokens", "100000"]
    if workers != 1:
        cmd += ["--workers", str(workers)]
    proc = spawn_group(cmd, log)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(
            proc, healthy, what="relay server", until="healthy", timeout=300, log_path=log, error=RuntimeError
        )
        yield proc, url
    finally:
        stop_group(proc)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--levels", type=int, nargs="*", default=[1, 16, 64, 256])
    p.add_argument("--max-tokens", type=int, default=64, help="tokens per stream of the concurrency levels")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--long-tokens", type=int, nargs="*", default=[1000, 4000, 16000])
    p.add_argument("--long-repeats", type=int, default=1)
    p.add_argument("--routes", nargs="+", choices=ROUTES, default=list(ROUTES))
    p.add_argument(
        "--workers", type=int, nargs="+", default=[1], help="relay server worker counts (concurrency part)"
    )
    p.add_argument(
        "--runtime-args",
        default="",
        help="extra SGLang flags for both runtimes (e.g. --incremental-streaming-output)",
    )
    p.add_argument(
        "--scripted",
        action="store_true",
        help="long streams only, over scripted runtimes (evals/scripted_runtime.py) instead of the tiny pair",
    )
    p.add_argument(
        "--tiny-dir",
        default=str(default_tiny_dir()),
        help="default: $RELAYGEN_TINY_DIR or ~/.cache/relaygen/tiny",
    )
    p.add_argument("--out", default="runs/bench_server")
    args = p.parse_args(argv)

    from relaygen_sgl.runtime.pool import RuntimePair

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tiny = build_tiny_pair(args.tiny_dir)
    profile = tiny_profile(cues=[NEVER_CUE]).save(out / "tiny-profile.json")
    context = max(args.long_tokens or [0], default=0) + 1024
    runtime_args = ["--context-length", str(context), *args.runtime_args.split()] if args.long_tokens else []
    if args.long_tokens:  # the tiny models were trained on 5120 positions; a longer stream is still a stream
        os.environ["SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN"] = "1"
    long_rows: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    if args.scripted:
        rows = run_scripted(tiny, profile, args.long_tokens, args.routes, out)
        (out / "bench_server_scripted.json").write_text(
            json.dumps({"settings": vars(args), "rows": rows}, indent=2)
        )
        md = scripted_table(rows)
        (out / "bench_server_scripted.md").write_text(md)
        print(md)
        return 0
    with ExitStack() as stack:
        # Room for 256 streams of prompt + max_tokens, or one long stream, in each KV cache.
        pair = stack.enter_context(
            RuntimePair(
                tiny.large,
                tiny.small,
                max_total_tokens=max(65536, context),
                log_dir=out / "logs",
                large_args=runtime_args,
                small_args=runtime_args,
            )
        )
        direct = Target(pair.large.url, "default")
        for i, workers in enumerate(args.workers):
            log = out / "logs" / f"relay-server-{workers}w.log"
            with relay_server(pair.large.url, pair.small.url, profile, workers, log) as (proc, url):
                targets = {"direct": direct, "relay": Target(url, "relaygen-large-only")}
                asyncio.run(warm_up(targets, args.routes))
                if i == 0 and args.long_tokens:
                    long_rows = run_long(targets, proc.pid, args.long_tokens, args.routes, args.long_repeats)
                for row in run_levels(targets, args.levels, args.max_tokens, args.repeats):
                    results.append({"workers": workers, **row})
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "tiny_dir")}
    (out / "bench_server.json").write_text(
        json.dumps({"settings": settings, "long_streams": long_rows, "levels": results}, indent=2)
    )
    md = ""
    if long_rows:
        md += "### Long streams (one stream)\n\n" + long_table(long_rows) + "\n"
    if results:
        md += f"### Concurrent streams ({args.max_tokens} tokens each)\n\n" + table(results)
    (out / "bench_server.md").write_text(md)
    print(md)
    return 0


def _mean(xs: Any) -> float | None:
    vals = [x for x in xs if x is not None]
    return round(statistics.mean(vals), 4) if vals else None


if __name__ == "__main__":
    raise SystemExit(main())
