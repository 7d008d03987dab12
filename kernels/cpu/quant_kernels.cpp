#include "kernels/cpu/quant_kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if (defined(__x86_64__) || defined(__i386__)) && defined(__SSE2__)
#include <immintrin.h>
#define KVB_QUANT_AVX2 1  // AVX2 code beside the baseline, chosen at run time
#endif

#include "common/check.h"

namespace kvb::kernels {
namespace {

// Strided access to a [B, H, N, X] tensor whose last two dims are contiguous.
template <typename T>
struct Rows {
  T* base;
  int64_t sb, sh, h, n, x;
  Rows(const torch::Tensor& t, const char* what) {
    KVB_CHECK(t.dim() == 4, what, ": expected a 4-D tensor, got ", t.sizes());
    KVB_CHECK(t.stride(3) == 1 && (t.size(2) <= 1 || t.stride(2) == t.size(3)), what,
              ": the last two dims must be contiguous");
    base = static_cast<T*>(t.data_ptr());
    sb = t.stride(0);
    sh = t.stride(1);
    h = t.size(1);
    n = t.size(2);
    x = t.size(3);
  }
  // Row i of (batch, head) pair bh = b * H + h; rows of one pair are x elements apart.
  T* at(int64_t bh, int64_t i) const { return base + (bh / h) * sb + (bh % h) * sh + i * x; }
  T* pair(int64_t bh) const { return base + (bh / h) * sb + (bh % h) * sh; }  // = at(bh, 0)
};

// fp16 tensor as fp32 (torch's vectorized conversion), same shape, contiguous.
torch::Tensor as_f32(const torch::Tensor& t) { return t.to(torch::kFloat32).contiguous(); }

void check_common(const torch::Tensor& x, const torch::Tensor& codes, int bits) {
  KVB_CHECK(bits == 2 || bits == 4 || bits == 8, "quant kernels: bits must be 2, 4 or 8, got ", bits);
  KVB_CHECK(x.scalar_type() == torch::kFloat32, "quant kernels: values must be float32");
  KVB_CHECK(codes.scalar_type() == torch::kUInt8, "quant kernels: codes must be uint8");
  KVB_CHECK(x.size(3) % (8 / bits) == 0, "quant kernels: D must be a multiple of ", 8 / bits);
  KVB_CHECK(codes.size(3) == x.size(3) * bits / 8, "quant kernels: packed width mismatch");
  for (int d = 0; d < 3; ++d)
    KVB_CHECK(codes.size(d) == x.size(d), "quant kernels: codes and values disagree in dim ", d);
}

// Packing: code of channel c sits in byte c / (8/bits) at bits [(c % (8/bits)) * bits, ...):
// 8/bits consecutive channels per byte, the first in the lowest bits.
inline void pack_row(const uint8_t* q, int64_t d, int bits, uint8_t* out) {
  const int per = 8 / bits;
  for (int64_t j = 0; j < d / per; ++j) {
    unsigned b = 0;
    for (int u = 0; u < per; ++u) b |= static_cast<unsigned>(q[j * per + u]) << (u * bits);
    out[j] = static_cast<uint8_t>(b);
  }
}

// out[ch] = code(ch) * s[ch] + z[ch] for channels [lo, hi), lo and hi multiples of 8/bits.
template <int kBits>
inline void decode_span(const uint8_t* __restrict c, int64_t lo, int64_t hi, const float* __restrict s,
                        const float* __restrict z, float* __restrict out) {
  constexpr int kP = 8 / kBits;
  constexpr unsigned kMask = (1u << kBits) - 1;
  for (int64_t j = lo / kP; j < hi / kP; ++j) {
    const unsigned b = c[j];
    for (int u = 0; u < kP; ++u)
      out[j * kP + u] = static_cast<float>((b >> (u * kBits)) & kMask) * s[j * kP + u] + z[j * kP + u];
  }
}

// Same with one scale/zero for the whole span.
template <int kBits>
inline void decode_span_scalar(const uint8_t* __restrict c, int64_t lo, int64_t hi, float s, float z,
                               float* __restrict out) {
  constexpr int kP = 8 / kBits;
  constexpr unsigned kMask = (1u << kBits) - 1;
  for (int64_t j = lo / kP; j < hi / kP; ++j) {
    const unsigned b = c[j];
    for (int u = 0; u < kP; ++u) out[j * kP + u] = static_cast<float>((b >> (u * kBits)) & kMask) * s + z;
  }
}

// 2-bit codes of every byte value as 4 floats: decoding a byte is then one 16-byte load that
// the compiler fuses with the multiply-add into single vector operations.
struct alignas(16) Quad {
  float v[4];
};
const Quad* lut2() {
  static const auto table = [] {
    std::vector<Quad> t(256);
    for (unsigned b = 0; b < 256; ++b)
      for (unsigned u = 0; u < 4; ++u) t[b].v[u] = static_cast<float>((b >> (2 * u)) & 3u);
    return t;
  }();
  return table.data();
}

// o[0..4) = q[0..4) * s + z, multiply then add (no fused multiply-add: same rounding as the
// scalar formula), one SSE2 operation each where available.
inline void quad_fma(const float* __restrict q, float s, float z, float* __restrict o) {
#if defined(__SSE2__)
  _mm_storeu_ps(o, _mm_add_ps(_mm_mul_ps(_mm_load_ps(q), _mm_set1_ps(s)), _mm_set1_ps(z)));
#else
  for (int u = 0; u < 4; ++u) o[u] = q[u] * s + z;
#endif
}
inline void quad_fma(const float* __restrict q, const float* __restrict s, const float* __restrict z,
                     float* __restrict o) {
#if defined(__SSE2__)
  _mm_storeu_ps(o, _mm_add_ps(_mm_mul_ps(_mm_load_ps(q), _mm_loadu_ps(s)), _mm_loadu_ps(z)));
#else
  for (int u = 0; u < 4; ++u) o[u] = q[u] * s[u] + z[u];
#endif
}

// Blocks of rows with head dim kD and value group kG fixed at compile time: every loop has a
// constant trip count, so the compiler emits straight vector code (no alias checks or
// remainders). Token-wise: s/z hold D/kG values per row. Channel-wise: D values for all rows.
template <int kBits, int kD, int kG>
void decode_rows_fixed(const uint8_t* __restrict c, const float* __restrict s, const float* __restrict z,
                       float* __restrict o, int64_t rows) {
  constexpr int kP = 8 / kBits;
  constexpr unsigned kMask = (1u << kBits) - 1;
  const Quad* __restrict t2 = lut2();
  for (int64_t r = 0; r < rows; ++r, c += kD / kP, o += kD, s += kD / kG, z += kD / kG) {
    for (int g = 0; g < kD / kG; ++g) {
      const float sg = s[g], zg = z[g];
      for (int j = g * kG / kP; j < (g + 1) * kG / kP; ++j) {
        if constexpr (kBits == 2) {
          quad_fma(t2[c[j]].v, sg, zg, o + j * 4);
        } else {
          const unsigned b = c[j];
          for (int u = 0; u < kP; ++u) o[j * kP + u] = static_cast<float>((b >> (u * kBits)) & kMask) * sg + zg;
        }
      }
    }
  }
}

template <int kBits, int kD>
void decode_cols_fixed(const uint8_t* __restrict c, const float* __restrict s, const float* __restrict z,
                       float* __restrict o, int64_t rows) {
  constexpr int kP = 8 / kBits;
  constexpr unsigned kMask = (1u << kBits) - 1;
  const Quad* __restrict t2 = lut2();
  for (int64_t r = 0; r < rows; ++r, c += kD / kP, o += kD) {
    for (int j = 0; j < kD / kP; ++j) {
      if constexpr (kBits == 2) {
        quad_fma(t2[c[j]].v, s + j * 4, z + j * 4, o + j * 4);
      } else {
        const unsigned b = c[j];
        for (int u = 0; u < kP; ++u)
          o[j * kP + u] = static_cast<float>((b >> (u * kBits)) & kMask) * s[j * kP + u] + z[j * kP + u];
      }
    }
  }
}

using BlockFn = void (*)(const uint8_t*, const float*, const float*, float*, int64_t);

template <int kBits>
BlockFn fixed_rows_fn(int64_t d, int64_t group) {
  if (d == 64 && group == 64) return decode_rows_fixed<kBits, 64, 64>;
  if (d == 64 && group == 32) return decode_rows_fixed<kBits, 64, 32>;
  if (d == 64 && group == 16) return decode_rows_fixed<kBits, 64, 16>;
  if (d == 128 && group == 128) return decode_rows_fixed<kBits, 128, 128>;
  if (d == 128 && group == 64) return decode_rows_fixed<kBits, 128, 64>;
  if (d == 128 && group == 32) return decode_rows_fixed<kBits, 128, 32>;
  return nullptr;
}

template <int kBits>
BlockFn fixed_cols_fn(int64_t d) {
  if (d == 64) return decode_cols_fixed<kBits, 64>;
  if (d == 128) return decode_cols_fixed<kBits, 128>;
  return nullptr;
}

// fp16-rounded scale and zero of a group with the given min and max.
inline void scale_zero(float mn, float mx, int bits, at::Half& s16, at::Half& z16) {
  s16 = at::Half((mx - mn) / static_cast<float>((1 << bits) - 1));
  z16 = at::Half(mn);
}

inline uint8_t code_of(float x, float s, float z, float qmax) {
  if (!(s > 0)) return 0;
  float q = std::nearbyint((x - z) / s);
  return static_cast<uint8_t>(std::min(std::max(q, 0.0f), qmax));
}

#if defined(__SSE2__)
// Vectorized quantization (SSE2, the x86-64 baseline), four channels at a time, giving the codes
// of code_of(): (x - zero) / scale in fp32 (a true division, as the scalar formula), clamped to
// [0, 2^bits - 1], then rounded by cvtps2dq in the current rounding mode (half to even by
// default, as std::nearbyint). Clamping before rounding gives the same code, the bounds being
// integers; a NaN quotient becomes 0 (where the scalar cast is undefined).
inline __m128i round_clamped(__m128 v, __m128 qmax) {
  return _mm_cvtps_epi32(_mm_min_ps(_mm_max_ps(v, _mm_setzero_ps()), qmax));
}

// 16 codes (four int32 vectors, each code < 2^kBits, channel order) packed as pack_row() does:
// 8/kBits consecutive codes per byte, the first in the lowest bits; writes 2 * kBits bytes.
template <int kBits>
inline void pack16(__m128i c0, __m128i c1, __m128i c2, __m128i c3, uint8_t* out) {
  const __m128i b = _mm_packus_epi16(_mm_packs_epi32(c0, c1), _mm_packs_epi32(c2, c3));  // 16 x u8
  if constexpr (kBits == 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), b);
  } else if constexpr (kBits == 4) {
    // Per 16-bit lane (c0 | c1 << 8): low byte of lane | lane >> 4 is c0 | c1 << 4.
    __m128i t = _mm_and_si128(_mm_or_si128(b, _mm_srli_epi16(b, 4)), _mm_set1_epi16(0x00FF));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out), _mm_packus_epi16(t, t));
  } else {
    // Per 32-bit lane (c0 | c1 << 8 | c2 << 16 | c3 << 24): lane | lane >> 6 puts c0 | c1 << 2 in
    // bits 0-3 and c2 | c3 << 2 in bits 16-19; folding bits 16-19 onto 4-7 gives the byte.
    __m128i t = _mm_and_si128(_mm_or_si128(b, _mm_srli_epi32(b, 6)), _mm_set1_epi32(0x000F000F));
    t = _mm_and_si128(_mm_or_si128(t, _mm_srli_epi32(t, 12)), _mm_set1_epi32(0xFF));
    t = _mm_packs_epi32(t, t);
    const int32_t v = _mm_cvtsi128_si32(_mm_packus_epi16(t, t));
    std::memcpy(out, &v, 4);
  }
}

// Min and max of n floats (n a multiple of 8), as the scalar loop finds them (mn = x[i] < mn ?
// x[i] : mn from mn = x[0]: a NaN is skipped unless it is x[0]); only the sign of a zero
// extremum may differ.
inline void min_max(const float* x, int64_t n, float& mn, float& mx) {
  __m128 lo0 = _mm_set1_ps(x[0]), lo1 = lo0, hi0 = lo0, hi1 = lo0;
  for (int64_t i = 0; i < n; i += 8) {
    const __m128 a = _mm_loadu_ps(x + i), b = _mm_loadu_ps(x + i + 4);
    lo0 = _mm_min_ps(a, lo0);  // a < lo ? a : lo
    lo1 = _mm_min_ps(b, lo1);
    hi0 = _mm_max_ps(a, hi0);  // a > hi ? a : hi
    hi1 = _mm_max_ps(b, hi1);
  }
  __m128 lo = _mm_min_ps(lo1, lo0), hi = _mm_max_ps(hi1, hi0);
  lo = _mm_min_ps(_mm_movehl_ps(lo, lo), lo);
  hi = _mm_max_ps(_mm_movehl_ps(hi, hi), hi);
  lo = _mm_min_ss(_mm_shuffle_ps(lo, lo, 1), lo);
  hi = _mm_max_ss(_mm_shuffle_ps(hi, hi, 1), hi);
  mn = _mm_cvtss_f32(lo);
  mx = _mm_cvtss_f32(hi);
}

// c10::Half(float) of four lanes: c10's branch-free fp32 -> fp16 rounding (c10/util/Half.h,
// fp16_ieee_from_fp32_value) step for step in SSE2, so the bits are the scalar conversion's for
// every input, NaN included; the fp16 bits in the low 16 bits of each 32-bit lane.
inline __m128i half_bits4(__m128 f) {
  const __m128i flip = _mm_set1_epi32(static_cast<int>(0x80000000u));  // unsigned compares
  const __m128 abs_f = _mm_andnot_ps(_mm_set1_ps(-0.0f), f);
  __m128 base = _mm_mul_ps(_mm_mul_ps(abs_f, _mm_castsi128_ps(_mm_set1_epi32(239 << 23))),
                           _mm_castsi128_ps(_mm_set1_epi32(17 << 23)));
  const __m128i w = _mm_castps_si128(f);
  const __m128i shl1_w = _mm_add_epi32(w, w);
  const __m128i sign = _mm_and_si128(w, flip);
  __m128i bias = _mm_and_si128(shl1_w, _mm_set1_epi32(static_cast<int>(0xFF000000u)));
  const __m128i small =
      _mm_cmplt_epi32(_mm_xor_si128(bias, flip), _mm_xor_si128(_mm_set1_epi32(0x71000000), flip));
  bias =
      _mm_or_si128(_mm_and_si128(small, _mm_set1_epi32(0x71000000)), _mm_andnot_si128(small, bias));
  base = _mm_add_ps(
      _mm_castsi128_ps(_mm_add_epi32(_mm_srli_epi32(bias, 1), _mm_set1_epi32(0x07800000))), base);
  const __m128i bits = _mm_castps_si128(base);
  const __m128i nonsign =
      _mm_add_epi32(_mm_and_si128(_mm_srli_epi32(bits, 13), _mm_set1_epi32(0x00007C00)),
                    _mm_and_si128(bits, _mm_set1_epi32(0x00000FFF)));
  const __m128i nan =
      _mm_cmpgt_epi32(_mm_xor_si128(shl1_w, flip),
                      _mm_xor_si128(_mm_set1_epi32(static_cast<int>(0xFF000000u)), flip));
  const __m128i mag =
      _mm_or_si128(_mm_and_si128(nan, _mm_set1_epi32(0x7E00)), _mm_andnot_si128(nan, nonsign));
  return _mm_or_si128(_mm_srli_epi32(sign, 16), mag);
}

// float(c10::Half) of four fp16 bit patterns (low 16 bits of each lane): c10's
// fp16_ieee_to_fp32_value step for step.
inline __m128 half_value4(__m128i h) {
  const __m128i flip = _mm_set1_epi32(static_cast<int>(0x80000000u));
  const __m128i w = _mm_slli_epi32(h, 16);
  const __m128i sign = _mm_and_si128(w, flip);
  const __m128i two_w = _mm_add_epi32(w, w);
  const __m128 normalized = _mm_mul_ps(
      _mm_castsi128_ps(_mm_add_epi32(_mm_srli_epi32(two_w, 4), _mm_set1_epi32(0xE0 << 23))),
      _mm_castsi128_ps(_mm_set1_epi32(15 << 23)));
  const __m128 denormalized = _mm_sub_ps(
      _mm_castsi128_ps(_mm_or_si128(_mm_srli_epi32(two_w, 17), _mm_set1_epi32(126 << 23))),
      _mm_set1_ps(0.5f));
  const __m128i denorm =
      _mm_cmplt_epi32(_mm_xor_si128(two_w, flip), _mm_xor_si128(_mm_set1_epi32(1 << 27), flip));
  const __m128i r = _mm_or_si128(_mm_and_si128(denorm, _mm_castps_si128(denormalized)),
                                 _mm_andnot_si128(denorm, _mm_castps_si128(normalized)));
  return _mm_castsi128_ps(_mm_or_si128(sign, r));
}

// scale_zero() of four groups from their minima and maxima: the fp16 scale and zero to s16 and
// z16 (4 each), their float values to s and z.
template <int kBits>
inline void scale_zero4(const float* mn, const float* mx, at::Half* s16, at::Half* z16, float* s,
                        float* z) {
  const __m128 lo = _mm_loadu_ps(mn);
  const __m128 range = _mm_div_ps(_mm_sub_ps(_mm_loadu_ps(mx), lo),
                                  _mm_set1_ps(static_cast<float>((1 << kBits) - 1)));
  const __m128i hs = half_bits4(range), hz = half_bits4(lo);
  _mm_storeu_ps(s, half_value4(hs));
  _mm_storeu_ps(z, half_value4(hz));
  // The low 16 bits of each lane, sign-extended so that packs_epi32 keeps them.
  const __m128i ps = _mm_srai_epi32(_mm_slli_epi32(hs, 16), 16);
  const __m128i pz = _mm_srai_epi32(_mm_slli_epi32(hz, 16), 16);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(s16), _mm_packs_epi32(ps, ps));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(z16), _mm_packs_epi32(pz, pz));
}

// Codes of one group of `group` values (a multiple of 16) with scale s > 0 and zero z.
template <int kBits>
inline void quantize_group_simd(const float* __restrict x, int64_t group, float s, float z,
                                uint8_t* __restrict out) {
  const __m128 qmax = _mm_set1_ps(static_cast<float>((1 << kBits) - 1));
  const __m128 vs = _mm_set1_ps(s), vz = _mm_set1_ps(z);
  __m128i q[4];
  for (int64_t c = 0; c < group; c += 16) {
    for (int u = 0; u < 4; ++u)
      q[u] = round_clamped(_mm_div_ps(_mm_sub_ps(_mm_loadu_ps(x + c + 4 * u), vz), vs), qmax);
    pack16<kBits>(q[0], q[1], q[2], q[3], out + c * kBits / 8);
  }
}

#if defined(KVB_QUANT_AVX2)
// quantize_group_simd with eight lanes (AVX2: the same operations per lane, so the same codes),
// packed by the SSE2 pack16 on the two halves of each vector.
template <int kBits>
__attribute__((target("avx2"))) void quantize_group_avx2(const float* __restrict x, int64_t group,
                                                         float s, float z,
                                                         uint8_t* __restrict out) {
  const __m256 qmax = _mm256_set1_ps(static_cast<float>((1 << kBits) - 1));
  const __m256 vs = _mm256_set1_ps(s), vz = _mm256_set1_ps(z), zero = _mm256_setzero_ps();
  for (int64_t c = 0; c < group; c += 16) {
    __m256i q[2];
    for (int u = 0; u < 2; ++u) {
      const __m256 v = _mm256_div_ps(_mm256_sub_ps(_mm256_loadu_ps(x + c + 8 * u), vz), vs);
      q[u] = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, zero), qmax));
    }
    pack16<kBits>(_mm256_castsi256_si128(q[0]), _mm256_extracti128_si256(q[0], 1),
                  _mm256_castsi256_si128(q[1]), _mm256_extracti128_si256(q[1], 1),
                  out + c * kBits / 8);
  }
}
// min_max with eight lanes (n a multiple of 16): the same comparisons, x[i] < mn ? x[i] : mn.
__attribute__((target("avx2"))) void min_max_avx2(const float* x, int64_t n, float& mn, float& mx) {
  __m256 lo0 = _mm256_set1_ps(x[0]), lo1 = lo0, hi0 = lo0, hi1 = lo0;
  for (int64_t i = 0; i < n; i += 16) {
    const __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
    lo0 = _mm256_min_ps(a, lo0);
    lo1 = _mm256_min_ps(b, lo1);
    hi0 = _mm256_max_ps(a, hi0);
    hi1 = _mm256_max_ps(b, hi1);
  }
  const __m256 lo8 = _mm256_min_ps(lo1, lo0), hi8 = _mm256_max_ps(hi1, hi0);
  __m128 lo = _mm_min_ps(_mm256_extractf128_ps(lo8, 1), _mm256_castps256_ps128(lo8));
  __m128 hi = _mm_max_ps(_mm256_extractf128_ps(hi8, 1), _mm256_castps256_ps128(hi8));
  lo = _mm_min_ps(_mm_movehl_ps(lo, lo), lo);
  hi = _mm_max_ps(_mm_movehl_ps(hi, hi), hi);
  lo = _mm_min_ss(_mm_shuffle_ps(lo, lo, 1), lo);
  hi = _mm_max_ss(_mm_shuffle_ps(hi, hi, 1), hi);
  mn = _mm_cvtss_f32(lo);
  mx = _mm_cvtss_f32(hi);
}

// y[c] = x[c] / div[c] for c < d (a multiple of 8), eight lanes at a time.
__attribute__((target("avx2"))) void divide_row_avx2(const float* __restrict x,
                                                     const float* __restrict div, int64_t d,
                                                     float* __restrict y) {
  for (int64_t c = 0; c < d; c += 8)
    _mm256_storeu_ps(y + c, _mm256_div_ps(_mm256_loadu_ps(x + c), _mm256_loadu_ps(div + c)));
}
#endif

// A block of rows (up to kBlockUnits (row, group) units) in three passes: every group's min and
// max, the fp16 scales and zeros four groups at a time, then the codes. Passes over independent
// groups let the core overlap them; a row at a time, each group's chain (min/max, its
// reduction, the fp16 rounding, the divisions) ran serially.
constexpr int kBlockUnits = 64;

template <int kBits>
void quantize_rows_block(const float* const* x, at::Half* const* sp, at::Half* const* zp,
                         uint8_t* const* cp, int rows, int64_t d, int64_t group, bool avx2) {
  const int64_t ng = d / group, units = rows * ng;
  alignas(16) float mn[kBlockUnits + 3] = {}, mx[kBlockUnits + 3] = {};
  alignas(16) float s[kBlockUnits + 3], z[kBlockUnits + 3];
  at::Half s16[kBlockUnits + 3], z16[kBlockUnits + 3];
  for (int j = 0; j < rows; ++j)
    for (int64_t g = 0; g < ng; ++g) {
      const int64_t u = j * ng + g;
#if defined(KVB_QUANT_AVX2)
      if (avx2) {
        min_max_avx2(x[j] + g * group, group, mn[u], mx[u]);
        continue;
      }
#endif
      min_max(x[j] + g * group, group, mn[u], mx[u]);
    }
  for (int64_t u = 0; u < units; u += 4)
    scale_zero4<kBits>(mn + u, mx + u, s16 + u, z16 + u, s + u, z + u);
  for (int j = 0; j < rows; ++j) {
    std::memcpy(sp[j], s16 + j * ng, static_cast<size_t>(ng) * sizeof(at::Half));
    std::memcpy(zp[j], z16 + j * ng, static_cast<size_t>(ng) * sizeof(at::Half));
    for (int64_t g = 0; g < ng; ++g) {
      uint8_t* out = cp[j] + g * group * kBits / 8;
      const int64_t u = j * ng + g;
      if (!(s[u] > 0)) {
        std::memset(out, 0, static_cast<size_t>(group * kBits / 8));
        continue;
      }
#if defined(KVB_QUANT_AVX2)
      if (avx2) {
        quantize_group_avx2<kBits>(x[j] + g * group, group, s[u], z[u], out);
        continue;
      }
#endif
      quantize_group_simd<kBits>(x[j] + g * group, group, s[u], z[u], out);
    }
  }
}

// One group of `rows` rows of d channels (d a multiple of 16) sharing per-channel scale/zero,
// codes to `rows` consecutive rows at out; s, z: scratch of d floats.
template <int kBits>
void quantize_cols_simd(const float* __restrict x0, int64_t rows, int64_t d,
                        at::Half* __restrict sp, at::Half* __restrict zp, float* __restrict s,
                        float* __restrict z, uint8_t* __restrict out) {
  // Per-channel min and max over the rows, as the scalar loop (mn = x < mn ? x : mn, row by row),
  // 16 channels at a time (eight independent chains).
  for (int64_t c = 0; c < d; c += 16) {
    __m128 lo[4], hi[4];
    for (int u = 0; u < 4; ++u) lo[u] = hi[u] = _mm_loadu_ps(x0 + c + 4 * u);
    for (int64_t i = 1; i < rows; ++i)
      for (int u = 0; u < 4; ++u) {
        const __m128 a = _mm_loadu_ps(x0 + i * d + c + 4 * u);
        lo[u] = _mm_min_ps(a, lo[u]);
        hi[u] = _mm_max_ps(a, hi[u]);
      }
    for (int u = 0; u < 4; ++u) {
      _mm_storeu_ps(s + c + 4 * u, lo[u]);  // s, z: min and max until converted below
      _mm_storeu_ps(z + c + 4 * u, hi[u]);
    }
  }
  for (int64_t c = 0; c < d; c += 4)  // min, max -> fp16 scale, zero and their float values
    scale_zero4<kBits>(s + c, z + c, sp + c, zp + c, s + c, z + c);
  // Codes, 16 channels at a time down the rows (their scales, zeros and masks held).
  const __m128 qmax = _mm_set1_ps(static_cast<float>((1 << kBits) - 1));
  const int64_t row_bytes = d * kBits / 8;
  for (int64_t c = 0; c < d; c += 16) {
    __m128 vs[4], vz[4], ok[4];
    for (int u = 0; u < 4; ++u) {
      vs[u] = _mm_loadu_ps(s + c + 4 * u);
      vz[u] = _mm_loadu_ps(z + c + 4 * u);
      ok[u] = _mm_cmpgt_ps(vs[u], _mm_setzero_ps());  // scale 0 (or NaN): code 0, as code_of
    }
    for (int64_t i = 0; i < rows; ++i) {
      const float* xi = x0 + i * d + c;
      __m128i q[4];
      for (int u = 0; u < 4; ++u) {
        const __m128 v = _mm_div_ps(_mm_sub_ps(_mm_loadu_ps(xi + 4 * u), vz[u]), vs[u]);
        q[u] = round_clamped(_mm_and_ps(v, ok[u]), qmax);
      }
      pack16<kBits>(q[0], q[1], q[2], q[3], out + i * row_bytes + c * kBits / 8);
    }
  }
}
#endif

template <typename Fn>
void dispatch_bits(int bits, Fn&& fn) {
  if (bits == 2) fn(std::integral_constant<int, 2>{});
  else if (bits == 4) fn(std::integral_constant<int, 4>{});
  else fn(std::integral_constant<int, 8>{});
}

constexpr int64_t kGrainRows = 64;
constexpr int64_t kBlockRows = 256;  // rows per parallel work unit when dequantizing

}  // namespace

namespace {
std::atomic<bool> g_quant_baseline{false};
}  // namespace

void set_quant_simd(QuantSimd s) { g_quant_baseline = s == QuantSimd::kBaseline; }

bool quant_simd_uses_avx2() {
#if defined(KVB_QUANT_AVX2)
  static const bool has = __builtin_cpu_supports("avx2");
  return has && !g_quant_baseline;
#else
  return false;
#endif
}

namespace {

// quantize_rows, of x / div when div is given ([H, D] float32 contiguous: each row divided by
// its head's row of div first, into a scratch row, the division in fp32).
void quantize_rows_impl(const torch::Tensor& x, const float* div, int bits, int64_t group,
                        const torch::Tensor& codes, const torch::Tensor& scale,
                        const torch::Tensor& zero) {
  check_common(x, codes, bits);
  const int64_t d = x.size(3), n = x.size(2), h = x.size(1), bh = x.size(0) * x.size(1);
  KVB_CHECK(group > 0 && d % group == 0 && group % (8 / bits) == 0, "quantize_rows: bad group ", group);
  KVB_CHECK(scale.size(3) == d / group && zero.size(3) == d / group, "quantize_rows: scale width");
  Rows<const float> xr(x, "quantize_rows x");
  Rows<uint8_t> cr(codes, "quantize_rows codes");
  Rows<at::Half> sr(scale, "quantize_rows scale"), zr(zero, "quantize_rows zero");
  const float qmax = static_cast<float>((1 << bits) - 1);
  const int64_t ng = d / group, dp = d * bits / 8;
  // Rows [r0, r1) of the (b, h) pairs in order: fn(values, scale, zero, codes) per row, the
  // pointers stepped along each pair's rows (no index division per row). The values are x's row,
  // or x's row / div's row of its head in scratch(r) (d floats).
  const bool avx2_div = d % 8 == 0 && quant_simd_uses_avx2();
  auto for_rows = [&](int64_t r0, int64_t r1, auto&& scratch_of, auto&& fn) {
    for (int64_t r = r0; r < r1;) {
      const int64_t p = r / n, i0 = r % n, i1 = std::min(n, i0 + (r1 - r));
      const float* xp = xr.pair(p) + i0 * d;
      at::Half* sp = sr.pair(p) + i0 * ng;
      at::Half* zp = zr.pair(p) + i0 * ng;
      uint8_t* cp = cr.pair(p) + i0 * dp;
      const float* dv = div ? div + (p % h) * d : nullptr;
      for (int64_t i = i0; i < i1; ++i, xp += d, sp += ng, zp += ng, cp += dp) {
        const float* v = xp;
        if (dv) {
          float* scratch = scratch_of(i);
#if defined(KVB_QUANT_AVX2)
          if (avx2_div)
            divide_row_avx2(xp, dv, d, scratch);
          else
#endif
            for (int64_t c = 0; c < d; ++c) scratch[c] = xp[c] / dv[c];
          v = scratch;
        }
        fn(v, sp, zp, cp);
      }
      r += i1 - i0;
    }
  };
#if defined(__SSE2__)
  if (group % 16 == 0 && ng <= kBlockUnits) {
    const int block = static_cast<int>(std::min<int64_t>(16, kBlockUnits / ng));  // rows
    const bool avx2 = quant_simd_uses_avx2();
    dispatch_bits(bits, [&](auto kb) {
      constexpr int kBits = decltype(kb)::value;
      at::parallel_for(0, bh * n, kGrainRows, [&](int64_t r0, int64_t r1) {
        std::vector<float> y(div ? static_cast<size_t>(block * d) : 0);
        const float* xs[16];
        at::Half *ss[16], *zs[16];
        uint8_t* cs[16];
        int k = 0;
        auto flush = [&] {
          quantize_rows_block<kBits>(xs, ss, zs, cs, k, d, group, avx2);
          k = 0;
        };
        for_rows(
            r0, r1, [&](int64_t) { return div ? y.data() + k * d : nullptr; },
            [&](const float* v, at::Half* sp, at::Half* zp, uint8_t* cp) {
              xs[k] = v;
              ss[k] = sp;
              zs[k] = zp;
              cs[k] = cp;
              if (++k == block) flush();
            });
        if (k > 0) flush();
      });
    });
    return;
  }
#endif
  at::parallel_for(0, bh * n, kGrainRows, [&](int64_t r0, int64_t r1) {
    std::vector<uint8_t> q(static_cast<size_t>(d));
    std::vector<float> y(div ? static_cast<size_t>(d) : 0);
    auto scratch = [&](int64_t) { return y.data(); };
    for_rows(r0, r1, scratch, [&](const float* xp, at::Half* sp, at::Half* zp, uint8_t* cp) {
      for (int64_t g = 0; g < d / group; ++g) {
        const float* xg = xp + g * group;
        float mn = xg[0], mx = xg[0];
        for (int64_t i = 1; i < group; ++i) {
          mn = std::min(mn, xg[i]);
          mx = std::max(mx, xg[i]);
        }
        scale_zero(mn, mx, bits, sp[g], zp[g]);
        const float s = sp[g], z = zp[g];
        for (int64_t i = 0; i < group; ++i) q[g * group + i] = code_of(xg[i], s, z, qmax);
      }
      pack_row(q.data(), d, bits, cp);
    });
  });
}

}  // namespace

void quantize_rows(const torch::Tensor& x, int bits, int64_t group, const torch::Tensor& codes,
                   const torch::Tensor& scale, const torch::Tensor& zero) {
  quantize_rows_impl(x, nullptr, bits, group, codes, scale, zero);
}

void quantize_rows_div(const torch::Tensor& x, const torch::Tensor& div, int bits, int64_t group,
                       const torch::Tensor& codes, const torch::Tensor& scale,
                       const torch::Tensor& zero) {
  KVB_CHECK(x.dim() == 4, "quantize_rows_div: expected a 4-D x, got ", x.sizes());
  KVB_CHECK(div.scalar_type() == torch::kFloat32 && div.dim() == 2 && div.size(0) == x.size(1) &&
                div.size(1) == x.size(3),
            "quantize_rows_div: div must be [H, D] float32, got ", div.sizes());
  const torch::Tensor dc = div.contiguous();
  quantize_rows_impl(x, dc.data_ptr<float>(), bits, group, codes, scale, zero);
}

torch::Tensor channel_absmax(const torch::Tensor& x) {
  KVB_CHECK(x.dim() == 4 && x.scalar_type() == torch::kFloat32,
            "channel_absmax: expected a 4-D float32 tensor, got ", x.sizes());
  if (!x.device().is_cpu() || x.size(0) * x.size(2) == 0) return x.abs().amax({0, 2});
  const int64_t b = x.size(0), h = x.size(1), n = x.size(2), d = x.size(3);
  Rows<const float> xr(x, "channel_absmax x");
  torch::Tensor out = torch::empty({h, d}, x.options());
  float* op = out.data_ptr<float>();
#if defined(__SSE2__)
  if (d % 4 == 0) {
    at::parallel_for(0, h, 1, [&](int64_t h0, int64_t h1) {
      for (int64_t hh = h0; hh < h1; ++hh)
        for (int64_t c = 0; c < d; c += 4) {  // |x| by clearing the sign; NaN lanes flagged
          __m128 m = _mm_setzero_ps(), nan = _mm_setzero_ps();
          for (int64_t bb = 0; bb < b; ++bb) {
            const float* row = xr.pair(bb * h + hh) + c;
            for (int64_t i = 0; i < n; ++i, row += d) {
              const __m128 v = _mm_loadu_ps(row);
              m = _mm_max_ps(_mm_andnot_ps(_mm_set1_ps(-0.0f), v), m);  // NaN keeps m
              nan = _mm_or_ps(nan, _mm_cmpunord_ps(v, v));
            }
          }
          const __m128 qnan = _mm_set1_ps(std::numeric_limits<float>::quiet_NaN());
          _mm_storeu_ps(op + hh * d + c, _mm_or_ps(_mm_and_ps(nan, qnan), _mm_andnot_ps(nan, m)));
        }
    });
    return out;
  }
#endif
  at::parallel_for(0, h, 1, [&](int64_t h0, int64_t h1) {
    std::vector<float> m(static_cast<size_t>(d));
    std::vector<uint8_t> nan(static_cast<size_t>(d));
    for (int64_t hh = h0; hh < h1; ++hh) {
      std::fill(m.begin(), m.end(), 0.0f);
      std::fill(nan.begin(), nan.end(), 0);
      for (int64_t bb = 0; bb < b; ++bb) {
        const float* row = xr.pair(bb * h + hh);
        for (int64_t i = 0; i < n; ++i, row += d)
          for (int64_t c = 0; c < d; ++c) {  // vectorizes: max of |x|, NaN flagged apart
            const float a = std::fabs(row[c]);
            m[static_cast<size_t>(c)] =
                a > m[static_cast<size_t>(c)] ? a : m[static_cast<size_t>(c)];
            nan[static_cast<size_t>(c)] |= static_cast<uint8_t>(a != a);
          }
      }
      for (int64_t c = 0; c < d; ++c)
        op[hh * d + c] = nan[static_cast<size_t>(c)] ? std::numeric_limits<float>::quiet_NaN()
                                                     : m[static_cast<size_t>(c)];
    }
  });
  return out;
}

void dequantize_rows(const torch::Tensor& codes, const torch::Tensor& scale, const torch::Tensor& zero,
                     int bits, int64_t group, const torch::Tensor& out) {
  check_common(out, codes, bits);
  const int64_t d = out.size(3), n = out.size(2), bh = out.size(0) * out.size(1), ng = d / group;
  KVB_CHECK(group > 0 && d % group == 0, "dequantize_rows: bad group ", group);
  if (n == 0) return;
  torch::Tensor s32 = as_f32(scale), z32 = as_f32(zero);  // [B, H, N, D/group]
  const float* sp = s32.data_ptr<float>();
  const float* zp = z32.data_ptr<float>();
  Rows<const uint8_t> cr(codes, "dequantize_rows codes");
  Rows<float> orow(out, "dequantize_rows out");
  const int64_t blocks = (n + kBlockRows - 1) / kBlockRows;
  dispatch_bits(bits, [&](auto kb) {
    constexpr int kBits = decltype(kb)::value;
    const BlockFn fixed = fixed_rows_fn<kBits>(d, group);
    at::parallel_for(0, bh * blocks, 1, [&](int64_t u0, int64_t u1) {
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t p = u / blocks, i0 = (u % blocks) * kBlockRows, i1 = std::min(n, i0 + kBlockRows);
        const uint8_t* c = cr.at(p, i0);
        float* o = orow.at(p, i0);
        const float* s = sp + (p * n + i0) * ng;
        const float* z = zp + (p * n + i0) * ng;
        if (fixed) {
          fixed(c, s, z, o, i1 - i0);
          continue;
        }
        for (int64_t i = i0; i < i1; ++i, c += d * kBits / 8, o += d, s += ng, z += ng)
          for (int64_t g = 0; g < ng; ++g) decode_span_scalar<kBits>(c, g * group, (g + 1) * group, s[g], z[g], o);
      }
    });
  });
}

void quantize_cols(const torch::Tensor& x, int bits, int64_t group, const torch::Tensor& codes,
                   const torch::Tensor& scale, const torch::Tensor& zero) {
  check_common(x, codes, bits);
  const int64_t n = x.size(2), d = x.size(3), ng = n / group;
  KVB_CHECK(group > 0 && n % group == 0, "quantize_cols: ", n, " rows are not a multiple of group ", group);
  KVB_CHECK(scale.size(2) == ng && scale.size(3) == d, "quantize_cols: scale shape");
  Rows<const float> xr(x, "quantize_cols x");
  Rows<uint8_t> cr(codes, "quantize_cols codes");
  Rows<at::Half> sr(scale, "quantize_cols scale"), zr(zero, "quantize_cols zero");
  const int64_t units = x.size(0) * x.size(1) * ng;  // (b, h, group of rows)
  const float qmax = static_cast<float>((1 << bits) - 1);
#if defined(__SSE2__)
  if (d % 16 == 0) {
    dispatch_bits(bits, [&](auto kb) {
      constexpr int kBits = decltype(kb)::value;
      at::parallel_for(0, units, 1, [&](int64_t u0, int64_t u1) {
        std::vector<float> s(static_cast<size_t>(d)), z(static_cast<size_t>(d));
        for (int64_t u = u0; u < u1; ++u) {
          const int64_t p = u / ng, j = u % ng;
          quantize_cols_simd<kBits>(xr.at(p, j * group), group, d, sr.at(p, j), zr.at(p, j),
                                    s.data(), z.data(), cr.at(p, j * group));
        }
      });
    });
    return;
  }
#endif
  at::parallel_for(0, units, 1, [&](int64_t u0, int64_t u1) {
    std::vector<float> mn(static_cast<size_t>(d)), mx(static_cast<size_t>(d)), s(static_cast<size_t>(d)),
        z(static_cast<size_t>(d));
    std::vector<uint8_t> q(static_cast<size_t>(d));
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t p = u / ng, j = u % ng;
      const float* x0 = xr.at(p, j * group);
      std::copy(x0, x0 + d, mn.begin());
      std::copy(x0, x0 + d, mx.begin());
      for (int64_t i = 1; i < group; ++i) {
        const float* xi = x0 + i * d;
        for (int64_t c = 0; c < d; ++c) {
          mn[c] = std::min(mn[c], xi[c]);
          mx[c] = std::max(mx[c], xi[c]);
        }
      }
      at::Half* sp = sr.at(p, j);
      at::Half* zp = zr.at(p, j);
      for (int64_t c = 0; c < d; ++c) {
        scale_zero(mn[c], mx[c], bits, sp[c], zp[c]);
        s[c] = sp[c];
        z[c] = zp[c];
      }
      for (int64_t i = 0; i < group; ++i) {
        const float* xi = x0 + i * d;
        for (int64_t c = 0; c < d; ++c) q[c] = code_of(xi[c], s[c], z[c], qmax);
        pack_row(q.data(), d, bits, cr.at(p, j * group + i));
      }
    }
  });
}

void dequantize_cols(const torch::Tensor& codes, const torch::Tensor& scale, const torch::Tensor& zero,
                     int bits, int64_t group, const torch::Tensor& out) {
  check_common(out, codes, bits);
  const int64_t n = out.size(2), d = out.size(3), ng = n / group;
  KVB_CHECK(group > 0 && n % group == 0, "dequantize_cols: ", n, " rows are not a multiple of group ", group);
  if (n == 0) return;
  torch::Tensor s32 = as_f32(scale), z32 = as_f32(zero);  // [B, H, N/group, D]
  const float* sp = s32.data_ptr<float>();
  const float* zp = z32.data_ptr<float>();
  Rows<const uint8_t> cr(codes, "dequantize_cols codes");
  Rows<float> orow(out, "dequantize_cols out");
  const int64_t units = out.size(0) * out.size(1) * ng;
  dispatch_bits(bits, [&](auto kb) {
    constexpr int kBits = decltype(kb)::value;
    const BlockFn fixed = fixed_cols_fn<kBits>(d);
    at::parallel_for(0, units, std::max<int64_t>(1, kBlockRows / group), [&](int64_t u0, int64_t u1) {
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t p = u / ng, j = u % ng;
        const float* s = sp + u * d;  // scale/zero rows are (p, j) = u in order
        const float* z = zp + u * d;
        const uint8_t* c = cr.at(p, j * group);
        float* o = orow.at(p, j * group);
        if (fixed) {
          fixed(c, s, z, o, group);
          continue;
        }
        for (int64_t i = 0; i < group; ++i, c += d * kBits / 8, o += d) decode_span<kBits>(c, 0, d, s, z, o);
      }
    });
  });
}

torch::Tensor pack_codes(const torch::Tensor& codes, int bits) {
  KVB_CHECK(bits == 2 || bits == 4 || bits == 8, "pack_codes: bits must be 2, 4 or 8");
  KVB_CHECK(codes.scalar_type() == torch::kUInt8, "pack_codes: codes must be uint8");
  torch::Tensor c = codes.contiguous();
  const int64_t d = c.size(-1), per = 8 / bits;
  KVB_CHECK(d % per == 0, "pack_codes: last dim ", d, " is not a multiple of ", per);
  std::vector<int64_t> shape(c.sizes().begin(), c.sizes().end());
  shape.back() = d / per;
  torch::Tensor out = torch::empty(shape, c.options());
  const int64_t rows = d ? c.numel() / d : 0;
  const uint8_t* src = c.data_ptr<uint8_t>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  for (int64_t r = 0; r < rows; ++r) pack_row(src + r * d, d, bits, dst + r * (d / per));
  return out;
}

torch::Tensor unpack_codes(const torch::Tensor& packed, int bits) {
  KVB_CHECK(bits == 2 || bits == 4 || bits == 8, "unpack_codes: bits must be 2, 4 or 8");
  KVB_CHECK(packed.scalar_type() == torch::kUInt8, "unpack_codes: codes must be uint8");
  torch::Tensor p = packed.contiguous();
  const int64_t w = p.size(-1), per = 8 / bits;
  std::vector<int64_t> shape(p.sizes().begin(), p.sizes().end());
  shape.back() = w * per;
  torch::Tensor out = torch::empty(shape, p.options());
  const int64_t rows = w ? p.numel() / w : 0;
  const uint8_t* src = p.data_ptr<uint8_t>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  const unsigned mask = (1u << bits) - 1;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < w; ++j)
      for (int64_t u = 0; u < per; ++u)
        dst[(r * w + j) * per + u] = static_cast<uint8_t>((src[r * w + j] >> (u * bits)) & mask);
  return out;
}

}  // namespace kvb::kernels
