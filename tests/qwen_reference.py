"""An independent reference forward of a Qwen2 GGUF decoder in NumPy float64: every weight dequantized
by tests/gguf_reference.py (written from the GGUF spec), the architecture written from Qwen2's
definition (RMSNorm, q/k/v with biases, rotate-half rotary with base rope_theta, grouped-query causal
attention, SwiGLU), nothing shared with fusion/runtime."""

from __future__ import annotations

import numpy as np
from gguf_reference import dequantize

from fusion.weights.gguf_file import GGUFFile


def _weight(f: GGUFFile, name: str, rows=None) -> np.ndarray:
    t = f.tensors[name]
    if t.kind_name == "F32":
        return np.asarray(t.data).view("<f4").reshape(t.shape).astype(np.float64)
    raw = np.asarray(t.data).reshape(t.shape[0], -1)
    if rows is not None:
        raw = raw[rows]
    return dequantize(raw.reshape(-1), t.kind_name, (raw.shape[0], t.shape[1])).astype(np.float64)


def _rms(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def _rotate(x: np.ndarray, theta: float) -> np.ndarray:
    """x (heads, T, d) at positions 0..T-1."""
    d = x.shape[-1]
    freq = theta ** (-np.arange(0, d, 2) / d)
    ang = np.arange(x.shape[1])[:, None] * freq[None]
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))
    half = np.concatenate([-x[..., d // 2:], x[..., :d // 2]], -1)
    return x * cos + half * sin


def qwen2_logits(path, ids: list[int]) -> np.ndarray:
    """(T, V) next-token logits at every position of the prompt `ids`."""
    f = GGUFFile(path)
    g = lambda key: f.metadata[f"qwen2.{key}"]  # noqa: E731
    heads, kv, eps, theta = g("attention.head_count"), g("attention.head_count_kv"), \
        g("attention.layer_norm_rms_epsilon"), g("rope.freq_base")
    x = _weight(f, "token_embd.weight", rows=np.asarray(ids))
    t, width = x.shape
    d = width // heads
    causal = np.triu(np.full((t, t), -np.inf), 1)
    for i in range(g("block_count")):
        p = f"blk.{i}."
        h = _rms(x, _weight(f, p + "attn_norm.weight"), eps)
        q, k, v = [(h @ _weight(f, p + f"attn_{n}.weight").T + _weight(f, p + f"attn_{n}.bias")) for n in "qkv"]
        q = _rotate(q.reshape(t, heads, d).transpose(1, 0, 2), theta)
        k = _rotate(k.reshape(t, kv, d).transpose(1, 0, 2), theta)
        v = v.reshape(t, kv, d).transpose(1, 0, 2)
        k, v = np.repeat(k, heads // kv, 0), np.repeat(v, heads // kv, 0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(d) + causal
        s = np.exp(s - s.max(-1, keepdims=True))
        att = (s / s.sum(-1, keepdims=True)) @ v
        x = x + att.transpose(1, 0, 2).reshape(t, width) @ _weight(f, p + "attn_output.weight").T
        h = _rms(x, _weight(f, p + "ffn_norm.weight"), eps)
        gate, up = h @ _weight(f, p + "ffn_gate.weight").T, h @ _weight(f, p + "ffn_up.weight").T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ _weight(f, p + "ffn_down.weight").T
    x = _rms(x, _weight(f, "output_norm.weight"), eps)
    head = "output.weight" if "output.weight" in f.tensors else "token_embd.weight"
    return x @ _weight(f, head).T
