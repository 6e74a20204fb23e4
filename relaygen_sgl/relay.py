"""The relay loop: large model reasons, small model finishes cue-led sentences.

One function, :func:`relay_generate`, drives two SGLang runtimes through their
native ``/generate`` API:

1. the *reasoner* (large) generates with the profile's cue regexes as
   ``stop_regex`` and ``</think>`` as a stop string;
2. on a cue (and only after ``min_large_tokens`` tokens of this large turn;
   SGLang's ``min_new_tokens`` does not hold stop strings back, so an early cue
   just continues the turn) the *finisher* (small) continues until the sentence
   ends, at most ``max_small_tokens`` tokens; then back to 1;
3. after ``</think>`` the *answerer* (small by default) writes the answer.

Each runtime is always sent the full context (its own prompt + everything
generated so far), so RadixAttention serves all it has seen from cache and a
switch only prefills the other model's newest tokens.  When both tokenizers
are identical the context travels as token ids, else as text.

The baselines ``large_only`` and ``small_only`` run through the same loop with
no cues, so their numbers are directly comparable.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from relaygen_sgl.cues import CueMatcher
from relaygen_sgl.profile import CueProfile
from relaygen_sgl.runtime_client import (
    GenerateResult,
    RuntimeClient,
    RuntimeRequestError,
    RuntimeUnavailable,
)

Mode = Literal["relay", "large_only", "small_only", "random_switch"]
Role = Literal["large", "small"]
MODES: tuple[str, ...] = ("relay", "large_only", "small_only", "random_switch")


_BASELINE_RUNTIMES: dict[str, tuple[Role, ...]] = {"large_only": ("large",), "small_only": ("small",)}


def runtimes_used(mode: str) -> tuple[Role, ...]:
    """The runtimes a mode talks to: baselines touch one only, so they work while the other is down."""
    return _BASELINE_RUNTIMES.get(mode, ("large", "small"))


THINK_END = "</think>"
_CTX_CHARS = 16  # prior text handed to the sentence-end rule (abbreviation lookbehinds)


class RelayError(RuntimeError):
    """A relay request could not complete; the message says which runtime failed."""


@dataclass
class Segment:
    model: Role
    kind: Literal["reasoning", "finish", "answer"]
    text: str
    num_tokens: int
    cue: str | None = None  # the cue that ended this (large) segment


@dataclass
class CallRecord:
    runtime: Role
    kind: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    kept_tokens: int
    latency_s: float


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
    finish_reason: str = ""
    cue_counts: dict[str, int] = field(default_factory=dict)
    calls: list[CallRecord] = field(default_factory=list)

    @property
    def output_tokens(self) -> int:
        return self.large_tokens + self.small_tokens

    @property
    def large_utilization(self) -> float:
        return self.large_tokens / self.output_tokens if self.output_tokens else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["output_tokens"] = self.output_tokens
        d["large_utilization"] = round(self.large_utilization, 4)
        return d


@dataclass
class RelayResult:
    text: str
    segments: list[Segment]
    stats: RelayStats
    reasoning: str = ""
    answer: str = ""
    output_ids: list[int] | None = None  # only with token-id handoff


@dataclass
class _Context:
    """What each runtime is sent: its own prompt plus the shared output."""

    prompt_ids: dict[Role, list[int]] | None
    prompt_text: dict[Role, str]
    output_ids: list[int] = field(default_factory=list)
    output_text: str = ""

    def request(self, role: Role) -> dict[str, Any]:
        if self.prompt_ids is not None:
            return {"input_ids": self.prompt_ids[role] + self.output_ids}
        return {"text": self.prompt_text[role] + self.output_text}


_SAME_TOKENIZER: dict[tuple[str, str], bool] = {}


def same_tokenizer(a: RuntimeClient, b: RuntimeClient) -> bool:
    """True when token ids mean the same thing on both runtimes (cached per URL pair)."""
    key = (a.url, b.url)
    if key not in _SAME_TOKENIZER:
        ta, tb = a.tokenizer, b.tokenizer
        _SAME_TOKENIZER[key] = a.url == b.url or (len(ta) == len(tb) and ta.get_vocab() == tb.get_vocab())
    return _SAME_TOKENIZER[key]


def _prompts(
    prompt: str | None,
    messages: Sequence[dict[str, str]] | None,
    clients: dict[Role, RuntimeClient],
) -> dict[Role, str]:
    if (prompt is None) == (messages is None):
        raise ValueError("pass exactly one of prompt= or messages=")
    if prompt is not None:
        return {r: prompt for r in clients}
    if not messages:
        raise ValueError("messages must not be empty")
    # Each model gets its own chat template; only the generated text is shared.
    return {
        r: c.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        for r, c in clients.items()
    }


class _Relay:
    def __init__(
        self,
        clients: dict[Role, RuntimeClient],
        profile: CueProfile | None,
        mode: Mode,
        sampling: dict[str, Any],
        max_tokens: int,
        answer_model: Role,
        handoff: str,
        on_segment: Callable[[Segment], None] | None,
        seed: int | None,
        switch_rate: float | None,
    ) -> None:
        self.clients = clients
        self.mode = mode
        self.sampling = {k: v for k, v in sampling.items() if v is not None}
        self.remaining = max_tokens
        self.on_segment = on_segment
        self.stats = RelayStats(mode=mode, handoff=handoff)
        self.segments: list[Segment] = []
        self.cue_regexes = profile.stop_regexes() if profile and mode == "relay" else []
        self.matcher: CueMatcher | None = profile.matcher() if profile else None
        self.min_large = profile.min_large_tokens if profile else 0
        self.max_small = profile.max_small_tokens if profile else 64
        self.sentence_end = profile.sentence_end_regex if profile else None
        self.reasoner: Role = "small" if mode == "small_only" else "large"
        self.answerer: Role = answer_model if mode in ("relay", "random_switch") else self.reasoner
        self.rng = random.Random(seed)
        self.switch_rate = switch_rate  # switches per large token, for random_switch

    # -- calls -------------------------------------------------------------
    def _call(self, role: Role, ctx: _Context, kind: str, max_new: int, **sp: Any) -> GenerateResult:
        params = {**self.sampling, **sp, "max_new_tokens": max_new, "no_stop_trim": True}
        try:
            res = self.clients[role].generate(**ctx.request(role), sampling_params=params)
        except Exception as e:
            raise RelayError(f"{role} runtime failed during the {kind} step: {e}") from e
        self.stats.calls.append(
            CallRecord(role, kind, res.prompt_tokens, res.cached_tokens,
                       res.completion_tokens, res.completion_tokens, res.latency_s)
        )  # fmt: skip
        if role == "large":
            self.stats.large_time_s += res.latency_s
        else:
            self.stats.small_time_s += res.latency_s
        return res

    def _append(self, ctx: _Context, role: Role, kind: str, text: str, ids: list[int],
                cue: str | None = None) -> None:  # fmt: skip
        if not text and not ids:
            return
        ctx.output_text += text
        ctx.output_ids += ids
        n = len(ids)
        if role == "large":
            self.stats.large_tokens += n
        else:
            self.stats.small_tokens += n
        self.remaining -= n
        if self.segments and self.segments[-1].model == role and self.segments[-1].kind == kind \
                and self.segments[-1].cue is None:  # fmt: skip
            # A large turn continued past an early cue: still one segment.
            seg = self.segments[-1]
            seg.text += text
            seg.num_tokens += n
            seg.cue = cue
        else:
            seg = Segment(role, kind, text, n, cue)  # type: ignore[arg-type]
            self.segments.append(seg)
        if self.on_segment:
            self.on_segment(Segment(role, kind, text, n, cue))  # type: ignore[arg-type]

    # -- phases ------------------------------------------------------------
    def large_turn(self, ctx: _Context) -> str:
        """Run the reasoner until a cue, </think>, EOS or the budget. Returns why it stopped."""
        turn_tokens = 0
        while self.remaining > 0:
            budget = self.remaining
            stop_regex = self.cue_regexes
            if self.mode == "random_switch" and self.switch_rate:
                # Control: switch after a geometric number of tokens at the measured rate.
                budget = min(budget, max(self.min_large, 1 + int(self.rng.expovariate(self.switch_rate))))
            res = self._call(self.reasoner, ctx, "reasoning", budget, stop=[THINK_END],
                             stop_regex=stop_regex or None)  # fmt: skip
            text, ids = res.text, res.output_ids
            think = text.find(THINK_END)
            if think >= 0 and res.matched != THINK_END:
                # SGLang sizes its stop-string window by the canonical tokenization, so a
                # "</think>" spelled in several tokens can slip through: cut after it here.
                text, ids = self._keep_prefix(self.reasoner, res, think + len(THINK_END))
                self.stats.discarded_tokens += len(res.output_ids) - len(ids)
                self.stats.calls[-1].kept_tokens = len(ids)
            cue = None
            matched_cue = res.finish_type == "stop" and isinstance(res.matched, str) \
                and res.matched in stop_regex  # fmt: skip
            if matched_cue and self.matcher is not None:
                hit = self.matcher.last(ctx.output_text[-_CTX_CHARS:] + text)
                cue = hit.cue if hit else "?"
            turn_tokens += len(ids)
            early = matched_cue and turn_tokens < self.min_large
            self._append(ctx, self.reasoner, "reasoning", text, ids, None if early else cue)
            if res.finish_type == "stop" and res.matched == THINK_END or THINK_END in text:
                return "think_end"
            if res.finish_type == "stop" and not matched_cue:
                return "eos"
            if matched_cue:
                if early:
                    continue  # cue before min_large_tokens: keep the large model going
                self.stats.cue_counts[cue or "?"] = self.stats.cue_counts.get(cue or "?", 0) + 1
                return "cue"
            if self.mode == "random_switch" and res.finish_type == "length" and self.remaining > 0:
                return "cue"
            return "length"
        return "length"

    def small_turn(self, ctx: _Context) -> None:
        """The finisher completes the current sentence (capped), then hands back."""
        budget = min(self.max_small, self.remaining)
        if budget <= 0:
            return
        res = self._call("small", ctx, "finish", budget, stop=[THINK_END],
                         stop_regex=[self.sentence_end] if self.sentence_end else None)  # fmt: skip
        text, ids = self._trim_to_sentence(ctx.output_text[-_CTX_CHARS:], res)
        self.stats.discarded_tokens += len(res.output_ids) - len(ids)
        self.stats.calls[-1].kept_tokens = len(ids)
        self.stats.switches += 1
        self._append(ctx, "small", "finish", text, ids)

    def answer(self, ctx: _Context) -> str:
        if self.remaining <= 0:
            return "length"
        res = self._call(self.answerer, ctx, "answer", self.remaining)
        self._append(ctx, self.answerer, "answer", res.text, res.output_ids)
        return "length" if res.finish_type == "length" else "stop"

    def _trim_to_sentence(self, before: str, res: GenerateResult) -> tuple[str, list[int]]:
        """Keep the finisher's output up to its first sentence end (or stop at </think>)."""
        text = res.text
        cut = len(text)
        think = text.find(THINK_END)
        if think >= 0:
            cut = think  # the finisher never ends the reasoning; the large model decides
        if self.sentence_end:
            m = re.compile(self.sentence_end).search(before + text, len(before))
            if m is not None:
                cut = min(cut, m.end() - len(before))
        return self._keep_prefix("small", res, cut, exclude=THINK_END)

    def _keep_prefix(
        self, role: Role, res: GenerateResult, cut: int, exclude: str | None = None
    ) -> tuple[str, list[int]]:
        """The smallest token prefix of ``res`` whose text covers ``text[:cut]``."""
        text, ids = res.text, res.output_ids
        if cut >= len(text):
            return text, ids
        tok = self.clients[role].tokenizer
        for k in range(1, len(ids) + 1):
            piece = tok.decode(ids[:k])
            if len(piece) >= cut:
                if exclude and exclude in piece:
                    k -= 1
                    piece = tok.decode(ids[:k])
                return piece, ids[:k]
        return text[:cut], ids

    def run(self, ctx: _Context) -> str:
        while self.remaining > 0:
            why = self.large_turn(ctx)
            if why == "cue":
                self.small_turn(ctx)
                continue
            if why == "think_end":
                return self.answer(ctx)
            return why
        return "length"


def relay_generate(
    prompt: str | None = None,
    *,
    messages: Sequence[dict[str, str]] | None = None,
    large: RuntimeClient | str | Any,
    small: RuntimeClient | str | Any,
    profile: CueProfile | None = None,
    sampling: dict[str, Any] | None = None,
    max_tokens: int = 2048,
    mode: Mode = "relay",
    answer_model: Role = "small",
    handoff: Literal["auto", "ids", "text"] = "auto",
    on_segment: Callable[[Segment], None] | None = None,
    seed: int | None = None,
    switch_rate: float | None = None,
) -> RelayResult:
    """Generate one output with RelayGen switching between two SGLang runtimes.

    ``sampling`` (temperature, top_p, top_k, min_p, sampling_seed, ...) is used
    for both models.  ``mode="random_switch"`` is the control: it hands off to
    the small model after a random number of large tokens (``switch_rate``
    switches per large token) instead of at cues.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if answer_model not in ("large", "small"):
        raise ValueError(f"answer_model must be 'large' or 'small', got {answer_model!r}")
    if mode == "relay" and profile is None:
        raise ValueError("mode='relay' needs a cue profile")
    if mode == "random_switch" and not switch_rate:
        raise ValueError("mode='random_switch' needs switch_rate > 0")
    if not isinstance(max_tokens, int) or max_tokens <= 0:
        raise ValueError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    clients: dict[Role, RuntimeClient] = {
        "large": RuntimeClient.of(large, "large"),
        "small": RuntimeClient.of(small, "small"),
    }
    t0 = time.perf_counter()
    used = runtimes_used(mode)
    try:
        if handoff == "auto":
            one = len(used) == 1
            handoff = "ids" if one or same_tokenizer(clients["large"], clients["small"]) else "text"
        prompt_text = _prompts(prompt, messages, {r: clients[r] for r in used})
    except (RuntimeUnavailable, RuntimeRequestError) as e:
        raise RelayError(f"could not prepare the relay: {e}") from e
    prompt_ids = None
    if handoff == "ids":
        tok = clients[used[0]].tokenizer
        # Chat templates already carry any BOS; raw prompts get the tokenizer's default.
        add_special = messages is None
        prompt_ids = {r: tok.encode(t, add_special_tokens=add_special) for r, t in prompt_text.items()}
    ctx = _Context(prompt_ids=prompt_ids, prompt_text=prompt_text)
    relay = _Relay(clients, profile, mode, sampling or {}, max_tokens, answer_model, handoff,
                   on_segment, seed, switch_rate)  # fmt: skip
    relay.stats.finish_reason = relay.run(ctx)
    relay.stats.latency_s = time.perf_counter() - t0
    text = ctx.output_text
    reasoning, sep, answer = text.partition(THINK_END)
    return RelayResult(
        text=text,
        segments=relay.segments,
        stats=relay.stats,
        reasoning=reasoning + sep if sep else text,
        answer=answer.strip() if sep else "",
        output_ids=ctx.output_ids if handoff == "ids" else None,
    )
