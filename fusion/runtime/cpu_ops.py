"""The C++ decode ops for x86 CPUs (fusion/runtime/csrc/cpu_decode.cpp), compiled once per machine and cached.

    ops = cpu_ops.load()                     # the extension module, or None where it cannot run (then use BLAS)
    packed = ops.pack_half(w)                # (out, in) float32 -> float16 in the kernel's blocked layout
    y = ops.gemv_half(x, packed, out, residual=None)   # (B, in) float32 -> (B, out) float32 (+ residual)
    y = ops.rms_norm(x, weight, eps)         # (B, D) float32 RMSNorm
    y = ops.silu_mul(gate_up)                # (B, 2I) [gate | up] -> silu(gate) * up, (B, I)
    y = ops.attend_decode(qkv, cos, sin, k_cache, v_cache, slots, positions, heads)
        # one decode step's rotary embedding, cache write and attention for B conversations -> (B, H d)
    y = ops.quant_matmul(x, raws, kinds, rows, bias=None, residual=None)
        # (B, in) float32 times weights kept in GGUF blocks (Q4_K, Q6_K, Q5_0, Q8_0; quant_matmul.cpp)
    rows = ops.dequantize_rows(raw, kind, n, cols, ids)  # rows of such a weight as float32

fusion/runtime/engine.py uses them for one-token steps and short prefills (float16 weights, float32
accumulation), fusion/runtime/quant_engine.py for every product of a GGUF decoder. The build (about 30 s with g++) lands in $POCKET_OMNI_CACHE/torch_extensions;
`launch.py fetch` (run by `setup.sh`) builds it so the first answer does not wait for it. It needs AVX2,
FMA and F16C (every x86 CPU since 2013) and a C++ compiler; without them, or with
POCKET_OMNI_CPU_OPS=0, `load()` says why in the log and returns None.
"""

from __future__ import annotations

import logging
import os
from functools import cache
from pathlib import Path

import torch

from fusion.weights.fetch import cache_dir

log = logging.getLogger(__name__)
SOURCES = [Path(__file__).parent / "csrc" / name for name in ("cpu_decode.cpp", "quant_matmul.cpp")]
FLAGS = ["-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp"]


def unavailable_reason() -> str | None:
    if os.environ.get("POCKET_OMNI_CPU_OPS", "1") == "0":
        return "turned off by POCKET_OMNI_CPU_OPS=0"
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return f"the CPU lacks AVX2 ({torch.backends.cpu.get_cpu_capability()})"
    return None


@cache
def load():
    reason = unavailable_reason()
    if reason:
        log.info("C++ decode ops not used: %s", reason)
        return None
    # lazy: 0.07 s at import, and importing it logs a CUDA_HOME warning; only building the CPU ops needs it
    from torch.utils import cpp_extension

    build = cache_dir() / "torch_extensions" / "pocket_omni_cpu_decode"
    build.mkdir(parents=True, exist_ok=True)
    try:
        return cpp_extension.load("pocket_omni_cpu_decode", [str(s) for s in SOURCES], extra_cflags=FLAGS,
                                  extra_ldflags=["-fopenmp"], build_directory=str(build), verbose=False)
    except Exception as err:  # no compiler, a failed build: the BLAS path still works
        log.warning("C++ decode ops not built (%s); decoding with BLAS float32", str(err).splitlines()[0])
        return None
