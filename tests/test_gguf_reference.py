"""Checks for the independent NumPy GGUF reference (tests/gguf_reference.py).

The reference is cross-checked against the ``gguf`` package's own dequantizer (a separate
implementation of the same spec).  All comparisons are BIT-EXACT (np.array_equal on float32):
both sides compute in float32 with ggml's order of operations, so there is no rounding slack.
"""

from __future__ import annotations

import numpy as np
import pytest

from gguf import GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize, quantize as gguf_quantize

from gguf_reference import BLOCK, dequantize, quantize_q8_0, random_blocks

from fusion.weights.fetch import cache_dir
from fusion.weights.gguf_file import GGUFFile
from fusion.weights.qwen import QWEN_05B_GGUF

MODEL = cache_dir() / "raw" / QWEN_05B_GGUF.name  # fetched by setup.sh
KINDS = list(BLOCK)


def _f16_bytes(v: float) -> bytes:
    return np.array([v], dtype="<f2").tobytes()


# --------------------------------------------------------------------------------------------------
# 1. random valid blocks: our reading of the spec == gguf's reading, bit for bit
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rows,nblk,seed", [(1, 1, 0), (3, 5, 1), (16, 4, 2)])
def test_random_blocks_match_gguf(kind, rows, nblk, seed):
    qk, nbytes = BLOCK[kind]
    cols = qk * nblk
    rng = np.random.default_rng(seed)
    raw = random_blocks(kind, rows, cols, rng)
    assert raw.dtype == np.uint8 and raw.shape == (rows * nblk * nbytes,)
    ours = dequantize(raw, kind, (rows, cols))
    assert ours.dtype == np.float32 and ours.shape == (rows, cols)
    assert np.isfinite(ours).all()
    ref = gguf_dequantize(raw.reshape(rows, nblk * nbytes), GGMLQuantizationType[kind])
    assert ref.shape == (rows, cols)
    np.testing.assert_array_equal(ours, ref.astype(np.float32))  # exact


@pytest.mark.parametrize("kind", ["F32", "F16"])
def test_float_kinds_match_gguf(kind):
    rng = np.random.default_rng(7)
    raw = random_blocks(kind, 4, 48, rng)
    ours = dequantize(raw, kind, (4, 48))
    ref = gguf_dequantize(raw, GGMLQuantizationType[kind])  # views the bytes as f32 / f16
    np.testing.assert_array_equal(ours, np.asarray(ref, dtype=np.float32).reshape(4, 48))


def test_random_blocks_fp16_fields_are_moderate():
    rng = np.random.default_rng(3)
    for kind, (_, nbytes) in BLOCK.items():
        blk = random_blocks(kind, 4, BLOCK[kind][0] * 8, rng).reshape(-1, nbytes)
        fields = [slice(208, 210)] if kind == "Q6_K" else [slice(0, 2)] + ([slice(2, 4)] if kind == "Q4_K" else [])
        for f in fields:
            v = np.abs(np.ascontiguousarray(blk[:, f]).view("<f2").astype(np.float32))
            assert np.all((v >= 0.99e-3) & (v <= 1.01e-1)), kind


# --------------------------------------------------------------------------------------------------
# 1b. hand-built single blocks: pin the positional details of each layout
# --------------------------------------------------------------------------------------------------

def test_q8_0_hand_block():
    q = np.arange(-16, 16, dtype=np.int8)
    raw = np.frombuffer(_f16_bytes(0.5) + q.tobytes(), dtype=np.uint8)
    np.testing.assert_array_equal(dequantize(raw, "Q8_0", (1, 32))[0], q.astype(np.float32) * 0.5)


def test_q5_0_hand_block():
    # nibbles: low nibble of byte j -> elem j, high nibble -> elem j + 16; qh bit j -> 5th bit of elem j
    qs = bytes((j & 0xF) | ((15 - j) << 4) for j in range(16))
    qh = (1 << 3) | (1 << 20) | (1 << 31)
    raw = np.frombuffer(_f16_bytes(2.0) + qh.to_bytes(4, "little") + qs, dtype=np.uint8)
    want = np.array([j for j in range(16)] + [15 - j for j in range(16)], dtype=np.int32)
    for bit in (3, 20, 31):
        want[bit] |= 16
    np.testing.assert_array_equal(dequantize(raw, "Q5_0", (1, 32))[0], (want - 16).astype(np.float32) * 2)


def test_q4_k_hand_block():
    # scales j<4: sc = s[j]&63, m = s[j+4]&63; j>=4: sc = s[j+4]&15 | (s[j-4]>>6)<<4, m = s[j+4]>>4 | (s[j]>>6)<<4
    sc = [1, 2, 3, 4, 37, 50, 63, 20]
    mn = [5, 6, 7, 8, 41, 18, 33, 60]
    s = [0] * 12
    for j in range(4):
        s[j] = sc[j] | ((sc[j + 4] >> 4) << 6)
        s[j + 4] = mn[j] | ((mn[j + 4] >> 4) << 6)
        s[j + 8] = (sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4)
    qs = bytes(((i * 7) & 0xF) | (((i * 5 + 3) & 0xF) << 4) for i in range(128))
    raw = np.frombuffer(_f16_bytes(0.25) + _f16_bytes(0.125) + bytes(s) + qs, dtype=np.uint8)
    want = np.empty(256, dtype=np.float32)
    for c in range(4):            # 64-element chunk c: low nibbles = sub-block 2c, high = 2c+1
        for ll in range(32):
            b = qs[32 * c + ll]
            want[64 * c + ll] = 0.25 * sc[2 * c] * (b & 0xF) - 0.125 * mn[2 * c]
            want[64 * c + 32 + ll] = 0.25 * sc[2 * c + 1] * (b >> 4) - 0.125 * mn[2 * c + 1]
    np.testing.assert_array_equal(dequantize(raw, "Q4_K", (1, 256))[0], want)  # all values exact in f32


def test_q6_k_hand_block():
    rng = np.random.default_rng(11)
    ql = rng.integers(0, 256, 128, dtype=np.uint8)
    qh = rng.integers(0, 256, 64, dtype=np.uint8)
    scales = rng.integers(-128, 128, 16).astype(np.int8)
    raw = np.frombuffer(ql.tobytes() + qh.tobytes() + scales.tobytes() + _f16_bytes(0.5), dtype=np.uint8)
    want = np.empty(256, dtype=np.float64)
    for n in range(2):
        L, H, S = ql[64 * n:], qh[32 * n:], scales[8 * n:]
        for ll in range(32):
            vals = [(L[ll] & 0xF) | (((H[ll] >> 0) & 3) << 4), (L[ll + 32] & 0xF) | (((H[ll] >> 2) & 3) << 4),
                    (L[ll] >> 4) | (((H[ll] >> 4) & 3) << 4), (L[ll + 32] >> 4) | (((H[ll] >> 6) & 3) << 4)]
            for k, v in enumerate(vals):
                e = ll + 32 * k
                want[128 * n + e] = 0.5 * int(S[e // 16]) * (int(v) - 32)
    np.testing.assert_array_equal(dequantize(raw, "Q6_K", (1, 256))[0], want.astype(np.float32))


def test_bad_sizes_raise():
    raw = random_blocks("Q8_0", 2, 64, np.random.default_rng(0))
    with pytest.raises(ValueError):
        dequantize(raw[:-1], "Q8_0", (2, 64))
    with pytest.raises(ValueError):
        dequantize(raw, "Q8_0", (4, 16))
    with pytest.raises(ValueError):
        random_blocks("Q4_K", 1, 128, np.random.default_rng(0))


# --------------------------------------------------------------------------------------------------
# 2. real model tensors
# --------------------------------------------------------------------------------------------------

def _reader_class():
    """gguf.GGUFReader, minus the slow part: the stock reader builds one numpy view per element of
    every metadata array (151k vocab strings + 151k merges here: ~20 s of CPU).  This subclass keeps
    such a large flat array as one opaque byte slice (its .contents() is not usable - not needed here);
    tensor info, offsets, shapes, types and tensor.data all come from the unmodified gguf code."""
    import struct

    from gguf import GGUFReader, GGUFValueType

    class _Reader(GGUFReader):
        def _get_field_parts(self, orig_offs, raw_type):
            if GGUFValueType(raw_type) != GGUFValueType.ARRAY:
                return super()._get_field_parts(orig_offs, raw_type)
            itype = int(self._get(orig_offs, np.uint32)[0])
            alen = int(self._get(orig_offs + 4, np.uint64)[0])
            sub = GGUFValueType(itype)
            if alen < 1024 or not (sub == GGUFValueType.STRING or sub in self.gguf_scalar_to_np):
                return super()._get_field_parts(orig_offs, raw_type)
            offs = orig_offs + 12
            if sub == GGUFValueType.STRING:
                buf = memoryview(self.data)
                for _ in range(alen):
                    offs += 8 + struct.unpack_from("<Q", buf, offs)[0]
            else:
                offs += alen * np.dtype(self.gguf_scalar_to_np[sub]).itemsize
            return offs - orig_offs, [self.data[orig_offs:offs]], [], [GGUFValueType.ARRAY, sub]

    return _Reader


@pytest.fixture(scope="module")
def reader():
    if not MODEL.exists():
        pytest.skip(f"model file absent: {MODEL}")
    return _reader_class()(str(MODEL))


def test_fast_reader_tensor_table_is_consistent(reader):
    """The metadata shortcut must not shift any offset: the tensor table must have the declared
    count, and the tensors must tile the data section (aligned) from data_offset to the file end.
    (Checked once by hand to equal the stock GGUFReader's table exactly: names, types, shapes,
    offsets; the stock reader is too slow to run here on every test run.)"""
    assert len(reader.tensors) == int(reader.fields["GGUF.tensor_count"].parts[0][0])
    spans = sorted((int(t.data_offset), int(t.data_offset) + int(t.n_bytes)) for t in reader.tensors)
    assert spans[0][0] == reader.data_offset and reader.data_offset % reader.alignment == 0
    assert spans[-1][1] <= MODEL.stat().st_size < spans[-1][1] + reader.alignment
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert 0 <= start - end < reader.alignment and start % reader.alignment == 0


def test_our_reader_matches_the_gguf_package(reader):
    """fusion/weights/gguf_file.py (what the engine loads) against the gguf package's reader: the same
    tensors, block types, shapes (NumPy order) and bytes, and the same architecture metadata."""
    ours = GGUFFile(MODEL)
    assert set(ours.tensors) == {t.name for t in reader.tensors}
    for t in reader.tensors:
        mine = ours.tensors[t.name]
        assert mine.kind == int(t.tensor_type) and mine.shape == tuple(int(x) for x in reversed(t.shape))
        theirs = np.asarray(t.data).reshape(-1).view(np.uint8)
        assert mine.data.size == theirs.size and np.array_equal(mine.data[:256], theirs[:256])
        assert np.array_equal(mine.data[-256:], theirs[-256:])
    for key in ("qwen2.block_count", "qwen2.attention.head_count_kv", "qwen2.rope.freq_base"):
        assert ours.get(key) == reader.fields[key].contents()


def _first(reader, kind, suffix):
    for t in reader.tensors:
        if t.tensor_type.name == kind and t.name.endswith(suffix):
            return t
    pytest.skip(f"no {kind} tensor named *{suffix} in the model")


@pytest.mark.parametrize("kind,suffix,max_rows", [
    ("Q5_0", "attn_k.weight", None),
    ("Q8_0", "attn_v.weight", None),
    ("Q4_K", "ffn_down.weight", 128),
    ("Q6_K", "ffn_down.weight", 128),
    ("F32", "attn_norm.weight", None),
])
def test_real_tensors_match_gguf(reader, kind, suffix, max_rows):
    t = _first(reader, kind, suffix)
    shape = tuple(int(s) for s in reversed(t.shape))  # GGUF lists the fastest dimension first
    data = np.asarray(t.data)
    if kind == "F32":
        ours = dequantize(data.view(np.uint8), kind, shape)
        np.testing.assert_array_equal(ours, data.reshape(shape))
        return
    qk, nbytes = BLOCK[kind]
    rows, cols = shape
    assert data.dtype == np.uint8 and data.shape == (rows, cols // qk * nbytes)
    if max_rows:
        rows = min(rows, max_rows)
        data = data[:rows]
    ours = dequantize(data.reshape(-1), kind, (rows, cols))
    ref = gguf_dequantize(np.ascontiguousarray(data), GGMLQuantizationType[kind])
    np.testing.assert_array_equal(ours, ref)  # exact
    assert np.isfinite(ours).all() and 1e-4 < float(np.abs(ours).mean()) < 1.0


# --------------------------------------------------------------------------------------------------
# 3. Q8_0 quantizer round trip
# --------------------------------------------------------------------------------------------------

def test_quantize_q8_0_round_trip():
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((8, 512)) * rng.uniform(0.01, 3.0, (8, 1))).astype(np.float32)
    x[0, :32] = 0.0                      # all-zero block -> d = 0, q = 0
    raw = quantize_q8_0(x)
    assert raw.dtype == np.uint8 and raw.size == x.size // 32 * 34
    y = dequantize(raw, "Q8_0", x.shape)
    np.testing.assert_array_equal(y[0, :32], 0.0)
    # |x - fp16(d) q| <= |x - d q| + |q| |d - fp16(d)| <= d/2 + 127 d 2^-11  (d = amax/127, fp16 normal)
    d = np.abs(x.reshape(-1, 32)).max(axis=1, keepdims=True) / 127
    bound = d * (0.5 + 127 * 2.0 ** -11) * (1 + 1e-5) + 1e-12
    err = np.abs((y - x).reshape(-1, 32))
    assert np.all(err <= bound)
    assert err.max() > 0  # the bound is exercised on a lossy case, not a trivially exact one
    # matches the gguf package's quantizer byte for byte (both follow quantize_row_q8_0_ref)
    np.testing.assert_array_equal(raw, np.asarray(gguf_quantize(x, GGMLQuantizationType.Q8_0)).reshape(-1))
