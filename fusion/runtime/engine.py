"""A lean decode path for Llama-family decoders: the weights of a transformers model, repacked, run
over a static KV cache.

Why: transformers' forward per token spends most of its time outside the matmuls on a small model
(module calls, dynamic cache growth, mask building). Here, per decoder layer and token there are
three matmuls (fused QKV, output, fused gate+up, down) and a handful of elementwise ops; the KV
cache is allocated once for `max_len` positions and written in place; rotary tables are computed
once. The attention itself goes through `fusion.runtime.attention` (SDPA here, Triton kernels on CUDA).
On a CPU, one-token steps use float16 copies of the weights and the C++ ops of `fusion.runtime.cpu_ops`
(half the bytes per token; decoding one token is a pass over all the weights, so bytes are time).

Equivalence is tested: with float32 weights greedy tokens identical to transformers' `generate()` and
logits within float32 rounding; with float16 decode weights logits within ~0.03 on the default model
and greedy text identical on the tested prompts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from encoders.errors import Stop
from fusion.runtime import attention, cpu_ops

# prefills of up to this many new rows use the float16 weights and the C++ product (with the ops
# loaded): 2.5x float32 BLAS at 8 rows, 1.4x at 43, 1.08x at 100, slower from ~200 (measured on this
# 2-core CPU, 30 layers' weights streamed); longer ones use float32 BLAS
PREFILL_HALF_ROWS = 128


class Matrix:
    """A weight stored in whichever layout multiplies a single row fastest on this machine.

    On the CPU, a (1, in) row times a weight is memory-bound, and BLAS streams an (in, out) copy
    up to 1.7x faster than the (out, in) layout transformers stores when `in` is short (576),
    slower when it is long: measured once per shape at load time (`pick_layouts`)."""

    def __init__(self, weight: torch.Tensor):
        self.weight = weight  # (out, in)
        self.transposed: torch.Tensor | None = None
        self.packed: torch.Tensor | None = None  # float16 copy for the C++ one-row product (fusion.runtime.cpu_ops)

    def use_transposed(self, yes: bool) -> None:
        self.transposed = self.weight.t().contiguous() if yes else None
        if yes:
            self.weight = None

    def half(self, ops, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """(B, in) float32 times the float16 copy, with the C++ kernel (+ residual, (B, out))."""
        return ops.gemv_half(x, self.packed, self.shape[0], residual)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.transposed if self.transposed is not None else F.linear(x, self.weight)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.weight.shape) if self.weight is not None else tuple(self.transposed.shape[::-1])

    def nbytes(self) -> int:
        """Bytes read by one decode product: the float16 copy when there is one, else the float32 weight."""
        t = self.packed if self.packed is not None else self.weight if self.weight is not None else self.transposed
        return t.numel() * t.element_size()


def _time_row_product(weights: list[torch.Tensor], transposed: bool, repeats: int = 3) -> float:
    mats = [w.t().contiguous() if transposed else w for w in weights]
    x = torch.randn(1, weights[0].shape[1], dtype=weights[0].dtype, device=weights[0].device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for m in mats:
            x @ m if transposed else F.linear(x, m)
        best = min(best, time.perf_counter() - start)
    return best


def _zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Zeros whose memory is taken only as it is written, on a CPU: NumPy's zeros come from calloc, whose
    large blocks are the OS's untouched zero pages (torch.zeros writes every byte: the 1.5B's 4 x 2048-
    token cache would be 470 MB resident before the first token)."""
    if device.type == "cpu" and dtype == torch.float32:
        return torch.from_numpy(np.zeros(shape, dtype=np.float32))
    return torch.zeros(shape, dtype=dtype, device=device)


@dataclass
class _Layer:
    ln1: torch.Tensor
    qkv: Matrix  # (q+k+v out, D): one matmul for the three projections
    o: Matrix
    ln2: torch.Tensor
    gate_up: Matrix  # (2 * I, D)
    down: Matrix


class StaticEngine:
    """Prefill and decode over a preallocated KV cache with `slots` conversations side by side.

    engine = StaticEngine(decoder, max_len=2048)  # a transformers Llama-style model
    logits = engine.prefill(embeds)          # (1, L, D) -> (V,) at the last position
    logits = engine.decode(token)            # one token -> (V,)
    engine.prefill(embeds_b, slot=1)         # with slots=2: a second conversation
    logits = engine.decode_batch([t0, t1], slots=[0, 1])   # (2, V): one weight pass for both

    decode_weights: "fp32" multiplies by the model's own weights (BLAS; greedy identical to generate()),
    "fp16" decodes with float16 copies through the C++ kernel (float32 accumulation; logits within
    ~1e-2 of float32, see tests/test_engine.py) at half the bytes per token; prefills of up to
    PREFILL_HALF_ROWS new rows go through the same kernel, longer ones through float32 BLAS.
    "auto": fp16 on a CPU where fusion.runtime.cpu_ops builds, else fp32.
    """

    def __init__(self, decoder, max_len: int = 2048, dtype: torch.dtype | None = None, decode_weights: str = "auto",
                 slots: int = 1):
        cfg = decoder.config
        if cfg.model_type not in ("llama", "mistral", "qwen2") or getattr(cfg, "attention_bias", False):
            raise ValueError(f"StaticEngine handles bias-free Llama-style decoders, not {cfg.model_type}")
        dtype = dtype or decoder.dtype
        self._shape(cfg, dtype, decoder.device, max_len)
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
        self.ops = self._half_ops(decode_weights, dtype)
        if self.ops is not None:
            for mat in self.matrices():
                mat.packed = self.ops.pack_half(mat.weight)
            self.layouts = {}  # float32 products serve long prefills only, where BLAS is compute-bound either way
        else:
            self.layouts = self.pick_layouts() if self.device.type == "cpu" else {}
        self.decode_weights = "fp16" if self.ops is not None else "fp32"
        # rotary tables for every position, from the model's own rotary module (its scaling rules included)
        pos = torch.arange(max_len, device=self.device)[None]
        cos, sin = m.rotary_emb(torch.zeros(1, device=self.device, dtype=torch.float32), pos)
        self._allocate(cos[0], sin[0], slots, cfg.hidden_size)

    def _shape(self, cfg, dtype: torch.dtype, device: torch.device, max_len: int) -> None:
        """The decoder's shapes (a transformers config, or a GGUF file's DecoderConfig) and the cache's."""
        self.config = cfg
        self.dtype, self.device = dtype, device
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.eps = cfg.rms_norm_eps
        self.max_len = max_len

    def _allocate(self, cos: torch.Tensor, sin: torch.Tensor, slots: int, hidden: int) -> None:
        """The rotary tables ((max_len, head_dim) each) and the caches: self.max_len, heads, kv_heads,
        head_dim, dtype and device set."""
        half = self.head_dim // 2
        sin = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)  # rotate_half's minus sign, folded in
        self.cos, self.sin = cos.to(self.dtype), sin.to(self.dtype)  # (max_len, head_dim)
        self.slots = slots
        shape = (len(self.layers), slots, self.kv_heads, self.max_len, self.head_dim)
        self.k_cache = _zeros(shape, self.dtype, self.device)
        self.v_cache = _zeros(shape, self.dtype, self.device)
        self.lengths = [0] * slots  # valid cache entries per slot (conversation)
        # the input embeddings behind each slot's cache entries: a new prompt that starts with the same
        # rows (the system prompt; a conversation's earlier turns) reuses their keys and values
        self.fed = _zeros((slots, self.max_len, hidden), self.dtype, self.device)

    @property
    def length(self) -> int:
        return self.lengths[0]

    def _half_ops(self, decode_weights: str, dtype: torch.dtype):
        if decode_weights not in ("auto", "fp16", "fp32"):
            raise ValueError(f"decode_weights: auto, fp16 or fp32, not {decode_weights!r}")
        if decode_weights == "fp32" or self.device.type != "cpu" or dtype != torch.float32:
            return None
        ops = cpu_ops.load()
        if ops is None and decode_weights == "fp16":
            raise ValueError(f"fp16 decode weights need the C++ ops: {cpu_ops.unavailable_reason() or 'build failed'}")
        shapes_ok = all(m.weight.shape[1] % 8 == 0 for m in self.matrices())
        return ops if shapes_ok else None

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

    def _torch_decode_attention(self, slots: list[int], rows: torch.Tensor, pos: torch.Tensor):
        """attend(layer, qkv (B, (h + 2kh) d)) -> (B, h d) for one decode step in torch ops: rotary, the
        new keys and values written into the slots' caches, attention.attend_decode (SDPA or Triton)."""
        b, h, kh, d = len(slots), self.heads, self.kv_heads, self.head_dim
        cos, sin = self.cos[pos][:, None], self.sin[pos][:, None]  # (B, 1, d)
        lengths = pos + 1
        mask = attention.decode_mask(lengths)
        # where each row's new keys go in a layer's cache seen as (slots * kh * max_len, d) rows
        where = ((rows[:, None] * kh + torch.arange(kh, device=self.device)) * self.max_len + pos[:, None]).flatten()
        contiguous = slots == list(range(slots[0], slots[0] + b))

        def attend(i: int, qkv: torch.Tensor) -> torch.Tensor:
            qkv = qkv.view(b, h + 2 * kh, d)
            qk = self._rotate(qkv[:, :h + kh], cos, sin)
            self.k_cache[i].view(-1, d).index_copy_(0, where, qk[:, h:].reshape(-1, d))
            self.v_cache[i].view(-1, d).index_copy_(0, where, qkv[:, h + kh:].reshape(-1, d))
            if contiguous:  # a view of the slots' caches
                k, v = self.k_cache[i, slots[0]:slots[0] + b], self.v_cache[i, slots[0]:slots[0] + b]
            else:
                k, v = self.k_cache[i].index_select(0, rows), self.v_cache[i].index_select(0, rows)
            return attention.attend_decode(qk[:, :h], k, v, lengths, mask).reshape(b, h * d)

        return attend

    def _products(self, half: bool = True):
        """(rms, silu_mul, product) for (rows, width) float32 activations: the C++ ops over the float16
        copies when loaded (and `half`), else torch over the float32 weights. product(m, x, residual=None)."""
        ops = self.ops
        if ops is not None and half:
            return (lambda t, w: ops.rms_norm(t, w, self.eps), ops.silu_mul,
                    lambda m, t, residual=None: m.half(ops, t, residual))
        silu_mul = lambda gu: F.silu(gu[:, :gu.shape[1] // 2]) * gu[:, gu.shape[1] // 2:]  # noqa: E731
        return self._rms, silu_mul, lambda m, t, residual=None: m(t) if residual is None else residual + m(t)

    @torch.inference_mode()
    def forward(self, x: torch.Tensor, slot: int = 0, stop: Stop | None = None) -> torch.Tensor | None:
        """(1, T, D) embeddings of the next T positions -> (1, T, D) final hidden states; the slot's cache
        grows by T. Up to PREFILL_HALF_ROWS rows go through the float16 weights (with the C++ ops). None,
        the cache as it was, when `stop` (asked before each layer) says so."""
        t = x.shape[1]
        start, end = self.lengths[slot], self.lengths[slot] + t
        if end > self.max_len:
            raise ValueError(f"the conversation ({end} tokens) is longer than the engine's cache ({self.max_len})")
        rms, silu_mul, product = self._products(half=t <= PREFILL_HALF_ROWS)
        cos, sin = self.cos[start:end][None, None], self.sin[start:end][None, None]
        h, kh, d = self.heads, self.kv_heads, self.head_dim
        x = x[0].contiguous()  # (T, D)
        for i, layer in enumerate(self.layers):
            if stop is not None and stop():
                return None  # lengths[slot] is still `start`: the rows written for layers before are not trusted
            qkv = product(layer.qkv, rms(x, layer.ln1))  # (T, (h + 2kh) d)
            qk, v = qkv.view(1, t, h + 2 * kh, d).transpose(1, 2).split([h + kh, kh], dim=1)
            q, k = self._rotate(qk, cos, sin).split([h, kh], dim=1)  # queries and keys rotated in one go
            k_cache, v_cache = self.k_cache[i, slot:slot + 1], self.v_cache[i, slot:slot + 1]
            k_cache[:, :, start:end] = k
            v_cache[:, :, start:end] = v
            out = attention.attend(q, k_cache[:, :, :end], v_cache[:, :, :end], causal=t > 1, q_offset=start)
            x = product(layer.o, out[0].transpose(0, 1).reshape(t, h * d), x)
            x = product(layer.down, silu_mul(product(layer.gate_up, rms(x, layer.ln2))), x)
        self.lengths[slot] = end
        return self._rms(x, self.norm)[None]

    def reset(self, slot: int = 0) -> None:
        self.lengths[slot] = 0  # the cache is overwritten in place; no need to clear it

    def reusable(self, embeds: torch.Tensor, slot: int = 0) -> int:
        """How many leading positions of (1, L, D) `embeds` the slot's cache already holds (at most L-1:
        the last position is always computed, for its logits)."""
        m = min(embeds.shape[1] - 1, self.lengths[slot])
        if m <= 0:
            return 0
        same = (self.fed[slot, :m] == embeds[0, :m].to(self.dtype)).all(-1)
        return m if bool(same.all()) else int(same.to(torch.int8).argmin())

    @torch.inference_mode()  # the caches may have been made inside inference mode (an engine built there)
    def prefill(self, embeds: torch.Tensor, slot: int = 0) -> torch.Tensor:
        """(1, L, D) prompt embeddings (a new conversation, or the next turn of one) -> (V,) logits at the
        last position. Positions whose inputs match what the slot's cache was built from are reused
        (prefix caching), the rest computed."""
        hidden = self._fill(embeds, slot)
        product = self._products(half=hidden.shape[1] <= PREFILL_HALF_ROWS)[2]
        return product(self.lm_head, hidden[0, -1:].contiguous())[0]

    @torch.inference_mode()
    def warm(self, embeds: torch.Tensor, slot: int = 0, stop: Stop = lambda: False) -> bool:
        """prefill() without the logits: the beginning of a prompt that is still being made. `stop` is asked
        before each layer; when it says so the slot keeps only the positions it reused (False), or all it
        had when it is asked at once."""
        return not stop() and self._fill(embeds, slot, stop) is not None

    def _fill(self, embeds: torch.Tensor, slot: int, stop: Stop | None = None) -> torch.Tensor | None:
        embeds = embeds.to(self.dtype)
        if embeds.shape[1] > self.max_len:
            raise ValueError(f"the conversation ({embeds.shape[1]} tokens) is longer than the engine's cache "
                             f"({self.max_len})")
        self.lengths[slot] = self.reusable(embeds, slot)
        self.fed[slot, self.lengths[slot]:embeds.shape[1]] = embeds[0, self.lengths[slot]:]
        return self.forward(embeds[:, self.lengths[slot]:], slot, stop)

    def embed_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (n,) -> their input embeddings (n, D)."""
        return self.embed[ids]

    def decode(self, token: int, slot: int = 0) -> torch.Tensor:
        """One token -> (V,) logits for the next."""
        return self._step(self.embed_rows(torch.tensor([token], device=self.device)), [slot])[0]

    def decode_batch(self, tokens: list[int], slots: list[int]) -> torch.Tensor:
        """One token for each of several conversations, each in its own cache slot (see `slots`):
        the weights are read once for all of them. -> (B, V) logits."""
        if len(set(slots)) != len(slots) or not all(0 <= s < self.slots for s in slots):
            raise ValueError(f"slots must be distinct, in 0..{self.slots - 1}: {slots}")
        return self._step(self.embed_rows(torch.tensor(tokens, device=self.device)), slots)

    @torch.inference_mode()
    def _step(self, x: torch.Tensor, slots: list[int]) -> torch.Tensor:
        """One token per slot: (B, D) embeddings -> (B, V) logits; each slot's cache grows by one.
        Float16 weights and the C++ ops when loaded, else the float32 weights and torch ops."""
        positions = [self.lengths[s] for s in slots]
        if max(positions) >= self.max_len:
            raise ValueError(f"the conversation is longer than the engine's cache ({self.max_len})")
        rms, silu_mul, product = self._products()
        pos, rows = torch.tensor(positions, device=self.device), torch.tensor(slots, device=self.device)
        self.fed[rows, pos] = x  # the inputs behind the new cache entries (prefix caching)
        if attention.decode_backend(self.device, self.ops is not None) == "cpp":
            cos, sin = self.cos[pos], self.sin[pos]  # rotary, cache write and attention in one C++ call
            attend = lambda i, qkv: self.ops.attend_decode(qkv, cos, sin, self.k_cache[i], self.v_cache[i],  # noqa: E731
                                                           rows, pos, self.heads)
        else:
            attend = self._torch_decode_attention(slots, rows, pos)
        for i, layer in enumerate(self.layers):
            x = product(layer.o, attend(i, product(layer.qkv, rms(x, layer.ln1))), x)
            x = product(layer.down, silu_mul(product(layer.gate_up, rms(x, layer.ln2))), x)
        for s in slots:
            self.lengths[s] += 1
        return product(self.lm_head, rms(x, self.norm))
