"""The Triton attention kernels against PyTorch SDPA, run on the CPU by Triton's interpreter
(TRITON_INTERPRET=1; on a CUDA machine the same tests run compiled with POCKET_OMNI_KERNELS_ON_GPU=1)."""

import os

import pytest
import torch

ON_GPU = os.environ.get("POCKET_OMNI_KERNELS_ON_GPU") == "1" and torch.cuda.is_available()
if not ON_GPU:
    os.environ["TRITON_INTERPRET"] = "1"  # before triton reads it
triton = pytest.importorskip("triton")

from fusion.runtime import kernels  # noqa: E402
from fusion.runtime.attention import sdpa  # noqa: E402

DEVICE = "cuda" if ON_GPU else "cpu"
TOL = {torch.float32: 2e-4, torch.float16: 2e-3}


def packed(lengths, heads, kv_heads, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    q, k, v = (torch.randn(total, n, d, generator=g).to(DEVICE, dtype) for n in (heads, kv_heads, kv_heads))
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    return q, k, v, cu


def reference(q, k, v, causal, allowed=None):
    """One sequence, (T, H, d) layout, through SDPA in float32."""
    as4 = lambda t: t.float().transpose(0, 1)[None]  # noqa: E731
    return sdpa(as4(q), as4(k), as4(v), causal, q_offset=k.shape[0] - q.shape[0], allowed=allowed)[0].transpose(0, 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("causal", [True, False])
def test_varlen_prefill_matches_sdpa_per_sequence(dtype, causal):
    lengths = [1, 7, 33, 50]  # odd lengths, one shorter than a tile, one spanning tiles
    q, k, v, cu = packed(lengths, heads=4, kv_heads=2, d=32, dtype=dtype)
    out = kernels.prefill_attention(q, k, v, cu, cu, causal=causal)
    for b in range(len(lengths)):
        s, e = int(cu[b]), int(cu[b + 1])
        want = reference(q[s:e], k[s:e], v[s:e], causal)
        torch.testing.assert_close(out[s:e].float(), want, atol=TOL[dtype], rtol=TOL[dtype])


def test_prefill_continuing_a_cache_is_bottom_right_causal():
    """5 new queries over 40 keys (35 cached): query i sees keys 0..35+i."""
    q, _, _, _ = packed([5], 4, 4, 64, torch.float32, seed=1)
    _, k, v, _ = packed([40], 4, 4, 64, torch.float32, seed=2)
    cu_q = torch.tensor([0, 5], dtype=torch.int32, device=DEVICE)
    cu_k = torch.tensor([0, 40], dtype=torch.int32, device=DEVICE)
    out = kernels.prefill_attention(q, k, v, cu_q, cu_k, causal=True)
    torch.testing.assert_close(out, reference(q, k, v, True), atol=2e-4, rtol=2e-4)


def test_block_mask_lets_an_images_tokens_see_each_other():
    lengths = [20, 45]
    q, k, v, cu = packed(lengths, heads=2, kv_heads=1, d=16, dtype=torch.float32, seed=3)
    blocks = torch.full((sum(lengths),), -1, dtype=torch.int32, device=DEVICE)
    blocks[3:11] = 0  # an image in the first conversation
    blocks[20 + 30:20 + 40] = 1  # a clip in the second
    out = kernels.prefill_attention(q, k, v, cu, cu, causal=True, blocks=blocks)
    for b in range(2):
        s, e = int(cu[b]), int(cu[b + 1])
        ids = blocks[s:e]
        pos = torch.arange(e - s, device=DEVICE)
        allowed = (pos[None] <= pos[:, None]) | ((ids[:, None] == ids[None]) & (ids[:, None] >= 0))
        torch.testing.assert_close(out[s:e], reference(q[s:e], k[s:e], v[s:e], True, allowed), atol=2e-4, rtol=2e-4)
    # and it differs from plain causal attention inside the image (the mask did something)
    plain = kernels.prefill_attention(q, k, v, cu, cu, causal=True)
    assert not torch.allclose(out[3:10], plain[3:10]) and torch.allclose(out[:3], plain[:3])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("splits", [1, 3, None])
def test_split_kv_decode_matches_sdpa(dtype, splits):
    g = torch.Generator().manual_seed(4)
    batch, heads, kv_heads, d, max_len = 3, 6, 2, 64, 300
    q = torch.randn(batch, heads, d, generator=g).to(DEVICE, dtype)
    kc = torch.randn(batch, kv_heads, max_len, d, generator=g).to(DEVICE, dtype)
    vc = torch.randn(batch, kv_heads, max_len, d, generator=g).to(DEVICE, dtype)
    lengths = torch.tensor([1, 129, 300], device=DEVICE, dtype=torch.int32)  # entries past a length are garbage
    out = kernels.decode_attention(q, kc, vc, lengths, splits=splits)
    for b, n in enumerate(lengths.tolist()):
        want = sdpa(q[b:b + 1, :, None].float(), kc[b:b + 1, :, :n].float(), vc[b:b + 1, :, :n].float(), False)
        torch.testing.assert_close(out[b].float(), want[0, :, 0], atol=TOL[dtype], rtol=TOL[dtype])


def test_bad_shapes_are_refused():
    q, k, v, cu = packed([4], heads=3, kv_heads=2, d=32, dtype=torch.float32)
    with pytest.raises(ValueError, match="query heads"):
        kernels.prefill_attention(q, k, v, cu, cu)


def test_kernel_benchmark_runs_and_reports_both_sides():
    """`launch.py bench kernels` at toy sizes (its figures mean something only on a GPU)."""
    from app.bench_decode import bench_kernels

    figures = bench_kernels(device=DEVICE, small=True, repeats=1)
    assert figures["prefill_ms"] > 0 and figures["prefill_sdpa_flash_ms"] > 0
    assert {"decode_16_speedup_vs_sdpa", "decode_64_speedup_vs_sdpa"} <= figures.keys()
