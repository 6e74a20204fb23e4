"""The OpenAI-compatible relay server, driven by the official openai client."""

from __future__ import annotations

import json
import time
from pathlib import Path

import openai
import pytest
import requests
from conftest import QUESTION, start_relay_server, stop_process

from relaygen_sgl.runtime.process import free_port


@pytest.fixture
def server(shared_relay_server) -> str:
    return shared_relay_server[1]


@pytest.fixture
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)


def test_models_and_health(client, server):
    assert {m.id for m in client.models.list()} >= {"relaygen", "relaygen-large-only"}
    h = requests.get(f"{server}/health", timeout=10)
    assert h.status_code == 200 and h.json()["large"] and h.json()["small"]


def test_chat_completion_with_relay_stats(client):
    r = client.chat.completions.create(
        model="relaygen",
        messages=QUESTION,
        max_tokens=100,
        temperature=0.8,
        seed=3,
        extra_body={"ignore_eos": True},
    )
    stats = r.model_extra["relaygen"]
    assert stats["mode"] == "relay" and stats["output_tokens"] == r.usage.completion_tokens
    assert stats["large_tokens"] + stats["small_tokens"] == r.usage.completion_tokens
    msg = r.choices[0].message
    reasoning = msg.model_extra.get("reasoning_content") or ""
    assert (reasoning + (msg.content or "")).strip()
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 100


def test_chat_streaming_matches_non_streaming(client):
    kw = dict(model="relaygen", messages=QUESTION, max_tokens=300, temperature=0.0, seed=5)
    full = client.chat.completions.create(**kw)
    reasoning, content, last = "", "", None
    for chunk in client.chat.completions.create(stream=True, **kw):
        if chunk.choices:
            d = chunk.choices[0].delta
            reasoning += (d.model_extra or {}).get("reasoning_content") or ""
            content += d.content or ""
            last = chunk
    assert last is not None and last.choices[0].finish_reason == full.choices[0].finish_reason
    assert last.model_extra["relaygen"]["output_tokens"] == full.usage.completion_tokens
    assert content == (full.choices[0].message.content or "")
    assert reasoning == (full.choices[0].message.model_extra.get("reasoning_content") or "")


def test_completions_streaming_and_not(client):
    prompt = "<|im_start|>user\nWhat is 7 + 8?<|im_end|>\n<|im_start|>assistant\n"
    full = client.completions.create(
        model="relaygen-large-only",
        prompt=prompt,
        max_tokens=60,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert full.model_extra["relaygen"]["mode"] == "large_only"
    chunks = client.completions.create(
        model="relaygen-large-only",
        prompt=prompt,
        max_tokens=60,
        temperature=0,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    streamed = "".join(c.choices[0].text for c in chunks if c.choices)
    assert streamed == full.choices[0].text and streamed


def test_concurrent_requests_are_served_concurrently(client):
    from concurrent.futures import ThreadPoolExecutor

    def one(seed: int) -> float:
        t = time.perf_counter()
        client.chat.completions.create(
            model="relaygen-large-only",
            messages=QUESTION,
            max_tokens=150,
            temperature=0.8,
            seed=seed,
            extra_body={"ignore_eos": True},
        )
        return time.perf_counter() - t

    solo = one(100)
    with ThreadPoolExecutor(4) as pool:
        t0 = time.perf_counter()
        list(pool.map(one, range(4)))
        wall = time.perf_counter() - t0
    assert wall < 4 * solo  # serial handling would take about 4x one request


@pytest.mark.parametrize(
    "body,status,code_or_param",
    [
        ("{not json", 400, None),
        ({"model": "gpt-9", "messages": QUESTION}, 404, "model_not_found"),
        ({"model": "relaygen", "messages": QUESTION, "max_tokens": 0}, 400, "max_tokens"),
        ({"model": "relaygen", "messages": QUESTION, "max_tokens": -5}, 400, "max_tokens"),
        ({"model": "relaygen", "messages": []}, 400, "messages"),
        (
            {"model": "relaygen", "messages": [{"role": "user", "content": "x " * 3000}]},
            400,
            "context_length_exceeded",
        ),
        ({"model": "relaygen", "messages": QUESTION, "temperature": "hot"}, 400, "temperature"),
        ({"model": "relaygen", "messages": QUESTION, "logit_bias": {"seven": 1}}, 400, "logit_bias"),
        ({"model": "relaygen", "messages": QUESTION, "logit_bias": {"7": 101}}, 400, "logit_bias"),
    ],
)
def test_bad_requests_get_openai_style_errors(server, body, status, code_or_param):
    data = body if isinstance(body, str) else json.dumps(body)
    r = requests.post(
        f"{server}/v1/chat/completions", data=data, timeout=30, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == status
    err = r.json()["error"]
    assert err["message"] and err["type"]
    if code_or_param:
        assert code_or_param in (err["code"], err["param"])
    assert requests.get(f"{server}/v1/models", timeout=5).status_code == 200  # still up


def test_openai_client_raises_on_unknown_model(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=QUESTION)


def test_dead_runtime_gives_503_and_server_stays_up(runtimes, tmp_path: Path):
    dead = f"http://127.0.0.1:{free_port()}"
    proc, url = start_relay_server(tmp_path, runtimes.large.url, dead, "dead", ready=False)
    try:
        c = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.APIStatusError) as err:
            c.chat.completions.create(model="relaygen", messages=QUESTION, max_tokens=20)
        assert err.value.status_code == 503
        assert requests.get(f"{url}/health", timeout=10).status_code == 503
        # Still serving: the large-only baseline needs only the live runtime.
        ok = c.chat.completions.create(model="relaygen-large-only", messages=QUESTION, max_tokens=20)
        assert ok.usage.completion_tokens > 0
    finally:
        stop_process(proc)
    assert proc.poll() is not None
