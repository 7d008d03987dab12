// `kvbench bench-kernels --db DB [--suite FILE] [--bench PATH]`: runs the kernel benchmarks
// (kvbench_bench, found next to kvbench unless --bench names it) for a suite's shapes and files
// every timing in DB's kernel_timings, with the run's provenance (commit, build, host, device):
//
//   {
//     "name": "kernels-nightly",   // the run's suite_name (default "kernels")
//     "filter": "KiviAttn|...",    // Google Benchmark regex (default: kDefaultKernelFilter)
//     "repetitions": 1,            // --benchmark_repetitions, 1..100
//     "min_time": 0.5,             // --benchmark_min_time in seconds, (0, 60]
//     "threads": 0,                // libtorch intra-op threads (KVB_BENCH_THREADS); 0: every
//                                  // hardware thread
//     "shapes": [                  // each entry a product of its lists
//       {"heads": 9, "kv_heads": 3, "head_dim": 64, "context": [1024, 32768], "bits": [2, 4]}
//     ]
//   }
//
// Without --suite: the default filter and kvbench_bench's default shapes. A bad suite (unknown
// field, a shape no kernel runs: head_dim not 32/64/128/256, KV heads not dividing heads, a
// context outside 1..1M tokens, bits not 2 or 4) is refused in one line naming the file, exit 2,
// before anything runs or is written. When the benchmark binary fails, nothing is written.
#pragma once

#include <string>

namespace kvb::cli {

inline constexpr const char* kDefaultKernelFilter =
    "MemBandwidth|KiviAttn|QuantAttn|AttnFp32|Cuda";

struct BenchKernelsArgs {
  std::string db, suite, bench;
};

int run_bench_kernels(const BenchKernelsArgs& a);

}  // namespace kvb::cli
