"""Child processes owned by PID: each in its own process group, killed with its parent.

Shared by the SGLang runtimes (:mod:`relaygen_sgl.runtimes`) and the routers in front of
replicas (:mod:`relaygen_sgl.runtime_pool`), so both start, watch and stop their servers alike.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


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


def spawn_group(command: Sequence[str], log_path: Path,
                env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:  # fmt: skip
    """Start ``command`` as the leader of a new process group, stdout and stderr to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            start_new_session=True,  # own process group: stop_group() takes the children too
            preexec_fn=_die_with_parent,
        )


def process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def stop_group(proc: subprocess.Popen[bytes], grace: float = 3.0) -> bool:
    """SIGTERM the group, then SIGKILL what is left (children may outlive their leader); True
    when the whole group is gone within ``grace`` seconds of the last signal."""
    return stop_groups([proc], grace)


def stop_groups(procs: Sequence[subprocess.Popen[bytes]], grace: float = 3.0) -> bool:
    """:func:`stop_group` for several groups at once: each signal goes to all of them, so the
    grace periods overlap (an SGLang server takes seconds to leave on SIGTERM)."""
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
    return False
