"""A stand-in for an SGLang runtime that streams scripted tokens at a fixed pace and computes
nothing: the relay server's cost per token measured alone, on cores no model is loading.

``/generate`` streams ``max_new_tokens`` events, one token each, ``--interval`` seconds apart,
as SGLang does with ``--incremental-streaming-output`` (or with ``--cumulative``, as it does by
default: each event holds the whole output so far).  ``/get_model_info`` names ``--model``, whose
tokenizer the relay loads.

    python -m evals.scripted_runtime --port 30000 --model /path/to/tiny/large
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse


def events(max_tokens: int, rid: str | None, cumulative: bool) -> list[bytes]:
    """The events of one streamed generation (token ids and words cycle)."""
    out, ids, text = [], [], ""
    for n in range(1, max_tokens + 1):
        tid, piece = 100 + n % 300, f" w{n % 97}"
        ids.append(tid)
        text += piece
        finish = {"type": "length", "length": n} if n == max_tokens else None
        meta = {
            "id": rid,
            "finish_reason": finish,
            "prompt_tokens": 10,
            "completion_tokens": n,
            "cached_tokens": 0,
        }
        data = {"text": text, "output_ids": ids} if cumulative else {"text": piece, "output_ids": [tid]}
        out.append(b"data: " + orjson.dumps({**data, "meta_info": meta}) + b"\n\n")
    return [*out, b"data: [DONE]\n\n"]


def create_app(model: str, cumulative: bool, interval_s: float) -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {}

    @app.get("/get_model_info")
    async def model_info() -> dict[str, Any]:
        return {"model_path": model, "tokenizer_path": model, "is_generation": True}

    @app.post("/abort_request")
    async def abort() -> dict[str, Any]:
        return {}

    @app.post("/generate")
    async def generate(request: Request) -> StreamingResponse:
        body = orjson.loads(await request.body())
        chunks = events(int(body["sampling_params"]["max_new_tokens"]), body.get("rid"), cumulative)

        async def paced() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk
                await asyncio.sleep(interval_s)

        return StreamingResponse(paced(), media_type="text/event-stream")

    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", required=True, help="a model folder: its tokenizer is the relay's")
    p.add_argument("--cumulative", action="store_true", help="every event holds the whole output")
    p.add_argument("--interval", type=float, default=0.001, help="seconds between events")
    args = p.parse_args(argv)
    app = create_app(args.model, args.cumulative, args.interval)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
