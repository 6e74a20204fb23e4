"""Real SGLang servers on tiny models: generation, prefix cache, stop_regex, logprobs, start-up
errors and the `serve-runtimes` CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from relaygen_sgl.runtime.client import RuntimeClient
from relaygen_sgl.runtime.process import process_group_alive
from relaygen_sgl.runtime.server import RuntimeStartError, SGLangRuntime

PROMPT = "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n"


def test_generation_works_on_both_runtimes(runtimes):
    for rt in (runtimes.large, runtimes.small):
        out = RuntimeClient.of(rt).generate(
            text=PROMPT, sampling_params={"max_new_tokens": 24, "temperature": 0}
        )
        assert out.completion_tokens == len(out.output_ids) > 0
        assert out.text.strip()
        assert out.finish_type in ("stop", "length")


def test_shared_prefix_is_served_from_radix_cache(runtimes):
    client = RuntimeClient.of(runtimes.large)
    tok = client.tokenizer
    prefix = tok.encode(PROMPT + "<think>\nWe need to add 12 and 30. So we get 42. " * 3)
    first = client.generate(input_ids=prefix + tok.encode("Now,"), sampling_params={"max_new_tokens": 1})
    second = client.generate(input_ids=prefix + tok.encode("Thus"), sampling_params={"max_new_tokens": 1})
    assert first.prompt_tokens == len(prefix) + len(tok.encode("Now,"))
    # Everything up to the first differing token comes from the cache.
    assert len(prefix) - 1 <= second.cached_tokens <= second.prompt_tokens


def test_stop_regex_stops_generation(runtimes, forcing):
    client = RuntimeClient.of(runtimes.large)
    # Every token is the filler (forced), so the regex matches at the third.
    out = client.generate(
        text=PROMPT + "<think>\n",
        sampling_params={
            **forcing.repeat(forcing.filler),
            "max_new_tokens": 200,
            "stop_regex": [r"7{3}"],
            "no_stop_trim": True,
        },
    )
    assert out.finish_type == "stop"
    assert out.matched == r"7{3}"
    assert out.text == "777" and len(out.output_ids) == 3


def test_top_k_logprobs_come_back(runtimes):
    client = RuntimeClient.of(runtimes.small)
    out = client.generate(
        text=PROMPT,
        sampling_params={"max_new_tokens": 5, "temperature": 0},
        return_logprob=True,
        top_logprobs_num=2,
        logprob_start_len=0,
    )
    tops = out.meta_info["output_top_logprobs"]
    assert len(tops) == 5
    for (lp1, _, _), (lp2, _, _) in (t[:2] for t in tops):
        assert lp1 >= lp2
    # Greedy decoding picks the top-1 token.
    assert [t[0][1] for t in tops] == out.output_ids
    assert len(out.meta_info["input_top_logprobs"]) == out.prompt_tokens


def test_missing_model_path_is_a_clear_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        SGLangRuntime(tmp_path / "nope").start()


def test_server_dying_during_start_shows_log_tail(tmp_path: Path):
    bad = tmp_path / "bad-model"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    rt = SGLangRuntime(bad, log_dir=tmp_path, startup_timeout=240)
    with pytest.raises(RuntimeStartError, match="exited with code") as err:
        rt.start()
    assert "no-such-architecture" in str(err.value)
    assert rt.proc is None


def test_cli_serve_runtimes_prints_every_pid_and_sigterm_leaves_no_orphans(tiny_pair, tmp_path: Path):
    """One JSON line with each runtime's URL and PIDs; SIGTERM stops every group.  With replicas the
    line also names each worker and the router (tests/test_router.py checks that on its pools);
    SIGKILL, which runs no cleanup code at all, is tests/test_process.py's."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "relaygen_sgl.cli",
            "serve-runtimes",
            "--large",
            str(tiny_pair.large),
            "--small",
            str(tiny_pair.small),
            "--max-total-tokens",
            "2048",
            "--log-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        info = json.loads(proc.stdout.readline())
        for role in ("large", "small"):
            shown = info[role]
            assert shown["router"] is None and [w["pid"] for w in shown["workers"]] == [shown["pid"]]
            assert requests.get(shown["url"] + "/health", timeout=30).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        deadline = time.monotonic() + 30
        while left := [info[r]["pid"] for r in ("large", "small") if process_group_alive(info[r]["pid"])]:
            assert time.monotonic() < deadline, (
                f"runtime processes outlived `relaygen serve-runtimes`: {left}"
            )
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
