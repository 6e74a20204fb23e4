"""Import-path shims that let stock SGLang 0.5.23 serve on a plain x86 CPU.

This folder is *not* imported as a package by relaygen: its path is put on
``PYTHONPATH`` of the SGLang server processes that :mod:`relaygen_sgl.runtime.server`
starts (see :func:`shim_path`), and only for modules that are missing there.

* ``sgl_kernel/``: SGLang's CPU engine imports two helpers from the CPU build of
  ``sgl_kernel`` that is not published on PyPI; we provide pure-torch versions.
* ``torchvision/``: SGLang imports torchvision at module level for multimodal
  processors; PyPI's wheel fails to load beside the CPU torch wheel, and text
  models never call it, so an import-only stand-in is enough.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def shim_path() -> str:
    return str(Path(__file__).resolve().parent)


def missing_modules() -> list[str]:
    """Shimmed modules that the current interpreter cannot import for real."""
    return [m for m in ("sgl_kernel", "torchvision") if importlib.util.find_spec(m) is None]
