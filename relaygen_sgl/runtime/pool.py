"""Starting and stopping runtimes: a pool is N SGLang workers of one model and, when N > 1, one
sglang-router in front; a :class:`RuntimePair` is the large and the small pool of a relay (a
plain pair is a pool of one worker each).  Which worker serves what is :mod:`.workers`' part.

What sglang-router 0.3.2 (the ``sgl-model-gateway`` Rust binary in the wheel) does
with the relay's traffic, measured on the tiny pair (tests/test_router.py) and read
in its source (``sgl-model-gateway/src/...`` in sgl-project/sglang):

* ``/generate`` is parsed into a typed ``GenerateRequest`` whose ``SamplingParams``
  has 19 fields and no catch-all, then re-serialised.  ``stop_regex`` (and any
  other field it does not know) is dropped without an error; ``input_ids``,
  ``rid``, ``no_stop_trim``, ``stop``, ``sampling_seed``, ``return_logprob`` pass.
  A relay turn sent through the router therefore never stops at a cue: the relay
  sends its turns to a worker itself (:meth:`.workers.Workers.worker_for`, one worker
  per relay request), until the router forwards ``stop_regex``.
* The routing key header ``X-SMG-Routing-Key`` is forwarded to the worker and
  honoured by the ``manual`` and ``consistent_hashing`` policies (sticky per key);
  ``cache_aware`` ignores it and routes on a character radix tree of ``text`` (or of
  ``input_ids`` joined by spaces), which also keeps a growing relay context on one
  worker while the load is balanced.
* ``/abort_request`` is not routed (404): the relay aborts a call on the worker it sent
  it to.
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

import logging
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from relaygen_sgl.launch_options import Speculative
from relaygen_sgl.runtime.process import STOP_GRACE_S, free_port, spawn_group, stop_groups, wait_for
from relaygen_sgl.runtime.server import SGLangRuntime
from relaygen_sgl.runtime.workers import router_workers

logger = logging.getLogger(__name__)
DEFAULT_POLICY = "cache_aware"
# The policies sglang-router 0.3.2 launches from its CLI.
POLICIES = ("cache_aware", "manual", "round_robin", "random", "power_of_two")
# Health checks and circuit breaker tuned so a dead replica leaves the rotation within seconds
# (the router's defaults: health checked every 60 s, breaker after 10 failures).
ROUTER_FAULT_ARGS = (
    "--health-check-interval-secs",
    "2",
    "--health-failure-threshold",
    "2",
    "--health-success-threshold",
    "1",
    "--cb-failure-threshold",
    "3",
    "--cb-timeout-duration-secs",
    "10",
)


class PoolStartError(RuntimeError):
    """A worker or the router of a pool could not be started; the message says which."""


class RuntimePool:
    """``replicas`` SGLang workers for one model, behind one sglang-router when there are several.

    ``url`` is what clients use (the router, or the single worker); ``worker_urls`` are the
    workers themselves.  ``worker_urls=`` instead of a model puts a router in front of workers
    run elsewhere.  Everything started here is stopped by PID (process groups), on ``stop()``,
    on context exit and at interpreter exit.
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
                SGLangRuntime(
                    self.model_path,
                    name=f"{self.name}-{i}" if replicas > 1 else self.name,
                    host=host,
                    log_dir=self.log_dir,
                    **runtime_kwargs,
                )
                for i in range(replicas)
            ]
        self.router_proc: subprocess.Popen[bytes] | None = None
        self._remote_workers = [u.rstrip("/") for u in worker_urls]  # run elsewhere, routed from here

    # -- addresses -----------------------------------------------------------
    @property
    def has_router(self) -> bool:
        return self.replicas > 1

    @property
    def url(self) -> str:
        if not self.has_router:
            return self.worker_urls[0]
        if self.router_port is None:
            raise RuntimeError(f"pool {self.name!r} is not started")
        return f"http://{self.host}:{self.router_port}"

    @property
    def worker_urls(self) -> list[str]:
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

    def worker_alive(self, url: str) -> bool:
        """False once a worker this pool started has exited; True for workers run elsewhere."""
        for w in self.workers:
            if w.url == url:
                return w.proc is not None and w.proc.poll() is None
        return True  # external: only a health probe knows

    def dead(self) -> str | None:
        """Why this pool can serve no more (its router or every worker exited), or None.  A pool
        that lost one replica goes on with the others (the relay routes around it)."""
        if self.router_proc is not None and self.router_proc.poll() is not None:
            return f"the sglang-router of pool {self.name} exited"
        if self.workers and not any(self.worker_alive(w.url) for w in self.workers):
            return (
                f"every worker of pool {self.name} exited"
                if self.has_router
                else f"runtime {self.name} exited"
            )
        return None

    # -- lifecycle -----------------------------------------------------------
    def check(self) -> None:
        """What can be checked before anything starts (each worker's model folder, device, draft)."""
        for w in self.workers:
            w.check()

    def start(self) -> RuntimePool:
        """Start the workers (in parallel), then the router, and wait until it routes to all of them."""
        return start_pools(self)[0]

    def launch(self) -> RuntimePool:
        """Spawn the worker processes without waiting for them (see :func:`start_pools`)."""
        for w in self.workers:
            w.launch()
        return self

    def wait_ready(self) -> RuntimePool:
        """Wait for the workers, then start the router and wait until it routes to all of them."""
        if self.router_proc is not None:
            return self
        for w in self.workers:
            w.wait_ready()
        if self.has_router:
            self._start_router()
        return self

    def router_command(self) -> list[str]:
        assert self.router_port is not None
        return [
            sys.executable,
            "-m",
            "sglang_router.launch_router",
            "--host",
            self.host,
            "--port",
            str(self.router_port),
            "--policy",
            self.policy,
            "--worker-urls",
            *self.worker_urls,
            # Default 29000 would clash between the large and the small pool's routers.
            "--prometheus-host",
            self.host,
            "--prometheus-port",
            str(free_port(self.host)),
            # A whole reasoning turn is one request; CPU decoding can take hours.
            "--request-timeout-secs",
            str(int(self.request_timeout_s)),
            "--log-level",
            "warn",
            *ROUTER_FAULT_ARGS,
            *self.router_args,
        ]

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
        want = set(self.worker_urls)

        def routes_to_all() -> bool:
            listed = router_workers(self.url, timeout=2.0) or []
            return want <= {w["url"] for w in listed if w.get("is_healthy", True)}

        wait_for(
            self.router_proc,
            routes_to_all,
            what=f"sglang-router of pool {self.name!r}",
            until=f"routing to {sorted(want)}",
            timeout=self.router_startup_timeout,
            log_path=self.router_log_path,
            error=PoolStartError,
            interval=0.3,
        )
        logger.info("pool %s: router %s routes to %s", self.name, self.url, ", ".join(sorted(want)))

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """Stop the router and every worker at once, each by its process group."""
        stop_pools([self], grace)

    def detach(self) -> list[subprocess.Popen[bytes]]:
        """Hand over the router's and the workers' processes to be stopped (with others, at once)."""
        proc, self.router_proc = self.router_proc, None
        return [p for p in (proc, *(w.detach() for w in self.workers)) if p is not None]

    def __enter__(self) -> RuntimePool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

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
            pool.check()  # a bad flag or folder must not leave the other workers running
        for pool in pools:
            pool.launch()
        for pool in pools:
            pool.wait_ready()
    except BaseException:
        stop_pools(pools)
        raise
    return pools


def stop_pools(pools: Sequence[RuntimePool], grace: float = STOP_GRACE_S) -> None:
    """Stop several pools at once: routers and workers, each by its process group, their grace
    periods overlapping."""
    procs = [p for pool in pools for p in pool.detach()]
    if procs:
        stop_groups(procs, grace)


# Two servers on one GPU: SGLang sizes each one's static memory as a fraction of what is free
# when it starts, so the small one starts first with a small share, then the large one takes
# most of the rest.  Override with --mem-fraction-static in either runtime's SGLang args.
SHARED_GPU_SMALL_FRACTION = 0.25
SHARED_GPU_LARGE_FRACTION = 0.80


def split_shared_gpu(large: Sequence[SGLangRuntime], small: Sequence[SGLangRuntime]) -> bool:
    """Give each runtime its share of a GPU that large and small runtimes share (unless the user
    set one); True when they share one, so the small ones must start first."""
    large_gpus = frozenset().union(*(r.gpu_ids for r in large))
    shared = bool(large_gpus & frozenset().union(*(r.gpu_ids for r in small)))
    if shared:
        for group, frac in ((large, SHARED_GPU_LARGE_FRACTION), (small, SHARED_GPU_SMALL_FRACTION)):
            for rt in group:
                if rt.mem_fraction_static is None and "--mem-fraction-static" not in rt.sglang_args:
                    rt.mem_fraction_static = frac
    return shared


class RuntimePair:
    """The large and the small pool of a relay, started together (one worker each by default).

    ``large_args``/``small_args`` go to every worker of that model, ``speculative`` to the large
    ones, every other keyword to all.  Workers that share a GPU get their memory split and the
    small pool starts first; otherwise every worker loads at once.
    """

    def __init__(
        self,
        large: str | Path,
        small: str | Path,
        *,
        large_replicas: int = 1,
        small_replicas: int = 1,
        large_args: Sequence[str] = (),
        small_args: Sequence[str] = (),
        speculative: Speculative | None = None,
        **common: Any,
    ) -> None:
        self.large = RuntimePool(
            large, large_replicas, name="large", sglang_args=large_args, speculative=speculative, **common
        )
        self.small = RuntimePool(small, small_replicas, name="small", sglang_args=small_args, **common)
        self.shared_gpu = split_shared_gpu(self.large.workers, self.small.workers)

    def start(self) -> RuntimePair:
        self.large.check()  # both before either starts: a bad flag must not leave one running
        self.small.check()
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

    def dead(self) -> str | None:
        """Why the pair can serve no more, or None (see :meth:`RuntimePool.dead`)."""
        return self.large.dead() or self.small.dead()

    def __enter__(self) -> RuntimePair:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
