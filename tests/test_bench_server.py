"""evals/bench_server.py's own arithmetic (no servers): the CPU it reads from /proc and its tables."""

from __future__ import annotations

import os
import subprocess
import sys

from evals.bench_server import long_table, process_tree_cpu_s, table
from evals.scripted_runtime import events
from relaygen_sgl.runtime.client import StreamState


def test_process_tree_cpu_counts_the_process_and_its_children() -> None:
    # The child burns 0.3 s of CPU when told to, says so, and waits to be let go.
    burn = "import time\ninput()\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    burn += "print('done', flush=True)\ninput()"
    child = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    try:
        before = process_tree_cpu_s(os.getpid())
        child.stdin.write(b"go\n")
        child.stdin.flush()
        assert child.stdout.readline() == b"done\n"
        assert process_tree_cpu_s(os.getpid()) - before >= 0.3
    finally:
        child.communicate(b"\n", timeout=30)
    assert process_tree_cpu_s(child.pid) == 0.0  # gone: nothing to read


def test_tables_show_every_row() -> None:
    long_rows = [
        {"tokens": n, "route": "chat", "direct_tok_s": 100.0, "relay_tok_s": 99.0, "ratio": 0.99}
        | {"relay_cpu_us_per_token": 42.0, "errors": 0}
        for n in (1000, 16000)
    ]
    assert [line.split(" | ")[0] for line in long_table(long_rows).splitlines()[2:]] == ["| 1000", "| 16000"]
    side = {"tok_s": 10.0, "ttft_p50_s": 0.1, "ttft_p99_s": 0.2, "errors": 0}
    rows = table([{"workers": 2, "concurrency": 64, "ratio": 1.0, "direct": side, "relay": side}])
    assert "| 2 | 64 | 10.0 | 10.0 | 1.0 | 0.1 / 0.1 | 0.2 / 0.2 | 0 / 0 |" in rows


def test_the_scripted_runtime_streams_what_sglang_does_in_either_form() -> None:
    """Its events fold, through the relay's own parser, into the same output either way."""
    outputs = []
    for cumulative in (False, True):
        state = StreamState("large")
        for event in events(5, "r", cumulative):
            state.feed(event)
        res = state.result(0.1)
        outputs.append((res.text, res.output_ids, res.completion_tokens, res.finish_type))
    assert outputs[0] == outputs[1] == (" w1 w2 w3 w4 w5", [101, 102, 103, 104, 105], 5, "length")
