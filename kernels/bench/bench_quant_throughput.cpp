// Quantize and dequantize throughput of every storage method (issue 22), in GB/s of fp32 input,
// next to the machine's memory bandwidth measured in the same process.
//
//   KVB_BENCH_THREADS=1 build/kvbench_bench --benchmark_filter='Quant(Bandwidth|Throughput|Kernel)'
//
// Shape: one SmolLM2-135M layer (H_kv = 3, D = 64, 9 query heads), a block of N = 4096 tokens,
// batch 1, random normal K and V (fixed seed). Each method spec (kSpecs) gets two benchmarks:
//   BM_QuantThroughput/Quantize/<name>    a fresh one-layer state (make_method(spec)->make_state)
//                                         takes one KVAppend of K and V [1, 3, 4096, 64] fp32:
//                                         the store's own append, with whatever it does on a
//                                         first chunk (fp8's amax scales, qserve's lambda,
//                                         rotatekv's channel order, kvquant(calib=prompt)'s
//                                         k-means, buffer growth). Making and destroying the
//                                         state are not timed.
//   BM_QuantThroughput/Dequantize/<name>  view(0) of a state filled with that block: K and V
//                                         materialised as fp32 [1, 3, 4096, 64] (`full`'s view
//                                         is a narrow() of its buffers, no copy: its figure is
//                                         the cost of the call alone).
//   BM_QuantThroughput/CopyRef            a copy_ of the same K and V into preallocated tensors:
//                                         the floor for moving these bytes at this (cache-
//                                         resident: 6 MiB in, 6 MiB out, 32 MiB L3) size.
// zipcache and mikv choose their hi/lo tokens from the attention of the appended chunk's own
// queries (KVAppend::q, methods/quant/mixed_store.h: probe_attention, a [9 x 4096 x 4096]
// softmax here), not from observe() (a storage stage never gets it): their plain variants feed
// random q [1, 9, 4096, 64], so the figure is the method as it runs alone; the `/store` variants
// leave q undefined (every score 0, the same class counts, an arbitrary choice) and time only
// the mixed-precision store.
// BM_QuantKernel/{quantize,dequantize}_{rows,cols}/<bits> time kernels::quantize_* /
// dequantize_* on the same K and V into preallocated outputs (rows: group 64 = int's default at
// D = 64; cols: group 32, KIVI's keys), BM_QuantKernel/fp8_{encode,decode}_scaled the fp8 pair
// (E4M3, one scale per tensor): the gap to a method's figure is its harness (allocations,
// conversions, copies, first-chunk calibration).
// BM_QuantBandwidth measures the bandwidth again at its place in the run (drift check).
//
// Counters (every time is the median of the iterations, each timed alone):
//   in_GB/s   2 * N * H_kv * D * 4 bytes (the fp32 K and V block) / median time
//   frac_bw   in_GB/s / bw_GB/s
//   bw_GB/s   memory bandwidth, measured once per process before the first benchmark of this
//             file: a torch copy_ of a 256 MiB fp32 buffer into another (both touched before
//             timing), counting bytes read + bytes written (2 x 256 MiB: STREAM's convention,
//             write-allocate reads not counted), median of 9 copies, on the benchmarks' threads
//   copy_GB/s the same copies counted as bench_quant_kernels' BM_CopyFp32 counts its out_GB/s:
//             the bytes of one side (= bw_GB/s / 2) (BM_QuantBandwidth only)
//   read_GB/s read-only bandwidth: sum() of the 256 MiB buffer, median of 9 (BM_QuantBandwidth)
//   ms        median time of one iteration
//   faults    minor page faults per iteration (untimed state setup included): ~0 means the
//             figure is the work, not the kernel zeroing fresh pages
// Allocator: before its first benchmark this file sets glibc's M_MMAP_THRESHOLD to 32 MiB and
// M_TRIM_THRESHOLD to 1 GiB (mallopt), so that freed multi-MiB tensors stay in the heap. With
// glibc's defaults whether a view()'s 3 MiB outputs come back as fresh, faulting pages depends on
// what was freed before (the same Dequantize measured 0.2 ms in one run and 2.8 ms in another);
// a long kvbench run's heap is in the kept state after its first steps. Benchmarks of other files
// that run after these in the same process inherit the setting.
//   avx2      1 when the quantizers take their AVX2 code (BM_QuantBandwidth; kernels/cpu/
//             quant_kernels.h: set_quant_simd), 0 on the SSE2 baseline
// KVB_BENCH_QUANT_BASELINE=1 runs the quantizers' SSE2 baseline on an AVX2 machine.
// KVB_BENCH_THREADS=n sets libtorch's intra-op threads (default: libtorch's, the core count),
// KVB_BENCH_ITERS=n the iterations per benchmark (default 15; kvquant and the probe-attention
// variants, a second or more each, 3), after 3 untimed warm-up runs (1 for those).
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>
#include <malloc.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cpu/fp8_codec.h"
#include "kernels/cpu/quant_kernels.h"
#include "methods/registry.h"

namespace {

constexpr int64_t kHkv = 3, kHq = 9, kN = 4096, kD = 64;
constexpr double kInBytes = 2.0 * kN * kHkv * kD * 4;  // fp32 K and V
constexpr int64_t kBwFloats = int64_t{64} << 20;       // 256 MiB of fp32

struct Variant {
  const char* name;
  const char* spec;
  bool feed_q;        // KVAppend::q (zipcache and mikv score tokens with it)
  bool slow = false;  // a second or more per append: 3 iterations, 1 warm-up
};
const std::vector<Variant> kSpecs = {
    {"full", "full", false},
    {"int8", "int(bits=8)", false},
    {"int4", "int(bits=4)", false},
    {"int2", "int(bits=2)", false},
    {"kivi4", "kivi(bits=4)", false},
    {"kivi2", "kivi(bits=2)", false},
    {"fp8_e4m3", "fp8(format=e4m3)", false},
    {"qserve4", "qserve(bits=4)", false},
    {"rotatekv4", "rotatekv(bits=4)", false},
    {"rotatekv2", "rotatekv(bits=2)", false},
    {"kvquant4", "kvquant(bits=4,calib=prompt)", false, true},
    {"kvquant2", "kvquant(bits=2,calib=prompt)", false, true},
    {"gear4", "gear(bits=4)", false},
    {"zipcache4_2", "zipcache(hi=4,lo=2)", true, true},
    {"zipcache4_2/store", "zipcache(hi=4,lo=2)", false},
    {"mikv8_2", "mikv(hi=8,lo=2,budget=1024)", true, true},
    {"mikv8_2/store", "mikv(hi=8,lo=2,budget=1024)", false},
};

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Threads, and an allocator that keeps what is freed (see the top of the file). Once per
// process, before the first benchmark of this file.
void set_up() {
  static const bool done = [] {
    if (const char* t = std::getenv("KVB_BENCH_THREADS")) at::set_num_threads(std::atoi(t));
    if (const char* b = std::getenv("KVB_BENCH_QUANT_BASELINE"); b && std::atoi(b) != 0)
      kvb::kernels::set_quant_simd(kvb::kernels::QuantSimd::kBaseline);
#if defined(M_TRIM_THRESHOLD) && defined(M_MMAP_THRESHOLD)
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
    return true;
  }();
  (void)done;
}

int64_t minor_faults() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_minflt;
}

// Untimed runs before the timed ones: first-use tables, the heap grown to the working set.
constexpr int kWarmups = 3;
int warmups(const Variant& v) { return v.slow ? 1 : kWarmups; }

int64_t iters(int64_t fallback) {
  const char* it = std::getenv("KVB_BENCH_ITERS");
  return it ? std::max(1, std::atoi(it)) : fallback;
}

struct Bandwidth {
  double rw = 0;    // GB/s, bytes read + written by a large copy
  double read = 0;  // GB/s, bytes read by a large sum
};

Bandwidth measure_bandwidth() {
  c10::InferenceMode guard;
  torch::Tensor src = torch::ones({kBwFloats}), dst = torch::zeros({kBwFloats});
  dst.copy_(src);  // touch both
  std::vector<double> copy_s, sum_s;
  for (int r = 0; r < 9; ++r) {
    auto t0 = Clock::now();
    dst.copy_(src);
    benchmark::DoNotOptimize(dst.data_ptr<float>());
    copy_s.push_back(seconds_since(t0));
    t0 = Clock::now();
    float s = src.sum().item<float>();
    benchmark::DoNotOptimize(s);
    sum_s.push_back(seconds_since(t0));
  }
  const double bytes = static_cast<double>(kBwFloats) * 4;
  return {2 * bytes / median(copy_s) * 1e-9, bytes / median(sum_s) * 1e-9};
}

// Measured once, before the first benchmark of this file runs.
const Bandwidth& bandwidth() {
  set_up();
  static const Bandwidth bw = measure_bandwidth();
  return bw;
}

// faults0: minor_faults() before the timed loop.
void report(benchmark::State& state, const std::vector<double>& times, int64_t faults0) {
  state.counters["faults"] =
      static_cast<double>(minor_faults() - faults0) / static_cast<double>(times.size());
  const double t = median(times);
  const Bandwidth& bw = bandwidth();
  state.counters["in_GB/s"] = kInBytes / t * 1e-9;
  state.counters["frac_bw"] = kInBytes / t * 1e-9 / bw.rw;
  state.counters["bw_GB/s"] = bw.rw;
  state.counters["ms"] = t * 1e3;
}

// The same random block for every benchmark.
struct Block {
  torch::Tensor k, v, q, pos;  // [1, H_kv, N, D] x2, [1, H_q, N, D], [N]
};
const Block& block() {
  static const Block b = [] {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(22);
    Block x;
    x.k = torch::randn({1, kHkv, kN, kD}, gen);
    x.v = torch::randn({1, kHkv, kN, kD}, gen);
    x.q = torch::randn({1, kHq, kN, kD}, gen);
    x.pos = torch::arange(kN, torch::kLong);
    return x;
  }();
  return b;
}

kvb::KVAppend append_of(const Block& b, bool feed_q) {
  kvb::KVAppend a;
  a.k = b.k;
  a.k_pre_rope = b.k;  // pre-RoPE stores (kvquant, rotatekv) read this one instead
  a.v = b.v;
  a.pos = b.pos;
  if (feed_q) a.q = b.q;
  return a;
}

kvb::ModelShape layer_shape() {
  kvb::ModelShape s;
  s.n_layers = 1;
  s.n_head_q = kHq;
  s.n_head_kv = kHkv;
  s.head_dim = kD;
  s.max_position = 8192;
  return s;
}

void BM_QuantBandwidth(benchmark::State& state) {
  set_up();
  const Bandwidth first = bandwidth();
  Bandwidth now;
  for (auto _ : state) now = measure_bandwidth();
  state.counters["bw_GB/s"] = now.rw;
  state.counters["copy_GB/s"] = now.rw / 2;
  state.counters["read_GB/s"] = now.read;
  state.counters["bw_GB/s_first"] = first.rw;
  state.counters["avx2"] = kvb::kernels::quant_simd_uses_avx2() ? 1 : 0;
}

void BM_Quantize(benchmark::State& state, const Variant& var) {
  set_up();
  bandwidth();
  c10::InferenceMode guard;
  auto method = kvb::make_method(var.spec);
  const kvb::KVAppend a = append_of(block(), var.feed_q);
  for (int w = 0; w < warmups(var); ++w) method->make_state(layer_shape())->append(0, a);
  std::vector<double> times;
  const int64_t faults0 = minor_faults();
  for (auto _ : state) {
    auto st = method->make_state(layer_shape());
    const auto t0 = Clock::now();
    st->append(0, a);
    const double t = seconds_since(t0);
    state.SetIterationTime(t);
    times.push_back(t);
  }
  report(state, times, faults0);
  state.SetLabel(method->spec());
}

void BM_Dequantize(benchmark::State& state, const Variant& var) {
  set_up();
  bandwidth();
  c10::InferenceMode guard;
  auto method = kvb::make_method(var.spec);
  auto st = method->make_state(layer_shape());
  st->append(0, append_of(block(), var.feed_q));
  for (int w = 0; w < warmups(var); ++w) kvb::KVView warm = st->view(0);
  std::vector<double> times;
  const int64_t faults0 = minor_faults();
  for (auto _ : state) {
    const auto t0 = Clock::now();
    kvb::KVView v = st->view(0);
    benchmark::DoNotOptimize(v.k.data_ptr());
    benchmark::DoNotOptimize(v.v.data_ptr());
    const double t = seconds_since(t0);
    state.SetIterationTime(t);
    times.push_back(t);
  }
  report(state, times, faults0);
  state.SetLabel(method->spec());
}

// Kernel-level pair on the same K and V: codes and scales preallocated, nothing else.
struct Coded {
  torch::Tensor codes[2], scale[2], zero[2];
};

Coded coded_buffers(int bits, int64_t group, bool cols) {
  Coded c;
  for (int s = 0; s < 2; ++s) {
    c.codes[s] = torch::empty({1, kHkv, kN, kD * bits / 8}, torch::kUInt8);
    const std::vector<int64_t> meta = cols ? std::vector<int64_t>{1, kHkv, kN / group, kD}
                                           : std::vector<int64_t>{1, kHkv, kN, kD / group};
    c.scale[s] = torch::empty(meta, torch::kHalf);
    c.zero[s] = torch::empty(meta, torch::kHalf);
  }
  return c;
}

void BM_QuantKernel(benchmark::State& state, bool quantize, bool cols) {
  set_up();
  bandwidth();
  c10::InferenceMode guard;
  const int bits = static_cast<int>(state.range(0));
  const int64_t group = cols ? 32 : kD;
  const Block& b = block();
  const torch::Tensor x[2] = {b.k, b.v};
  Coded c = coded_buffers(bits, group, cols);
  torch::Tensor out[2] = {torch::empty_like(b.k), torch::empty_like(b.v)};
  auto q = cols ? kvb::kernels::quantize_cols : kvb::kernels::quantize_rows;
  auto dq = cols ? kvb::kernels::dequantize_cols : kvb::kernels::dequantize_rows;
  for (int s = 0; s < 2; ++s) q(x[s], bits, group, c.codes[s], c.scale[s], c.zero[s]);
  for (int w = 0; w < kWarmups; ++w)
    for (int s = 0; s < 2; ++s) dq(c.codes[s], c.scale[s], c.zero[s], bits, group, out[s]);
  std::vector<double> times;
  const int64_t faults0 = minor_faults();
  for (auto _ : state) {
    const auto t0 = Clock::now();
    for (int s = 0; s < 2; ++s) {
      if (quantize)
        q(x[s], bits, group, c.codes[s], c.scale[s], c.zero[s]);
      else
        dq(c.codes[s], c.scale[s], c.zero[s], bits, group, out[s]);
    }
    benchmark::ClobberMemory();
    const double t = seconds_since(t0);
    state.SetIterationTime(t);
    times.push_back(t);
  }
  report(state, times, faults0);
}

// The fp8 pair on the same K and V: kernels::fp8_encode_scaled / fp8_decode_scaled (E4M3, one
// scale per tensor, amax / 200 as fp8's keys) into preallocated outputs.
void BM_QuantKernelFp8(benchmark::State& state, bool encode) {
  set_up();
  bandwidth();
  c10::InferenceMode guard;
  const Block& b = block();
  const torch::Tensor x[2] = {b.k, b.v};
  torch::Tensor codes[2], scale[2], out[2];
  for (int s = 0; s < 2; ++s) {
    codes[s] = torch::empty_like(x[s], torch::kUInt8);
    scale[s] = (x[s].abs().amax() / 200).view({1, 1}).contiguous();
    out[s] = torch::empty_like(x[s]);
  }
  const auto f = kvb::kernels::Fp8Format::kE4M3;
  for (int w = 0; w < kWarmups; ++w)
    for (int s = 0; s < 2; ++s) {
      kvb::kernels::fp8_encode_scaled(x[s], scale[s], f, codes[s]);
      kvb::kernels::fp8_decode_scaled(codes[s], scale[s], f, out[s]);
    }
  std::vector<double> times;
  const int64_t faults0 = minor_faults();
  for (auto _ : state) {
    const auto t0 = Clock::now();
    for (int s = 0; s < 2; ++s) {
      if (encode)
        kvb::kernels::fp8_encode_scaled(x[s], scale[s], f, codes[s]);
      else
        kvb::kernels::fp8_decode_scaled(codes[s], scale[s], f, out[s]);
    }
    benchmark::ClobberMemory();
    const double t = seconds_since(t0);
    state.SetIterationTime(t);
    times.push_back(t);
  }
  report(state, times, faults0);
}

// A copy of the same K and V block (the bytes a dequantize writes), cache-resident as the
// methods' working sets are: the harness floor at this shape.
void BM_QuantCopyRef(benchmark::State& state) {
  set_up();
  bandwidth();
  c10::InferenceMode guard;
  const Block& b = block();
  torch::Tensor out[2] = {torch::empty_like(b.k), torch::empty_like(b.v)};
  out[0].copy_(b.k);
  out[1].copy_(b.v);
  std::vector<double> times;
  const int64_t faults0 = minor_faults();
  for (auto _ : state) {
    const auto t0 = Clock::now();
    out[0].copy_(b.k);
    out[1].copy_(b.v);
    benchmark::ClobberMemory();
    const double t = seconds_since(t0);
    state.SetIterationTime(t);
    times.push_back(t);
  }
  report(state, times, faults0);
}

const bool kRegistered = [] {
  const int64_t n = iters(15);
  benchmark::RegisterBenchmark("BM_QuantBandwidth", BM_QuantBandwidth)
      ->Unit(benchmark::kMillisecond)
      ->Iterations(1);
  benchmark::RegisterBenchmark("BM_QuantThroughput/CopyRef", BM_QuantCopyRef)
      ->Unit(benchmark::kMillisecond)
      ->UseManualTime()
      ->Iterations(n);
  for (const Variant& v : kSpecs) {
    const int64_t m = v.slow ? std::min<int64_t>(n, 3) : n;
    for (const bool quantize : {true, false}) {
      const std::string name =
          std::string("BM_QuantThroughput/") + (quantize ? "Quantize/" : "Dequantize/") + v.name;
      auto fn = quantize ? BM_Quantize : BM_Dequantize;
      benchmark::RegisterBenchmark(name.c_str(), [fn, &v](benchmark::State& s) { fn(s, v); })
          ->Unit(benchmark::kMillisecond)
          ->UseManualTime()
          ->Iterations(m);
    }
  }
  for (const bool cols : {false, true}) {
    for (const bool quantize : {true, false}) {
      const std::string name = std::string("BM_QuantKernel/") +
                               (quantize ? "quantize_" : "dequantize_") + (cols ? "cols" : "rows");
      auto* b = benchmark::RegisterBenchmark(name.c_str(), [quantize, cols](benchmark::State& s) {
        BM_QuantKernel(s, quantize, cols);
      });
      if (!cols) b->Arg(8);
      b->Arg(4)->Arg(2)->Unit(benchmark::kMillisecond)->UseManualTime()->Iterations(n);
    }
  }
  for (const bool encode : {true, false})
    benchmark::RegisterBenchmark(
        encode ? "BM_QuantKernel/fp8_encode_scaled/e4m3" : "BM_QuantKernel/fp8_decode_scaled/e4m3",
        [encode](benchmark::State& s) { BM_QuantKernelFp8(s, encode); })
        ->Unit(benchmark::kMillisecond)
        ->UseManualTime()
        ->Iterations(n);
  return true;
}();

}  // namespace
