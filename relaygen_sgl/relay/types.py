"""The relay's data: its options, what it produced, and what it measured."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Mode = Literal["relay", "large_only", "small_only", "random_switch"]
Role = Literal["large", "small"]
Kind = Literal["reasoning", "finish", "answer", "close"]
MODES: tuple[str, ...] = ("relay", "large_only", "small_only", "random_switch")

_BASELINE_ROLES: dict[str, tuple[Role, ...]] = {"large_only": ("large",), "small_only": ("small",)}


def roles_used(mode: str) -> tuple[Role, ...]:
    """The models a mode talks to: baselines touch one only, so they work while the other is down."""
    return _BASELINE_ROLES.get(mode, ("large", "small"))


class RelayError(RuntimeError):
    """A relay request could not complete; the message says which runtime failed (``role``)."""

    def __init__(self, message: str, role: Role | None = None) -> None:
        super().__init__(message)
        self.role = role


class Outcome(enum.Enum):
    """Why a turn ended, and so what the relay does next."""

    CUE = "cue"  # a kept cue: the small model finishes the sentence
    EARLY_CUE = "early_cue"  # a cue before min_large_tokens: the large model goes on
    THINK_END = "think_end"  # </think>: the answer model answers
    EOS = "eos"  # the model stopped
    LENGTH = "length"  # the token budget is spent
    STOP = "stop"  # one of the user's stop strings
    SENTENCE_END = "sentence_end"  # the finisher reached the end of its sentence


@dataclass(frozen=True)
class RelayConfig:
    """Everything a relay request is run with (one object instead of ten arguments)."""

    mode: Mode = "relay"
    max_tokens: int = 2048
    answer_model: Role = "small"
    sampling: dict[str, Any] = field(default_factory=dict)  # SGLang sampling params, both models
    stop: str | Sequence[str] = ()  # the user's stop strings, applied to the relayed output
    seed: int | None = None  # random_switch's positions
    switch_rate: float | None = None  # random_switch: switches per large token
    thinking: bool | None = None  # None: decide from the prompt and output (reasoning.thinks)

    def __post_init__(self) -> None:
        # One stop string or any sequence of them; the machine holds a tuple.
        object.__setattr__(self, "stop", (self.stop,) if isinstance(self.stop, str) else tuple(self.stop))
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.answer_model not in ("large", "small"):
            raise ValueError(f"answer_model must be 'large' or 'small', got {self.answer_model!r}")
        if self.mode == "random_switch" and not self.switch_rate:
            raise ValueError("mode='random_switch' needs switch_rate > 0")
        if not isinstance(self.max_tokens, int) or isinstance(self.max_tokens, bool) or self.max_tokens <= 0:
            raise ValueError(f"max_tokens must be a positive integer, got {self.max_tokens!r}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError("stop strings must be non-empty strings")


@dataclass
class Segment:
    role: Role  # the model that wrote it
    kind: Kind
    text: str
    num_tokens: int
    cue: str | None = None  # the cue that ended this (large) segment


@dataclass(frozen=True)
class Delta:
    """New output text, final (it is never taken back); streamed as it arrives."""

    role: Role  # the model that wrote it
    kind: Kind
    text: str


@dataclass
class CallRecord:
    role: Role  # the model called
    kind: str
    rid: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    kept_tokens: int
    latency_s: float
    spec_accept_length: float | None = None


@dataclass
class RelayStats:
    mode: str
    handoff: str  # "ids" or "text"
    large_tokens: int = 0
    small_tokens: int = 0
    switches: int = 0
    discarded_tokens: int = 0  # generated past a sentence end and dropped
    large_time_s: float = 0.0
    small_time_s: float = 0.0
    latency_s: float = 0.0
    finish_reason: str = ""  # "stop" or "length", as OpenAI reports it
    outcome: str = ""  # why the last turn ended (an Outcome value)
    cue_counts: dict[str, int] = field(default_factory=dict)
    calls: list[CallRecord] = field(default_factory=list)

    @property
    def output_tokens(self) -> int:
        return self.large_tokens + self.small_tokens

    @property
    def large_utilization(self) -> float:
        return self.large_tokens / self.output_tokens if self.output_tokens else 0.0

    @property
    def prompt_tokens(self) -> int:
        """The first call's prompt: what the user sent, templated."""
        return self.calls[0].prompt_tokens if self.calls else 0

    @property
    def cached_tokens(self) -> int:
        return sum(c.cached_tokens for c in self.calls)

    @property
    def spec_accept_length(self) -> float | None:
        """Mean accepted tokens per verify step of the large runtime, when it speculates."""
        calls = [c for c in self.calls if c.role == "large" and c.spec_accept_length]
        if not calls:
            return None
        tokens = sum(c.completion_tokens for c in calls)
        steps = sum(c.completion_tokens / c.spec_accept_length for c in calls)  # type: ignore[operator]
        return tokens / steps if steps else None

    def summary(self) -> dict[str, Any]:
        """The one projection of the stats that responses, evals, the demo and benches report."""
        return {
            "mode": self.mode,
            "handoff": self.handoff,
            "output_tokens": self.output_tokens,
            "large_tokens": self.large_tokens,
            "small_tokens": self.small_tokens,
            "large_utilization": round(self.large_utilization, 4),
            "switches": self.switches,
            "discarded_tokens": self.discarded_tokens,
            "latency_s": round(self.latency_s, 4),
            "large_time_s": round(self.large_time_s, 4),
            "small_time_s": round(self.small_time_s, 4),
            "finish_reason": self.finish_reason,
            "outcome": self.outcome,
            "cue_counts": dict(self.cue_counts),
            "spec_accept_length": self.spec_accept_length,
            "calls": len(self.calls),
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything, per-call records included."""
        d = asdict(self)
        d.update(self.summary())
        d["calls"] = [asdict(c) for c in self.calls]
        return d


@dataclass
class RelayResult:
    text: str
    segments: list[Segment]
    stats: RelayStats
    reasoning: str = ""
    answer: str = ""
    output_ids: list[int] | None = None  # only with token-id handoff
    reasoning_tokens: int = 0  # tokens before the answer, in a thinking generation
    thinking: bool = False  # the machine's decision: a thinking generation (reasoning.thinks)
