"""Start, health-check and stop SGLang servers on this machine's CPU.

Each :class:`SGLangRuntime` owns one ``sglang.launch_server`` process group on a
free loopback port.  It is stopped by PID (the whole process group, so the
scheduler and detokenizer children go too), on ``stop()``, on context exit and
at interpreter exit.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Sequence
from pathlib import Path

import requests

from relaygen_sgl._sglang_cpu_shims import missing_modules, shim_path

DEFAULT_MAX_TOTAL_TOKENS = 16384
_LIVE: weakref.WeakSet[SGLangRuntime] = weakref.WeakSet()


class RuntimeStartError(RuntimeError):
    """The SGLang server could not be started; the message holds its log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def cpu_server_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for an SGLang server on CPU (shims only where needed)."""
    env = dict(os.environ if base is None else base)
    env.setdefault("SGLANG_USE_CPU_ENGINE", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    if missing_modules():
        parts = [shim_path()] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _die_with_parent() -> None:
    """In the server child: get SIGKILL if the thread that started it dies, even by SIGKILL,
    so a killed parent leaves no orphan (SGLang's own children follow their leader)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass


def process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_group_alive(pgid):
            return True
        time.sleep(0.05)
    return False


class SGLangRuntime:
    """One SGLang server process serving ``model_path`` on CPU."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        name: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        max_total_tokens: int = DEFAULT_MAX_TOTAL_TOKENS,
        startup_timeout: float = 300.0,
        log_dir: str | Path | None = None,
        dtype: str = "float32",
        watchdog_timeout_s: float = 3600.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.model_path = Path(model_path)
        self.name = name or self.model_path.name
        self.host = host
        self.port = port
        self.max_total_tokens = max_total_tokens
        self.startup_timeout = startup_timeout
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="relaygen-"))
        # SGLang's "auto" turns float32 checkpoints into float16, which CPUs without native
        # half-precision GEMM run orders of magnitude slower; float32 is the fast CPU path.
        self.dtype = dtype
        # A CPU forward step over a long batch can legitimately exceed SGLang's 300 s watchdog.
        self.watchdog_timeout_s = watchdog_timeout_s
        self.extra_args = list(extra_args)
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

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "sglang.launch_server",
            "--model-path", str(self.model_path),
            "--host", self.host,
            "--port", str(self.port),
            "--device", "cpu",
            "--max-total-tokens", str(self.max_total_tokens),
            "--sleep-on-idle",
            "--dtype", self.dtype,
            "--watchdog-timeout", str(self.watchdog_timeout_s),
            "--skip-server-warmup",
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> SGLangRuntime:
        """Launch the server and block until it answers ``/health``."""
        self.launch()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def launch(self) -> SGLangRuntime:
        """Spawn the server process without waiting for it to be ready."""
        if self.proc is not None:
            return self
        if not (self.model_path / "config.json").is_file():
            raise FileNotFoundError(
                f"model path {self.model_path} is not a Hugging Face model folder (no config.json there)"
            )
        if self.port is None:
            self.port = free_port(self.host)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=cpu_server_env(),
            start_new_session=True,  # own process group: stop() kills children too
            preexec_fn=_die_with_parent,
        )
        log.close()
        _LIVE.add(self)
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise RuntimeStartError(
                    f"SGLang server for {self.model_path} exited with code {code} during start; "
                    f"log {self.log_path} ends with:\n{_tail(self.log_path)}"
                )
            if self.healthy(timeout=2.0):
                return
            time.sleep(0.5)
        raise RuntimeStartError(
            f"SGLang server for {self.model_path} was not healthy after "
            f"{self.startup_timeout:.0f}s; log {self.log_path} ends with:\n{_tail(self.log_path)}"
        )

    def healthy(self, timeout: float = 5.0) -> bool:
        if self.port is None or (self.proc is not None and self.proc.poll() is not None):
            return False
        try:
            return requests.get(f"{self.url}/health", timeout=timeout).status_code == 200
        except requests.RequestException:
            return False

    def stop(self, grace: float = 3.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        _LIVE.discard(self)
        # SIGTERM first; the scheduler children may outlive the leader, so SIGKILL what is left.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        _wait_group_gone(proc.pid, timeout=grace)

    def __enter__(self) -> SGLangRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"SGLangRuntime({self.name!r}, url={self.url if self.port else None}, pid={self.pid})"


class RuntimePair:
    """The large and the small runtime of a RelayGen pair, started together."""

    def __init__(self, large: str | Path, small: str | Path, **kwargs: object) -> None:
        self.large = SGLangRuntime(large, name="large", **kwargs)  # type: ignore[arg-type]
        self.small = SGLangRuntime(small, name="small", **kwargs)  # type: ignore[arg-type]

    def start(self) -> RuntimePair:
        try:
            # Both load at once: start-up is mostly import time, not compute.
            self.large.launch()
            self.small.launch()
            self.large.wait_ready()
            self.small.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.small.stop()
        self.large.stop()

    def __enter__(self) -> RuntimePair:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    for rt in list(_LIVE):
        rt.stop(grace=3.0)
