// The FWHT, per-head top-k and Quest page-bound CPU kernels (kernels/cpu/hadamard.h, topk.h,
// quest_bounds.h), each on both paths (portable, AVX2 when the CPU has it) next to the torch
// ops they replace, registered at run time for the run's shapes (bench_util.h's registrar:
// --kvb_shapes=FILE, else bench_main.cpp's grid) plus a Llama-3-8B-like layer (32 / 8 heads,
// head dim 128) at 32K and 128K:
//   Fwht   rows = kv_heads * context rows of head_dim (a layer's keys, as RotateKV rotates them;
//          head_dim a power of 2, at most 256 MiB)
//   Topk   [1, kv_heads, context] scores, k = context / 8 (an eviction decision)
//   Quest  one decode query (heads) over context / 16 pages of kv_heads (page 16)
// Names: BM_SmallKernels/<kernel>/<path>/<shape> (path: portable, avx2, torch = the torch ops).
//
//   OPENBLAS_NUM_THREADS=1 KVB_BENCH_THREADS=2 kvbench_bench --benchmark_filter='SmallKernels'
//
// Counters (per call):
//   bytes      bytes the kernel must move at least: FWHT reads and writes its rows; top-k reads
//              the scores (the indices written are k/S of that); Quest reads every page's min
//              and max and the query
//   GB/s       bytes / wall time (the loop's own steady_clock span; the benchmark's time
//              column is wall time too)
//   bw_read    GB/s as a fraction of the fp32 read bandwidth (kvb::bench::MemBandwidth: a
//              256 MiB sum, median of 9) measured once in the same process, on the same
//              threads; BM_SmallKernels/MemBandwidth reports it alone (read_GB/s)
// KVB_BENCH_THREADS: libtorch's intra-op threads (kvb::bench::use_bench_threads()).
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include <algorithm>
#include <string>
#include <vector>

#include "kernels/bench/bench_util.h"
#include "kernels/cpu/hadamard.h"
#include "kernels/cpu/quest_bounds.h"
#include "kernels/cpu/topk.h"

namespace {

using kvb::kernels::KernelPath;

void set_threads() { kvb::bench::use_bench_threads(); }

double read_gbs() {  // measured once, the first time a benchmark of this file runs
  static const double gbs = [] {
    set_threads();
    return kvb::bench::MemBandwidth::get().read_gbs(9);
  }();
  return gbs;
}

// Wall-clock rates (the kernels run on several threads: the CPU time of the calling thread
// undercounts them), from the loop's own steady_clock span.
void counters(benchmark::State& state, double bytes, double seconds) {
  const double bw = read_gbs();
  const double gbs = bytes * static_cast<double>(state.iterations()) / seconds * 1e-9;
  state.counters["bytes"] = bytes;
  state.counters["GB/s"] = gbs;
  state.counters["bw_read"] = gbs / bw;
  state.counters["read_GB/s"] = bw;
  state.counters["omp_threads"] = at::get_num_threads();
}

torch::Tensor randn(std::vector<int64_t> shape, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return torch::randn(shape, gen);
}

void BM_MemBandwidth(benchmark::State& state) {
  c10::InferenceMode guard;
  set_threads();
  for (auto _ : state) benchmark::DoNotOptimize(read_gbs());
  state.counters["read_GB/s"] = read_gbs();
  state.counters["omp_threads"] = at::get_num_threads();
}

const char* path_name(int path) { return path == 1 ? "avx2" : path == 0 ? "portable" : "torch"; }
KernelPath kpath(int path) { return path == 1 ? KernelPath::kAvx2 : KernelPath::kPortable; }

// FWHT in place over rows x n (the transform is its own inverse: values stay bounded). The
// portable path is the scalar butterfly loop fwht_ ran before it had an AVX2 one.
void BM_Fwht(benchmark::State& state, int64_t rows, int64_t n, int path) {
  c10::InferenceMode guard;
  set_threads();
  torch::Tensor x = randn({rows, n}, 1);
  const auto t0 = kvb::bench::Clock::now();
  for (auto _ : state) {
    kvb::kernels::fwht_(x, kpath(path));
    benchmark::DoNotOptimize(x.data_ptr<float>());
  }
  counters(state, static_cast<double>(rows * n) * 4 * 2, kvb::bench::seconds_since(t0));
}

// Top-k slots of [1, H, S] scores, k = S / 8, ascending; path 2: torch::topk then sort (what
// the eviction selectors ran before).
void BM_Topk(benchmark::State& state, int64_t H, int64_t S, int path) {
  c10::InferenceMode guard;
  set_threads();
  const torch::Tensor s = randn({1, H, S}, 2);
  const int64_t k = S / 8;
  const auto t0 = kvb::bench::Clock::now();
  for (auto _ : state) {
    torch::Tensor idx =
        path == 2 ? std::get<0>(std::get<1>(s.topk(k, -1)).sort(-1))
                  : kvb::kernels::topk_indices(s, k, kvb::kernels::TopkTies::kLikeTorch, kpath(path));
    benchmark::DoNotOptimize(idx.data_ptr<int64_t>());
  }
  counters(state, static_cast<double>(H * S) * 4, kvb::bench::seconds_since(t0));
}

// Quest bounds of one decode query: H_q query heads over H_kv KV heads, D channels, ctx / 16
// pages; path 2: quest.cpp's torch expression (maximum of products, sum, max over the group).
void BM_Quest(benchmark::State& state, int64_t Hq, int64_t Hkv, int64_t D, int64_t ctx, int path) {
  c10::InferenceMode guard;
  set_threads();
  const int64_t P = (ctx + 15) / 16;
  const torch::Tensor q = randn({1, Hq, D}, 3);
  const torch::Tensor a = randn({1, Hkv, P, D}, 4), b = randn({1, Hkv, P, D}, 5);
  const torch::Tensor lo = torch::minimum(a, b), hi = torch::maximum(a, b);
  const auto t0 = kvb::bench::Clock::now();
  for (auto _ : state) {
    torch::Tensor u;
    if (path == 2) {
      torch::Tensor qg = q.reshape({1, Hkv, Hq / Hkv, 1, D});
      u = std::get<0>(torch::maximum(qg * lo.unsqueeze(2), qg * hi.unsqueeze(2)).sum(-1).max(2));
    } else {
      u = kvb::kernels::quest_page_upper_bounds(q, lo, hi, kpath(path));
    }
    benchmark::DoNotOptimize(u.data_ptr<float>());
  }
  counters(state, static_cast<double>(2 * Hkv * P * D + Hq * D) * 4, kvb::bench::seconds_since(t0));
}

void register_shapes(const std::vector<kvb::bench::KernelShape>& run_shapes) {
  using kvb::bench::KernelShape;
  benchmark::RegisterBenchmark("BM_SmallKernels/MemBandwidth", BM_MemBandwidth)
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  std::vector<KernelShape> shapes = run_shapes;
  for (const int64_t ctx : {32768, 131072}) {
    KernelShape s;
    s.heads = 32;
    s.kv_heads = 8;
    s.head_dim = 128;
    s.context = ctx;
    shapes.push_back(s);
  }
  std::vector<int> paths = {0};
  if (kvb::kernels::cpu_has_avx2_fma()) paths.push_back(1);
  std::vector<int> with_torch = paths;
  with_torch.push_back(2);
  std::vector<std::string> done;
  for (const KernelShape& s : shapes) {
    const std::string shape = s.name(false);  // no codes here: one registration per shape
    if (std::find(done.begin(), done.end(), shape) != done.end()) continue;
    done.push_back(shape);
    if (s.context < 16 || s.kv_heads < 1 || s.heads % s.kv_heads != 0) continue;
    const int64_t rows = s.kv_heads * s.context, n = s.head_dim;
    if (kvb::kernels::is_pow2(n) && rows * n * 4 <= (int64_t{256} << 20))
      for (int p : paths)
        benchmark::RegisterBenchmark(
            ("BM_SmallKernels/Fwht/" + std::string(path_name(p)) + "/" + shape).c_str(),
            [=](benchmark::State& st) { BM_Fwht(st, rows, n, p); })
            ->UseRealTime()
            ->Unit(benchmark::kMicrosecond);
    for (int p : with_torch)
      benchmark::RegisterBenchmark(
          ("BM_SmallKernels/Topk/" + std::string(path_name(p)) + "/" + shape).c_str(),
          [=](benchmark::State& st) { BM_Topk(st, s.kv_heads, s.context, p); })
          ->UseRealTime()
          ->Unit(benchmark::kMicrosecond);
    for (int p : with_torch)
      benchmark::RegisterBenchmark(
          ("BM_SmallKernels/Quest/" + std::string(path_name(p)) + "/" + shape).c_str(),
          [=](benchmark::State& st) {
            BM_Quest(st, s.heads, s.kv_heads, s.head_dim, s.context, p);
          })
          ->UseRealTime()
          ->Unit(benchmark::kMicrosecond);
  }
}

const bool kShapesRegistered = kvb::bench::add_shape_registrar(&register_shapes);

}  // namespace
