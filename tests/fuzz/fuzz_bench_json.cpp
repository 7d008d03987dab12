// Google Benchmark JSON for `kvbench import-bench`: the input is the file. Entry point:
// read_benchmark_json (everything import-bench checks before it opens the database), then each
// timing as it is stored (kernel_timing_json).
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "common/timing.h"
#include "results/bench_import.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvb::fuzz;
  const std::string path = scratch_path("bench.json");
  write_bytes(path, {reinterpret_cast<const char*>(data), size});
  expect_input_errors([&] {
    const kvb::BenchImport b = kvb::read_benchmark_json(path);
    (void)b.context.dump();
    for (const kvb::KernelTiming& t : b.timings) {
      // The database columns are NOT NULL REAL: a stored time must be a finite number.
      for (double ms : {t.median_ms, t.min_ms, t.max_ms})
        if (!std::isfinite(ms)) report("non-finite time accepted", t.name);
      (void)kvb::kernel_timing_json(t).dump();
    }
  });
  return 0;
}
