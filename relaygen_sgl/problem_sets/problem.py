"""One problem of a reasoning set, as every eval, the demo and calibration see it."""

from __future__ import annotations

import string
from dataclasses import dataclass

# The prompt every eval and the demo use; a calibration set should use it too.
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
LETTERS = string.ascii_uppercase


class DatasetError(ValueError):
    """A set that cannot be loaded as asked; the message is one line that says why and what to do."""


def choice_instruction(n: int) -> str:
    letters = ", ".join(LETTERS[: n - 1]) + f" or {LETTERS[n - 1]}"
    return f"Please reason step by step, and put the letter of your answer ({letters}) within \\boxed{{}}."


@dataclass(frozen=True)
class Problem:
    """``answer`` None: the set gives none, so the problem runs and is timed but not graded.
    With ``choices`` (multiple choice) the prompt lists them lettered and ``answer`` is a letter."""

    id: str
    problem: str
    answer: str | None
    choices: tuple[str, ...] = ()

    @property
    def prompt(self) -> str:
        """The question with its lettered options, without the instruction (what calibration sends)."""
        if not self.choices:
            return self.problem
        options = "\n".join(f"{LETTERS[i]}: {c}" for i, c in enumerate(self.choices))
        return f"{self.problem}\n\nOptions:\n{options}"

    def messages(self) -> list[dict[str, str]]:
        instruction = choice_instruction(len(self.choices)) if self.choices else INSTRUCTION
        return [{"role": "user", "content": f"{self.prompt}\n{instruction}"}]
