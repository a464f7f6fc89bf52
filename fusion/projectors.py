"""The bridges from encoder features into the decoder's embedding space.

Shape letters: Ta encoder frames, Da audio width, k frames stacked, N patches on an h x w grid,
Dv vision width, m merge factor, H hidden width, D decoder width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fusion.readout_lm import TokenTrigram, beam_search
from fusion.runtime import cpu_ops

BEAM_CLASSES = 16  # the beam search extends each frame's 16 best classes (32 read the same held-out clips)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # upcast locally: the mean of squares loses precision in half types
        y = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)


@dataclass
class AudioProjectorConfig:
    in_dim: int  # Da
    out_dim: int  # D
    stack: int = 8  # Whisper's 50 frames/s -> 6.25 tokens/s (Ultravox)
    hidden: int = 2048  # H, before SwiGLU halves it


class AudioProjector(nn.Module):
    """Ultravox's projector: stack k frames -> RMSNorm -> Linear -> SwiGLU -> Linear -> RMSNorm."""

    def __init__(self, config: AudioProjectorConfig):
        super().__init__()
        self.config = c = config
        self.ln_pre = RMSNorm(c.in_dim * c.stack)
        self.linear_1 = nn.Linear(c.in_dim * c.stack, c.hidden, bias=False)
        self.linear_2 = nn.Linear(c.hidden // 2, c.out_dim, bias=False)
        self.ln_post = RMSNorm(c.out_dim)

    def num_tokens(self, frames: int) -> int:
        return math.ceil(frames / self.config.stack)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(Ta, Da) -> (ceil(Ta/k), D); the last group is zero-padded."""
        k = self.config.stack
        x = F.pad(x, (0, 0, 0, -x.shape[0] % k))
        x = x.reshape(-1, k * x.shape[1])  # Ta/k, k*Da
        x = self.linear_1(self.ln_pre(x))  # Ta/k, H
        gate, value = x.chunk(2, dim=-1)
        x = self.linear_2(F.silu(gate) * value)  # Ta/k, H/2 -> Ta/k, D
        return self.ln_post(x)


@dataclass
class VisionProjectorConfig:
    in_dim: int  # Dv
    out_dim: int  # D
    merge: int = 1  # m: 2 merges 2x2 neighbours (Qwen2-VL), a quarter of the tokens
    hidden: int = 2048
    queries: int = 0  # K > 0: a resampler, K learned queries read the whole image (MiniCPM-V, Perceiver)
    heads: int = 8


class VisionProjector(nn.Module):
    """LLaVA's projector, with an optional m x m patch merge first: Linear -> GELU -> Linear per token.

    With `queries` K > 0 it is a one-layer resampler instead: K learned queries cross-attend over all
    the (merged) patches, and the MLP maps each query's reading to one decoder token. Every output
    token then sees the whole image, so token k can learn to carry the k-th word of what is seen."""

    def __init__(self, config: VisionProjectorConfig):
        super().__init__()
        self.config = c = config
        width = c.in_dim * c.merge * c.merge
        if c.queries:
            self.ln_kv = nn.LayerNorm(width)
            self.k_proj = nn.Linear(width, c.hidden)
            self.v_proj = nn.Linear(width, c.hidden)
            self.queries = nn.Parameter(torch.randn(c.queries, c.hidden) * c.hidden ** -0.5)
            width = c.hidden
        self.linear_1 = nn.Linear(width, c.hidden)
        self.linear_2 = nn.Linear(c.hidden, c.out_dim)

    def num_tokens(self, grid: tuple[int, int]) -> int:
        if self.config.queries:
            return self.config.queries
        m = self.config.merge
        return math.ceil(grid[0] / m) * math.ceil(grid[1] / m)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(N, Dv) on an h x w grid -> (num_tokens(grid), D)."""
        m = self.config.merge
        if m > 1:
            h, w = grid
            x = x.reshape(h, w, -1)
            x = F.pad(x, (0, 0, 0, -w % m, 0, -h % m))  # pad the grid to multiples of m
            hh, ww = x.shape[0] // m, x.shape[1] // m
            x = x.reshape(hh, m, ww, m, -1).permute(0, 2, 1, 3, 4).reshape(hh * ww, -1)  # N/m^2, m*m*Dv
        if self.config.queries:
            kv = self.ln_kv(x)
            heads = self.config.heads
            split = lambda t: t.reshape(t.shape[0], heads, -1).transpose(0, 1)  # noqa: E731  heads, n, H/heads
            read = F.scaled_dot_product_attention(split(self.queries), split(self.k_proj(kv)), split(self.v_proj(kv)))
            x = read.transpose(0, 1).reshape(self.config.queries, -1)  # K, H
        return self.linear_2(F.gelu(self.linear_1(x)))


def embedding_device(embeddings) -> torch.device:
    weight = getattr(embeddings, "weight", None)
    return weight.device if isinstance(weight, torch.Tensor) else torch.device("cpu")


def embedding_rms(embeddings, sample: int = 8192) -> float:
    """Median RMS of the decoder's token embeddings (of every row, or of `sample` spread over a table
    that is kept quantized and has no float weight)."""
    weight = getattr(embeddings, "weight", None)
    if isinstance(weight, torch.Tensor):
        rows = weight
    else:
        n = embeddings.num_embeddings
        rows = embeddings(torch.arange(0, n, max(1, n // sample)))
    return float(rows.float().pow(2).mean(-1).sqrt().median())


class TextReadout(nn.Module):
    """What the encoders know about a photo, read out in the decoder's own words.

    An image becomes the decoder's input embeddings of fusion/photo_text.py's sentences about it: the
    tower's top classes with their probabilities, where the main object is and its colours, the
    background's, the people and hands found. Nothing is learned: the text is tokenized and looked up
    in the decoder's embedding matrix, so the tokens are in the decoder's input space by construction.
    Measured on the held-out photos, a phrase of this kind beats a learned MLP or resampler on the
    patch features (which did not learn the class-to-word mapping on the photos there are offline; see
    the model card)."""

    def __init__(self, tokenize: Callable[[str], list[int]], embeddings: nn.Embedding):
        super().__init__()
        self._tokenize = tokenize
        self._embeddings = [embeddings]  # borrowed from the decoder: a list keeps it from being registered
        # as a submodule, so it is neither saved with the projectors nor counted twice

    def forward(self, text: str) -> torch.Tensor:
        """Text -> (n, D), n its token count."""
        embeddings = self._embeddings[0]  # an nn.Embedding, or a GGUF decoder's quantized table
        return embeddings(torch.tensor(self._tokenize(text), device=embedding_device(embeddings)))


class CTCReadout(nn.Module):
    """Reads the audio projector's tokens out as the decoder's own words (CTC over its embedding table).

    Each projected token is scored against the decoder's input embeddings of a fixed vocabulary (cosine
    times a learned scale) and against a learned blank. Trained with CTC on transcripts, decoding (greedy:
    repeats merged, blanks dropped; or the beam search with the token trigram fitted on the training text,
    `lm`, when the weights bring one) gives token ids, and the decoder reads exactly its own embedding rows
    of them: a few tokens per word instead of 6.25 continuous tokens per second that it has never seen.
    The vocabulary is the set of token ids the training transcripts use (a buffer, saved with the weights);
    the embedding table is borrowed from the decoder, not saved. OmniModel.audio_tokens looks the ids up."""

    def __init__(self, vocab: torch.Tensor, embeddings: nn.Embedding):
        super().__init__()
        self.register_buffer("vocab", vocab.to(torch.int64))  # V token ids; class c > 0 is vocab[c - 1]
        self.blank = nn.Parameter(torch.zeros(embeddings.embedding_dim))
        self.log_scale = nn.Parameter(torch.tensor(math.log(5.0)))
        self._embeddings = [embeddings]  # borrowed (see TextReadout)
        self.lm: TokenTrigram | None = None  # fitted on the training text, saved beside the weights

    def rows(self) -> torch.Tensor:
        """(V, D) the decoder's embeddings of the vocabulary (a quantized table, a GGUF decoder's,
        dequantizes these rows)."""
        embeddings = self._embeddings[0]
        if isinstance(getattr(embeddings, "weight", None), torch.Tensor):
            return embeddings.weight[self.vocab]
        with torch.no_grad():
            return embeddings(self.vocab.cpu())

    def _unit_rows(self) -> torch.Tensor:
        """rows() normalised, without grad (the decoder's table is frozen), the one copy kept while the
        vocabulary, the table, the device and the dtype stay: a Qwen vocabulary of 28,074 rows is 172 MB to
        gather (or dequantize) and normalise, which would otherwise be done for every clip."""
        key = self._unit_key_now()
        if getattr(self, "_unit_key", None) != key:
            self._unit = None  # the old copy goes before the new one is made
            with torch.no_grad():
                self._unit = F.normalize(self.rows().to(self.blank.device, self.blank.dtype), dim=-1)
            self._unit_key = key
        return self._unit

    def _unit_key_now(self) -> tuple:
        """What the normalised rows depend on: the vocabulary, the table, the device and the dtype."""
        weight = getattr(self._embeddings[0], "weight", None)
        return self.vocab.shape[0], id(weight), getattr(weight, "_version", None), self.blank.device, self.blank.dtype

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(n, D) projected tokens -> (n, 1 + V) class logits, class 0 the blank."""
        x = F.normalize(x, dim=-1)
        blank = x @ F.normalize(self.blank, dim=0)[:, None]
        return self.log_scale.exp() * torch.cat([blank, self._cosines(x)], dim=-1)

    def _cosines(self, x: torch.Tensor) -> torch.Tensor:
        """(n, D) unit rows -> (n, V) cosines with the vocabulary. Reading (no grad, float32 on a CPU with the
        C++ ops) goes through float16 copies of the unit rows and the decode engine's product: 42-47 ms instead
        of 113 for a 5 s clip over Qwen's 28,074 rows, and half the memory; training through float32."""
        ops = cpu_ops.load() if x.device.type == "cpu" and x.dtype == torch.float32 else None
        if ops is None or torch.is_grad_enabled():
            return x @ self._unit_rows().T
        key = self._unit_key_now()
        if getattr(self, "_packed_key", None) != key:
            self._packed = None
            self._packed = ops.pack_half(self._unit_rows())
            self._packed_key = key
            self._unit, self._unit_key = None, None  # reading keeps only the float16 copy
        return ops.gemv_half(x.contiguous(), self._packed, self.vocab.shape[0], None)

    def token_ids(self, x: torch.Tensor) -> list[int]:
        """(n, D) -> the decoder token ids read (possibly none): the beam search with the readout's language
        model when it has one (fusion/readout_lm.py), else greedy CTC."""
        if self.lm is not None:
            logp = self.logits(x).float().log_softmax(-1)
            top = logp[:, 1:].topk(min(BEAM_CLASSES, logp.shape[1] - 1), dim=-1)
            return beam_search(logp[:, 0], top.values, self.vocab[top.indices], self.lm)
        best = self.logits(x).argmax(-1)
        keep = (best != 0) & torch.cat([best.new_ones(1, dtype=torch.bool), best[1:] != best[:-1]])
        return self.vocab[best[keep] - 1].tolist()
