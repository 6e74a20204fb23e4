"""The relay server as the clients that use it see it: token streaming, stop strings, prompt
forms, usage, n, abort on disconnect, SGLang's native API, concurrency, faults and leaks.
Real servers on the tiny pair, real HTTP, nothing mocked."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import requests
from conftest import LONG, QUESTION
from metrics_helpers import hang_up_mid_stream, scrape, wait_for_scrape

from relaygen_sgl.runtime.client import RuntimeClient

PROMPT = "<|im_start|>user\nWhat is 7 + 8?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture
def server(shared_relay_server):
    return shared_relay_server


@pytest.fixture
def url(server) -> str:
    return server[1]


@pytest.fixture
def client(url) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def _wait_busy(client: RuntimeClient, timeout: float = 10.0) -> None:
    """The runtime's load report (published every few hundred ms) shows a running request."""
    t0 = time.monotonic()
    while not client.running_requests():
        assert time.monotonic() - t0 < timeout, "the runtime never reported the request"
        time.sleep(0.1)


def _wait_idle(client: RuntimeClient, timeout: float = 8.0) -> float:
    """Seconds until the runtime runs no request (fails the test past ``timeout``)."""
    t0 = time.monotonic()
    while client.running_requests():
        assert time.monotonic() - t0 < timeout, "the runtime is still generating for a gone client"
        time.sleep(0.2)
    return time.monotonic() - t0


def test_streaming_is_tagged_with_the_model_turn_by_turn(client, forcing):
    deltas = []
    # Every large turn ends at the forcing cue (the server's profile has it), so both models write.
    bias = {"logit_bias": forcing.cue_every_token()["logit_bias"]}
    for chunk in client.chat.completions.create(
        model="relaygen", messages=QUESTION, max_tokens=60, temperature=0, stream=True, extra_body=bias
    ):
        d = chunk.choices[0].delta if chunk.choices else None
        if d is not None and (d.content or (d.model_extra or {}).get("reasoning_content")):
            deltas.append(d)
        last = chunk
    stats = last.model_extra["relaygen"]
    # Each chunk carries one model's text and says which.  How many tokens share a chunk depends
    # on how far the reader lags (SGLang and the relay both join the events that wait), so the
    # count is not asserted; test_streamed_chunks_come_while_the_runtime_is_still_generating
    # shows the stream is not held back.
    models = {(d.model_extra or {}).get("relaygen_model") for d in deltas}
    assert models == {"large", "small"} and stats["switches"] >= 1


def test_streamed_chunks_come_while_the_runtime_is_still_generating(client, runtimes):
    body = dict(
        model="relaygen-large-only",
        messages=QUESTION,
        max_tokens=LONG,
        temperature=0,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    large = RuntimeClient(runtimes.large.url)
    try:
        with client.chat.completions.create(**body) as stream:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    break
            # The first text is here and the runtime still has most of its tokens to write.
            _wait_busy(large)
        _wait_idle(large, timeout=60)  # leaving the stream aborted the rest
    finally:
        large.close()


def test_stop_strings_cut_the_relayed_output(client):
    kw = dict(
        model="relaygen",
        prompt=PROMPT,
        max_tokens=120,
        temperature=0,
        seed=2,
        extra_body={"ignore_eos": True},
    )
    text = client.completions.create(**kw).choices[0].text
    stop = text[len(text) // 2 :][:3]  # a piece of the output: 120 tokens (no EOS) are plenty
    assert len(stop) == 3, text
    r = client.completions.create(**kw, stop=[stop, "never-seen"])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].text == text[: text.index(stop)]
    streamed = "".join(
        c.choices[0].text for c in client.completions.create(**kw, stop=stop, stream=True) if c.choices
    )
    assert streamed == text[: text.index(stop)]


def test_completions_take_lists_and_token_ids(client, runtimes):
    ids = RuntimeClient.of(runtimes.large).tokenizer.encode(PROMPT)
    for prompt, n_choices in (
        (PROMPT, 1),
        ([PROMPT, "<|im_start|>user\nHi<|im_end|>\n"], 2),
        (ids, 1),
        ([ids, ids[:-3]], 2),
    ):
        r = client.completions.create(
            model="relaygen-large-only",
            prompt=prompt,
            max_tokens=8,
            temperature=0,
            extra_body={"ignore_eos": True},
        )
        assert [c.index for c in r.choices] == list(range(n_choices))
        assert all(c.text for c in r.choices)
    same = client.completions.create(model="relaygen-large-only", prompt=PROMPT, max_tokens=8, temperature=0)
    by_ids = client.completions.create(model="relaygen-large-only", prompt=ids, max_tokens=8, temperature=0)
    assert same.choices[0].text == by_ids.choices[0].text


def test_usage_n_and_include_usage(client):
    r = client.chat.completions.create(
        model="relaygen",
        messages=QUESTION,
        max_tokens=120,
        n=2,
        seed=4,
        temperature=0.8,
        extra_body={
            "top_k": 20,
            "min_p": 0.05,
            "an_unknown_field": 1,
            "chat_template_kwargs": {"enable_thinking": True},
        },
    )
    assert [c.index for c in r.choices] == [0, 1]
    stats = r.model_extra["relaygen"]
    assert len(stats) == 2
    assert r.usage.completion_tokens == sum(s["output_tokens"] for s in stats)
    assert r.usage.prompt_tokens > 0
    assert r.usage.completion_tokens_details.reasoning_tokens <= r.usage.completion_tokens
    assert r.usage.prompt_tokens_details is not None
    chunks = list(
        client.chat.completions.create(
            model="relaygen",
            messages=QUESTION,
            max_tokens=60,
            seed=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])
    # A second identical request finds its prompt in the radix cache.
    again = client.chat.completions.create(model="relaygen", messages=QUESTION, max_tokens=4, seed=4)
    assert again.usage.prompt_tokens_details.cached_tokens > 0


def _post_then_hang_up(url: str, path: str, body: dict, runtime: RuntimeClient) -> None:
    """Send a request on a bare socket, wait until the runtime works on it, then close the
    socket without reading: a client that leaves while its answer is being made."""
    host, port = httpx.URL(url).host, httpx.URL(url).port
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(head + payload)
        _wait_busy(runtime)


def test_a_disconnect_aborts_the_runtime_calls(url, runtimes):
    large = RuntimeClient.of(runtimes.large)
    body = {"model": "relaygen-large-only", "messages": QUESTION, "max_tokens": LONG, "ignore_eos": True}

    def aborted(n: int) -> None:
        wait_for_scrape(
            url,
            lambda s: s.minus(before).get_value("relaygen:num_aborted_requests_total") == n,
            f"abort {n}",
        )
        _wait_idle(large)

    before = scrape(url)
    hang_up_mid_stream(url)  # streaming: read a few chunks, then hang up
    aborted(1)
    # Not streaming: the client leaves before any byte of the answer.
    _post_then_hang_up(url, "/v1/chat/completions", body, large)
    aborted(2)


def test_native_generate_through_sglang_runtime_endpoint(url):
    import sglang as sgl

    backend = sgl.RuntimeEndpoint(url)

    @sgl.function
    def solve(s, question):
        s += "<|im_start|>user\n" + question + "<|im_end|>\n<|im_start|>assistant\n"
        s += sgl.gen("answer", max_tokens=160, temperature=0.8, ignore_eos=True)  # an answer of 160 tokens
        s += "\nSure? " + sgl.select("sure", choices=["yes", "no"])

    state = solve.run(question="What is 12 + 30?", backend=backend)
    meta = state.get_meta_info("answer")
    assert state["answer"] and meta["relaygen"]["mode"] == "relay"
    assert meta["completion_tokens"] == meta["relaygen"]["output_tokens"]
    assert state["sure"] in ("yes", "no")
    # Streaming through the same endpoint.
    streamed = solve.run(question="What is 3 + 4?", backend=backend, stream=True)
    chunks = list(streamed.text_iter("answer"))
    assert len(chunks) > 2
    streamed.sync()  # the select after it: SGLang refuses to flush while requests run
    info = requests.get(f"{url}/get_model_info", timeout=10).json()
    assert info["model_path"] and set(info["relaygen"]) >= {"large", "small"}
    assert requests.post(f"{url}/flush_cache", timeout=30).status_code == 200


def test_more_concurrent_requests_than_the_old_thread_cap(url, runtimes):
    """Two dozen relays in flight at once on one event loop (a thread pool ran six at a time)."""
    large = RuntimeClient.of(runtimes.large)
    body = {"model": "relaygen-large-only", "messages": QUESTION, "max_tokens": 400, "ignore_eos": True}
    peak, errors = 0, []

    def one(i: int) -> None:
        try:
            r = requests.post(f"{url}/v1/chat/completions", json={**body, "seed": i}, timeout=300)
            r.raise_for_status()
        except requests.RequestException as e:
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak = max(peak, large.running_requests())
        time.sleep(0.1)
    assert not errors
    assert peak > 12


def _fds_and_threads(pid: int) -> tuple[int, int]:
    """Open files and threads, less libuv's resolver pool: uvloop starts its fixed 4 threads at
    the first address lookup it needs, whatever the load, so they are no thread per request."""
    threads = [n for n in _thread_names(pid) if n != "libuv-worker"]
    return len(os.listdir(f"/proc/{pid}/fd")), len(threads)


def _thread_names(pid: int) -> list[str]:
    tasks = Path(f"/proc/{pid}/task")
    return sorted((tasks / t / "comm").read_text().strip() for t in os.listdir(tasks))


def test_nothing_leaks_after_load(server, runtimes):
    proc, url = server

    def settle() -> tuple[int, int]:
        # Idle pooled connections to the runtimes expire after 5 s and are closed on the pool's
        # next use; the clients' connections to us close with their clients.
        time.sleep(6)
        with openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as c:
            c.chat.completions.create(model="relaygen", messages=QUESTION, max_tokens=4)
        time.sleep(1)
        return _fds_and_threads(proc.pid)

    fds0, threads0 = settle()
    errors = []
    load = openai.OpenAI(
        base_url=f"{url}/v1",
        api_key="unused",
        max_retries=0,
        http_client=httpx.Client(limits=httpx.Limits(max_connections=64)),
    )

    def one(i: int) -> None:
        try:
            kw = dict(model="relaygen", messages=QUESTION, max_tokens=60, seed=i)
            if i % 2:
                list(load.chat.completions.create(stream=True, **kw))
            else:
                load.chat.completions.create(**kw)
        except openai.OpenAIError as e:
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    load.close()
    assert not errors
    assert RuntimeClient.of(runtimes.large).running_requests() == 0
    fds, threads_now = settle()
    assert fds <= fds0 + 2, f"open files {fds0} -> {fds}"
    # No thread per request (the old server held one or two per request): at most a few
    # lazily started pool workers beyond the baseline, whatever the load.
    assert threads_now <= threads0 + 3, f"threads {threads0} -> {threads_now}: {_thread_names(proc.pid)}"


def test_logprob_requests_get_one_models_scores(url, runtimes):
    """lm-eval's loglikelihood requests (echo + logprobs, one token) score text with one model:
    the relay server answers them as that model's runtime does."""
    body = {"prompt": PROMPT + "15", "max_tokens": 1, "temperature": 0, "echo": True, "logprobs": 1}
    for model, runtime in (("relaygen", runtimes.large), ("relaygen-small-only", runtimes.small)):
        via = httpx.post(f"{url}/v1/completions", json={**body, "model": model}, timeout=60).json()
        direct = httpx.post(f"{runtime.url}/v1/completions", json={**body, "model": model}, timeout=60).json()
        got, want = via["choices"][0]["logprobs"], direct["choices"][0]["logprobs"]
        assert got["tokens"] == want["tokens"] and len(got["tokens"]) > 10  # the prompt's tokens too
        assert got["token_logprobs"][1:] == pytest.approx(want["token_logprobs"][1:], abs=1e-4)
    ask = {
        "model": "relaygen",
        "messages": QUESTION,
        "max_tokens": 4,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 2,
    }
    chat = httpx.post(f"{url}/v1/chat/completions", json=ask, timeout=60).json()
    content = chat["choices"][0]["logprobs"]["content"]
    assert len(content) == 4 and all(len(t["top_logprobs"]) == 2 for t in content)
    bad = httpx.post(f"{url}/v1/completions", json={**body, "model": "relaygen", "logprobs": 9}, timeout=60)
    assert bad.status_code == 400 and "logprobs" in bad.text
