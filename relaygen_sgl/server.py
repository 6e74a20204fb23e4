"""OpenAI-compatible RelayGen endpoint in front of two SGLang runtimes.

Routes: ``/v1/chat/completions`` and ``/v1/completions`` (SSE streaming or
not), ``/v1/models``, ``/health``.  The model id picks the mode:
``relaygen`` (relay), ``relaygen-large-only``, ``relaygen-small-only``.  Each
response carries the relay stats in an extra ``relaygen`` field, which the
official ``openai`` client keeps (``response.model_extra["relaygen"]``).

Chat responses put the reasoning in ``message.reasoning_content`` and the
text after ``</think>`` in ``message.content``, as SGLang's reasoning parser
and DeepSeek's API do.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from relaygen_sgl.profile import CueProfile
from relaygen_sgl.relay import THINK_END, RelayError, RelayResult, Segment, relay_generate, runtimes_used
from relaygen_sgl.runtime_client import RuntimeClient, RuntimeRequestError, RuntimeUnavailable

MODEL_MODES = {"relaygen": "relay", "relaygen-large-only": "large_only", "relaygen-small-only": "small_only"}


@dataclass
class ServerConfig:
    large_url: str
    small_url: str
    profile: CueProfile
    answer_model: str = "small"
    default_max_tokens: int = 1024
    max_input_tokens: int = 8192


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def response(self) -> JSONResponse:
        err = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return JSONResponse({"error": err}, status_code=self.status)


def _positive_int(body: dict[str, Any], *names: str, default: int) -> int:
    for name in names:
        if body.get(name) is not None:
            v = body[name]
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise APIError(400, f"'{name}' must be a positive integer, got {v!r}", param=name)
            return v
    return default


def _sampling(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, key, kind in (("temperature", "temperature", (int, float)), ("top_p", "top_p", (int, float)),
                            ("top_k", "top_k", int), ("min_p", "min_p", (int, float)),
                            ("seed", "sampling_seed", int)):  # fmt: skip
        v = body.get(name)
        if v is None:
            continue
        if not isinstance(v, kind) or isinstance(v, bool):
            raise APIError(400, f"'{name}' has the wrong type: {v!r}", param=name)
        out[key] = v
    if body.get("ignore_eos") is not None:  # SGLang extension, for benchmarks
        if not isinstance(body["ignore_eos"], bool):
            raise APIError(400, "'ignore_eos' must be true or false", param="ignore_eos")
        out["ignore_eos"] = body["ignore_eos"]
    if "temperature" in out and not 0 <= out["temperature"] <= 2:
        raise APIError(400, "'temperature' must be between 0 and 2", param="temperature")
    if body.get("n", 1) != 1:
        raise APIError(400, "only n=1 is supported", param="n")
    return out


class RelayService:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.large = RuntimeClient.of(config.large_url, "large")
        self.small = RuntimeClient.of(config.small_url, "small")

    def mode_for(self, body: dict[str, Any]) -> str:
        model = body.get("model", "relaygen")
        if model not in MODEL_MODES:
            raise APIError(404, f"The model '{model}' does not exist (available: {', '.join(MODEL_MODES)})",
                           param="model", code="model_not_found")  # fmt: skip
        return MODEL_MODES[model]

    def check_input(self, text: str, mode: str) -> None:
        # Count with every tokenizer that will prefill this input (the pair's may differ).
        clients = {"large": self.large, "small": self.small}
        n = max(len(clients[role].tokenizer.encode(text)) for role in runtimes_used(mode))
        if n > self.config.max_input_tokens:
            limit = self.config.max_input_tokens
            raise APIError(400, f"The input is {n} tokens; this server accepts at most {limit}.",
                           param="messages", code="context_length_exceeded")  # fmt: skip

    def run(self, *, prompt: str | None, messages: list | None, body: dict[str, Any],
            on_segment: Any = None) -> RelayResult:  # fmt: skip
        return relay_generate(
            prompt, messages=messages, large=self.large, small=self.small, profile=self.config.profile,
            sampling=_sampling(body), mode=self.mode_for(body),  # type: ignore[arg-type]
            max_tokens=_positive_int(body, "max_completion_tokens", "max_tokens",
                                     default=self.config.default_max_tokens),
            answer_model=self.config.answer_model, on_segment=on_segment,  # type: ignore[arg-type]
        )  # fmt: skip


def _finish(r: RelayResult) -> str:
    return "length" if r.stats.finish_reason == "length" else "stop"


def _usage(r: RelayResult) -> dict[str, int]:
    prompt = r.stats.calls[0].prompt_tokens if r.stats.calls else 0
    return {"prompt_tokens": prompt, "completion_tokens": r.stats.output_tokens,
            "total_tokens": prompt + r.stats.output_tokens}  # fmt: skip


def _stats(r: RelayResult) -> dict[str, Any]:
    return r.stats.to_dict()


def _validate_messages(body: dict[str, Any]) -> list[dict[str, str]]:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise APIError(400, "'messages' must be a non-empty list", param="messages")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise APIError(400, f"messages[{i}] needs a role of system, user or assistant", param="messages")
        content = m.get("content")
        if isinstance(content, list):  # OpenAI content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise APIError(400, f"messages[{i}].content must be a string", param="messages")
        out.append({"role": m["role"], "content": content})
    return out


def create_app(config: ServerConfig) -> FastAPI:
    app = FastAPI(title="relaygen-sgl")
    service = RelayService(config)

    async def parse(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise APIError(400, f"The request body is not valid JSON: {e}") from e
        if not isinstance(body, dict):
            raise APIError(400, "The request body must be a JSON object")
        return body

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.get("/health")
    async def health() -> JSONResponse:
        large, small = await asyncio.gather(asyncio.to_thread(service.large.health),
                                            asyncio.to_thread(service.small.health))  # fmt: skip
        ok = large and small
        return JSONResponse({"status": "ok" if ok else "degraded", "large": large, "small": small},
                            status_code=200 if ok else 503)  # fmt: skip

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        now = int(time.time())
        data = [{"id": m, "object": "model", "created": now, "owned_by": "relaygen"} for m in MODEL_MODES]
        return {"object": "list", "data": data}

    async def handle(request: Request, chat: bool) -> Any:
        body = await parse(request)
        mode = service.mode_for(body)
        _positive_int(body, "max_completion_tokens", "max_tokens", default=1)
        _sampling(body)
        if chat:
            messages, prompt = _validate_messages(body), None
            text_in = "".join(m["content"] for m in messages)
        else:
            prompt, messages = body.get("prompt"), None
            if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
                prompt = prompt[0]
            if not isinstance(prompt, str) or not prompt:
                raise APIError(400, "'prompt' must be a non-empty string", param="prompt")
            text_in = prompt
        try:
            await asyncio.to_thread(service.check_input, text_in, mode)
        except (RuntimeUnavailable, RuntimeRequestError) as e:
            raise APIError(503, f"runtime unavailable: {e}", "service_unavailable") from e
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        model = body.get("model", "relaygen")
        if body.get("stream"):
            return StreamingResponse(stream(rid, model, chat, prompt, messages, body),
                                     media_type="text/event-stream")  # fmt: skip
        try:
            r = await asyncio.to_thread(service.run, prompt=prompt, messages=messages, body=body)
        except RelayError as e:
            raise APIError(503, str(e), "service_unavailable") from e
        created = int(time.time())
        if chat:
            reasoning, sep, answer = r.text.partition(THINK_END)
            message = {"role": "assistant", "content": answer.strip() if sep else "",
                       "reasoning_content": reasoning if sep else r.text}  # fmt: skip
            choice = {"index": 0, "message": message, "finish_reason": _finish(r), "logprobs": None}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": r.text, "finish_reason": _finish(r), "logprobs": None}
            obj = "text_completion"
        return {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice],
                "usage": _usage(r), "relaygen": _stats(r)}  # fmt: skip

    async def stream(rid: str, model: str, chat: bool, prompt: str | None, messages: list | None,
                     body: dict[str, Any]) -> AsyncIterator[str]:  # fmt: skip
        q: queue.Queue[Any] = queue.Queue()
        done = object()
        created = int(time.time())

        def worker() -> None:
            try:
                q.put(service.run(prompt=prompt, messages=messages, body=body, on_segment=q.put))
            except Exception as e:  # noqa: BLE001 - reported to the client as an SSE error
                q.put(e)
            finally:
                q.put(done)

        threading.Thread(target=worker, daemon=True).start()
        obj = "chat.completion.chunk" if chat else "text_completion"
        in_answer = sent_content = False

        def chunk(delta: dict[str, Any] | str, finish: str | None = None, **extra: Any) -> str:
            if chat:
                choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            else:
                choice = {"index": 0, "text": delta, "finish_reason": finish, "logprobs": None}
            data = {
                "id": rid,
                "object": obj,
                "created": created,
                "model": model,
                "choices": [choice],
                **extra,
            }
            return f"data: {json.dumps(data)}\n\n"

        if chat:
            yield chunk({"role": "assistant", "content": ""})
        result: RelayResult | None = None
        while True:
            item = await asyncio.to_thread(q.get)
            if item is done:
                break
            if isinstance(item, Exception):
                err = {"message": str(item), "type": "service_unavailable", "param": None, "code": None}
                yield f"data: {json.dumps({'error': err})}\n\n"
                break
            if isinstance(item, RelayResult):
                result = item
                continue
            seg: Segment = item
            if not chat:
                yield chunk(seg.text)
                continue
            text = seg.text
            if not in_answer and (THINK_END in text or seg.kind == "answer"):
                before, _, text = text.partition(THINK_END) if THINK_END in text else ("", "", text)
                if before:
                    yield chunk({"reasoning_content": before})
                in_answer = True
            if in_answer:
                # Match the non-streamed content, which is stripped of the blank line after </think>.
                text = text if sent_content else text.lstrip()
                sent_content = sent_content or bool(text)
            if text:
                yield chunk({"content": text} if in_answer else {"reasoning_content": text})
        if result is not None:
            yield chunk({} if chat else "", _finish(result), usage=_usage(result), relaygen=_stats(result))
        yield "data: [DONE]\n\n"

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await handle(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await handle(request, chat=False)

    return app


def add_parser(sub: Any) -> None:
    from relaygen_sgl.pair_args import add_pair_args

    p = sub.add_parser("serve", help="OpenAI-compatible RelayGen endpoint in front of two runtimes",
                       description=__doc__)  # fmt: skip
    add_pair_args(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--answer-model", choices=("small", "large"), default="small")
    p.add_argument("--default-max-tokens", type=int, default=1024)
    p.add_argument("--max-input-tokens", type=int, default=8192, help="longer inputs get HTTP 400")
    p.set_defaults(func=_serve)


def _serve(args: Any) -> int:
    from contextlib import ExitStack

    import uvicorn

    from relaygen_sgl.pair_args import open_pair

    profile = CueProfile.load(args.profile)
    with ExitStack() as stack:
        large, small = open_pair(args, stack)
        config = ServerConfig(large_url=large, small_url=small, profile=profile,
                              answer_model=args.answer_model, default_max_tokens=args.default_max_tokens,
                              max_input_tokens=args.max_input_tokens)  # fmt: skip
        uvicorn.run(create_app(config), host=args.host, port=args.port, log_level="warning")
    return 0
