"""A relay machine for prompts that were rendered per runtime.

``relay.prepare`` takes one prompt text for both runtimes, or messages it renders itself with each
HF template; a program gives neither (the large runtime must get the interpreter's text, the small
one its own rendering of the turns, see :mod:`.prompts`).  When both get the program's text, this
is ``prepare``; otherwise :func:`_prepare_rendered` does what ``prepare`` does for texts already
rendered.  It goes once ``prepare`` accepts per-runtime texts.
"""

from __future__ import annotations

from dataclasses import dataclass

from relaygen_sgl.profile import CueProfile
from relaygen_sgl.relay import (
    RelayConfig,
    RelayError,
    RelayMachine,
    RelayPair,
    Role,
    new_request_id,
    prepare,
    runtimes_used,
)
from relaygen_sgl.relay.pair import Handoff
from relaygen_sgl.runtime_client import RuntimeRequestError, RuntimeUnavailable


@dataclass(frozen=True)
class Prompt:
    text: str
    templated: bool  # rendered by an HF chat template, which writes its own special tokens


def prepare_prompts(pair: RelayPair, config: RelayConfig, prompts: dict[Role, Prompt], *,
                    profile: CueProfile | None, handoff: Handoff = "auto") -> RelayMachine:  # fmt: skip
    used = runtimes_used(config.mode)
    texts = {prompts[r] for r in used}
    if len(texts) == 1 and not next(iter(texts)).templated:
        return prepare(pair, config, prompt=prompts[used[0]].text, profile=profile, handoff=handoff)
    return _prepare_rendered(pair, config, {r: prompts[r] for r in used}, profile, handoff)


def _prepare_rendered(pair: RelayPair, config: RelayConfig, prompts: dict[Role, Prompt],
                      profile: CueProfile | None, handoff: Handoff) -> RelayMachine:  # fmt: skip
    request_id = new_request_id()
    try:
        pair.refresh(list(prompts))  # behind a router: its workers, so each turn finds its replica
        mode = pair.handoff(list(prompts), handoff)
        codecs = {r: pair.tokenizer(r) for r in prompts}
        ids = None
        if mode == "ids":  # tokenized by each runtime itself, as a text request would be
            ids = {r: pair.client_for(r, request_id).tokenize(p.text, add_special_tokens=not p.templated)
                   for r, p in prompts.items()}  # fmt: skip
    except (RuntimeUnavailable, RuntimeRequestError) as e:
        raise RelayError(f"could not prepare the relay: {e}") from e
    return RelayMachine(config=config, profile=profile, prompts={r: p.text for r, p in prompts.items()},
                        prompt_ids=ids, codecs=codecs, request_id=request_id)  # fmt: skip
