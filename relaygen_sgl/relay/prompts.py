"""Each runtime's prompt of one relay: rendered with its own chat template, or as given."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from relaygen_sgl.relay.types import Role


@dataclass(frozen=True)
class RenderedPrompt:
    """One runtime's prompt, already rendered (a frontend program's text, say).  ``templated``:
    an HF chat template wrote it, with its own special tokens, so tokenizing it adds none."""

    text: str
    templated: bool = False


PromptInput = str | list[int] | Mapping[Role, RenderedPrompt] | None


def render_prompts(
    prompt: PromptInput,
    messages: Sequence[dict[str, Any]] | None,
    tokenizers: dict[Role, Any],
    *,
    handoff: str,
    chat_template_kwargs: dict[str, Any] | None = None,
) -> tuple[dict[Role, str], dict[Role, list[int]] | None]:
    """Each runtime's prompt text (its own chat template), and the ids of a token-id prompt.
    Text prompts are tokenized by the runtimes themselves (:func:`runtime_prompt_ids`), so
    the ids are exactly what a text request would prefill."""
    if (prompt is None) == (messages is None):
        raise ValueError("pass exactly one of prompt= or messages=")
    roles = list(tokenizers)
    if isinstance(prompt, list):  # token ids: the same ids go to both (id handoff only)
        if handoff != "ids":
            raise ValueError("a token-id prompt needs both models to share a tokenizer")
        text = tokenizers[roles[0]].decode(prompt)
        return {r: text for r in roles}, {r: list(prompt) for r in roles}
    if isinstance(prompt, Mapping):
        if missing := [r for r in roles if r not in prompt]:
            raise ValueError(f"no rendered prompt for the {', '.join(missing)} runtime")
        return {r: prompt[r].text for r in roles}, None
    if prompt is not None:
        texts = {r: prompt for r in roles}
    else:
        if not messages:
            raise ValueError("messages must not be empty")
        kwargs = dict(chat_template_kwargs or {})
        # Each model gets its own chat template; only the generated text is shared.
        texts = {
            r: tokenizers[r].apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=True, **kwargs
            )
            for r in roles
        }
    return texts, None


def adds_special_tokens(prompt: PromptInput, role: Role) -> bool:
    """Whether the runtime's tokenizer should add special tokens to ``role``'s prompt text:
    not to chat-templated text, which already has them."""
    if isinstance(prompt, Mapping):
        return not prompt[role].templated
    return prompt is not None
