"""Build a pair of tiny Qwen2-style models that share one tokenizer.

Used by the tests and the switch-overhead benchmark: real SGLang servers need
real HF folders, and no hub is reachable.  The models are randomly initialised
and then trained for a few seconds on synthetic step-by-step arithmetic traces,
so that their output looks like reasoning text with discourse cues, sentence
ends, ``</think>`` and ``\\boxed{}`` answers.

The build is deterministic: every random source is seeded and torch runs on one thread with
deterministic algorithms, so one machine builds the same weights every time.  Tests still
never rely on what the models learned: a path a test needs is forced with sampling
parameters (``logit_bias``, ``min_new_tokens``, stop token ids), see ``tests/forcing.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from relaygen_sgl.profile import CueProfile
from relaygen_sgl.testing.chat_template import CHATML_TEMPLATE

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Plain added tokens, as in Qwen3: they survive skip_special_tokens in decoded text.
THINK_TOKENS = ["<think>", "</think>"]
BUILD_VERSION = "4"  # bump when the recipe changes so cached folders are rebuilt

# The cues the tiny models were trained to emit: the tests' and the benches' cue list.
TINY_CUES = ["So", "Therefore,", "Thus", "Now,", "Wait,", "Alternatively,", "Similarly,"]

CUE_SENTENCES = [
    "So {a} + {b} = {s}.",
    "Therefore, the sum is {s}.",
    "Thus the total is {s}.",
    "Now, we add {b} to {a}.",
    "Wait, let me check {a} + {b} again.",
    "Alternatively, count {b} up from {a}.",
    "Similarly, {b} + {a} = {s}.",
    "Let me think about {a} and {b}.",
    "We know that {a} is less than {s}.",
    "The value 3.5 is not an integer, e.g. it has a fraction.",
]


def tiny_profile(**fields: object) -> CueProfile:
    """The tiny pair's cue profile; ``fields`` override the profile's defaults."""
    return CueProfile.from_dict(
        {"large_model": "tiny-large", "small_model": "tiny-small", "cues": list(TINY_CUES), **fields}
    )


@dataclass(frozen=True)
class TinyPair:
    large: Path
    small: Path


def synthetic_trace(rng: random.Random) -> tuple[str, str]:
    """One (question, assistant reply with <think> reasoning) pair."""
    a, b = rng.randint(1, 49), rng.randint(1, 49)
    s = a + b
    steps = rng.sample(CUE_SENTENCES, k=rng.randint(3, 6))
    reasoning = " ".join(x.format(a=a, b=b, s=s) for x in steps)
    question = f"What is {a} + {b}?"
    reply = f"<think>\n{reasoning}\n</think>\n\nThe answer is \\boxed{{{s}}}."
    return question, reply


def _chatml(question: str, reply: str) -> str:
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n{reply}<|im_end|>\n"


def _train_tokenizer(texts: list[str], vocab_size: int):  # -> PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
    )
    fast.add_tokens(THINK_TOKENS)
    fast.chat_template = CHATML_TEMPLATE
    return fast


def _train_model(tokenizer, texts: list[str], hidden: int, layers: int, seed: int, steps: int):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        # SGLang refuses a request past the context; 5120 leaves room for a 4096-token budget
        # (the README's examples) and keeps each server's per-request token table small.
        max_position_embeddings=5120,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    model = Qwen2ForCausalLM(config)
    enc = tokenizer(texts, padding=True, truncation=True, max_length=160, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    labels = ids.masked_fill(mask == 0, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, ids.shape[0], (16,), generator=gen)
        n = int(mask[idx].sum(dim=1).max())  # padding is on the right: a batch needs its longest text only
        loss = model(input_ids=ids[idx, :n], attention_mask=mask[idx, :n], labels=labels[idx, :n]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.generation_config.eos_token_id = config.eos_token_id
    return model


@contextlib.contextmanager
def _deterministic_torch() -> Iterator[None]:
    """One thread and deterministic kernels while building; the caller's settings come back after."""
    import torch

    threads, strict = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)  # a reduction split over N threads sums in an N-dependent order
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(strict)
        torch.set_num_threads(threads)


def default_tiny_dir() -> Path:
    """Where the tiny pair is built and reused: ``RELAYGEN_TINY_DIR``, else the user's cache."""
    return Path(os.environ.get("RELAYGEN_TINY_DIR") or Path.home() / ".cache" / "relaygen" / "tiny")


def build_tiny_pair(out_dir: str | Path, steps_large: int = 300, steps_small: int = 150) -> TinyPair:
    """Build (or reuse) ``out_dir/large`` and ``out_dir/small`` HF folders.

    The same arguments build the same weights on one machine (seeded, one thread); the
    stamp records the recipe version and the steps, so other steps rebuild."""
    out = Path(out_dir)
    stamp = out / "relaygen-tiny.json"
    pair = TinyPair(large=out / "large", small=out / "small")
    recipe = {"version": BUILD_VERSION, "steps_large": steps_large, "steps_small": steps_small}
    if stamp.exists() and json.loads(stamp.read_text()) == recipe:
        return pair
    stamp.unlink(missing_ok=True)  # a build that dies half way must not look finished
    rng = random.Random(1234)
    texts = [_chatml(*synthetic_trace(rng)) for _ in range(400)]
    tokenizer = _train_tokenizer(texts, vocab_size=400)
    specs = ((pair.large, 96, 3, 1, steps_large), (pair.small, 48, 2, 2, steps_small))
    with _deterministic_torch():
        for path, hidden, layers, seed, steps in specs:
            model = _train_model(tokenizer, texts, hidden, layers, seed, steps)
            path.mkdir(parents=True, exist_ok=True)
            model.save_pretrained(path)
            tokenizer.save_pretrained(path)
    stamp.write_text(json.dumps(recipe))
    return pair
