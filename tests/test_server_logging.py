"""The relay server logs what went wrong on its side: a 5xx answer names the runtime that failed.
No runtime runs here: the server is pointed at ports nobody listens on."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from relaygen_sgl.runtime.process import free_port
from relaygen_sgl.serving.app import create_app
from relaygen_sgl.serving.service import ServerConfig
from relaygen_sgl.testing.tiny_models import tiny_profile


def test_a_dead_runtime_is_a_503_and_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    client = TestClient(create_app(ServerConfig(large_url=dead, small_url=dead, profile=tiny_profile())))
    with caplog.at_level(logging.INFO, logger="relaygen_sgl"):
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}]})
        bad = client.post("/v1/chat/completions", json={"messages": []})
    assert r.status_code == 503 and bad.status_code == 400
    lines = [rec for rec in caplog.records if rec.name.startswith("relaygen_sgl.serving")]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING, [rec.getMessage() for rec in lines]
    msg = lines[0].getMessage()
    assert "POST /v1/chat/completions answered 503" in msg and "large runtime" in msg and dead in msg
