"""Pure-torch stand-in for the CPU build of ``sgl_kernel``.

Why it exists: SGLang's CPU engine (``SGLANG_USE_CPU_ENGINE=1``) imports
``assign_req_to_token_pool_cpu`` and ``copy_all_layer_kv_cache_cpu`` from the
CPU build of ``sgl_kernel``, which is not on PyPI.  Everything else falls back
to SGLang's ``forward_native`` code paths on CPUs without AMX, so these two
helpers are all that is needed.  They follow the semantics of SGLang's Triton
kernels of the same name (``sglang/srt/mem_cache/allocation.py`` and
``sglang/kernels/ops/kvcache/cache_move.py``).
"""

from __future__ import annotations

import ctypes

import torch

__version__ = "0.0.0+relaygen.cpu.fallback"


def assign_req_to_token_pool_cpu(
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    start_offset: torch.Tensor,
    end_offset: torch.Tensor,
    out_cache_loc: torch.Tensor,
    pool_len: int,
) -> None:
    """Write each request's new KV slots into its row of ``req_to_token``.

    ``out_cache_loc`` holds the slots of all requests back to back, in order.
    """
    starts = start_offset.tolist()
    ends = end_offset.tolist()
    rows = req_pool_indices.tolist()
    out = 0
    for row, start, end in zip(rows, starts, ends, strict=True):
        n = end - start
        if n > 0:
            req_to_token[row, start:end] = out_cache_loc[out : out + n].to(req_to_token.dtype)
        out += n


def copy_all_layer_kv_cache_cpu(
    data_ptrs: torch.Tensor,
    strides: torch.Tensor,
    tgt_loc: torch.Tensor,
    src_loc: torch.Tensor,
) -> None:
    """Copy KV rows ``src_loc`` to ``tgt_loc`` in every layer buffer.

    ``data_ptrs`` are raw base addresses of the per-layer buffers and
    ``strides`` their row sizes in bytes, as the Triton kernel receives them.
    """
    srcs = src_loc.tolist()
    tgts = tgt_loc.tolist()
    for base, stride in zip(data_ptrs.tolist(), strides.tolist(), strict=True):
        for src, tgt in zip(srcs, tgts, strict=True):
            if src != tgt:
                ctypes.memmove(base + tgt * stride, base + src * stride, stride)


def __getattr__(name: str) -> object:
    """Other CPU kernels are imported at module level but unused on this path
    (speculative trees, AMX ops...); importing works, calling says why not."""
    if name.startswith("__"):
        raise AttributeError(name)

    def _unavailable(*args: object, **kwargs: object) -> None:
        raise NotImplementedError(f"sgl_kernel.{name} has no pure-torch fallback in relaygen's CPU shim")

    _unavailable.__name__ = name
    return _unavailable
