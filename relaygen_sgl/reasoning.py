"""The one place that splits a model's output into reasoning and answer.

It follows SGLang's reasoning parser (``sglang/srt/parser/reasoning_parser.py``): text
before ``</think>`` is reasoning, text after it is the answer.  Output with no
``</think>`` is the answer (content) unless the model is known to think, in which case it
is unfinished reasoning with no answer yet.  The relay, the server, the evals and grading
all use :func:`split_reasoning`.
"""

from __future__ import annotations

from dataclasses import dataclass

THINK_START = "<think>"
THINK_END = "</think>"


@dataclass(frozen=True)
class Split:
    reasoning: str  # without the <think> / </think> markers
    answer: str  # without the blank line that follows </think> (leading whitespace)
    closed: bool  # a </think> was seen


def thinks(prompt: str = "", output: str = "") -> bool:
    """Whether this generation is a thinking one: the prompt opened a think block (DeepSeek-R1
    style templates end with ``<think>``), or the output starts one (Qwen3)."""
    return prompt.rstrip().endswith(THINK_START) or THINK_START in output


def split_reasoning(text: str, *, thinking: bool | None = None) -> Split:
    """``thinking``: True when the model always thinks (no ``</think>`` = still reasoning),
    False when it never does, None to decide from the text (a ``<think>`` in it)."""
    head, sep, tail = text.partition(THINK_END)
    if sep:
        return Split(_strip_open(head), tail.lstrip(), True)
    if thinking is None:
        thinking = THINK_START in text
    if thinking:
        return Split(_strip_open(text), "", False)
    return Split("", text.lstrip(), False)


def _strip_open(text: str) -> str:
    before, sep, after = text.partition(THINK_START)
    return after.lstrip("\n") if sep and not before.strip() else text


class ReasoningStream:
    """:func:`split_reasoning` for a stream: feed text as it comes, get (field, text) pieces,
    field being ``"reasoning"`` or ``"answer"``.  The pieces join to what
    ``split_reasoning`` gives for the whole text (``</think>`` must arrive whole, which the
    relay guarantees by holding back a partial one)."""

    def __init__(self, *, thinking: bool | None = None) -> None:
        self.thinking = thinking  # None: decided by whether the output opens with <think>
        self.in_answer = False
        self._pending = ""  # undecided start of the output
        self._answer_started = False
        self._opened = False  # the <think> marker, if any, is behind us
        self._lead = False  # still at the start of the reasoning

    def feed(self, text: str) -> list[tuple[str, str]]:
        if self.in_answer:
            return self._answer(text)
        if self.thinking is None:
            self._pending += text
            head = self._pending.lstrip()
            if THINK_START.startswith(head) and len(head) < len(THINK_START):
                return []  # could still become "<think>"
            self.thinking = head.startswith(THINK_START)
            text, self._pending = self._pending, ""
            if not self.thinking:
                self.in_answer = True
                return self._answer(text)
        head, sep, tail = text.partition(THINK_END)
        out = []
        if not self._opened:
            self._opened = True
            before, s, after = head.partition(THINK_START)
            if s and not before.strip():
                head, self._lead = after, True
        if self._lead:  # the newline(s) after <think>, which split_reasoning drops too
            head = head.lstrip("\n")
            self._lead = not head
        if head:
            out.append(("reasoning", head))
        if sep:
            self.in_answer = True
            out += self._answer(tail)
        return out

    def flush(self) -> list[tuple[str, str]]:
        """The end of the output: an undecided start is the answer."""
        text, self._pending = self._pending, ""
        if not text:
            return []
        self.in_answer = True
        return self._answer(text)

    def _answer(self, text: str) -> list[tuple[str, str]]:
        if not self._answer_started:
            text = text.lstrip()  # the blank line after </think>, as split_reasoning strips
            if not text:
                return []
            self._answer_started = True
        return [("answer", text)] if text else []
