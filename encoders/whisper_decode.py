"""Whisper's text decoder as a greedy loop of plain tensor ops: the cascade's transcription speed.

transformers' `WhisperForConditionalGeneration.forward` costs ~40 ms a token on this 2-core CPU. Here,
per window:
- the cross-attention keys and values of every layer are computed once from the encoder frames;
- self-attention writes into a preallocated cache (448 rows, Whisper's context);
- q, k and v of each self-attention are one fused matrix (Whisper's k has no bias: a zero one is
  stacked in), the attention scale folded into q;
- the matrices a step reads (the layers' and the tied 51,865-row token table: ~95 MB a token) are kept
  in bfloat16, the residual stream, biases, norms and attention in float32. A step is bound by the bytes
  it reads, so this halves it (README: ms per token);
- or, given a one-row float16 product (`use_rows`: the caller's kernel, e.g. the decode engine's C++
  one, fusion/runtime/cpu_ops.py, whose packed copies replace the layers' bfloat16 ones; the token table
  is kept too, for its lookups: +53 MB), every product of a step goes through it: 15-21 ms a token
  instead of 24-27 on this 2-core CPU, the same text on bench listen's 5 questions.
Whisper's own arithmetic otherwise (pre-norm layers, GELU MLP, logits from the token table); on 40
held-out clips the tokens equal float32's on 39 (one capital letter differs), and the test checks them
against transformers' generate() on real clips.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from encoders.errors import Stop, check


def _weight(linear: nn.Linear, dtype: torch.dtype, scale: float = 1.0) -> torch.Tensor:
    return (linear.weight.detach().float() * scale).to(dtype)


def _bias(linear: nn.Linear, scale: float = 1.0) -> torch.Tensor:
    if linear.bias is None:
        return torch.zeros(linear.out_features)
    return linear.bias.detach().float() * scale


class _Layer(nn.Module):
    """One decoder layer's weights as buffers (so `.to(device)` moves them), fused where a step reads them together."""

    def __init__(self, layer: nn.Module, heads: int, dtype: torch.dtype):
        super().__init__()
        sa, ca = layer.self_attn, layer.encoder_attn
        self.heads = heads
        buffers = {
            "qkv_w": torch.cat([_weight(sa.q_proj, dtype, sa.scaling), _weight(sa.k_proj, dtype), _weight(sa.v_proj, dtype)]),
            "qkv_b": torch.cat([_bias(sa.q_proj, sa.scaling), _bias(sa.k_proj), _bias(sa.v_proj)]),
            "sa_out_w": _weight(sa.out_proj, dtype), "sa_out_b": _bias(sa.out_proj),
            "ca_q_w": _weight(ca.q_proj, dtype, ca.scaling), "ca_q_b": _bias(ca.q_proj, ca.scaling),
            # float32: read once per window over every frame, where arithmetic, not bytes, is the cost
            "ca_kv_w": torch.cat([_weight(ca.k_proj, torch.float32), _weight(ca.v_proj, torch.float32)]),
            "ca_kv_b": torch.cat([_bias(ca.k_proj), _bias(ca.v_proj)]),
            "ca_out_w": _weight(ca.out_proj, dtype), "ca_out_b": _bias(ca.out_proj),
            "fc1_w": _weight(layer.fc1, dtype), "fc1_b": _bias(layer.fc1),
            "fc2_w": _weight(layer.fc2, dtype), "fc2_b": _bias(layer.fc2),
        }
        for i, norm in enumerate((layer.self_attn_layer_norm, layer.encoder_attn_layer_norm, layer.final_layer_norm)):
            buffers[f"norm{i}_w"], buffers[f"norm{i}_b"] = norm.weight.detach().float(), norm.bias.detach().float()
        for name, value in buffers.items():
            self.register_buffer(name, value.contiguous(), persistent=False)
        self.eps = layer.final_layer_norm.eps
        self.act = layer.activation_fn

    def linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        rows = getattr(self, "_rows", None)
        if rows is not None:
            return rows[0](x.contiguous(), *self._packed[name]) + getattr(self, name + "_b")
        w = getattr(self, name + "_w")
        return F.linear(x.to(w.dtype), w).float() + getattr(self, name + "_b")

    def use_rows(self, pack: Callable, product: Callable) -> None:
        """Every product of a step (not the cross keys and values, which take every frame) through
        product(x (n, in) float32, pack(w), out) -> (n, out); the bfloat16 copies go."""
        self._packed = {}
        for name in STEP_MATRICES:
            w = getattr(self, name + "_w")
            self._packed[name] = (pack(w.float()), w.shape[0])
            delattr(self, name + "_w")
        self._rows = (product,)

    def norm(self, x: torch.Tensor, i: int) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], getattr(self, f"norm{i}_w"), getattr(self, f"norm{i}_b"), self.eps)

    def cross(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Ta, Da) float32 encoder frames -> this layer's cross-attention keys and values, (1, H, Ta, hd) each."""
        ta, width = frames.shape
        kv = F.linear(frames, self.ca_kv_w, self.ca_kv_b).view(ta, 2, self.heads, width // self.heads)
        return kv[:, 0].transpose(0, 1)[None], kv[:, 1].transpose(0, 1)[None]

    def step(self, x: torch.Tensor, cross: tuple, cache: torch.Tensor, pos: int) -> torch.Tensor:
        """x (n, D) new rows at positions pos.. -> (n, D); writes their keys and values into cache (2, 1, H, ctx, hd)."""
        n, width = x.shape
        heads, hd = self.heads, width // self.heads
        q, k, v = self.linear(self.norm(x, 0), "qkv").view(n, 3, heads, hd).permute(1, 2, 0, 3).unbind(0)
        cache[0, 0, :, pos: pos + n] = k
        cache[1, 0, :, pos: pos + n] = v
        mask = None
        if n > 1:  # the prompt: causal among its own rows, all of the past visible
            mask = torch.ones(n, pos + n, dtype=torch.bool, device=x.device).tril(pos)
        a = F.scaled_dot_product_attention(q[None], cache[0, :, :, : pos + n], cache[1, :, :, : pos + n],
                                           attn_mask=mask, scale=1.0)
        x = x + self.linear(a[0].transpose(0, 1).reshape(n, width), "sa_out")
        q = self.linear(self.norm(x, 1), "ca_q").view(n, heads, hd).transpose(0, 1)[None]
        a = F.scaled_dot_product_attention(q, *cross, scale=1.0)
        x = x + self.linear(a[0].transpose(0, 1).reshape(n, width), "ca_out")
        return x + self.linear(self.act(self.linear(self.norm(x, 2), "fc1")), "fc2")


STEP_MATRICES = ("qkv", "sa_out", "ca_q", "ca_out", "fc1", "fc2")  # a layer's products of one step


class WhisperGreedy(nn.Module):
    """Greedy tokens for one window of encoder frames, with Whisper's suppression rules applied.

    Built from transformers' WhisperDecoder (embed_tokens, embed_positions, layers, layer_norm), whose
    weights it copies: the float32 decoder can be dropped afterwards."""

    def __init__(self, decoder: nn.Module, heads: int, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        with torch.no_grad():
            self.layers = nn.ModuleList(_Layer(layer, heads, dtype) for layer in decoder.layers)
            self.register_buffer("table", decoder.embed_tokens.weight.detach().to(dtype), persistent=False)
            self.register_buffer("positions", decoder.embed_positions.weight.detach().float(), persistent=False)
            self.register_buffer("norm_w", decoder.layer_norm.weight.detach().float(), persistent=False)
            self.register_buffer("norm_b", decoder.layer_norm.bias.detach().float(), persistent=False)
        self.eps = decoder.layer_norm.eps
        self.heads = heads
        self.context = self.positions.shape[0]  # 448
        self._table_rows: tuple | None = None  # (product, packed table, rows) after use_rows

    def use_rows(self, pack: Callable, product: Callable) -> None:
        """A step's products, the token table's included, through a one-row float16 kernel (see the module's
        docstring): pack(w (out, in) float32) -> packed; product(x (n, in) float32, packed, out) -> (n, out)
        float32. For the CPU: the packed copies stay where they are made."""
        for layer in self.layers:
            layer.use_rows(pack, product)
        self._table_rows = (product, pack(self.table.float()), self.table.shape[0])  # the table stays for lookups

    @torch.inference_mode()
    def forward(self, frames: torch.Tensor, prompt: list[int], eot: int, suppress: torch.Tensor,
                suppress_begin: torch.Tensor, max_tokens: int, stop: Stop | None = None) -> list[int]:
        """frames (Ta, Da) of one window -> the tokens after the prompt, up to end-of-text or max_tokens.
        `stop`: asked before each token (encoders.errors.Interrupted)."""
        frames = frames.float()
        crosses = [layer.cross(frames) for layer in self.layers]
        hd = frames.shape[1] // self.heads
        cache = torch.zeros(len(self.layers), 2, 1, self.heads, self.context, hd, device=frames.device)
        ids, out, pos = list(prompt), [], 0
        for step in range(min(max_tokens, self.context - len(prompt))):
            check(stop)
            x = self.table[ids].float() + self.positions[pos: pos + len(ids)]
            for i, layer in enumerate(self.layers):
                x = layer.step(x, crosses[i], cache[i], pos)
            pos += len(ids)
            last = F.layer_norm(x[-1:], x.shape[-1:], self.norm_w, self.norm_b, self.eps)
            logits = self.logits(last)
            logits[suppress] = -float("inf")
            if step == 0:
                logits[suppress_begin] = -float("inf")
            token = int(logits.argmax())
            if token == eot:
                break
            out.append(token)
            ids = [token]
        return out

    def logits(self, last: torch.Tensor) -> torch.Tensor:
        """(1, D) -> (V,) float32 logits over the tied token table."""
        if self._table_rows is None:
            return F.linear(last.to(self.table.dtype), self.table).float()[0]
        product, packed, rows = self._table_rows
        return product(last.contiguous(), packed, rows)[0]
