// GPU kernel benchmarks on raw device pointers, reported as a fraction of the device's own
// device-to-device copy bandwidth measured in the same run. Registered only when the build has
// CUDA kernels and a GPU is present.
#include <benchmark/benchmark.h>

#ifdef KVB_HAVE_CUDA_KERNELS
#include <cstdint>
#include <vector>

#include "kernels/cuda/dequant.h"

namespace {

void BM_CudaDequantRows(benchmark::State& state) {
  using namespace kvb::cuda;
  if (device_count() == 0) {
    state.SkipWithError("no CUDA device");
    return;
  }
  const int bits = static_cast<int>(state.range(0));
  const int64_t rows = 32 * 8 * 4096, d = 128, group = 32;  // 32 layers x 8 KV heads x 4K tokens
  const size_t code_bytes = rows * d * bits / 8, meta = rows * (d / group) * 2, out_bytes = rows * d * 4;
  void* c = device_alloc(code_bytes);
  void* s = device_alloc(meta);
  void* z = device_alloc(meta);
  void* o = device_alloc(out_bytes);
  void* o2 = device_alloc(out_bytes);
  std::vector<uint8_t> zeros(std::max(code_bytes, meta), 0);
  copy_to_device(c, zeros.data(), code_bytes);
  copy_to_device(s, zeros.data(), meta);
  copy_to_device(z, zeros.data(), meta);
  float ms = 0;
  for (auto _ : state) {
    ms = time_dequantize_rows(static_cast<uint8_t*>(c), static_cast<uint16_t*>(s), static_cast<uint16_t*>(z), rows,
                              d, bits, group, static_cast<float*>(o), 20) / 20;
    state.SetIterationTime(ms / 1e3);
  }
  const float copy_ms = time_device_copy(o2, o, out_bytes, 20) / 20;
  const double moved = static_cast<double>(code_bytes + 2 * meta + out_bytes);
  state.counters["GB/s"] = moved / (ms / 1e3) / 1e9;
  state.counters["copy_GB/s"] = 2.0 * out_bytes / (copy_ms / 1e3) / 1e9;
  state.counters["frac_of_copy_bw"] = (moved / ms) / (2.0 * out_bytes / copy_ms);
  for (void* p : {c, s, z, o, o2}) device_free(p);
}
BENCHMARK(BM_CudaDequantRows)->Arg(2)->Arg(4)->Arg(8)->UseManualTime()->Unit(benchmark::kMicrosecond);

}  // namespace
#endif
