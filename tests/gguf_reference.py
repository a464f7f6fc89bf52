"""Independent NumPy reference for GGUF / ggml quantized block formats.

Written from the ggml block layouts (``ggml/src/ggml-common.h``: ``block_q8_0``, ``block_q5_0``,
``block_q4_K``, ``block_q6_K``) and the scalar reference routines in ``ggml/src/ggml-quants.c``
(``dequantize_row_*``, ``get_scale_min_k4``, ``quantize_row_q8_0_ref``).  It deliberately does not
use our C++ kernels nor the ``gguf`` package's dequantizer, so the two can be tested against it.

All arithmetic is float32 and follows ggml's order of operations, so results are bit-identical to
the scalar C reference (compiled without FMA contraction):

* Q8_0  ``x = float(q) * d``
* Q5_0  ``x = float(q - 16) * d``
* Q4_K  ``x = (d * sc) * float(q) - (dmin * m)``
* Q6_K  ``x = (d * float(scale)) * float(q - 32)``

Layout summary (all multi-byte fields little-endian):

========  =====  =====  ==========================================================================
type      elems  bytes  layout
========  =====  =====  ==========================================================================
Q8_0      32     34     f16 d | int8 qs[32]
Q5_0      32     22     f16 d | u8 qh[4] (u32, bit j = 5th bit of elem j) | u8 qs[16]
                        (low nibble -> elem j, high nibble -> elem j+16)
Q4_K      256    144    f16 d | f16 dmin | u8 scales[12] (8 x 6-bit scale + 8 x 6-bit min) | u8 qs[128]
Q6_K      256    210    u8 ql[128] | u8 qh[64] | int8 scales[16] | f16 d
========  =====  =====  ==========================================================================
"""

from __future__ import annotations

import numpy as np

QK_K = 256

# elements per block, bytes per block
BLOCK = {"Q8_0": (32, 34), "Q5_0": (32, 22), "Q4_K": (256, 144), "Q6_K": (256, 210)}

_F32 = np.float32


def _as_bytes(raw) -> np.ndarray:
    """Flat, contiguous uint8 view of ``raw`` (ndarray of any dtype, bytes, bytearray, memoryview)."""
    if isinstance(raw, (bytes, bytearray, memoryview)):
        return np.frombuffer(raw, dtype=np.uint8)
    arr = np.ascontiguousarray(raw)
    return arr.reshape(-1).view(np.uint8)


def _kind_name(kind) -> str:
    name = getattr(kind, "name", kind)  # also accept gguf.GGMLQuantizationType members
    return str(name).upper()


def _f16(cols: np.ndarray) -> np.ndarray:
    """(n, 2) uint8 little-endian half floats -> (n,) float32 (exact)."""
    return np.ascontiguousarray(cols).view("<f2").reshape(-1).astype(_F32)


def _blocks(raw: np.ndarray, kind: str, n_elems: int) -> np.ndarray:
    qk, nbytes = BLOCK[kind]
    if n_elems % qk:
        raise ValueError(f"{kind}: {n_elems} elements is not a multiple of the block size {qk}")
    nb = n_elems // qk
    if raw.size != nb * nbytes:
        raise ValueError(f"{kind}: expected {nb * nbytes} bytes for {n_elems} elements, got {raw.size}")
    return raw.reshape(nb, nbytes)


# --------------------------------------------------------------------------------------------------
# per-type block decoders: (nb, bytes_per_block) uint8 -> (nb, elems_per_block) float32
# --------------------------------------------------------------------------------------------------

def _deq_q8_0(blk: np.ndarray) -> np.ndarray:
    d = _f16(blk[:, 0:2])                                      # (nb,)
    q = np.ascontiguousarray(blk[:, 2:34]).view(np.int8)        # (nb, 32)
    return q.astype(_F32) * d[:, None]


def _deq_q5_0(blk: np.ndarray) -> np.ndarray:
    d = _f16(blk[:, 0:2])
    qh = np.ascontiguousarray(blk[:, 2:6]).view("<u4").reshape(-1)          # (nb,)
    qs = blk[:, 6:22]                                                          # (nb, 16)
    nib = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int32)       # elems 0..15 | 16..31
    hi = ((qh[:, None] >> np.arange(32, dtype=np.uint32)) & 1).astype(np.int32)  # bit j -> elem j
    q = (nib | (hi << 4)) - 16
    return q.astype(_F32) * d[:, None]


def _scale_min_k4(sc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nb, 12) packed bytes -> (nb, 8) 6-bit scales, (nb, 8) 6-bit mins (ggml get_scale_min_k4)."""
    a, b, c = sc[:, 0:4], sc[:, 4:8], sc[:, 8:12]
    scale = np.concatenate([a & 63, (c & 0x0F) | ((a >> 6) << 4)], axis=1)
    mins = np.concatenate([b & 63, (c >> 4) | ((b >> 6) << 4)], axis=1)
    return scale, mins


def _deq_q4_k(blk: np.ndarray) -> np.ndarray:
    nb = blk.shape[0]
    d = _f16(blk[:, 0:2])
    dmin = _f16(blk[:, 2:4])
    sc, m = _scale_min_k4(blk[:, 4:16])
    qs = blk[:, 16:144].reshape(nb, 4, 32)                      # 4 chunks of 64 elements
    q = np.stack([qs & 0x0F, qs >> 4], axis=2).reshape(nb, 8, 32)  # sub-block 2c = low, 2c+1 = high
    d1 = d[:, None] * sc.astype(_F32)                           # (nb, 8)
    m1 = dmin[:, None] * m.astype(_F32)
    return (d1[:, :, None] * q.astype(_F32) - m1[:, :, None]).reshape(nb, QK_K)


def _deq_q6_k(blk: np.ndarray) -> np.ndarray:
    nb = blk.shape[0]
    ql = blk[:, 0:128].reshape(nb, 2, 64)                       # per 128-element half
    qh = blk[:, 128:192].reshape(nb, 2, 32)
    scales = np.ascontiguousarray(blk[:, 192:208]).view(np.int8).reshape(nb, 2, 8)
    d = _f16(blk[:, 208:210])
    lo, hi = ql[:, :, :32], ql[:, :, 32:]
    q = np.stack([
        (lo & 0x0F) | (((qh >> 0) & 3) << 4),   # elements  0..31
        (hi & 0x0F) | (((qh >> 2) & 3) << 4),   # elements 32..63
        (lo >> 4) | (((qh >> 4) & 3) << 4),     # elements 64..95
        (hi >> 4) | (((qh >> 6) & 3) << 4),     # elements 96..127
    ], axis=2).astype(np.int32) - 32           # (nb, 2, 4, 32)
    q = q.reshape(nb, 2, 8, 16)                 # 16 elements share one int8 scale
    ds = d[:, None, None] * scales.astype(_F32)  # (nb, 2, 8)
    return (ds[..., None] * q.astype(_F32)).reshape(nb, QK_K)


_DEQ = {"Q8_0": _deq_q8_0, "Q5_0": _deq_q5_0, "Q4_K": _deq_q4_k, "Q6_K": _deq_q6_k}


def dequantize(raw, kind, shape) -> np.ndarray:
    """Decode raw GGUF tensor bytes into a float32 array of numpy ``shape``.

    ``shape`` is numpy (row-major) order, i.e. the reverse of GGUF's ``ne`` list; each row is a
    contiguous run of blocks, so ``shape[-1]`` must be a multiple of the block size.
    """
    kind = _kind_name(kind)
    shape = tuple(int(s) for s in shape)
    n = int(np.prod(shape, dtype=np.int64))
    data = _as_bytes(raw)
    if kind in ("F32", "F16"):
        width = 4 if kind == "F32" else 2
        if data.size != n * width:
            raise ValueError(f"{kind}: expected {n * width} bytes, got {data.size}")
        return data.view("<f4" if kind == "F32" else "<f2").astype(_F32).reshape(shape)
    if kind not in _DEQ:
        raise NotImplementedError(f"no reference dequantizer for {kind}")
    qk = BLOCK[kind][0]
    if shape and shape[-1] % qk:
        raise ValueError(f"{kind}: row length {shape[-1]} is not a multiple of the block size {qk}")
    return _DEQ[kind](_blocks(data, kind, n)).reshape(shape)


# --------------------------------------------------------------------------------------------------
# test-data helpers
# --------------------------------------------------------------------------------------------------

def _rand_f16(rng: np.random.Generator, n: int, lo: float = 1e-3, hi: float = 1e-1,
              signed: bool = True) -> np.ndarray:
    """(n, 2) uint8: little-endian fp16 values with |v| log-uniform in [lo, hi]."""
    v = np.exp(rng.uniform(np.log(lo), np.log(hi), size=n))
    if signed:
        v = v * rng.choice(np.array([-1.0, 1.0]), size=n)
    return v.astype("<f2").view(np.uint8).reshape(n, 2)


def random_blocks(kind, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Random but valid raw bytes for a (rows, cols) tensor of ``kind``.

    Quant bytes (qs / qh / ql / packed 6-bit scales / int8 scales) are uniformly random - every bit
    pattern is legal there.  The fp16 fields are finite, normal, |v| in [1e-3, 1e-1]; ``d`` has a
    random sign (sign handling is part of the format), Q4_K ``d`` and ``dmin`` are positive as ggml's
    quantizer always produces.  Returns a flat uint8 array of rows * cols / qk * bytes_per_block bytes.
    F32 / F16 give values of N(0, 1).
    """
    kind = _kind_name(kind)
    if kind in ("F32", "F16"):
        x = rng.standard_normal((rows, cols))
        return x.astype("<f4" if kind == "F32" else "<f2").reshape(-1).view(np.uint8).copy()
    qk, nbytes = BLOCK[kind]
    if cols % qk:
        raise ValueError(f"{kind}: cols={cols} is not a multiple of the block size {qk}")
    nb = rows * cols // qk
    blk = rng.integers(0, 256, size=(nb, nbytes), dtype=np.uint8)
    if kind in ("Q8_0", "Q5_0"):
        blk[:, 0:2] = _rand_f16(rng, nb)
    elif kind == "Q4_K":
        blk[:, 0:2] = _rand_f16(rng, nb, signed=False)
        blk[:, 2:4] = _rand_f16(rng, nb, signed=False)
    elif kind == "Q6_K":
        blk[:, 208:210] = _rand_f16(rng, nb)
    return blk.reshape(-1)


def _roundf(v: np.ndarray) -> np.ndarray:
    """C ``roundf``: round half away from zero (np.round rounds half to even)."""
    a = np.abs(v.astype(np.float64))          # f32 + 0.5 is exact in f64, so floor() is exact
    return np.copysign(np.floor(a + 0.5), v)


def quantize_q8_0(x: np.ndarray) -> np.ndarray:
    """Reference Q8_0 quantizer (ggml ``quantize_row_q8_0_ref``), (rows, cols) float32 -> flat uint8.

    Per block of 32: ``d = max|x| / 127`` (float32), ``q = roundf(x * (1/d))`` (0 where d == 0),
    stored d = fp16(d).  Note the quants are computed with the float32 d, not the fp16-rounded one.
    """
    x = np.ascontiguousarray(x, dtype=_F32)
    if x.ndim != 2 or x.shape[1] % 32:
        raise ValueError("quantize_q8_0 expects (rows, cols) with cols a multiple of 32")
    xb = x.reshape(-1, 32)
    amax = np.abs(xb).max(axis=1)
    d = (amax / _F32(127)).astype(_F32)
    with np.errstate(divide="ignore"):
        inv = np.where(d != 0, _F32(1) / d, _F32(0)).astype(_F32)
    q = _roundf(xb * inv[:, None]).clip(-127, 127).astype(np.int8)
    out = np.empty((xb.shape[0], 34), dtype=np.uint8)
    out[:, 0:2] = d.astype("<f2").view(np.uint8).reshape(-1, 2)
    out[:, 2:] = q.view(np.uint8)
    return out.reshape(-1)
