// AVX2+FMA+F16C row primitives of kernels/cpu/quant_attention.h, plugged into the shared block
// (quant_attention_impl.h). Every function here is compiled for that target (pragma below) and
// only called after the run-time check in quant_attention.cpp.
//
// Decoding 8 codes: their run of `bits` bytes (2, 3, 4: one 32-bit word; 8 bits: 8 bytes
// widened) is broadcast to the 8 lanes and shifted right by lane * bits (vpsrlvd), then masked:
// lane i holds code i. Integer codes become floats by one conversion; codebook levels come from
// the 2^bits-entry table held in registers (vpermps on 8 entries; 16 entries: two vpermps and a
// blend on bit 3 of the code), so a row's levels are produced without a memory gather.
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
    uint32_t w = 0;
    std::memcpy(&w, p, kBits);
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

struct Avx2Ops {
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
