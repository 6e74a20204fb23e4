"""Read a relay server's ``/metrics`` (Prometheus text format) with prometheus-client's parser, and
make it count an abort."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import requests
from conftest import LONG, QUESTION
from prometheus_client.parser import text_string_to_metric_families


class Scrape(dict):
    """Every sample of one scrape: ``(name, {label: value})`` -> value; absent samples read 0."""

    def get_value(self, name: str, **labels: str) -> float:
        return self.get((name, tuple(sorted(labels.items()))), 0.0)

    def minus(self, before: Scrape) -> Scrape:
        return Scrape({k: v - before.get(k, 0.0) for k, v in self.items()})


def scrape(url: str) -> Scrape:
    resp = requests.get(f"{url}/metrics", timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return Scrape(
        {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(resp.text)
            for s in family.samples
        }
    )


def wait_for_scrape(url: str, ok: Callable[[Scrape], bool], what: str, timeout: float = 60) -> Scrape:
    """Scrape until ``ok`` holds (the server records an abort when it notices the client left)."""
    deadline = time.monotonic() + timeout
    while True:
        got = scrape(url)
        if ok(got):
            return got
        assert time.monotonic() < deadline, f"{what}: never seen in /metrics"
        time.sleep(0.2)


def hang_up_mid_stream(url: str) -> None:
    """A long streamed chat; the client reads a few chunks and leaves."""
    body = {
        "model": "relaygen-large-only",
        "messages": QUESTION,
        "max_tokens": LONG,
        "ignore_eos": True,
        "stream": True,
    }
    with httpx.Client(timeout=60) as c, c.stream("POST", f"{url}/v1/chat/completions", json=body) as resp:
        lines = resp.iter_lines()
        for _ in range(5):
            next(lines)


def abort_one(url: str, before: Scrape) -> Scrape:
    """Hang up one streamed request, then scrape once the server has counted the abort."""
    hang_up_mid_stream(url)
    return wait_for_scrape(
        url,
        lambda s: s.minus(before).get_value("relaygen:num_aborted_requests_total") == 1,
        "the aborted request",
    )
