// Products of float32 activations with weights kept in their GGUF blocks (Q4_K, Q6_K, Q5_0, Q8_0),
// for decode (one row) and prefill (tens to hundreds of rows). Built with cpu_decode.cpp.
//
// Why: a 1.5B decoder at 4-5 bits a weight is ~1 GB read per token; converting it to float32 (7 GB)
// or float16 (3 GB) would multiply the bytes. Each call quantizes the activations once, per block, to
// int8 (a float scale per 256 values for the K types, with sums of each 16 values; per 32 for Q5_0 and
// Q8_0), and every weight block meets them in integer dot products: AVX2's maddubs (unsigned 8-bit x
// signed 8-bit -> 16-bit pairs) and madd (-> 32-bit), one float multiply-add per block. This is the
// scheme of ggml's vec_dot_q4_K_q8_K, written here from the block layouts (GGUF spec):
//   Q8_0 (34 bytes / 32): fp16 d, 32 x int8;                      w = d q
//   Q5_0 (22 bytes / 32): fp16 d, 32 fifth bits, 16 nibble pairs;  w = d (q - 16)
//   Q4_K (144 bytes / 256): fp16 d, dmin, 12 bytes of 6-bit scale and min for 8 sub-blocks of 32,
//        128 nibble bytes (each 32-byte run: low nibbles one sub-block, high the next); w = d sc q - dmin m
//   Q6_K (210 bytes / 256): 128 bytes low nibbles, 64 bytes high 2-bit pairs, 16 int8 scales (one per
//        16 values), fp16 d; w = d sc (q - 32)
// The subtracted offsets (dmin m, 32) multiply the activations' block sums, computed once per block.
//
// Rows of several activation vectors reuse each weight row while it sits in L1 (prefill), and the
// output rows are split between the threads.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "quant_matmul.h"

namespace {

enum Kind : int64_t { kF32 = 0, kQ5_0 = 6, kQ8_0 = 8, kQ4_K = 12, kQ6_K = 14 };  // ggml's type ids
constexpr int64_t kSuper = 256, kSmall = 32;
constexpr int64_t kTile = 8;    // activation rows per pass over a weight row (dot_*<8>)
constexpr int64_t kGroup = 32;  // weight rows per block of a prefill (see quant_matmul)

struct ActK {  // activations for the K types: 256 values
  float d;
  int16_t sums[16];    // of each 16 quantized values (Q6_K's scales cover 16)
  int16_t sums32[8];   // of each 32 (Q4_K's mins cover 32)
  int8_t q[kSuper];
};

struct Act0 {  // activations for Q5_0 and Q8_0: 32 values
  float d;
  int8_t q[kSmall];
};

int64_t block_values(int64_t kind) { return kind == kQ4_K || kind == kQ6_K ? kSuper : kind == kF32 ? 1 : kSmall; }

int64_t block_bytes(int64_t kind) {
  switch (kind) {
    case kQ8_0: return 34;
    case kQ5_0: return 22;
    case kQ4_K: return 144;
    case kQ6_K: return 210;
    case kF32: return 4;
  }
  TORCH_CHECK(false, "quantized product: unsupported block type ", kind);
}

inline float half_to_float(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// 32 floats -> 32 int8 (x * inv, rounded to nearest), in order
inline __m256i round_to_int8(const float* x, __m256 inv) {
  __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x), inv));
  __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8), inv));
  __m256i c = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 16), inv));
  __m256i d = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 24), inv));
  __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
  return _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));  // undo the lane interleave
}

inline float abs_max(const float* x, int64_t n) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 m = _mm256_setzero_ps();
  for (int64_t i = 0; i < n; i += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

void quantize_k(const float* x, ActK* out, int64_t blocks) {
  for (int64_t i = 0; i < blocks; ++i, x += kSuper) {
    const float top = abs_max(x, kSuper);
    out[i].d = top / 127.0f;
    const __m256 inv = _mm256_set1_ps(top > 0 ? 127.0f / top : 0.0f);
    for (int64_t j = 0; j < kSuper; j += 32)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[i].q + j), round_to_int8(x + j, inv));
    for (int g = 0; g < 16; ++g) {
      int sum = 0;
      for (int j = 0; j < 16; ++j) sum += out[i].q[g * 16 + j];
      out[i].sums[g] = int16_t(sum);
    }
    for (int g = 0; g < 8; ++g) out[i].sums32[g] = int16_t(out[i].sums[2 * g] + out[i].sums[2 * g + 1]);
  }
}

void quantize_0(const float* x, Act0* out, int64_t blocks) {
  for (int64_t i = 0; i < blocks; ++i, x += kSmall) {
    const float top = abs_max(x, kSmall);
    out[i].d = top / 127.0f;
    const __m256 inv = _mm256_set1_ps(top > 0 ? 127.0f / top : 0.0f);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[i].q), round_to_int8(x, inv));
  }
}

// -- one weight row . one activation row ------------------------------------------------------------

// Q4_K's 12 bytes of 6-bit scales and mins -> 8 scales (bytes 0-7) and 8 mins (bytes 8-15) (the first 4
// of each sit in the low 6 bits of bytes 0-3 and 4-7; the last 4 split between bytes 8-11 and the top
// 2 bits of bytes 0-7)
inline __m128i q4k_scales(const uint8_t* s) {
  uint32_t u[3];
  std::memcpy(u, s, 12);
  const uint32_t sc0 = u[0] & 0x3f3f3f3f, mn0 = u[1] & 0x3f3f3f3f;
  const uint32_t sc1 = (u[2] & 0x0f0f0f0f) | ((u[0] >> 6 & 0x03030303) << 4);
  const uint32_t mn1 = (u[2] >> 4 & 0x0f0f0f0f) | ((u[1] >> 6 & 0x03030303) << 4);
  return _mm_set_epi32(int(mn1), int(mn0), int(sc1), int(sc0));
}

// masks for _mm256_shuffle_epi8 over 16-bit values repeated in both lanes: pair k -> value 2k in every
// 16-bit lane of the low 128 bits and value 2k + 1 in the high 128 bits (Q4_K: one scale per 32 values,
// so pair k covers sub-blocks 2k and 2k+1 of ... see dot_q4_k), or value k everywhere (kBroadcast)
alignas(32) const uint8_t kBroadcast[8][32] = {
#define B16(v) 2 * (v), 2 * (v) + 1
#define ROW(v) {B16(v), B16(v), B16(v), B16(v), B16(v), B16(v), B16(v), B16(v), \
                B16(v), B16(v), B16(v), B16(v), B16(v), B16(v), B16(v), B16(v)}
    ROW(0), ROW(1), ROW(2), ROW(3), ROW(4), ROW(5), ROW(6), ROW(7)
#undef ROW
#undef B16
};

// Q6_K: 16 int8 scales -> for pair k, scale 2k for the first 16 values of 32 and 2k + 1 for the next 16,
// as 16-bit lanes (bytes 2k x 8 then 2k + 1 x 8, widened)
alignas(16) const uint8_t kPairs[8][16] = {
#define P(k) {2 * (k), 2 * (k), 2 * (k), 2 * (k), 2 * (k), 2 * (k), 2 * (k), 2 * (k), \
              2 * (k) + 1, 2 * (k) + 1, 2 * (k) + 1, 2 * (k) + 1, 2 * (k) + 1, 2 * (k) + 1, 2 * (k) + 1, 2 * (k) + 1}
    P(0), P(1), P(2), P(3), P(4), P(5), P(6), P(7)
#undef P
};

constexpr int kAhead = 2048;  // bytes of the weight row prefetched ahead of the block being read: decode tg 11.8 -> 14.1 tok/s at 2048
                              // over 768 on the 1.5B here (4096: 13.3); the hardware prefetcher alone falls behind

// N activation rows at once against one weight row: the weight's nibbles and scales are unpacked once
// per block for all N (prefill); N = 1 is the decode product.
template <int N>
void dot_q4_k(const uint8_t* w, const ActK* const* a, int64_t blocks, float* out) {
  const __m256i low = _mm256_set1_epi8(0xF);
  __m256 acc[N];
  __m128 offset[N];
  for (int t = 0; t < N; ++t) acc[t] = _mm256_setzero_ps(), offset[t] = _mm_setzero_ps();
  for (int64_t i = 0; i < blocks; ++i, w += 144) {
    _mm_prefetch(reinterpret_cast<const char*>(w + kAhead), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(w + kAhead + 64), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(w + kAhead + 128), _MM_HINT_T0);
    const float d = half_to_float(w), dmin = half_to_float(w + 2);
    const __m256i wide = _mm256_cvtepu8_epi16(q4k_scales(w + 4));  // 8 scales, 8 mins as 16-bit
    const __m128i mins = _mm256_extracti128_si256(wide, 1);
    const __m256i scales = _mm256_permute2x128_si256(wide, wide, 0x00);  // the scales in both lanes
    __m256i sum[N];
    for (int t = 0; t < N; ++t) {
      sum[t] = _mm256_setzero_si256();
      const __m128i s32 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a[t][i].sums32));
      offset[t] = _mm_fmadd_ps(_mm_set1_ps(dmin * a[t][i].d), _mm_cvtepi32_ps(_mm_madd_epi16(mins, s32)), offset[t]);
    }
    const uint8_t* q4 = w + 16;
    for (int c = 0; c < 4; ++c) {
      const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q4 + 32 * c));
      const __m256i lo = _mm256_and_si256(bits, low), hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), low);
      const __m256i slo = _mm256_shuffle_epi8(scales, _mm256_load_si256(reinterpret_cast<const __m256i*>(kBroadcast[2 * c])));
      const __m256i shi = _mm256_shuffle_epi8(scales, _mm256_load_si256(reinterpret_cast<const __m256i*>(kBroadcast[2 * c + 1])));
      for (int t = 0; t < N; ++t) {
        const int8_t* q8 = a[t][i].q + 64 * c;
        const __m256i plo = _mm256_madd_epi16(
            _mm256_maddubs_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8))), slo);
        const __m256i phi = _mm256_madd_epi16(
            _mm256_maddubs_epi16(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8 + 32))), shi);
        sum[t] = _mm256_add_epi32(sum[t], _mm256_add_epi32(plo, phi));
      }
    }
    for (int t = 0; t < N; ++t)
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * a[t][i].d), _mm256_cvtepi32_ps(sum[t]), acc[t]);
  }
  for (int t = 0; t < N; ++t) {
    __m128 o = offset[t];
    o = _mm_add_ps(o, _mm_movehl_ps(o, o));
    o = _mm_add_ss(o, _mm_movehdup_ps(o));
    out[t] = hsum(acc[t]) - _mm_cvtss_f32(o);
  }
}

template <int N>
void dot_q6_k(const uint8_t* w, const ActK* const* a, int64_t blocks, float* out) {
  const __m256i low = _mm256_set1_epi8(0xF);
  __m256 acc[N], offset[N];
  for (int t = 0; t < N; ++t) acc[t] = _mm256_setzero_ps(), offset[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < blocks; ++i, w += 210) {
    _mm_prefetch(reinterpret_cast<const char*>(w + kAhead), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(w + kAhead + 64), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(w + kAhead + 128), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(w + kAhead + 192), _MM_HINT_T0);
    const uint8_t *ql = w, *qh = w + 128;
    const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 192));
    const float d = half_to_float(w + 208);
    const __m256i scales = _mm256_cvtepi8_epi16(sc);
    __m256i sum[N];
    for (int t = 0; t < N; ++t) {
      sum[t] = _mm256_setzero_si256();
      const __m256i s16 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[t][i].sums));
      offset[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * a[t][i].d * 32.0f), _mm256_cvtepi32_ps(_mm256_madd_epi16(scales, s16)),
                                  offset[t]);
    }
    for (int n = 0; n < 2; ++n) {
      const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 64 * n));
      const __m256i l1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 64 * n + 32));
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qh + 32 * n));
      __m256i q[4];
      q[0] = _mm256_or_si256(_mm256_and_si256(l0, low), _mm256_slli_epi16(_mm256_and_si256(h, _mm256_set1_epi8(0x03)), 4));
      q[1] = _mm256_or_si256(_mm256_and_si256(l1, low), _mm256_slli_epi16(_mm256_and_si256(h, _mm256_set1_epi8(0x0C)), 2));
      q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low), _mm256_and_si256(h, _mm256_set1_epi8(0x30)));
      q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low),
                             _mm256_srli_epi16(_mm256_and_si256(h, _mm256_set1_epi8(char(0xC0))), 2));
      for (int k = 0; k < 4; ++k) {
        const __m256i pair = _mm256_cvtepi8_epi16(
            _mm_shuffle_epi8(sc, _mm_load_si128(reinterpret_cast<const __m128i*>(kPairs[4 * n + k]))));
        for (int t = 0; t < N; ++t) {
          const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[t][i].q + 128 * n + 32 * k));
          sum[t] = _mm256_add_epi32(sum[t], _mm256_madd_epi16(_mm256_maddubs_epi16(q[k], x), pair));
        }
      }
    }
    for (int t = 0; t < N; ++t)
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * a[t][i].d), _mm256_cvtepi32_ps(sum[t]), acc[t]);
  }
  for (int t = 0; t < N; ++t) out[t] = hsum(_mm256_sub_ps(acc[t], offset[t]));
}

// a Q8_0 or Q5_0 block's 32 weights as signed bytes
inline __m256i q8_0_weights(const uint8_t* w) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 2)); }

inline __m256i q5_0_weights(const uint8_t* w) {
  const __m256i low = _mm256_set1_epi8(0xF);
  // byte i of the 32 takes bit i of the fifth bits: spread the 4 bytes 8 ways, then test one bit each
  const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                          2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i bit = _mm256_set1_epi64x(0x8040201008040201LL);
  uint32_t fifth;
  std::memcpy(&fifth, w + 2, 4);
  const __m128i nib = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 6));
  const __m256i q4 = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(nib, 4), nib), low);
  const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32(int(fifth)), spread), bit), bit);
  return _mm256_sub_epi8(_mm256_or_si256(q4, _mm256_and_si256(set, _mm256_set1_epi8(0x10))), _mm256_set1_epi8(16));
}

template <int N, int Bytes, __m256i (*Weights)(const uint8_t*)>
void dot_32(const uint8_t* w, const Act0* const* a, int64_t blocks, float* out) {
  __m256 acc[N];
  for (int t = 0; t < N; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < blocks; ++i, w += Bytes) {
    _mm_prefetch(reinterpret_cast<const char*>(w + kAhead), _MM_HINT_T0);
    const __m256i q = Weights(w);
    const __m256i mag = _mm256_sign_epi8(q, q);
    const float d = half_to_float(w);
    for (int t = 0; t < N; ++t) {
      const __m256i x = _mm256_sign_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[t][i].q)), q);
      const __m256i dot = _mm256_madd_epi16(_mm256_maddubs_epi16(mag, x), _mm256_set1_epi16(1));
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * a[t][i].d), _mm256_cvtepi32_ps(dot), acc[t]);
    }
  }
  for (int t = 0; t < N; ++t) out[t] = hsum(acc[t]);
}

// one weight row against activation rows a[0..n): tiles of up to 8 share each unpacked weight block
template <typename Act, void (*D1)(const uint8_t*, const Act* const*, int64_t, float*),
          void (*D2)(const uint8_t*, const Act* const*, int64_t, float*),
          void (*D4)(const uint8_t*, const Act* const*, int64_t, float*),
          void (*D8)(const uint8_t*, const Act* const*, int64_t, float*)>
void row_times(const uint8_t* w, const Act* acts, int64_t per_row, int64_t n, int64_t blocks, float* out) {
  const Act* rows[8];
  int64_t t = 0;
  for (; t + 8 <= n; t += 8) {
    for (int k = 0; k < 8; ++k) rows[k] = acts + (t + k) * per_row;
    D8(w, rows, blocks, out + t);
  }
  for (; t + 4 <= n; t += 4) {
    for (int k = 0; k < 4; ++k) rows[k] = acts + (t + k) * per_row;
    D4(w, rows, blocks, out + t);
  }
  for (; t + 2 <= n; t += 2) {
    for (int k = 0; k < 2; ++k) rows[k] = acts + (t + k) * per_row;
    D2(w, rows, blocks, out + t);
  }
  for (; t < n; ++t) {
    rows[0] = acts + t * per_row;
    D1(w, rows, blocks, out + t);
  }
}

// -- dequantization (embedding rows; tests) ----------------------------------------------------------

void dequantize_row(const uint8_t* w, int64_t kind, int64_t n, float* out) {
  if (kind == kF32) {
    std::memcpy(out, w, n * 4);
    return;
  }
  const int64_t blocks = n / block_values(kind);
  for (int64_t i = 0; i < blocks; ++i) {
    if (kind == kQ8_0) {
      const uint8_t* b = w + i * 34;
      const float d = half_to_float(b);
      for (int j = 0; j < 32; ++j) out[i * 32 + j] = d * float(int8_t(b[2 + j]));
    } else if (kind == kQ5_0) {
      const uint8_t* b = w + i * 22;
      const float d = half_to_float(b);
      uint32_t fifth;
      std::memcpy(&fifth, b + 2, 4);
      for (int j = 0; j < 16; ++j) {
        const int lo = (b[6 + j] & 0xF) | (((fifth >> j) & 1) << 4);
        const int hi = (b[6 + j] >> 4) | (((fifth >> (j + 16)) & 1) << 4);
        out[i * 32 + j] = d * float(lo - 16);
        out[i * 32 + j + 16] = d * float(hi - 16);
      }
    } else if (kind == kQ4_K) {
      const uint8_t* b = w + i * 144;
      const float d = half_to_float(b), dmin = half_to_float(b + 2);
      alignas(16) uint8_t both[16];
      _mm_store_si128(reinterpret_cast<__m128i*>(both), q4k_scales(b + 4));
      const uint8_t *sc = both, *mn = both + 8;
      float* o = out + i * 256;
      for (int c = 0; c < 4; ++c)
        for (int l = 0; l < 32; ++l) {
          const uint8_t byte = b[16 + 32 * c + l];
          o[64 * c + l] = d * sc[2 * c] * (byte & 0xF) - dmin * mn[2 * c];
          o[64 * c + 32 + l] = d * sc[2 * c + 1] * (byte >> 4) - dmin * mn[2 * c + 1];
        }
    } else {  // Q6_K
      const uint8_t* b = w + i * 210;
      const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
      const float d = half_to_float(b + 208);
      float* o = out + i * 256;
      for (int n2 = 0; n2 < 2; ++n2) {
        const uint8_t *ql = b + 64 * n2, *qh = b + 128 + 32 * n2;
        const int8_t* s = sc + 8 * n2;
        float* oh = o + 128 * n2;
        for (int l = 0; l < 32; ++l) {
          oh[l] = d * s[l / 16] * float(((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
          oh[l + 32] = d * s[2 + l / 16] * float(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
          oh[l + 64] = d * s[4 + l / 16] * float(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
          oh[l + 96] = d * s[6 + l / 16] * float(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
        }
      }
    }
  }
}

void check_weight(const torch::Tensor& raw, int64_t kind, int64_t rows, int64_t cols) {
  TORCH_CHECK(raw.scalar_type() == torch::kUInt8 && raw.is_contiguous(), "quantized weight: contiguous uint8 bytes");
  TORCH_CHECK(cols % block_values(kind) == 0, "quantized weight: ", cols, " columns is not whole blocks of type ", kind);
  TORCH_CHECK(raw.numel() == rows * cols / block_values(kind) * block_bytes(kind),
              "quantized weight: ", raw.numel(), " bytes for ", rows, " x ", cols, " of type ", kind);
}

}  // namespace

// x (B, in) float32 times the row-concatenation of weights `raws` (each (rows[i], in) in GGUF blocks of
// type kinds[i]) -> (B, sum rows), plus bias (sum rows) and residual (B, sum rows) when given.
torch::Tensor quant_matmul(const torch::Tensor& x, const std::vector<torch::Tensor>& raws,
                           const std::vector<int64_t>& kinds, const std::vector<int64_t>& rows,
                           c10::optional<torch::Tensor> bias, c10::optional<torch::Tensor> residual) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat && x.is_contiguous(), "quant_matmul: x (B, in) float32");
  TORCH_CHECK(raws.size() == kinds.size() && raws.size() == rows.size() && !raws.empty(), "quant_matmul: one kind and row count per weight");
  const int64_t batch = x.size(0), in = x.size(1);
  std::vector<int64_t> start(raws.size() + 1, 0);
  bool need_k = false, need_0 = false;
  for (size_t p = 0; p < raws.size(); ++p) {
    check_weight(raws[p], kinds[p], rows[p], in);
    TORCH_CHECK(kinds[p] != kF32, "quant_matmul: F32 weights go through BLAS");
    start[p + 1] = start[p] + rows[p];
    (kinds[p] == kQ4_K || kinds[p] == kQ6_K ? need_k : need_0) = true;
  }
  const int64_t out = start.back();
  TORCH_CHECK(!bias.has_value() || (bias->numel() == out && bias->scalar_type() == torch::kFloat && bias->is_contiguous()),
              "quant_matmul: bias (", out, ",) float32");
  TORCH_CHECK(!residual.has_value() || (residual->dim() == 2 && residual->size(0) == batch && residual->size(1) == out),
              "quant_matmul: residual (B, ", out, ")");
  // the activations, quantized once for every weight of the call
  std::vector<ActK> ak(need_k ? batch * in / kSuper : 0);
  std::vector<Act0> a0(need_0 ? batch * in / kSmall : 0);
  TORCH_CHECK(!need_k || in % kSuper == 0, "quant_matmul: K-type weights need whole 256-blocks");
  const float* xp = x.data_ptr<float>();
  at::parallel_for(0, batch, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      if (need_k) quantize_k(xp + b * in, ak.data() + b * (in / kSuper), in / kSuper);
      if (need_0) quantize_0(xp + b * in, a0.data() + b * (in / kSmall), in / kSmall);
    }
  });
  torch::Tensor y = residual.has_value() ? residual->to(torch::kFloat).contiguous().clone()
                                         : torch::zeros({batch, out}, x.options());
  float* yp = y.data_ptr<float>();
  const float* bp = bias.has_value() ? bias->data_ptr<float>() : nullptr;
  // per weight: its bytes and row stride, read once here (a tensor's data_ptr costs more than a block's dot)
  std::vector<const uint8_t*> base(raws.size());
  std::vector<int64_t> stride(raws.size());
  for (size_t p = 0; p < raws.size(); ++p) {
    base[p] = raws[p].data_ptr<uint8_t>();
    stride[p] = in / block_values(kinds[p]) * block_bytes(kinds[p]);
  }
  const int64_t nk = in / kSuper, n0 = in / kSmall;
  // Blocked for prefill: a group of kGroup weight rows (tens of KB: stays in L2) meets the activation rows
  // 8 at a time (a tile stays in L1), so each activation byte is read from L2 once per group, not once per
  // weight row, and each weight row is read from memory once. Decode (one activation row) is one tile.
  at::parallel_for(0, out, kGroup, [&](int64_t r0, int64_t r1) {
    float dots[kTile];
    for (size_t p = 0; p < raws.size(); ++p) {  // each weight's share of [r0, r1)
      const int64_t first = std::max(r0, start[p]), last = std::min(r1, start[p + 1]);
      for (int64_t g = first; g < last; g += kGroup) {
        const int64_t g1 = std::min(g + kGroup, last);
        for (int64_t b0 = 0; b0 < batch; b0 += kTile) {
          const int64_t n = std::min(kTile, batch - b0);
          for (int64_t r = g; r < g1; ++r) {
            const uint8_t* w = base[p] + (r - start[p]) * stride[p];
            switch (kinds[p]) {
              case kQ4_K:
                row_times<ActK, dot_q4_k<1>, dot_q4_k<2>, dot_q4_k<4>, dot_q4_k<8>>(w, ak.data() + b0 * nk, nk, n, nk, dots);
                break;
              case kQ6_K:
                row_times<ActK, dot_q6_k<1>, dot_q6_k<2>, dot_q6_k<4>, dot_q6_k<8>>(w, ak.data() + b0 * nk, nk, n, nk, dots);
                break;
              case kQ8_0:
                row_times<Act0, dot_32<1, 34, q8_0_weights>, dot_32<2, 34, q8_0_weights>, dot_32<4, 34, q8_0_weights>,
                          dot_32<8, 34, q8_0_weights>>(w, a0.data() + b0 * n0, n0, n, n0, dots);
                break;
              default:
                row_times<Act0, dot_32<1, 22, q5_0_weights>, dot_32<2, 22, q5_0_weights>, dot_32<4, 22, q5_0_weights>,
                          dot_32<8, 22, q5_0_weights>>(w, a0.data() + b0 * n0, n0, n, n0, dots);
            }
            const float add = bp ? bp[r] : 0.0f;
            for (int64_t k = 0; k < n; ++k) yp[(b0 + k) * out + r] += dots[k] + add;
          }
        }
      }
    }
  });
  return y;
}

// rows `ids` of an (n, cols) weight in GGUF blocks of type `kind` -> (len(ids), cols) float32
torch::Tensor dequantize_rows(const torch::Tensor& raw, int64_t kind, int64_t n, int64_t cols, const torch::Tensor& ids) {
  check_weight(raw, kind, n, cols);
  auto idx = ids.to(torch::kLong).contiguous();
  const int64_t m = idx.numel(), row_bytes = cols / block_values(kind) * block_bytes(kind);
  auto out = torch::empty({m, cols}, torch::dtype(torch::kFloat));
  const int64_t* ip = idx.data_ptr<int64_t>();
  for (int64_t i = 0; i < m; ++i) {
    TORCH_CHECK(ip[i] >= 0 && ip[i] < n, "dequantize_rows: row ", ip[i], " out of 0..", n - 1);
    dequantize_row(raw.data_ptr<uint8_t>() + ip[i] * row_bytes, kind, cols, out.data_ptr<float>() + i * cols);
  }
  return out;
}
