"""The runtime client against a real socket that misbehaves on purpose (no SGLang, milliseconds)."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import warnings

import pytest

from relaygen_sgl.runtime.client import AsyncRuntimeClient, RuntimeUnavailable

MODEL_INFO = {"model_path": "models/large", "is_generation": True}


async def _server(drops: int, seen: list[str]) -> asyncio.AbstractServer:
    """Answers /get_model_info, after closing the first ``drops`` connections unanswered."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head.split(b" ")[1].decode())
        if len(seen) <= drops:
            writer.close()
            return
        body = json.dumps(MODEL_INFO).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def _url(server: asyncio.AbstractServer) -> str:
    return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def test_a_get_whose_connection_drops_is_sent_once_more() -> None:
    async def go() -> None:
        seen: list[str] = []
        server = await _server(drops=1, seen=seen)
        async with server:
            info = await AsyncRuntimeClient(_url(server), name="large").model_info()
        assert info == MODEL_INFO and seen == ["/get_model_info"] * 2

    asyncio.run(go())


def test_a_runtime_that_keeps_dropping_is_reported_unavailable_by_name() -> None:
    async def go() -> None:
        seen: list[str] = []
        server = await _server(drops=10, seen=seen)
        async with server:
            with pytest.raises(RuntimeUnavailable, match="runtime 'large' at .* is not answering"):
                await AsyncRuntimeClient(_url(server), name="large").model_info()
        assert len(seen) == 2  # one repeat, no more

    asyncio.run(go())


def test_a_client_used_under_a_closed_loop_is_dropped_without_an_unclosed_session_warning(caplog):
    """asyncio.run() closes its loop; the stream session made there has nothing left to close."""
    clients = [AsyncRuntimeClient("http://127.0.0.1:9", "gone")]

    async def touch() -> None:
        assert clients[0].streams is clients[0].streams  # one session per loop

    asyncio.run(touch())
    with caplog.at_level(logging.ERROR, logger="asyncio"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clients.clear()
        gc.collect()
    assert not [r for r in caplog.records if "Unclosed client session" in r.getMessage()]
    assert not [w for w in caught if "Unclosed client session" in str(w.message)]
