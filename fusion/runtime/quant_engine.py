"""A Qwen2 decoder run straight from its GGUF file (fusion/gguf_decoder.py), every weight kept in its
quantized blocks.

    decoder = GGUFDecoder("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf")   # metadata + memory map, ~0.3 s
    engine = QuantEngine(decoder, max_len=4096, slots=4)             # StaticEngine's interface
    logits = engine.prefill(decoder.get_input_embeddings()(ids)[None])
    logits = engine.decode(token)

Nothing is converted: the matrices are views of the memory-mapped file and every product goes through
the C++ kernels of fusion/runtime/csrc/quant_matmul.cpp (int8 activations, integer dot products), one
call per fused group (q|k|v with their biases, gate|up), for one decode row and for a prefill's rows
alike. Token embeddings are dequantized a row at a time on lookup. The rest (RMSNorm, rotary, the
caches, attention, batching of conversations) is fusion/runtime/engine.py's.

GGUF keeps Qwen2's query and key rows in the rotate-half (NeoX) order the engine uses, so no
permutation is needed (llama.cpp's converter permutes Llama's, which this engine therefore does not take).
"""

from __future__ import annotations

import torch

from fusion.gguf_decoder import GGUFDecoder, _bytes
from fusion.runtime import cpu_ops
from fusion.runtime.engine import StaticEngine, _Layer
from fusion.weights.gguf_file import Tensor


class QuantMatrix:
    """One or more GGUF weights with the same input width, multiplied as their row-concatenation."""

    def __init__(self, parts: list[Tensor], bias: torch.Tensor | None = None):
        cols = {p.shape[1] for p in parts}
        if len(cols) != 1:
            raise ValueError(f"fused weights of different widths: {[p.name for p in parts]}")
        self.parts = parts
        self.raws = [_bytes(p) for p in parts]
        self.kinds = [p.kind for p in parts]
        self.rows = [p.shape[0] for p in parts]
        self.shape = (sum(self.rows), cols.pop())
        self.bias = bias

    def __call__(self, ops, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        return ops.quant_matmul(x, self.raws, self.kinds, self.rows, self.bias, residual)

    def nbytes(self) -> int:
        return sum(r.numel() for r in self.raws)


def rotary_tables(head_dim: int, max_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (max_len, head_dim) for rotate-half rotary embeddings with base `theta`."""
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.arange(max_len, dtype=torch.float64)[:, None] * inv[None]
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().float(), angles.sin().float()


class QuantEngine(StaticEngine):
    """StaticEngine over a GGUFDecoder: the same caches, prefix reuse, batching and attention; every
    matrix product through the quantized kernels. decode_weights is "gguf"."""

    def __init__(self, decoder: GGUFDecoder, max_len: int = 2048, slots: int = 1):
        cfg = decoder.config
        self._shape(cfg, torch.float32, torch.device("cpu"), max_len)
        self.ops = cpu_ops.load()
        t = decoder.file.tensors
        f32 = lambda name: torch.from_numpy(t[name].data.view("<f4")).reshape(t[name].shape)  # noqa: E731

        def layer(i: int) -> _Layer:
            b = f"blk.{i}."
            bias = None
            if f"{b}attn_q.bias" in t:
                bias = torch.cat([f32(f"{b}attn_{x}.bias") for x in "qkv"])
            return _Layer(f32(f"{b}attn_norm.weight"), QuantMatrix([t[f"{b}attn_{x}.weight"] for x in "qkv"], bias),
                          QuantMatrix([t[f"{b}attn_output.weight"]]), f32(f"{b}ffn_norm.weight"),
                          QuantMatrix([t[f"{b}ffn_gate.weight"], t[f"{b}ffn_up.weight"]]),
                          QuantMatrix([t[f"{b}ffn_down.weight"]]))

        self.layers = [layer(i) for i in range(cfg.num_hidden_layers)]
        self.norm = f32("output_norm.weight")
        self.embedding = decoder.get_input_embeddings()
        self.lm_head = QuantMatrix([t["token_embd.weight" if cfg.tie_word_embeddings else "output.weight"]])
        self.layouts = {}
        self.decode_weights = "gguf"
        self._allocate(*rotary_tables(self.head_dim, max_len, cfg.rope_theta), slots, cfg.hidden_size)

    def embed_rows(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids)

    def _products(self, half: bool = True):
        ops = self.ops
        return (lambda x, w: ops.rms_norm(x, w, self.eps), ops.silu_mul,
                lambda m, x, residual=None: m(ops, x, residual))
