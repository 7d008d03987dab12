// Fused KIVI decode attention (kernels/cpu/kivi_attention.h), one decode query, at the shapes
// registered at run time (bench_main.cpp: --kvb_shapes=FILE, else SmolLM2-135M's attention shape,
// H_q 9, H_kv 3, D 64, at 1K-32K tokens and 2/4 bits; names end in the shape,
// "hq:9/hkv:3/d:64/ctx:32768/bits:2"), against what the engine did before it: dequantize the
// cache (kernels::dequantize_cols/rows into fresh fp32 tensors, as KIVI's view() does) and
// attend with matmul/softmax/matmul; and against full-cache fp32 attention over the same context.
//
//   OPENBLAS_NUM_THREADS=1 KVB_BENCH_THREADS=2 kvbench_bench
//       --benchmark_filter='MemBandwidth|KiviAttn|AttnFp32'
//
// KVB_BENCH_THREADS: libtorch's intra-op (OpenMP) threads, 2 unless set. OPENBLAS_NUM_THREADS=1
// keeps the pthread OpenBLAS that Debian's libtorch uses from spinning its own threads against
// the OpenMP ones on a 2-core machine (with it unset, any 2-thread matmul here took ~12 ms).
//
// KIVI as held after `ctx` tokens with group 32, residual 128: floor(ctx/128)*128 quantized keys,
// the last 128 values in full precision. Each variant cycles over 30 layers' caches (SmolLM2 has
// 30; fewer past 32K at this shape, see layers_for), built apart in memory, so at long contexts a call reads its cache from DRAM as a decode
// step does, not from the 32 MB L3 (at 1K the 30 packed layers fit in L3, as they would in a
// real run).
//
// Counters of BM_KiviAttnFused (per call; medians over kRounds rounds, a round being one pass
// over the 30 layers with each variant in turn, then the bandwidth read and copy, so that load
// from other processes hits all of them alike):
//   packed_MB     bytes of the packed cache one call reads (codes, scales, zeros, residuals)
//   GB/s          packed bytes / fused time
//   bw_read       the fused GB/s as a fraction of a 256 MiB fp32 read (sum) measured in the same
//                 rounds; bw_copy: of the copy rate of a 256 MiB fp32 copy (bytes copied per
//                 second, as BM_CopyFp32 counts them)
//   roofline_read the same as bw_read (`kvbench import-bench` files it as roofline_fraction);
//                 bytes_moved: packed_MB in bytes
//   us_fused, us_dequant, us_fp32, x_vs_dequant, x_vs_fp32: times and speedups
//   spread        (max - min) / median of the fused time over the rounds: how noisy the run was
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <vector>

#include "kernels/bench/bench_util.h"
#include "kernels/cpu/kivi_attention.h"
#include "kernels/cpu/quant_kernels.h"

namespace {

using kvb::kernels::KiviCache;

using kvb::bench::KernelShape;

constexpr int64_t kGroup = 32, kResidual = 128;

// Layers per fixture: SmolLM2's 30, fewer at long contexts so the fp32 copies stay near 1.5 GB
// (at least 2, whose caches together are still far past the L3 there).
int64_t layers_for(const KernelShape& s) {
  const double per_layer = 2.0 * static_cast<double>(s.kv_heads * s.context * s.head_dim) * 4;
  return std::clamp<int64_t>(static_cast<int64_t>(1.5e9 / per_layer), 2, 30);
}
constexpr int kRounds = 9;

void set_threads() {
  const char* t = std::getenv("KVB_BENCH_THREADS");
  at::set_num_threads(t ? std::atoi(t) : std::min(2, at::get_num_threads()));
}

using kvb::bench::median;
using kvb::bench::seconds_since;

// One context's caches: 30 KIVI layers per bit width, 30 fp32 layers, the query.
struct Fixture {
  KernelShape shape;
  int64_t ctx = 0;
  std::vector<KiviCache> kivi[2];       // [0]: 2-bit, [1]: 4-bit
  std::vector<torch::Tensor> k32, v32;  // [1, H_kv, ctx, D] fp32 per layer
  torch::Tensor q;                      // [1, H_q, 1, D]
};

KiviCache make_kivi(int bits, int64_t ctx, const torch::Tensor& k, const torch::Tensor& v) {
  const int64_t kHkv = k.size(1), kD = k.size(3);
  const int64_t nq = ctx / kResidual * kResidual, nqv = std::max<int64_t>(0, ctx - kResidual);
  KiviCache c;
  c.bits = bits;
  c.group = kGroup;
  c.value_group = kGroup;
  c.key_codes = torch::empty({1, kHkv, nq, kD * bits / 8}, torch::kUInt8);
  c.key_scale = torch::empty({1, kHkv, nq / kGroup, kD}, torch::kHalf);
  c.key_zero = torch::empty_like(c.key_scale);
  kvb::kernels::quantize_cols(k.narrow(2, 0, nq).contiguous(), bits, kGroup, c.key_codes,
                              c.key_scale, c.key_zero);
  c.key_residual = k.narrow(2, nq, ctx - nq).clone();
  c.value_codes = torch::empty({1, kHkv, nqv, kD * bits / 8}, torch::kUInt8);
  c.value_scale = torch::empty({1, kHkv, nqv, kD / kGroup}, torch::kHalf);
  c.value_zero = torch::empty_like(c.value_scale);
  kvb::kernels::quantize_rows(v.narrow(2, 0, nqv).contiguous(), bits, kGroup, c.value_codes,
                              c.value_scale, c.value_zero);
  c.value_residual = v.narrow(2, nqv, ctx - nqv).clone();
  return c;
}

KiviCache clone_cache(const KiviCache& c) {
  KiviCache o = c;
  for (torch::Tensor* t : {&o.key_codes, &o.key_scale, &o.key_zero, &o.key_residual, &o.value_codes,
                           &o.value_scale, &o.value_zero, &o.value_residual})
    *t = t->clone();
  return o;
}

// The most recent shape's fixture (one at a time: 30 fp32 layers at 32K are 1.5 GB). Both bit
// widths are built for every shape; a shape's bits only pick which one a benchmark reads.
const Fixture& fixture(const KernelShape& shape) {
  static std::unique_ptr<Fixture> f;
  if (f && f->shape.name(false) == shape.name(false)) return *f;
  f.reset();
  auto nf = std::make_unique<Fixture>();
  const int64_t ctx = shape.context, kHkv = shape.kv_heads, kHq = shape.heads, kD = shape.head_dim;
  nf->shape = shape;
  nf->ctx = ctx;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(ctx));
  torch::Tensor k = torch::randn({1, kHkv, ctx, kD}, gen),
                v = torch::randn({1, kHkv, ctx, kD}, gen);
  nf->q = torch::randn({1, kHq, 1, kD}, gen);
  for (int b = 0; b < 2; ++b) {
    const KiviCache first = make_kivi(b == 0 ? 2 : 4, ctx, k, v);
    for (int64_t l = 0; l < layers_for(shape); ++l)
      nf->kivi[b].push_back(l == 0 ? first : clone_cache(first));
  }
  for (int64_t l = 0; l < layers_for(shape); ++l) {
    nf->k32.push_back(k.clone());
    nf->v32.push_back(v.clone());
  }
  f = std::move(nf);
  return *f;
}

double scale_of(const torch::Tensor& q) { return 1.0 / std::sqrt(static_cast<double>(q.size(3))); }

// q [1, H_q, 1, D] over k, v [1, H_kv, S, D] as Model::attention does for the past slots.
torch::Tensor dense_attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  const int64_t kHkv = k.size(1), kHq = q.size(1), kD = q.size(3);
  torch::Tensor qg = (q * scale_of(q)).view({1, kHkv, kHq / kHkv, kD});
  torch::Tensor p = torch::softmax(torch::matmul(qg, k.transpose(-1, -2)), -1, torch::kFloat32);
  return torch::matmul(p, v);
}

// KIVI's dense view (methods/quant/kivi.cpp dense_f32): fresh fp32 K and V, dequantized.
torch::Tensor dequant_attend(const torch::Tensor& q, const KiviCache& c, int64_t ctx) {
  const int64_t kHkv = c.key_scale.defined() ? c.key_scale.size(1) : c.key_residual.size(1);
  const int64_t kD = q.size(3);
  const int64_t nq = c.key_codes.size(2), nqv = c.value_codes.size(2);
  torch::Tensor k = torch::empty({1, kHkv, ctx, kD}), v = torch::empty({1, kHkv, ctx, kD});
  if (nq > 0)
    kvb::kernels::dequantize_cols(c.key_codes, c.key_scale, c.key_zero, c.bits, c.group,
                                  k.narrow(2, 0, nq));
  if (ctx > nq) k.narrow(2, nq, ctx - nq).copy_(c.key_residual);
  if (nqv > 0)
    kvb::kernels::dequantize_rows(c.value_codes, c.value_scale, c.value_zero, c.bits, c.value_group,
                                  v.narrow(2, 0, nqv));
  v.narrow(2, nqv, ctx - nqv).copy_(c.value_residual);
  return dense_attend(q, k, v);
}

using Bandwidth = kvb::bench::MemBandwidth;

constexpr double kBandwidthBytes = Bandwidth::kBytes;

// Seconds per call of fn(layer), averaged over one pass over the fixture's layers.
template <typename Fn>
double pass_seconds(int64_t layers, Fn&& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t l = 0; l < layers; ++l) fn(l);
  return seconds_since(t0) / static_cast<double>(layers);
}

void BM_KiviAttnFused(benchmark::State& state, KernelShape shape) {
  c10::InferenceMode guard;
  set_threads();
  const int bits = shape.bits;
  const int64_t ctx = shape.context;
  const Fixture& f = fixture(shape);
  const int64_t kLayers = static_cast<int64_t>(f.k32.size());
  const double kScale = scale_of(f.q);
  const std::vector<KiviCache>& layers = f.kivi[bits == 2 ? 0 : 1];
  auto fused = [&](int64_t l) {
    auto r = kvb::kernels::kivi_decode_attention(f.q, layers[static_cast<size_t>(l)], kScale);
    benchmark::DoNotOptimize(r.out.data_ptr<float>());
  };
  auto dequant = [&](int64_t l) {
    torch::Tensor o = dequant_attend(f.q, layers[static_cast<size_t>(l)], ctx);
    benchmark::DoNotOptimize(o.data_ptr<float>());
  };
  auto fp32 = [&](int64_t l) {
    torch::Tensor o =
        dense_attend(f.q, f.k32[static_cast<size_t>(l)], f.v32[static_cast<size_t>(l)]);
    benchmark::DoNotOptimize(o.data_ptr<float>());
  };
  Bandwidth& bw = Bandwidth::get();
  pass_seconds(kLayers, fused);  // warm-up: first touch, thread pool
  pass_seconds(kLayers, dequant);
  int64_t it = 0;
  for (auto _ : state) fused(it++ % kLayers);

  std::vector<double> tf, td, t32, tr, tc;
  for (int r = 0; r < kRounds; ++r) {
    tf.push_back(pass_seconds(kLayers, fused));
    td.push_back(pass_seconds(kLayers, dequant));
    t32.push_back(pass_seconds(kLayers, fp32));
    tr.push_back(bw.read_seconds());
    tc.push_back(bw.copy_seconds());
  }
  const double bytes = static_cast<double>(kvb::kernels::kivi_cache_bytes(layers.front()));
  const double mf = median(tf), md = median(td), m32 = median(t32);
  const double gbs = bytes / mf * 1e-9;
  const double read_gbs = kBandwidthBytes / median(tr) * 1e-9;
  const double copy_gbs = kBandwidthBytes / median(tc) * 1e-9;
  state.counters["packed_MB"] = bytes * 1e-6;
  state.counters["GB/s"] = gbs;
  state.counters["read_GB/s"] = read_gbs;
  state.counters["copy_GB/s"] = copy_gbs;
  state.counters["bw_read"] = gbs / read_gbs;
  state.counters["bw_copy"] = gbs / copy_gbs;
  state.counters["roofline_read"] = gbs / read_gbs;  // = bw_read, the column import-bench fills
  state.counters["bytes_moved"] = bytes;
  state.counters["us_fused"] = mf * 1e6;
  state.counters["us_dequant"] = md * 1e6;
  state.counters["us_fp32"] = m32 * 1e6;
  state.counters["x_vs_dequant"] = md / mf;
  state.counters["x_vs_fp32"] = m32 / mf;
  state.counters["spread"] =
      (*std::max_element(tf.begin(), tf.end()) - *std::min_element(tf.begin(), tf.end())) / mf;
  state.counters["omp_threads"] = at::get_num_threads();
}

// The two baselines alone (Google Benchmark's own timing, layers cycled).
void BM_KiviAttnDequant(benchmark::State& state, KernelShape shape) {
  c10::InferenceMode guard;
  set_threads();
  const int bits = shape.bits;
  const int64_t ctx = shape.context;
  const Fixture& f = fixture(shape);
  const int64_t kLayers = static_cast<int64_t>(f.k32.size());
  const std::vector<KiviCache>& layers = f.kivi[bits == 2 ? 0 : 1];
  int64_t it = 0;
  for (auto _ : state) {
    torch::Tensor o = dequant_attend(f.q, layers[static_cast<size_t>(it++ % kLayers)], ctx);
    benchmark::DoNotOptimize(o.data_ptr<float>());
  }
  state.counters["packed_GB/s"] =
      benchmark::Counter(static_cast<double>(kvb::kernels::kivi_cache_bytes(layers.front())) * 1e-9,
                         benchmark::Counter::kIsIterationInvariantRate);
}

void BM_AttnFp32(benchmark::State& state, KernelShape shape) {
  c10::InferenceMode guard;
  set_threads();
  const int64_t ctx = shape.context;
  const Fixture& f = fixture(shape);
  const int64_t kLayers = static_cast<int64_t>(f.k32.size());
  int64_t it = 0;
  for (auto _ : state) {
    const size_t l = static_cast<size_t>(it++ % kLayers);
    torch::Tensor o = dense_attend(f.q, f.k32[l], f.v32[l]);
    benchmark::DoNotOptimize(o.data_ptr<float>());
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(2 * shape.kv_heads * ctx * shape.head_dim * 4) * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

// The bandwidth references alone: a 256 MiB fp32 read (sum) and copy (bytes copied per second).
void BM_MemBandwidth(benchmark::State& state) {
  c10::InferenceMode guard;
  set_threads();
  Bandwidth& bw = Bandwidth::get();
  std::vector<double> tr, tc;
  for (auto _ : state) {
    tr.push_back(bw.read_seconds());
    tc.push_back(bw.copy_seconds());
  }
  state.counters["read_GB/s"] = kBandwidthBytes / median(tr) * 1e-9;
  state.counters["copy_GB/s"] = kBandwidthBytes / median(tc) * 1e-9;
  state.counters["omp_threads"] = at::get_num_threads();
}

BENCHMARK(BM_MemBandwidth)->Unit(benchmark::kMillisecond)->Iterations(9);

// Per shape (bench_main.cpp: --kvb_shapes or the default grid), in the order given: the fused
// kernel and the dequantize-then-attend baseline at the shape's bits, and full-cache fp32
// attention once per (heads, KV heads, head dim, context).
void register_shapes(const std::vector<KernelShape>& shapes) {
  std::vector<std::string> fp32_done;
  for (const KernelShape& s : shapes) {
    if (s.head_dim % kGroup != 0) continue;  // whole value groups of 32 channels
    benchmark::RegisterBenchmark(("BM_KiviAttnFused/" + s.name()).c_str(), BM_KiviAttnFused, s)
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("BM_KiviAttnDequant/" + s.name()).c_str(), BM_KiviAttnDequant,
                                 s)
        ->Unit(benchmark::kMicrosecond);
    const std::string plain = s.name(false);
    if (std::find(fp32_done.begin(), fp32_done.end(), plain) != fp32_done.end()) continue;
    fp32_done.push_back(plain);
    benchmark::RegisterBenchmark(("BM_AttnFp32/" + plain).c_str(), BM_AttnFp32, s)
        ->Unit(benchmark::kMicrosecond);
  }
}
const bool registered = kvb::bench::add_shape_registrar(&register_shapes);

}  // namespace
