"""Typed request and response models of the relay server (pydantic), after SGLang's
``srt/entrypoints/openai/protocol.py``: the OpenAI routes and SGLang's native ``/generate``.

Unknown request fields are ignored, as the OpenAI API does; a malformed known field is a
400 naming it (see :mod:`relaygen_sgl.serving.errors`).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from relaygen_sgl.relay.types import Mode

MODEL_MODES: dict[str, Mode] = {
    "relaygen": "relay",
    "relaygen-large-only": "large_only",
    "relaygen-small-only": "small_only",
}
MAX_STOP = 16
MAX_N = 16
MAX_LOGIT_BIAS = 100.0  # OpenAI's range for a logit_bias value


def _logit_bias(v: dict[str, float] | None) -> dict[str, float] | None:
    """OpenAI's ``logit_bias``: token id (a decimal string) -> bias in [-100, 100]."""
    for token, bias in (v or {}).items():
        if not token.isdigit():
            raise ValueError(f"logit_bias keys must be token ids, got {token!r}")
        if not -MAX_LOGIT_BIAS <= bias <= MAX_LOGIT_BIAS:
            raise ValueError(f"logit_bias values must be in [-100, 100], got {bias} for token {token}")
    return v


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Request):
    include_usage: bool = False


class SamplingRequest(_Request):
    """The sampling fields both OpenAI routes share."""

    model: str = "relaygen"
    max_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = None
    min_p: float | None = Field(default=None, ge=0, le=1)
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool | None = None  # SGLang extension, for benchmarks
    top_cues: int | None = Field(default=None, ge=1)  # relay extension: switch on the profile's best K cues
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    # SGLang's extensions of the OpenAI API.  Those a relay cannot split send the request to one
    # runtime as it came (relaygen_sgl.relay.request_rules.direct_reason).
    repetition_penalty: float | None = None
    min_tokens: int | None = Field(default=None, ge=0)
    stop_token_ids: list[int] | None = None
    stop_regex: str | list[str] | None = None
    regex: str | None = None
    ebnf: str | None = None
    json_schema: str | None = None
    response_format: dict[str, Any] | None = None
    # Sent with every call to both models: token ids mean the same tokens only when they share a tokenizer.
    logit_bias: dict[str, float] | None = None

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        return _logit_bias(v)

    @field_validator("top_k")
    @classmethod
    def _top_k(cls, v: int | None) -> int | None:
        if v is not None and v != -1 and v < 1:
            raise ValueError("top_k must be -1 (off) or at least 1")
        return v

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > MAX_STOP or any(not s for s in stops):
            raise ValueError(f"stop must be up to {MAX_STOP} non-empty strings")
        return v

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def native_view(self, index: int = 0) -> dict[str, Any]:
        """Choice ``index`` of this request as SGLang's native ``/generate`` body (without its
        prompt): what the request rules read.  Choice ``index`` of ``n`` gets seed + index."""
        schema = self.json_schema or _response_schema(self.response_format)
        sp: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens(),
            "min_new_tokens": self.min_tokens,
            "stop": self.stop,
            "stop_token_ids": self.stop_token_ids,
            "stop_regex": self.stop_regex,
            "regex": self.regex,
            "ebnf": self.ebnf,
            "json_schema": schema,
        }
        for name in (
            "temperature",
            "top_p",
            "top_k",
            "min_p",
            "ignore_eos",
            "frequency_penalty",
            "presence_penalty",
            "repetition_penalty",
            "logit_bias",
        ):
            sp[name] = getattr(self, name)
        if self.seed is not None:
            sp["sampling_seed"] = self.seed + index
        body: dict[str, Any] = {"sampling_params": {k: v for k, v in sp.items() if v is not None}, "text": ""}
        if self.wants_logprobs:
            body["return_logprob"] = True
        if self.has_images:
            body["image_data"] = True
        return body

    def max_new_tokens(self) -> int | None:
        return self.max_tokens

    @property
    def wants_logprobs(self) -> bool:
        return False

    @property
    def has_images(self) -> bool:
        return False


def _response_schema(fmt: dict[str, Any] | None) -> str | None:
    """The JSON schema an OpenAI ``response_format`` constrains the output to, if any."""
    if not fmt or fmt.get("type") not in ("json_schema", "json_object"):
        return None
    schema = (fmt.get("json_schema") or {}).get("schema") or {"type": "object"}
    return json.dumps(schema)


class ContentPart(_Request):
    type: str = "text"
    text: str | None = None
    image_url: Any = None


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # OpenAI content parts: keep the text ones
            return "".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    chat_template_kwargs: dict[str, Any] | None = None
    separate_reasoning: bool = True
    # Token logprobs are one model's: such requests go to one runtime whole (see serving.openai_api).
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def wants_logprobs(self) -> bool:
        return self.logprobs

    @property
    def has_images(self) -> bool:
        return any(
            isinstance(m.content, list) and any(p.type != "text" for p in m.content) for m in self.messages
        )

    def plain_messages(self) -> list[dict[str, str]]:
        role = {"developer": "system"}
        return [{"role": role.get(m.role, m.role), "content": m.text()} for m in self.messages]


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=5)  # the legacy API's limit; one runtime's

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: Any) -> Any:
        if v == "" or v == [] or (isinstance(v, list) and any(p in ("", []) for p in v)):
            raise ValueError("prompt must not be empty")
        return v

    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: a string or a list of token ids."""
        v = self.prompt
        if isinstance(v, str):
            return [v]
        if v and isinstance(v[0], int):
            return [list(v)]  # type: ignore[arg-type]
        return list(v)  # type: ignore[arg-type]

    @property
    def wants_logprobs(self) -> bool:
        return self.logprobs is not None


class NativeSamplingParams(_Request):
    model_config = ConfigDict(extra="allow")  # passed through when the request goes to a runtime
    max_new_tokens: int | None = Field(default=None, ge=0)
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = None
    min_p: float | None = Field(default=None, ge=0, le=1)
    stop: str | list[str] | None = None
    stop_regex: str | list[str] | None = None
    ignore_eos: bool | None = None
    sampling_seed: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    repetition_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    skip_special_tokens: bool | None = None
    spaces_between_special_tokens: bool | None = None
    no_stop_trim: bool | None = None
    n: int | None = Field(default=None, ge=1)
    min_new_tokens: int | None = Field(default=None, ge=0)
    stop_token_ids: list[int] | None = None
    # Constrained decoding cannot cross a model switch: such requests go to the large runtime.
    regex: str | None = None
    json_schema: str | None = None
    ebnf: str | None = None


class GenerateRequest(_Request):
    """SGLang's native ``/generate`` body (the fields the relay understands)."""

    model_config = ConfigDict(extra="allow")  # everything else is passed through when proxied
    text: str | list[str] | None = None
    input_ids: list[int] | list[list[int]] | None = None
    sampling_params: NativeSamplingParams = Field(default_factory=NativeSamplingParams)
    stream: bool = False
    rid: str | None = None
    return_logprob: bool | None = None
    top_cues: int | None = Field(default=None, ge=1)  # relay extension, as on the OpenAI routes


# -- responses -------------------------------------------------------------------------------
class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


class PromptTokensDetails(_Response):
    cached_tokens: int = 0


class CompletionTokensDetails(_Response):
    reasoning_tokens: int = 0


class Usage(_Response):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails = Field(default_factory=PromptTokensDetails)
    completion_tokens_details: CompletionTokensDetails = Field(default_factory=CompletionTokensDetails)


class AssistantMessage(_Response):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    reasoning_content: str | None = None


class ChatChoice(_Response):
    index: int
    message: AssistantMessage
    finish_reason: str | None
    logprobs: None = None


class ChatCompletionResponse(_Response):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[ChatChoice]
    usage: Usage
    relaygen: dict[str, Any] | list[dict[str, Any]]


class DeltaMessage(_Response):
    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    relaygen_model: str | None = None  # which model wrote this delta: "large" or "small"


class ChatStreamChoice(_Response):
    index: int
    delta: DeltaMessage
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(_Response):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatStreamChoice]
    usage: Usage | None = None


class CompletionChoice(_Response):
    index: int
    text: str
    finish_reason: str | None
    logprobs: None = None
    relaygen_model: str | None = None  # streaming only: which model wrote this text


class CompletionResponse(_Response):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(_Response):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=now)
    owned_by: str = "relaygen"


class ModelList(_Response):
    object: Literal["list"] = "list"
    data: list[ModelCard]
