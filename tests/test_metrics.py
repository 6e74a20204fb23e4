"""``GET /metrics``: scraped around real requests on the tiny pair (the counters move by what the
responses report), and on a server whose runtimes are down (it answers and shows the errors)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import requests
from conftest import QUESTION, start_relay_server, stop_process
from metrics_helpers import Scrape, abort_one, scrape

from relaygen_sgl.runtime.process import free_port

PROMPT = "<|im_start|>user\nWhat is 7 + 8?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture
def url(shared_relay_server) -> str:
    return shared_relay_server[1]


def _stats(url: str, route: str, body: dict) -> dict:
    r = requests.post(f"{url}{route}", json=body, timeout=600)
    assert r.status_code == 200, r.text
    out = r.json()
    return out["meta_info"]["relaygen"] if route == "/generate" else out["relaygen"]


def _streamed_stats(url: str, body: dict) -> dict:
    """A streamed completion's relay stats (on its last choice chunk)."""
    stats = None
    with httpx.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}, timeout=600) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                chunk = httpx.Response(200, content=line[6:]).json()
                stats = chunk.get("relaygen", stats)
    assert stats is not None
    return stats


def test_counters_move_by_what_the_requests_report(url, forcing):
    before = scrape(url)
    # A relay that switches (every large turn ends at the forcing cue), a streamed baseline and a
    # native /generate relay.
    cue = forcing.cue_every_token()
    chat = _stats(
        url, "/v1/chat/completions", {"model": "relaygen", "messages": QUESTION, "max_tokens": 60, **cue}
    )
    assert chat["switches"] >= 1 and chat["small_tokens"] > 0
    streamed = _streamed_stats(
        url, {"model": "relaygen-large-only", "prompt": PROMPT, "max_tokens": 30, "ignore_eos": True}
    )
    native = _stats(url, "/generate", {"text": PROMPT, "sampling_params": {"max_new_tokens": 25, **cue}})
    # One refused (its input is too long) and one aborted (the client left).
    too_long = {"model": "relaygen", "messages": [{"role": "user", "content": "x " * 3000}]}
    assert requests.post(f"{url}/v1/chat/completions", json=too_long, timeout=60).status_code == 400
    after = abort_one(url, before)
    d = after.minus(before)
    relays = [chat, streamed, native]

    assert d.get_value("relaygen:requests_total", mode="relay", outcome="ok") == 2
    assert d.get_value("relaygen:requests_total", mode="large_only", outcome="ok") == 1
    assert d.get_value("relaygen:requests_total", mode="relay", outcome="bad_request") == 1
    assert d.get_value("relaygen:requests_total", mode="large_only", outcome="aborted") == 1
    assert d.get_value("relaygen:runtime_errors_total", model="unknown") == 0
    assert after.get_value("relaygen:num_requests_running") == 0
    assert after.get_value("relaygen:num_running_prompt_tokens") == 0
    assert after.get_value("relaygen:ready") == 1
    for model in ("large", "small"):
        want = sum(s[f"{model}_tokens"] for s in relays)
        assert d.get_value("relaygen:generation_tokens_total", model=model) == want
    assert d.get_value("relaygen:switches_total") == sum(s["switches"] for s in relays)
    assert d.get_value("relaygen:discarded_tokens_total") == sum(s["discarded_tokens"] for s in relays)
    assert d.get_value("relaygen:large_utilization_count") == 3
    assert d.get_value("relaygen:large_utilization_sum") == pytest.approx(
        sum(s["large_utilization"] for s in relays), abs=1e-3
    )
    assert d.get_value("relaygen:large_utilization_bucket", le="0.0") == 0  # every relay's large model wrote
    assert d.get_value("relaygen:e2e_request_latency_seconds_count") == 3
    assert d.get_value("relaygen:time_to_first_token_seconds_count") == 1  # only the streamed one
    # One re-prefill observation per call after a relay's first.
    assert d.get_value("relaygen:reprefill_tokens_per_switch_count") == sum(s["calls"] - 1 for s in relays)
    assert chat["calls"] > 1


def test_metrics_answer_while_the_runtimes_are_down_and_show_the_errors(tmp_path: Path):
    dead = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    proc, url = start_relay_server(tmp_path, *dead, "down", ready=False)
    try:
        first = scrape(url)
        assert first.get_value("relaygen:ready") == 0
        h = requests.get(f"{url}/health", timeout=30)
        assert h.status_code == 503 and h.json()["status"] == "starting"
        r = requests.post(
            f"{url}/v1/chat/completions",
            json={"model": "relaygen", "messages": QUESTION, "max_tokens": 5},
            timeout=60,
        )
        assert r.status_code == 503, r.text
        # Forwarded whole (max_new_tokens 0 is a prefix-cache call) to a large runtime that is not there.
        r = requests.post(
            f"{url}/generate", json={"text": "Hi", "sampling_params": {"max_new_tokens": 0}}, timeout=60
        )
        assert r.status_code == 503, r.text
        d: Scrape = scrape(url).minus(first)
        assert d.get_value("relaygen:requests_total", mode="relay", outcome="runtime_error") == 1
        assert d.get_value("relaygen:runtime_errors_total", model="unknown") == 1
        assert d.get_value("relaygen:requests_total", mode="direct", outcome="runtime_error") == 1
        assert requests.get(f"{url}/server_info", timeout=30).json()["relaygen"]["ready"] is False
    finally:
        stop_process(proc)
