"""The two runtimes of a relay, as one object that a server, eval or program owns.

It holds both clients (their pooled connections and tokenizers) and the handoff decision:
token ids when the two tokenizers are the same, text otherwise.  The decision is made once
per pair and made again when either runtime comes back with another model, so nothing
stale outlives a restart; there is no process-wide cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from relaygen_sgl.relay.types import Role
from relaygen_sgl.runtime_client import RuntimeClient

Handoff = Literal["auto", "ids", "text"]


class RelayPair:
    def __init__(self, large: RuntimeClient | str | Any, small: RuntimeClient | str | Any) -> None:
        self.clients: dict[Role, RuntimeClient] = {
            "large": RuntimeClient.of(large, "large"),
            "small": RuntimeClient.of(small, "small"),
        }
        self._same: tuple[tuple[int, int], bool] | None = None

    @classmethod
    def of(cls, large: Any, small: Any) -> RelayPair:
        return large if isinstance(large, RelayPair) else cls(large, small)

    @property
    def large(self) -> RuntimeClient:
        return self.clients["large"]

    @property
    def small(self) -> RuntimeClient:
        return self.clients["small"]

    def _decide(self, tokenizers: dict[Role, Any]) -> bool:
        key = (self.large.model_generation, self.small.model_generation)
        if self._same is None or self._same[0] != key:
            ta, tb = tokenizers["large"], tokenizers["small"]
            same = self.large.url == self.small.url or (
                len(ta) == len(tb) and ta.get_vocab() == tb.get_vocab()
            )
            self._same = (key, same)
        return self._same[1]

    def handoff(self, used: Sequence[Role], requested: Handoff = "auto") -> str:
        if requested != "auto":
            return requested
        if len(used) == 1:
            return "ids"
        return "ids" if self._decide({r: self.clients[r].tokenizer for r in ("large", "small")}) else "text"

    async def ahandoff(self, used: Sequence[Role], requested: Handoff = "auto") -> str:
        if requested != "auto":
            return requested
        if len(used) == 1:
            return "ids"
        toks = {r: await self.clients[r].atokenizer() for r in ("large", "small")}
        return "ids" if self._decide(toks) else "text"

    async def aclose(self) -> None:
        for c in self.clients.values():
            await c.aclose()

    def close(self) -> None:
        for c in self.clients.values():
            c.close()


def render_prompts(
    prompt: str | list[int] | None,
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
    if prompt is not None:
        texts = {r: prompt for r in roles}
    else:
        if not messages:
            raise ValueError("messages must not be empty")
        kwargs = dict(chat_template_kwargs or {})
        # Each model gets its own chat template; only the generated text is shared.
        texts = {r: tokenizers[r].apply_chat_template(list(messages), tokenize=False,
                                                      add_generation_prompt=True, **kwargs)
                 for r in roles}  # fmt: skip
    return texts, None
