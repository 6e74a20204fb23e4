"""Child processes owned by PID: each in its own process group, killed with its parent.

The SGLang servers (:mod:`.server`) and the routers in front of replicas (:mod:`.pool`) are
started with :func:`spawn_group` and stopped with :func:`stop_group`.  What is started and not
yet stopped is kept in one registry, which one ``atexit`` hook empties: a process that exits
normally leaves nothing running (one killed by SIGKILL takes its groups along through
``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)
STOP_GRACE_S = 3.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def log_tail(path: Path, n: int = 40) -> str:
    """The last ``n`` lines of a server log, for start-up errors."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _die_with_parent() -> None:
    # In the child: SIGKILL when the thread that started it dies, even by SIGKILL, so a killed
    # parent leaves no orphan (SGLang's own children follow their leader).
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG (Linux)


class _Registry:
    """The process groups this interpreter started and has not stopped, oldest first."""

    def __init__(self) -> None:
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    def add(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._procs[proc.pid] = proc

    def discard(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._procs.pop(proc.pid, None)

    def stop_all(self) -> None:
        with self._lock:
            procs = list(self._procs.values())
        if procs:
            stop_groups(procs)


_REGISTRY = _Registry()
atexit.register(_REGISTRY.stop_all)


def spawn_group(
    command: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``command`` as the leader of a new process group, stdout and stderr to ``log_path``;
    it is stopped at interpreter exit unless :func:`stop_group` stopped it before."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            start_new_session=True,  # own process group: stop_group() takes the children too
            preexec_fn=_die_with_parent,
        )
    _REGISTRY.add(proc)
    logger.info("started pid %d: %s (log %s)", proc.pid, " ".join(command[:4]), log_path)
    return proc


def wait_for(
    proc: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    *,
    what: str,
    until: str,
    timeout: float,
    log_path: Path,
    error: type[Exception],
    interval: float = 0.5,
) -> None:
    """Poll ``ready()`` until it holds; ``proc`` exiting first, or ``timeout`` seconds passing, is an
    ``error`` that names ``what`` and ends with its log's tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (code := proc.poll()) is not None:
            raise error(
                f"{what} exited with code {code} during start; "
                f"log {log_path} ends with:\n{log_tail(log_path)}"
            )
        if ready():
            return
        time.sleep(interval)
    raise error(
        f"{what} was not {until} after {timeout:.0f}s; log {log_path} ends with:\n{log_tail(log_path)}"
    )


def process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def stop_group(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE_S) -> bool:
    """SIGTERM the group, then SIGKILL what is left (children may outlive their leader); True
    when the whole group is gone within ``grace`` seconds of the last signal."""
    return stop_groups([proc], grace)


def stop_groups(procs: Sequence[subprocess.Popen[bytes]], grace: float = STOP_GRACE_S) -> bool:
    """:func:`stop_group` for several groups at once: each signal goes to all of them, so the
    grace periods overlap (an SGLang server takes seconds to leave on SIGTERM)."""
    for proc in procs:
        _REGISTRY.discard(proc)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        deadline = time.monotonic() + grace
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(deadline - time.monotonic(), 0.0))
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not any(process_group_alive(proc.pid) for proc in procs):
            return True
        time.sleep(0.05)
    logger.warning("process groups %s outlived SIGKILL by %.0f s", [p.pid for p in procs], grace)
    return False
