"""What each runtime is sent for an ``sgl.gen``: the program's conversation in its own chat template.

The interpreter renders a program with the large model's *frontend* chat template (the backend's
``get_chat_template()``) and keeps two records of it: the text (``text_``) and the turns it closed
(``messages_``, each turn's content left-stripped).  The large runtime gets that text as it is,
byte for byte what a ``RuntimeEndpoint`` would send.

For the small model we keep the program's messages rather than rewrite its text: the turns are
recovered by walking the text with the same template (each turn is ``prefix + content + suffix``,
exactly as the interpreter wrote it, so the walk also proves that nothing was written outside a
turn), then rendered again with the small model's *HF* chat template, the one its runtime's own chat
API uses, followed by the open assistant turn's text so far.  The HF template is right for any
model that ships one, where SGLang's frontend templates are matched by model path and often miss
(SmolLM2 would get ``USER:``/``ASSISTANT:``).  A turn the walk cannot place (text written between
turns, an image, a user turn left open) has no rendering in a chat template: the small model then
gets the large model's text, as before, with a warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateError
from sglang.lang.chat_template import ChatTemplate


@dataclass(frozen=True)
class Conversation:
    messages: list[dict[str, str]]  # the closed turns, as the interpreter recorded them
    open_role: str | None  # the turn the gen is in, if any
    tail: str  # the text after the last turn's prefix (open) or after its suffix (none open)

    @property
    def plain(self) -> bool:
        """A completion-style program: no roles at all, so no template to translate."""
        return not self.messages and self.open_role is None


def conversation(
    text: str,
    messages: Sequence[dict[str, Any]],
    open_role: str | None,
    open_begin: int | None,
    template: ChatTemplate,
) -> Conversation | None:
    """The turns that ``text`` is made of, or None when it holds text outside them."""
    pos = 0
    for i, msg in enumerate(messages):
        content = msg.get("content")
        if not isinstance(content, str):
            return None  # an image turn (OpenAI content parts)
        prefix, suffix = template.get_prefix_and_suffix(msg["role"], list(messages[:i]))
        if not text.startswith(prefix, pos):
            return None  # text written between turns
        end = _turn_end(text, pos + len(prefix), content, suffix)
        if end is None:
            return None
        pos = end
    if open_role is None:
        return Conversation(list(messages), None, text if not messages else text[pos:])
    prefix, _ = template.get_prefix_and_suffix(open_role, list(messages))
    if open_begin is None or open_begin - len(prefix) != pos or not text.startswith(prefix, pos):
        return None
    return Conversation(list(messages), open_role, text[open_begin:])


def _turn_end(text: str, body: int, content: str, suffix: str) -> int | None:
    """Where a turn whose content starts at ``body`` ends (after its suffix), if it is there."""
    # The interpreter records content left-stripped; the whitespace it dropped is still in the text.
    lead = len(text) - body - len(text[body:].lstrip())
    for cut in range(body + lead, body - 1, -1):
        if text.startswith(content + suffix, cut):
            return cut + len(content) + len(suffix)
    return None


def render_for(
    conv: Conversation,
    tokenizer: Any,
    *,
    frontend_default_system: str | None,
    chat_template_kwargs: dict[str, Any] | None = None,
) -> str | None:
    """``conv`` in ``tokenizer``'s HF chat template, ready for the gen to continue; None if the
    template cannot say it (no template, a user or system turn left open)."""
    if conv.open_role not in (None, "assistant"):
        return None
    messages = conv.messages
    if (
        messages
        and frontend_default_system
        and messages[0]["role"] == "system"
        and messages[0]["content"] == frontend_default_system.lstrip()
    ):
        # The interpreter put the frontend template's default system prompt there; the HF
        # template adds its own model's default, if it has one.
        messages = messages[1:]
    if not messages and conv.open_role is None:
        return None
    try:
        head = tokenizer.apply_chat_template(
            [{"role": m["role"], "content": m["content"]} for m in messages],
            tokenize=False,
            add_generation_prompt=conv.open_role == "assistant",
            **(chat_template_kwargs or {}),
        )
    except (ValueError, TemplateError):  # no chat template, or one that refuses these turns
        return None
    return head + conv.tail
