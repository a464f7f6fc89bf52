"""A decoder's weights and shape from a GGUF file, in its quantized blocks: what OmniModel holds as its
decoder for a GGUF preset (the input embeddings, config, device, dtype). Its forward passes run in
fusion/runtime/quant_engine.py's QuantEngine.

    decoder = GGUFDecoder("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf")   # metadata + memory map, ~0.3 s
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fusion.runtime import cpu_ops
from fusion.weights.gguf_file import GGUFFile, Tensor

ARCHITECTURES = ("qwen2",)


@dataclass(frozen=True)
class DecoderConfig:
    """What the assistant and the engine read of a decoder's shape (transformers' names)."""
    model_type: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    vocab_size: int
    max_position_embeddings: int
    eos_token_id: int | None
    tie_word_embeddings: bool


def _bytes(t: Tensor) -> torch.Tensor:
    return torch.from_numpy(t.data)  # a view of the copy-on-write map: never written


class QuantEmbedding(nn.Module):
    """The token embedding table in its GGUF blocks: rows dequantized on lookup (nn.Embedding's call)."""

    def __init__(self, t: Tensor):
        super().__init__()
        self.tensor = t
        self.raw = _bytes(t)
        self.num_embeddings, self.embedding_dim = t.shape

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ops = cpu_ops.load()
        flat = ids.reshape(-1).to(torch.long)
        rows = ops.dequantize_rows(self.raw, self.tensor.kind, self.num_embeddings, self.embedding_dim, flat)
        return rows.reshape(*ids.shape, self.embedding_dim)


class GGUFDecoder(nn.Module):
    """A decoder's weights and shape from a GGUF file, for OmniModel (the input embeddings, config,
    device, dtype); its forward passes run in QuantEngine."""

    def __init__(self, path: str | Path):
        super().__init__()
        if cpu_ops.load() is None:
            raise RuntimeError(f"a GGUF decoder needs the C++ ops (fusion/runtime/cpu_ops.py): "
                               f"{cpu_ops.unavailable_reason() or 'their build failed (see the log)'}")
        self.file = GGUFFile(path)
        arch = self.file.get("general.architecture")
        if arch not in ARCHITECTURES:
            raise ValueError(f"{path}: architecture {arch!r}; the quantized engine runs {', '.join(ARCHITECTURES)}")
        g = lambda key: self.file.get(f"{arch}.{key}")  # noqa: E731
        t = self.file.tensors
        hidden, heads = int(g("embedding_length")), int(g("attention.head_count"))
        self.config = DecoderConfig(
            arch, hidden, int(g("feed_forward_length")), int(g("block_count")), heads,
            int(g("attention.head_count_kv")), hidden // heads, float(g("attention.layer_norm_rms_epsilon")),
            float(g("rope.freq_base") or 10000.0), t["token_embd.weight"].shape[0], int(g("context_length")),
            self.file.get("tokenizer.ggml.eos_token_id"), "output.weight" not in t)
        self.embed_tokens = QuantEmbedding(t["token_embd.weight"])

    def get_input_embeddings(self) -> QuantEmbedding:
        return self.embed_tokens

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def forward(self, *args, **kwargs):
        raise NotImplementedError("a GGUF decoder runs only through fusion.runtime.quant_engine.QuantEngine")
