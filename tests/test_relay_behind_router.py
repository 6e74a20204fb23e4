"""Relay servers as the workers of sglang-router 0.3.2: two `relaygen serve` in front of the same
tiny runtime pair, one router in front of them, OpenAI and native requests through it; one
relay server is killed while it runs a request, and the other serves on."""

from __future__ import annotations

import importlib.util
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import requests
from conftest import LONG, QUESTION, start_relay_server, stop_process
from metrics_helpers import scrape

from relaygen_sgl.runtime.pool import RuntimePool
from relaygen_sgl.runtime.workers import router_workers

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("sglang_router") is None,
        reason="sglang-router is not installed (pip install sglang-router==0.3.2)",
    ),
    pytest.mark.timeout(1200),
]
PROMPT = "<|im_start|>user\nWhat is 7 + 8?<|im_end|>\n<|im_start|>assistant\n"


def _served(url: str) -> float:
    """Requests a relay server completed, by its own /metrics."""
    s = scrape(url)
    return sum(
        v
        for (name, labels), v in s.items()
        if name == "relaygen:requests_total" and ("outcome", "ok") in labels
    )


def _wait(check, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_two_relay_servers_behind_one_router(runtimes, forcing, tmp_path: Path):
    servers = [
        start_relay_server(tmp_path, runtimes.large.url, runtimes.small.url, f"relay{i}") for i in range(2)
    ]
    urls = [url for _, url in servers]
    router = RuntimePool(None, worker_urls=urls, name="relays", log_dir=tmp_path, policy="round_robin")
    try:
        for url in urls:  # the router registers a worker from its /server_info and /model_info
            _wait(lambda url=url: requests.get(f"{url}/health", timeout=30).status_code == 200, "relay ready")
        router.start()  # waits until the router routes to both
        listed = {w["url"]: w for w in router_workers(router.url) or []}
        assert set(listed) == set(urls) and all(w["is_healthy"] for w in listed.values()), listed

        client = openai.OpenAI(base_url=f"{router.url}/v1", api_key="unused", max_retries=0)
        cue = forcing.cue_every_token()
        for _ in range(2):  # round robin: one of each pair to each relay server
            chat = client.chat.completions.create(
                model="relaygen", messages=QUESTION, max_tokens=40, extra_body=cue
            )
            assert chat.model_extra["relaygen"]["mode"] == "relay" and chat.usage.completion_tokens > 0
            done = client.completions.create(model="relaygen-large-only", prompt=PROMPT, max_tokens=10)
            assert done.model_extra["relaygen"]["mode"] == "large_only" and done.choices[0].text
            native = requests.post(
                f"{router.url}/generate",
                json={"text": PROMPT, "sampling_params": {"max_new_tokens": 12, "ignore_eos": True}},
                timeout=600,
            )
            assert native.status_code == 200, native.text
            assert native.json()["meta_info"]["relaygen"]["output_tokens"] == 12
        assert all(_served(url) > 0 for url in urls), "the router used one relay server only"
        assert requests.get(f"{router.url}/get_model_info", timeout=30).json()["relaygen"]

        # A long stream through the router; the relay server running it is killed.
        box: dict = {}

        def long_stream() -> None:
            body = {"model": "relaygen-large-only", "prompt": PROMPT, "max_tokens": LONG, "ignore_eos": True}
            try:
                with httpx.stream(
                    "POST", f"{router.url}/v1/completions", json={**body, "stream": True}, timeout=600
                ) as r:
                    box["chunks"] = sum(1 for line in r.iter_lines() if line.startswith("data: {"))
            except httpx.HTTPError as e:
                box["error"] = e
            box["done"] = True

        th = threading.Thread(target=long_stream, daemon=True)
        th.start()

        def busy() -> int | None:
            for i, url in enumerate(urls):
                if scrape(url).get_value("relaygen:num_requests_running"):
                    return i
            return None

        _wait(lambda: busy() is not None, "the long request never ran")
        victim = busy()
        assert victim is not None
        proc, victim_url = servers[victim]
        survivor = urls[1 - victim]
        os.killpg(proc.pid, signal.SIGKILL)  # a crash, by PID
        proc.wait(timeout=30)
        th.join(timeout=120)
        assert box.get("done") and not th.is_alive(), "the in-flight request hung when its relay server died"
        assert "error" in box or box["chunks"] < LONG, box  # cut short, never completed
        # The router's health checks take the dead relay server out of rotation.
        _wait(
            lambda: (
                not any(w["is_healthy"] for w in router_workers(router.url) or [] if w["url"] == victim_url)
            ),
            "the router never noticed the dead relay server",
        )
        before = _served(survivor)
        for i in range(3):
            r = client.chat.completions.create(model="relaygen", messages=QUESTION, max_tokens=20, seed=i)
            assert r.usage.completion_tokens > 0
            native = requests.post(
                f"{router.url}/generate",
                json={"text": PROMPT, "sampling_params": {"max_new_tokens": 8}},
                timeout=600,
            )
            assert native.status_code == 200, native.text
        assert _served(survivor) - before == 6
    finally:
        router.stop()
        for proc, _ in servers:
            if proc.poll() is None:
                stop_process(proc)
