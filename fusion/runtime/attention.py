"""Attention dispatch: fused Triton kernels on CUDA, PyTorch SDPA elsewhere; selectable and reported.

    attend(q, k, v, causal, q_offset)   (1, H, T, d) queries over (1, KH, L, d) keys/values (GQA: H % KH == 0)
    attend_decode(q, k, v, lengths)     (B, H, d) one query per conversation over (B, KH, L, d) caches
                                        holding lengths[b] valid entries each

Backend: POCKET_OMNI_ATTENTION=auto|sdpa|triton|cpp (auto: triton on CUDA when triton imports, else
sdpa), or `set_backend()`. `backend_for(device)` says which one runs. On a CPU, the static engine's decode
step has a third path, `decode_backend()`: "cpp", the C++ op of fusion/runtime/csrc that does the step's rotary
embedding, cache write and attention in one call (auto or cpp, when the C++ ops are loaded).
"""

from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)
_choice = os.environ.get("POCKET_OMNI_ATTENTION", "auto")


def set_backend(name: str) -> None:
    global _choice
    if name not in ("auto", "sdpa", "triton", "cpp"):
        raise ValueError(f"unknown attention backend {name!r} (auto, sdpa, triton, cpp)")
    _choice = name


def triton_available() -> bool:
    try:  # lazy: triton is optional (CUDA wheels of torch bring it)
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def backend_for(device: torch.device) -> str:
    if _choice == "sdpa":
        return "sdpa"
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    if _choice == "triton":
        if not triton_available() or (device.type != "cuda" and not interpreted):
            raise RuntimeError("the triton attention backend needs CUDA (or TRITON_INTERPRET=1) and triton")
        return "triton"
    return "triton" if device.type == "cuda" and triton_available() else "sdpa"


def decode_backend(device: torch.device, cpp_ops: bool) -> str:
    """The path of the static engine's decode-step attention: "cpp" on a CPU with the C++ ops loaded
    (`cpp_ops`) unless sdpa or triton was chosen, else backend_for(device)."""
    if device.type == "cpu" and cpp_ops and _choice in ("auto", "cpp"):
        return "cpp"
    return backend_for(device)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, q_offset: int = 0) -> torch.Tensor:
    """q (1, H, T, d) at positions q_offset.. q_offset+T-1; k, v (1, KH, L, d) for positions 0..L-1."""
    if backend_for(q.device) == "triton":
        from fusion.runtime import kernels  # lazy: it imports triton, an optional dependency

        if q.shape[2] == 1:  # one query over the whole cache: the decode kernel
            return attend_decode(q[:, :, 0], k, v, torch.tensor([k.shape[2]], device=q.device))[:, :, None]
        out = kernels.prefill_attention(q[0].transpose(0, 1), k[0].transpose(0, 1), v[0].transpose(0, 1),
                                        torch.tensor([0, q.shape[2]], device=q.device, dtype=torch.int32),
                                        torch.tensor([0, k.shape[2]], device=q.device, dtype=torch.int32),
                                        causal=causal)
        return out.transpose(0, 1)[None]
    return sdpa(q, k, v, causal, q_offset)


def decode_mask(lengths: torch.Tensor) -> torch.Tensor | None:
    """For attend_decode on the SDPA path: which cache entries each row may see, (B, 1, 1, longest),
    or None when every row has the same length. Built once per step, shared by all layers."""
    longest = int(lengths.max())
    if int(lengths.min()) == longest:
        return None
    return (torch.arange(longest, device=lengths.device)[None] < lengths[:, None])[:, None, None]


def attend_decode(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """One new token per conversation (its own entry already in the cache): q (B, H, d), k and v
    (B, KH, L, d), lengths (B,) -> (B, H, d). Each query sees entries 0..lengths[b]-1 of its cache.
    mask: decode_mask(lengths), when the caller already has it."""
    if backend_for(q.device) == "triton":
        from fusion.runtime import kernels  # lazy: it imports triton, an optional dependency

        return kernels.decode_attention(q, k, v, lengths.to(device=q.device, dtype=torch.int32))
    if mask is None:
        mask = decode_mask(lengths)
    longest = int(lengths.max()) if mask is None else mask.shape[-1]
    return sdpa(q[:, :, None], k[:, :, :longest], v[:, :, :longest], False, allowed=mask)[:, :, 0]


def sdpa(q, k, v, causal: bool, q_offset: int = 0, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """The reference: PyTorch SDPA with GQA. allowed: an optional boolean mask broadcastable to
    (B, H, T, L) (True = may attend)."""
    t, length = q.shape[2], k.shape[2]
    if allowed is None and causal and (q_offset or t != length):
        # bottom-right aligned causal mask: query i (position q_offset + i) sees keys 0..q_offset + i
        allowed = torch.arange(length, device=q.device)[None] <= (q_offset + torch.arange(t, device=q.device))[:, None]
    if allowed is not None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, enable_gqa=True)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal and t > 1, enable_gqa=True)
