#include "kernels/cpu/quant_kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
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

// One row of d channels in groups of `group` (a multiple of 16).
template <int kBits>
void quantize_row_simd(const float* __restrict x, int64_t d, int64_t group, at::Half* __restrict sp,
                       at::Half* __restrict zp, uint8_t* __restrict out) {
  const __m128 qmax = _mm_set1_ps(static_cast<float>((1 << kBits) - 1));
  for (int64_t g = 0; g < d / group; ++g, x += group, out += group * kBits / 8) {
    float mn = 0, mx = 0;
    min_max(x, group, mn, mx);
    scale_zero(mn, mx, kBits, sp[g], zp[g]);
    const float s = sp[g], z = zp[g];
    if (!(s > 0)) {
      std::memset(out, 0, static_cast<size_t>(group * kBits / 8));
      continue;
    }
    const __m128 vs = _mm_set1_ps(s), vz = _mm_set1_ps(z);
    __m128i q[4];
    for (int64_t c = 0; c < group; c += 16) {
      for (int u = 0; u < 4; ++u)
        q[u] = round_clamped(_mm_div_ps(_mm_sub_ps(_mm_loadu_ps(x + c + 4 * u), vz), vs), qmax);
      pack16<kBits>(q[0], q[1], q[2], q[3], out + c * kBits / 8);
    }
  }
}

// One group of `rows` rows of d channels (d a multiple of 16) sharing per-channel scale/zero;
// s, z: scratch of d floats.
template <int kBits>
void quantize_cols_simd(const float* __restrict x0, int64_t rows, int64_t d,
                        at::Half* __restrict sp, at::Half* __restrict zp, float* __restrict s,
                        float* __restrict z, const Rows<uint8_t>& cr, int64_t p, int64_t r0) {
  // Per-channel min and max over the rows, as the scalar loop (mn = x < mn ? x : mn, row by row).
  for (int64_t c = 0; c < d; c += 4) {
    __m128 lo = _mm_loadu_ps(x0 + c), hi = lo;
    for (int64_t i = 1; i < rows; ++i) {
      const __m128 a = _mm_loadu_ps(x0 + i * d + c);
      lo = _mm_min_ps(a, lo);
      hi = _mm_max_ps(a, hi);
    }
    _mm_storeu_ps(s + c, lo);  // s, z: min and max until converted below
    _mm_storeu_ps(z + c, hi);
  }
  for (int64_t c = 0; c < d; ++c) {
    scale_zero(s[c], z[c], kBits, sp[c], zp[c]);
    s[c] = sp[c];
    z[c] = zp[c];
  }
  const __m128 qmax = _mm_set1_ps(static_cast<float>((1 << kBits) - 1));
  for (int64_t i = 0; i < rows; ++i) {
    const float* xi = x0 + i * d;
    uint8_t* out = cr.at(p, r0 + i);
    for (int64_t c = 0; c < d; c += 16) {
      __m128i q[4];
      for (int u = 0; u < 4; ++u) {
        const int64_t k = c + 4 * u;
        const __m128 vs = _mm_loadu_ps(s + k);
        // A zero (or NaN) scale gives code 0 (code_of's `!(s > 0)`).
        const __m128 ok = _mm_cmpgt_ps(vs, _mm_setzero_ps());
        const __m128 v = _mm_div_ps(_mm_sub_ps(_mm_loadu_ps(xi + k), _mm_loadu_ps(z + k)), vs);
        q[u] = round_clamped(_mm_and_ps(v, ok), qmax);
      }
      pack16<kBits>(q[0], q[1], q[2], q[3], out + c * kBits / 8);
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
  // Row r's values: x's row, or x's row / div's row of its head in `scratch` (d floats).
  auto row = [&](int64_t r, float* scratch) -> const float* {
    const float* xp = xr.at(r / n, r % n);
    if (div == nullptr) return xp;
    const float* dp = div + ((r / n) % h) * d;
    for (int64_t c = 0; c < d; ++c) scratch[c] = xp[c] / dp[c];
    return scratch;
  };
#if defined(__SSE2__)
  if (group % 16 == 0) {
    dispatch_bits(bits, [&](auto kb) {
      constexpr int kBits = decltype(kb)::value;
      at::parallel_for(0, bh * n, kGrainRows, [&](int64_t r0, int64_t r1) {
        std::vector<float> y(div ? static_cast<size_t>(d) : 0);
        for (int64_t r = r0; r < r1; ++r)
          quantize_row_simd<kBits>(row(r, y.data()), d, group, sr.at(r / n, r % n),
                                   zr.at(r / n, r % n), cr.at(r / n, r % n));
      });
    });
    return;
  }
#endif
  at::parallel_for(0, bh * n, kGrainRows, [&](int64_t r0, int64_t r1) {
    std::vector<uint8_t> q(static_cast<size_t>(d));
    std::vector<float> y(div ? static_cast<size_t>(d) : 0);
    for (int64_t r = r0; r < r1; ++r) {
      const float* xp = row(r, y.data());
      at::Half* sp = sr.at(r / n, r % n);
      at::Half* zp = zr.at(r / n, r % n);
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
      pack_row(q.data(), d, bits, cr.at(r / n, r % n));
    }
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
                                    s.data(), z.data(), cr, p, j * group);
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
