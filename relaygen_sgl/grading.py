"""Answer checking with math-verify (boxed, LaTeX and plain-number answers).

A thinking model's answer is what follows ``</think>``, split off by
:func:`relaygen_sgl.reasoning.split_reasoning` as the relay and the server split it: a
``\\boxed{}`` inside the reasoning is a guess on the way, not the answer, so an output that never
closes its reasoning has no answer part at all (wrong, and flagged truncated).  A model that
does not think (the default pair's Qwen2.5-Coder never writes ``</think>``) is graded on its
whole output.  A multiple-choice problem is graded on the letter (``\\boxed{B}``, "the answer is
(B)"); a problem with no answer is not graded (``correct`` None).  The demo and the evals grade
with it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from math_verify import parse, verify

from relaygen_sgl import reasoning
from relaygen_sgl.problem_sets.fields import last_boxed
from relaygen_sgl.problem_sets.problem import LETTERS, Problem
from relaygen_sgl.reasoning import split_reasoning
from relaygen_sgl.relay.types import roles_used

if TYPE_CHECKING:
    from relaygen_sgl.relay import RelayPair

Thinking = Literal["auto", "yes", "no"]
THINKING_CHOICES: tuple[str, ...] = ("auto", "yes", "no")

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
# A letter inside a box: "B", "(B)", "\text{B}", "B: the option's text", "B."
_BOXED_LETTER = re.compile(r"^(?:\\text(?:bf)?\{)?\s*\(?([A-Z])\)?(?:\}|[\s:.)]|$)")
# "The answer is (B)", "Answer: B", "final answer: **C**"; the letter stands alone.
_SAID_LETTER = re.compile(r"[Aa]nswer(?: is)?\s*[:：]?\s*[*(\[]*\s*([A-Z])(?![A-Za-z])")


@dataclass(frozen=True)
class Grade:
    predicted: str | None
    correct: bool | None  # None: the problem has no answer to check
    truncated: bool  # hit the token budget, or a thinking model never closed its reasoning
    thinking: bool


def thinks(setting: Thinking | str, output: str, prompt: str = "") -> bool:
    """Is this a thinking model's output?  ``auto``: :func:`relaygen_sgl.reasoning.thinks` (the
    output opens ``<think>``, or the chat-templated prompt does, as DeepSeek-R1's template does),
    or the output closes a think block."""
    if setting not in THINKING_CHOICES:
        raise ValueError(f"thinking must be one of {', '.join(THINKING_CHOICES)}, got {setting!r}")
    if setting != "auto":
        return setting == "yes"
    return reasoning.thinks(prompt, output) or split_reasoning(output).closed


def templated_prompts(pair: RelayPair) -> Callable[[str, Problem], str]:
    """The chat-templated prompt a mode's reasoner sees, for ``thinking="auto"``."""
    cache: dict[tuple[str, str], str] = {}

    def prompt(mode: str, p: Problem) -> str:
        role = roles_used(mode.partition("@")[0])[0]
        if (role, p.id) not in cache:
            try:
                tok = pair.clients[role].tokenizer  # loaded once per client, by the relay already
                text = tok.apply_chat_template(p.messages(), tokenize=False, add_generation_prompt=True)
            except (RuntimeError, OSError, ValueError):
                text = ""  # runtime down: decide from the output alone
            cache[(role, p.id)] = text
        return cache[(role, p.id)]

    return prompt


def answer_part(output: str, thinking: bool) -> str | None:
    """The graded text: a thinking model's answer (None while its reasoning is still open),
    else the whole output (``--thinking no`` grades everything)."""
    if not thinking:
        return output
    split = split_reasoning(output, thinking=True)
    return split.answer if split.closed else None


def _extract(text: str) -> str | None:
    parsed = parse(text)
    if parsed:
        return str(parsed[-1]) if len(parsed) > 1 else str(parsed[0])
    nums = _NUMBER.findall(text)
    return nums[-1].replace(",", "") if nums else None


def _correct(text: str, expected: str) -> bool:
    gold = parse(f"${expected}$") or parse(expected)
    if not gold:
        return False
    pred = parse(text)
    if pred and verify(gold, pred):
        return True
    # Plain-text answers without LaTeX: fall back to the last number in the text.
    nums = _NUMBER.findall(text)
    return bool(nums) and bool(verify(gold, parse(nums[-1].replace(",", ""))))


def extract_letter(text: str, choices: int) -> str | None:
    """The chosen option's letter: the last box's, else the last "answer is X", else None."""
    valid = LETTERS[:choices]
    boxed = last_boxed(text)
    if boxed is not None and (m := _BOXED_LETTER.match(boxed)) and m.group(1) in valid:
        return m.group(1)
    said = [x for x in _SAID_LETTER.findall(text) if x in valid]
    return said[-1] if said else None


def grade(
    output: str, expected: str | None, *, thinking: bool, finish_reason: str | None = None, choices: int = 0
) -> Grade:
    """Grade one output; ``choices``: the option count of a multiple-choice problem, graded on its
    letter.  Call from the main thread: math-verify's timeouts use signal.alarm."""
    text = answer_part(output, thinking)
    truncated = finish_reason == "length" or (thinking and text is None)
    if text is None:
        return Grade(None, None if expected is None else False, truncated, thinking)
    predicted = extract_letter(text, choices) if choices else _extract(text)
    if expected is None:
        return Grade(predicted, None, truncated, thinking)
    correct = predicted == expected.strip().upper() if choices else _correct(text, expected)
    return Grade(predicted, correct, truncated, thinking)


def extract_answer(output: str, thinking: Thinking | str = "auto") -> str | None:
    text = answer_part(output, thinks(thinking, output))
    return None if text is None else _extract(text)


def is_correct(output: str, expected: str, thinking: Thinking | str = "auto") -> bool:
    return grade(output, expected, thinking=thinks(thinking, output)).correct
