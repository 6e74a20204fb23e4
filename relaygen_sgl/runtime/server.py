"""One SGLang server process, on CPU or CUDA: start, health-check, stop.

Each :class:`SGLangRuntime` owns one ``sglang.launch_server`` process group on a free loopback
port.  It is stopped by PID (the whole process group, so the scheduler and detokenizer
children go too), on ``stop()``, on context exit and at interpreter exit (:mod:`.process`).
What differs per device (dtype, KV sizing, the CPU engine's environment and shims, the
watchdog) lives in :mod:`relaygen_sgl.launch_options`.  Several servers, and a pair of them,
are started by :mod:`.pool`.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import httpx

from relaygen_sgl.launch_options import (
    CPU_MAX_TOTAL_TOKENS,
    Speculative,
    check_device,
    device_defaults,
    gpu_ids,
    resolve_device,
    server_env,
)
from relaygen_sgl.runtime.process import STOP_GRACE_S, free_port, spawn_group, stop_groups, wait_for

DEFAULT_MAX_TOTAL_TOKENS = CPU_MAX_TOTAL_TOKENS


class RuntimeStartError(RuntimeError):
    """The SGLang server could not be started; the message holds its log tail."""


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
            sys.executable,
            "-m",
            "sglang.launch_server",
            "--model-path",
            str(self.model_path),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--device",
            self.device,
            "--skip-server-warmup",
            # Each streamed event holds only the new tokens: the relay's cost per token then
            # stays the same at any length (a whole-output event is parsed whole).
            "--incremental-streaming-output",
        ]
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
        return self

    def wait_ready(self) -> None:
        assert self.proc is not None
        wait_for(
            self.proc,
            lambda: self.healthy(timeout=2.0),
            until="healthy",
            timeout=self.startup_timeout,
            what=f"SGLang server {self.name!r} for {self.model_path}",
            log_path=self.log_path,
            error=RuntimeStartError,
        )

    def healthy(self, timeout: float = 5.0) -> bool:
        if self.port is None or (self.proc is not None and self.proc.poll() is not None):
            return False
        try:
            return httpx.get(f"{self.url}/health", timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        if (proc := self.detach()) is not None:
            stop_groups([proc], grace)

    def detach(self) -> subprocess.Popen[bytes] | None:
        """Hand over the server process to be stopped (with others, at once); stopped from now on."""
        proc, self.proc = self.proc, None
        return proc

    def __enter__(self) -> SGLangRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"SGLangRuntime({self.name!r}, url={self.url if self.port else None}, pid={self.pid})"
