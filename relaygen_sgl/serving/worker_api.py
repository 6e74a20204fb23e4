"""What sglang-router asks of a worker, so relay servers can stand behind one (each relay server
one worker of the router, all in front of the same runtimes).

sglang-router 0.3.2 registers a worker with ``GET /server_info`` and ``GET /model_info`` (its
model id, tokenizer path, data-parallel size), checks it with ``GET /health``, reads its load
from ``GET /get_load`` (SGLang's per-rank list: ``num_reqs``, ``num_tokens``, ...) and forwards
``/generate``, ``/v1/chat/completions``, ``/v1/completions``, ``/get_model_info`` and
``/flush_cache`` to it; ``/v1/models`` and ``/health_generate`` it answers itself.  The older
names (``/get_server_info``) and SGLang's ``/v1/loads`` are here too.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter

import relaygen_sgl
from relaygen_sgl.serving.service import RelayService


def router(service: RelayService) -> APIRouter:
    api = APIRouter()

    @api.get("/server_info")
    @api.get("/get_server_info")
    async def server_info() -> dict[str, Any]:
        """SGLang's fields a router reads (known without asking a runtime, so this answers while
        they are down), and the relay server's own: its settings, readiness, and this process."""
        config = service.config
        info = service.model_info  # read at start-up (see RelayService.warm_up)
        running, prompt_tokens = service.metrics.in_flight()
        return {
            "model_path": info.get("model_path"),
            "tokenizer_path": info.get("tokenizer_path") or info.get("model_path"),
            "served_model_name": "relaygen",
            "dp_size": 1,
            "version": relaygen_sgl.__version__,
            "relaygen": {
                "ready": service.ready,
                "pid": os.getpid(),
                "large_url": config.large_url,
                "small_url": config.small_url,
                "profile": config.profile.name or config.profile.large_model,
                "answer_model": config.answer_model,
                "default_max_tokens": config.default_max_tokens,
                "max_input_tokens": config.max_input_tokens,
                "requests_running": running,
                "running_prompt_tokens": prompt_tokens,
            },
        }

    @api.get("/get_load")
    async def get_load() -> list[dict[str, int]]:
        """SGLang's shape: one entry per data-parallel rank (a relay server is one), over all of
        this server's worker processes."""
        running, prompt_tokens = service.metrics.in_flight()
        return [{"dp_rank": 0, "num_reqs": running, "num_waiting_reqs": 0, "num_tokens": prompt_tokens}]

    @api.get("/v1/loads")
    async def loads() -> dict[str, list[dict[str, int]]]:
        running, prompt_tokens = service.metrics.in_flight()
        load = {
            "dp_rank": 0,
            "num_running_reqs": running,
            "num_waiting_reqs": 0,
            "num_used_tokens": prompt_tokens,
        }
        return {"loads": [load]}

    return api
