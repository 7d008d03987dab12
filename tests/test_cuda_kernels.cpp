// CUDA kernels against their CPU reference twins, on raw device pointers. Compiled always; skips
// at run time when the build has no CUDA kernels (KVB_CUDA=OFF) or the machine has no GPU.
#include <gtest/gtest.h>

#include <torch/types.h>

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <iostream>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "kernels/reference/kivi_attention_reference.h"
#include "kernels/reference/quant_reference.h"
#include "methods/evict/quest.h"
#ifdef KVB_HAVE_CUDA_KERNELS
#include "kernels/cuda/dequant.h"
#include "kernels/cuda/dispatch.h"
#endif

namespace kvb {
namespace {

TEST(CudaKernels, DequantizeRowsMatchesReference) {
#ifndef KVB_HAVE_CUDA_KERNELS
  GTEST_SKIP() << "built without CUDA kernels (KVB_CUDA=OFF or no nvcc)";
#else
  if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device: " << cuda::last_error();
  torch::manual_seed(3);
  for (int bits : {2, 4, 8}) {
    for (int64_t group : {32, 64}) {
      torch::Tensor x = torch::randn({2, 3, 37, 64});  // [B, H, N, D]
      reference::Quantized q = reference::quantize_rows(x, bits, group);
      torch::Tensor want = reference::dequantize_rows(q, bits, group).contiguous();
      torch::Tensor codes = q.codes.contiguous(), scale = q.scale.contiguous(), zero = q.zero.contiguous();
      const int64_t rows = 2 * 3 * 37, d = 64;
      void* dc = cuda::device_alloc(codes.numel());
      void* ds = cuda::device_alloc(scale.numel() * 2);
      void* dz = cuda::device_alloc(zero.numel() * 2);
      void* dout = cuda::device_alloc(rows * d * 4);
      cuda::copy_to_device(dc, codes.data_ptr(), codes.numel());
      cuda::copy_to_device(ds, scale.data_ptr(), scale.numel() * 2);
      cuda::copy_to_device(dz, zero.data_ptr(), zero.numel() * 2);
      cuda::dequantize_rows(static_cast<const uint8_t*>(dc), static_cast<const uint16_t*>(ds),
                            static_cast<const uint16_t*>(dz), rows, d, bits, group, static_cast<float*>(dout));
      torch::Tensor got = torch::empty_like(want);
      cuda::copy_to_host(got.data_ptr(), dout, rows * d * 4);
      for (void* p : {dc, ds, dz, dout}) cuda::device_free(p);
      // Same fp32 formula on both sides; allow for a fused multiply-add on the GPU.
      EXPECT_TRUE(torch::allclose(got, want, 1e-6, 1e-6)) << "bits=" << bits << " group=" << group
                                                         << " max err " << (got - want).abs().max().item<float>();
    }
  }
#endif
}

#ifdef KVB_HAVE_CUDA_KERNELS
// ---- header-only kernels through kernels/cuda/dispatch.h ------------------------------------
//
// Each kernel against a CPU twin: KIVI attention against kernels/reference/kivi_attention_reference.h
// (float64), `int` and plain fp16 attention against the same float64 attention over the caches
// dequantized by kernels/reference/quant_reference.h, the Walsh–Hadamard transform against a
// float64 butterfly, top-k against a stable sort, Quest scores against methods/evict/quest.cpp.
// Tolerances (absolute): attention out and lse 1e-4 (fp32 accumulation gives ~1e-6 on these O(1)
// outputs; one misplaced slot gives > 1e-3, see test_kivi_attention.cpp); FWHT 1e-5; Quest 1e-4;
// top-k exact. Every failure prints the case's parameters.

#define KVB_REQUIRE_GPU() \
  if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device (" << cuda::last_error() << ")"

// Device memory owned by a test.
struct Dev {
  void* p = nullptr;
  Dev() = default;
  explicit Dev(size_t bytes) : p(bytes > 0 ? cuda::device_alloc(bytes) : nullptr) {}
  Dev(Dev&& o) noexcept : p(std::exchange(o.p, nullptr)) {}
  Dev& operator=(Dev&& o) noexcept {
    std::swap(p, o.p);
    return *this;
  }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  ~Dev() {
    if (p != nullptr) cuda::device_free(p);
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

Dev upload(const torch::Tensor& t) {
  torch::Tensor c = t.contiguous();
  const size_t bytes = static_cast<size_t>(c.numel()) * c.element_size();
  Dev d(bytes);
  if (bytes > 0) cuda::copy_to_device(d.p, c.data_ptr(), bytes);
  return d;
}

torch::Tensor download(const Dev& d, torch::IntArrayRef sizes, torch::ScalarType dt) {
  torch::Tensor t = torch::empty(sizes, torch::TensorOptions().dtype(dt));
  const size_t bytes = static_cast<size_t>(t.numel()) * t.element_size();
  if (bytes > 0) cuda::copy_to_host(t.data_ptr(), d.p, bytes);
  return t;
}

// A [B, H, N, X] view with contiguous rows (narrowed from a larger buffer, as the stores hold
// them) copied with its strides: the span from its first to its last element.
struct DevRows {
  Dev buf;
  cuda::DeviceRows rows;
};
DevRows upload_rows(const torch::Tensor& v) {
  DevRows r;
  if (!v.defined() || v.numel() == 0) return r;
  EXPECT_EQ(v.stride(3), 1);
  const int64_t span = (v.size(0) - 1) * v.stride(0) + (v.size(1) - 1) * v.stride(1) +
                       (v.size(2) - 1) * v.stride(2) + v.size(3);
  const size_t bytes = static_cast<size_t>(span) * v.element_size();
  r.buf = Dev(bytes);
  cuda::copy_to_device(r.buf.p, v.data_ptr(), bytes);
  r.rows = {r.buf.p, v.stride(0), v.stride(1)};
  return r;
}

// softmax(scale q k^T) v in float64 with GQA (query head h reads KV head h / G), as
// reference::kivi_attention computes it. k, v [B, H_kv, S, D].
reference::AttentionPart64 attention64(const torch::Tensor& q, const torch::Tensor& k,
                                       const torch::Tensor& v, double scale) {
  const int64_t b = q.size(0), hq = q.size(1), t = q.size(2), d = q.size(3);
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  if (k.size(2) == 0)
    return {torch::zeros({b, hq, t, d}, f64),
            torch::full({b, hq, t}, -std::numeric_limits<double>::infinity(), f64)};
  const int64_t hkv = k.size(1), g = hq / hkv;
  torch::Tensor q5 = q.to(torch::kFloat64).reshape({b, hkv, g * t, d});
  torch::Tensor s = torch::matmul(q5, k.to(torch::kFloat64).transpose(-1, -2)) * scale;
  torch::Tensor out = torch::matmul(torch::softmax(s, -1), v.to(torch::kFloat64));
  return {out.reshape({b, hq, t, d}), torch::logsumexp(s, -1).reshape({b, hq, t})};
}

constexpr double kAttnTol = 1e-4;

struct AttnErr {
  double out = 0, lse = 0;
};
// max |got - want|; lse entries that are -inf on both sides count as equal.
AttnErr attn_err(const torch::Tensor& out, const torch::Tensor& lse,
                 const reference::AttentionPart64& want) {
  AttnErr e;
  e.out = out.numel() ? (out.to(torch::kFloat64) - want.out).abs().max().item<double>() : 0.0;
  torch::Tensor l = lse.to(torch::kFloat64), w = want.lse;
  torch::Tensor both_inf = torch::isinf(l) & torch::isinf(w) & (l == w);
  e.lse = l.numel() ? torch::where(both_inf, torch::zeros_like(l), (l - w).abs()).max().item<double>()
                    : 0.0;
  return e;
}

// Runs a decode attention call on the GPU: q uploaded, out/lse downloaded.
template <typename Call>
std::pair<torch::Tensor, torch::Tensor> run_decode(const torch::Tensor& q, double scale, Call&& call) {
  const int64_t b = q.size(0), hq = q.size(1), t = q.size(2), d = q.size(3);
  Dev dq = upload(q.to(torch::kFloat32));
  Dev dout(static_cast<size_t>(b * hq * t * d) * 4), dlse(static_cast<size_t>(b * hq * t) * 4);
  cuda::DecodeQuery dqy;
  dqy.q = dq.as<float>();
  dqy.q_heads = hq;
  dqy.rows = t;
  dqy.scale = scale;
  dqy.out = dout.as<float>();
  dqy.lse = dlse.as<float>();
  call(dqy);
  cuda::stream_synchronize();
  return {download(dout, {b, hq, t, d}, torch::kFloat32), download(dlse, {b, hq, t}, torch::kFloat32)};
}

struct KiviCase {
  int bits = 2;
  int64_t d = 64, g = 1, b = 1, hkv = 2, t = 1, group = 32, gv = 32;
  int64_t nq = 0, nrk = 0, nqv = 0, nrv = 0;
  bool half_residual = false;
  std::string str() const {
    std::ostringstream os;
    os << "bits=" << bits << " D=" << d << " G=" << g << " B=" << b << " H_kv=" << hkv << " T=" << t
       << " group=" << group << " value_group=" << gv << " Nq=" << nq << " Nrk=" << nrk
       << " Nqv=" << nqv << " Nrv=" << nrv << " S=" << nq + nrk
       << " residual=" << (half_residual ? "fp16" : "fp32");
    return os.str();
  }
};

// Random codes, scales, zeros and residuals in buffers with spare rows, narrowed.
kernels::KiviCache make_kivi(const KiviCase& c, at::Generator& gen) {
  const int64_t packed = c.d * c.bits / 8, spare = 3;
  auto codes = [&](int64_t n) {
    return torch::randint(0, 256, {c.b, c.hkv, n + spare, packed}, gen).to(torch::kUInt8).narrow(2, 0, n);
  };
  auto floats = [&](int64_t n, int64_t x) {
    torch::Tensor r = torch::randn({c.b, c.hkv, n + spare, x}, gen);
    if (c.half_residual) r = r.to(torch::kHalf).to(torch::kFloat32);  // values fp16 can hold
    return r.narrow(2, 0, n);
  };
  auto scales = [&](int64_t n, int64_t x) {
    return (torch::rand({c.b, c.hkv, n + spare, x}, gen) * (4.0 / ((1 << c.bits) - 1)) + 0.05)
        .to(torch::kHalf).narrow(2, 0, n);
  };
  auto zeros = [&](int64_t n, int64_t x) {
    return (torch::rand({c.b, c.hkv, n + spare, x}, gen) * -2.5 - 0.2).to(torch::kHalf).narrow(2, 0, n);
  };
  kernels::KiviCache k;
  k.bits = c.bits;
  k.group = c.group;
  k.value_group = c.gv;
  k.key_codes = codes(c.nq);
  k.key_scale = scales(c.nq / c.group, c.d);
  k.key_zero = zeros(c.nq / c.group, c.d);
  k.key_residual = floats(c.nrk, c.d);
  k.value_codes = codes(c.nqv);
  k.value_scale = scales(c.nqv, c.d / c.gv);
  k.value_zero = zeros(c.nqv, c.d / c.gv);
  k.value_residual = floats(c.nrv, c.d);
  return k;
}

void check_kivi_case(const KiviCase& c, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const kernels::KiviCache cache = make_kivi(c, gen);
  torch::Tensor q = torch::randn({c.b, c.hkv * c.g, c.t, c.d}, gen) * 1.5;
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.d));
  const reference::AttentionPart64 want = reference::kivi_attention(q, cache, scale);
  const torch::ScalarType rdt = c.half_residual ? torch::kHalf : torch::kFloat32;
  DevRows kq = upload_rows(cache.key_codes), ks = upload_rows(cache.key_scale),
          kz = upload_rows(cache.key_zero), kr = upload_rows(cache.key_residual.to(rdt)),
          vq = upload_rows(cache.value_codes), vs = upload_rows(cache.value_scale),
          vz = upload_rows(cache.value_zero), vr = upload_rows(cache.value_residual.to(rdt));
  cuda::KiviCacheView v;
  v.bits = c.bits;
  v.group = c.group;
  v.value_group = c.gv;
  v.batch = c.b;
  v.kv_heads = c.hkv;
  v.head_dim = c.d;
  v.n_quant_keys = c.nq;
  v.n_residual_keys = c.nrk;
  v.n_quant_values = c.nqv;
  v.n_residual_values = c.nrv;
  v.residual = c.half_residual ? cuda::ResidualType::kFloat16 : cuda::ResidualType::kFloat32;
  v.key_codes = kq.rows;
  v.key_scale = ks.rows;
  v.key_zero = kz.rows;
  v.key_residual = kr.rows;
  v.value_codes = vq.rows;
  v.value_scale = vs.rows;
  v.value_zero = vz.rows;
  v.value_residual = vr.rows;
  // Once with the call's own workspace, once with the caller's.
  for (bool own_ws : {false, true}) {
    auto [out, lse] = run_decode(q, scale, [&](const cuda::DecodeQuery& dq) {
      if (!own_ws) return cuda::kivi_decode_attention(v, dq, nullptr, 0);
      const size_t n = cuda::kivi_decode_workspace_bytes(v, dq);
      Dev ws(n);
      cuda::kivi_decode_attention(v, dq, ws.p, n);
      cuda::stream_synchronize();
    });
    const AttnErr e = attn_err(out, lse, want);
    EXPECT_LE(e.out, kAttnTol) << "out: " << c.str() << " seed=" << seed << " workspace="
                               << (own_ws ? "caller" : "call") << " max|err|=" << e.out;
    EXPECT_LE(e.lse, kAttnTol) << "lse: " << c.str() << " seed=" << seed << " max|err|=" << e.lse;
  }
}

TEST(CudaKernels, KiviDecodeAttentionMatchesReference) {
  KVB_REQUIRE_GPU();
  // Slot splits (Nq, Nrk, Nqv, Nrv): empty, residual only, all quantized, a split on the
  // 256-slot block boundary, the residual boundary one slot either side, ragged multi-block.
  const std::vector<std::array<int64_t, 4>> splits = {
      {0, 0, 0, 0},      {0, 5, 0, 5},       {32, 0, 32, 0},     {256, 1, 225, 32},
      {224, 31, 224, 31}, {256, 0, 255, 1},  {576, 31, 575, 32}, {1024, 100, 1092, 32}};
  uint64_t seed = 100;
  int cases = 0;
  for (int bits : {2, 4})
    for (int64_t d : {32, 64, 128})
      for (const auto& s : splits) {
        KiviCase c;
        c.bits = bits;
        c.d = d;
        c.nq = s[0];
        c.nrk = s[1];
        c.nqv = s[2];
        c.nrv = s[3];
        check_kivi_case(c, seed++);
        // GQA group 4 with 2 query rows, batch 2, value group 16; fp16 residual.
        c.g = 4;
        c.t = 2;
        c.b = 2;
        c.gv = 16;
        c.half_residual = true;
        check_kivi_case(c, seed++);
        cases += 2;
      }
  // More query rows per KV head than one CTA holds (G*T = 24 > 16), key group 64 and 128.
  for (int64_t group : {64, 128}) {
    KiviCase c;
    c.bits = 4;
    c.d = 128;
    c.g = 8;
    c.t = 3;
    c.hkv = 1;
    c.group = group;
    c.gv = 128;
    c.nq = 4 * group;
    c.nrk = 7;
    c.nqv = 4 * group - 25;
    c.nrv = 32;
    check_kivi_case(c, seed++);
    ++cases;
  }
  std::cout << "[ info ] " << cases << " KIVI cases checked on " << cuda::device_count() << " device(s)\n";
}

// `int` cache (methods/quant/int_quant.cpp): every slot per token, groups of channels.
TEST(CudaKernels, IntDecodeAttentionMatchesReference) {
  KVB_REQUIRE_GPU();
  uint64_t seed = 300;
  for (int bits : {2, 4, 8})
    for (int64_t d : {32, 64, 128})
      for (int64_t group : {int64_t{32}, d})
        for (int64_t s : {0, 1, 255, 256, 257, 700})
          for (int64_t g : {1, 4}) {
            const int64_t b = 2, hkv = 2, t = 1, spare = 2, packed = d * bits / 8;
            std::ostringstream name;
            name << "bits=" << bits << " D=" << d << " group=" << group << " S=" << s << " G=" << g
                 << " B=" << b << " H_kv=" << hkv << " seed=" << seed;
            auto gen = at::make_generator<at::CPUGeneratorImpl>(seed++);
            auto codes = [&] {
              return torch::randint(0, 256, {b, hkv, s + spare, packed}, gen).to(torch::kUInt8).narrow(2, 0, s);
            };
            auto meta = [&](double lo, double hi) {
              return (torch::rand({b, hkv, s + spare, d / group}, gen) * (hi - lo) + lo)
                  .to(torch::kHalf).narrow(2, 0, s);
            };
            const double smax = 4.0 / ((1 << bits) - 1);
            torch::Tensor kc = codes(), ks = meta(0.05, smax), kz = meta(-2.7, -0.2);
            torch::Tensor vc = codes(), vs = meta(0.05, smax), vz = meta(-2.7, -0.2);
            torch::Tensor q = torch::randn({b, hkv * g, t, d}, gen) * 1.5;
            const double scale = 1.0 / std::sqrt(static_cast<double>(d));
            auto deq = [&](const torch::Tensor& c, const torch::Tensor& sc, const torch::Tensor& z) {
              if (s == 0) return torch::zeros({b, hkv, 0, d});
              return reference::dequantize_rows({c.contiguous(), sc.contiguous(), z.contiguous()}, bits, group);
            };
            const reference::AttentionPart64 want = attention64(q, deq(kc, ks, kz), deq(vc, vs, vz), scale);
            DevRows dkc = upload_rows(kc), dks = upload_rows(ks), dkz = upload_rows(kz),
                    dvc = upload_rows(vc), dvs = upload_rows(vs), dvz = upload_rows(vz);
            cuda::IntCacheView v;
            v.bits = bits;
            v.group = group;
            v.batch = b;
            v.kv_heads = hkv;
            v.head_dim = d;
            v.slots = s;
            v.key_codes = dkc.rows;
            v.key_scale = dks.rows;
            v.key_zero = dkz.rows;
            v.value_codes = dvc.rows;
            v.value_scale = dvs.rows;
            v.value_zero = dvz.rows;
            auto [out, lse] = run_decode(q, scale, [&](const cuda::DecodeQuery& dq) {
              cuda::int_decode_attention(v, dq, nullptr, 0);
            });
            const AttnErr e = attn_err(out, lse, want);
            EXPECT_LE(e.out, kAttnTol) << "out: " << name.str() << " max|err|=" << e.out;
            EXPECT_LE(e.lse, kAttnTol) << "lse: " << name.str() << " max|err|=" << e.lse;
          }
}

TEST(CudaKernels, PlainHalfDecodeAttentionMatchesReference) {
  KVB_REQUIRE_GPU();
  uint64_t seed = 500;
  for (int64_t d : {32, 64, 128})
    for (int64_t s : {0, 1, 31, 256, 513, 2000})
      for (int64_t g : {1, 2, 8}) {
        const int64_t b = 2, hkv = 2, t = 1;
        std::ostringstream name;
        name << "D=" << d << " S=" << s << " G=" << g << " B=" << b << " H_kv=" << hkv << " seed=" << seed;
        auto gen = at::make_generator<at::CPUGeneratorImpl>(seed++);
        torch::Tensor kbuf = torch::randn({b, hkv, s + 5, d}, gen).to(torch::kHalf);
        torch::Tensor vbuf = torch::randn({b, hkv, s + 5, d}, gen).to(torch::kHalf);
        torch::Tensor k = kbuf.narrow(2, 0, s), vv = vbuf.narrow(2, 0, s);
        torch::Tensor q = torch::randn({b, hkv * g, t, d}, gen);
        const double scale = 1.0 / std::sqrt(static_cast<double>(d));
        const reference::AttentionPart64 want = attention64(q, k, vv, scale);
        DevRows dk = upload_rows(k), dv = upload_rows(vv);
        cuda::PlainCacheView v;
        v.batch = b;
        v.kv_heads = hkv;
        v.head_dim = d;
        v.slots = s;
        v.keys = dk.rows;
        v.values = dv.rows;
        auto [out, lse] = run_decode(q, scale, [&](const cuda::DecodeQuery& dq) {
          cuda::plain_decode_attention(v, dq, nullptr, 0);
        });
        const AttnErr e = attn_err(out, lse, want);
        EXPECT_LE(e.out, kAttnTol) << "out: " << name.str() << " max|err|=" << e.out;
        EXPECT_LE(e.lse, kAttnTol) << "lse: " << name.str() << " max|err|=" << e.lse;
      }
}

// Sylvester Walsh–Hadamard in float64, orthonormal.
torch::Tensor fwht64(const torch::Tensor& x) {
  torch::Tensor y = x.to(torch::kFloat64).contiguous().clone();
  const int64_t n = y.size(-1), rows = y.numel() / std::max<int64_t>(n, 1);
  double* p = y.data_ptr<double>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t h = 1; h < n; h <<= 1)
      for (int64_t i = 0; i < n; i += 2 * h)
        for (int64_t j = i; j < i + h; ++j) {
          double* row = p + r * n;
          const double a = row[j], b = row[j + h];
          row[j] = a + b;
          row[j + h] = a - b;
        }
  return y / std::sqrt(static_cast<double>(n));
}

TEST(CudaKernels, FwhtMatchesFloat64) {
  KVB_REQUIRE_GPU();
  torch::manual_seed(7);
  for (int64_t n : {1, 2, 4, 32, 64, 128, 1024, 4096, 8192})
    for (int64_t rows : {1, 3, 7}) {
      torch::Tensor x = torch::randn({rows, n});
      Dev dx = upload(x);
      cuda::fwht_rows(dx.as<float>(), rows, n);
      cuda::stream_synchronize();
      torch::Tensor got = download(dx, {rows, n}, torch::kFloat32);
      const double err = (got.to(torch::kFloat64) - fwht64(x)).abs().max().item<double>();
      EXPECT_LE(err, 1e-5) << "n=" << n << " rows=" << rows << " max|err|=" << err;
    }
}

// Indices of the k largest of a row, ties to the lower index, ascending.
std::vector<int64_t> topk_ref(const float* x, int64_t s, int64_t k) {
  std::vector<int64_t> idx(static_cast<size_t>(s));
  for (int64_t i = 0; i < s; ++i) idx[static_cast<size_t>(i)] = i;
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return x[a] > x[b]; });
  idx.resize(static_cast<size_t>(k));
  std::sort(idx.begin(), idx.end());
  return idx;
}

TEST(CudaKernels, TopkMatchesStableSort) {
  KVB_REQUIRE_GPU();
  torch::manual_seed(11);
  for (int64_t s : {1, 5, 255, 256, 257, 1000, 5000})
    for (bool ties : {false, true})
      for (int64_t k : {int64_t{1}, (s + 2) / 3, s}) {
        const int64_t rows = 4;
        // With ties: small integers (many equal values, negatives included); else normals.
        torch::Tensor x = ties ? torch::randint(-4, 5, {rows, s}).to(torch::kFloat32) : torch::randn({rows, s});
        Dev dx = upload(x), di(static_cast<size_t>(rows * k) * 8);
        cuda::topk_rows(dx.as<float>(), rows, s, k, di.as<int64_t>());
        cuda::stream_synchronize();
        torch::Tensor got = download(di, {rows, k}, torch::kInt64);
        for (int64_t r = 0; r < rows; ++r) {
          const std::vector<int64_t> want = topk_ref(x.data_ptr<float>() + r * s, s, k);
          const int64_t* g = got.data_ptr<int64_t>() + r * k;
          EXPECT_TRUE(std::equal(want.begin(), want.end(), g))
              << "S=" << s << " k=" << k << " ties=" << ties << " row=" << r;
        }
      }
}

TEST(CudaKernels, QuestPageScoresMatchQuest) {
  KVB_REQUIRE_GPU();
  torch::manual_seed(13);
  for (int64_t d : {32, 64, 128, 80})
    for (int64_t g : {1, 4})
      for (int64_t page : {1, 16})
        for (int64_t s : {1, 17, 300}) {
          const int64_t b = 2, hkv = 3;
          torch::Tensor k = torch::randn({b, hkv, s, d}), q = torch::randn({b, hkv * g, 1, d});
          const QuestBounds bounds = quest_page_bounds(k, page);
          torch::Tensor want = std::get<0>(quest_page_scores(q, bounds).max(2));  // [B, H_kv, P]
          const int64_t pages = bounds.lo.size(2);
          Dev dq = upload(q), dlo = upload(bounds.lo), dhi = upload(bounds.hi);
          Dev ds(static_cast<size_t>(b * hkv * pages) * 4);
          cuda::quest_page_scores(dq.as<float>(), dlo.as<float>(), dhi.as<float>(), b, hkv * g, hkv,
                                  pages, d, ds.as<float>());
          cuda::stream_synchronize();
          torch::Tensor got = download(ds, {b, hkv, pages}, torch::kFloat32);
          const double err = (got - want).abs().max().item<double>();
          EXPECT_LE(err, 1e-4) << "D=" << d << " G=" << g << " page=" << page << " S=" << s
                               << " max|err|=" << err;
        }
}

// Argument checks happen on the host before any CUDA call, so this runs without a GPU.
TEST(CudaKernels, DispatchRefusesUnsupportedShapes) {
  float dummy = 0;
  cuda::DecodeQuery q;
  q.q = &dummy;
  q.out = &dummy;
  q.lse = &dummy;
  q.q_heads = 2;
  cuda::KiviCacheView kv;
  kv.batch = 1;
  kv.kv_heads = 2;
  kv.head_dim = 96;
  kv.n_residual_keys = kv.n_residual_values = 4;
  kv.key_residual.data = kv.value_residual.data = &dummy;
  auto message = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "(no exception)";
  };
  EXPECT_NE(message([&] { cuda::kivi_decode_attention(kv, q, nullptr, 0); }).find("head_dim 96"),
            std::string::npos);
  kv.head_dim = 64;
  kv.bits = 3;
  EXPECT_NE(message([&] { cuda::kivi_decode_attention(kv, q, nullptr, 0); }).find("bits 3"),
            std::string::npos);
  kv.bits = 2;
  kv.n_residual_values = 5;
  EXPECT_NE(message([&] { cuda::kivi_decode_attention(kv, q, nullptr, 0); }).find("values 5"),
            std::string::npos);
  kv.n_residual_values = 4;
  q.q_heads = 3;
  EXPECT_NE(message([&] { cuda::kivi_decode_attention(kv, q, nullptr, 0); }).find("3 query heads"),
            std::string::npos);
  cuda::IntCacheView iv;
  iv.bits = 4;
  iv.group = 48;
  iv.batch = 1;
  iv.kv_heads = 1;
  iv.head_dim = 64;
  q.q_heads = 1;
  EXPECT_NE(message([&] { cuda::int_decode_attention(iv, q, nullptr, 0); }).find("group 48"),
            std::string::npos);
  EXPECT_NE(message([&] { cuda::fwht_rows(&dummy, 1, 48); }).find("power of 2"), std::string::npos);
  EXPECT_NE(message([&] { cuda::fwht_rows(&dummy, 1, 16384); }).find("power of 2"), std::string::npos);
  int64_t idx = 0;
  EXPECT_NE(message([&] { cuda::topk_rows(&dummy, 1, 4, 5, &idx); }).find("k 5"), std::string::npos);
  EXPECT_NE(message([&] { cuda::quest_page_scores(&dummy, &dummy, &dummy, 1, 3, 2, 1, 32, &dummy); })
                .find("H_q 3"),
            std::string::npos);
}

#else
TEST(CudaKernels, HeaderOnlyKernels) {
  GTEST_SKIP() << "built without CUDA kernels (KVB_CUDA=OFF or no nvcc)";
}
#endif  // KVB_HAVE_CUDA_KERNELS

}  // namespace
}  // namespace kvb
