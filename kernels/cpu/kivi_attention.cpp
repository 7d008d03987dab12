#include "kernels/cpu/kivi_attention.h"

#include <ATen/Parallel.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "common/check.h"
#include "kernels/cpu/kivi_attention_impl.h"
#include "kernels/cpu/split_decode.h"

namespace kvb::kernels {
namespace {

using kivi_detail::Problem;
using kivi_detail::RowsRef;

std::atomic<int64_t> g_calls{0};

constexpr int64_t kBlockSlots = 256;  // slots per work item (rounded to whole key groups)

inline float half_to_float(uint16_t h) {
  return static_cast<float>(c10::Half(h, c10::Half::from_bits()));
}

// Unpacked codes of one row (code values, not dequantized).
inline void unpack_row(const uint8_t* c, int64_t d, int bits, float* out) {
  const int per = 8 / bits;
  const unsigned mask = (1u << bits) - 1;
  for (int64_t j = 0; j < d / per; ++j) {
    const unsigned byte = c[j];
    for (int u = 0; u < per; ++u)
      out[j * per + u] = static_cast<float>((byte >> (u * bits)) & mask);
  }
}

template <typename T>
RowsRef<T> rows_of(const torch::Tensor& t, int64_t x, const char* what) {
  RowsRef<T> r;
  if (!t.defined() || t.size(2) == 0) return r;
  KVB_CHECK(t.stride(3) == 1 && (t.size(2) <= 1 || t.stride(2) == t.size(3)),
            "kivi_decode_attention: ", what, ": the last two dims must be contiguous");
  KVB_CHECK(t.size(3) == x, "kivi_decode_attention: ", what, " has rows of ", t.size(3),
            ", expected ", x);
  r.base = static_cast<const T*>(t.data_ptr());
  r.sb = t.stride(0);
  r.sh = t.stride(1);
  r.x = x;
  return r;
}

int64_t rows(const torch::Tensor& t) { return t.defined() ? t.size(2) : 0; }

// AVX2 and FMA as the compiler's runtime checks see them (OS support of the YMM state
// included); F16C from CPUID leaf 1 (ECX bit 29), which clang's __builtin_cpu_supports lacks.
bool cpu_has_avx2() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool has = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    const bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)) != 0;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
  }();
  return has;
#else
  return false;
#endif
}

}  // namespace

namespace kivi_detail {

// Plain C++: each code row is unpacked into D floats (code values only) and folded with the
// group's scale in the query (keys) or in the attention weight (values).
void block_portable(const Problem& p, int64_t b, int64_t h, int64_t j0, int64_t j1, const float* q,
                    float* mx, float* l, float* o) {
  const int64_t m_rows = p.g * p.t, d = p.d, n = j1 - j0, ngv = d / p.gv;
  thread_local std::vector<float> buf;
  const size_t need = static_cast<size_t>(m_rows * n + m_rows * d + m_rows + d + m_rows * ngv);
  if (buf.size() < need) buf.resize(need);
  float* sc = buf.data();         // [M, n] scores, then exp(score - mx)
  float* qs = sc + m_rows * n;    // [M, D] q * key scale of the current group
  float* bias = qs + m_rows * d;  // [M] q . key zero of the current group
  float* code = bias + m_rows;    // [D] one row's codes
  float* zsum = code + d;         // [M, D/gv] sum_j p_j * value zero

  // Scores of the quantized keys, group by group.
  for (int64_t j = j0; j < std::min(j1, p.nq);) {
    const int64_t grp = j / p.group, je = std::min({(grp + 1) * p.group, j1, p.nq});
    const uint16_t* s = p.ks.row(b, h, grp);
    const uint16_t* z = p.kz.row(b, h, grp);
    for (int64_t m = 0; m < m_rows; ++m) {
      float acc = 0;
      for (int64_t c = 0; c < d; ++c) {
        qs[m * d + c] = q[m * d + c] * half_to_float(s[c]);
        acc += q[m * d + c] * half_to_float(z[c]);
      }
      bias[m] = acc;
    }
    for (; j < je; ++j) {
      unpack_row(p.kq.row(b, h, j), d, p.bits, code);
      for (int64_t m = 0; m < m_rows; ++m) {
        float acc = 0;
        for (int64_t c = 0; c < d; ++c) acc += qs[m * d + c] * code[c];
        sc[m * n + (j - j0)] = acc + bias[m];
      }
    }
  }
  // Scores of the residual keys.
  for (int64_t j = std::max(j0, p.nq); j < j1; ++j) {
    const float* k = p.kr.row(b, h, j - p.nq);
    for (int64_t m = 0; m < m_rows; ++m) {
      float acc = 0;
      for (int64_t c = 0; c < d; ++c) acc += q[m * d + c] * k[c];
      sc[m * n + (j - j0)] = acc;
    }
  }
  // Block softmax statistics; sc becomes exp(score - mx).
  for (int64_t m = 0; m < m_rows; ++m) kivi_detail::block_softmax_row(sc + m * n, n, mx + m, l + m);
  std::fill(o, o + m_rows * d, 0.0f);
  std::fill(zsum, zsum + m_rows * ngv, 0.0f);
  // Quantized values: o += (p * scale) * code per value group, p * zero summed per group.
  for (int64_t j = j0; j < std::min(j1, p.nqv); ++j) {
    unpack_row(p.vq.row(b, h, j), d, p.bits, code);
    const uint16_t* s = p.vs.row(b, h, j);
    const uint16_t* z = p.vz.row(b, h, j);
    for (int64_t m = 0; m < m_rows; ++m) {
      const float w = sc[m * n + (j - j0)];
      float* om = o + m * d;
      for (int64_t gi = 0; gi < ngv; ++gi) {
        const float ws = w * half_to_float(s[gi]);
        zsum[m * ngv + gi] += w * half_to_float(z[gi]);
        for (int64_t c = gi * p.gv; c < (gi + 1) * p.gv; ++c) om[c] += ws * code[c];
      }
    }
  }
  for (int64_t m = 0; m < m_rows; ++m)
    for (int64_t c = 0; c < d; ++c) o[m * d + c] += zsum[m * ngv + c / p.gv];
  // Residual values.
  for (int64_t j = std::max(j0, p.nqv); j < j1; ++j) {
    const float* v = p.vr.row(b, h, j - p.nqv);
    for (int64_t m = 0; m < m_rows; ++m) {
      const float w = sc[m * n + (j - j0)];
      float* om = o + m * d;
      for (int64_t c = 0; c < d; ++c) om[c] += w * v[c];
    }
  }
}

}  // namespace kivi_detail

bool kivi_attention_cpu_has_avx2() { return cpu_has_avx2(); }

bool kivi_attention_avx2_supports(int64_t head_dim, int64_t value_group) {
  return cpu_has_avx2() && head_dim > 0 && head_dim % 32 == 0 && value_group > 0 &&
         value_group % 8 == 0 && head_dim % value_group == 0;
}

int64_t kivi_cache_bytes(const KiviCache& c) {
  int64_t n = 0;
  for (const torch::Tensor* t : {&c.key_codes, &c.key_scale, &c.key_zero, &c.key_residual,
                                 &c.value_codes, &c.value_scale, &c.value_zero, &c.value_residual})
    if (t->defined()) n += t->numel() * static_cast<int64_t>(t->element_size());
  return n;
}

int64_t kivi_decode_attention_calls() { return g_calls.load(); }

AttentionPart kivi_decode_attention(const torch::Tensor& q, const KiviCache& c, double scale,
                                    KernelPath path) {
  g_calls.fetch_add(1);
  KVB_CHECK(q.dim() == 4, "kivi_decode_attention: q must be [B, H_q, T, D], got ", q.sizes());
  // Dispatch is by device: this kernel reads host memory only.
  for (const torch::Tensor* t : {&q, &c.key_codes, &c.key_scale, &c.key_zero, &c.key_residual,
                                 &c.value_codes, &c.value_scale, &c.value_zero, &c.value_residual})
    if (t->defined() && !t->device().is_cpu())
      throw Error("kivi_decode_attention: no kernel for device " + t->device().str() +
                  " (this kernel reads CPU memory only)");
  KVB_CHECK(q.scalar_type() == torch::kFloat32, "kivi_decode_attention: q must be float32");
  KVB_CHECK(c.bits == 2 || c.bits == 4, "kivi_decode_attention: bits must be 2 or 4, got ", c.bits);
  const int64_t bsz = q.size(0), hq = q.size(1), t = q.size(2), d = q.size(3);
  KVB_CHECK(d > 0 && d % (8 / c.bits) == 0, "kivi_decode_attention: head_dim ", d);
  Problem p;
  p.bits = c.bits;
  p.group = c.group;
  p.gv = c.value_group;
  p.t = t;
  p.d = d;
  p.nq = rows(c.key_codes);
  p.nrk = rows(c.key_residual);
  p.nqv = rows(c.value_codes);
  p.nrv = rows(c.value_residual);
  p.s = p.nq + p.nrk;
  KVB_CHECK(p.s == p.nqv + p.nrv, "kivi_decode_attention: keys hold ", p.s, " slots (", p.nq,
            " quantized), values ", p.nqv + p.nrv, " (", p.nqv, " quantized)");
  torch::Tensor out = torch::zeros({bsz, hq, t, d}, q.options());
  torch::Tensor lse =
      torch::full({bsz, hq, t}, -std::numeric_limits<float>::infinity(), q.options());
  if (p.s == 0 || t == 0) return {out, lse};
  p.hkv = 0;
  for (const torch::Tensor* x :
       {&c.key_codes, &c.key_residual, &c.value_codes, &c.value_residual}) {
    if (!x->defined() || x->size(2) == 0) continue;
    KVB_CHECK(x->dim() == 4 && x->size(0) == bsz, "kivi_decode_attention: cache batch ", x->sizes(),
              " vs q ", q.sizes());
    KVB_CHECK(p.hkv == 0 || x->size(1) == p.hkv, "kivi_decode_attention: KV heads disagree");
    p.hkv = x->size(1);
  }
  KVB_CHECK(hq % p.hkv == 0, "kivi_decode_attention: ", hq, " query heads over ", p.hkv,
            " KV heads");
  p.g = hq / p.hkv;
  const int64_t packed = d * c.bits / 8;
  if (p.nq > 0) {
    KVB_CHECK(c.group > 0 && p.nq % c.group == 0, "kivi_decode_attention: ", p.nq,
              " quantized keys are not whole groups of ", c.group);
    KVB_CHECK(c.key_codes.scalar_type() == torch::kUInt8 &&
                  c.key_scale.scalar_type() == torch::kHalf &&
                  c.key_zero.scalar_type() == torch::kHalf,
              "kivi_decode_attention: key codes uint8, scales and zeros fp16");
    KVB_CHECK(c.key_scale.size(2) >= p.nq / c.group && c.key_zero.size(2) >= p.nq / c.group,
              "kivi_decode_attention: ", p.nq / c.group, " key groups, scales for ",
              c.key_scale.size(2));
    p.kq = rows_of<uint8_t>(c.key_codes, packed, "key codes");
    p.ks = rows_of<uint16_t>(c.key_scale, d, "key scales");
    p.kz = rows_of<uint16_t>(c.key_zero, d, "key zeros");
  }
  if (p.nqv > 0) {
    KVB_CHECK(c.value_group > 0 && d % c.value_group == 0 && c.value_group % (8 / c.bits) == 0,
              "kivi_decode_attention: value group ", c.value_group, " for head_dim ", d);
    KVB_CHECK(c.value_codes.scalar_type() == torch::kUInt8 &&
                  c.value_scale.scalar_type() == torch::kHalf &&
                  c.value_zero.scalar_type() == torch::kHalf,
              "kivi_decode_attention: value codes uint8, scales and zeros fp16");
    KVB_CHECK(c.value_scale.size(2) == p.nqv && c.value_zero.size(2) == p.nqv,
              "kivi_decode_attention: value scales for ", c.value_scale.size(2), " slots, ", p.nqv,
              " quantized");
    p.vq = rows_of<uint8_t>(c.value_codes, packed, "value codes");
    p.vs = rows_of<uint16_t>(c.value_scale, d / c.value_group, "value scales");
    p.vz = rows_of<uint16_t>(c.value_zero, d / c.value_group, "value zeros");
  } else if (p.gv <= 0 || d % p.gv != 0) {
    p.gv = d;  // no quantized value: the value group is never used
  }
  if (p.nrk > 0) {
    KVB_CHECK(c.key_residual.scalar_type() == torch::kFloat32,
              "kivi_decode_attention: the key residual must be float32");
    p.kr = rows_of<float>(c.key_residual, d, "key residual");
  }
  if (p.nrv > 0) {
    KVB_CHECK(c.value_residual.scalar_type() == torch::kFloat32,
              "kivi_decode_attention: the value residual must be float32");
    p.vr = rows_of<float>(c.value_residual, d, "value residual");
  }

  kivi_detail::BlockFn block = kivi_detail::block_portable;
  const bool avx2_ok = kivi_attention_avx2_supports(d, p.gv);
  if (path == KernelPath::kAvx2) {
    KVB_CHECK(avx2_ok, "kivi_decode_attention: the AVX2 path needs an AVX2+FMA+F16C CPU (",
              cpu_has_avx2() ? "present" : "absent", "), head_dim a multiple of 32 (", d,
              ") and a value group a multiple of 8 (", p.gv, ")");
    block = kivi_detail::block_avx2;
  } else if (path == KernelPath::kAuto && avx2_ok) {
    block = kivi_detail::block_avx2;
  }

  torch::Tensor qc = q.contiguous();
  const int64_t grp = p.nq > 0 ? c.group : 1;  // blocks of whole key groups
  split_decode::Geometry g{bsz, hq, p.hkv, t, d, p.s,
                           std::max<int64_t>(1, kBlockSlots / grp) * grp};
  split_decode::run(
      g, qc.data_ptr<float>(), static_cast<float>(scale),
      [&](int64_t b, int64_t h, int64_t j0, int64_t j1, const float* qb, float* mx, float* l,
          float* o) { block(p, b, h, j0, j1, qb, mx, l, o); },
      out.data_ptr<float>(), lse.data_ptr<float>());
  return {out, lse};
}

}  // namespace kvb::kernels
