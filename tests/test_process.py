"""Process groups owned by PID (relaygen_sgl/runtime/process.py), with `sleep` standing in for an
SGLang server: a leader with a child of its own, as SGLang's scheduler and detokenizer are.  No
model, no port; each test waits for the state it needs, never for a time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from relaygen_sgl.runtime.process import process_group_alive, spawn_group, stop_group

# A group leader with a child in its group that dies with it (SGLang's scheduler and detokenizer
# call kill_itself_when_parent_died(), i.e. PR_SET_PDEATHSIG).
SERVER = [
    sys.executable,
    "-c",
    "import ctypes, subprocess, time; "
    "subprocess.Popen(['sleep', '300'], preexec_fn=lambda: ctypes.CDLL(None).prctl(1, 9)); time.sleep(300)",
]


def _owner(tmp_path: Path, then: str) -> subprocess.Popen[str]:
    """A Python process that spawns SERVER with spawn_group, prints its PID, then runs ``then``."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from relaygen_sgl.runtime.process import spawn_group
        proc = spawn_group({SERVER!r}, Path({str(tmp_path / "server.log")!r}))
        print(proc.pid, flush=True)
        {then}
        """
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def _wait_until(check: Callable[[], bool], what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _group_size(pgid: int) -> int:
    out = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout
    return len(out.split())


def _wait_group_size(pgid: int, n: int) -> None:
    _wait_until(lambda: _group_size(pgid) >= n, f"group {pgid} never reached {n} processes")


def _wait_gone(pgid: int, what: str) -> None:
    _wait_until(lambda: not process_group_alive(pgid), f"group {pgid} outlived {what}")


def test_an_owner_killed_by_sigkill_takes_its_groups_along(tmp_path: Path):
    """SIGKILL runs no cleanup code: PR_SET_PDEATHSIG kills the leader, and its child follows."""
    owner = _owner(tmp_path, "time.sleep(300)")
    try:
        pgid = int(owner.stdout.readline())
        _wait_group_size(pgid, 2)  # the leader and its child
        owner.send_signal(signal.SIGKILL)
        assert owner.wait(timeout=30) == -signal.SIGKILL
        _wait_gone(pgid, "its SIGKILLed owner")
    finally:
        _reap(owner)


def test_an_owner_that_exits_stops_what_it_left_running(tmp_path: Path):
    """A normal exit without stop(): the atexit hook stops every group still registered."""
    owner = _owner(tmp_path, "sys.stdin.readline()")
    try:
        pgid = int(owner.stdout.readline())
        _wait_group_size(pgid, 2)
        owner.stdin.close()  # the owner's readline() returns and the interpreter exits
        assert owner.wait(timeout=30) == 0
        _wait_gone(pgid, "its owner's exit")
    finally:
        _reap(owner)


def test_stop_group_kills_a_leader_that_ignores_sigterm(tmp_path: Path):
    stubborn = [
        sys.executable,
        "-c",
        "import signal, subprocess, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "subprocess.Popen(['sleep', '300']); time.sleep(300)",
    ]
    proc = spawn_group(stubborn, tmp_path / "stubborn.log")
    try:
        _wait_group_size(proc.pid, 2)  # SIGTERM is ignored from here on
        stop_group(proc, grace=1.0)
        assert proc.returncode == -signal.SIGKILL
        _wait_gone(proc.pid, "SIGKILL")
    finally:
        if process_group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)


def _reap(owner: subprocess.Popen[str]) -> None:
    if owner.poll() is None:
        owner.kill()
        owner.wait()
