#include "kernels/cpu/quant_attention.h"

#include <ATen/Parallel.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "common/check.h"
#include "kernels/cpu/quant_attention_impl.h"
#include "kernels/cpu/split_decode.h"

namespace kvb::kernels {
namespace {

using quant_detail::Kind;
using quant_detail::Problem;
using quant_detail::RowsRef;

std::atomic<int64_t> g_int_calls{0}, g_kvquant_calls{0};

constexpr int64_t kBlockSlots = 256;  // slots per work item

// Plain C++ row primitives of quant_detail::run_block.
struct PortableOps {
  static float h2f(uint16_t x) { return static_cast<float>(c10::Half(x, c10::Half::from_bits())); }
  static void half_row(const uint16_t* s, int64_t d, float* out) {
    for (int64_t c = 0; c < d; ++c) out[c] = h2f(s[c]);
  }
  // Runs of 8 codes in `bits` bytes, code i at bit i*bits of their little-endian word (for
  // 2/4/8 bits the same as 8/bits codes per byte, the first in the lowest bits).
  template <typename F>
  static void each_code(const uint8_t* p, int bits, int64_t d, F&& f) {
    const uint64_t mask = (uint64_t{1} << bits) - 1;
    for (int64_t r = 0; r < d / 8; ++r) {
      uint64_t w = 0;
      for (int k = 0; k < bits; ++k) w |= static_cast<uint64_t>(p[r * bits + k]) << (8 * k);
      for (int i = 0; i < 8; ++i) f(r * 8 + i, static_cast<unsigned>((w >> (i * bits)) & mask));
    }
  }
  static void unpack_int(const uint8_t* p, int bits, int64_t d, float* out) {
    each_code(p, bits, d, [&](int64_t c, unsigned v) { out[c] = static_cast<float>(v); });
  }
  static void unpack_lut(const uint8_t* p, int bits, int64_t d, const float* cb, float* out) {
    each_code(p, bits, d, [&](int64_t c, unsigned v) { out[c] = cb[v]; });
  }
  static float dot(const float* a, const float* b, int64_t d) {
    float acc = 0;
    for (int64_t c = 0; c < d; ++c) acc += a[c] * b[c];
    return acc;
  }
  static float dot_groups(const float* q, const float* x, const uint16_t* s, int64_t d,
                          int64_t g) {
    float acc = 0;
    for (int64_t gi = 0; gi < d / g; ++gi) acc += h2f(s[gi]) * dot(q + gi * g, x + gi * g, g);
    return acc;
  }
  static void axpy(float w, const float* x, float* y, int64_t d) {
    for (int64_t c = 0; c < d; ++c) y[c] += w * x[c];
  }
  static void axpy_groups(float w, const uint16_t* s, const float* x, float* y, int64_t d,
                          int64_t g) {
    for (int64_t gi = 0; gi < d / g; ++gi) axpy(w * h2f(s[gi]), x + gi * g, y + gi * g, g);
  }
};

bool cpu_has_avx2() { return kivi_attention_cpu_has_avx2(); }

void require_cpu(const char* fn, std::initializer_list<const torch::Tensor*> ts) {
  for (const torch::Tensor* t : ts)
    if (t->defined() && !t->device().is_cpu())
      throw Error(std::string(fn) + ": no kernel for device " + t->device().str() +
                  " (this kernel reads CPU memory only)");
}

template <typename T>
RowsRef<T> rows_of(const char* fn, const torch::Tensor& t, int64_t x, const char* what,
                   torch::ScalarType dtype) {
  RowsRef<T> r;
  KVB_CHECK(t.defined() && t.dim() == 4, fn, ": ", what, " must be a 4-D tensor");
  KVB_CHECK(t.scalar_type() == dtype, fn, ": ", what, " must be ", c10::toString(dtype), ", got ",
            t.scalar_type());
  if (t.size(2) == 0) return r;
  KVB_CHECK(t.stride(3) == 1 && (t.size(2) <= 1 || t.stride(2) == t.size(3)), fn, ": ", what,
            ": the last two dims must be contiguous");
  KVB_CHECK(t.size(3) == x, fn, ": ", what, " has rows of ", t.size(3), ", expected ", x);
  r.base = static_cast<const T*>(t.data_ptr());
  r.sb = t.stride(0);
  r.sh = t.stride(1);
  r.x = x;
  return r;
}

int64_t slots_of(const torch::Tensor& t) { return t.defined() && t.dim() == 4 ? t.size(2) : 0; }

int64_t bytes_of(std::initializer_list<const torch::Tensor*> ts) {
  int64_t n = 0;
  for (const torch::Tensor* t : ts)
    if (t->defined()) n += t->numel() * static_cast<int64_t>(t->element_size());
  return n;
}

// Checks q and the cache's [B, H_kv, S, *] geometry against it; fills p.t, p.d, p.hkv, p.g, p.s.
void shape_problem(const char* fn, const torch::Tensor& q, const torch::Tensor& kc,
                   const torch::Tensor& vc, Problem& p) {
  KVB_CHECK(q.dim() == 4, fn, ": q must be [B, H_q, T, D], got ", q.sizes());
  KVB_CHECK(q.scalar_type() == torch::kFloat32, fn, ": q must be float32");
  p.t = q.size(2);
  p.d = q.size(3);
  p.s = slots_of(kc);
  KVB_CHECK(p.s == slots_of(vc), fn, ": ", p.s, " key slots, ", slots_of(vc), " value slots");
  if (p.s == 0) return;
  KVB_CHECK(kc.size(0) == q.size(0) && vc.size(0) == q.size(0) && kc.size(1) == vc.size(1), fn,
            ": cache ", kc.sizes(), " / ", vc.sizes(), " vs q ", q.sizes());
  p.hkv = kc.size(1);
  KVB_CHECK(q.size(1) % p.hkv == 0, fn, ": ", q.size(1), " query heads over ", p.hkv,
            " KV heads");
  p.g = q.size(1) / p.hkv;
  KVB_CHECK(p.d > 0 && p.d % 8 == 0, fn, ": head_dim ", p.d, " is not a multiple of 8");
}

quant_detail::BlockFn pick(const char* fn, KernelPath path, int64_t d, int64_t group) {
  const bool ok = quant_attention_avx2_supports(d, group);
  if (path == KernelPath::kAvx2) {
    KVB_CHECK(ok, fn, ": the AVX2 path needs an AVX2+FMA+F16C CPU (",
              cpu_has_avx2() ? "present" : "absent", "), head_dim (", d, ") and group (", group,
              ") multiples of 8");
    return quant_detail::block_avx2;
  }
  if (path == KernelPath::kAuto && ok) return quant_detail::block_avx2;
  return quant_detail::block_portable;
}

// Flash-decoding over (batch row, KV head, block of slots), then the merge (as kivi_attention).
AttentionPart run(const torch::Tensor& q, const Problem& p, double scale,
                  quant_detail::BlockFn block) {
  const int64_t bsz = q.size(0), hq = q.size(1), t = p.t, d = p.d;
  torch::Tensor out = torch::zeros({bsz, hq, t, d}, q.options());
  torch::Tensor lse =
      torch::full({bsz, hq, t}, -std::numeric_limits<float>::infinity(), q.options());
  if (p.s == 0 || t == 0 || bsz == 0) return {out, lse};
  torch::Tensor qc = q.contiguous();
  split_decode::Geometry g{bsz, hq, p.hkv, t, d, p.s, kBlockSlots};
  split_decode::run(
      g, qc.data_ptr<float>(), static_cast<float>(scale),
      [&](int64_t b, int64_t h, int64_t j0, int64_t j1, const float* qb, float* mx, float* l,
          float* o) { block(p, b, h, j0, j1, qb, mx, l, o); },
      out.data_ptr<float>(), lse.data_ptr<float>());
  return {out, lse};
}

}  // namespace

namespace quant_detail {
void block_portable(const Problem& p, int64_t b, int64_t h, int64_t j0, int64_t j1, const float* q,
                    float* mx, float* l, float* o) {
  run_block<PortableOps>(p, b, h, j0, j1, q, mx, l, o);
}
}  // namespace quant_detail

bool quant_attention_avx2_supports(int64_t head_dim, int64_t group) {
  return cpu_has_avx2() && head_dim > 0 && head_dim % 8 == 0 && group > 0 && group % 8 == 0 &&
         head_dim % group == 0;
}

int64_t int_cache_bytes(const IntCache& c) {
  return bytes_of({&c.key_codes, &c.key_scale, &c.key_zero, &c.value_codes, &c.value_scale,
                   &c.value_zero});
}

int64_t kvquant_cache_bytes(const KVQuantCache& c) {
  int64_t n = bytes_of({&c.key_codebook, &c.value_codebook, &c.key_scale, &c.key_zero,
                        &c.key_codes, &c.value_codes, &c.value_scale, &c.value_zero,
                        &c.key_outlier_value, &c.key_outlier_index, &c.value_outlier_value,
                        &c.value_outlier_index});
  if (c.sinks > 0 && c.sink_keys.defined()) {
    const int64_t ns = std::min(c.sinks, slots_of(c.key_codes));
    n += 2 * c.sink_keys.size(0) * c.sink_keys.size(1) * ns * c.sink_keys.size(3) * 2;
  }
  return n;
}

int64_t int_decode_attention_calls() { return g_int_calls.load(); }
int64_t kvquant_decode_attention_calls() { return g_kvquant_calls.load(); }

AttentionPart int_decode_attention(const torch::Tensor& q, const IntCache& c, double scale,
                                   KernelPath path) {
  constexpr const char* fn = "int_decode_attention";
  g_int_calls.fetch_add(1);
  require_cpu(fn, {&q, &c.key_codes, &c.key_scale, &c.key_zero, &c.value_codes, &c.value_scale,
                   &c.value_zero});
  KVB_CHECK(c.bits == 2 || c.bits == 4 || c.bits == 8, fn, ": bits must be 2, 4 or 8, got ",
            c.bits);
  Problem p;
  p.kind = Kind::kInt;
  p.bits = c.bits;
  p.group = c.group;
  shape_problem(fn, q, c.key_codes, c.value_codes, p);
  if (p.s > 0) {
    const int64_t d = p.d, packed = d * c.bits / 8;
    KVB_CHECK(c.group > 0 && d % c.group == 0, fn, ": group ", c.group, " for head_dim ", d);
    const int64_t ng = d / c.group;
    p.kq = rows_of<uint8_t>(fn, c.key_codes, packed, "key codes", torch::kUInt8);
    p.ks = rows_of<uint16_t>(fn, c.key_scale, ng, "key scales", torch::kHalf);
    p.kz = rows_of<uint16_t>(fn, c.key_zero, ng, "key zeros", torch::kHalf);
    p.vq = rows_of<uint8_t>(fn, c.value_codes, packed, "value codes", torch::kUInt8);
    p.vs = rows_of<uint16_t>(fn, c.value_scale, ng, "value scales", torch::kHalf);
    p.vz = rows_of<uint16_t>(fn, c.value_zero, ng, "value zeros", torch::kHalf);
    for (const torch::Tensor* x :
         {&c.key_scale, &c.key_zero, &c.value_codes, &c.value_scale, &c.value_zero})
      KVB_CHECK(x->size(0) == c.key_codes.size(0) && x->size(1) == p.hkv && x->size(2) == p.s,
                fn, ": cache parts disagree: ", x->sizes(), " vs key codes ",
                c.key_codes.sizes());
  }
  return run(q, p, scale, pick(fn, path, p.d, p.s > 0 ? c.group : 8));
}

AttentionPart kvquant_decode_attention(const torch::Tensor& q, const KVQuantCache& c, double scale,
                                       KernelPath path) {
  constexpr const char* fn = "kvquant_decode_attention";
  g_kvquant_calls.fetch_add(1);
  require_cpu(fn, {&q, &c.key_codebook, &c.value_codebook, &c.key_scale, &c.key_zero,
                   &c.key_codes, &c.value_codes, &c.value_scale, &c.value_zero,
                   &c.key_outlier_value, &c.key_outlier_index, &c.value_outlier_value,
                   &c.value_outlier_index, &c.sink_keys, &c.sink_values});
  KVB_CHECK(c.bits >= 2 && c.bits <= 4, fn, ": bits must be 2, 3 or 4, got ", c.bits);
  Problem p;
  p.kind = Kind::kLut;
  p.bits = c.bits;
  p.group = 8;
  shape_problem(fn, q, c.key_codes, c.value_codes, p);
  torch::Tensor kscale, kzero;
  if (p.s > 0) {
    const int64_t d = p.d, packed = d * c.bits / 8, levels = int64_t{1} << c.bits;
    for (auto [cb, dst, what] : {std::tuple{&c.key_codebook, p.kcb, "key codebook"},
                                 std::tuple{&c.value_codebook, p.vcb, "value codebook"}}) {
      KVB_CHECK(cb->defined() && cb->numel() == levels, fn, ": ", what, " must hold ", levels,
                " levels");
      torch::Tensor f = cb->to(torch::kFloat32).contiguous();
      std::memcpy(dst, f.data_ptr<float>(), static_cast<size_t>(levels) * sizeof(float));
    }
    KVB_CHECK(c.key_scale.defined() && c.key_zero.defined() &&
                  c.key_scale.sizes() == torch::IntArrayRef({p.hkv, d}) &&
                  c.key_zero.sizes() == torch::IntArrayRef({p.hkv, d}),
              fn, ": key scale and zero must be [H_kv, D] = [", p.hkv, ", ", d, "]");
    kscale = c.key_scale.to(torch::kFloat32).contiguous();
    kzero = c.key_zero.to(torch::kFloat32).contiguous();
    p.kscale = kscale.data_ptr<float>();
    p.kzero = kzero.data_ptr<float>();
    p.kq = rows_of<uint8_t>(fn, c.key_codes, packed, "key codes", torch::kUInt8);
    p.vq = rows_of<uint8_t>(fn, c.value_codes, packed, "value codes", torch::kUInt8);
    p.vs = rows_of<uint16_t>(fn, c.value_scale, 1, "value scales", torch::kHalf);
    p.vz = rows_of<uint16_t>(fn, c.value_zero, 1, "value zeros", torch::kHalf);
    if (c.key_outlier_value.defined() && c.key_outlier_value.size(3) > 0) {
      p.nout = c.key_outlier_value.size(3);
      p.ko = rows_of<uint16_t>(fn, c.key_outlier_value, p.nout, "key outliers", torch::kHalf);
      p.ki = rows_of<int16_t>(fn, c.key_outlier_index, p.nout, "key outlier channels",
                              torch::kShort);
      p.vo = rows_of<uint16_t>(fn, c.value_outlier_value, p.nout, "value outliers", torch::kHalf);
      p.vi = rows_of<int16_t>(fn, c.value_outlier_index, p.nout, "value outlier channels",
                              torch::kShort);
    }
    for (const torch::Tensor* x : {&c.value_codes, &c.value_scale, &c.value_zero,
                                   &c.key_outlier_value, &c.key_outlier_index,
                                   &c.value_outlier_value, &c.value_outlier_index})
      if (x->defined() && (p.nout > 0 || x->size(3) != p.nout))
        KVB_CHECK(x->size(0) == c.key_codes.size(0) && x->size(1) == p.hkv && x->size(2) == p.s,
                  fn, ": cache parts disagree: ", x->sizes(), " vs key codes ",
                  c.key_codes.sizes());
    p.nsink = std::min(std::max<int64_t>(c.sinks, 0), p.s);
    if (p.nsink > 0) {
      p.sk = rows_of<uint16_t>(fn, c.sink_keys, d, "sink keys", torch::kHalf);
      p.sv = rows_of<uint16_t>(fn, c.sink_values, d, "sink values", torch::kHalf);
      KVB_CHECK(c.sink_keys.size(2) >= p.nsink && c.sink_values.size(2) >= p.nsink &&
                    c.sink_keys.size(1) == p.hkv && c.sink_values.size(1) == p.hkv,
                fn, ": ", p.nsink, " sinks, sink rows ", c.sink_keys.sizes());
    }
  }
  return run(q, p, scale, pick(fn, path, p.d, 8));
}

}  // namespace kvb::kernels
