// What the benchmark files share: wall-clock seconds, medians, and the memory-bandwidth
// references every roofline fraction divides by (measured in the same process, on the threads
// the benchmarks themselves run on).
#pragma once

#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "kernels/cpu/gemv.h"
#include "kernels/cpu/read_probe.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <thread>
#include <functional>
#include <string>
#include <vector>

namespace kvb::bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The median (the mean of the two middle values for an even count); 0 for none.
inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Sets libtorch's intra-op threads to KVB_BENCH_THREADS, or to every hardware thread when it is
// unset (libtorch 1.13 may start with 1 on machines whose cores it cannot identify); returns
// the count.
inline int use_bench_threads() {
  const char* t = std::getenv("KVB_BENCH_THREADS");
  const int n = t ? std::atoi(t) : static_cast<int>(std::thread::hardware_concurrency());
  if (n > 0) at::set_num_threads(n);
  return at::get_num_threads();
}

// A 256 MiB fp32 buffer (far past any last-level cache) read and copied, on libtorch's intra-op
// threads. read_seconds() reads kBytes, the faster of kernels/cpu/read_probe.h (eight AVX2
// accumulators, chunks over the threads) and kernels/cpu/gemv.h over it (torch's sum() read
// slower than the decode step's gemv did);
// copy_seconds() reads and writes kBytes each (torch copy_).
class MemBandwidth {
 public:
  static constexpr int64_t kFloats = int64_t{64} << 20;
  static constexpr double kBytes = static_cast<double>(kFloats) * 4;

  static MemBandwidth& get() {
    static MemBandwidth b;
    return b;
  }
  // The faster of two reads of the whole buffer: the probe's sum, and the decode step's gemv
  // over it as a [N, 512] matrix (its access pattern ran faster than the probe's on this VM;
  // taking the faster keeps every roofline fraction conservative).
  double read_seconds() {
    auto t0 = Clock::now();
    benchmark::DoNotOptimize(kvb::kernels::read_probe_sum(src_));
    const double probe = seconds_since(t0);
    t0 = Clock::now();
    benchmark::DoNotOptimize(kvb::kernels::gemv(rows_, x_).data_ptr<float>());
    return std::min(probe, seconds_since(t0));
  }
  double copy_seconds() {
    const auto t0 = Clock::now();
    dst_.copy_(src_);
    benchmark::DoNotOptimize(dst_.data_ptr<float>());
    return seconds_since(t0);
  }
  // GB/s read: kBytes over the median of `rounds` reads.
  double read_gbs(int rounds = 9) {
    std::vector<double> t;
    for (int i = 0; i < rounds; ++i) t.push_back(read_seconds());
    return kBytes / median(t) * 1e-9;
  }

 private:
  MemBandwidth()
      : src_(torch::rand({kFloats})), dst_(torch::empty({kFloats})),
        rows_(src_.view({kFloats / 512, 512})), x_(torch::rand({512})) {
    dst_.copy_(src_);  // first touch of both buffers
  }
  torch::Tensor src_, dst_, rows_, x_;
};

// An attention shape the kernel benchmarks are registered for at run time (kvbench_bench
// --kvb_shapes=FILE, as `kvbench bench-kernels --suite` writes it; bench_main.cpp's default grid
// without one): query heads, KV heads, head dim, context (cached tokens) and code bits.
struct KernelShape {
  int64_t heads = 9, kv_heads = 3, head_dim = 64, context = 1024;
  int bits = 2;
  // "hq:9/hkv:3/d:64/ctx:1024/bits:2" (bits left out with_bits false): the benchmark name's
  // tail, which `kvbench import-bench` files as the timing's shape.
  std::string name(bool with_bits = true) const {
    std::string s = "hq:" + std::to_string(heads) + "/hkv:" + std::to_string(kv_heads) +
                    "/d:" + std::to_string(head_dim) + "/ctx:" + std::to_string(context);
    if (with_bits) s += "/bits:" + std::to_string(bits);
    return s;
  }
};

// A benchmark file's registrar: called once by main with the run's shapes, it registers its
// benchmarks for them (benchmark::RegisterBenchmark). Files add theirs from a static
// initializer: `const bool registered = kvb::bench::add_shape_registrar(&register_shapes);`.
using ShapeRegistrar = void (*)(const std::vector<KernelShape>&);
inline std::vector<ShapeRegistrar>& shape_registrars() {
  static std::vector<ShapeRegistrar> r;
  return r;
}
inline bool add_shape_registrar(ShapeRegistrar f) {
  shape_registrars().push_back(f);
  return true;
}

}  // namespace kvb::bench
