"""One model's workers behind its entry URL: listed, ranked per relay request, marked down,
probed and reported on, over httpx.

An entry URL is an SGLang runtime (its own only worker) or an sglang-router, whose
``GET /workers`` lists the workers with the router's view of their health.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import httpx


def rank_workers(key: str, worker_urls: Sequence[str]) -> list[str]:
    """``worker_urls`` in rendezvous-hash order for ``key``: the first is the key's home worker.

    Stable across calls and processes, and when a worker leaves only the keys it was home to
    move (to their second choice).
    """

    def score(url: str) -> bytes:
        return hashlib.blake2b(f"{key}\0{url}".encode(), digest_size=8).digest()

    return sorted(worker_urls, key=score, reverse=True)


def parse_workers(resp: httpx.Response) -> list[dict[str, Any]] | None:
    """The workers of a ``GET /workers`` answer; None when the URL is no router (an SGLang runtime
    has no ``/workers``: 404)."""
    if resp.status_code != 200:
        return None
    try:
        workers = resp.json().get("workers")
    except ValueError:
        return None
    if not isinstance(workers, list):
        return None
    return [w for w in workers if isinstance(w, dict) and isinstance(w.get("url"), str)]


def router_workers(url: str, timeout: float = 5.0) -> list[dict[str, Any]] | None:
    """The workers an sglang-router at ``url`` routes to; None if ``url`` is no router or is down."""
    try:
        return parse_workers(httpx.get(f"{url.rstrip('/')}/workers", timeout=timeout))
    except httpx.HTTPError:
        return None
