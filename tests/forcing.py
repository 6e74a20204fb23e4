"""Sampling that puts a relay on one path, on any build of the tiny pair.

Server tests must not hope that a model writes a cue, ``</think>`` or EOS: a fresh build
may not.  SGLang honours these parameters on every runtime, whatever the weights:

* ``logit_bias`` with greedy decoding: the biased token wins (a tiny model's raw logits
  span far less than the bias; every other token is pushed down as far as the first is
  pushed up);
* ``min_new_tokens``: EOS and ``stop_token_ids`` are masked for that many tokens, so a
  biased stop token comes exactly after them;
* ``stop_token_ids``: the call ends on that token.

The relay sends the same sampling to every call of both models, so each forced path is one
that those parameters steer call by call.  The filler is a digit: it is no cue, ends no
sentence and is no special token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relaygen_sgl.profile import CueProfile
from relaygen_sgl.testing.tiny_models import tiny_profile

BIAS = 100.0  # OpenAI's limit; a tiny model's logits span far less
# A DeepSeek-R1 style templated prompt: it opens the think block, so the generation thinks.
THINKING_PROMPT = "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n<think>\n"


@dataclass(frozen=True)
class Forcing:
    """Token ids of one tiny tokenizer, and the sampling that forces each path."""

    vocab: tuple[int, ...]
    eos: int
    think_end: int
    filler: int  # "7"
    filler_text: str
    cue: int  # one token whose text is " <word>": a cue that a single token completes
    cue_word: str

    @classmethod
    def of(cls, model_dir: str | Path) -> Forcing:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(model_dir))
        digit = tok.encode("7", add_special_tokens=False)
        assert len(digit) == 1, f"'7' must be one token of the tiny tokenizer, got {digit}"
        think_end, filler = tok.convert_tokens_to_ids("</think>"), digit[0]
        # The longest " word" token: a cue the large model completes in one token, so a
        # logit_bias on it makes every turn hit the cue.
        texts = {i: tok.decode([i]) for i in range(len(tok))}
        words = [(len(t), i, t[1:]) for i, t in texts.items() if re.fullmatch(r" [a-z]{3,}", t)]
        assert words, "the tiny tokenizer has no ' word' token to use as a cue"
        _, cue, word = max(words)
        return cls(
            vocab=tuple(range(len(tok))),
            eos=tok.eos_token_id,
            think_end=think_end,
            filler=filler,
            filler_text=tok.decode([filler]),
            cue=cue,
            cue_word=word,
        )

    def _bias(self, up: dict[int, float]) -> dict[str, float]:
        """``up`` raised, every other token lowered by BIAS: the winner does not depend on the weights."""
        return {str(t): up.get(t, -BIAS) for t in self.vocab}

    def eos_after(self, n: int) -> dict[str, Any]:
        """Every call writes ``n`` fillers, then EOS (a thinking prompt's reasoning ends unclosed)."""
        return {
            "temperature": 0,
            "min_new_tokens": n,
            "logit_bias": self._bias({self.filler: 0.0, self.eos: BIAS}),
        }

    def think_end_after(self, n: int) -> dict[str, Any]:
        """Every call writes ``n`` fillers, then ``</think>`` (a stop token: min_new_tokens holds it
        back until then).  With ``2 n + 1`` tokens in all, the answer call's budget is ``n``: it
        ends there, before it could write one (SGLang refuses min_new_tokens > max_new_tokens)."""
        return {
            "temperature": 0,
            "min_new_tokens": n,
            "stop_token_ids": [self.think_end],
            "logit_bias": self._bias({self.filler: 0.0, self.think_end: BIAS}),
        }

    def repeat(self, token: int) -> dict[str, Any]:
        """Every token is ``token``, until the budget or a stop."""
        return {"temperature": 0, "logit_bias": self._bias({token: 0.0})}

    def cue_every_token(self) -> dict[str, Any]:
        """Every token is the cue token: with :meth:`cue_profile` the large model's turn stops at
        the cue every second token (the regex needs the character after the word)."""
        return self.repeat(self.cue)

    def cue_profile(self, **fields: Any) -> CueProfile:
        """The tiny profile with :attr:`cue_word` as its only cue."""
        return tiny_profile(cues=[self.cue_word], **fields)
