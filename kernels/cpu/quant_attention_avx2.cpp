// AVX2+FMA+F16C row primitives of kernels/cpu/quant_attention.h, plugged into the shared block
// (quant_attention_impl.h). Every function here is compiled for that target (pragma below) and
// only called after the run-time check in quant_attention.cpp.
//
// Decoding 8 codes: their run of `bits` bytes (2, 3, 4: one 32-bit word; 8 bits: 8 bytes
// widened) is broadcast to the 8 lanes and shifted right by lane * bits (vpsrlvd), then masked:
// lane i holds code i. Integer codes become floats by one conversion; codebook levels come from
// the 2^bits-entry table held in registers (vpermps on 8 entries; 16 entries: two vpermps and a
// blend on bit 3 of the code), so a row's levels are produced without a memory gather.
//
// Over a block's quantized slots (range_scores / range_values) nothing is unpacked to memory:
//   scores  slot by slot, up to 4 query rows' accumulators in registers, q (kvquant: q * key
//           scale) times the decoded chunk; int: each group's partial sum times its fp16 scale;
//           8 slots' accumulators reduced at once (hadd tree);
//   values  channel chunk by chunk, the slots of the block inner, up to 4 rows' accumulators in
//           registers, weights p_j * scale_j (per group for int) staged once per group.
// The softmax's exp is vectorised (exp_nonpositive). Zero points, outliers and sinks are the
// shared block's (quant_attention_impl.h).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/cpu/kivi_attention_impl.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

// After the pragma: the shared block (internal linkage) is compiled for this target, so the row
// primitives below inline into it.
#include "kernels/cpu/quant_attention_impl.h"

namespace kvb::kernels::quant_detail {
namespace {

inline float hsum(__m256 v) {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_movehdup_ps(x));
  return _mm_cvtss_f32(x);
}

// The 8 codes of run r (lane i: code i) for 2, 3 or 4 bits.
template <int kBits>
inline __m256i codes8(const uint8_t* p) {
  if constexpr (kBits == 8) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  } else {
    uint32_t w;
    if constexpr (kBits == 3) {
      w = static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
          static_cast<uint32_t>(p[2]) << 16;
    } else {
      w = 0;
      std::memcpy(&w, p, kBits);
    }
    const __m256i shifts = _mm256_setr_epi32(0, kBits, 2 * kBits, 3 * kBits, 4 * kBits,
                                             5 * kBits, 6 * kBits, 7 * kBits);
    return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(w)), shifts),
                            _mm256_set1_epi32((1 << kBits) - 1));
  }
}

template <int kBits>
inline void unpack_int_t(const uint8_t* p, int64_t d, float* out) {
  for (int64_t r = 0; r < d / 8; ++r)
    _mm256_storeu_ps(out + r * 8, _mm256_cvtepi32_ps(codes8<kBits>(p + r * kBits)));
}

template <int kBits>
inline void unpack_lut_t(const uint8_t* p, int64_t d, const float* cb, float* out) {
  const __m256 lo = _mm256_loadu_ps(cb), hi = _mm256_loadu_ps(cb + 8);
  for (int64_t r = 0; r < d / 8; ++r) {
    const __m256i idx = codes8<kBits>(p + r * kBits);
    __m256 v = _mm256_permutevar8x32_ps(lo, idx);
    if constexpr (kBits == 4)
      v = _mm256_blendv_ps(v, _mm256_permutevar8x32_ps(hi, idx),
                           _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
    _mm256_storeu_ps(out + r * 8, v);
  }
}

// 8 codes as floats: code values (int) or codebook levels (lo: levels 0-7, hi: 8-15).
template <int kBits, bool kLut>
inline __m256 decode8(const uint8_t* p, __m256 lo, __m256 hi) {
  const __m256i idx = codes8<kBits>(p);
  if constexpr (!kLut) {
    return _mm256_cvtepi32_ps(idx);
  } else {
    __m256 v = _mm256_permutevar8x32_ps(lo, idx);
    if constexpr (kBits == 4)
      v = _mm256_blendv_ps(v, _mm256_permutevar8x32_ps(hi, idx),
                           _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
    return v;
  }
}

// Lane i of the result: the sum of the 8 lanes of a[i].
inline __m256 reduce8(const __m256* a) {
  const __m256 h01 = _mm256_hadd_ps(a[0], a[1]), h23 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 h45 = _mm256_hadd_ps(a[4], a[5]), h67 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 h0123 = _mm256_hadd_ps(h01, h23), h4567 = _mm256_hadd_ps(h45, h67);
  return _mm256_add_ps(_mm256_permute2f128_ps(h0123, h4567, 0x20),
                       _mm256_permute2f128_ps(h0123, h4567, 0x31));
}

// Scores of slots [js, j1) for query rows [m0, m0 + kMT): per slot the codes are decoded in
// registers chunk by chunk (8 channels) and multiplied into kMT accumulators; the accumulators
// of 8 consecutive slots are reduced together (reduce8).
template <int kBits, bool kLut, int kMT>
void scores_tile(const Problem& p, int64_t b, int64_t h, int64_t js, int64_t j1, const float* qq,
                 int64_t m0, float* out, int64_t stride) {
  const int64_t d = p.d, chunks = d / 8, gch = kLut ? chunks : p.group / 8;
  const __m256 lo = _mm256_loadu_ps(p.kcb), hi = _mm256_loadu_ps(p.kcb + 8);
  alignas(32) __m256 stage[kMT][8];
  for (int64_t jb = js; jb < j1; jb += 8) {
    const int64_t cnt = std::min<int64_t>(8, j1 - jb);
    for (int64_t k = 0; k < cnt; ++k) {
      const uint8_t* row = p.kq.row(b, h, jb + k);
      __m256 acc[kMT];
      for (int m = 0; m < kMT; ++m) acc[m] = _mm256_setzero_ps();
      if constexpr (kLut) {
        for (int64_t r = 0; r < chunks; ++r) {
          const __m256 v = decode8<kBits, true>(row + r * kBits, lo, hi);
          for (int m = 0; m < kMT; ++m)
            acc[m] = _mm256_fmadd_ps(_mm256_loadu_ps(qq + (m0 + m) * d + r * 8), v, acc[m]);
        }
      } else {
        const uint16_t* s = p.ks.row(b, h, jb + k);
        for (int64_t g0 = 0; g0 < chunks; g0 += gch) {
          __m256 ag[kMT];
          for (int m = 0; m < kMT; ++m) ag[m] = _mm256_setzero_ps();
          for (int64_t r = g0; r < g0 + gch; ++r) {
            const __m256 v = decode8<kBits, false>(row + r * kBits, lo, hi);
            for (int m = 0; m < kMT; ++m)
              ag[m] = _mm256_fmadd_ps(_mm256_loadu_ps(qq + (m0 + m) * d + r * 8), v, ag[m]);
          }
          const __m256 sg = _mm256_set1_ps(_cvtsh_ss(s[g0 / gch]));
          for (int m = 0; m < kMT; ++m) acc[m] = _mm256_fmadd_ps(sg, ag[m], acc[m]);
        }
      }
      for (int m = 0; m < kMT; ++m) stage[m][k] = acc[m];
    }
    for (int m = 0; m < kMT; ++m) {
      for (int64_t k = cnt; k < 8; ++k) stage[m][k] = _mm256_setzero_ps();
      alignas(32) float r8[8];
      _mm256_store_ps(r8, reduce8(stage[m]));
      for (int64_t k = 0; k < cnt; ++k) out[(m0 + m) * stride + (jb - js) + k] = r8[k];
    }
  }
}

// Values of slots [js, j1): channel chunk by chunk, kMT rows' accumulators stay in registers
// over every slot; ws [kMT, n] the slots' weights times their scale for the chunk's group.
template <int kBits, bool kLut, int kMT>
void values_tile(const Problem& p, int64_t b, int64_t h, int64_t js, int64_t j1, int64_t r0,
                 int64_t r1, const float* ws, int64_t n, int64_t m0, float* o) {
  const __m256 lo = _mm256_loadu_ps(p.vcb), hi = _mm256_loadu_ps(p.vcb + 8);
  const int64_t d = p.d;
  for (int64_t r = r0; r < r1; ++r) {
    __m256 acc[kMT];
    for (int m = 0; m < kMT; ++m) acc[m] = _mm256_setzero_ps();
    for (int64_t j = js; j < j1; ++j) {
      const __m256 v = decode8<kBits, kLut>(p.vq.row(b, h, j) + r * kBits, lo, hi);
      for (int m = 0; m < kMT; ++m)
        acc[m] = _mm256_fmadd_ps(_mm256_broadcast_ss(ws + m * n + (j - js)), v, acc[m]);
    }
    for (int m = 0; m < kMT; ++m) {
      float* dst = o + (m0 + m) * d + r * 8;
      _mm256_storeu_ps(dst, _mm256_add_ps(_mm256_loadu_ps(dst), acc[m]));
    }
  }
}

template <int kBits, bool kLut>
void range_scores_t(const Problem& p, int64_t b, int64_t h, int64_t js, int64_t j1,
                    const float* qq, int64_t m_rows, float* out, int64_t stride) {
  int64_t m0 = 0;
  for (; m0 + 4 <= m_rows; m0 += 4) scores_tile<kBits, kLut, 4>(p, b, h, js, j1, qq, m0, out, stride);
  switch (m_rows - m0) {
    case 3: scores_tile<kBits, kLut, 3>(p, b, h, js, j1, qq, m0, out, stride); break;
    case 2: scores_tile<kBits, kLut, 2>(p, b, h, js, j1, qq, m0, out, stride); break;
    case 1: scores_tile<kBits, kLut, 1>(p, b, h, js, j1, qq, m0, out, stride); break;
    default: break;
  }
}

template <int kBits, bool kLut>
void range_values_t(const Problem& p, int64_t b, int64_t h, int64_t js, int64_t j1,
                    const float* w, int64_t stride, int64_t m_rows, float* o) {
  const int64_t n = j1 - js, chunks = p.d / 8, gch = kLut ? chunks : p.group / 8;
  thread_local std::vector<float> wsb;
  if (wsb.size() < static_cast<size_t>(m_rows * n)) wsb.resize(static_cast<size_t>(m_rows * n));
  float* ws = wsb.data();
  for (int64_t g0 = 0; g0 < chunks; g0 += gch) {
    // ws = w * (kvquant: the slot's value scale; int: its scale of this group)
    for (int64_t j = js; j < j1; ++j) {
      const float sj = kLut ? _cvtsh_ss(*p.vs.row(b, h, j)) : _cvtsh_ss(p.vs.row(b, h, j)[g0 / gch]);
      for (int64_t m = 0; m < m_rows; ++m) ws[m * n + (j - js)] = w[m * stride + (j - js)] * sj;
    }
    int64_t m0 = 0;
    for (; m0 + 4 <= m_rows; m0 += 4)
      values_tile<kBits, kLut, 4>(p, b, h, js, j1, g0, g0 + gch, ws + m0 * n, n, m0, o);
    switch (m_rows - m0) {
      case 3: values_tile<kBits, kLut, 3>(p, b, h, js, j1, g0, g0 + gch, ws + m0 * n, n, m0, o); break;
      case 2: values_tile<kBits, kLut, 2>(p, b, h, js, j1, g0, g0 + gch, ws + m0 * n, n, m0, o); break;
      case 1: values_tile<kBits, kLut, 1>(p, b, h, js, j1, g0, g0 + gch, ws + m0 * n, n, m0, o); break;
      default: break;
    }
  }
}

// exp(x) for x <= 0: 2^n e^r with n = round(x / ln 2), |r| <= ln 2 / 2, e^r by a degree-6
// Taylor polynomial (relative error about 2e-7 there); x below -87 is taken as -87 (e^-87 is
// ~1.6e-38, still a normal float, and far below any weight that matters next to e^0 = 1).
inline __m256 exp_nonpositive(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 y = _mm256_set1_ps(1.0f / 720);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.0f / 120));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.0f / 24));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.0f / 6));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(0.5f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.0f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
  return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(y), e));
}

struct Avx2Ops {
  static void softmax_row(float* r, int64_t n, float* top_out, float* sum_out) {
    float top = -std::numeric_limits<float>::infinity();
    int64_t i = 0;
    if (n >= 8) {
      __m256 vm = _mm256_loadu_ps(r);
      for (i = 8; i + 8 <= n; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(r + i));
      alignas(32) float t[8];
      _mm256_store_ps(t, vm);
      for (float x : t) top = std::max(top, x);
    }
    for (; i < n; ++i) top = std::max(top, r[i]);
    const __m256 vt = _mm256_set1_ps(top);
    __m256 vs = _mm256_setzero_ps();
    for (i = 0; i + 8 <= n; i += 8) {
      const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(r + i), vt));
      _mm256_storeu_ps(r + i, e);
      vs = _mm256_add_ps(vs, e);
    }
    float sum = hsum(vs);
    for (; i < n; ++i) {
      r[i] = std::exp(r[i] - top);
      sum += r[i];
    }
    *top_out = top;
    *sum_out = sum;
  }

  static bool range_scores(const Problem& p, int64_t b, int64_t h, int64_t js, int64_t j1,
                           const float* qq, int64_t m_rows, float* out, int64_t stride) {
    if (j1 <= js) return true;
    if (p.kind == Kind::kLut) {
      switch (p.bits) {
        case 2: range_scores_t<2, true>(p, b, h, js, j1, qq, m_rows, out, stride); return true;
        case 3: range_scores_t<3, true>(p, b, h, js, j1, qq, m_rows, out, stride); return true;
        case 4: range_scores_t<4, true>(p, b, h, js, j1, qq, m_rows, out, stride); return true;
        default: return false;
      }
    }
    switch (p.bits) {
      case 2: range_scores_t<2, false>(p, b, h, js, j1, qq, m_rows, out, stride); return true;
      case 4: range_scores_t<4, false>(p, b, h, js, j1, qq, m_rows, out, stride); return true;
      case 8: range_scores_t<8, false>(p, b, h, js, j1, qq, m_rows, out, stride); return true;
      default: return false;
    }
  }
  static bool range_values(const Problem& p, int64_t b, int64_t h, int64_t js, int64_t j1,
                           const float* w, int64_t stride, int64_t m_rows, float* o) {
    if (j1 <= js) return true;
    if (p.kind == Kind::kLut) {
      switch (p.bits) {
        case 2: range_values_t<2, true>(p, b, h, js, j1, w, stride, m_rows, o); return true;
        case 3: range_values_t<3, true>(p, b, h, js, j1, w, stride, m_rows, o); return true;
        case 4: range_values_t<4, true>(p, b, h, js, j1, w, stride, m_rows, o); return true;
        default: return false;
      }
    }
    switch (p.bits) {
      case 2: range_values_t<2, false>(p, b, h, js, j1, w, stride, m_rows, o); return true;
      case 4: range_values_t<4, false>(p, b, h, js, j1, w, stride, m_rows, o); return true;
      case 8: range_values_t<8, false>(p, b, h, js, j1, w, stride, m_rows, o); return true;
      default: return false;
    }
  }

  static float h2f(uint16_t x) { return _cvtsh_ss(x); }
  static void half_row(const uint16_t* s, int64_t d, float* out) {
    for (int64_t c = 0; c < d; c += 8)
      _mm256_storeu_ps(out + c,
                       _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + c))));
  }
  static void unpack_int(const uint8_t* p, int bits, int64_t d, float* out) {
    switch (bits) {
      case 2: return unpack_int_t<2>(p, d, out);
      case 4: return unpack_int_t<4>(p, d, out);
      default: return unpack_int_t<8>(p, d, out);
    }
  }
  static void unpack_lut(const uint8_t* p, int bits, int64_t d, const float* cb, float* out) {
    switch (bits) {
      case 2: return unpack_lut_t<2>(p, d, cb, out);
      case 3: return unpack_lut_t<3>(p, d, cb, out);
      default: return unpack_lut_t<4>(p, d, cb, out);
    }
  }
  static float dot(const float* a, const float* b, int64_t d) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t c = 0;
    for (; c + 16 <= d; c += 16) {
      acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + c), _mm256_loadu_ps(b + c), acc0);
      acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + c + 8), _mm256_loadu_ps(b + c + 8), acc1);
    }
    if (c < d) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + c), _mm256_loadu_ps(b + c), acc0);
    return hsum(_mm256_add_ps(acc0, acc1));
  }
  static float dot_groups(const float* q, const float* x, const uint16_t* s, int64_t d,
                          int64_t g) {
    __m256 tot = _mm256_setzero_ps();
    for (int64_t gi = 0; gi < d / g; ++gi) {
      __m256 acc = _mm256_setzero_ps();
      for (int64_t c = gi * g; c < (gi + 1) * g; c += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + c), _mm256_loadu_ps(x + c), acc);
      tot = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(s[gi])), acc, tot);
    }
    return hsum(tot);
  }
  static void axpy(float w, const float* x, float* y, int64_t d) {
    const __m256 wv = _mm256_set1_ps(w);
    for (int64_t c = 0; c < d; c += 8)
      _mm256_storeu_ps(y + c, _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + c), _mm256_loadu_ps(y + c)));
  }
  static void axpy_groups(float w, const uint16_t* s, const float* x, float* y, int64_t d,
                          int64_t g) {
    for (int64_t gi = 0; gi < d / g; ++gi) axpy(w * _cvtsh_ss(s[gi]), x + gi * g, y + gi * g, g);
  }
};

}  // namespace

void block_avx2(const Problem& p, int64_t b, int64_t h, int64_t j0, int64_t j1, const float* q,
                float* mx, float* l, float* o) {
  run_block<Avx2Ops>(p, b, h, j0, j1, q, mx, l, o);
}

}  // namespace kvb::kernels::quant_detail

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#else  // not x86: never called (quant_attention_avx2_supports() is false)

#include "kernels/cpu/quant_attention_impl.h"

namespace kvb::kernels::quant_detail {
void block_avx2(const Problem& p, int64_t b, int64_t h, int64_t j0, int64_t j1, const float* q,
                float* mx, float* l, float* o) {
  block_portable(p, b, h, j0, j1, q, mx, l, o);
}
}  // namespace kvb::kernels::quant_detail

#endif
