#include "kernels/cpu/quant_kernels.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include <ATen/Parallel.h>

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

template <typename Fn>
void dispatch_bits(int bits, Fn&& fn) {
  if (bits == 2) fn(std::integral_constant<int, 2>{});
  else if (bits == 4) fn(std::integral_constant<int, 4>{});
  else fn(std::integral_constant<int, 8>{});
}

constexpr int64_t kGrainRows = 64;
constexpr int64_t kBlockRows = 256;  // rows per parallel work unit when dequantizing

}  // namespace

void quantize_rows(const torch::Tensor& x, int bits, int64_t group, const torch::Tensor& codes,
                   const torch::Tensor& scale, const torch::Tensor& zero) {
  check_common(x, codes, bits);
  const int64_t d = x.size(3), n = x.size(2), bh = x.size(0) * x.size(1);
  KVB_CHECK(group > 0 && d % group == 0 && group % (8 / bits) == 0, "quantize_rows: bad group ", group);
  KVB_CHECK(scale.size(3) == d / group && zero.size(3) == d / group, "quantize_rows: scale width");
  Rows<const float> xr(x, "quantize_rows x");
  Rows<uint8_t> cr(codes, "quantize_rows codes");
  Rows<at::Half> sr(scale, "quantize_rows scale"), zr(zero, "quantize_rows zero");
  const float qmax = static_cast<float>((1 << bits) - 1);
  at::parallel_for(0, bh * n, kGrainRows, [&](int64_t r0, int64_t r1) {
    std::vector<uint8_t> q(static_cast<size_t>(d));
    for (int64_t r = r0; r < r1; ++r) {
      const float* xp = xr.at(r / n, r % n);
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
