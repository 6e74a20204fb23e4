"""A runtime that dies under a request, on real tiny SGLang servers: the relay's error and its
successor on the same port (library), then the relay server's SSE error, 503 and recovery.

One spare runtime serves both tests: each kills the runtime it finds running and leaves its
successor for the next, so the module starts three SGLang servers rather than four."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import requests
from conftest import LONG, QUESTION, start_relay_server, stop_process

from relaygen_sgl.relay import RelayConfig, RelayError, RelayPair, relay_generate
from relaygen_sgl.runtime.process import process_group_alive
from relaygen_sgl.runtime.server import SGLangRuntime
from relaygen_sgl.testing.tiny_models import TinyPair, tiny_profile

TINY_PROFILE = tiny_profile(min_large_tokens=5, max_small_tokens=24)


class Spare:
    """The runtime the tests kill; :meth:`succeed` starts the next one on the same port."""

    def __init__(self, tiny: TinyPair, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.runtime: SGLangRuntime | None = None
        self.port: int | None = None  # a free one at the first start, then kept
        self.starts = 0
        self.succeed(tiny.small)

    def succeed(self, model: Path) -> SGLangRuntime:
        if self.runtime is not None:
            self.runtime.stop()
        self.model = model
        self.runtime = SGLangRuntime(
            model,
            name="victim",
            port=self.port,
            log_dir=self.log_dir / str(self.starts),
            max_total_tokens=4096,
        ).start()
        self.port = self.runtime.port
        self.starts += 1
        return self.runtime


@pytest.fixture(scope="module")
def spare(tiny_pair: TinyPair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spare]:
    s = Spare(tiny_pair, tmp_path_factory.mktemp("spare"))
    try:
        yield s
    finally:
        s.runtime.stop()


def test_a_runtime_dying_mid_request_is_a_clear_error_and_its_successor_is_not_served_stale(
    runtimes, tiny_pair: TinyPair, spare: Spare
):
    """The spare serves; it is stopped under a streaming request, which fails with a RelayError
    naming it, its whole process group gone; a runtime with another model on its port is then
    served as that model (no tokenizer or handoff decision outlives a restart)."""
    victim, pid = spare.runtime, spare.runtime.pid
    pair = RelayPair(runtimes.large, victim)
    before = relay_generate(
        messages=QUESTION, large=pair, profile=TINY_PROFILE, config=RelayConfig(max_tokens=60)
    )
    assert Path(pair.small.model_info["model_path"]) == spare.model
    other = tiny_pair.large if spare.model == tiny_pair.small else tiny_pair.small
    streamed = []

    def stop_at_first_delta(delta) -> None:
        # The request streams, and a LONG generation is far from done: stop the runtime under it.
        if not streamed:
            victim.stop()
        streamed.append(delta)

    with pytest.raises(RelayError, match="small runtime failed") as err:
        relay_generate(
            messages=QUESTION,
            large=pair,
            on_delta=stop_at_first_delta,
            config=RelayConfig(mode="small_only", sampling={"ignore_eos": True}, max_tokens=LONG),
        )
    assert streamed and "not answering" in str(err.value)
    assert not process_group_alive(pid), "stop() must take the whole process group down"
    with pytest.raises(RelayError):
        relay_generate(messages=QUESTION, large=pair, config=RelayConfig(mode="small_only", max_tokens=8))
    spare.succeed(other)
    after = relay_generate(
        messages=QUESTION, large=pair, profile=TINY_PROFILE, config=RelayConfig(max_tokens=60)
    )
    assert Path(pair.small.model_info["model_path"]) == other
    assert pair.small.model_generation == 1
    assert before.stats.output_tokens and after.stats.output_tokens


def test_a_runtime_killed_mid_stream_is_an_sse_error_then_503_then_recovery(
    runtimes, tiny_pair: TinyPair, spare: Spare, tmp_path: Path
):
    proc, url = start_relay_server(tmp_path, runtimes.large.url, spare.runtime.url, "victim")
    try:
        body = {
            "model": "relaygen-small-only",
            "messages": QUESTION,
            "max_tokens": LONG,
            "ignore_eos": True,
            "stream": True,
        }
        events = []
        with httpx.Client(timeout=60) as c, c.stream("POST", f"{url}/v1/chat/completions", json=body) as resp:
            for line in resp.iter_lines():
                if line.startswith("data:"):
                    events.append(line[5:].strip())
                    if len(events) == 3:
                        spare.runtime.stop()
        assert events[-1] == "[DONE]"
        err = json.loads(events[-2])["error"]
        assert err["type"] == "service_unavailable" and "small runtime" in err["message"]
        assert requests.get(f"{url}/health", timeout=10).status_code == 503
        r = requests.post(f"{url}/v1/chat/completions", json={**body, "stream": False, "max_tokens": 5})
        assert r.status_code == 503
        # Back on the same port: the server serves again.
        spare.succeed(tiny_pair.small)
        assert requests.get(f"{url}/health", timeout=10).status_code == 200
        r = requests.post(f"{url}/v1/chat/completions", json={**body, "stream": False, "max_tokens": 5})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 5
    finally:
        stop_process(proc)
