// One-token (decode) building blocks for the CPU: a matrix-vector product over float16 weights in a
// blocked layout, RMSNorm, and SwiGLU's silu(gate) * up. Built at first use by fusion/runtime/cpu_ops.py.
//
// Why: decoding one token multiplies a single row by every weight matrix, so the time is the time to
// stream the weights from memory. BLAS reaches 11-19 GB/s on float32 here; float16 weights halve the
// bytes, and a layout read front to back (one stream per thread) keeps the hardware prefetcher busy.
// Accumulation is float32 (F16C converts 8 weights per instruction, FMA adds them up). The same
// product serves short prefills (up to ~100 rows), where it outruns float32 BLAS on this CPU.
//
// Packed layout of an (out, in) weight: (out / 8, in / 8, 8, 8) float16, i.e. for each block of 8
// output rows, the in-dimension in steps of 8, the 8 rows' next 8 weights side by side.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include "quant_matmul.h"

namespace {

constexpr int64_t kRows = 8;       // output rows per block (8 accumulators in registers)
constexpr int64_t kMaxSplits = 8;   // decode attention: at most this many splits of a long cache
constexpr int64_t kSplitMin = 256;  // and at least this many entries in each
constexpr int64_t kPrefetch = 512; // weights ahead of the current read (1 KiB), measured best of 0/256/512/1024
constexpr int64_t kPairsFrom = 8;  // rows from which they go two at a time (gemm2_blocks): 5-10% faster
                                   // from 16 rows, no gain for decode batches of 2-4

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline __m256 load_half8(const at::Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// y[b, r] = sum_j x[b, j] * w[r, j] for the rows of blocks [first, last)
void gemv_blocks(const float* x, const at::Half* w, float* y, int64_t batch, int64_t in, int64_t out,
                 int64_t first, int64_t last) {
  for (int64_t blk = first; blk < last; ++blk) {
    const at::Half* block = w + blk * kRows * in;
    for (int64_t b = 0; b < batch; ++b) {  // rows after the first find the block in L1/L2
      const float* xb = x + b * in;
      const at::Half* p = block;
      __m256 acc[kRows];
      for (int r = 0; r < kRows; ++r) acc[r] = _mm256_setzero_ps();
      for (int64_t j = 0; j < in; j += 8, p += kRows * 8) {
        _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetch), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetch + 32), _MM_HINT_T0);
        const __m256 xv = _mm256_loadu_ps(xb + j);
#pragma GCC unroll 8
        for (int r = 0; r < kRows; ++r) acc[r] = _mm256_fmadd_ps(load_half8(p + r * 8), xv, acc[r]);
      }
      float* yb = y + b * out + blk * kRows;
      for (int r = 0; r < kRows; ++r) yb[r] += hsum(acc[r]);
    }
  }
}

// Two rows of x at a time, for products of many rows (a prompt's prefill), where the arithmetic and
// not the weight stream sets the pace: each float16 -> float32 conversion feeds two FMAs. The block's
// 8 output rows go in two halves of 4 so that 8 accumulators, 2 x vectors and 4 weights fit the 16
// AVX2 registers.
void gemm2_blocks(const float* x, const at::Half* w, float* y, int64_t pairs, int64_t in, int64_t out,
                  int64_t first, int64_t last) {
  for (int64_t blk = first; blk < last; ++blk) {
    const at::Half* block = w + blk * kRows * in;
    for (int64_t b = 0; b < 2 * pairs; b += 2) {
      const float *x0 = x + b * in, *x1 = x0 + in;
      for (int half = 0; half < kRows; half += 4) {
        const at::Half* p = block + half * 8;
        __m256 a0[4], a1[4];
        for (int r = 0; r < 4; ++r) a0[r] = a1[r] = _mm256_setzero_ps();
        for (int64_t j = 0; j < in; j += 8, p += kRows * 8) {
          const __m256 v0 = _mm256_loadu_ps(x0 + j), v1 = _mm256_loadu_ps(x1 + j);
#pragma GCC unroll 4
          for (int r = 0; r < 4; ++r) {
            const __m256 wr = load_half8(p + r * 8);
            a0[r] = _mm256_fmadd_ps(wr, v0, a0[r]);
            a1[r] = _mm256_fmadd_ps(wr, v1, a1[r]);
          }
        }
        float *y0 = y + b * out + blk * kRows + half, *y1 = y0 + out;
        for (int r = 0; r < 4; ++r) {
          y0[r] += hsum(a0[r]);
          y1[r] += hsum(a1[r]);
        }
      }
    }
  }
}

}  // namespace

// (out, in) -> float16 (ceil(out / 8), in / 8, 8, 8), the rows padded with zeros to a multiple of 8
torch::Tensor pack_half(const torch::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) % 8 == 0, "pack_half: an (out, in) weight with in a multiple of 8");
  const int64_t out = weight.size(0), in = weight.size(1), blocks = (out + kRows - 1) / kRows;
  auto padded = torch::zeros({blocks * kRows, in}, weight.options().dtype(torch::kHalf));
  padded.narrow(0, 0, out).copy_(weight);
  return padded.reshape({blocks, kRows, in / 8, 8}).permute({0, 2, 1, 3}).contiguous();
}

// x (B, in) float32 times a packed (out, in) weight -> (B, out); plus `residual` (B, out) when given
torch::Tensor gemv_half(const torch::Tensor& x, const torch::Tensor& packed, int64_t out,
                        c10::optional<torch::Tensor> residual) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat && x.is_contiguous(), "gemv_half: x (B, in) float32");
  TORCH_CHECK(packed.dim() == 4 && packed.scalar_type() == torch::kHalf && packed.is_contiguous(),
              "gemv_half: a weight from pack_half");
  const int64_t batch = x.size(0), in = x.size(1), padded = packed.size(0) * kRows;
  TORCH_CHECK(packed.size(1) * 8 == in, "gemv_half: x has ", in, " columns, the weight ", packed.size(1) * 8);
  TORCH_CHECK(out <= padded && out > padded - kRows, "gemv_half: out ", out, " does not match the packed weight");
  TORCH_CHECK(!residual.has_value() || (residual->size(0) == batch && residual->size(-1) == out),
              "gemv_half: residual must be (B, out)");
  torch::Tensor y = torch::zeros({batch, padded}, x.options());
  if (residual.has_value()) y.narrow(1, 0, out).copy_(residual->reshape({batch, out}));
  const float* xp = x.data_ptr<float>();
  const at::Half* wp = packed.data_ptr<at::Half>();
  float* yp = y.data_ptr<float>();
  const int64_t pairs = batch >= kPairsFrom ? batch / 2 : 0;
  at::parallel_for(0, padded / kRows, 16, [&](int64_t first, int64_t last) {
    if (pairs) gemm2_blocks(xp, wp, yp, pairs, in, padded, first, last);
    if (batch > 2 * pairs)
      gemv_blocks(xp + 2 * pairs * in, wp, yp + 2 * pairs * padded, batch - 2 * pairs, in, padded, first, last);
  });
  return out == padded ? y : y.narrow(1, 0, out).contiguous();
}

// x (B, D) float32 -> x / rms(x) * weight, the RMS over the last dimension in float32
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat && x.is_contiguous(), "rms_norm: x (B, D) float32");
  const int64_t batch = x.size(0), dim = x.size(1);
  auto w = weight.to(torch::kFloat).contiguous();
  auto y = torch::empty_like(x);
  const float *xp = x.data_ptr<float>(), *wp = w.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  for (int64_t b = 0; b < batch; ++b) {
    double sum = 0;
    for (int64_t i = 0; i < dim; ++i) sum += double(xp[b * dim + i]) * xp[b * dim + i];
    const float scale = 1.0f / std::sqrt(float(sum / dim) + float(eps));
    for (int64_t i = 0; i < dim; ++i) yp[b * dim + i] = xp[b * dim + i] * scale * wp[i];
  }
  return y;
}

// gate_up (B, 2I) = [gate | up] -> silu(gate) * up (B, I)
torch::Tensor silu_mul(const torch::Tensor& gate_up) {
  TORCH_CHECK(gate_up.dim() == 2 && gate_up.scalar_type() == torch::kFloat && gate_up.is_contiguous(),
              "silu_mul: (B, 2I) float32");
  const int64_t batch = gate_up.size(0), inner = gate_up.size(1) / 2;
  auto y = torch::empty({batch, inner}, gate_up.options());
  const float* g = gate_up.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < inner; ++i) {
      const float gi = g[b * 2 * inner + i];
      yp[b * inner + i] = gi / (1.0f + std::exp(-gi)) * g[b * 2 * inner + inner + i];
    }
  return y;
}

// One decode step's attention for B conversations, fused: rotary embedding of the new query and key,
// the new key and value written into each conversation's cache slot, and one-query attention (GQA)
// over entries 0..position. qkv (B, (H + 2 KH) d) float32 as the qkv product leaves it; cos, sin
// (B, d) with rotate-half's sign folded into sin's first half (see fusion/runtime/engine.py); caches
// (slots, KH, L, d); slots, positions (B,) int64. -> (B, H d). Replaces ~10 small torch ops per layer.
torch::Tensor attend_decode(const torch::Tensor& qkv, const torch::Tensor& cos, const torch::Tensor& sin,
                            torch::Tensor& k_cache, torch::Tensor& v_cache, const torch::Tensor& slots,
                            const torch::Tensor& positions, int64_t heads) {
  TORCH_CHECK(qkv.dim() == 2 && qkv.scalar_type() == torch::kFloat && qkv.is_contiguous(), "attend_decode: qkv (B, n) float32");
  TORCH_CHECK(k_cache.dim() == 4 && k_cache.scalar_type() == torch::kFloat && k_cache.is_contiguous() &&
              v_cache.sizes() == k_cache.sizes() && v_cache.scalar_type() == torch::kFloat && v_cache.is_contiguous(),
              "attend_decode: float32 caches (slots, KH, L, d)");
  const int64_t batch = qkv.size(0), kv_heads = k_cache.size(1), max_len = k_cache.size(2), d = k_cache.size(3);
  TORCH_CHECK(d % 8 == 0 && heads % kv_heads == 0 && qkv.size(1) == (heads + 2 * kv_heads) * d,
              "attend_decode: qkv width ", qkv.size(1), " does not match ", heads, " heads, ", kv_heads, " kv heads of ", d);
  TORCH_CHECK(cos.sizes() == sin.sizes() && cos.size(0) == batch && cos.size(1) == d && cos.is_contiguous() &&
              sin.is_contiguous() && cos.scalar_type() == torch::kFloat && sin.scalar_type() == torch::kFloat,
              "attend_decode: cos, sin (B, d) float32");
  auto sl = slots.to(torch::kLong).contiguous(), ps = positions.to(torch::kLong).contiguous();
  const int64_t *slot = sl.data_ptr<int64_t>(), *pos = ps.data_ptr<int64_t>();
  for (int64_t b = 0; b < batch; ++b)
    TORCH_CHECK(slot[b] >= 0 && slot[b] < k_cache.size(0) && pos[b] >= 0 && pos[b] < max_len,
                "attend_decode: slot or position out of range");
  const int64_t width = qkv.size(1), half = d / 2, group = heads / kv_heads;
  // rotated queries, and the new keys and values into the caches
  auto q = torch::empty({batch, heads, d}, qkv.options());
  const float *x = qkv.data_ptr<float>(), *c = cos.data_ptr<float>(), *s = sin.data_ptr<float>();
  float *qp = q.data_ptr<float>(), *kc = k_cache.data_ptr<float>(), *vc = v_cache.data_ptr<float>();
  auto rotate = [&](const float* in, const float* cb, const float* sb, float* out) {
    for (int64_t i = 0; i < d; ++i) out[i] = in[i] * cb[i] + in[(i + half) % d] * sb[i];
  };
  for (int64_t b = 0; b < batch; ++b) {
    const float *row = x + b * width, *cb = c + b * d, *sb = s + b * d;
    for (int64_t h = 0; h < heads; ++h) rotate(row + h * d, cb, sb, qp + (b * heads + h) * d);
    for (int64_t g = 0; g < kv_heads; ++g) {
      const int64_t at = ((slot[b] * kv_heads + g) * max_len + pos[b]) * d;
      rotate(row + (heads + g) * d, cb, sb, kc + at);
      std::copy(row + (heads + kv_heads + g) * d, row + (heads + kv_heads + g + 1) * d, vc + at);
    }
  }
  // Work items: (conversation, kv head, split of the cache). The query heads sharing a kv head read
  // its keys and values once; long caches are cut into splits that run in parallel, each keeping its
  // running max and sum, merged afterwards (flash-decoding on the CPU).
  const int64_t longest = *std::max_element(pos, pos + batch) + 1;
  const int64_t splits = std::max<int64_t>(1, std::min<int64_t>(kMaxSplits, longest / kSplitMin));
  auto part = torch::zeros({batch, kv_heads, splits, group, d + 2}, qkv.options());  // out, max, sum
  float* pp = part.data_ptr<float>();
  const float scale = 1.0f / std::sqrt(float(d));
  at::parallel_for(0, batch * kv_heads * splits, 1, [&](int64_t first, int64_t last) {
    std::vector<float> score(group * ((max_len + splits - 1) / splits + 1));
    for (int64_t item = first; item < last; ++item) {
      const int64_t b = item / (kv_heads * splits), g = item / splits % kv_heads, sp = item % splits;
      const int64_t n = pos[b] + 1, size = (n + splits - 1) / splits;
      const int64_t t0 = std::min(n, sp * size), t1 = std::min(n, t0 + size), m = t1 - t0;
      if (m == 0) continue;  // part stays zero with sum 0: no weight in the merge
      const int64_t base = (slot[b] * kv_heads + g) * max_len * d;
      for (int64_t t = 0; t < m; ++t) {
        const float* kt = kc + base + (t0 + t) * d;
        for (int64_t q = 0; q < group; ++q) {
          const float* qv = qp + (b * heads + g * group + q) * d;
          __m256 acc = _mm256_setzero_ps();
          for (int64_t j = 0; j < d; j += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(qv + j), _mm256_loadu_ps(kt + j), acc);
          score[q * m + t] = hsum(acc) * scale;
        }
      }
      float* item_out = pp + item * group * (d + 2);
      for (int64_t q = 0; q < group; ++q) {
        float* sq = score.data() + q * m;
        const float top = *std::max_element(sq, sq + m);
        float total = 0;
        for (int64_t t = 0; t < m; ++t) total += (sq[t] = std::exp(sq[t] - top));
        item_out[q * (d + 2) + d] = top;
        item_out[q * (d + 2) + d + 1] = total;
      }
      for (int64_t t = 0; t < m; ++t) {  // each value row read once for the group's heads
        const float* vt = vc + base + (t0 + t) * d;
        for (int64_t q = 0; q < group; ++q) {
          const __m256 p = _mm256_set1_ps(score[q * m + t]);
          float* o = item_out + q * (d + 2);
          for (int64_t j = 0; j < d; j += 8)
            _mm256_storeu_ps(o + j, _mm256_fmadd_ps(p, _mm256_loadu_ps(vt + j), _mm256_loadu_ps(o + j)));
        }
      }
    }
  });
  auto out = torch::empty({batch, heads * d}, qkv.options());
  float* op = out.data_ptr<float>();
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t g = h / group, q = h % group;
      const float* parts = pp + ((b * kv_heads + g) * splits * group + q) * (d + 2);
      float top = -INFINITY;
      for (int64_t sp = 0; sp < splits; ++sp)
        if (parts[sp * group * (d + 2) + d + 1] > 0) top = std::max(top, parts[sp * group * (d + 2) + d]);
      float* o = op + (b * heads + h) * d;
      std::fill(o, o + d, 0.0f);
      float total = 0;
      for (int64_t sp = 0; sp < splits; ++sp) {
        const float* ps_ = parts + sp * group * (d + 2);
        if (ps_[d + 1] == 0) continue;
        const float w = std::exp(ps_[d] - top);
        total += w * ps_[d + 1];
        for (int64_t j = 0; j < d; ++j) o[j] += w * ps_[j];
      }
      for (int64_t j = 0; j < d; ++j) o[j] /= total;
    }
  return out;
}

// Every op works on tensors alone: the interpreter lock is let go while it runs, so the server's other
// threads (its event loop, a Whisper reading beside a decode step) go on meanwhile, as with torch's own ops.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using release = py::call_guard<py::gil_scoped_release>;
  m.def("attend_decode", &attend_decode, release());
  m.def("pack_half", &pack_half, release());
  m.def("gemv_half", &gemv_half, py::arg("x"), py::arg("packed"), py::arg("out"), py::arg("residual") = py::none(),
        release());
  m.def("rms_norm", &rms_norm, release());
  m.def("silu_mul", &silu_mul, release());
  m.def("quant_matmul", &quant_matmul, py::arg("x"), py::arg("raws"), py::arg("kinds"), py::arg("rows"),
        py::arg("bias") = py::none(), py::arg("residual") = py::none(), release());
  m.def("dequantize_rows", &dequantize_rows, release());
}
