"""The relay server: thin routes over :mod:`.service`, :mod:`.openai_api` and :mod:`.native`.

OpenAI-compatible ``/v1/chat/completions``, ``/v1/completions`` (SSE streaming or not) and
``/v1/models``; SGLang's native ``/generate``, ``/get_model_info``, ``/flush_cache``;
``/health`` (503 until the tokenizers and model info are loaded), ``/metrics`` (Prometheus), and
what sglang-router asks of a worker (``/server_info``, ``/get_load``, ...).  The model id picks
the mode: ``relaygen`` (relay), ``relaygen-large-only``, ``relaygen-small-only``.  Responses
carry the relay stats in an extra ``relaygen`` field (``response.model_extra["relaygen"]`` with
the openai client).  ``--workers N`` serves from N processes on one port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from relaygen_sgl.serving import native, openai_api, worker_api
from relaygen_sgl.serving.errors import APIError, ClientGone, parse_body
from relaygen_sgl.serving.metrics import CONTENT_TYPE, MULTIPROC_ENV, ServerMetrics, multiproc_dir
from relaygen_sgl.serving.protocol import (
    MODEL_MODES,
    ChatCompletionRequest,
    CompletionRequest,
    GenerateRequest,
    ModelCard,
    ModelList,
)
from relaygen_sgl.serving.service import RelayService, ServerConfig

logger = logging.getLogger(__name__)
# Status nginx uses for "client closed the request"; nobody reads it, but logs do.
CLIENT_CLOSED = 499
READY_RETRY_S = 1.0  # how often start-up loading is tried again while a runtime is not answering
# Where `relaygen serve --workers N` tells its worker processes their configuration (a JSON file).
CONFIG_ENV = "RELAYGEN_SERVE_CONFIG"


def create_app(config: ServerConfig, metrics: ServerMetrics | None = None) -> FastAPI:
    """The relay server's app.  ``metrics``: its own by default (multiprocess when the
    environment says this is one of several worker processes)."""
    metrics = metrics or ServerMetrics(multiproc_dir())
    service = RelayService(config, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # noqa: ANN202
        loading = asyncio.create_task(_become_ready(service))
        try:
            yield
        finally:
            loading.cancel()
            await asyncio.gather(loading, return_exceptions=True)
            await service.pair.aclose()
            metrics.process_exit()

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
    @app.get("/health_generate")
    async def health() -> JSONResponse:
        if not service.ready:  # the first request would wait for tokenizers and model info
            return JSONResponse({"status": "starting"}, status_code=503)
        pools = await service.health()
        ok = all(p["ok"] for p in pools.values())  # 503 as long as either model has no live worker
        return JSONResponse({"status": "ok" if ok else "degraded", **pools}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

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

    app.include_router(worker_api.router(service))
    return app


async def _become_ready(service: RelayService) -> None:
    """Load tokenizers and model info at start-up, again and again while a runtime is not up."""
    failures = 0
    while True:
        try:
            await service.warm_up()
            if failures:
                logger.info("the runtimes answer; ready")
            return
        except Exception as e:  # noqa: BLE001 - any fault: not ready yet, said once in the log
            if failures == 0:
                logger.warning("not ready yet (tried again every %.0f s): %s", READY_RETRY_S, e)
            failures += 1
        await asyncio.sleep(READY_RETRY_S)


def app_from_environment() -> FastAPI:
    """The app of one worker process of ``relaygen serve --workers N`` (uvicorn's factory)."""
    config = ServerConfig.from_dict(json.loads(Path(os.environ[CONFIG_ENV]).read_text()))
    return create_app(config)


def _worker_count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of processes, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (one worker process), got {n}")
    return n


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
    p.add_argument(
        "--workers",
        type=_worker_count,
        default=1,
        help="worker processes serving on the one port, each with its own runtime clients "
        "(their /metrics summed)",
    )
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
        server = {"host": args.host, "port": args.port, "log_level": "warning", "timeout_keep_alive": 30}
        if args.workers == 1:
            uvicorn.run(create_app(config), **server)
            return 0
        # Each worker process builds its own app (clients, pair) from the configuration file, and
        # writes its metrics where the others do: set before they start (and import prometheus-client).
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="relaygen-serve-")))
        (tmp / "metrics").mkdir()
        (tmp / "config.json").write_text(json.dumps(config.to_dict()))
        os.environ[MULTIPROC_ENV] = str(tmp / "metrics")
        os.environ[CONFIG_ENV] = str(tmp / "config.json")
        uvicorn.run(f"{__name__}:app_from_environment", factory=True, workers=args.workers, **server)
    return 0
