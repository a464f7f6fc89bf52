"""The quantized products (fusion/runtime/csrc/quant_matmul.cpp) against the NumPy dequantization of
tests/gguf_reference.py, per block type, on random blocks.

Two checks per case: against the product of the dequantized weights with the activations as the
kernel quantizes them (int8 per block: 256 values for Q4_K/Q6_K, 32 for Q5_0/Q8_0, scale max|x|/127,
round to nearest even), which must agree to float32 summation rounding; and against the plain float
product, which differs by the activations' quantization only (under 2% of the output's scale).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf_reference import dequantize, random_blocks

from fusion.runtime import cpu_ops

KINDS = {"Q4_K": (12, 256), "Q6_K": (14, 256), "Q5_0": (6, 32), "Q8_0": (8, 32)}
ops = cpu_ops.load()
pytestmark = pytest.mark.skipif(ops is None, reason=f"C++ ops unavailable: {cpu_ops.unavailable_reason()}")


def _quantized_activations(x: np.ndarray, block: int) -> np.ndarray:
    """x (B, n) as the kernel sees it: per block, round(x * 127 / max|x|) * max|x| / 127."""
    b = x.reshape(x.shape[0], -1, block).astype(np.float32)
    top = np.abs(b).max(-1, keepdims=True)
    inv = np.where(top > 0, np.float32(127) / np.where(top > 0, top, 1), 0).astype(np.float32)
    q = np.rint(b * inv)
    return (q * (top / np.float32(127))).reshape(x.shape)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rows,blocks,batch", [(1, 1, 1), (37, 2, 1), (64, 6, 3), (9, 3, 7), (16, 4, 13)])
def test_product_matches_numpy_dequantization(kind, rows, blocks, batch):
    code, block = KINDS[kind]
    rng = np.random.default_rng(rows * 100 + blocks * 10 + batch)
    cols = blocks * block
    raw = random_blocks(kind, rows, cols, rng)
    w = dequantize(raw, kind, (rows, cols)).astype(np.float64)
    x = rng.standard_normal((batch, cols)).astype(np.float32)
    bias = rng.standard_normal(rows).astype(np.float32)
    residual = rng.standard_normal((batch, rows)).astype(np.float32)
    y = ops.quant_matmul(torch.from_numpy(x), [torch.from_numpy(raw.reshape(-1))], [code], [rows],
                         torch.from_numpy(bias), torch.from_numpy(residual)).numpy()
    exact = _quantized_activations(x, block) @ w.T + bias + residual
    scale = np.abs(exact).max()
    assert np.abs(y - exact).max() <= 2e-5 * scale * np.sqrt(blocks), kind
    plain = x.astype(np.float64) @ w.T + bias + residual
    assert np.abs(y - plain).max() <= 0.02 * scale, kind


def test_fused_weights_of_several_types_are_one_row_concatenation():
    rng = np.random.default_rng(3)
    cols = 512
    parts = [("Q4_K", 16), ("Q6_K", 8), ("Q4_K", 8)]  # q | k | v with v in another type, as in the 1.5B file
    raws = [random_blocks(k, r, cols, rng) for k, r in parts]
    x = rng.standard_normal((2, cols)).astype(np.float32)
    y = ops.quant_matmul(torch.from_numpy(x), [torch.from_numpy(r.reshape(-1)) for r in raws],
                         [KINDS[k][0] for k, _ in parts], [r for _, r in parts]).numpy()
    alone = [ops.quant_matmul(torch.from_numpy(x), [torch.from_numpy(r.reshape(-1))], [KINDS[k][0]], [n]).numpy()
             for (k, n), r in zip(parts, raws)]
    np.testing.assert_array_equal(y, np.concatenate(alone, axis=1))


@pytest.mark.parametrize("kind", KINDS)
def test_dequantized_rows_equal_the_reference(kind):
    code, block = KINDS[kind]
    rng = np.random.default_rng(7)
    raw = random_blocks(kind, 12, 2 * block, rng)
    want = dequantize(raw, kind, (12, 2 * block))
    got = ops.dequantize_rows(torch.from_numpy(raw.reshape(-1)), code, 12, 2 * block, torch.tensor([11, 0, 5])).numpy()
    np.testing.assert_array_equal(got, want[[11, 0, 5]])


def test_wrong_sizes_are_refused_not_read_past():
    raw = torch.zeros(144 * 3, dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="bytes"):
        ops.quant_matmul(torch.zeros(1, 256), [raw], [12], [4])  # 3 rows of bytes for 4 rows
    with pytest.raises(RuntimeError, match="whole blocks"):
        ops.quant_matmul(torch.zeros(1, 300), [raw], [12], [3])
    with pytest.raises(RuntimeError, match="out of"):
        ops.dequantize_rows(raw, 12, 3, 256, torch.tensor([3]))
