"""Replicas behind sglang-router 0.3.2, on real tiny SGLang servers (nothing mocked).

Two tiny-large replicas behind the router (cache-aware policy), the tiny small model
direct.  What the router does with relay traffic is in relaygen_sgl/runtime_pool.py;
the tests below pin each finding down, so a router upgrade that changes one shows here.
The fault tests run last: they kill the large replicas.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from relaygen_sgl.profile import CueProfile
from relaygen_sgl.relay import RelayError, relay_generate
from relaygen_sgl.runtime_client import RuntimeClient
from relaygen_sgl.runtime_pool import (
    ROUTING_KEY_HEADER,
    RuntimePool,
    rank_workers,
    router_workers,
    routing_affinity,
    start_pools,
)
from relaygen_sgl.runtimes import process_group_alive

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("sglang_router") is None,
        reason="sglang-router is not installed (pip install sglang-router==0.3.2)",
    ),
    pytest.mark.timeout(1800),  # the first test also waits for three SGLang servers to start
]

TINY_PROFILE = CueProfile.from_dict({
    "large_model": "tiny-large",
    "small_model": "tiny-small",
    "cues": ["So", "Therefore,", "Thus", "Now,", "Wait,", "Alternatively,", "Similarly,"],
    "min_large_tokens": 5,
    "max_small_tokens": 24,
})  # fmt: skip
QUESTION = [{"role": "user", "content": "What is 12 + 30?"}]
# The hook relay_generate needs before it can go through a router URL (see the module docstring
# of runtime_pool): a request id that every call carries as the routing key.
RELAY_HAS_ROUTING_HOOK = "request_id" in inspect.signature(relay_generate).parameters
# A CPU shared with other jobs can take minutes to start three SGLang servers.
STARTUP_S = float(os.environ.get("RELAYGEN_TEST_STARTUP_S", 900))


@pytest.fixture(scope="module")
def pools(tiny_pair, tmp_path_factory: pytest.TempPathFactory):
    logs = tmp_path_factory.mktemp("pool-logs")
    large = RuntimePool(tiny_pair.large, replicas=2, name="large", log_dir=logs,
                        max_total_tokens=8192, startup_timeout=STARTUP_S)  # fmt: skip
    small = RuntimePool(tiny_pair.small, replicas=1, name="small", log_dir=logs,
                        max_total_tokens=8192, startup_timeout=STARTUP_S)  # fmt: skip
    start_pools(large, small)
    try:
        yield large, small
    finally:
        pids = list(large.pids.values()) + list(small.pids.values())
        large.stop()
        small.stop()
        left = [pid for pid in pids if process_group_alive(pid)]
        assert not left, f"process groups left running after stop(): {left}"


def _reuse(calls) -> list[tuple[str, int, int]]:
    """(runtime, cached_tokens, that runtime's previous context) for every call but each runtime's first."""
    seen: dict[str, int] = {}
    out = []
    for call in calls:
        if call.runtime in seen:
            out.append((call.runtime, call.cached_tokens, seen[call.runtime]))
        seen[call.runtime] = call.prompt_tokens + call.kept_tokens
    return out


def _assert_switches_reuse_cache(results) -> None:
    assert sum(r.stats.switches for r in results) >= 1, [r.text[-80:] for r in results]
    checked = 0
    for r in results:
        for runtime, cached, prev in _reuse(r.stats.calls):
            assert cached >= 0.9 * prev, (runtime, cached, prev, r.stats.calls)
            checked += 1
    assert checked >= 2


def _generate(url: str, body: dict, headers: dict | None = None, timeout: float = 300) -> dict:
    resp = requests.post(f"{url}/generate", json=body, headers=headers or {}, timeout=timeout)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_pool_is_routable_as_soon_as_it_is_started(pools):
    large, small = pools
    # The router answers /health at once but /get_model_info 503 until it has registered a
    # worker in the background; start() waits for that, so the first call works.
    assert requests.get(f"{large.url}/get_model_info", timeout=30).status_code == 200
    assert large.has_router and large.url not in large.worker_urls and len(large.worker_urls) == 2
    assert not small.has_router and small.url == small.worker_urls[0]
    h = large.health()
    assert h["ok"] and h["healthy_workers"] == 2 and h["router"]["alive"]
    assert all(w["healthy"] and w["routed"] for w in h["workers"].values())
    assert small.health()["ok"] and small.health()["router"] is None
    attached = RuntimePool.attach(large.url)  # what a relay server given only the URL sees
    assert attached.has_router and sorted(attached.worker_urls) == sorted(large.worker_urls)
    assert RuntimePool.attach(small.url).worker_urls == [small.url]


def test_router_drops_stop_regex_but_keeps_ids_rid_and_no_stop_trim(pools):
    """The reason a relay through the router makes no switch: the cue regexes never arrive."""
    large, _ = pools
    tok = RuntimeClient.of(large.worker_urls[0]).tokenizer
    ids = tok.encode("Count: 1 2 3 4", add_special_tokens=False)
    # stop_regex matches any character: a worker stops at the first token.
    params = {"max_new_tokens": 16, "temperature": 0, "ignore_eos": True, "no_stop_trim": True,
              "stop_regex": [r"[\s\S]"]}  # fmt: skip
    direct = _generate(large.worker_urls[0], {"input_ids": ids, "sampling_params": params})
    rid = f"probe-{uuid.uuid4().hex}"
    routed = _generate(large.url, {"input_ids": ids, "rid": rid, "sampling_params": params})
    assert direct["meta_info"]["finish_reason"]["type"] == "stop"
    assert direct["meta_info"]["completion_tokens"] < 16
    # Through the router: no stop_regex, so it runs to max_new_tokens.  If this fails, the
    # router forwards stop_regex now and the relay can send its turns through pool.url.
    assert routed["meta_info"]["finish_reason"] == {"type": "length", "length": 16}
    assert routed["meta_info"]["id"].startswith("probe-")  # rid passed
    assert len(routed["output_ids"]) == 16  # input_ids passed, ids came back


def test_relay_pinned_to_one_replica_per_request_switches_and_reuses_cache(pools):
    """Works with today's relay_generate: each request's turns all go to worker_for(its id)."""
    large, small = pools
    results, homes = [], []
    for seed in range(4):
        key = f"relay-{seed}"
        homes.append(large.worker_for(key))
        results.append(relay_generate(
            messages=QUESTION, large=homes[-1], small=small.url, profile=TINY_PROFILE,
            sampling={"temperature": 0.8, "sampling_seed": seed}, max_tokens=200,
        ))  # fmt: skip
    _assert_switches_reuse_cache(results)
    assert homes == [large.worker_for(f"relay-{s}") for s in range(4)]  # stable


@pytest.mark.skipif(not RELAY_HAS_ROUTING_HOOK, reason=(
    "sglang-router 0.3.2 drops sampling_params.stop_regex, so relay_generate(large=<router url>) "
    "never stops at a cue; needs relay_generate(request_id=...) that sends each turn to "
    "RuntimePool.attach(url).worker_for(request_id) with the X-SMG-Routing-Key header"))  # fmt: skip
def test_relay_through_the_router_url_switches_and_reuses_cache(pools):
    large, small = pools
    results = [
        relay_generate(
            messages=QUESTION,
            large=large.url,
            small=small.url,
            profile=TINY_PROFILE,
            sampling={"temperature": 0.8, "sampling_seed": seed},
            max_tokens=200,
            request_id=f"relay-url-{seed}",
        )  # fmt: skip
        for seed in range(4)
    ]
    _assert_switches_reuse_cache(results)


def _interleaved_turns(url: str, tok, with_key: bool, requests_n: int = 3, turns: int = 4) -> list[float]:
    """Relay-shaped traffic: growing input_ids contexts of several requests, calls interleaved.

    Returns cached_tokens / previous context for every call but each request's first.
    """
    ctx, prev, ratios = {}, {}, []
    filler = tok.encode(" Then we go on.", add_special_tokens=False)  # stands in for a small-model turn
    for r in range(requests_n):
        prompt = tok.apply_chat_template([{"role": "user", "content": f"What is {10 + r} + {30 + 7 * r}?"}],
                                         tokenize=False, add_generation_prompt=True)  # fmt: skip
        ctx[r] = tok.encode(prompt, add_special_tokens=False)
    key = {r: uuid.uuid4().hex for r in range(requests_n)}
    for t in range(turns):
        for r in range(requests_n):
            aff = routing_affinity(key[r], t)
            params = {"max_new_tokens": 12, "temperature": 0.8, "sampling_seed": t, "no_stop_trim": True}
            body = {"input_ids": ctx[r], **aff.body, "sampling_params": params}
            out = _generate(url, body, headers=aff.headers if with_key else None)
            if r in prev:
                ratios.append(out["meta_info"]["cached_tokens"] / prev[r])
            prev[r] = out["meta_info"]["prompt_tokens"] + len(out["output_ids"])
            ctx[r] = ctx[r] + out["output_ids"] + filler
    return ratios


def test_turns_through_the_router_land_where_their_prefix_is(pools, tmp_path: Path):
    large, _ = pools
    tok = RuntimeClient.of(large.worker_urls[0]).tokenizer
    large.flush_cache()
    cache_aware = _interleaved_turns(large.url, tok, with_key=False)
    # A second router over the same workers, with the policy that honours the routing key.
    with RuntimePool(None, worker_urls=large.worker_urls, policy="manual", name="large-manual",
                     log_dir=tmp_path, router_args=("--assignment-mode", "min_load")) as manual:  # fmt: skip
        large.flush_cache()
        keyed = _interleaved_turns(manual.url, tok, with_key=True)
        large.flush_cache()
        unkeyed = _interleaved_turns(manual.url, tok, with_key=False)  # control: random worker per call

    def mean(xs: list[float]) -> str:
        return f"{sum(xs) / len(xs):.3f} (min {min(xs):.3f}, n={len(xs)})"

    print(f"\nprefix reuse through the router: cache_aware {mean(cache_aware)}; "
          f"manual + routing key {mean(keyed)}; manual without key {mean(unkeyed)}")  # fmt: skip
    assert min(cache_aware) >= 0.9, cache_aware
    assert min(keyed) >= 0.9, keyed


def _long_request(url: str, rid: str, into: dict, max_new: int = 1800) -> threading.Thread:
    def run() -> None:
        t0 = time.monotonic()
        try:
            resp = requests.post(f"{url}/generate", timeout=600, json={
                "text": "Count: 1 2 3", "rid": rid,
                "sampling_params": {"max_new_tokens": max_new, "ignore_eos": True},
            })  # fmt: skip
            into["status"] = resp.status_code
            into["json"] = resp.json() if resp.status_code == 200 else resp.text
        except requests.RequestException as e:
            into["error"] = e
        into["s"] = time.monotonic() - t0

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def _busy_worker(pool: RuntimePool, box: dict | None = None, timeout: float = 60) -> str:
    """The worker the router sent the running request to (its load count, as the router sees it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for w in router_workers(pool.url) or []:
            if w.get("load"):
                return w["url"]
        assert not box or "s" not in box, f"the request ended before it was seen running: {box}"
        time.sleep(0.1)
    raise AssertionError("no worker of the pool picked the request up")


def test_abort_through_the_pool_reaches_the_worker_running_it(pools):
    large, _ = pools
    rid = routing_affinity(f"abort-{uuid.uuid4().hex}", 0).body["rid"]
    box: dict = {}
    th = _long_request(large.url, rid, box)
    _busy_worker(large, box)
    assert requests.post(f"{large.url}/abort_request", json={"rid": rid}, timeout=10).status_code == 404
    t0 = time.monotonic()
    assert set(large.abort(rid).values()) == {200}
    th.join(timeout=30)
    assert not th.is_alive() and time.monotonic() - t0 < 30
    assert box["status"] == 200 and box["json"]["meta_info"]["finish_reason"]["type"] == "abort", box
    assert box["json"]["meta_info"]["completion_tokens"] < 1800


def _kill(pool: RuntimePool, url: str) -> int:
    """SIGKILL one worker's whole process group (a crash, not a shutdown)."""
    worker = next(w for w in pool.workers if w.url == url)
    pid = worker.pid
    os.killpg(pid, signal.SIGKILL)
    worker.proc.wait(timeout=30)
    return pid


def test_killed_replica_in_flight_request_and_new_requests(pools):
    large, small = pools
    done: dict = {}

    def in_flight() -> None:
        t0 = time.monotonic()
        try:
            done["result"] = relay_generate(
                messages=QUESTION, large=large.url, small=small.url, mode="large_only",
                sampling={"ignore_eos": True}, max_tokens=1000,
            )  # fmt: skip
        except RelayError as e:
            done["error"] = e
        done["s"] = time.monotonic() - t0

    th = threading.Thread(target=in_flight, daemon=True)
    th.start()
    victim = _busy_worker(large, done)
    survivor = next(u for u in large.worker_urls if u != victim)
    _kill(large, victim)
    th.join(timeout=300)
    assert not th.is_alive(), "the in-flight request hung after its replica died"
    if "error" in done:  # a clear error that names the runtime that failed
        assert "large runtime failed" in str(done["error"]) and "HTTP 5" in str(done["error"]), done["error"]
        print(f"\nin-flight request failed after {done['s']:.1f}s: {done['error']}")
    else:  # or the router retried the turn on the healthy replica
        assert done["result"].stats.large_tokens == 1000
        calls = [(c.prompt_tokens, c.cached_tokens, c.completion_tokens) for c in done["result"].stats.calls]
        print(f"\nin-flight request was retried on the healthy replica, {done['s']:.1f}s in all; "
              f"calls (prompt, cached, completion): {calls}")  # fmt: skip
    # New requests succeed: through the router, and pinned (worker_for skips the dead replica).
    for i in range(4):
        key = f"after-kill-{i}"
        assert large.worker_for(key) == survivor
        pinned = relay_generate(messages=QUESTION, large=large.worker_for(key), small=small.url,
                                profile=TINY_PROFILE, sampling={"temperature": 0.8, "sampling_seed": i},
                                max_tokens=120)  # fmt: skip
        assert pinned.text
        routed = relay_generate(messages=QUESTION, large=large.url, small=small.url, mode="large_only",
                                sampling={"temperature": 0.8, "sampling_seed": i}, max_tokens=40)  # fmt: skip
        assert routed.text
    h = large.health()
    assert h["ok"] and h["healthy_workers"] == 1 and not h["workers"][victim]["healthy"]


def test_router_without_any_worker_fails_fast_not_hangs(pools):
    large, small = pools
    for url in large.worker_urls:
        if large._worker_alive(url):
            _kill(large, url)
    t0 = time.monotonic()
    with pytest.raises(RelayError, match=r"large runtime failed.*HTTP 5\d\d") as err:
        relay_generate(messages=QUESTION, large=large.url, small=small.url, mode="large_only", max_tokens=20)
    assert time.monotonic() - t0 < 15, err.value
    # Once the circuit breakers are open the router says so with a 503.
    codes = [requests.post(f"{large.url}/generate", json={"text": "hi"}, timeout=30) for _ in range(4)]
    codes = [c.status_code for c in codes]
    assert codes[-1] == 503, codes
    assert not large.health()["ok"]
    with pytest.raises(RuntimeError, match="no worker"):
        large.worker_for("any", exclude=large.worker_urls)


def test_routing_helpers():
    aff = routing_affinity("req-1", 3)
    assert aff.headers == {ROUTING_KEY_HEADER: "req-1"} and aff.body == {"rid": "req-1-3"}
    assert routing_affinity("req-1").body == {}
    with pytest.raises(ValueError):
        routing_affinity("bad\nkey")
    urls = [f"http://w{i}" for i in range(4)]
    assert rank_workers("k", urls) == rank_workers("k", list(reversed(urls)))
    homes = {rank_workers(f"k{i}", urls)[0] for i in range(64)}
    assert len(homes) == 4  # keys spread over the replicas
    # Removing a replica moves only the keys it was home to.
    moved = [i for i in range(64) if rank_workers(f"k{i}", urls)[0] != rank_workers(f"k{i}", urls[1:])[0]]
    assert all(rank_workers(f"k{i}", urls)[0] == urls[0] for i in moved)
