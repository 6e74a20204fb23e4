"""Pre-serialised chunks (no servers): a filled template is the event its model would dump, and a
text escaped piece by piece fills to the same bytes as the whole text escaped at once."""

from __future__ import annotations

import orjson

from relaygen_sgl.serving.service import ChunkTemplate, json_escaped, sse

PIECES = ["The", ' "sum"', " is\n", "\t42", " \\ é", " 😀", "\x00\x1f", "</think>"]


def _event(text: str) -> dict[str, object]:
    return {"text": text, "meta_info": {"id": "r", "finish_reason": None, "relaygen_model": "large"}}


def test_a_filled_template_is_the_dumped_event() -> None:
    template = ChunkTemplate.of(_event)
    for n in range(len(PIECES) + 1):
        text = "".join(PIECES[:n])
        assert template.fill(text) == sse(_event(text))


def test_escapes_appended_piece_by_piece_fill_as_the_whole_text() -> None:
    template, escaped = ChunkTemplate.of(_event), bytearray()
    for n, piece in enumerate(PIECES, 1):
        escaped += json_escaped(piece)
        text = "".join(PIECES[:n])
        assert template.fill_escaped(escaped) == template.fill(text)
        assert orjson.loads(template.fill_escaped(escaped)[6:])["text"] == text
