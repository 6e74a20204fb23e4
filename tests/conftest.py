"""Shared fixtures: tiny models built here, real SGLang servers on CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from forcing import Forcing

from relaygen_sgl.profile import CueProfile
from relaygen_sgl.runtime.pool import RuntimePair
from relaygen_sgl.runtime.process import free_port
from relaygen_sgl.testing.tiny_models import TINY_CUES, TinyPair, build_tiny_pair, default_tiny_dir
from relaygen_sgl.testing.tiny_models import tiny_profile as make_tiny_profile

QUESTION = [{"role": "user", "content": "What is 12 + 30?"}]
# Tokens of a generation that a test cuts short (a hang-up, an abort, a killed runtime): long by
# construction, so the cut comes while the runtime still works on it however fast the machine
# (the tiny models' context is 5,120 tokens; the test runtimes hold 8,192 at once).
LONG = 4000

# Tiny models take ~1 min to build; keep them between runs unless told not to.
TINY_DIR = default_tiny_dir()


@pytest.fixture(scope="session")
def tiny_pair() -> TinyPair:
    return build_tiny_pair(TINY_DIR)


@pytest.fixture(scope="session")
def forcing(tiny_pair: TinyPair) -> Forcing:
    """Sampling that forces a relay path on the tiny pair (tests/forcing.py)."""
    return Forcing.of(tiny_pair.large)


@pytest.fixture(scope="session")
def runtimes(tiny_pair: TinyPair, tmp_path_factory: pytest.TempPathFactory):
    """Two real SGLang servers (large + small) shared by the whole session."""
    pair = RuntimePair(
        tiny_pair.large,
        tiny_pair.small,
        max_total_tokens=8192,
        log_dir=tmp_path_factory.mktemp("sglang-logs"),
    )
    with pair:
        yield pair


@pytest.fixture(scope="session")
def shared_relay_server(runtimes, forcing: Forcing, tmp_path_factory: pytest.TempPathFactory):
    """`relaygen serve` in front of the session's runtimes: (proc, url).  Its profile is the tiny
    pair's plus the forcing cue, so a request can force switches with ``logit_bias``.  The server
    test modules share it (one start instead of one per module)."""
    profile = make_tiny_profile(cues=[*TINY_CUES, forcing.cue_word])
    proc, url = start_relay_server(
        tmp_path_factory.mktemp("relay-server"),
        runtimes.large.url,
        runtimes.small.url,
        "shared",
        profile=profile,
    )
    try:
        yield proc, url
    finally:
        stop_process(proc)


@pytest.fixture(scope="session")
def tiny_profile() -> CueProfile:
    """The tiny pair's cue profile (its cue list is :data:`relaygen_sgl.testing.tiny_models.TINY_CUES`)."""
    return make_tiny_profile()


def start_relay_server(
    tmp_path: Path,
    large_url: str,
    small_url: str,
    name: str,
    *extra: str,
    profile: CueProfile | None = None,
    ready: bool = True,
):
    """`relaygen serve` in front of two runtimes, in its own process group; returns (proc, url).
    ``profile``: the tiny pair's by default.  ``ready``: wait until it has loaded the tokenizers
    and model info (``/health`` no longer "starting"); pass False when a runtime is down."""
    profile_path = (profile or make_tiny_profile()).save(tmp_path / f"{name}-profile.json")
    port = free_port()
    log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "relaygen_sgl.cli",
            "serve",
            "--large-url",
            large_url,
            "--small-url",
            small_url,
            "--profile",
            str(profile_path),
            "--port",
            str(port),
            "--max-input-tokens",
            "512",
            "--default-max-tokens",
            "200",
            *extra,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None, (tmp_path / f"{name}.log").read_text()[-2000:]
        try:
            requests.get(f"{url}/v1/models", timeout=2)
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline, "relay server did not come up"
            time.sleep(0.3)
    while ready and relay_server_starting(url):
        assert proc.poll() is None and time.monotonic() < deadline, "relay server never became ready"
        time.sleep(0.3)
    return proc, url


def relay_server_starting(url: str) -> bool:
    """Whether the relay server is still loading tokenizers and model info (its /health says so)."""
    h = requests.get(f"{url}/health", timeout=30)
    return h.status_code == 503 and h.json().get("status") == "starting"


def stop_process(proc: subprocess.Popen) -> None:
    """Stop a process group we started, by PID."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
