// kernels/cpu/gemv.h against a float64 matrix-vector product, over a grid of shapes that covers
// the ragged edges (K not a multiple of 8, N not a multiple of 4, N or K of 1) and the decode
// step's real ones, on every path this CPU runs; and the engine's decode taking it.
//
// Tolerance: |y - y64| <= 1e-6 * sum_k |w_nk x_k| + 1e-7 (float32 accumulation of K products:
// a few ulps of the absolute sum). Parameters are printed on failure.
#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/cpu/gemv.h"

namespace kvb {
namespace {

using kernels::KernelPath;

std::vector<KernelPath> paths() { return kernels::kernel_paths(kernels::cpu_has_avx2_fma()); }
const char* name(KernelPath p) { return kernels::kernel_path_name(p); }

TEST(Gemv, MatchesFloat64OverAGridOfShapes) {
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {1, 1}, {1, 7}, {3, 8}, {4, 9}, {5, 15}, {7, 16}, {13, 33}, {64, 64},
      {576, 576}, {192, 576}, {1536, 576}, {576, 1536}, {1001, 129}, {4099, 40}};
  for (KernelPath path : paths()) {
    for (const auto& [n, k] : shapes) {
      for (bool bias : {false, true}) {
        torch::manual_seed(static_cast<uint64_t>(n * 131 + k));
        torch::Tensor w = torch::randn({n, k}), x = torch::randn({k});
        torch::Tensor b = bias ? torch::randn({n}) : torch::Tensor();
        torch::Tensor y = kernels::gemv_with(path, w, x, b);
        torch::Tensor w64 = w.to(torch::kDouble), x64 = x.to(torch::kDouble);
        torch::Tensor ref = w64.mv(x64);
        if (bias) ref += b.to(torch::kDouble);
        torch::Tensor tol = w64.abs().mv(x64.abs()) * 1e-6 + 1e-7;
        torch::Tensor err = (y.to(torch::kDouble) - ref).abs();
        const double worst = (err - tol).max().item<double>();
        EXPECT_LE(worst, 0.0) << "path=" << name(path) << " N=" << n << " K=" << k
                              << " bias=" << bias << " max_err=" << err.max().item<double>()
                              << " (tolerance 1e-6 * sum|w x| + 1e-7)";
      }
    }
  }
}

TEST(Gemv, ThreadCountDoesNotChangeABit) {
  // Each output is one row's dot product on one thread: 1 and 2 threads give the same bits.
  torch::manual_seed(3);
  torch::Tensor w = torch::randn({1536, 576}), x = torch::randn({576});
  const int before = at::get_num_threads();
  at::set_num_threads(1);
  torch::Tensor y1 = kernels::gemv(w, x);
  at::set_num_threads(2);
  torch::Tensor y2 = kernels::gemv(w, x);
  at::set_num_threads(before);
  EXPECT_TRUE(torch::equal(y1, y2));
}

TEST(Gemv, RefusesWhatItCannotRead) {
  torch::Tensor w = torch::randn({8, 16});
  EXPECT_FALSE(kernels::gemv_accepts(w, torch::randn({15})));
  EXPECT_FALSE(kernels::gemv_accepts(w.to(torch::kDouble), torch::randn({16}, torch::kDouble)));
  EXPECT_FALSE(kernels::gemv_accepts(w.t(), torch::randn({8})));  // not contiguous
  EXPECT_FALSE(kernels::gemv_accepts(w, torch::randn({16}), torch::randn({7})));
  EXPECT_TRUE(kernels::gemv_accepts(w, torch::randn({16}), torch::randn({8})));
  EXPECT_THROW(kernels::gemv(w, torch::randn({15})), std::exception);
}

}  // namespace
}  // namespace kvb
