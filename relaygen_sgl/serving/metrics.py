"""The relay server's Prometheus metrics (``GET /metrics``), named in SGLang's manner with a
``relaygen:`` prefix.

One :class:`ServerMetrics` per app, each with its own registry (never prometheus-client's global
one), so several apps in one process keep their counts apart.  A server of several worker
processes (``relaygen serve --workers N``) runs prometheus-client's multiprocess mode: every
worker writes its values under ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` sums them all.

A *request* here is one relay (one generation: ``n`` choices are ``n`` relays), as SGLang
counts them; requests the relay forwards whole to a runtime count under ``mode="direct"``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prom_multiprocess

from relaygen_sgl.relay import RelayError, RelayMachine, RelayResult
from relaygen_sgl.runtime.client import RuntimeRequestError
from relaygen_sgl.serving.errors import APIError, ClientGone

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# The outcomes of a request (label ``outcome``).
OK, ABORTED, BAD_REQUEST, REJECTED, RUNTIME_ERROR, ERROR = (
    "ok",
    "aborted",  # the client went away; its runtime calls were aborted
    "bad_request",  # refused before any runtime call (the input is too long, a bad setting)
    "rejected",  # a runtime refused or aborted one of its calls
    "runtime_error",  # a runtime could not be reached or failed
    "error",  # a fault of the relay server itself
)

# Buckets after SGLang's own histograms (seconds), and for fractions and token counts.
TTFT_BUCKETS = (0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 120, 300)
E2E_BUCKETS = (0.1, 0.2, 0.4, 0.8, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
FRACTION_BUCKETS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
TOKEN_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


def multiproc_dir() -> str | None:
    """Where the worker processes of one server write their values (set by ``relaygen serve``
    before it starts them: prometheus-client reads it when first imported)."""
    return os.environ.get(MULTIPROC_ENV) or None


class ServerMetrics:
    """Every metric of one relay server app.  ``multiproc``: the multiprocess directory, when
    the app is one of several worker processes."""

    def __init__(self, multiproc: str | None = None) -> None:
        self.multiproc = multiproc
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "relaygen:requests", "Requests (relays) by mode and outcome", ["mode", "outcome"], registry=r
        )
        self.aborted = Counter(
            "relaygen:num_aborted_requests", "Requests aborted because the client went away", registry=r
        )
        self.runtime_errors = Counter(
            "relaygen:runtime_errors",
            "Requests failed by a runtime that could not be reached or failed (model: which one, "
            "'unknown' when the relay could not even be prepared)",
            ["model"],
            registry=r,
        )
        self.running = Gauge(
            "relaygen:num_requests_running",
            "Requests in flight",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.running_prompt_tokens = Gauge(
            "relaygen:num_running_prompt_tokens",
            "Prompt tokens of the requests in flight (the load a router reads from /get_load)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.ready = Gauge(
            "relaygen:ready",
            "1 once tokenizers and model info are loaded (the server's /health is 200 from then on)",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.prompt_tokens = Counter(
            "relaygen:prompt_tokens", "Prompt tokens of completed requests", registry=r
        )
        self.generation_tokens = Counter(
            "relaygen:generation_tokens",
            "Output tokens of completed requests, by the model that wrote them",
            ["model"],
            registry=r,
        )
        self.switches = Counter(
            "relaygen:switches", "Switches to the small model (each a finished sentence)", registry=r
        )
        self.discarded_tokens = Counter(
            "relaygen:discarded_tokens",
            "Tokens the small model generated past a sentence end and the relay dropped",
            registry=r,
        )
        self.large_utilization = Histogram(
            "relaygen:large_utilization",
            "Share of a completed request's output tokens the large model wrote",
            buckets=FRACTION_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "relaygen:time_to_first_token_seconds",
            "From a streamed request's arrival (its prompt prepared) to its first output text",
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "relaygen:e2e_request_latency_seconds",
            "From a request's arrival to its last token, for completed requests",
            buckets=E2E_BUCKETS,
            registry=r,
        )
        self.reprefill = Histogram(
            "relaygen:reprefill_tokens_per_switch",
            "Prompt tokens a runtime prefilled again (not found in its prefix cache) on each call "
            "after a request's first: each handoff between the models (a switch is two)",
            buckets=TOKEN_BUCKETS,
            registry=r,
        )

    # -- recording -------------------------------------------------------------------------
    def refused(self, mode: str, error: BaseException) -> None:
        """A request that ended before its relay ran (preparing it failed)."""
        outcome = outcome_of(error)
        self.requests.labels(mode, outcome).inc()
        if outcome == RUNTIME_ERROR:
            self.runtime_errors.labels(_role(error)).inc()

    def direct(self, status: int | None) -> None:
        """A request forwarded whole to a runtime, by the status it answered (None: unreachable)."""
        if status is None or status >= 500:
            outcome = RUNTIME_ERROR
        else:
            outcome = OK if status < 400 else REJECTED
        self.requests.labels("direct", outcome).inc()

    @contextmanager
    def track(self, m: RelayMachine, started: float, prompt: int) -> Iterator[RelayTrack]:
        """Count one relay while it runs, and by how it ends (the block's exception, if any).
        ``started``: when its request arrived (``time.perf_counter()``); ``prompt``: its tokens."""
        track = RelayTrack(started)
        self.running.inc()
        self.running_prompt_tokens.inc(prompt)
        try:
            yield track
        except BaseException as e:
            self.refused(m.config.mode, e)
            if outcome_of(e) == ABORTED:
                self.aborted.inc()
            raise
        else:
            if track.result is not None:
                self.completed(m.config.mode, track)
        finally:
            self.running.dec()
            self.running_prompt_tokens.dec(prompt)

    def completed(self, mode: str, track: RelayTrack) -> None:
        s = track.result.stats  # type: ignore[union-attr]
        self.requests.labels(mode, OK).inc()
        self.e2e.observe(track.ended - track.started)
        if track.first_token is not None:
            self.ttft.observe(track.first_token - track.started)
        self.prompt_tokens.inc(s.prompt_tokens)
        self.generation_tokens.labels("large").inc(s.large_tokens)
        self.generation_tokens.labels("small").inc(s.small_tokens)
        self.switches.inc(s.switches)
        self.discarded_tokens.inc(s.discarded_tokens)
        if s.output_tokens:
            self.large_utilization.observe(s.large_utilization)
        for call in s.calls[1:]:
            self.reprefill.observe(max(call.prompt_tokens - call.cached_tokens, 0))

    # -- reading ---------------------------------------------------------------------------
    def _read(self) -> CollectorRegistry:
        """This process's registry, or one that sums every worker process's values."""
        if self.multiproc is None:
            return self.registry
        merged = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(merged, path=self.multiproc)
        return merged

    def exposition(self) -> bytes:
        """The text format of every metric: this process's, or all worker processes' summed."""
        return generate_latest(self._read())

    def in_flight(self) -> tuple[int, int]:
        """Requests in flight and their prompt tokens, over every worker process."""
        r = self._read()
        running = r.get_sample_value("relaygen:num_requests_running") or 0
        return int(running), int(r.get_sample_value("relaygen:num_running_prompt_tokens") or 0)

    def process_exit(self) -> None:
        """A worker process stops: its live gauges no longer count."""
        if self.multiproc is not None:
            prom_multiprocess.mark_process_dead(os.getpid(), self.multiproc)


@dataclass
class RelayTrack:
    """What one running relay reports to :meth:`ServerMetrics.track`."""

    started: float
    first_token: float | None = None
    ended: float = 0.0
    result: RelayResult | None = field(default=None, repr=False)

    def token(self) -> None:
        if self.first_token is None:
            self.first_token = time.perf_counter()

    def done(self, result: RelayResult) -> RelayResult:
        self.ended, self.result = time.perf_counter(), result
        return result


def outcome_of(error: BaseException) -> str:
    if isinstance(error, RelayError):
        return REJECTED if isinstance(error.__cause__, RuntimeRequestError) else RUNTIME_ERROR
    if isinstance(error, APIError):
        if error.status >= 500:
            return RUNTIME_ERROR if error.type == "service_unavailable" else ERROR
        return BAD_REQUEST
    if isinstance(error, (ClientGone, GeneratorExit, asyncio.CancelledError)):
        return ABORTED
    return ERROR


def _role(error: BaseException) -> str:
    """The model a failure names: the RelayError's role, here or as the APIError's cause."""
    for e in (error, error.__cause__):
        if isinstance(e, RelayError) and e.role is not None:
            return e.role
    return "unknown"
