"""Replicas behind sglang-router 0.3.2, on real tiny SGLang servers (nothing mocked).

Two tiny-large replicas behind the router (cache-aware policy), the tiny small model
direct.  What the router does with relay traffic is in relaygen_sgl/runtime/pool.py;
the tests below pin each finding down, so a router upgrade that changes one shows here.
The relay goes around the router for its own calls (AsyncRelayPair.client_for: one replica per
relay request and model) and through it for everything else.

The CLI test runs first and starts (and stops) its own servers, before the module's pools
exist: one set of servers at a time.  The fault tests run last: they kill the large replicas.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from conftest import LONG, relay_server_starting, start_relay_server, stop_process

from relaygen_sgl.relay import (
    AsyncRelayPair,
    RelayConfig,
    RelayError,
    RelayPair,
    prepare,
    relay_generate,
    run,
)
from relaygen_sgl.runtime.client import RuntimeClient
from relaygen_sgl.runtime.pool import RuntimePool, start_pools
from relaygen_sgl.runtime.process import free_port, process_group_alive
from relaygen_sgl.runtime.workers import rank_workers, router_workers
from relaygen_sgl.testing.tiny_models import tiny_profile

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("sglang_router") is None,
        reason="sglang-router is not installed (pip install sglang-router==0.3.2)",
    ),
    pytest.mark.timeout(1800),  # the first tests also wait for three SGLang servers to start
]

TINY_PROFILE = tiny_profile(min_large_tokens=5, max_small_tokens=24)
CUE_TOKENS = 60  # a cue-forced relay of 60 tokens switches twice (see test_relay.py)
QUESTION = [{"role": "user", "content": "What is 12 + 30?"}]
# A CPU shared with other jobs can take minutes to start three SGLang servers.
STARTUP_S = float(os.environ.get("RELAYGEN_TEST_STARTUP_S", 900))
ROUTING_KEY_HEADER = "X-SMG-Routing-Key"  # sglang-router's sticky-routing header


def _health(pool: RuntimePool) -> dict:
    """The pool's health as the relay reports it: each worker's own /health, and the router's."""

    async def go() -> dict:
        pair = AsyncRelayPair(pool, pool)
        try:
            return await pair.health("large")
        finally:
            await pair.aclose()

    return asyncio.run(go())


def _home(pool: RuntimePool, key: str) -> str:
    """The worker a relay request ``key`` goes to while all are up."""
    return rank_workers(key, pool.worker_urls)[0]


def _on_every_worker(pool: RuntimePool, path: str, body: dict | None = None) -> set[int]:
    """POST ``path`` to each worker (abort and flush are per worker); their status codes."""
    return {requests.post(f"{url}{path}", json=body, timeout=60).status_code for url in pool.worker_urls}


def _config(sampling: dict, max_tokens: int, **fields) -> RelayConfig:
    return RelayConfig(max_tokens=max_tokens, sampling=sampling, **fields)


def _children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (the workers and routers a CLI started, each its own group)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_cli_serve_with_replicas_relays_through_routers_and_stops_everything(
    tiny_pair, forcing, tmp_path: Path
):
    """`relaygen serve --large-replicas 2`: 3 workers + 1 router, /health per worker, relays switch,
    SIGTERM stops every process group it started."""
    profile = forcing.cue_profile(min_large_tokens=5, max_small_tokens=24).save(tmp_path / "profile.json")
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "relaygen_sgl.cli",
            "serve",
            "--large-model",
            str(tiny_pair.large),
            "--small-model",
            str(tiny_pair.small),
            "--large-replicas",
            "2",
            "--max-total-tokens",
            "8192",
            "--log-dir",
            str(tmp_path / "logs"),
            "--startup-timeout",
            str(STARTUP_S),
            "--profile",
            str(profile),
            "--port",
            str(port),
            "--default-max-tokens",
            "200",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    started: list[int] = []
    try:
        deadline = time.monotonic() + STARTUP_S + 120
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            started = _children(proc.pid) or started
            try:
                if not relay_server_starting(url):
                    h = requests.get(f"{url}/health", timeout=30)
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "relay server did not come up"
            time.sleep(1)
        assert h.status_code == 200, h.text
        health = h.json()
        large, small = health["large"], health["small"]
        assert large["ok"] and large["router"]["alive"] and large["healthy_workers"] == 2, health
        assert large["url"] == large["router"]["url"] and large["url"] not in large["workers"]
        assert small["ok"] and small["router"] is None and list(small["workers"]) == [small["url"]]
        started = _children(proc.pid)
        assert len(started) == 4, started  # two large workers, their router, one small worker
        # Every large turn ends at the cue (forced): the cue regexes reached the workers.
        r = requests.post(
            f"{url}/v1/chat/completions",
            timeout=600,
            json={
                "model": "relaygen",
                "messages": QUESTION,
                "n": 2,
                "max_tokens": CUE_TOKENS,
                **forcing.cue_every_token(),
            },
        )
        assert r.status_code == 200, r.text
        stats = r.json()["relaygen"]
        assert [s["switches"] for s in stats] == [2, 2], stats
    finally:
        started = _children(proc.pid) or started
        os.killpg(proc.pid, signal.SIGTERM)
        rc = proc.wait(timeout=120)
        log.close()
    assert rc in (0, 143), (tmp_path / "serve.log").read_text()[-3000:]  # 143: SIGTERM, re-raised by uvicorn
    deadline = time.monotonic() + 30
    while left := [pid for pid in started if process_group_alive(pid)]:
        assert time.monotonic() < deadline, f"process groups outlived `relaygen serve`: {left}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def pools(tiny_pair, tmp_path_factory: pytest.TempPathFactory):
    logs = tmp_path_factory.mktemp("pool-logs")
    large = RuntimePool(
        tiny_pair.large,
        replicas=2,
        name="large",
        log_dir=logs,
        max_total_tokens=8192,
        startup_timeout=STARTUP_S,
    )
    small = RuntimePool(
        tiny_pair.small,
        replicas=1,
        name="small",
        log_dir=logs,
        max_total_tokens=8192,
        startup_timeout=STARTUP_S,
    )
    start_pools(large, small)
    try:
        yield large, small
    finally:
        pids = list(large.pids.values()) + list(small.pids.values())
        large.stop()
        small.stop()
        left = [pid for pid in pids if process_group_alive(pid)]
        assert not left, f"process groups left running after stop(): {left}"


@pytest.fixture(scope="module")
def cue(forcing):
    """A profile and sampling under which every large turn ends at the cue (tests/forcing.py)."""
    return forcing.cue_profile(min_large_tokens=5, max_small_tokens=24), forcing.cue_every_token()


@pytest.fixture(scope="module")
def relay_server(pools, cue, tmp_path_factory: pytest.TempPathFactory):
    """`relaygen serve` in front of the large pool's router and the small runtime, with the cue profile."""
    large, small = pools
    proc, url = start_relay_server(
        tmp_path_factory.mktemp("relay-server"), large.url, small.url, "pooled", profile=cue[0]
    )
    try:
        yield url
    finally:
        stop_process(proc)


def _reuse(calls) -> list[tuple[str, int, int]]:
    """(runtime, cached_tokens, that runtime's previous context) for every call but each runtime's first."""
    seen: dict[str, int] = {}
    out = []
    for call in calls:
        if call.role in seen:
            out.append((call.role, call.cached_tokens, seen[call.role]))
        seen[call.role] = call.prompt_tokens + call.kept_tokens
    return out


def _assert_switches_reuse_cache(results) -> None:
    """Every relay switched (the cues fired: forced), and every call after a runtime's first hits
    >= 90% of that runtime's previous context."""
    assert [r.stats.switches for r in results] == [2] * len(results), [r.text[-80:] for r in results]
    checked = 0
    for r in results:
        for runtime, cached, prev in _reuse(r.stats.calls):
            assert cached >= 0.9 * prev, (runtime, cached, prev, r.stats.calls)
            checked += 1
    assert checked >= 2


def _request_id(result) -> str:
    return result.stats.calls[0].rid[:-6]  # rids are <request id>-<5 digits>


def _keys_homed(pair: AsyncRelayPair, per_worker: int, prefix: str) -> dict[str, list[str]]:
    """Request ids whose large replica is each worker in turn: ``per_worker`` of each."""
    reps = pair.workers["large"]
    homes: dict[str, list[str]] = {u: [] for u in reps.urls}
    i = 0
    while any(len(v) < per_worker for v in homes.values()):
        key = f"{prefix}-{i}"
        home = reps.worker_for(key)
        if len(homes[home]) < per_worker:
            homes[home].append(key)
        i += 1
    return homes


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
    h = _health(large)
    assert h["ok"] and h["healthy_workers"] == 2 and h["router"]["alive"]
    assert all(w["healthy"] and w["routed"] for w in h["workers"].values())
    assert _health(small)["ok"] and _health(small)["router"] is None
    # What a relay server given only the URL sees: the router lists the workers, a runtime has none.
    assert sorted(w["url"] for w in router_workers(large.url) or []) == sorted(large.worker_urls)
    assert router_workers(small.url) is None
    # What `relaygen serve-runtimes` prints for them (tests/test_runtimes.py runs the CLI): every
    # PID, the router's as the pool's own.
    shown_large, shown_small = large.describe(), small.describe()
    assert shown_large["router"]["pid"] == shown_large["pid"] == large.router_proc.pid
    assert {w["url"] for w in shown_large["workers"]} == set(large.worker_urls)
    assert len({w["pid"] for w in shown_large["workers"]} - {None, shown_large["pid"]}) == 2
    assert shown_small["router"] is None and shown_small["pid"] == shown_small["workers"][0]["pid"]


def test_router_drops_stop_regex_but_keeps_ids_rid_and_no_stop_trim(pools):
    """The reason a relay through the router makes no switch: the cue regexes never arrive."""
    large, _ = pools
    tok = RuntimeClient.of(large.worker_urls[0]).tokenizer
    ids = tok.encode("Count: 1 2 3 4", add_special_tokens=False)
    # stop_regex matches any character: a worker stops at the first token.
    params = {
        "max_new_tokens": 16,
        "temperature": 0,
        "ignore_eos": True,
        "no_stop_trim": True,
        "stop_regex": [r"[\s\S]"],
    }
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


def test_relay_pinned_to_one_replica_per_request_switches_and_reuses_cache(pools, cue):
    """A relay given one worker URL or the pool objects: each request on one replica."""
    large, small = pools
    profile, sampling = cue
    results, homes = [], []
    for seed in range(4):
        key = f"relay-{seed}"
        homes.append(_home(large, key))
        results.append(
            relay_generate(
                messages=QUESTION,
                large=homes[-1],
                small=small.url,
                profile=profile,
                config=_config(sampling, CUE_TOKENS),
            )
        )
    results += [
        relay_generate(
            messages=QUESTION, large=large, small=small, profile=profile, config=_config(sampling, CUE_TOKENS)
        )
        for _ in range(2)
    ]
    _assert_switches_reuse_cache(results)
    assert homes == [_home(large, f"relay-{s}") for s in range(4)]  # stable


def test_relay_through_the_router_url_switches_and_reuses_cache(pools, cue):
    """The acceptance test: the relay given the router URL sends every call of a request to one
    replica (so the cues fire and each switch after the first hits >= 90% of that runtime's
    previous context), and spreads requests over both replicas."""
    large, small = pools
    profile, sampling = cue
    pair = AsyncRelayPair(large.url, small.url)  # as a relay server gets it: a URL, workers found at /workers

    async def run_all() -> tuple[dict[str, list[str]], list]:
        await pair.refresh()
        reps = pair.workers["large"]
        assert reps.is_router and sorted(reps.urls) == sorted(large.worker_urls)
        assert not pair.workers["small"].is_router and pair.client_for("small", "x") is pair.small
        homes = _keys_homed(pair, 2, "relay-url")

        async def one(key: str):
            m = await prepare(
                pair, _config(sampling, CUE_TOKENS), messages=QUESTION, profile=profile, request_id=key
            )
            return await run(m, pair)

        try:
            return homes, await asyncio.gather(*(one(k) for ks in homes.values() for k in ks))  # all at once
        finally:
            await pair.aclose()

    homes, results = asyncio.run(run_all())
    assert [_request_id(r) for r in results] == [k for ks in homes.values() for k in ks]
    for home, ks in homes.items():
        assert all(pair.client_for("large", k).url == home for k in ks)
    # The sync face and a fresh pair per call (relay_generate with the router URL) alike.
    results += [
        relay_generate(
            messages=QUESTION,
            large=large.url,
            small=small.url,
            profile=profile,
            config=_config(sampling, CUE_TOKENS),
        )
        for _ in range(2)
    ]
    _assert_switches_reuse_cache(results)
    switches = sum(r.stats.switches for r in results)
    print(
        f"\nrelay through the router URL: {len(results)} requests, {switches} switches, "
        f"{sum(len(_reuse(r.stats.calls)) for r in results)} repeat calls all >= 90% cached"
    )


def test_cancelled_relay_aborts_its_call_on_its_own_replica(pools):
    large, small = pools
    pair = AsyncRelayPair(large.url, small.url)
    key = f"cancel-{uuid.uuid4().hex}"
    got: list = []

    async def go() -> float:
        cfg = RelayConfig(mode="large_only", max_tokens=LONG, sampling={"ignore_eos": True})
        m = await prepare(pair, cfg, messages=QUESTION, request_id=key)
        home = RuntimeClient(pair.client_for("large", key).url)
        task = asyncio.create_task(run(m, pair, on_delta=got.append))
        deadline = time.monotonic() + 120
        while not got:  # streaming from its replica
            assert time.monotonic() < deadline and not task.done(), "the relay never streamed"
            await asyncio.sleep(0.05)
        while not await asyncio.to_thread(home.running_requests):  # its load report lags a little
            assert time.monotonic() < deadline, "the replica never reported the relay's call"
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        t0 = time.monotonic()
        while await asyncio.to_thread(home.running_requests):  # the abort reached the replica
            assert time.monotonic() - t0 < 15, "the cancelled call kept running on its replica"
            await asyncio.sleep(0.1)
        await pair.aclose()
        return time.monotonic() - t0

    took = asyncio.run(go())
    assert sum(len(d.text) for d in got) < LONG * 8  # it was cut short
    print(f"\ncancelled relay: its replica stopped the call {took:.2f}s after the cancel")


def test_relay_server_fronts_the_router_and_reports_each_worker(pools, relay_server, cue):
    large, small = pools
    h = requests.get(f"{relay_server}/health", timeout=60)
    assert h.status_code == 200, h.text
    body = h.json()
    assert body["status"] == "ok"
    assert body["large"]["router"] == {"url": large.url, "alive": True}
    assert set(body["large"]["workers"]) == set(large.worker_urls)
    assert all(w["healthy"] for w in body["large"]["workers"].values())
    assert body["small"]["router"] is None and list(body["small"]["workers"]) == [small.url]
    r = requests.post(
        f"{relay_server}/v1/chat/completions",
        timeout=600,
        json={
            "model": "relaygen",
            "messages": QUESTION,
            "n": 2,
            "max_tokens": CUE_TOKENS,
            **cue[1],
        },
    )
    assert r.status_code == 200, r.text
    assert [s["switches"] for s in r.json()["relaygen"]] == [2, 2]


def _interleaved_turns(url: str, tok, with_key: bool, requests_n: int = 3, turns: int = 4) -> list[float]:
    """Relay-shaped traffic: growing input_ids contexts of several requests, calls interleaved.

    Returns cached_tokens / previous context for every call but each request's first.
    """
    ctx, prev, ratios = {}, {}, []
    filler = tok.encode(" Then we go on.", add_special_tokens=False)  # stands in for a small-model turn
    for r in range(requests_n):
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": f"What is {10 + r} + {30 + 7 * r}?"}],
            tokenize=False,
            add_generation_prompt=True,
        )
        ctx[r] = tok.encode(prompt, add_special_tokens=False)
    key = {r: uuid.uuid4().hex for r in range(requests_n)}
    for t in range(turns):
        for r in range(requests_n):
            params = {"max_new_tokens": 12, "temperature": 0.8, "sampling_seed": t, "no_stop_trim": True}
            body = {"input_ids": ctx[r], "rid": f"{key[r]}-{t}", "sampling_params": params}
            out = _generate(url, body, headers={ROUTING_KEY_HEADER: key[r]} if with_key else None)
            if r in prev:
                ratios.append(out["meta_info"]["cached_tokens"] / prev[r])
            prev[r] = out["meta_info"]["prompt_tokens"] + len(out["output_ids"])
            ctx[r] = ctx[r] + out["output_ids"] + filler
    return ratios


def test_turns_through_the_router_land_where_their_prefix_is(pools, tmp_path: Path):
    large, _ = pools
    tok = RuntimeClient.of(large.worker_urls[0]).tokenizer
    _on_every_worker(large, "/flush_cache")
    cache_aware = _interleaved_turns(large.url, tok, with_key=False)
    # A second router over the same workers, with the policy that honours the routing key.
    with RuntimePool(
        None,
        worker_urls=large.worker_urls,
        policy="manual",
        name="large-manual",
        log_dir=tmp_path,
        router_args=("--assignment-mode", "min_load"),
    ) as manual:
        _on_every_worker(large, "/flush_cache")
        keyed = _interleaved_turns(manual.url, tok, with_key=True)
        _on_every_worker(large, "/flush_cache")
        unkeyed = _interleaved_turns(manual.url, tok, with_key=False)  # control: random worker per call

    def mean(xs: list[float]) -> str:
        return f"{sum(xs) / len(xs):.3f} (min {min(xs):.3f}, n={len(xs)})"

    print(
        f"\nprefix reuse through the router: cache_aware {mean(cache_aware)}; "
        f"manual + routing key {mean(keyed)}; manual without key {mean(unkeyed)}"
    )
    assert min(cache_aware) >= 0.9, cache_aware
    assert min(keyed) >= 0.9, keyed


def _long_request(url: str, rid: str, into: dict, max_new: int = LONG) -> threading.Thread:
    def run() -> None:
        t0 = time.monotonic()
        try:
            resp = requests.post(
                f"{url}/generate",
                timeout=600,
                json={
                    "text": "Count: 1 2 3",
                    "rid": rid,
                    "sampling_params": {"max_new_tokens": max_new, "ignore_eos": True},
                },
            )
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
    rid = f"abort-{uuid.uuid4().hex}-0"
    box: dict = {}
    th = _long_request(large.url, rid, box)
    _busy_worker(large, box)
    assert requests.post(f"{large.url}/abort_request", json={"rid": rid}, timeout=10).status_code == 404
    t0 = time.monotonic()
    assert _on_every_worker(large, "/abort_request", {"rid": rid}) == {200}  # only its worker knows it
    th.join(timeout=30)
    assert not th.is_alive() and time.monotonic() - t0 < 30
    assert box["status"] == 200 and box["json"]["meta_info"]["finish_reason"]["type"] == "abort", box
    assert box["json"]["meta_info"]["completion_tokens"] < LONG


def _kill(pool: RuntimePool, url: str) -> int:
    """SIGKILL one worker's whole process group (a crash, not a shutdown)."""
    worker = next(w for w in pool.workers if w.url == url)
    pid = worker.pid
    os.killpg(pid, signal.SIGKILL)
    worker.proc.wait(timeout=30)
    return pid


EVAL_N = 8  # problems in the eval that runs through the kill, 4 at a time
# Tokens per problem, with --ignore-eos: the eval is long by construction (two rounds of 400
# decode steps), far longer than the few HTTP calls the test makes between seeing it under way
# and killing the replica.
EVAL_TOKENS = 400


def _eval(tmp_path: Path, pools) -> subprocess.Popen:
    """`python -m evals.run_eval` through the large pool's router, as its own process."""
    large, small = pools
    problems = tmp_path / "problems.jsonl"
    if not problems.exists():
        rows = [
            {"id": f"p{i}", "problem": f"What is {i} + {2 * i}?", "answer": str(3 * i)} for i in range(EVAL_N)
        ]
        problems.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tiny_profile().save(tmp_path / "profile.json")
    cmd = [
        sys.executable,
        "-m",
        "evals.run_eval",
        "--dataset",
        f"jsonl:{problems}",
        "--limit",
        "0",
        "--modes",
        "relay",
        "--max-tokens",
        str(EVAL_TOKENS),
        "--ignore-eos",
        "--concurrency",
        "4",
        "--large-url",
        large.url,
        "--small-url",
        small.url,
        "--profile",
        str(tmp_path / "profile.json"),
        "--out",
        str(tmp_path / "eval"),
    ]
    log = open(tmp_path / "eval.log", "ab")  # noqa: SIM115 - the child owns it
    try:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def test_killed_replica_fails_its_in_flight_request_clearly_and_the_others_go_on(
    pools, relay_server, forcing, tmp_path: Path
):
    """We chose to fail the in-flight request (with a RelayError naming the runtime and the replica)
    rather than retry it elsewhere: its output may have been streamed already.  New requests
    go to the live replica; only the dead replica's requests move; an eval's rerun fills its gap."""
    large, small = pools
    pair = RelayPair(large.url, small.url)  # long-lived, as in a server
    pair.refresh()
    victim, survivor = large.worker_urls
    keys = [f"k{i}" for i in range(32)]
    before = {k: pair.aio.client_for("large", k).url for k in keys}
    key = _keys_homed(pair.aio, 1, "in-flight")[victim][0]
    done: dict = {}
    got: list = []

    def in_flight() -> None:
        cfg = RelayConfig(mode="large_only", max_tokens=LONG, sampling={"ignore_eos": True})
        try:
            done["result"] = pair.run(pair.prepare(cfg, messages=QUESTION, request_id=key), got.append)
        except RelayError as e:
            done["error"] = e
        done["t"] = time.monotonic()

    ev = _eval(tmp_path, pools)
    # Its relays run on the large workers and the small one in turn.
    workers = [RuntimeClient(u) for u in [*large.worker_urls, *small.worker_urls]]
    deadline = time.monotonic() + 300
    while sum(w.running_requests() for w in workers) < 2:  # the eval is under way
        assert time.monotonic() < deadline and ev.poll() is None, (tmp_path / "eval.log").read_text()[-3000:]
        time.sleep(0.1)
    th = threading.Thread(target=in_flight, daemon=True)
    th.start()
    while not got:  # the long request streams from its replica
        assert time.monotonic() < deadline and th.is_alive(), f"the relay never streamed: {done}"
        time.sleep(0.05)
    t_kill = time.monotonic()
    _kill(large, victim)
    th.join(timeout=120)
    assert not th.is_alive(), "the in-flight request hung after its replica died"
    err = done.get("error")
    assert err is not None, f"the in-flight request did not fail: {done}"
    assert "large runtime failed" in str(err) and victim in str(err) and err.role == "large", err
    print(f"\nin-flight request failed {done['t'] - t_kill:.2f}s after the kill: {err}")
    # Only the dead replica's requests move.
    after = {k: pair.aio.client_for("large", k).url for k in keys}
    assert set(after.values()) == {survivor}
    assert {k for k in keys if before[k] != after[k]} == {k for k in keys if before[k] == victim}
    # New requests succeed: on this pair (it saw the failure), over the pool objects (they see the
    # dead process), and with a fresh pair per call once the router's health check has noticed.
    # Each writes 40 fillers (forced), so each answer is known.
    sevens = forcing.repeat(forcing.filler)
    cfg = RelayConfig(max_tokens=40, sampling=sevens)
    again = pair.run(pair.prepare(cfg, messages=QUESTION, profile=TINY_PROFILE, request_id=key))
    pooled = relay_generate(
        messages=QUESTION, large=large, small=small, profile=TINY_PROFILE, config=_config(sevens, 40)
    )
    deadline = time.monotonic() + 60
    while any(w.get("is_healthy") for w in router_workers(large.url) or [] if w.get("url") == victim):
        assert time.monotonic() < deadline, "the router never noticed the dead replica"
        time.sleep(0.5)
    fresh = [
        relay_generate(
            messages=QUESTION,
            large=large.url,
            small=small.url,
            profile=TINY_PROFILE,
            config=_config(sevens, 40),
        )
        for _ in range(3)
    ]
    assert [r.text for r in [again, pooled, *fresh]] == [forcing.filler_text * 40] * 5
    # The relay server: /health says which replica is gone and still serves (one large worker left).
    h = requests.get(f"{relay_server}/health", timeout=60)
    assert h.status_code == 200, h.text
    assert h.json()["large"]["healthy_workers"] == 1 and not h.json()["large"]["workers"][victim]["healthy"]
    r = requests.post(
        f"{relay_server}/v1/chat/completions",
        timeout=600,
        json={
            "model": "relaygen",
            "messages": QUESTION,
            "n": 4,
            "temperature": 0.8,
            "seed": 11,
            "max_tokens": 120,
        },
    )
    assert r.status_code == 200, r.text
    # The eval that ran through the kill: what failed is missing, and the same command fills it in.
    first = ev.wait(timeout=900)
    saved = tmp_path / "eval" / "results.jsonl"
    rows_before = saved.read_text().splitlines() if saved.exists() else []
    assert first in (0, 1) and (first == 0) == (len(rows_before) == EVAL_N), (first, len(rows_before))
    assert _eval(tmp_path, pools).wait(timeout=900) == 0, (tmp_path / "eval.log").read_text()[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "eval" / "results.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(f"p{i}" for i in range(EVAL_N))
    print(
        f"eval through the kill: exit {first}, {len(rows_before)} of {EVAL_N} saved; "
        f"the rerun completed all {EVAL_N}"
    )
    h = _health(large)
    assert h["ok"] and h["healthy_workers"] == 1 and not h["workers"][victim]["healthy"]


def test_no_live_worker_is_a_fast_error_and_a_503_not_a_hang(pools, relay_server):
    large, small = pools
    for url in large.worker_urls:
        if large.worker_alive(url):
            _kill(large, url)
    t0 = time.monotonic()
    with pytest.raises(RelayError, match="runtime 'large'") as err:
        relay_generate(
            messages=QUESTION,
            large=large.url,
            small=small.url,
            config=RelayConfig(mode="large_only", max_tokens=20),
        )
    assert time.monotonic() - t0 < 15, err.value
    t0 = time.monotonic()
    r = requests.post(
        f"{relay_server}/v1/chat/completions",
        timeout=60,
        json={"model": "relaygen", "messages": QUESTION, "max_tokens": 20},
    )
    assert r.status_code == 503 and time.monotonic() - t0 < 15, (r.status_code, r.text)
    h = requests.get(f"{relay_server}/health", timeout=60)
    assert h.status_code == 503 and h.json()["status"] == "degraded"
    health = h.json()
    assert not health["large"]["ok"] and health["large"]["healthy_workers"] == 0 and health["small"]["ok"]
    # The router itself: 500, then 503 once the circuit breakers are open.
    codes = [requests.post(f"{large.url}/generate", json={"text": "hi"}, timeout=30) for _ in range(4)]
    codes = [c.status_code for c in codes]
    assert codes[-1] == 503, codes
    assert not _health(large)["ok"]


def test_rendezvous_ranking():
    urls = [f"http://w{i}" for i in range(4)]
    assert rank_workers("k", urls) == rank_workers("k", list(reversed(urls)))
    homes = {rank_workers(f"k{i}", urls)[0] for i in range(64)}
    assert len(homes) == 4  # keys spread over the replicas
    # Removing a replica moves only the keys it was home to.
    moved = [i for i in range(64) if rank_workers(f"k{i}", urls)[0] != rank_workers(f"k{i}", urls[1:])[0]]
    assert all(rank_workers(f"k{i}", urls)[0] == urls[0] for i in moved)
