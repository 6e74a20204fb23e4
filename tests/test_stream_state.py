"""The runtime client's stream parser on scripted SGLang ``/generate`` streams (no servers):
cumulative events (SGLang's default) and incremental ones (``--incremental-streaming-output``)
fold into the same output, event by event, however the bytes are split."""

from __future__ import annotations

import random

import orjson
import pytest

from relaygen_sgl.runtime.client import RuntimeRequestError, RuntimeUnavailable, StreamProgress, StreamState

TOKENS = [(101, "The"), (102, " sum"), (103, " is"), (104, " 4"), (105, "2"), (106, "."), (107, " é\n")]


def events(incremental: bool, tokens: list[tuple[int, str]] = TOKENS) -> list[bytes]:
    """The events SGLang streams for ``tokens``, one per token, then ``[DONE]``."""
    out, ids, text = [], [], ""
    for n, (tid, piece) in enumerate(tokens, 1):
        ids.append(tid)
        text += piece
        last = n == len(tokens)
        meta = {
            "id": "r",
            "finish_reason": {"type": "length", "length": n} if last else None,
            "prompt_tokens": 9,
            "completion_tokens": n,
            "cached_tokens": 3,
        }
        data = (
            {"text": piece, "output_ids": [tid]} if incremental else {"text": text, "output_ids": list(ids)}
        )
        out.append(b"data: " + orjson.dumps({**data, "meta_info": meta}) + b"\n\n")
    return [*out, b"data: [DONE]\n\n"]


def progress_texts(reads: list[bytes]) -> tuple[list[str], StreamState]:
    state, texts = StreamState("large"), []
    for data in reads:
        if (p := state.feed(data)) is not None:
            assert isinstance(p, StreamProgress)
            texts.append(p.text)
    return texts, state


def test_cumulative_and_incremental_events_give_the_same_deltas() -> None:
    cumulative, cum_state = progress_texts(events(incremental=False))
    incremental, inc_state = progress_texts(events(incremental=True))
    whole = "".join(piece for _, piece in TOKENS)
    assert cumulative == incremental == ["".join(p for _, p in TOKENS[:n]) for n in range(1, len(TOKENS) + 1)]
    for state in (cum_state, inc_state):
        res = state.result(0.5)
        assert (res.text, res.output_ids) == (whole, [tid for tid, _ in TOKENS])
        assert (res.completion_tokens, res.prompt_tokens, res.cached_tokens) == (7, 9, 3)
        assert res.finish_type == "length"


@pytest.mark.parametrize("incremental", [False, True])
def test_any_split_of_the_bytes_folds_to_the_same_output(incremental: bool) -> None:
    """Reads cut events anywhere, or hold several (of which a cumulative stream needs only the
    last); every progress is a prefix of the output and the result is the same."""
    stream = b"".join(events(incremental))
    whole = "".join(piece for _, piece in TOKENS)
    rng = random.Random(0)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(1, 12)))
        reads = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        texts, state = progress_texts(reads)
        assert texts and texts[-1] == whole and all(whole.startswith(t) for t in texts)
        assert state.result(0.1).output_ids == [tid for tid, _ in TOKENS]


def test_crlf_line_ends_and_comments_are_read() -> None:
    stream = b"".join(events(incremental=True)).replace(b"\n", b"\r\n")
    texts, state = progress_texts([b": keep-alive\r\n\r\n", stream[:7], stream[7:]])
    assert state.result(0.1).text == texts[-1] == "".join(piece for _, piece in TOKENS)


def test_an_error_event_is_a_request_error() -> None:
    state = StreamState("large")
    state.feed(events(incremental=True)[0])
    with pytest.raises(RuntimeRequestError, match="large"):
        state.feed(b'data: {"error": {"message": "boom"}}\n\n')


def test_a_stream_without_output_is_unavailable() -> None:
    state = StreamState("small")
    assert state.feed(b"data: [DONE]\n\n") is None
    with pytest.raises(RuntimeUnavailable, match="without output"):
        state.result(0.1)
