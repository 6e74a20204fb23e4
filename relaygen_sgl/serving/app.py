"""The relay server: thin routes over :mod:`.service`, :mod:`.openai_api` and :mod:`.native`.

OpenAI-compatible ``/v1/chat/completions``, ``/v1/completions`` (SSE streaming or not) and
``/v1/models``; SGLang's native ``/generate``, ``/get_model_info``, ``/flush_cache``;
``/health``.  The model id picks the mode: ``relaygen`` (relay), ``relaygen-large-only``,
``relaygen-small-only``.  Responses carry the relay stats in an extra ``relaygen`` field
(``response.model_extra["relaygen"]`` with the openai client).
"""

from __future__ import annotations

import argparse
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from relaygen_sgl.serving import native, openai_api
from relaygen_sgl.serving.errors import APIError, parse_body
from relaygen_sgl.serving.protocol import (
    MODEL_MODES,
    ChatCompletionRequest,
    CompletionRequest,
    GenerateRequest,
    ModelCard,
    ModelList,
)
from relaygen_sgl.serving.service import ClientGone, RelayService, ServerConfig

# Status nginx uses for "client closed the request"; nobody reads it, but logs do.
CLIENT_CLOSED = 499


def create_app(config: ServerConfig) -> FastAPI:
    service = RelayService(config)

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # noqa: ANN202
        yield
        await service.pair.aclose()

    app = FastAPI(title="relaygen-sgl", lifespan=lifespan)
    app.state.service = service

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        exc.log(f"{request.method} {request.url.path}")
        return exc.response()

    @app.exception_handler(ClientGone)
    async def _gone(_: Request, exc: ClientGone) -> Response:
        return Response(status_code=CLIENT_CLOSED)

    @app.get("/health")
    async def health() -> JSONResponse:
        pools = await service.health()
        ok = all(p["ok"] for p in pools.values())  # 503 as long as either model has no live worker
        return JSONResponse({"status": "ok" if ok else "degraded", **pools}, status_code=200 if ok else 503)

    @app.get("/v1/models")
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=m) for m in MODEL_MODES])

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        raw = await request.body()
        return await openai_api.chat(service, parse_body(raw, ChatCompletionRequest), request, raw)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        raw = await request.body()
        return await openai_api.completions(service, parse_body(raw, CompletionRequest), request, raw)

    @app.api_route("/generate", methods=["POST", "PUT"])
    async def generate(request: Request) -> Any:
        raw = await request.body()
        req = parse_body(raw, GenerateRequest)
        return await native.generate(service, req, req.model_dump(exclude_unset=True), request)

    @app.get("/get_model_info")
    @app.get("/model_info")
    async def model_info() -> dict[str, Any]:
        return await native.model_info(service)

    @app.api_route("/flush_cache", methods=["GET", "POST"])
    async def flush_cache() -> dict[str, Any]:
        return await native.flush_cache(service)

    return app


def add_parser(sub: Any) -> None:
    from relaygen_sgl.pair_args import add_pair_args

    p = sub.add_parser(
        "serve",
        help="OpenAI-compatible and native RelayGen endpoint in front of runtimes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_pair_args(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--answer-model", choices=("small", "large"), default="small")
    p.add_argument("--default-max-tokens", type=int, default=1024)
    p.add_argument("--max-input-tokens", type=int, default=8192, help="longer inputs get HTTP 400")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from contextlib import ExitStack

    import uvicorn

    from relaygen_sgl.pair_args import open_pair, profile_from_args

    profile = profile_from_args(args)
    with ExitStack() as stack:
        large, small = open_pair(args, stack, profile)
        config = ServerConfig(
            large_url=large,
            small_url=small,
            profile=profile,
            answer_model=args.answer_model,
            default_max_tokens=args.default_max_tokens,
            max_input_tokens=args.max_input_tokens,
        )
        uvicorn.run(
            create_app(config), host=args.host, port=args.port, log_level="warning", timeout_keep_alive=30
        )
    return 0
