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
- or, given a one-row float16 product (`rows`: the caller's kernel, e.g. the decode engine's C++ one,
  fusion/runtime/cpu_ops.py, packed from the float32 weights, replacing the layers' bfloat16 copies; the
  token table's bfloat16 copy is kept too, for its lookups: +53 MB), every product of a step goes
  through it: 20.9-23.8 ms a token instead of 27.8 on this 2-core CPU, 8.7-9.3 instead of 12.7 in a
  faster hour (medians over bench listen's 5 questions x 3 rounds), the same text on all 15.
Whisper's own arithmetic otherwise (pre-norm layers, GELU MLP, logits from the token table); on 40
held-out clips the bfloat16 loop's tokens equal float32's on 39 (one capital letter differs), and the
test checks the loop the Assistant runs against transformers' generate() on real clips.
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


Rows = tuple[Callable, Callable]  # (pack, product): see WhisperGreedy
STEP_MATRICES = ("qkv", "sa_out", "ca_q", "ca_out", "fc1", "fc2")  # a layer's products of one step


class _Layer(nn.Module):
    """One decoder layer's weights as buffers (so `.to(device)` moves them; with `rows`, the packed copies of
    the step's matrices are the kernel's and stay on the CPU), fused where a step reads them together."""

    def __init__(self, layer: nn.Module, heads: int, dtype: torch.dtype, rows: Rows | None = None):
        super().__init__()
        dtype = torch.float32 if rows is not None else dtype  # the kernel packs from float32
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
        self._product, self._packed = None, {}
        if rows is not None:  # packed, and the buffers of these matrices dropped
            pack, self._product = rows
            for name in STEP_MATRICES:
                w = buffers.pop(name + "_w")
                self._packed[name] = (pack(w.float()), w.shape[0])
        for name, value in buffers.items():
            self.register_buffer(name, value.contiguous(), persistent=False)
        self.eps = layer.final_layer_norm.eps
        self.act = layer.activation_fn

    def linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        if self._product is not None:
            return self._product(x.contiguous(), *self._packed[name]) + getattr(self, name + "_b")
        w = getattr(self, name + "_w")
        return F.linear(x.to(w.dtype), w).float() + getattr(self, name + "_b")

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


class WhisperGreedy(nn.Module):
    """Greedy tokens for one window of encoder frames, with Whisper's suppression rules applied.

    Built from transformers' WhisperDecoder (embed_tokens, embed_positions, layers, layer_norm), whose
    weights it copies: the float32 decoder can be dropped afterwards. `rows` = (pack, product): a step's
    products, the token table's included, through a one-row float16 kernel for the CPU (the module's
    docstring): pack(w (out, in) float32) -> packed; product(x (n, in) float32, packed, out) -> (n, out)
    float32. Such a loop stays on the CPU (`to` refuses another device)."""

    def __init__(self, decoder: nn.Module, heads: int, dtype: torch.dtype = torch.bfloat16, rows: Rows | None = None):
        super().__init__()
        with torch.no_grad():
            self.layers = nn.ModuleList(_Layer(layer, heads, dtype, rows) for layer in decoder.layers)
            table = decoder.embed_tokens.weight.detach()
            self._table_rows = None if rows is None else (rows[1], rows[0](table.float()), table.shape[0])
            self.register_buffer("table", table.to(dtype), persistent=False)  # kept with rows too, for lookups
            self.register_buffer("positions", decoder.embed_positions.weight.detach().float(), persistent=False)
            self.register_buffer("norm_w", decoder.layer_norm.weight.detach().float(), persistent=False)
            self.register_buffer("norm_b", decoder.layer_norm.bias.detach().float(), persistent=False)
        self.eps = decoder.layer_norm.eps
        self.heads = heads
        self.context = self.positions.shape[0]  # 448

    def _apply(self, fn, recurse=True):
        """`.to()` and the like: refused off the CPU once the kernel holds the packed copies."""
        if self._table_rows is not None and fn(torch.zeros(1)).device.type != "cpu":
            raise ValueError("this Whisper decoder steps through a CPU kernel (rows): build it without rows for a GPU")
        return super()._apply(fn, recurse)

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
