// Dequantization kernels at the decode-time shape of one SmolLM2-135M layer at 4K context
// ([1, 3, 4096, 64]), next to a plain fp32 copy of the same output (the memory-bound floor).
//
//   kvbench_bench --benchmark_filter='Dequant|CopyFp32'
#include <benchmark/benchmark.h>

#include <torch/types.h>

#include "kernels/cpu/quant_kernels.h"

namespace {

constexpr int64_t kH = 3, kN = 4096, kD = 64;

void set_bytes(benchmark::State& state) {
  state.counters["out_GB/s"] = benchmark::Counter(static_cast<double>(kH * kN * kD * 4) * 1e-9,
                                                  benchmark::Counter::kIsIterationInvariantRate);
}

void BM_CopyFp32(benchmark::State& state) {
  torch::Tensor src = torch::randn({1, kH, kN, kD}), dst = torch::empty_like(src);
  for (auto _ : state) {
    dst.copy_(src);
    benchmark::DoNotOptimize(dst.data_ptr<float>());
  }
  set_bytes(state);
}
BENCHMARK(BM_CopyFp32)->Unit(benchmark::kMicrosecond);

void BM_DequantRows(benchmark::State& state) {
  const int bits = static_cast<int>(state.range(0));
  const int64_t group = state.range(1);
  torch::Tensor x = torch::randn({1, kH, kN, kD});
  torch::Tensor codes = torch::empty({1, kH, kN, kD * bits / 8}, torch::kUInt8);
  torch::Tensor scale = torch::empty({1, kH, kN, kD / group}, torch::kHalf), zero = torch::empty_like(scale);
  kvb::kernels::quantize_rows(x, bits, group, codes, scale, zero);
  torch::Tensor out = torch::empty_like(x);
  for (auto _ : state) {
    kvb::kernels::dequantize_rows(codes, scale, zero, bits, group, out);
    benchmark::DoNotOptimize(out.data_ptr<float>());
  }
  set_bytes(state);
}
BENCHMARK(BM_DequantRows)->Args({8, 64})->Args({4, 64})->Args({2, 32})->Unit(benchmark::kMicrosecond);

void BM_DequantCols(benchmark::State& state) {
  const int bits = static_cast<int>(state.range(0));
  const int64_t group = 32;
  torch::Tensor x = torch::randn({1, kH, kN, kD});
  torch::Tensor codes = torch::empty({1, kH, kN, kD * bits / 8}, torch::kUInt8);
  torch::Tensor scale = torch::empty({1, kH, kN / group, kD}, torch::kHalf), zero = torch::empty_like(scale);
  kvb::kernels::quantize_cols(x, bits, group, codes, scale, zero);
  torch::Tensor out = torch::empty_like(x);
  for (auto _ : state) {
    kvb::kernels::dequantize_cols(codes, scale, zero, bits, group, out);
    benchmark::DoNotOptimize(out.data_ptr<float>());
  }
  set_bytes(state);
}
BENCHMARK(BM_DequantCols)->Arg(2)->Arg(4)->Unit(benchmark::kMicrosecond);

}  // namespace
