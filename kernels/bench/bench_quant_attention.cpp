// Fused decode attention over the `int` cache and KVQuant's cache (kernels/cpu/quant_attention.h)
// at SmolLM2-135M's attention shape (H_q 9, H_kv 3, D 64, one decode query), against what the
// engine does without it: dequantize the whole cache into fresh fp32 tensors as the methods'
// view() does (int: kernels::dequantize_rows; kvquant: the store's unpack / codebook lookup /
// scale / outlier scatter / sink overlay in torch ops), then matmul/softmax/matmul; and against
// fp32 attention over the same context.
//
//   OPENBLAS_NUM_THREADS=1 KVB_BENCH_THREADS=2 kvbench_bench --benchmark_filter='QuantAttn'
//
// Registered at run time over contexts {1K, 4K, 16K, 32K} (KVB_QA_CONTEXTS="1024,4096" to
// choose) x int(bits=2|4|8, group=64) and kvquant(bits=2|3|4, outliers=0.01 -> 1 per row of 64,
// sink=1). int caches hold real quantized rows (kernels::quantize_rows of Gaussian data);
// KVQuant's hold random codes, codebooks, scales and outlier channels (the kernel's time does not
// depend on the code values). Each variant cycles over 30 layers' caches built apart in memory
// (SmolLM2 has 30), so at long contexts a call reads from DRAM as a decode step does.
//
// Counters (medians over kRounds = 5 rounds; a round is one pass over the 30 layers with each
// variant in turn, then a 256 MiB fp32 read (sum) and copy, so other load hits all alike):
//   cache_MB      bytes one fused call reads (codes, scales, zeros, outliers, sinks, tables)
//   GB/s          cache bytes / fused time
//   read_GB/s     the 256 MiB read measured in the same rounds; bw_read = GB/s / read_GB/s
//   us_fused, us_dequant, us_fp32, x_vs_dequant, x_vs_fp32, spread ((max - min) / median fused)
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/cpu/quant_attention.h"
#include "kernels/cpu/quant_kernels.h"
#include "methods/quant/kvquant.h"

namespace {

using kvb::kernels::IntCache;
using kvb::kernels::KVQuantCache;

constexpr int64_t kHq = 9, kHkv = 3, kD = 64, kGroup = 64, kLayers = 30, kOutliers = 1, kSink = 1;
constexpr int kRounds = 5;
constexpr int64_t kBandwidthFloats = int64_t{64} << 20;  // 256 MiB
constexpr double kBandwidthBytes = static_cast<double>(kBandwidthFloats) * 4;
const double kScale = 1.0 / std::sqrt(static_cast<double>(kD));

void set_threads() {
  const char* t = std::getenv("KVB_BENCH_THREADS");
  at::set_num_threads(t ? std::atoi(t) : std::min(2, at::get_num_threads()));
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

template <typename Fn>
double pass_seconds(Fn&& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t l = 0; l < kLayers; ++l) fn(l);
  return seconds_since(t0) / static_cast<double>(kLayers);
}

// fp32 layers and the query of the most recent context (one context at a time).
struct Dense {
  int64_t ctx = 0;
  std::vector<torch::Tensor> k, v;  // [1, H_kv, ctx, D]
  torch::Tensor q;                  // [1, H_q, 1, D]
};

const Dense& dense(int64_t ctx) {
  static std::unique_ptr<Dense> d;
  if (d && d->ctx == ctx) return *d;
  d.reset();
  auto n = std::make_unique<Dense>();
  n->ctx = ctx;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(ctx));
  torch::Tensor k = torch::randn({1, kHkv, ctx, kD}, gen), v = torch::randn({1, kHkv, ctx, kD}, gen);
  n->q = torch::randn({1, kHq, 1, kD}, gen);
  for (int64_t l = 0; l < kLayers; ++l) {
    n->k.push_back(k.clone());
    n->v.push_back(v.clone());
  }
  d = std::move(n);
  return *d;
}

torch::Tensor dense_attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  torch::Tensor qg = (q * kScale).view({1, kHkv, kHq / kHkv, kD});
  torch::Tensor p = torch::softmax(torch::matmul(qg, k.transpose(-1, -2)), -1, torch::kFloat32);
  return torch::matmul(p, v);
}

IntCache make_int(int bits, const Dense& f) {
  const int64_t ctx = f.ctx, packed = kD * bits / 8;
  IntCache c;
  c.bits = bits;
  c.group = kGroup;
  for (auto [codes, scale, zero, x] :
       {std::tuple{&c.key_codes, &c.key_scale, &c.key_zero, &f.k[0]},
        std::tuple{&c.value_codes, &c.value_scale, &c.value_zero, &f.v[0]}}) {
    *codes = torch::empty({1, kHkv, ctx, packed}, torch::kUInt8);
    *scale = torch::empty({1, kHkv, ctx, kD / kGroup}, torch::kHalf);
    *zero = torch::empty_like(*scale);
    kvb::kernels::quantize_rows(*x, bits, kGroup, *codes, *scale, *zero);
  }
  return c;
}

IntCache clone_int(const IntCache& c) {
  IntCache o = c;
  for (torch::Tensor* t : {&o.key_codes, &o.key_scale, &o.key_zero, &o.value_codes,
                           &o.value_scale, &o.value_zero})
    *t = t->clone();
  return o;
}

// The int store's view(): fresh fp32 keys and values.
torch::Tensor int_dequant_attend(const torch::Tensor& q, const IntCache& c, int64_t ctx) {
  torch::Tensor k = torch::empty({1, kHkv, ctx, kD}), v = torch::empty({1, kHkv, ctx, kD});
  kvb::kernels::dequantize_rows(c.key_codes, c.key_scale, c.key_zero, c.bits, c.group, k);
  kvb::kernels::dequantize_rows(c.value_codes, c.value_scale, c.value_zero, c.bits, c.group, v);
  return dense_attend(q, k, v);
}

KVQuantCache make_kvquant(int bits, int64_t ctx) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(ctx * 10 + bits));
  const int64_t levels = int64_t{1} << bits, packed = kD * bits / 8;
  KVQuantCache c;
  c.bits = bits;
  c.key_codebook = std::get<0>((torch::rand({levels}, gen) * 2 - 1).sort());
  c.value_codebook = std::get<0>((torch::rand({levels}, gen) * 2 - 1).sort());
  c.key_scale = torch::rand({kHkv, kD}, gen) + 0.1;
  c.key_zero = torch::randn({kHkv, kD}, gen) * 0.3;
  c.key_codes = torch::randint(0, 256, {1, kHkv, ctx, packed}, gen).to(torch::kUInt8);
  c.value_codes = torch::randint(0, 256, {1, kHkv, ctx, packed}, gen).to(torch::kUInt8);
  c.value_scale = (torch::rand({1, kHkv, ctx, 1}, gen) + 0.2).to(torch::kHalf);
  c.value_zero = (torch::randn({1, kHkv, ctx, 1}, gen) * 0.1).to(torch::kHalf);
  c.key_outlier_index = torch::randint(0, kD, {1, kHkv, ctx, kOutliers}, gen).to(torch::kShort);
  c.value_outlier_index = torch::randint(0, kD, {1, kHkv, ctx, kOutliers}, gen).to(torch::kShort);
  c.key_outlier_value = (torch::randn({1, kHkv, ctx, kOutliers}, gen) * 4).to(torch::kHalf);
  c.value_outlier_value = (torch::randn({1, kHkv, ctx, kOutliers}, gen) * 4).to(torch::kHalf);
  c.sinks = kSink;
  c.sink_keys = torch::randn({1, kHkv, kSink, kD}, gen).to(torch::kHalf);
  c.sink_values = torch::randn({1, kHkv, kSink, kD}, gen).to(torch::kHalf);
  return c;
}

KVQuantCache clone_kvquant(const KVQuantCache& c) {
  KVQuantCache o = c;
  for (torch::Tensor* t :
       {&o.key_codes, &o.value_codes, &o.value_scale, &o.value_zero, &o.key_outlier_index,
        &o.value_outlier_index, &o.key_outlier_value, &o.value_outlier_value, &o.sink_keys,
        &o.sink_values})
    *t = t->clone();
  return o;
}

// KVQuantStore::view() (methods/quant/kvquant.cpp) as it is written: unpack, look up, scale,
// scatter the outliers, lay the sinks over, then attention.
torch::Tensor kvquant_dequant_attend(const torch::Tensor& q, const KVQuantCache& c, int64_t ctx) {
  torch::Tensor kcodes = kvb::kvquant_unpack(c.key_codes, c.bits, kD);
  torch::Tensor vcodes = kvb::kvquant_unpack(c.value_codes, c.bits, kD);
  torch::Tensor k = c.key_codebook.index({kcodes}) * c.key_scale.view({1, kHkv, 1, kD}) +
                    c.key_zero.view({1, kHkv, 1, kD});
  torch::Tensor v = c.value_codebook.index({vcodes}) * c.value_scale.to(torch::kFloat32) +
                    c.value_zero.to(torch::kFloat32);
  k.scatter_(3, c.key_outlier_index.to(torch::kLong), c.key_outlier_value.to(torch::kFloat32));
  v.scatter_(3, c.value_outlier_index.to(torch::kLong), c.value_outlier_value.to(torch::kFloat32));
  k.narrow(2, 0, kSink).copy_(c.sink_keys);
  v.narrow(2, 0, kSink).copy_(c.sink_values);
  return dense_attend(q, k, v);
}

struct Bandwidth {
  torch::Tensor src, dst;
  Bandwidth() : src(torch::rand({kBandwidthFloats})), dst(torch::empty({kBandwidthFloats})) {}
  double read_seconds() {
    const auto t0 = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(src.sum().item<float>());
    return seconds_since(t0);
  }
  double copy_seconds() {
    const auto t0 = std::chrono::steady_clock::now();
    dst.copy_(src);
    benchmark::DoNotOptimize(dst.data_ptr<float>());
    return seconds_since(t0);
  }
  static Bandwidth& get() {
    static Bandwidth b;
    return b;
  }
};

// One variant's 30 layers and its fused / dequantized calls.
template <typename Cache>
struct Variant {
  std::vector<Cache> layers;
  torch::Tensor (*dequant)(const torch::Tensor&, const Cache&, int64_t);
  kvb::kernels::AttentionPart (*fused)(const torch::Tensor&, const Cache&, double,
                                       kvb::kernels::KernelPath);
  int64_t (*bytes)(const Cache&);
};

template <typename Cache>
void measure(benchmark::State& state, const Dense& f, const Variant<Cache>& var) {
  const int64_t ctx = f.ctx;
  auto fused = [&](int64_t l) {
    kvb::kernels::AttentionPart r = var.fused(f.q, var.layers[static_cast<size_t>(l)], kScale,
                                              kvb::kernels::KernelPath::kAuto);
    benchmark::DoNotOptimize(r.out.data_ptr<float>());
  };
  auto dequant = [&](int64_t l) {
    torch::Tensor o = var.dequant(f.q, var.layers[static_cast<size_t>(l)], ctx);
    benchmark::DoNotOptimize(o.data_ptr<float>());
  };
  auto fp32 = [&](int64_t l) {
    torch::Tensor o = dense_attend(f.q, f.k[static_cast<size_t>(l)], f.v[static_cast<size_t>(l)]);
    benchmark::DoNotOptimize(o.data_ptr<float>());
  };
  Bandwidth& bw = Bandwidth::get();
  pass_seconds(fused);  // warm-up
  pass_seconds(dequant);
  int64_t it = 0;
  for (auto _ : state) fused(it++ % kLayers);
  std::vector<double> tf, td, t32, tr;
  for (int r = 0; r < kRounds; ++r) {
    tf.push_back(pass_seconds(fused));
    td.push_back(pass_seconds(dequant));
    t32.push_back(pass_seconds(fp32));
    tr.push_back(bw.read_seconds());
  }
  const double bytes = static_cast<double>(var.bytes(var.layers.front()));
  const double mf = median(tf), md = median(td), m32 = median(t32);
  const double gbs = bytes / mf * 1e-9, read_gbs = kBandwidthBytes / median(tr) * 1e-9;
  state.counters["cache_MB"] = bytes * 1e-6;
  state.counters["GB/s"] = gbs;
  state.counters["read_GB/s"] = read_gbs;
  state.counters["bw_read"] = gbs / read_gbs;
  state.counters["us_fused"] = mf * 1e6;
  state.counters["us_dequant"] = md * 1e6;
  state.counters["us_fp32"] = m32 * 1e6;
  state.counters["x_vs_dequant"] = md / mf;
  state.counters["x_vs_fp32"] = m32 / mf;
  state.counters["spread"] =
      (*std::max_element(tf.begin(), tf.end()) - *std::min_element(tf.begin(), tf.end())) / mf;
  state.counters["omp_threads"] = at::get_num_threads();
  state.counters["avx2"] = kvb::kernels::quant_attention_avx2_supports(kD, 8) ? 1 : 0;
}

void bm_int(benchmark::State& state, int bits, int64_t ctx) {
  c10::InferenceMode guard;
  set_threads();
  const Dense& f = dense(ctx);
  Variant<IntCache> var;
  const IntCache first = make_int(bits, f);
  for (int64_t l = 0; l < kLayers; ++l) var.layers.push_back(l == 0 ? first : clone_int(first));
  var.dequant = int_dequant_attend;
  var.fused = kvb::kernels::int_decode_attention;
  var.bytes = kvb::kernels::int_cache_bytes;
  measure(state, f, var);
}

void bm_kvquant(benchmark::State& state, int bits, int64_t ctx) {
  c10::InferenceMode guard;
  set_threads();
  const Dense& f = dense(ctx);
  Variant<KVQuantCache> var;
  const KVQuantCache first = make_kvquant(bits, ctx);
  for (int64_t l = 0; l < kLayers; ++l)
    var.layers.push_back(l == 0 ? first : clone_kvquant(first));
  var.dequant = kvquant_dequant_attend;
  var.fused = kvb::kernels::kvquant_decode_attention;
  var.bytes = kvb::kernels::kvquant_cache_bytes;
  measure(state, f, var);
}

void bm_bandwidth(benchmark::State& state) {
  c10::InferenceMode guard;
  set_threads();
  Bandwidth& bw = Bandwidth::get();
  std::vector<double> tr;
  for (auto _ : state) tr.push_back(bw.read_seconds());
  state.counters["read_GB/s"] = kBandwidthBytes / median(tr) * 1e-9;
}

std::vector<int64_t> contexts() {
  std::vector<int64_t> v;
  if (const char* e = std::getenv("KVB_QA_CONTEXTS")) {
    std::stringstream ss(e);
    std::string tok;
    while (std::getline(ss, tok, ','))
      if (!tok.empty()) v.push_back(std::stoll(tok));
  }
  if (v.empty()) v = {1024, 4096, 16384, 32768};
  return v;
}

// Run-time registration, contexts in increasing order (one fp32 fixture held at a time).
const bool kRegistered = [] {
  benchmark::RegisterBenchmark("BM_QuantAttnMemBandwidth", bm_bandwidth)
      ->Unit(benchmark::kMillisecond)
      ->Iterations(9);
  for (int64_t ctx : contexts()) {
    for (int bits : {2, 4, 8})
      benchmark::RegisterBenchmark(
          ("BM_QuantAttnInt/bits:" + std::to_string(bits) + "/ctx:" + std::to_string(ctx)).c_str(),
          [bits, ctx](benchmark::State& s) { bm_int(s, bits, ctx); })
          ->Unit(benchmark::kMicrosecond);
    for (int bits : {2, 3, 4})
      benchmark::RegisterBenchmark(("BM_QuantAttnKVQuant/bits:" + std::to_string(bits) +
                                    "/ctx:" + std::to_string(ctx))
                                       .c_str(),
                                   [bits, ctx](benchmark::State& s) { bm_kvquant(s, bits, ctx); })
          ->Unit(benchmark::kMicrosecond);
  }
  return true;
}();

}  // namespace
