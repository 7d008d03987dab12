// AVX2+FMA+F16C block of kernels/cpu/kivi_attention.h. Every function here is compiled for that
// target (pragma below) and only called after the run-time check in kivi_attention.cpp.
//
// Lanes: channels are taken in chunks of 64; in a chunk, lane i of vector u holds channel
// 8i + u. One load then gives every lane its own 8 codes (2-bit: 16 bytes widened 16 -> 32 bits
// per lane; 4-bit: 32 bytes, 32 bits per lane), and code u of every lane is a single AND
// (code * 4^u or code * 16^u, exact in float) and a conversion; the power of two is folded
// into the query (keys) or taken out of the accumulator at the end (values). Codes are never
// turned into dequantized values in memory.
//   keys:   acc += (q * key_scale * 4^-u)[lanes of u] * code_u, summed over u and the lanes
//           (8 slots' sums at once with a horizontal-add tree), plus q . key_zero.
//   values: acc_u += (p * value_scale)[lane's group] * code_u per slot; p * value_zero is summed
//           per lane (channels 8i..8i+7 share a value group, as value_group % 8 == 0), added
//           to every u at the end; an 8x8 transpose turns lanes back into channels.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
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

namespace kvb::kernels::kivi_detail {
namespace {

constexpr int64_t kValueTile = 32;  // slots whose (p * scale) vectors are staged at once

// 1 / (the power of two a decoded code u carries): 4^-u (2-bit), 16^-u (4-bit, u < 7; code 7
// of a 4-bit lane is shifted down instead, see decode).
constexpr float kUnit2[8] = {1.0f,    0x1p-2f,  0x1p-4f,  0x1p-6f,
                             0x1p-8f, 0x1p-10f, 0x1p-12f, 0x1p-14f};
constexpr float kUnit4[8] = {1.0f, 0x1p-4f, 0x1p-8f, 0x1p-12f, 0x1p-16f, 0x1p-20f, 0x1p-24f, 1.0f};
inline float unit_of(int bits, int u) { return bits == 2 ? kUnit2[u] : kUnit4[u]; }

// Codes of one 64-channel chunk, 8 codes per 32-bit lane (lane i: channels 8i .. 8i+7). kHalf:
// a 32-channel tail (head_dim % 64 == 32): lanes 4-7 are zero and nothing past it is read.
template <int kBits, bool kHalf>
inline __m256i load_chunk(const uint8_t* p) {
  if constexpr (kBits == 2) {
    if constexpr (kHalf) {
      return _mm256_cvtepu16_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
    } else {
      return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    }
  } else {
    if constexpr (kHalf) {
      return _mm256_inserti128_si256(_mm256_setzero_si256(),
                                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), 0);
    } else {
      return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    }
  }
}

// Code u of every lane as a float, times 2^(bits*u) (exact), or times 1 for 4-bit u = 7.
template <int kBits, int kU>
inline __m256 decode(__m256i x) {
  if constexpr (kBits == 4 && kU == 7) {
    return _mm256_cvtepi32_ps(_mm256_srli_epi32(x, 28));
  } else {
    constexpr int kMask = ((1 << kBits) - 1) << (kBits * kU);
    return _mm256_cvtepi32_ps(_mm256_and_si256(x, _mm256_set1_epi32(kMask)));
  }
}

// r[u] lane i <-> r[i] lane u.
inline void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// Lane t of the result: the sum of the 8 lanes of v[t].
inline __m256 hsum8(const float (*v)[8]) {
  const __m256 a01 = _mm256_hadd_ps(_mm256_load_ps(v[0]), _mm256_load_ps(v[1]));
  const __m256 a23 = _mm256_hadd_ps(_mm256_load_ps(v[2]), _mm256_load_ps(v[3]));
  const __m256 a45 = _mm256_hadd_ps(_mm256_load_ps(v[4]), _mm256_load_ps(v[5]));
  const __m256 a67 = _mm256_hadd_ps(_mm256_load_ps(v[6]), _mm256_load_ps(v[7]));
  const __m256 b0 = _mm256_hadd_ps(a01, a23), b1 = _mm256_hadd_ps(a45, a67);
  return _mm256_add_ps(_mm256_permute2f128_ps(b0, b1, 0x20), _mm256_permute2f128_ps(b0, b1, 0x31));
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// exp(x) for x <= 0 (Cephes expf: range reduction by ln 2, degree-5 polynomial), about 1 ulp;
// below -88.37 it returns 0.
inline __m256 exp256(__m256 x) {
  x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f)),
                    _mm256_set1_ps(-88.3762626647949f));
  const __m256 fx = _mm256_floor_ps(
      _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  const __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

// 8 fp16 values (n <= 8 of them read, the rest 0) as floats.
inline __m256 load_half8(const uint16_t* p, int n) {
  if (n == 8) return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  if (n == 4) return _mm256_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  alignas(16) uint16_t t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::copy(p, p + n, t);
  return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(t)));
}

// fp16 -> fp32 for n contiguous values.
inline void halves_to_floats(const uint16_t* src, int64_t n, float* dst) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i,
                     _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  for (; i < n; ++i) dst[i] = _cvtsh_ss(src[i]);
}

// dst[0, n) = v[0, n), n <= 8.
inline void store_first(__m256 v, int n, float* dst) {
  if (n == 8) {
    _mm256_storeu_ps(dst, v);
    return;
  }
  alignas(32) float t[8];
  _mm256_store_ps(t, v);
  for (int i = 0; i < n; ++i) dst[i] = t[i];
}

// Everything one block needs, laid out in thread-local scratch.
struct Ctx {
  const Problem* p;
  int64_t b, h, j0, j1, n, n_pad;
  int nfull, nch;
  bool half;
  const float* q;  // [M, D] scaled rows
  float* sc;       // [M, n_pad] scores, then exp(score - mx)
  __m256* qt;      // [M, nch, 8] q in lanes, times unit_of(u)
  __m256* st;      // [nch, 8] key scales of the current group in lanes
  __m256* qk;      // [4, nch, 8] qt * st for the rows of a tile
  __m256* ps;      // [kValueTile, 4, nch] p * value scale in lanes
  __m256* ot;      // [4, nch, 8] value accumulators
  __m256* zs;      // [4, nch] sum p * value zero in lanes
  float* vsf;      // [n * ngv + 8] value scales of the block as floats
  float* vzf;      // [n * ngv + 8] value zeros
  __m256i* vidx;   // [nch] lane i -> value group of channel 64ch + 8i, minus vg0[ch]
  int64_t* vg0;    // [nch] first value group of a chunk
  float* mx;
  float* l;
  float* o;
};

// ---- scores ------------------------------------------------------------------------------

// Two slots at once (x0, x1): each query vector loaded once serves both.
template <int kBits, int kNr, int kU>
inline void key_fma(__m256i x0, __m256i x1, const __m256* qk, int64_t rs, __m256* acc) {
  const __m256 c0 = decode<kBits, kU>(x0), c1 = decode<kBits, kU>(x1);
  for (int r = 0; r < kNr; ++r) {
    const __m256 w = qk[r * rs + kU];
    acc[r] = _mm256_fmadd_ps(w, c0, acc[r]);
    acc[kNr + r] = _mm256_fmadd_ps(w, c1, acc[kNr + r]);
  }
}

template <int kBits, int kNr, int... kUs>
inline void key_chunk(__m256i x0, __m256i x1, const __m256* qk, int64_t rs, __m256* acc,
                      std::integer_sequence<int, kUs...>) {
  (key_fma<kBits, kNr, kUs>(x0, x1, qk, rs, acc), ...);
}

// Scores of ntok quantized keys of one group (codes from `codes`, rows row_bytes apart) for the
// kNr rows of a tile: sc[r * stride + j] = sum_lanes qk . codes + bias[r]. kFull >= 0: the head
// is kFull whole chunks (D = 64 kFull), known at compile time; -1: c.nfull and c.half.
template <int kBits, int kNr, int kFull>
void key_scores(const Ctx& c, const uint8_t* codes, int64_t row_bytes, int64_t ntok,
                const float* bias, float* sc) {
  constexpr int64_t kChunkBytes = 8 * kBits;
  const int nfull = kFull >= 0 ? kFull : c.nfull;
  const bool half = kFull >= 0 ? false : c.half;
  const int64_t rs = kFull >= 0 ? kFull * 8 : c.nch * 8;
  alignas(32) float tmp[kNr][8][8];
  for (int64_t j = 0; j < ntok; j += 8) {
    const int nt = static_cast<int>(std::min<int64_t>(8, ntok - j));
    for (int t = 0; t < nt; t += 2) {
      // Slots t and t + 1 (t + 1 reads slot t again when past the end; its sum is dropped).
      const uint8_t* r0 = codes + (j + t) * row_bytes;
      const uint8_t* r1 = t + 1 < nt ? r0 + row_bytes : r0;
      __m256 acc[2 * kNr];
      for (int r = 0; r < 2 * kNr; ++r) acc[r] = _mm256_setzero_ps();
      for (int ch = 0; ch < nfull; ++ch)
        key_chunk<kBits, kNr>(load_chunk<kBits, false>(r0 + ch * kChunkBytes),
                              load_chunk<kBits, false>(r1 + ch * kChunkBytes), c.qk + ch * 8, rs,
                              acc, std::make_integer_sequence<int, 8>{});
      if (half)
        key_chunk<kBits, kNr>(load_chunk<kBits, true>(r0 + nfull * kChunkBytes),
                              load_chunk<kBits, true>(r1 + nfull * kChunkBytes), c.qk + nfull * 8,
                              rs, acc, std::make_integer_sequence<int, 8>{});
      for (int r = 0; r < kNr; ++r) {
        _mm256_store_ps(tmp[r][t], acc[r]);
        if (t + 1 < nt) _mm256_store_ps(tmp[r][t + 1], acc[kNr + r]);
      }
    }
    for (int r = 0; r < kNr; ++r) {
      for (int t = nt; t < 8; ++t) _mm256_store_ps(tmp[r][t], _mm256_setzero_ps());
      const __m256 s = _mm256_add_ps(hsum8(tmp[r]), _mm256_set1_ps(bias[r]));
      store_first(s, nt, sc + r * c.n_pad + j);
    }
  }
}

// Scores of ntok full-precision keys for the kNr rows starting at q (rows D apart).
template <int kNr>
void residual_scores(const Ctx& c, const float* q, const float* keys, int64_t ntok, float* sc) {
  const int64_t d = c.p->d;
  alignas(32) float tmp[kNr][8][8];
  for (int64_t j = 0; j < ntok; j += 8) {
    const int nt = static_cast<int>(std::min<int64_t>(8, ntok - j));
    for (int t = 0; t < nt; ++t) {
      const float* k = keys + (j + t) * d;
      __m256 acc[kNr];
      for (int r = 0; r < kNr; ++r) acc[r] = _mm256_setzero_ps();
      for (int64_t x = 0; x < d; x += 8) {
        const __m256 kv = _mm256_loadu_ps(k + x);
        for (int r = 0; r < kNr; ++r)
          acc[r] = _mm256_fmadd_ps(_mm256_loadu_ps(q + r * d + x), kv, acc[r]);
      }
      for (int r = 0; r < kNr; ++r) _mm256_store_ps(tmp[r][t], acc[r]);
    }
    for (int r = 0; r < kNr; ++r) {
      for (int t = nt; t < 8; ++t) _mm256_store_ps(tmp[r][t], _mm256_setzero_ps());
      store_first(hsum8(tmp[r]), nt, sc + r * c.n_pad + j);
    }
  }
}

// ---- values ------------------------------------------------------------------------------

template <int kBits, int kNr, int kU, int kUg>
inline void value_fma_one(__m256i x, const __m256* w, __m256 (*acc)[kUg], int k) {
  const __m256 cu = decode<kBits, kU>(x);
  for (int r = 0; r < kNr; ++r) acc[r][k] = _mm256_fmadd_ps(w[r], cu, acc[r][k]);
}

template <int kBits, int kNr, int kU0, int kUg, int... kKs>
inline void value_fma(__m256i x, const __m256* pj, int64_t nch, __m256 (*acc)[kUg],
                      std::integer_sequence<int, kKs...>) {
  __m256 w[kNr];  // each row's p * scale, loaded once per slot
  for (int r = 0; r < kNr; ++r) w[r] = pj[r * nch];
  (value_fma_one<kBits, kNr, kU0 + kKs, kUg>(x, w, acc, kKs), ...);
}

// Codes u in [kU0, kU0 + kUg) of chunk ch for ntok slots into the accumulators.
// kNch > 0: chunks per head known at compile time; 0: c.nch.
template <int kBits, int kNr, bool kHalf, int kUg, int kNch, int kU0 = 0>
void value_chunk(const Ctx& c, const uint8_t* codes, int64_t row_bytes, int64_t ntok, int ch) {
  constexpr int64_t kChunkBytes = 8 * kBits;
  const int64_t nch = kNch > 0 ? kNch : c.nch;
  __m256 acc[kNr][kUg];
  for (int r = 0; r < kNr; ++r)
    for (int k = 0; k < kUg; ++k) acc[r][k] = c.ot[(r * nch + ch) * 8 + kU0 + k];
  for (int64_t j = 0; j < ntok; ++j) {
    const __m256i x = load_chunk<kBits, kHalf>(codes + j * row_bytes + ch * kChunkBytes);
    value_fma<kBits, kNr, kU0, kUg>(x, c.ps + j * kNr * nch + ch, nch, acc,
                                    std::make_integer_sequence<int, kUg>{});
  }
  for (int r = 0; r < kNr; ++r)
    for (int k = 0; k < kUg; ++k) c.ot[(r * nch + ch) * 8 + kU0 + k] = acc[r][k];
  if constexpr (kU0 + kUg < 8)
    value_chunk<kBits, kNr, kHalf, kUg, kNch, kU0 + kUg>(c, codes, row_bytes, ntok, ch);
}

// ---- one tile of rows --------------------------------------------------------------------

template <int kBits, int kNr, int kFull>
void tile_impl(const Ctx& c, int64_t m0) {
  const Problem& p = *c.p;
  const int64_t d = p.d, row_bytes = d * kBits / 8, j0 = c.j0, j1 = c.j1;
  const float* q = c.q + m0 * d;
  float* sc = c.sc + m0 * c.n_pad;
  const int nk_last = c.half ? 4 : 8;  // natural 8-channel vectors in the last chunk

  // Quantized keys, group by group: the group's scales folded into the query.
  for (int64_t j = j0; j < std::min(j1, p.nq);) {
    const int64_t grp = j / p.group, je = std::min({(grp + 1) * p.group, j1, p.nq});
    const uint16_t* s = p.ks.row(c.b, c.h, grp);
    const uint16_t* z = p.kz.row(c.b, c.h, grp);
    for (int ch = 0; ch < c.nch; ++ch) {
      __m256 v[8];
      const int nk = ch == c.nfull ? nk_last : 8;
      for (int k = 0; k < 8; ++k)
        v[k] = k < nk ? load_half8(s + ch * 64 + k * 8, 8) : _mm256_setzero_ps();
      transpose8(v);
      for (int u = 0; u < 8; ++u) c.st[ch * 8 + u] = v[u];
    }
    float bias[kNr];
    __m256 acc[kNr];
    for (int r = 0; r < kNr; ++r) {
      for (int i = 0; i < c.nch * 8; ++i)
        c.qk[r * c.nch * 8 + i] = _mm256_mul_ps(c.qt[(m0 + r) * c.nch * 8 + i], c.st[i]);
      acc[r] = _mm256_setzero_ps();
    }
    for (int64_t x = 0; x < d; x += 8) {
      const __m256 zv = load_half8(z + x, 8);
      for (int r = 0; r < kNr; ++r)
        acc[r] = _mm256_fmadd_ps(_mm256_loadu_ps(q + r * d + x), zv, acc[r]);
    }
    for (int r = 0; r < kNr; ++r) bias[r] = hsum(acc[r]);
    key_scores<kBits, kNr, kFull>(c, p.kq.row(c.b, c.h, j), row_bytes, je - j, bias, sc + (j - j0));
    j = je;
  }
  if (const int64_t jr = std::max(j0, p.nq); jr < j1)
    residual_scores<kNr>(c, q, p.kr.row(c.b, c.h, jr - p.nq), j1 - jr, sc + (jr - j0));

  // Softmax statistics of the block; sc becomes exp(score - mx).
  const int64_t n = c.n, n8 = n / 8 * 8;
  for (int r = 0; r < kNr; ++r) {
    float* row = sc + r * c.n_pad;
    __m256 vm = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
    for (int64_t i = 0; i < n8; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(row + i));
    alignas(32) float t[8];
    _mm256_store_ps(t, vm);
    float top = *std::max_element(t, t + 8);
    for (int64_t i = n8; i < n; ++i) top = std::max(top, row[i]);
    const __m256 vtop = _mm256_set1_ps(top);
    __m256 vs = _mm256_setzero_ps();
    for (int64_t i = 0; i < n8; i += 8) {
      const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(row + i), vtop));
      _mm256_storeu_ps(row + i, e);
      vs = _mm256_add_ps(vs, e);
    }
    float sum = hsum(vs);
    for (int64_t i = n8; i < n; ++i) {
      row[i] = std::exp(row[i] - top);
      sum += row[i];
    }
    c.mx[m0 + r] = top;
    c.l[m0 + r] = sum;
  }

  // Quantized values.
  float* o = c.o + m0 * d;
  const int64_t jv = std::min(j1, p.nqv), ngv = d / p.gv;
  if (jv > j0) {
    for (int i = 0; i < kNr * c.nch * 8; ++i) c.ot[i] = _mm256_setzero_ps();
    for (int i = 0; i < kNr * c.nch; ++i) c.zs[i] = _mm256_setzero_ps();
    const uint8_t* codes = p.vq.row(c.b, c.h, j0);
    for (int64_t ja = j0; ja < jv; ja += kValueTile) {
      const int64_t nt = std::min(kValueTile, jv - ja);
      // Per slot and chunk: p * scale in lanes (staged), p * zero summed per lane.
      for (int ch = 0; ch < c.nch; ++ch) {
        __m256 zs[kNr];  // in registers: no store-to-load chain per slot
        for (int r = 0; r < kNr; ++r) zs[r] = c.zs[r * c.nch + ch];
        const float* sf = c.vsf + (ja - j0) * ngv + c.vg0[ch];
        const float* zf = c.vzf + (ja - j0) * ngv + c.vg0[ch];
        const __m256i idx = c.vidx[ch];
        for (int64_t t = 0; t < nt; ++t) {
          const __m256 sv = _mm256_permutevar8x32_ps(_mm256_loadu_ps(sf + t * ngv), idx);
          const __m256 zv = _mm256_permutevar8x32_ps(_mm256_loadu_ps(zf + t * ngv), idx);
          for (int r = 0; r < kNr; ++r) {
            const __m256 w = _mm256_broadcast_ss(sc + r * c.n_pad + (ja - j0) + t);
            c.ps[(t * kNr + r) * c.nch + ch] = _mm256_mul_ps(w, sv);
            zs[r] = _mm256_fmadd_ps(w, zv, zs[r]);
          }
        }
        for (int r = 0; r < kNr; ++r) c.zs[r * c.nch + ch] = zs[r];
      }
      constexpr int kUg = kNr == 1 ? 8 : (kNr <= 3 ? 4 : 2);
      const uint8_t* tc = codes + (ja - j0) * row_bytes;
      constexpr int kNch = kFull > 0 ? kFull : 0;
      for (int ch = 0; ch < c.nfull; ++ch)
        value_chunk<kBits, kNr, false, kUg, kNch>(c, tc, row_bytes, nt, ch);
      if (kFull < 0 && c.half)
        value_chunk<kBits, kNr, true, kUg, kNch>(c, tc, row_bytes, nt, c.nfull);
    }
    // Back to channels: acc_u * unit + zero sums, transposed.
    for (int r = 0; r < kNr; ++r)
      for (int ch = 0; ch < c.nch; ++ch) {
        __m256 v[8];
        for (int u = 0; u < 8; ++u)
          v[u] = _mm256_fmadd_ps(c.ot[(r * c.nch + ch) * 8 + u], _mm256_set1_ps(unit_of(kBits, u)),
                                 c.zs[r * c.nch + ch]);
        transpose8(v);
        const int nk = ch == c.nfull ? nk_last : 8;
        for (int k = 0; k < nk; ++k) _mm256_storeu_ps(o + r * d + ch * 64 + k * 8, v[k]);
      }
  } else {
    std::fill(o, o + kNr * d, 0.0f);
  }
  // Residual values.
  for (int64_t j = std::max(j0, p.nqv); j < j1; ++j) {
    const float* v = p.vr.row(c.b, c.h, j - p.nqv);
    for (int r = 0; r < kNr; ++r) {
      const __m256 w = _mm256_set1_ps(sc[r * c.n_pad + (j - j0)]);
      float* orow = o + r * d;
      for (int64_t x = 0; x < d; x += 8)
        _mm256_storeu_ps(orow + x,
                         _mm256_fmadd_ps(w, _mm256_loadu_ps(v + x), _mm256_loadu_ps(orow + x)));
    }
  }
}

// Heads of 64 or 128 channels get the chunk count at compile time; others (32, 96, ...) read it.
template <int kBits, int kNr>
void tile(const Ctx& c, int64_t m0) {
  if (!c.half && c.nfull == 1) {
    tile_impl<kBits, kNr, 1>(c, m0);
  } else if (!c.half && c.nfull == 2) {
    tile_impl<kBits, kNr, 2>(c, m0);
  } else {
    tile_impl<kBits, kNr, -1>(c, m0);
  }
}

template <int kBits>
void run_tiles(const Ctx& c, int64_t m_rows) {
  for (int64_t m0 = 0; m0 < m_rows; m0 += 4) {
    switch (std::min<int64_t>(4, m_rows - m0)) {
      case 1:
        tile<kBits, 1>(c, m0);
        break;
      case 2:
        tile<kBits, 2>(c, m0);
        break;
      case 3:
        tile<kBits, 3>(c, m0);
        break;
      default:
        tile<kBits, 4>(c, m0);
        break;
    }
  }
}

// 32-byte aligned pointer into v, reserving n floats from offset `at` (rounded up).
float* carve(std::vector<float>& v, size_t& at, size_t n) {
  float* base = v.data() + at;
  const uintptr_t a = reinterpret_cast<uintptr_t>(base);
  float* aligned = reinterpret_cast<float*>((a + 31) & ~uintptr_t{31});
  at += static_cast<size_t>(aligned - base) + n;
  return aligned;
}

}  // namespace

void block_avx2(const Problem& p, int64_t b, int64_t h, int64_t j0, int64_t j1, const float* q,
                float* mx, float* l, float* o) {
  const int64_t m_rows = p.g * p.t, d = p.d, n = j1 - j0, ngv = d / p.gv;
  Ctx c;
  c.p = &p;
  c.b = b;
  c.h = h;
  c.j0 = j0;
  c.j1 = j1;
  c.n = n;
  c.n_pad = (n + 7) / 8 * 8;
  c.nfull = static_cast<int>(d / 64);
  c.half = d % 64 != 0;
  c.nch = c.nfull + (c.half ? 1 : 0);
  c.q = q;
  c.mx = mx;
  c.l = l;
  c.o = o;
  const int64_t nch = c.nch;
  const int64_t nv = std::max<int64_t>(0, std::min(j1, p.nqv) - j0);
  thread_local std::vector<float> buf;
  const size_t need = static_cast<size_t>(
      m_rows * c.n_pad + m_rows * nch * 64 + nch * 64 + 4 * nch * 64 + kValueTile * 4 * nch * 8 +
      4 * nch * 64 + 4 * nch * 8 + 2 * (nv * ngv + 8) + nch * 8 + nch * 2 + 16 * 8);
  if (buf.size() < need) buf.resize(need);
  size_t at = 0;
  c.sc = carve(buf, at, static_cast<size_t>(m_rows * c.n_pad));
  c.qt = reinterpret_cast<__m256*>(carve(buf, at, static_cast<size_t>(m_rows * nch * 64)));
  c.st = reinterpret_cast<__m256*>(carve(buf, at, static_cast<size_t>(nch * 64)));
  c.qk = reinterpret_cast<__m256*>(carve(buf, at, static_cast<size_t>(4 * nch * 64)));
  c.ps = reinterpret_cast<__m256*>(carve(buf, at, static_cast<size_t>(kValueTile * 4 * nch * 8)));
  c.ot = reinterpret_cast<__m256*>(carve(buf, at, static_cast<size_t>(4 * nch * 64)));
  c.zs = reinterpret_cast<__m256*>(carve(buf, at, static_cast<size_t>(4 * nch * 8)));
  c.vsf = carve(buf, at, static_cast<size_t>(nv * ngv + 8));
  c.vzf = carve(buf, at, static_cast<size_t>(nv * ngv + 8));
  c.vidx = reinterpret_cast<__m256i*>(carve(buf, at, static_cast<size_t>(nch * 8)));
  c.vg0 = reinterpret_cast<int64_t*>(carve(buf, at, static_cast<size_t>(nch * 2)));

  // q in lanes, times each u's unit.
  for (int64_t m = 0; m < m_rows; ++m)
    for (int ch = 0; ch < c.nch; ++ch) {
      __m256 v[8];
      const int nk = ch == c.nfull && c.half ? 4 : 8;
      for (int k = 0; k < 8; ++k)
        v[k] = k < nk ? _mm256_loadu_ps(q + m * d + ch * 64 + k * 8) : _mm256_setzero_ps();
      transpose8(v);
      for (int u = 0; u < 8; ++u)
        c.qt[(m * nch + ch) * 8 + u] = _mm256_mul_ps(v[u], _mm256_set1_ps(unit_of(p.bits, u)));
    }
  // The block's value scales and zeros as floats, and each chunk's lane -> group map.
  if (nv > 0) {
    halves_to_floats(p.vs.row(b, h, j0), nv * ngv, c.vsf);
    halves_to_floats(p.vz.row(b, h, j0), nv * ngv, c.vzf);
    std::fill(c.vsf + nv * ngv, c.vsf + nv * ngv + 8, 0.0f);
    std::fill(c.vzf + nv * ngv, c.vzf + nv * ngv + 8, 0.0f);
  }
  for (int ch = 0; ch < c.nch; ++ch) {
    c.vg0[ch] = ch * 64 / p.gv;
    alignas(32) int32_t idx[8];
    for (int i = 0; i < 8; ++i) {
      const int64_t ch_in = std::min<int64_t>(ch * 64 + i * 8, d - 1);
      idx[i] = static_cast<int32_t>(ch_in / p.gv - c.vg0[ch]);
    }
    c.vidx[ch] = _mm256_load_si256(reinterpret_cast<const __m256i*>(idx));
  }
  if (p.bits == 2) {
    run_tiles<2>(c, m_rows);
  } else {
    run_tiles<4>(c, m_rows);
  }
}

}  // namespace kvb::kernels::kivi_detail

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#else  // not x86: never chosen (kivi_attention_avx2_supports() is false)

namespace kvb::kernels::kivi_detail {
void block_avx2(const Problem& p, int64_t b, int64_t h, int64_t j0, int64_t j1, const float* q,
                float* mx, float* l, float* o) {
  block_portable(p, b, h, j0, j1, q, mx, l, o);
}
}  // namespace kvb::kernels::kivi_detail

#endif
