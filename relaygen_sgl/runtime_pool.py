"""Replicas of one model: N SGLang workers and, when N > 1, one sglang-router in front.

What sglang-router 0.3.2 (the ``sgl-model-gateway`` Rust binary in the wheel) does
with the relay's traffic, measured on the tiny pair (tests/test_router.py) and read
in its source (``sgl-model-gateway/src/...`` in sgl-project/sglang):

* ``/generate`` is parsed into a typed ``GenerateRequest`` whose ``SamplingParams``
  has 19 fields and no catch-all, then re-serialised.  ``stop_regex`` (and any
  other field it does not know) is dropped without an error; ``input_ids``,
  ``rid``, ``no_stop_trim``, ``stop``, ``sampling_seed``, ``return_logprob`` pass.
  A relay turn sent through the router therefore never stops at a cue: the relay
  has to send its turns to a worker itself (:meth:`RuntimePool.worker_for`), one
  worker per relay request, until the router forwards ``stop_regex``.
* The routing key header ``X-SMG-Routing-Key`` is forwarded to the worker and
  honoured by the ``manual`` and ``consistent_hashing`` policies (sticky per key);
  ``cache_aware`` ignores it and routes on a character radix tree of ``text`` (or of
  ``input_ids`` joined by spaces), which also keeps a growing relay context on one
  worker while the load is balanced.
* ``/abort_request`` is not routed (404): :meth:`RuntimePool.abort` fans it out.
  ``/flush_cache`` is fanned out by the router; ``/get_model_info`` goes to the
  first healthy worker; ``/get_server_info`` answers with the router's own info.
* The router answers ``/health`` 200 with no worker at all, and ``/get_model_info``
  503 ``no_workers`` until its background registration has added one, so
  :meth:`RuntimePool.start` waits until ``/workers`` lists every worker.
* A dead worker: the router retries on the same worker (5 retries, ~0.4 s), then
  answers 500 ``call_upstream_request_error``; it routes around the worker once its
  circuit breaker opens or its health checks fail.  The pool's router opens the
  breaker after 3 failures and checks health every 2 s, so a request whose worker
  dies is retried on a healthy replica, and with no worker left the router answers
  503 ``no_available_workers`` within a second instead of hanging.
"""

from __future__ import annotations

import atexit
import hashlib
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from relaygen_sgl.process_group import free_port, log_tail, spawn_group, stop_groups
from relaygen_sgl.runtimes import SGLangRuntime, split_shared_gpu

ROUTING_KEY_HEADER = "X-SMG-Routing-Key"
DEFAULT_POLICY = "cache_aware"
# The policies sglang-router 0.3.2 launches from its CLI, and whether they honour the routing key.
POLICIES = {
    "cache_aware": False, "manual": True, "round_robin": False, "random": False, "power_of_two": False,
}  # fmt: skip
# Health checks and circuit breaker tuned so a dead replica leaves the rotation within seconds
# (the router's defaults: health checked every 60 s, breaker after 10 failures).
ROUTER_FAULT_ARGS = (
    "--health-check-interval-secs", "2",
    "--health-failure-threshold", "2",
    "--health-success-threshold", "1",
    "--cb-failure-threshold", "3",
    "--cb-timeout-duration-secs", "10",
)  # fmt: skip
_LIVE: weakref.WeakSet[RuntimePool] = weakref.WeakSet()


class PoolStartError(RuntimeError):
    """A worker or the router of a pool could not be started; the message says which."""


@dataclass(frozen=True)
class RoutingAffinity:
    """What one call of a relay request carries so that all its calls meet the same replica."""

    headers: dict[str, str]  # send with the HTTP request
    body: dict[str, Any] = field(default_factory=dict)  # merge into the /generate body


def routing_affinity(request_id: str, call_index: int | None = None) -> RoutingAffinity:
    """Routing key (header) for every call of relay request ``request_id``, and its SGLang ``rid``.

    The header makes the ``manual`` / ``consistent_hashing`` router policies send every
    call of the request to one replica; ``rid`` (``<request_id>-<call_index>``, unique
    per call because SGLang rejects a duplicate rid in flight) is what :meth:`RuntimePool.abort`
    needs to stop the call that is running.
    """
    if not request_id or any(c in request_id for c in "\r\n"):
        raise ValueError(f"routing key must be a non-empty single-line string, got {request_id!r}")
    body = {} if call_index is None else {"rid": f"{request_id}-{call_index}"}
    return RoutingAffinity(headers={ROUTING_KEY_HEADER: request_id}, body=body)


def rank_workers(key: str, worker_urls: Sequence[str]) -> list[str]:
    """``worker_urls`` in rendezvous-hash order for ``key``: the first is the key's home replica.

    Stable across calls and processes, and when a worker leaves only the keys it was
    home to move (to their second choice).
    """

    def score(url: str) -> bytes:
        return hashlib.blake2b(f"{key}\0{url}".encode(), digest_size=8).digest()

    return sorted(worker_urls, key=score, reverse=True)


def router_workers(url: str, timeout: float = 5.0) -> list[dict[str, Any]] | None:
    """The workers an sglang-router at ``url`` routes to (``GET /workers``); None if ``url`` is no router."""
    try:
        resp = requests.get(f"{url.rstrip('/')}/workers", timeout=timeout)
    except requests.RequestException:
        return None
    if resp.status_code != 200:
        return None  # an SGLang runtime has no /workers
    try:
        workers = resp.json().get("workers")
    except ValueError:
        return None
    return workers if isinstance(workers, list) else None


class RuntimePool:
    """``replicas`` SGLang workers for one model, behind one sglang-router when there are several.

    ``url`` is what clients use (the router, or the single worker); ``worker_urls`` are
    the workers themselves.  Everything is stopped by PID (process groups), on
    ``stop()``, on context exit and at interpreter exit.  Use :meth:`attach` for
    replicas started elsewhere (a router URL, or a plain runtime URL).
    """

    def __init__(
        self,
        model_path: str | Path | None,
        replicas: int = 1,
        *,
        worker_urls: Sequence[str] = (),
        name: str | None = None,
        host: str = "127.0.0.1",
        router_port: int | None = None,
        policy: str = DEFAULT_POLICY,
        router_args: Sequence[str] = (),
        router_startup_timeout: float = 120.0,
        request_timeout_s: float = 3 * 3600,
        log_dir: str | Path | None = None,
        **runtime_kwargs: Any,
    ) -> None:
        if worker_urls:
            if model_path is not None:
                raise ValueError("pass model_path (workers started here) or worker_urls (running elsewhere)")
            replicas = len(worker_urls)
        if not isinstance(replicas, int) or replicas < 1:
            raise ValueError(f"replicas must be a positive integer, got {replicas!r}")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        self.model_path = Path(model_path) if model_path is not None else None
        self.replicas = replicas
        self.name = name or (self.model_path.name if self.model_path else "pool")
        self.host = host
        self.router_port = router_port
        self.policy = policy
        self.router_args = list(router_args)
        self.router_startup_timeout = router_startup_timeout
        self.request_timeout_s = request_timeout_s
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="relaygen-pool-"))
        self.router_log_path = self.log_dir / f"sglang-router-{self.name}.log"
        self.workers: list[SGLangRuntime] = []
        if self.model_path is not None:
            self.workers = [
                SGLangRuntime(self.model_path, name=f"{self.name}-{i}" if replicas > 1 else self.name,
                              host=host, log_dir=self.log_dir, **runtime_kwargs)
                for i in range(replicas)
            ]  # fmt: skip
        self.router_proc: subprocess.Popen[bytes] | None = None
        self._remote_workers = [u.rstrip("/") for u in worker_urls]  # run elsewhere, routed from here
        self._external_url: str | None = None  # attach(): router and workers all run elsewhere
        self._external_workers: list[str] = []

    # -- attaching to replicas started elsewhere -----------------------------
    @classmethod
    def attach(cls, url: str, name: str | None = None) -> RuntimePool:
        """A pool for a router or a runtime that someone else runs (starts and stops nothing)."""
        pool = cls(None, name=name or url)
        pool._external_url = url.rstrip("/")
        workers = router_workers(pool._external_url)
        pool._external_workers = [w["url"] for w in workers or [] if isinstance(w.get("url"), str)]
        if workers is None:
            pool._external_workers = [pool._external_url]  # a plain runtime: its own only worker
        pool.replicas = len(pool._external_workers)
        return pool

    # -- addresses -----------------------------------------------------------
    @property
    def has_router(self) -> bool:
        if self._external_url is not None:
            return self._external_workers != [self._external_url]
        return self.replicas > 1

    @property
    def url(self) -> str:
        if self._external_url is not None:
            return self._external_url
        if not self.has_router:
            return self.worker_urls[0]
        if self.router_port is None:
            raise RuntimeError(f"pool {self.name!r} is not started")
        return f"http://{self.host}:{self.router_port}"

    @property
    def worker_urls(self) -> list[str]:
        if self._external_url is not None:
            return list(self._external_workers)
        if self._remote_workers:
            return list(self._remote_workers)
        return [w.url for w in self.workers]

    @property
    def pids(self) -> dict[str, int]:
        """PID (= process group) of every process this pool started, by name."""
        out = {w.name: w.pid for w in self.workers if w.pid is not None}
        if self.router_proc is not None:
            out["router"] = self.router_proc.pid
        return out  # type: ignore[return-value]

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> RuntimePool:
        """Start the workers (in parallel), then the router, and wait until it routes to all of them."""
        return start_pools(self)[0]

    def launch(self) -> RuntimePool:
        """Spawn the worker processes without waiting for them (see :func:`start_pools`)."""
        if self._external_url is None:
            _LIVE.add(self)
            for w in self.workers:
                w.launch()
        return self

    def wait_ready(self) -> RuntimePool:
        """Wait for the workers, then start the router and wait until it routes to all of them."""
        if self._external_url is not None or self.router_proc is not None:
            return self
        for w in self.workers:
            w.wait_ready()
        if self.has_router:
            self._start_router()
        return self

    def router_command(self) -> list[str]:
        assert self.router_port is not None
        return [
            sys.executable, "-m", "sglang_router.launch_router",
            "--host", self.host,
            "--port", str(self.router_port),
            "--policy", self.policy,
            "--worker-urls", *self.worker_urls,
            # Default 29000 would clash between the large and the small pool's routers.
            "--prometheus-host", self.host,
            "--prometheus-port", str(free_port(self.host)),
            # A whole reasoning turn is one request; CPU decoding can take hours.
            "--request-timeout-secs", str(int(self.request_timeout_s)),
            "--log-level", "warn",
            *ROUTER_FAULT_ARGS,
            *self.router_args,
        ]  # fmt: skip

    def _start_router(self) -> None:
        try:
            import sglang_router  # noqa: F401
        except ImportError as e:
            raise PoolStartError(
                f"pool {self.name!r} has {self.replicas} replicas and needs sglang-router in front of them: "
                "pip install sglang-router==0.3.2"
            ) from e
        if self.router_port is None:
            self.router_port = free_port(self.host)
        self.router_proc = spawn_group(self.router_command(), self.router_log_path)
        # The router answers /health at once but registers workers in the background
        # (until then /get_model_info is 503 no_workers): wait until it lists them all.
        deadline = time.monotonic() + self.router_startup_timeout
        want = set(self.worker_urls)
        while time.monotonic() < deadline:
            code = self.router_proc.poll()
            if code is not None:
                raise PoolStartError(
                    f"sglang-router of pool {self.name!r} exited with code {code}; "
                    f"log {self.router_log_path} ends with:\n{log_tail(self.router_log_path, 30)}"
                )
            listed = router_workers(self.url, timeout=2.0) or []
            if want <= {w.get("url") for w in listed if w.get("is_healthy", True)}:
                return
            time.sleep(0.3)
        raise PoolStartError(
            f"sglang-router of pool {self.name!r} did not register {sorted(want)} within "
            f"{self.router_startup_timeout:.0f}s; log {self.router_log_path} ends with:\n"
            f"{log_tail(self.router_log_path, 30)}"
        )

    def stop(self, grace: float = 3.0) -> None:
        """Stop the router and every worker at once, each by its process group."""
        stop_pools([self], grace)

    def _release(self) -> list[subprocess.Popen[bytes]]:
        """Hand over the router's and the workers' processes to be stopped."""
        proc, self.router_proc = self.router_proc, None
        _LIVE.discard(self)
        return [p for p in (proc, *(w._release() for w in self.workers)) if p is not None]

    def __enter__(self) -> RuntimePool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- requests --------------------------------------------------------------
    def worker_alive(self, url: str) -> bool:
        """False once a worker this pool started has exited; True for workers run elsewhere."""
        for w in self.workers:
            if w.url == url:
                return w.proc is not None and w.proc.poll() is None
        return True  # external: only the health probe knows

    def worker_for(self, key: str, exclude: Sequence[str] = ()) -> str:
        """The replica that serves relay request ``key``: its rendezvous-hash home, or the next live one.

        Every call of one relay request that goes here meets the same prefix cache; this is
        how the relay keeps ``stop_regex`` (which the router drops) and affinity at once.
        """
        ranked = [u for u in rank_workers(key, self.worker_urls) if u not in exclude]
        for url in ranked:
            if self.worker_alive(url):
                return url
        if ranked:
            return ranked[0]
        raise RuntimeError(f"pool {self.name!r} has no worker left for {key!r}")

    def health(self, timeout_s: float = 5.0) -> dict[str, Any]:
        """Each worker's own ``/health``, the router's view of it, and whether the pool can serve."""
        listed = {}
        if self.has_router:
            listed = {w.get("url"): w for w in (router_workers(self.url, timeout_s) or [])}
        workers: dict[str, dict[str, Any]] = {}
        for url in self.worker_urls:
            entry: dict[str, Any] = {"healthy": self.worker_alive(url) and self._answers(url, timeout_s)}
            if self.has_router:
                seen = listed.get(url)
                entry["routed"] = bool(seen and seen.get("is_healthy"))
                entry["load"] = seen.get("load") if seen else None
            workers[url] = entry
        router: dict[str, Any] | None = None
        if self.has_router:
            running = self.router_proc is None or self.router_proc.poll() is None
            policy = self.policy if self._external_url is None else None
            alive = running and self._answers(self.url, timeout_s)
            router = {"url": self.url, "alive": alive, "policy": policy}
        healthy = sum(1 for w in workers.values() if w["healthy"] and w.get("routed", True))
        return {
            "name": self.name,
            "url": self.url,
            "ok": healthy > 0 and (router is None or router["alive"]),
            "healthy_workers": healthy,
            "total_workers": len(workers),
            "router": router,
            "workers": workers,
        }

    @staticmethod
    def _answers(url: str, timeout_s: float) -> bool:
        try:
            return requests.get(f"{url}/health", timeout=timeout_s).status_code == 200
        except requests.RequestException:
            return False

    def abort(self, rid: str, timeout_s: float = 10.0) -> dict[str, int | str]:
        """Abort SGLang request ``rid`` wherever it runs: ``/abort_request`` on every worker.

        sglang-router 0.3.2 has no ``/abort_request`` route (404), and only the worker that
        runs ``rid`` knows it (the others ignore it), so this is sent to all of them.
        Returns each worker's status code, or the error text where one did not answer.
        """
        if not rid:
            raise ValueError("rid must be non-empty (an empty rid would abort everything)")
        out: dict[str, int | str] = {}
        for url in self.worker_urls:
            try:
                resp = requests.post(f"{url}/abort_request", json={"rid": rid}, timeout=timeout_s)
                out[url] = resp.status_code
            except requests.RequestException as e:
                out[url] = f"{type(e).__name__}: {e}"
        return out

    def flush_cache(self, timeout_s: float = 30.0) -> None:
        """Empty every worker's prefix cache (each waits up to ``timeout_s`` for running requests)."""
        for url in self.worker_urls:
            resp = requests.post(f"{url}/flush_cache", params={"timeout": timeout_s}, timeout=timeout_s + 10)
            if resp.status_code != 200:
                raise RuntimeError(f"{url} did not flush its cache: {resp.status_code} {resp.text[:160]}")

    def describe(self) -> dict[str, Any]:
        """URLs, PIDs and logs of what this pool started (``relaygen serve-runtimes`` prints it)."""
        workers = [{"url": w.url, "pid": w.pid, "log": str(w.log_path)} for w in self.workers]
        first = self.workers[0] if self.workers else None
        out: dict[str, Any] = {
            "url": self.url,
            "model": str(self.model_path) if self.model_path else None,
            "device": first.device if first else None,
            "router": None,
            "workers": workers,
        }
        if self.has_router and self.router_proc is not None:
            out["router"] = {"url": self.url, "pid": self.router_proc.pid, "log": str(self.router_log_path)}
            return {**out, "pid": self.router_proc.pid, "log": str(self.router_log_path)}
        only = workers[0] if workers else {}
        return {**out, "pid": only.get("pid"), "log": only.get("log")}

    def __repr__(self) -> str:
        try:
            url: str | None = self.url
        except RuntimeError:
            url = None
        return f"RuntimePool({self.name!r}, replicas={self.replicas}, policy={self.policy!r}, url={url})"


def start_pools(*pools: RuntimePool) -> tuple[RuntimePool, ...]:
    """Start several pools at once: every worker loads in parallel (start-up is mostly imports)."""
    try:
        for pool in pools:
            pool.launch()
        for pool in pools:
            pool.wait_ready()
    except BaseException:
        stop_pools(pools)
        raise
    return pools


def stop_pools(pools: Sequence[RuntimePool], grace: float = 3.0) -> None:
    """Stop several pools at once: routers and workers, each by its process group, their grace
    periods overlapping."""
    procs = [p for pool in pools for p in pool._release()]
    if procs:
        stop_groups(procs, grace)


class PoolPair:
    """The large and the small pool of a relay, started together.

    :class:`~relaygen_sgl.runtimes.RuntimePair` with replicas: ``large_args``/``small_args`` go
    to every worker of that model, ``speculative`` to the large ones, the rest to all; workers
    that share a GPU get the same memory split, and the small pool starts first; otherwise every
    worker loads at once.
    """

    def __init__(self, large: str | Path, small: str | Path, *, large_replicas: int = 1,
                 small_replicas: int = 1, large_args: Sequence[str] = (), small_args: Sequence[str] = (),
                 speculative: Any = None, **common: Any) -> None:  # fmt: skip
        self.large = RuntimePool(large, large_replicas, name="large", sglang_args=large_args,
                                 speculative=speculative, **common)  # fmt: skip
        self.small = RuntimePool(small, small_replicas, name="small", sglang_args=small_args, **common)
        self.shared_gpu = split_shared_gpu(self.large.workers, self.small.workers)

    def start(self) -> PoolPair:
        for w in (*self.large.workers, *self.small.workers):
            w.check()  # a bad flag or folder must not leave the other workers running
        if self.shared_gpu:
            try:  # the small workers take their memory before the large ones measure what is free
                start_pools(self.small)
                start_pools(self.large)
            except BaseException:
                self.stop()
                raise
        else:
            start_pools(self.large, self.small)
        return self

    def stop(self) -> None:
        stop_pools([self.small, self.large])

    def __enter__(self) -> PoolPair:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    stop_pools(list(_LIVE))
