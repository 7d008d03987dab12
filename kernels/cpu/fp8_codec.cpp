#include "kernels/cpu/fp8_codec.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if (defined(__x86_64__) || defined(__i386__)) && defined(__SSE2__)
#include <immintrin.h>
#define KVB_FP8_AVX2 1  // AVX2 encode beside the baseline, chosen at run time
#endif

#include "common/check.h"
#include "kernels/cpu/quant_kernels.h"

namespace kvb::kernels {
namespace {

struct Fp8Spec {
  int mbits, bias;
  float max;
  uint32_t max_code, nan_code;
};

constexpr Fp8Spec kE4M3{3, 7, 448.0f, 0x7E, 0x7F};
constexpr Fp8Spec kE5M2{2, 15, 57344.0f, 0x7B, 0x7F};

const Fp8Spec& spec_of(Fp8Format f) { return f == Fp8Format::kE4M3 ? kE4M3 : kE5M2; }

inline uint8_t encode(float x, const Fp8Spec& s) {
  uint32_t u = 0;
  std::memcpy(&u, &x, 4);
  const uint32_t sign = (u >> 24) & 0x80u;
  u &= 0x7FFFFFFFu;
  if (u > 0x7F800000u) return static_cast<uint8_t>(sign | s.nan_code);
  float a = 0;
  std::memcpy(&a, &u, 4);
  if (a >= s.max) return static_cast<uint8_t>(sign | s.max_code);  // saturate (infinity too)
  const int min_exp = 1 - s.bias;                                  // of the smallest normal
  const int exp = static_cast<int>(u >> 23) - 127;                 // fp32 subnormals: -127
  if (exp < min_exp) {
    // Below the smallest normal: multiples of 2^(min_exp - mbits). The scaling is exact and
    // nearbyint rounds half to even (the default rounding mode); 2^mbits is the smallest normal,
    // whose code is 2^mbits too.
    const float r = std::nearbyint(std::ldexp(a, s.mbits - min_exp));
    return static_cast<uint8_t>(sign | static_cast<uint32_t>(r));
  }
  // Normal: drop 23 - mbits mantissa bits rounding half to even; a carry moves into the exponent.
  const int drop = 23 - s.mbits;
  uint32_t r = (u + (1u << (drop - 1)) - 1 + ((u >> drop) & 1u)) >> drop;
  r -= static_cast<uint32_t>(127 - s.bias) << s.mbits;  // re-bias the exponent
  return static_cast<uint8_t>(sign | r);                // <= max_code since a < max
}

float decode(uint8_t c, const Fp8Spec& s) {
  const bool neg = c & 0x80;
  const uint32_t e = (c & 0x7F) >> s.mbits, m = c & ((1u << s.mbits) - 1);
  const uint32_t e_all = (1u << (7 - s.mbits)) - 1;
  float v = 0;
  if (s.mbits == 3 && (c & 0x7F) == 0x7F) {
    v = std::numeric_limits<float>::quiet_NaN();
  } else if (s.mbits == 2 && e == e_all) {
    v = m == 0 ? std::numeric_limits<float>::infinity() : std::numeric_limits<float>::quiet_NaN();
  } else if (e == 0) {
    v = std::ldexp(static_cast<float>(m), 1 - s.bias - s.mbits);
  } else {
    v = std::ldexp(1.0f + static_cast<float>(m) / static_cast<float>(1u << s.mbits),
                   static_cast<int>(e) - s.bias);
  }
  return neg ? -v : v;
}

const std::array<float, 256>& table(Fp8Format f) {
  static const auto make = [](const Fp8Spec& s) {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c) t[static_cast<size_t>(c)] = decode(static_cast<uint8_t>(c), s);
    return t;
  };
  static const std::array<float, 256> e4m3 = make(kE4M3), e5m2 = make(kE5M2);
  return f == Fp8Format::kE4M3 ? e4m3 : e5m2;
}

// 2^k as a float, exactly (|k| small).
constexpr float pow2(int k) {
  float v = 1.0f;
  for (; k > 0; --k) v *= 2.0f;
  for (; k < 0; ++k) v *= 0.5f;
  return v;
}

template <Fp8Format F>
constexpr const Fp8Spec& spec_v = F == Fp8Format::kE4M3 ? kE4M3 : kE5M2;

#if defined(__SSE2__)
inline __m128i select(__m128i mask, __m128i a, __m128i b) {  // mask ? a : b, per lane
  return _mm_or_si128(_mm_and_si128(mask, a), _mm_andnot_si128(mask, b));
}

// encode() on four lanes (SSE2, branch-free; codes in the int32 lanes): the same integer
// rounding of the fp32 bits for normals and the same exact scaling and rounding half to even
// (cvtps2dq in the current rounding mode, as std::nearbyint) for subnormals. Saturation is a
// min with max_code: the normal path's result grows with |x|, is max_code at |x| = max (and
// below max never exceeds it), and stays under 2^15 up to infinity (and for NaN, the shifts
// being logical); NaN then ORs max_code up to nan_code (0x7E | 0x01, 0x7B | 0x04).
template <Fp8Format F>
inline __m128i encode4(__m128 x) {
  constexpr Fp8Spec s = spec_v<F>;
  constexpr int min_exp = 1 - s.bias, drop = 23 - s.mbits;
  static_assert((s.max_code | s.nan_code) == s.nan_code, "nan_code must cover max_code's bits");
  const __m128i u = _mm_castps_si128(x);
  const __m128i sign = _mm_and_si128(_mm_srli_epi32(u, 24), _mm_set1_epi32(0x80));
  const __m128i a = _mm_and_si128(u, _mm_set1_epi32(0x7FFFFFFF));  // |x|, ordered as integers
  const __m128i nan = _mm_cmpgt_epi32(a, _mm_set1_epi32(0x7F800000));
  const __m128i sub = _mm_cmplt_epi32(a, _mm_set1_epi32((min_exp + 127) << 23));
  // Normal: drop 23 - mbits mantissa bits rounding half to even, then re-bias the exponent.
  __m128i r = _mm_add_epi32(a, _mm_set1_epi32((1 << (drop - 1)) - 1));
  r = _mm_add_epi32(r, _mm_and_si128(_mm_srli_epi32(a, drop), _mm_set1_epi32(1)));
  r = _mm_sub_epi32(_mm_srli_epi32(r, drop), _mm_set1_epi32((127 - s.bias) << s.mbits));
  // Subnormal: |x| * 2^(mbits - min_exp) (exact) rounded to an integer.
  const __m128i rs =
      _mm_cvtps_epi32(_mm_mul_ps(_mm_castsi128_ps(a), _mm_set1_ps(pow2(s.mbits - min_exp))));
  r = select(sub, rs, r);
  r = _mm_min_epi16(r, _mm_set1_epi32(static_cast<int>(s.max_code)));  // lanes < 2^15: exact
  r = _mm_or_si128(r,
                   _mm_and_si128(nan, _mm_set1_epi32(static_cast<int>(s.nan_code ^ s.max_code))));
  return _mm_or_si128(r, sign);
}

// decode() (the table's values, bit for bit) of four codes in int32 lanes: normals by placing
// exponent and mantissa bits, subnormals as mantissa * 2^(1 - bias - mbits), NaN (and E5M2's
// infinities) by mask; the sign ORed in last (NaN keeps the table's sign too).
template <Fp8Format F>
inline __m128 decode4(__m128i c) {
  constexpr Fp8Spec s = spec_v<F>;
  const __m128i sign = _mm_slli_epi32(_mm_and_si128(c, _mm_set1_epi32(0x80)), 24);
  const __m128i mag = _mm_and_si128(c, _mm_set1_epi32(0x7F));
  const __m128i normal =
      _mm_add_epi32(_mm_slli_epi32(mag, 23 - s.mbits), _mm_set1_epi32((127 - s.bias) << 23));
  const __m128i m = _mm_and_si128(c, _mm_set1_epi32((1 << s.mbits) - 1));
  const __m128i sub =
      _mm_castps_si128(_mm_mul_ps(_mm_cvtepi32_ps(m), _mm_set1_ps(pow2(1 - s.bias - s.mbits))));
  const __m128i e_zero = _mm_cmpeq_epi32(_mm_srli_epi32(mag, s.mbits), _mm_setzero_si128());
  __m128i r = select(e_zero, sub, normal);
  const __m128i qnan = _mm_set1_epi32(0x7FC00000);
  if constexpr (F == Fp8Format::kE4M3) {
    r = select(_mm_cmpeq_epi32(mag, _mm_set1_epi32(0x7F)), qnan, r);
  } else {
    const __m128i e_all = _mm_cmpeq_epi32(_mm_srli_epi32(mag, s.mbits), _mm_set1_epi32(31));
    const __m128i special =
        select(_mm_cmpeq_epi32(m, _mm_setzero_si128()), _mm_set1_epi32(0x7F800000), qnan);
    r = select(e_all, special, r);
  }
  return _mm_castsi128_ps(_mm_or_si128(r, sign));
}
#endif

#if defined(KVB_FP8_AVX2)
// encode4 on eight lanes (AVX2): the same operations lane by lane, so the same codes.
template <Fp8Format F>
__attribute__((target("avx2"))) inline __m256i encode8(__m256 x) {
  constexpr Fp8Spec s = spec_v<F>;
  constexpr int min_exp = 1 - s.bias, drop = 23 - s.mbits;
  const __m256i u = _mm256_castps_si256(x);
  const __m256i sign = _mm256_and_si256(_mm256_srli_epi32(u, 24), _mm256_set1_epi32(0x80));
  const __m256i a = _mm256_and_si256(u, _mm256_set1_epi32(0x7FFFFFFF));
  const __m256i nan = _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x7F800000));
  const __m256i sub = _mm256_cmpgt_epi32(_mm256_set1_epi32((min_exp + 127) << 23), a);
  __m256i r = _mm256_add_epi32(a, _mm256_set1_epi32((1 << (drop - 1)) - 1));
  r = _mm256_add_epi32(r, _mm256_and_si256(_mm256_srli_epi32(a, drop), _mm256_set1_epi32(1)));
  r = _mm256_sub_epi32(_mm256_srli_epi32(r, drop), _mm256_set1_epi32((127 - s.bias) << s.mbits));
  const __m256i rs = _mm256_cvtps_epi32(
      _mm256_mul_ps(_mm256_castsi256_ps(a), _mm256_set1_ps(pow2(s.mbits - min_exp))));
  r = _mm256_blendv_epi8(r, rs, sub);
  r = _mm256_min_epi16(r, _mm256_set1_epi32(static_cast<int>(s.max_code)));
  r = _mm256_or_si256(
      r, _mm256_and_si256(nan, _mm256_set1_epi32(static_cast<int>(s.nan_code ^ s.max_code))));
  return _mm256_or_si256(r, sign);
}

// encode_span's vector loop on eight lanes; returns how many elements it did (a multiple of 16).
template <Fp8Format F, bool kDivide>
__attribute__((target("avx2"))) int64_t encode_span_avx2(const float* __restrict src, int64_t n,
                                                        float div, uint8_t* __restrict dst) {
  const __m256 vd = _mm256_set1_ps(div);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256 x0 = _mm256_loadu_ps(src + i), x1 = _mm256_loadu_ps(src + i + 8);
    if constexpr (kDivide) {
      x0 = _mm256_div_ps(x0, vd);
      x1 = _mm256_div_ps(x1, vd);
    }
    const __m256i c0 = encode8<F>(x0), c1 = encode8<F>(x1);
    const __m128i b = _mm_packus_epi16(
        _mm_packs_epi32(_mm256_castsi256_si128(c0), _mm256_extracti128_si256(c0, 1)),
        _mm_packs_epi32(_mm256_castsi256_si128(c1), _mm256_extracti128_si256(c1, 1)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), b);
  }
  return i;
}
#endif

// dst[i] = encode(src[i] / div) for i < n (kDivide), or encode(src[i]).
template <Fp8Format F, bool kDivide>
void encode_span(const float* __restrict src, int64_t n, float div, uint8_t* __restrict dst) {
  int64_t i = 0;
#if defined(KVB_FP8_AVX2)
  if (quant_simd_uses_avx2()) i = encode_span_avx2<F, kDivide>(src, n, div, dst);
#endif
#if defined(__SSE2__)
  const __m128 vd = _mm_set1_ps(div);
  for (; i + 16 <= n; i += 16) {
    __m128i c[4];
    for (int u = 0; u < 4; ++u) {
      __m128 x = _mm_loadu_ps(src + i + 4 * u);
      if constexpr (kDivide) x = _mm_div_ps(x, vd);
      c[u] = encode4<F>(x);
    }
    const __m128i b = _mm_packus_epi16(_mm_packs_epi32(c[0], c[1]), _mm_packs_epi32(c[2], c[3]));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), b);
  }
#endif
  for (; i < n; ++i) dst[i] = encode(kDivide ? src[i] / div : src[i], spec_v<F>);
}

template <bool kDivide>
void encode_span(Fp8Format f, const float* src, int64_t n, float div, uint8_t* dst) {
  if (f == Fp8Format::kE4M3)
    encode_span<Fp8Format::kE4M3, kDivide>(src, n, div, dst);
  else
    encode_span<Fp8Format::kE5M2, kDivide>(src, n, div, dst);
}

// dst[i] = decode(src[i]) * mul for i < n (t: the format's table).
template <Fp8Format F>
void decode_span(const uint8_t* __restrict src, int64_t n, float mul, const float* __restrict t,
                 float* __restrict dst) {
  int64_t i = 0;
#if defined(__SSE2__)
  const __m128 vm = _mm_set1_ps(mul);
  const __m128i zero = _mm_setzero_si128();
  for (; i + 16 <= n; i += 16) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    const __m128i lo = _mm_unpacklo_epi8(b, zero), hi = _mm_unpackhi_epi8(b, zero);
    const __m128i c[4] = {_mm_unpacklo_epi16(lo, zero), _mm_unpackhi_epi16(lo, zero),
                          _mm_unpacklo_epi16(hi, zero), _mm_unpackhi_epi16(hi, zero)};
    for (int u = 0; u < 4; ++u) _mm_storeu_ps(dst + i + 4 * u, _mm_mul_ps(decode4<F>(c[u]), vm));
  }
#endif
  for (; i < n; ++i) dst[i] = t[src[i]] * mul;
}

void decode_span(Fp8Format f, const uint8_t* src, int64_t n, float mul, const float* t,
                 float* dst) {
  if (f == Fp8Format::kE4M3)
    decode_span<Fp8Format::kE4M3>(src, n, mul, t, dst);
  else
    decode_span<Fp8Format::kE5M2>(src, n, mul, t, dst);
}

// A [B, H, N, X] tensor whose last two dims are contiguous: the N*X block of pair (b, h).
template <typename T>
struct PairBlocks {
  T* base;
  int64_t sb, sh, h, len;
  PairBlocks(const torch::Tensor& t, const char* what) {
    KVB_CHECK(t.dim() == 4, what, ": expected a 4-D tensor, got ", t.sizes());
    KVB_CHECK(t.stride(3) == 1 && (t.size(2) <= 1 || t.stride(2) == t.size(3)), what,
              ": the last two dims must be contiguous");
    base = static_cast<T*>(t.data_ptr());
    sb = t.stride(0);
    sh = t.stride(1);
    h = t.size(1);
    len = t.size(2) * t.size(3);
  }
  T* at(int64_t p) const { return base + (p / h) * sb + (p % h) * sh; }
};

// The scale of pair p = b * H + h from scale [B, 1] or [B, H] (contiguous float32).
float pair_scale(const float* s, int64_t cols, int64_t h, int64_t p) {
  return cols == 1 ? s[p / h] : s[p];
}

void check_scaled(const torch::Tensor& values, const torch::Tensor& codes,
                  const torch::Tensor& scale, const char* what) {
  KVB_CHECK(values.scalar_type() == torch::kFloat32, what, ": values must be float32");
  KVB_CHECK(codes.scalar_type() == torch::kUInt8, what, ": codes must be uint8");
  KVB_CHECK(values.dim() == 4 && values.sizes() == codes.sizes(), what,
            ": values and codes must be 4-D of one shape");
  KVB_CHECK(scale.scalar_type() == torch::kFloat32 && scale.dim() == 2 &&
                scale.size(0) == values.size(0) &&
                (scale.size(1) == 1 || scale.size(1) == values.size(1)),
            what, ": scale must be [B, 1] or [B, H] float32");
}

}  // namespace

uint8_t fp8_encode(float x, Fp8Format f) { return encode(x, spec_of(f)); }
float fp8_decode(uint8_t code, Fp8Format f) { return table(f)[code]; }
float fp8_max(Fp8Format f) { return spec_of(f).max; }

torch::Tensor fp8_encode(const torch::Tensor& x, Fp8Format f) {
  KVB_CHECK(x.scalar_type() == torch::kFloat32, "fp8_encode: values must be float32");
  if (!x.device().is_cpu()) return fp8_encode(x.cpu(), f).to(x.device());
  const torch::Tensor in = x.contiguous();
  torch::Tensor out = torch::empty(in.sizes(), in.options().dtype(torch::kUInt8));
  const float* src = in.data_ptr<float>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  at::parallel_for(0, in.numel(), 1 << 14, [&](int64_t lo, int64_t hi) {
    encode_span<false>(f, src + lo, hi - lo, 1.0f, dst + lo);
  });
  return out;
}

torch::Tensor fp8_decode(const torch::Tensor& codes, Fp8Format f) {
  KVB_CHECK(codes.scalar_type() == torch::kUInt8, "fp8_decode: codes must be uint8");
  if (!codes.device().is_cpu()) return fp8_decode(codes.cpu(), f).to(codes.device());
  const torch::Tensor in = codes.contiguous();
  torch::Tensor out = torch::empty(in.sizes(), in.options().dtype(torch::kFloat32));
  const uint8_t* src = in.data_ptr<uint8_t>();
  float* dst = out.data_ptr<float>();
  const float* t = table(f).data();
  at::parallel_for(0, in.numel(), 1 << 14, [&](int64_t lo, int64_t hi) {
    decode_span(f, src + lo, hi - lo, 1.0f, t, dst + lo);  // x 1: the table's values exactly
  });
  return out;
}

void fp8_encode_scaled(const torch::Tensor& x, const torch::Tensor& scale, Fp8Format f,
                       const torch::Tensor& codes) {
  check_scaled(x, codes, scale, "fp8_encode_scaled");
  if (!x.device().is_cpu() || !codes.device().is_cpu()) {
    codes.copy_(fp8_encode(x / scale.view({scale.size(0), scale.size(1), 1, 1}), f));
    return;
  }
  const torch::Tensor sc = scale.contiguous();
  const float* sp = sc.data_ptr<float>();
  PairBlocks<const float> xs(x, "fp8_encode_scaled x");
  PairBlocks<uint8_t> cs(codes, "fp8_encode_scaled codes");
  const int64_t pairs = x.size(0) * x.size(1), len = xs.len;
  if (len == 0) return;
  // Work units of about 16K elements: (pair, span of its block).
  const int64_t per = std::max<int64_t>(1, (len + 16383) / 16384), span = (len + per - 1) / per;
  at::parallel_for(0, pairs * per, 1, [&](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t p = u / per, lo = (u % per) * span, hi = std::min(len, lo + span);
      if (lo >= hi) continue;
      encode_span<true>(f, xs.at(p) + lo, hi - lo, pair_scale(sp, sc.size(1), xs.h, p),
                        cs.at(p) + lo);
    }
  });
}

void fp8_decode_scaled(const torch::Tensor& codes, const torch::Tensor& scale, Fp8Format f,
                       const torch::Tensor& out) {
  check_scaled(out, codes, scale, "fp8_decode_scaled");
  if (!out.device().is_cpu() || !codes.device().is_cpu()) {
    out.copy_(fp8_decode(codes, f) * scale.view({scale.size(0), scale.size(1), 1, 1}));
    return;
  }
  const torch::Tensor sc = scale.contiguous();
  const float* sp = sc.data_ptr<float>();
  PairBlocks<const uint8_t> cs(codes, "fp8_decode_scaled codes");
  PairBlocks<float> os(out, "fp8_decode_scaled out");
  const float* t = table(f).data();
  const int64_t pairs = out.size(0) * out.size(1), len = os.len;
  if (len == 0) return;
  const int64_t per = std::max<int64_t>(1, (len + 16383) / 16384), span = (len + per - 1) / per;
  at::parallel_for(0, pairs * per, 1, [&](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t p = u / per, lo = (u % per) * span, hi = std::min(len, lo + span);
      if (lo >= hi) continue;
      decode_span(f, cs.at(p) + lo, hi - lo, pair_scale(sp, sc.size(1), os.h, p), t, os.at(p) + lo);
    }
  });
}

}  // namespace kvb::kernels
