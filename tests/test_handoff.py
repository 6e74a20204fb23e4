"""The handoff decision on real tokenizer folders: token ids when the two models share a
vocabulary, text otherwise (no servers: the decision is a pure function of the tokenizers)."""

from __future__ import annotations

import shutil
from pathlib import Path

from transformers import AutoTokenizer

from relaygen_sgl.relay.pair import same_tokenizer


def test_two_folders_sharing_a_tokenizer_hand_off_ids(tiny_pair):
    assert tiny_pair.large != tiny_pair.small
    large = AutoTokenizer.from_pretrained(tiny_pair.large)
    assert same_tokenizer(large, AutoTokenizer.from_pretrained(tiny_pair.small))


def test_one_added_token_makes_the_handoff_text(tiny_pair, tmp_path: Path):
    other = tmp_path / "other"
    shutil.copytree(tiny_pair.small, other)
    tok = AutoTokenizer.from_pretrained(other)
    tok.add_tokens(["<extra_marker>"])
    tok.save_pretrained(other)
    large = AutoTokenizer.from_pretrained(tiny_pair.large)
    assert not same_tokenizer(large, AutoTokenizer.from_pretrained(other))
