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


def _gone(pgid: int, within: float = 30.0) -> bool:
    deadline = time.monotonic() + within
    while process_group_alive(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _group_size(pgid: int) -> int:
    out = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout
    return len(out.split())


def _wait_group_size(pgid: int, n: int, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while _group_size(pgid) < n:
        assert time.monotonic() < deadline, f"group {pgid} never reached {n} processes"
        time.sleep(0.05)


def test_an_owner_killed_by_sigkill_takes_its_groups_along(tmp_path: Path):
    """SIGKILL runs no cleanup code: PR_SET_PDEATHSIG kills the leader, and its child follows."""
    owner = _owner(tmp_path, "time.sleep(300)")
    try:
        pgid = int(owner.stdout.readline())
        _wait_group_size(pgid, 2)  # the leader and its child
        owner.send_signal(signal.SIGKILL)
        assert owner.wait(timeout=30) == -signal.SIGKILL
        assert _gone(pgid), f"group {pgid} outlived its SIGKILLed owner"
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
        assert _gone(pgid), f"group {pgid} outlived its owner's exit"
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
        assert _gone(proc.pid), "the group outlived SIGKILL"
    finally:
        if process_group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)


def _reap(owner: subprocess.Popen[str]) -> None:
    if owner.poll() is None:
        owner.kill()
        owner.wait()
