"""Answer checking with math-verify (boxed, LaTeX and plain-number answers)."""

from __future__ import annotations

import re

from math_verify import parse, verify

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_text(output: str) -> str:
    """The answer part of an output: after </think> when there is one."""
    return output.rsplit("</think>", 1)[-1]


def extract_answer(output: str) -> str | None:
    text = final_text(output)
    parsed = parse(text)
    if parsed:
        return str(parsed[-1]) if len(parsed) > 1 else str(parsed[0])
    nums = _NUMBER.findall(text)
    return nums[-1].replace(",", "") if nums else None


def is_correct(output: str, expected: str) -> bool:
    gold = parse(f"${expected}$") or parse(expected)
    pred = parse(final_text(output))
    if not gold:
        return False
    if pred and verify(gold, pred):
        return True
    # Plain-text answers without LaTeX: fall back to the last number in the text.
    nums = _NUMBER.findall(final_text(output))
    return bool(nums) and bool(verify(gold, parse(nums[-1].replace(",", ""))))
