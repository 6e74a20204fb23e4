"""The relay as a sans-I/O state machine: it says which runtime to call with what, and
consumes what comes back.  It never touches the network, so one machine serves the driver
(:mod:`.drivers`, and its sync face), the server and the evals alike (as ``h11`` does for HTTP).

    m = RelayMachine(...)
    while (call := m.next_call()) is not None:
        try:
            for chunk in <stream POST call.role /generate call.body>:
                deltas = m.progress(call, chunk.text)   # final text, safe to show now
        except <runtime fault> as e:
            raise m.fail(call, e) from e                # a RelayError naming the runtime
        deltas = m.complete(call, TurnResult(...))      # what the call returned
    result = m.result()

A cancelled call is ``m.fail(call)``.  Callers read the machine through its methods and
properties (``prompt``, ``prompt_token_count``, ``thinking``, ``request_id``, ``error``),
not its bookkeeping.

The rules:

1. the *reasoner* (large) generates with the profile's cue regexes as ``stop_regex`` and
   ``</think>`` (plus the user's stop strings) as stop strings;
2. on a cue after more than ``min_large_tokens`` tokens of this large turn (vLLM's
   ``min_tokens`` rule, which the reference ran with: stops count only once a turn has more
   than that many tokens; an earlier cue just continues the turn) the *finisher* (small)
   continues until the sentence ends, at most ``max_small_tokens`` tokens; then back to 1;
3. after ``</think>`` the *answerer* (small by default) writes the answer, in which
   ``</think>`` is ordinary text.  A thinking model that stops before ``</think>`` gets its
   reasoning closed for it and the answerer answers, as the reference does.

Each runtime is always sent the full context (its own prompt + everything generated so
far), so RadixAttention serves all it has seen from cache and a switch only prefills the
other model's newest tokens.  With identical tokenizers the context travels as token ids.
Every call has its own ``rid`` (``<request id>-<n>``, fixed width, so no rid is a prefix
of another), which is what an abort names.
"""

from __future__ import annotations

import dataclasses
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, overload

from relaygen_sgl.cues import CueMatcher
from relaygen_sgl.profile import CueProfile
from relaygen_sgl.reasoning import THINK_END, split_reasoning, thinks
from relaygen_sgl.relay.types import (
    CallRecord,
    Delta,
    Kind,
    Outcome,
    RelayConfig,
    RelayError,
    RelayResult,
    RelayStats,
    Role,
    Segment,
)

_CTX_CHARS = 16  # prior text handed to the sentence-end rule (abbreviation lookbehinds)
CLOSE_THINK = "\n" + THINK_END + "\n\n"  # what a thinking model that stopped early gets appended


class Codec(Protocol):
    """The bits of a tokenizer the machine needs (pure computation, no I/O)."""

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


@dataclass(frozen=True)
class Call:
    """One ``/generate`` request the driver must make."""

    role: Role
    kind: Kind
    rid: str
    body: dict[str, Any]  # the JSON body, without "stream"


@dataclass(frozen=True)
class TurnResult:
    """What a finished ``/generate`` call returned; the driver builds it from its client's
    result (runtime.client.GenerateResult)."""

    text: str
    output_ids: list[int]
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    finish_type: str  # "stop" or "length"
    matched: str | int | None
    latency_s: float
    spec_accept_length: float | None = None


class RelayMachine:
    def __init__(
        self,
        *,
        config: RelayConfig,
        profile: CueProfile | None,
        prompts: dict[Role, str],
        prompt_ids: dict[Role, list[int]] | None,
        codecs: dict[Role, Codec],
        request_id: str,
    ) -> None:
        if config.mode == "relay" and profile is None:
            raise ValueError("mode='relay' needs a cue profile")
        self.config = config
        self.prompts = prompts
        self.prompt_ids = prompt_ids
        self.codecs = codecs
        self.request_id = request_id
        handoff = "ids" if prompt_ids is not None else "text"
        self.stats = RelayStats(mode=config.mode, handoff=handoff)
        self.segments: list[Segment] = []
        self.output_text = ""
        self.output_ids: list[int] = []
        self.remaining = config.max_tokens
        self.sampling = {k: v for k, v in config.sampling.items() if v is not None}
        self.cue_regexes = profile.stop_regexes() if profile and config.mode == "relay" else []
        self.matcher: CueMatcher | None = profile.matcher() if profile else None
        self.min_large = profile.min_large_tokens if profile else 0
        self.max_small = profile.max_small_tokens if profile else 64
        self.sentence_end = re.compile(profile.sentence_end_regex) if profile else None
        self.reasoner: Role = "small" if config.mode == "small_only" else "large"
        relaying = config.mode in ("relay", "random_switch")
        self.answerer: Role = config.answer_model if relaying else self.reasoner
        self._thinking = config.thinking
        self.rng = random.Random(config.seed)
        # The phase is the kind of the next call; None once the relay is done.
        self.phase: Kind | None = "reasoning"
        self.turn_tokens = 0  # tokens of the current large turn, across early-cue continuations
        self._calls = 0
        self._in_flight: Call | None = None
        self._emitted = 0  # chars of output_text (+ in-flight text) already handed out as deltas
        self._hold = (THINK_END, *config.stop)
        self._hold_len = max(len(m) for m in self._hold)
        self._t0 = time.perf_counter()
        self._error: RelayError | None = None

    @property
    def thinking(self) -> bool:
        """A thinking generation: told so, or its prompt or output opened a think block."""
        if self._thinking is not None:
            return self._thinking
        return thinks(self.prompts[self.reasoner], self.output_text)

    def prompt(self, role: Role | None = None) -> str:
        """The rendered prompt of ``role`` (by default the reasoner's, which the output
        continues: what a completion's ``echo`` returns)."""
        return self.prompts[role or self.reasoner]

    def prompt_token_count(self, role: Role) -> int:
        """The length of ``role``'s prompt in its own runtime's tokens."""
        if self.prompt_ids is not None:
            return len(self.prompt_ids[role])
        return len(self.codecs[role].encode(self.prompts[role], add_special_tokens=False))

    @property
    def error(self) -> RelayError | None:
        """Why the relay failed (see :meth:`fail`); None while it has not."""
        return self._error

    # -- what to call next -----------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.phase is None

    @property
    def in_flight(self) -> Call | None:
        return self._in_flight

    def next_call(self) -> Call | None:
        if self.phase is None:
            return None
        if self._in_flight is not None:
            raise RuntimeError(f"call {self._in_flight.rid} has not completed")
        if self.phase == "reasoning":
            role, budget = self.reasoner, self.remaining
            sp: dict[str, Any] = {"stop": [THINK_END, *self.config.stop]}
            if self.cue_regexes:
                sp["stop_regex"] = self.cue_regexes
            if self.config.mode == "random_switch":
                # Control: switch after a geometric number of tokens at the measured rate.
                gap = 1 + int(self.rng.expovariate(self.config.switch_rate))  # type: ignore[arg-type]
                budget = min(budget, max(self.min_large + 1, gap))
        elif self.phase == "finish":
            role, budget = "small", min(self.max_small, self.remaining)
            sp = {"stop": [THINK_END, *self.config.stop]}
            if self.sentence_end is not None:
                sp["stop_regex"] = [self.sentence_end.pattern]
        else:
            role, budget = self.answerer, self.remaining
            sp = {"stop": list(self.config.stop)} if self.config.stop else {}
        params = {**self.sampling, **sp, "max_new_tokens": budget, "no_stop_trim": True}
        body: dict[str, Any] = {"sampling_params": params}
        if self.prompt_ids is not None:
            body["input_ids"] = self.prompt_ids[role] + self.output_ids
        else:
            body["text"] = self.prompts[role] + self.output_text
        rid = f"{self.request_id}-{self._calls:05d}"
        body["rid"] = rid
        self._calls += 1
        self._in_flight = Call(role, self.phase, rid, body)
        return self._in_flight

    # -- what came back --------------------------------------------------------------------
    def progress(self, call: Call, text: str) -> list[Delta]:
        """The in-flight call's text so far; returns the part of it that is now final.

        Work per chunk is proportional to the new text, not to the output so far: a long
        reasoning turn streams thousands of chunks."""
        self._check(call)
        base = len(self.output_text)
        limit = len(text)
        # Only text not yet handed out can hold a cut; search a marker's length before it.
        scan = max(self._emitted - base - self._hold_len, 0)
        if call.kind == "finish" and self.sentence_end is not None:
            before = self.output_text[-_CTX_CHARS:]
            m = self.sentence_end.search(before + text, len(before))  # a turn of <= max_small tokens
            if m is not None:
                limit = min(limit, m.end() - len(before))
        # After the reasoning "</think>" is ordinary text: an answer may quote it.
        think = text.find(THINK_END, scan) if call.kind != "answer" else -1
        if think >= 0:
            limit = min(limit, think if call.kind == "finish" else think + len(THINK_END))
        for stop in self.config.stop:  # never show a user stop string, nor what follows it
            i = text.find(stop, scan, limit)
            if i >= 0:
                limit = i
        if self.config.stop:  # one that begins in the committed text held back before this turn
            w0 = max(min(self._emitted, base) - self._hold_len, 0)
            edge = self.output_text[w0:] + text[: min(limit, self._hold_len)]
            hits = [j for st in self.config.stop if (j := edge.find(st)) >= 0]
            if hits:
                limit = min(limit, w0 + min(hits) - base)  # negative: it began before this turn
        return self._emit(base + limit, call.role, call.kind, text)

    def complete(self, call: Call, res: TurnResult) -> list[Delta]:
        """The call finished: commit what it kept and decide the next phase."""
        self._check(call)
        self._in_flight = None
        self._record(call, res)
        stop_id = res.matched if res.finish_type == "stop" and isinstance(res.matched, int) else None
        if stop_id is not None and res.output_ids[-1:] == [stop_id]:
            # SGLang lists the EOS (or stop token) id it stopped on; its text is not in the output,
            # and neither model should be handed it as context.
            res = dataclasses.replace(res, output_ids=res.output_ids[:-1])
        if call.kind == "reasoning":
            outcome = self._reasoning_done(call, res)
        elif call.kind == "finish":
            outcome = self._finish_done(res)
        else:
            self._commit(call.role, "answer", res.text, res.output_ids)
            outcome = Outcome.LENGTH if res.finish_type == "length" else Outcome.EOS
        if self.remaining <= 0 and outcome not in (Outcome.STOP, Outcome.EOS):
            outcome = Outcome.LENGTH
        self._advance(outcome)
        # After _advance: the text it may add (a closed think block) is output too.
        if self.config.stop and self._apply_stop():
            outcome, self.phase = Outcome.STOP, None
        self.stats.outcome = outcome.value
        return self._emit(len(self.output_text), call.role, call.kind, final=self.phase is None)

    @overload
    def fail(self, call: Call) -> None: ...

    @overload
    def fail(self, call: Call, error: BaseException) -> RelayError: ...

    def fail(self, call: Call, error: BaseException | None = None) -> RelayError | None:
        """The call failed with ``error``, or was cancelled (no error); the relay ends.  A
        failure becomes :attr:`error`, a RelayError naming the runtime and the step (caused
        by ``error``), which the driver raises and :meth:`result` raises too."""
        self._check(call)
        self._in_flight = None
        self.phase = None
        if error is None:
            return None
        err = RelayError(f"{call.role} runtime failed during the {call.kind} step: {error}", call.role)
        err.__cause__ = error
        self._error = err
        return err

    def result(self) -> RelayResult:
        """The output and stats; a failed relay raises its :attr:`error` instead."""
        if self._error is not None:
            raise self._error
        self.stats.latency_s = time.perf_counter() - self._t0
        self.stats.finish_reason = "length" if self.stats.outcome == Outcome.LENGTH.value else "stop"
        split = split_reasoning(self.output_text, thinking=self.thinking)
        reasoning_tokens = (
            sum(s.num_tokens for s in self.segments if s.kind != "answer")
            if split.closed or self.thinking
            else 0
        )
        return RelayResult(
            text=self.output_text,
            segments=self.segments,
            stats=self.stats,
            reasoning=split.reasoning,
            answer=split.answer,
            output_ids=self.output_ids if self.prompt_ids is not None else None,
            reasoning_tokens=reasoning_tokens,
            thinking=self.thinking,
        )

    # -- turn logic ------------------------------------------------------------------------
    def _reasoning_done(self, call: Call, res: TurnResult) -> Outcome:
        text, ids = res.text, res.output_ids
        think = text.find(THINK_END)
        if think >= 0:
            if res.matched != THINK_END:
                # SGLang sizes its stop-string window by the canonical tokenization, so a
                # "</think>" spelled in several tokens can slip through: cut after it here.
                text, ids = self._keep_prefix(call.role, text, ids, think + len(THINK_END))
            self._commit(call.role, "reasoning", text, ids)  # no cue: whatever stopped it came after
            return Outcome.THINK_END
        if self.config.mode == "random_switch" and res.finish_type == "length":
            text, ids = self._drop_partial_think_end(call.role, text, ids)  # the small model goes on
        matched_cue = res.finish_type == "stop" and res.matched in self.cue_regexes
        cue = None
        if matched_cue and self.matcher is not None:
            hit = self.matcher.last(self.output_text[-_CTX_CHARS:] + text)
            cue = hit.cue if hit else "?"
        self.turn_tokens += len(ids)
        # vLLM's min_tokens: stops are checked only once the turn has more than min_large tokens.
        early = matched_cue and self.turn_tokens <= self.min_large
        self._commit(call.role, "reasoning", text, ids, None if early else cue)
        if matched_cue:
            if early:
                return Outcome.EARLY_CUE
            self.stats.cue_counts[cue or "?"] = self.stats.cue_counts.get(cue or "?", 0) + 1
            return Outcome.CUE
        if res.finish_type == "stop":
            return Outcome.STOP if res.matched in self.config.stop else Outcome.EOS
        if self.config.mode == "random_switch" and self.remaining > 0:
            return Outcome.CUE
        return Outcome.LENGTH

    def _finish_done(self, res: TurnResult) -> Outcome:
        """Keep the finisher's output up to its first sentence end (never past </think>)."""
        text, cut = res.text, len(res.text)
        think = text.find(THINK_END)
        if think >= 0:
            cut = think  # the finisher never ends the reasoning; the large model decides
        else:
            cut -= _partial_tail(text, (THINK_END,))  # nor leaves the large model half of one
        if self.sentence_end is not None:
            before = self.output_text[-_CTX_CHARS:]
            m = self.sentence_end.search(before + text, len(before))
            if m is not None:
                cut = min(cut, m.end() - len(before))
        kept_text, kept_ids = self._keep_prefix("small", text, res.output_ids, cut, exclude=THINK_END)
        self.stats.switches += 1
        self._commit("small", "finish", kept_text, kept_ids)
        # A user stop string ends the relay only if it is in what was kept: complete() finds it.
        return Outcome.SENTENCE_END

    def _advance(self, outcome: Outcome) -> None:
        if outcome in (Outcome.STOP, Outcome.LENGTH):
            self.phase = None
        elif outcome is Outcome.CUE:
            self.phase = "finish"
        elif outcome in (Outcome.SENTENCE_END, Outcome.EARLY_CUE):
            if outcome is Outcome.SENTENCE_END:
                self.turn_tokens = 0
            self.phase = "reasoning"
        elif outcome is Outcome.THINK_END:
            self.phase = "answer"
        elif outcome is Outcome.EOS and self.phase == "reasoning" and self.thinking:
            self._close_reasoning()
            self.phase = "answer"
        else:
            self.phase = None

    def _close_reasoning(self) -> None:
        """The reference's rule for a thinking model that stops inside its reasoning."""
        ids = self.codecs[self.reasoner].encode(CLOSE_THINK, add_special_tokens=False)
        self._commit(
            self.reasoner, "close", CLOSE_THINK, ids if self.prompt_ids is not None else [], count=False
        )

    def _apply_stop(self) -> bool:
        """The user's stop strings over the whole relayed output (they may span two models)."""
        hits = [i for s in self.config.stop if (i := self.output_text.find(s)) >= 0]
        if not hits:
            return False
        cut = min(hits)
        self.output_text = self.output_text[:cut]
        # Drop the segments' text past the cut; ids are kept only for whole tokens before it.
        pos, kept = 0, []
        for seg in self.segments:
            if pos >= cut:
                break
            if pos + len(seg.text) > cut:
                seg.text = seg.text[: cut - pos]
            kept.append(seg)
            pos += len(seg.text)
        self.segments = kept
        if self.prompt_ids is not None:
            tok = self.codecs[self.reasoner]
            n = _prefix_len(tok, self.output_ids, cut)
            self.output_ids = self.output_ids[:n]
        return True

    # -- bookkeeping -----------------------------------------------------------------------
    def _record(self, call: Call, res: TurnResult) -> None:
        self.stats.calls.append(
            CallRecord(
                call.role,
                call.kind,
                call.rid,
                res.prompt_tokens,
                res.cached_tokens,
                res.completion_tokens,
                res.completion_tokens,
                res.latency_s,
                res.spec_accept_length,
            )
        )
        if call.role == "large":
            self.stats.large_time_s += res.latency_s
        else:
            self.stats.small_time_s += res.latency_s

    def _commit(
        self, role: Role, kind: Kind, text: str, ids: list[int], cue: str | None = None, *, count: bool = True
    ) -> None:
        if count and self.stats.calls:
            call = self.stats.calls[-1]
            call.kept_tokens = len(ids)
            self.stats.discarded_tokens += call.completion_tokens - len(ids)
        if not text and not ids:
            return
        self.output_text += text
        self.output_ids += ids
        n = len(ids) if count else 0
        if role == "large":
            self.stats.large_tokens += n
        else:
            self.stats.small_tokens += n
        self.remaining -= n
        last = self.segments[-1] if self.segments else None
        if last is not None and last.role == role and last.kind == kind and last.cue is None:
            # A large turn continued past an early cue: still one segment.
            last.text += text
            last.num_tokens += n
            last.cue = cue
        else:
            self.segments.append(Segment(role, kind, text, n, cue))

    def _keep_prefix(
        self, role: Role, text: str, ids: list[int], cut: int, exclude: str | None = None
    ) -> tuple[str, list[int]]:
        """The smallest token prefix whose text covers ``text[:cut]`` (binary search: decoding
        every prefix in turn would be quadratic in the turn's length)."""
        if cut >= len(text):
            return text, ids
        tok = self.codecs[role]
        k = _prefix_len(tok, ids, cut, cover=True)
        piece = tok.decode(ids[:k])
        if exclude and exclude in piece:
            k -= 1
            piece = tok.decode(ids[:k])
        return piece, ids[:k]

    def _drop_partial_think_end(self, role: Role, text: str, ids: list[int]) -> tuple[str, list[int]]:
        """A turn handed to the other model must not end in part of ``</think>``: that model
        could complete the marker where neither runtime's stop check sees it whole."""
        return self._keep_prefix(role, text, ids, len(text) - _partial_tail(text, (THINK_END,)))

    def _emit(self, limit: int, role: Role, kind: Kind, turn: str = "", final: bool = False) -> list[Delta]:
        """Hand out the output up to ``limit`` (an index into the committed output followed by
        the in-flight ``turn`` text of ``role``/``kind``), one delta per model, except a tail
        that might still be cut: a partial ``</think>`` (before the answer) or user stop string
        at the end."""
        base = len(self.output_text)
        if not final:
            limit -= self._partial_tail(limit, turn, kind)
        if limit <= self._emitted:
            return []
        out = []
        if self._emitted < base:  # held-back committed text (rare): walk back over the segments
            pos = base
            pieces = []
            for seg in reversed(self.segments):
                pos -= len(seg.text)
                lo, hi = max(pos, self._emitted), min(pos + len(seg.text), limit)
                if hi > lo:
                    pieces.append(Delta(seg.role, seg.kind, self.output_text[lo:hi]))
                if pos <= self._emitted:
                    break
            out += reversed(pieces)
        lo = max(self._emitted, base)
        if limit > lo:
            out.append(Delta(role, kind, turn[lo - base : limit - base]))
        self._emitted = limit
        return out

    def _partial_tail(self, limit: int, turn: str, kind: Kind) -> int:
        """Length of the longest suffix of the output up to ``limit`` that is a proper prefix
        of a user stop string or, before the answer, of ``</think>``."""
        base, n = len(self.output_text), self._hold_len
        if limit >= base:
            k = limit - base
            tail = turn[max(k - n, 0) : k]
            if k < n:
                tail = self.output_text[max(base - (n - k), 0) :] + tail
        else:
            tail = self.output_text[max(limit - n, 0) : limit]
        return _partial_tail(tail, self.config.stop if kind == "answer" else self._hold)

    def _check(self, call: Call) -> None:
        if self._in_flight is None or call.rid != self._in_flight.rid:
            raise RuntimeError(f"call {call.rid} is not the one in flight")


def _partial_tail(text: str, markers: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a marker."""
    best = 0
    for m in markers:
        longest = min(len(m) - 1, len(text))
        # Such a suffix starts with the marker's first character: most texts end without one.
        if longest <= best or m[0] not in text[len(text) - longest :]:
            continue
        for n in range(longest, best, -1):
            if text.endswith(m[:n]):
                best = n
                break
    return best


def _prefix_len(tok: Codec, ids: list[int], cut: int, cover: bool = False) -> int:
    """The fewest tokens whose decoded text reaches ``cut`` chars (``cover``), or the most
    whose text stays within ``cut`` chars."""
    lo, hi = 0, len(ids)
    while lo < hi:  # smallest k with len(decode(ids[:k])) >= cut
        mid = (lo + hi) // 2
        if len(tok.decode(ids[:mid])) >= cut:
            hi = mid
        else:
            lo = mid + 1
    if cover:
        return lo
    return lo if lo <= len(ids) and len(tok.decode(ids[:lo])) == cut else max(lo - 1, 0)
