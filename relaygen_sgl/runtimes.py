"""Start, health-check and stop SGLang servers, on CPU or CUDA.

Each :class:`SGLangRuntime` owns one ``sglang.launch_server`` process group on a
free loopback port.  It is stopped by PID (the whole process group, so the
scheduler and detokenizer children go too), on ``stop()``, on context exit and
at interpreter exit.  What differs per device (dtype, KV sizing, the CPU
engine's environment and shims, the watchdog) lives in :mod:`relaygen_sgl.launch_options`.
"""

from __future__ import annotations

import atexit
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Sequence
from pathlib import Path

import requests

from relaygen_sgl.launch_options import (
    CPU_MAX_TOTAL_TOKENS,
    Speculative,
    check_device,
    device_defaults,
    gpu_ids,
    resolve_device,
    server_env,
)
from relaygen_sgl.process_group import free_port, log_tail, spawn_group, stop_groups

DEFAULT_MAX_TOTAL_TOKENS = CPU_MAX_TOTAL_TOKENS
_LIVE: weakref.WeakSet[SGLangRuntime] = weakref.WeakSet()


class RuntimeStartError(RuntimeError):
    """The SGLang server could not be started; the message holds its log tail."""


def cpu_server_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for an SGLang server on CPU (shims only where needed)."""
    return server_env("cpu", base)


class SGLangRuntime:
    """One SGLang server process serving ``model_path``.

    ``device``: ``auto`` (CUDA when torch sees one, else CPU), ``cpu`` or ``cuda``.  ``None``
    for ``dtype``, ``max_total_tokens`` and ``watchdog_timeout_s`` means the device's default
    (:func:`relaygen_sgl.launch_options.device_defaults`).  ``sglang_args`` go to
    ``sglang.launch_server`` verbatim, after ours, so they win.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        name: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        device: str = "auto",
        dtype: str | None = None,
        max_total_tokens: int | None = None,
        watchdog_timeout_s: float | None = None,
        mem_fraction_static: float | None = None,
        speculative: Speculative | None = None,
        sglang_args: Sequence[str] = (),
        startup_timeout: float = 600.0,
        log_dir: str | Path | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        self.name = name or self.model_path.name
        self.host = host
        self.port = port
        # "cuda" is checked at launch, so a CUDA command can be built (and tested) anywhere.
        self.device = resolve_device(device) if device == "auto" else check_device(device, probe=False)
        defaults = device_defaults(self.device)
        self.dtype = dtype or defaults.dtype
        self.max_total_tokens = max_total_tokens or defaults.max_total_tokens
        self.watchdog_timeout_s = watchdog_timeout_s or defaults.watchdog_timeout_s
        self.mem_fraction_static = mem_fraction_static
        self.speculative = speculative
        self.sglang_args = list(sglang_args)
        self.startup_timeout = startup_timeout
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="relaygen-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.log_dir / f"sglang-{self.name}.log"

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError(f"runtime {self.name!r} is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def gpu_ids(self) -> frozenset[int]:
        """The GPUs this server will use (empty on CPU)."""
        return gpu_ids(self.sglang_args) if self.device == "cuda" else frozenset()

    def command(self) -> list[str]:
        cmd = [
            sys.executable, "-m", "sglang.launch_server",
            "--model-path", str(self.model_path),
            "--host", self.host,
            "--port", str(self.port),
            "--device", self.device,
            "--skip-server-warmup",
        ]  # fmt: skip
        if self.dtype:
            cmd += ["--dtype", self.dtype]
        if self.max_total_tokens:
            cmd += ["--max-total-tokens", str(self.max_total_tokens)]
        if self.watchdog_timeout_s:
            cmd += ["--watchdog-timeout", str(self.watchdog_timeout_s)]
        if self.device == "cpu":
            cmd += ["--sleep-on-idle"]  # an idle CPU server would otherwise spin a core
        if self.mem_fraction_static is not None:
            cmd += ["--mem-fraction-static", str(self.mem_fraction_static)]
        if self.speculative is not None:
            cmd += self.speculative.args()
        return cmd + self.sglang_args

    def start(self) -> SGLangRuntime:
        """Launch the server and block until it answers ``/health``."""
        self.launch()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def check(self) -> None:
        """What can be checked before anything starts: the model folder, the device, the draft."""
        check_device(self.device)
        if not (self.model_path / "config.json").is_file():
            raise FileNotFoundError(
                f"model path {self.model_path} is not a Hugging Face model folder (no config.json there)"
            )
        if self.speculative is not None:
            self.speculative.check(self.name)

    def launch(self) -> SGLangRuntime:
        """Spawn the server process without waiting for it to be ready."""
        if self.proc is not None:
            return self
        self.check()
        if self.port is None:
            self.port = free_port(self.host)
        self.proc = spawn_group(self.command(), self.log_path, env=server_env(self.device))
        _LIVE.add(self)
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise RuntimeStartError(
                    f"SGLang server {self.name!r} for {self.model_path} exited with code {code} during "
                    f"start; log {self.log_path} ends with:\n{log_tail(self.log_path)}"
                )
            if self.healthy(timeout=2.0):
                return
            time.sleep(0.5)
        raise RuntimeStartError(
            f"SGLang server {self.name!r} for {self.model_path} was not healthy after "
            f"{self.startup_timeout:.0f}s; log {self.log_path} ends with:\n{log_tail(self.log_path)}"
        )

    def healthy(self, timeout: float = 5.0) -> bool:
        if self.port is None or (self.proc is not None and self.proc.poll() is not None):
            return False
        try:
            return requests.get(f"{self.url}/health", timeout=timeout).status_code == 200
        except requests.RequestException:
            return False

    def stop(self, grace: float = 3.0) -> None:
        stop_runtimes([self], grace)

    def _release(self) -> subprocess.Popen[bytes] | None:
        """Hand over the server process to be stopped; the runtime is stopped from now on."""
        proc, self.proc = self.proc, None
        _LIVE.discard(self)
        return proc

    def __enter__(self) -> SGLangRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"SGLangRuntime({self.name!r}, url={self.url if self.port else None}, pid={self.pid})"


def stop_runtimes(runtimes: Sequence[SGLangRuntime], grace: float = 3.0) -> None:
    """Stop several runtimes at once, each by its process group (their grace periods overlap)."""
    procs = [p for rt in runtimes if (p := rt._release()) is not None]
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
    """The large and the small runtime of a RelayGen pair, started together.

    ``large_args``/``small_args`` are each runtime's own SGLang arguments; ``speculative``
    applies to the large runtime only; every other keyword goes to both.  With replicas, use
    :class:`~relaygen_sgl.runtime_pool.PoolPair`, which splits and orders start-up the same way.
    """

    def __init__(
        self,
        large: str | Path,
        small: str | Path,
        *,
        large_args: Sequence[str] = (),
        small_args: Sequence[str] = (),
        speculative: Speculative | None = None,
        **common: object,
    ) -> None:
        self.large = SGLangRuntime(large, name="large", sglang_args=large_args, speculative=speculative,
                                   **common)  # type: ignore[arg-type]  # fmt: skip
        self.small = SGLangRuntime(small, name="small", sglang_args=small_args,
                                   **common)  # type: ignore[arg-type]  # fmt: skip
        self.shared_gpu = split_shared_gpu([self.large], [self.small])

    def start(self) -> RuntimePair:
        # Check both before starting either: a bad flag must not leave one server running.
        self.large.check()
        self.small.check()
        try:
            if self.shared_gpu:
                self.small.start()  # its memory must be taken before the large one measures what is free
                self.large.start()
            else:
                # Both load at once: start-up is mostly import and load time, not compute.
                self.large.launch()
                self.small.launch()
                self.large.wait_ready()
                self.small.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        stop_runtimes([self.small, self.large])

    def __enter__(self) -> RuntimePair:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    stop_runtimes(list(_LIVE))
