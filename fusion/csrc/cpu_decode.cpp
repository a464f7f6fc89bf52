// One-token (decode) building blocks for the CPU: a matrix-vector product over float16 weights in a
// blocked layout, RMSNorm, and SwiGLU's silu(gate) * up. Built at first use by fusion/cpu_ops.py.
//
// Why: decoding one token multiplies a single row by every weight matrix, so the time is the time to
// stream the weights from memory. BLAS reaches 11-19 GB/s on float32 here; float16 weights halve the
// bytes, and a layout read front to back (one stream per thread) keeps the hardware prefetcher busy.
// Accumulation is float32 (F16C converts 8 weights per instruction, FMA adds them up).
//
// Packed layout of an (out, in) weight: (out / 8, in / 8, 8, 8) float16, i.e. for each block of 8
// output rows, the in-dimension in steps of 8, the 8 rows' next 8 weights side by side.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

namespace {

constexpr int64_t kRows = 8;       // output rows per block (8 accumulators in registers)
constexpr int64_t kPrefetch = 512; // weights ahead of the current read (1 KiB), measured best of 0/256/512/1024

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
  at::parallel_for(0, padded / kRows, 16, [&](int64_t first, int64_t last) {
    gemv_blocks(xp, wp, yp, batch, in, padded, first, last);
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

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("pack_half", &pack_half);
  m.def("gemv_half", &gemv_half, py::arg("x"), py::arg("packed"), py::arg("out"), py::arg("residual") = py::none());
  m.def("rms_norm", &rms_norm);
  m.def("silu_mul", &silu_mul);
}
