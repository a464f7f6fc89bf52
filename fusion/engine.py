"""A lean decode path for Llama-family decoders: the weights of a transformers model, repacked, run
over a static KV cache.

Why: transformers' forward per token spends most of its time outside the matmuls on a small model
(module calls, dynamic cache growth, mask building). Here, per decoder layer and token there are
three matmuls (fused QKV, output, fused gate+up, down) and a handful of elementwise ops; the KV
cache is allocated once for `max_len` positions and written in place; rotary tables are computed
once. The attention itself goes through `fusion.attention` (SDPA here, Triton kernels on CUDA).

Equivalence is tested: greedy tokens identical to transformers' `generate()` on the same weights,
logits within float32 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fusion import attention


class Matrix:
    """A weight stored in whichever layout multiplies a single row fastest on this machine.

    On the CPU, a (1, in) row times a weight is memory-bound, and BLAS streams an (in, out) copy
    up to 1.7x faster than the (out, in) layout transformers stores when `in` is short (576),
    slower when it is long: measured once per shape at load time (`pick_layouts`)."""

    def __init__(self, weight: torch.Tensor):
        self.weight = weight  # (out, in)
        self.transposed: torch.Tensor | None = None

    def use_transposed(self, yes: bool) -> None:
        self.transposed = self.weight.t().contiguous() if yes else None
        if yes:
            self.weight = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.transposed if self.transposed is not None else F.linear(x, self.weight)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.weight.shape) if self.weight is not None else tuple(self.transposed.shape[::-1])

    def nbytes(self) -> int:
        t = self.weight if self.weight is not None else self.transposed
        return t.numel() * t.element_size()


def _time_row_product(weights: list[torch.Tensor], transposed: bool, repeats: int = 3) -> float:
    import time

    mats = [w.t().contiguous() if transposed else w for w in weights]
    x = torch.randn(1, weights[0].shape[1], dtype=weights[0].dtype, device=weights[0].device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for m in mats:
            x @ m if transposed else F.linear(x, m)
        best = min(best, time.perf_counter() - start)
    return best


@dataclass
class _Layer:
    ln1: torch.Tensor
    qkv: Matrix  # (q+k+v out, D): one matmul for the three projections
    o: Matrix
    ln2: torch.Tensor
    gate_up: Matrix  # (2 * I, D)
    down: Matrix


class StaticEngine:
    """Prefill and decode for one conversation at a time (batch 1) over a preallocated KV cache.

    engine = StaticEngine(decoder, max_len=2048)  # a transformers Llama-style model
    logits = engine.prefill(embeds)          # (1, L, D) -> (V,) at the last position
    logits = engine.decode(token)            # one token -> (V,)
    """

    def __init__(self, decoder, max_len: int = 2048, dtype: torch.dtype | None = None):
        cfg = decoder.config
        if cfg.model_type not in ("llama", "mistral", "qwen2") or getattr(cfg, "attention_bias", False):
            raise ValueError(f"StaticEngine handles bias-free Llama-style decoders, not {cfg.model_type}")
        self.config = cfg
        dtype = dtype or decoder.dtype
        self.dtype, self.device = dtype, decoder.device
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.eps = cfg.rms_norm_eps
        self.max_len = max_len
        m = decoder.model
        w = lambda t: t.detach().to(dtype).contiguous()  # noqa: E731
        self.layers = [_Layer(w(layer.input_layernorm.weight),
                              Matrix(w(torch.cat([layer.self_attn.q_proj.weight, layer.self_attn.k_proj.weight,
                                                  layer.self_attn.v_proj.weight]))),
                              Matrix(w(layer.self_attn.o_proj.weight)), w(layer.post_attention_layernorm.weight),
                              Matrix(w(torch.cat([layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight]))),
                              Matrix(w(layer.mlp.down_proj.weight))) for layer in m.layers]
        self.norm = w(m.norm.weight)
        self.embed = w(m.embed_tokens.weight)
        self.lm_head = Matrix(self.embed if cfg.tie_word_embeddings else w(decoder.lm_head.weight))
        self.layouts = self.pick_layouts() if self.device.type == "cpu" else {}
        # rotary tables for every position, from the model's own rotary module (its scaling rules included)
        pos = torch.arange(max_len, device=self.device)[None]
        cos, sin = m.rotary_emb(torch.zeros(1, device=self.device, dtype=torch.float32), pos)
        half = self.head_dim // 2
        sin = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)  # rotate_half's minus sign, folded in
        self.cos, self.sin = cos[0].to(dtype), sin[0].to(dtype)  # (max_len, head_dim)
        shape = (len(self.layers), 1, self.kv_heads, max_len, self.head_dim)
        self.k_cache = torch.zeros(shape, dtype=dtype, device=self.device)
        self.v_cache = torch.zeros(shape, dtype=dtype, device=self.device)
        self.length = 0

    def matrices(self) -> list[Matrix]:
        return [m for layer in self.layers for m in (layer.qkv, layer.o, layer.gate_up, layer.down)] + [self.lm_head]

    def pick_layouts(self) -> dict[tuple[int, int], str]:
        """Per weight shape, the faster layout for a one-row product, timed on this machine's weights."""
        chosen = {}
        for shape in {m.shape for m in self.matrices()}:
            same = [m for m in self.matrices() if m.shape == shape]
            sample = [m.weight for m in same]
            transposed = _time_row_product(sample, True) < _time_row_product(sample, False)
            for m in same:
                m.use_transposed(transposed)
            chosen[shape] = "(in, out)" if transposed else "(out, in)"
        return chosen

    def weight_bytes(self) -> int:
        """Bytes of weights read per decoded token (the embedding row lookup aside)."""
        norms = sum(t.numel() * t.element_size() for layer in self.layers for t in (layer.ln1, layer.ln2))
        return sum(m.nbytes() for m in self.matrices()) + norms

    def cache_bytes(self, length: int) -> int:
        return 2 * len(self.layers) * self.kv_heads * length * self.head_dim * self.k_cache.element_size()

    # -- the forward pass ---------------------------------------------------------------------
    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), weight, self.eps)

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotary embedding, rotate-half convention; sin carries the sign of the first half (see __init__)."""
        half = x.shape[-1] // 2
        return torch.addcmul(x * cos, torch.cat((x[..., half:], x[..., :half]), dim=-1), sin)

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(1, T, D) embeddings of the next T positions -> (1, T, D) final hidden states; the cache grows by T."""
        t = x.shape[1]
        start, end = self.length, self.length + t
        if end > self.max_len:
            raise ValueError(f"the conversation ({end} tokens) is longer than the engine's cache ({self.max_len})")
        cos, sin = self.cos[start:end][None, None], self.sin[start:end][None, None]
        h, kh, d = self.heads, self.kv_heads, self.head_dim
        for i, layer in enumerate(self.layers):
            qkv = layer.qkv(self._rms(x, layer.ln1))  # (1, T, (h + 2kh) d)
            qk, v = qkv.view(1, t, h + 2 * kh, d).transpose(1, 2).split([h + kh, kh], dim=1)
            q, k = self._rotate(qk, cos, sin).split([h, kh], dim=1)  # queries and keys rotated in one go
            self.k_cache[i, :, :, start:end] = k
            self.v_cache[i, :, :, start:end] = v
            out = attention.attend(q, self.k_cache[i, :, :, :end], self.v_cache[i, :, :, :end], causal=t > 1,
                                   q_offset=start)
            x = x + layer.o(out.transpose(1, 2).reshape(1, t, h * d))
            gate, up = layer.gate_up(self._rms(x, layer.ln2)).chunk(2, dim=-1)
            x = x + layer.down(F.silu(gate) * up)
        self.length = end
        return self._rms(x, self.norm)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)

    def reset(self) -> None:
        self.length = 0  # the cache is overwritten in place; no need to clear it

    def prefill(self, embeds: torch.Tensor) -> torch.Tensor:
        """(1, L, D) prompt embeddings (a fresh conversation) -> (V,) logits at the last position."""
        self.reset()
        hidden = self.forward(embeds.to(self.dtype))
        return self.logits(hidden[0, -1])

    def decode(self, token: int) -> torch.Tensor:
        """One token -> (V,) logits for the next."""
        return self.logits(self.forward(self.embed[token].view(1, 1, -1))[0, -1])
