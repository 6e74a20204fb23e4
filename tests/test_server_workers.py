"""`relaygen serve` as an operator runs it: several worker processes on one port, and ready
meaning ready (``/health`` is 503 until tokenizers and model info are loaded)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from conftest import QUESTION, start_relay_server, stop_process
from metrics_helpers import abort_one, scrape

from relaygen_sgl.runtime.process import free_port


def _wait_healthy(url: str, timeout: float = 120) -> requests.Response:
    deadline = time.monotonic() + timeout
    while (h := requests.get(f"{url}/health", timeout=30)).status_code != 200:
        assert time.monotonic() < deadline, f"never ready: {h.status_code} {h.text}"
        time.sleep(0.2)
    return h


@pytest.mark.parametrize("count", ["0", "-2", "two"])
def test_a_worker_count_below_one_is_refused(count):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "relaygen_sgl.cli",
            "serve",
            "--large-url",
            "x",
            "--small-url",
            "y",
            "--workers",
            count,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert "argument --workers:" in r.stderr and count in r.stderr, r.stderr


def test_two_workers_serve_on_one_port_and_sum_their_metrics(runtimes, tmp_path: Path):
    proc, url = start_relay_server(tmp_path, runtimes.large.url, runtimes.small.url, "two", "--workers", "2")
    try:
        _wait_healthy(url)
        # Each new connection goes to whichever worker accepts it: both do, sooner or later.
        pids: set[int] = set()
        for _ in range(500):
            pids.add(requests.get(f"{url}/server_info", timeout=30).json()["relaygen"]["pid"])
            if len(pids) == 2:
                break
        assert len(pids) == 2 and proc.pid not in pids, pids
        before = scrape(url)
        body = {"model": "relaygen", "messages": QUESTION, "max_tokens": 20}
        for _ in range(4):
            assert requests.post(f"{url}/v1/chat/completions", json=body, timeout=600).status_code == 200
        native = {"text": "Hi", "sampling_params": {"max_new_tokens": 10}}
        assert requests.post(f"{url}/generate", json=native, timeout=600).status_code == 200
        # A client that leaves mid-stream: its relay is aborted in whichever worker ran it.
        after = abort_one(url, before)
        d = after.minus(before)
        assert d.get_value("relaygen:requests_total", mode="relay", outcome="ok") == 5
        assert d.get_value("relaygen:requests_total", mode="large_only", outcome="aborted") == 1
        assert after.get_value("relaygen:num_requests_running") == 0
        assert after.get_value("relaygen:ready") == 1  # the least ready worker is
    finally:
        stop_process(proc)


class Forwarder:
    """A TCP port that refuses connections until :meth:`open`, then forwards them to ``target``:
    a runtime that comes up after the relay server."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: socket.socket | None = None

    def open(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        assert self._server is not None
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


def test_health_is_503_until_tokenizers_and_model_info_are_loaded(runtimes, tmp_path: Path):
    small = Forwarder(runtimes.small.url)  # the small runtime is not reachable yet
    proc, url = start_relay_server(tmp_path, runtimes.large.url, small.url, "late", ready=False)
    try:
        h = requests.get(f"{url}/health", timeout=30)
        assert h.status_code == 503 and h.json() == {"status": "starting"}
        assert requests.get(f"{url}/server_info", timeout=30).json()["relaygen"]["ready"] is False
        assert scrape(url).get_value("relaygen:ready") == 0
        small.open()
        h = _wait_healthy(url)
        assert h.json()["status"] == "ok"
        # Ready: loaded at start-up, so the first request waits for no tokenizer.
        info = requests.get(f"{url}/server_info", timeout=30).json()
        assert info["relaygen"]["ready"] is True and info["model_path"]
        assert scrape(url).get_value("relaygen:ready") == 1
        r = requests.post(
            f"{url}/v1/chat/completions",
            json={"model": "relaygen", "messages": QUESTION, "max_tokens": 10},
            timeout=600,
        )
        assert r.status_code == 200, r.text
    finally:
        stop_process(proc)
        small.close()
