// Internals of kernels/cpu/quant_attention.h shared by its portable and AVX2 translation units:
// the problem as raw pointers (no torch types: the AVX2 unit compiles nothing of torch under its
// target flags) and the per-block algorithm, a template over the few row primitives (`Ops`)
// that each unit supplies. Everything here has internal linkage (anonymous namespace), so the
// AVX2 unit's instantiation can never be picked by the linker for the portable one.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/cpu/kivi_attention_impl.h"  // RowsRef

namespace kvb::kernels::quant_detail {

using kivi_detail::RowsRef;

enum class Kind { kInt, kLut };

struct Problem {
  Kind kind = Kind::kInt;
  int bits = 4;
  int64_t group = 64;  // int: channels per scale/zero
  int64_t hkv = 0, g = 0, t = 0, d = 0, s = 0;
  RowsRef<uint8_t> kq, vq;  // [B, H_kv, S, D*bits/8] packed codes
  RowsRef<uint16_t> ks, kz, vs, vz;  // int: [B, H_kv, S, D/group]; kvquant: vs, vz [.., S, 1]
  // kvquant
  float kcb[16] = {}, vcb[16] = {};  // codebooks, zero-padded to 16 levels
  const float* kscale = nullptr;     // [H_kv, D] fp32
  const float* kzero = nullptr;      // [H_kv, D] fp32
  int64_t nout = 0;                  // outliers per row (keys and values)
  RowsRef<uint16_t> ko, vo;          // [B, H_kv, S, nout] fp16 bits
  RowsRef<int16_t> ki, vi;           // [B, H_kv, S, nout] channels
  int64_t nsink = 0;                 // slots [0, nsink) read sk / sv
  RowsRef<uint16_t> sk, sv;          // [B, H_kv, >= nsink, D] fp16 bits
};

// One work item: the M = G*T query rows of KV head (b, h) over slots [j0, j1) (contract of
// kivi_detail::BlockFn: q already scaled; mx, l, o the block's max, sum and unnormalized output).
using BlockFn = void (*)(const Problem& p, int64_t b, int64_t h, int64_t j0, int64_t j1,
                         const float* q, float* mx, float* l, float* o);

void block_portable(const Problem& p, int64_t b, int64_t h, int64_t j0, int64_t j1, const float* q,
                    float* mx, float* l, float* o);
// Needs AVX2, FMA and F16C, D a multiple of 8 and (int) the group a multiple of 8.
void block_avx2(const Problem& p, int64_t b, int64_t h, int64_t j0, int64_t j1, const float* q,
                float* mx, float* l, float* o);

namespace {

// Code c of a packed row (runs of 8 codes in `bits` bytes, little-endian).
inline unsigned code_at(const uint8_t* row, int bits, int64_t c) {
  const uint8_t* run = row + (c / 8) * bits;
  uint64_t w = 0;
  for (int k = 0; k < bits; ++k) w |= static_cast<uint64_t>(run[k]) << (8 * k);
  return static_cast<unsigned>((w >> ((c % 8) * bits)) & ((uint64_t{1} << bits) - 1));
}

// Ops supplies (all rows of length d, d a multiple of 8):
//   float h2f(uint16_t)                                     fp16 bits -> float
//   void  half_row(const uint16_t*, int64_t d, float* out)  fp16 row -> floats
//   void  unpack_int(const uint8_t*, int bits, int64_t d, float* out)       code values
//   void  unpack_lut(const uint8_t*, int bits, int64_t d, const float* cb16, float* out)
//                                                           codebook levels cb[code]
//   float dot(const float*, const float*, int64_t d)
//   float dot_groups(const float* q, const float* code, const uint16_t* s, int64_t d, int64_t g)
//                                                           sum_g s_g (q_g . code_g)
//   void  axpy(float w, const float* x, float* y, int64_t d)  y += w x
//   void  axpy_groups(float w, const uint16_t* s, const float* x, float* y, int64_t d, int64_t g)
//                                                           y_g += (w s_g) x_g
// and optionally, over whole slot ranges [js, j1) of quantized slots (else the row primitives
// above are used slot by slot):
//   bool  range_scores(p, b, h, js, j1, qq [M, D], M, out, stride)
//           out[m * stride + (j - js)] = kvquant: qq_m . levels_j; int: sum_g s_g (qq_g . code_g)
//   bool  range_values(p, b, h, js, j1, w, stride, M, o)
//           o_m += sum_j w[m * stride + (j - js)] * (kvquant: vs_j levels_j; int: s_g code_g)
//   (returning false: not handled, the slot-by-slot path runs);
//   void  softmax_row(float* r, int64_t n, float* top, float* sum)
//           *top = max r, r <- exp(r - *top), *sum = sum r (else std::exp element by element).
template <class Ops>
void run_block(const Problem& p, int64_t b, int64_t h, int64_t j0, int64_t j1, const float* q,
               float* mx, float* l, float* o) {
  const int64_t m_rows = p.g * p.t, d = p.d, n = j1 - j0;
  const bool lut = p.kind == Kind::kLut;
  const int64_t ng = lut ? 1 : d / p.group;
  const int64_t js = std::min(std::max(j0, p.nsink), j1);  // [j0, js) sinks, [js, j1) codes
  thread_local std::vector<float> buf;
  const size_t need = static_cast<size_t>(m_rows * n + d + m_rows * d + 3 * m_rows * ng);
  if (buf.size() < need) buf.resize(need);
  float* sc = buf.data();          // [M, n] scores, then exp(score - mx)
  float* code = sc + m_rows * n;   // [D] one row's code values / levels
  float* qk = code + d;            // kvquant: [M, D] q * key scale
  float* qsum = qk + m_rows * d;   // int: [M, ng] sum of q over each group; kvquant: [M] q . kz
  float* zsum = qsum + m_rows * ng;  // [M, ng] sum_j p_j * value zero

  if (lut) {
    const float* ksc = p.kscale + h * d;
    const float* kze = p.kzero + h * d;
    for (int64_t m = 0; m < m_rows; ++m) {
      float bias = 0;
      for (int64_t c = 0; c < d; ++c) {
        qk[m * d + c] = q[m * d + c] * ksc[c];
        bias += q[m * d + c] * kze[c];
      }
      qsum[m] = bias;
    }
  } else {
    for (int64_t m = 0; m < m_rows; ++m)
      for (int64_t gi = 0; gi < ng; ++gi) {
        float acc = 0;
        for (int64_t c = gi * p.group; c < (gi + 1) * p.group; ++c) acc += q[m * d + c];
        qsum[m * ng + gi] = acc;
      }
  }

  // Scores: sinks, then the quantized slots' dot products, then biases and outliers.
  for (int64_t j = j0; j < js; ++j) {
    Ops::half_row(p.sk.row(b, h, j), d, code);
    for (int64_t m = 0; m < m_rows; ++m) sc[m * n + (j - j0)] = Ops::dot(q + m * d, code, d);
  }
  bool done = false;
  if constexpr (requires { Ops::range_scores(p, b, h, js, j1, q, m_rows, sc, n); })
    done = Ops::range_scores(p, b, h, js, j1, lut ? qk : q, m_rows, sc + (js - j0), n);
  if (!done) {
    for (int64_t j = js; j < j1; ++j) {
      float* scj = sc + (j - j0);
      if (lut) {
        Ops::unpack_lut(p.kq.row(b, h, j), p.bits, d, p.kcb, code);
        for (int64_t m = 0; m < m_rows; ++m) scj[m * n] = Ops::dot(qk + m * d, code, d);
      } else {
        Ops::unpack_int(p.kq.row(b, h, j), p.bits, d, code);
        const uint16_t* s = p.ks.row(b, h, j);
        for (int64_t m = 0; m < m_rows; ++m)
          scj[m * n] = Ops::dot_groups(q + m * d, code, s, d, p.group);
      }
    }
  }
  for (int64_t j = js; j < j1; ++j) {
    float* scj = sc + (j - j0);
    if (lut) {
      for (int64_t m = 0; m < m_rows; ++m) scj[m * n] += qsum[m];
      if (p.nout > 0) {
        const uint8_t* row = p.kq.row(b, h, j);
        const uint16_t* ov = p.ko.row(b, h, j);
        const int16_t* oi = p.ki.row(b, h, j);
        const float* ksc = p.kscale + h * d;
        const float* kze = p.kzero + h * d;
        for (int64_t i = 0; i < p.nout; ++i) {
          const int64_t c = oi[i];
          const float deq = p.kcb[code_at(row, p.bits, c)] * ksc[c] + kze[c];
          const float delta = Ops::h2f(ov[i]) - deq;
          for (int64_t m = 0; m < m_rows; ++m) scj[m * n] += q[m * d + c] * delta;
        }
      }
    } else {
      const uint16_t* z = p.kz.row(b, h, j);
      for (int64_t m = 0; m < m_rows; ++m) {
        float acc = 0;
        for (int64_t gi = 0; gi < ng; ++gi) acc += Ops::h2f(z[gi]) * qsum[m * ng + gi];
        scj[m * n] += acc;
      }
    }
  }
  // Block softmax statistics; sc becomes exp(score - mx).
  for (int64_t m = 0; m < m_rows; ++m) {
    float* r = sc + m * n;
    if constexpr (requires { Ops::softmax_row(r, n, mx, l); }) {
      Ops::softmax_row(r, n, mx + m, l + m);
    } else {
      kivi_detail::block_softmax_row(r, n, mx + m, l + m);
    }
  }
  std::fill(o, o + m_rows * d, 0.0f);
  std::fill(zsum, zsum + m_rows * ng, 0.0f);
  // Values: sinks, the quantized slots' codes times (p * scale), zero points and outliers.
  for (int64_t j = j0; j < js; ++j) {
    Ops::half_row(p.sv.row(b, h, j), d, code);
    for (int64_t m = 0; m < m_rows; ++m) Ops::axpy(sc[m * n + (j - j0)], code, o + m * d, d);
  }
  done = false;
  if constexpr (requires { Ops::range_values(p, b, h, js, j1, sc, n, m_rows, o); })
    done = Ops::range_values(p, b, h, js, j1, sc + (js - j0), n, m_rows, o);
  if (!done) {
    for (int64_t j = js; j < j1; ++j) {
      const float* w = sc + (j - j0);
      if (lut) {
        Ops::unpack_lut(p.vq.row(b, h, j), p.bits, d, p.vcb, code);
        const float vs = Ops::h2f(*p.vs.row(b, h, j));
        for (int64_t m = 0; m < m_rows; ++m) Ops::axpy(w[m * n] * vs, code, o + m * d, d);
      } else {
        Ops::unpack_int(p.vq.row(b, h, j), p.bits, d, code);
        const uint16_t* s = p.vs.row(b, h, j);
        for (int64_t m = 0; m < m_rows; ++m)
          Ops::axpy_groups(w[m * n], s, code, o + m * d, d, p.group);
      }
    }
  }
  for (int64_t j = js; j < j1; ++j) {
    const float* w = sc + (j - j0);
    if (lut) {
      const float vs = Ops::h2f(*p.vs.row(b, h, j)), vz = Ops::h2f(*p.vz.row(b, h, j));
      for (int64_t m = 0; m < m_rows; ++m) zsum[m] += w[m * n] * vz;
      if (p.nout > 0) {
        const uint8_t* row = p.vq.row(b, h, j);
        const uint16_t* ov = p.vo.row(b, h, j);
        const int16_t* oi = p.vi.row(b, h, j);
        for (int64_t i = 0; i < p.nout; ++i) {
          const int64_t c = oi[i];
          const float delta = Ops::h2f(ov[i]) - (p.vcb[code_at(row, p.bits, c)] * vs + vz);
          for (int64_t m = 0; m < m_rows; ++m) o[m * d + c] += w[m * n] * delta;
        }
      }
    } else {
      const uint16_t* z = p.vz.row(b, h, j);
      for (int64_t m = 0; m < m_rows; ++m)
        for (int64_t gi = 0; gi < ng; ++gi) zsum[m * ng + gi] += w[m * n] * Ops::h2f(z[gi]);
    }
  }
  const int64_t gw = lut ? d : p.group;
  for (int64_t m = 0; m < m_rows; ++m)
    for (int64_t c = 0; c < d; ++c) o[m * d + c] += zsum[m * ng + c / gw];
}

}  // namespace
}  // namespace kvb::kernels::quant_detail
