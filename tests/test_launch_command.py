"""The sglang.launch_server command per device, parallelism, memory split and speculation.

Pure unit tests: the commands are built, never run, so CUDA ones are checked on a CPU too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from relaygen_sgl.launch_options import (
    DeviceError,
    LaunchError,
    Speculative,
    cuda_available,
    gpu_ids,
    resolve_device,
    server_env,
)
from relaygen_sgl.pair_args import add_pair_args, pair_from_args
from relaygen_sgl.runtime.pool import RuntimePair
from relaygen_sgl.runtime.server import SGLangRuntime


def _flag(cmd: list[str], flag: str) -> str | None:
    return cmd[cmd.index(flag) + 1] if flag in cmd else None


@pytest.fixture
def model(tmp_path: Path) -> Path:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    return tmp_path / "m"


def test_cpu_command_has_the_cpu_defaults(model: Path):
    rt = SGLangRuntime(model, device="cpu", port=1234)
    cmd = rt.command()
    assert _flag(cmd, "--device") == "cpu"
    assert _flag(cmd, "--dtype") == "bfloat16"
    assert _flag(cmd, "--max-total-tokens") == "16384"
    assert _flag(cmd, "--watchdog-timeout") == "3600.0"
    assert "--sleep-on-idle" in cmd
    assert "--incremental-streaming-output" in cmd  # the relay reads only each token's event
    env = server_env("cpu", {})
    assert env["SGLANG_USE_CPU_ENGINE"] == "1" and env["OMP_NUM_THREADS"] == "1"


def test_cuda_command_keeps_sglang_defaults_and_no_cpu_flags(model: Path):
    cmd = SGLangRuntime(model, device="cuda", port=1234).command()
    assert _flag(cmd, "--device") == "cuda"
    for cpu_only in ("--dtype", "--max-total-tokens", "--watchdog-timeout", "--sleep-on-idle"):
        assert cpu_only not in cmd
    env = server_env("cuda", {"PATH": "/bin"})
    assert "SGLANG_USE_CPU_ENGINE" not in env and "OMP_NUM_THREADS" not in env
    assert "PYTHONPATH" not in env  # the CPU shims never reach a GPU server


def test_user_args_are_passed_verbatim_and_last(model: Path):
    args = ["--tp", "2", "--context-length", "40960", "--dtype", "float16"]
    cmd = SGLangRuntime(model, device="cpu", port=1, sglang_args=args).command()
    assert cmd[-len(args) :] == args  # after ours, so argparse's last value (theirs) wins
    assert gpu_ids(args) == {0, 1}


def test_tp_pairs_on_separate_gpus_get_no_memory_split(model: Path):
    pair = RuntimePair(
        model, model, device="cuda", large_args=["--tp", "2"], small_args=["--base-gpu-id", "2"]
    )
    assert not pair.shared_gpu
    for pool in (pair.large, pair.small):
        assert "--mem-fraction-static" not in pool.workers[0].command()


def test_shared_gpu_splits_memory_unless_the_user_sets_it(model: Path):
    pair = RuntimePair(model, model, device="cuda", large_args=["--tp", "2"])
    assert pair.shared_gpu  # small on GPU 0, large on 0 and 1
    assert _flag(pair.small.workers[0].command(), "--mem-fraction-static") == "0.25"
    assert _flag(pair.large.workers[0].command(), "--mem-fraction-static") == "0.8"
    mine = RuntimePair(model, model, device="cuda", small_args=["--mem-fraction-static", "0.1"])
    assert mine.small.workers[0].command().count("--mem-fraction-static") == 1
    assert _flag(mine.large.workers[0].command(), "--mem-fraction-static") == "0.8"
    # On CPU there is nothing to split.
    assert not RuntimePair(model, model, device="cpu").shared_gpu


def test_replica_pools_on_one_gpu_get_the_pairs_memory_split(model: Path):
    pools = RuntimePair(model, model, large_replicas=2, device="cuda")
    assert pools.shared_gpu and len(pools.large.workers) == 2
    assert [_flag(w.command(), "--mem-fraction-static") for w in pools.large.workers] == ["0.8", "0.8"]
    assert _flag(pools.small.workers[0].command(), "--mem-fraction-static") == "0.25"
    apart = RuntimePair(model, model, device="cuda", small_args=["--base-gpu-id", "1"])
    assert not apart.shared_gpu and "--mem-fraction-static" not in apart.large.workers[0].command()
    assert not RuntimePair(model, model, large_replicas=2, device="cpu").shared_gpu


def test_speculative_maps_to_sglang_flags_on_the_large_runtime_only(model: Path):
    spec = Speculative(
        "eagle3", "RedHatAI/Qwen3-32B-speculator.eagle3", num_steps=3, eagle_topk=1, num_draft_tokens=4
    )
    pair = RuntimePair(model, model, device="cuda", speculative=spec)
    cmd = pair.large.workers[0].command()
    assert _flag(cmd, "--speculative-algorithm") == "EAGLE3"
    assert _flag(cmd, "--speculative-draft-model-path") == "RedHatAI/Qwen3-32B-speculator.eagle3"
    assert _flag(cmd, "--speculative-num-steps") == "3"
    assert _flag(cmd, "--speculative-eagle-topk") == "1"
    assert _flag(cmd, "--speculative-num-draft-tokens") == "4"
    assert "--speculative-algorithm" not in pair.small.workers[0].command()
    standalone = Speculative("standalone", str(model)).args()
    assert standalone == [
        "--speculative-algorithm",
        "STANDALONE",
        "--speculative-draft-model-path",
        str(model),
    ]


def test_bad_speculative_settings_fail_before_start(model: Path, tmp_path: Path):
    with pytest.raises(LaunchError, match="unknown speculative algorithm 'medusa'"):
        Speculative("medusa", "x/y")
    with pytest.raises(LaunchError, match="'large'.*needs --speculative-draft"):
        RuntimePair(model, model, device="cpu", speculative=Speculative("eagle3")).start()
    with pytest.raises(LaunchError, match="neither a local folder"):
        RuntimePair(
            model, model, device="cpu", speculative=Speculative("standalone", str(tmp_path / "missing"))
        ).start()


@pytest.mark.skipif(cuda_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_clear_error_before_any_server_starts(model: Path):
    assert resolve_device("auto") == "cpu"
    with pytest.raises(DeviceError, match="torch sees no CUDA device"):
        resolve_device("cuda")
    pair = RuntimePair(model, model, device="cuda")
    with pytest.raises(DeviceError):
        pair.start()
    assert pair.large.workers[0].proc is None and pair.small.workers[0].proc is None


def test_cli_flags_reach_the_pair(model: Path):
    import argparse

    p = argparse.ArgumentParser()
    add_pair_args(p)
    args = p.parse_args(
        [
            "--device",
            "cuda",
            "--large-model",
            str(model),
            "--small-model",
            str(model),
            "--large-sglang-args",
            "--tp 2 --mem-fraction-static 0.7",
            "--small-sglang-args=--context-length 8192",
            "--speculative",
            "standalone",
            "--speculative-draft",
            str(model),
        ]
    )
    pair = pair_from_args(args)
    large, small = pair.large.workers[0].command(), pair.small.workers[0].command()
    assert _flag(large, "--tp") == "2" and _flag(large, "--mem-fraction-static") == "0.7"
    assert large.count("--mem-fraction-static") == 1  # the user's split, not ours
    assert _flag(small, "--context-length") == "8192"
    assert _flag(large, "--speculative-algorithm") == "STANDALONE"


def test_serve_runtimes_help_documents_the_launch_flags():
    out = subprocess.run(
        [sys.executable, "-m", "relaygen_sgl.cli", "serve-runtimes", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for flag in (
        "--device",
        "--large-sglang-args",
        "--small-sglang-args",
        "--speculative",
        "--speculative-draft",
    ):
        assert flag in out


def test_calibrate_starts_one_runtime_from_the_shared_flags(model: Path):
    from relaygen_sgl.cli import build_parser
    from relaygen_sgl.pair_args import runtime_from_args

    args = build_parser().parse_args(
        [
            "calibrate",
            "--traces",
            "t.jsonl",
            "--small-model",
            str(model),
            "--out",
            "o",
            "--device",
            "cuda",
            "--dtype",
            "float16",
            "--small-sglang-args",
            "--context-length 4096",
            "--speculative",
            "standalone",
            "--speculative-draft",
            str(model),
        ]
    )
    small = runtime_from_args(args, "small").command()
    assert _flag(small, "--context-length") == "4096" and _flag(small, "--dtype") == "float16"
    assert "--speculative-algorithm" not in small  # speculation is the large runtime's
    large = runtime_from_args(args, "large", model).command()
    assert _flag(large, "--speculative-algorithm") == "STANDALONE" and "--context-length" not in large
