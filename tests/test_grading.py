"""Grading only the answer part of thinking models, and flagging truncated outputs."""

from __future__ import annotations

import pytest

from relaygen_sgl.grading import answer_part, extract_answer, grade, is_correct, thinks

R1_PROMPT = "<｜User｜>What is 1+1?<｜Assistant｜><think>\n"  # DeepSeek-R1's template opens the think block


@pytest.mark.parametrize(
    "setting,output,prompt,expected",
    [
        ("auto", "<think>\nhmm</think>2", "", True),  # Qwen3 writes <think> itself
        ("auto", "hmm, so \\boxed{2}", R1_PROMPT, True),  # R1: only the prompt shows it
        ("auto", "hmm</think>2", "", True),
        ("auto", "The answer is \\boxed{2}.", "<|im_start|>assistant\n", False),  # Qwen2.5-Coder
        ("yes", "The answer is 2", "", True),
        ("no", "<think>x</think>2", "", False),
    ],
)
def test_thinking_detection(setting: str, output: str, prompt: str, expected: bool):
    assert thinks(setting, output, prompt) is expected


def test_unknown_thinking_setting_is_an_error():
    with pytest.raises(ValueError, match="thinking must be"):
        thinks("maybe", "x")


def test_a_truncated_thinking_output_is_wrong_and_flagged():
    out = "<think>\nlet me try \\boxed{42} ... wait, check again"
    g = grade(out, "42", thinking=True, finish_reason="length")
    assert (g.correct, g.truncated, g.predicted) == (False, True, None)
    # Even a natural stop (EOS) before </think> leaves no answer part.
    g = grade(out, "42", thinking=True, finish_reason="eos")
    assert (g.correct, g.truncated) == (False, True)
    assert is_correct(out, "42") is False and extract_answer(out) is None  # auto sees <think>


def test_only_the_answer_part_counts_for_thinking_models():
    out = "<think>maybe \\boxed{41}</think>\n\nSo the answer is \\boxed{42}."
    g = grade(out, "42", thinking=True, finish_reason="stop")
    assert (g.correct, g.truncated, g.predicted) == (True, False, "42")
    assert answer_part(out, thinking=True) == "So the answer is \\boxed{42}."  # as split_reasoning splits
    assert not grade("<think>\\boxed{42}</think> no idea", "42", thinking=True).correct


def test_non_thinking_models_keep_grading_the_whole_output():
    out = "We add 12 and 30, so the answer is \\boxed{42}."
    assert answer_part(out, thinking=False) == out
    g = grade(out, "42", thinking=False, finish_reason="stop")
    assert (g.correct, g.truncated) == (True, False)
    # Cut at the budget: still graded on what it wrote, but flagged.
    g = grade("We add 12 and 30 to get 42, then", "42", thinking=False, finish_reason="length")
    assert (g.correct, g.truncated) == (True, True)


@pytest.mark.parametrize(
    "output,letter",
    [
        ("so the answer is \\boxed{B}", "B"),
        ("\\boxed{(C)}", "C"),
        ("\\boxed{\\text{D}}", "D"),
        ("\\boxed{B: 42 eV}", "B"),
        ("The answer is (A).", "A"),
        ("Final answer: **C**", "C"),
        ("The answer is B. No wait, the answer is D", "D"),
        ("The answer is a bit unclear", None),
        ("\\boxed{E}", None),  # not one of the four options
        ("\\boxed{42}", None),
    ],
)
def test_multiple_choice_is_graded_on_the_letter(output: str, letter: str | None):
    g = grade(output, "D", thinking=False, choices=4)
    assert g.predicted == letter and g.correct is (letter == "D")


def test_a_problem_without_an_answer_is_not_graded():
    g = grade("so \\boxed{7}", None, thinking=False)
    assert (g.predicted, g.correct) == ("7", None)
    g = grade("<think>still going", None, thinking=True, finish_reason="length")
    assert (g.correct, g.truncated) == (None, True)
