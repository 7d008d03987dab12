// The FWHT, per-head top-k and Quest page-bound CPU kernels (kernels/cpu/hadamard.h, topk.h,
// quest_bounds.h) against their plain references (kernels/reference/fp8_hadamard_reference.h,
// topk_quest_reference.h) over grids of shapes, on every path the CPU has (portable always,
// AVX2 when present). Every failure prints its parameters (shape, k, path, seed, error).
//
// Tolerances:
//   FWHT      |fwht(x) - x H^T / sqrt(n)| <= 1e-6 * (1 + log2 n) * max|x| (the dense product
//             in float64); the two paths bit-identical (same butterflies in the same order).
//   top-k     exact: kLowerIndex equals the sorting reference; kLikeTorch equals
//             torch::topk(scores, k, -1) indices sorted ascending.
//   Quest     |kernel - float64 reference| <= 1e-5 * (sum_c |q_c| max(|lo_c|, |hi_c|) + 1e-30)
//             per query head; and bit-identical to quest.cpp's torch expression
//             max_g(torch::maximum(q lo, q hi).sum(-1)) on both paths.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "common/check.h"
#include "kernels/cpu/hadamard.h"
#include "kernels/cpu/quest_bounds.h"
#include "kernels/cpu/topk.h"
#include "kernels/reference/fp8_hadamard_reference.h"
#include "kernels/reference/topk_quest_reference.h"

namespace kvb {
namespace {

using kernels::KernelPath;

std::vector<KernelPath> paths() { return kernels::kernel_paths(kernels::cpu_has_avx2_fma()); }
const char* name(KernelPath p) { return kernels::kernel_path_name(p); }

// ---- FWHT --------------------------------------------------------------------------------------

TEST(KernelsFwht, MatchesDenseHadamardForEveryPowerOfTwoUpTo4096) {
  int checked = 0;
  uint64_t seed = 1;
  for (int64_t n = 1; n <= 4096; n *= 2)
    for (int64_t rows : {1, 3, 17}) {
      if (n >= 2048 && rows == 17) continue;  // the float64 dense reference is n^2 per row
      ++seed;
      auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
      const torch::Tensor x = torch::randn({rows, n}, gen);
      const torch::Tensor want = reference::hadamard_transform(x).to(torch::kFloat64);
      const double tol = 1e-6 * (1 + std::log2(static_cast<double>(n))) *
                         x.abs().max().item<double>();
      torch::Tensor first;
      for (KernelPath path : paths()) {
        torch::Tensor y = x.clone();
        kernels::fwht_(y, path);
        const double err = (y.to(torch::kFloat64) - want).abs().max().item<double>();
        EXPECT_LE(err, tol) << "fwht n=" << n << " rows=" << rows << " path=" << name(path)
                            << " seed=" << seed << " max|err|=" << err << " tol=" << tol;
        if (first.defined()) {
          EXPECT_TRUE(torch::equal(first, y))
              << "fwht paths differ: n=" << n << " rows=" << rows << " seed=" << seed;
        }
        first = y;
        ++checked;
      }
    }
  EXPECT_GE(checked, 13 * 3);
}

TEST(KernelsFwht, IsItsOwnInverseAndRefusesOtherLengths) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  for (KernelPath path : paths()) {
    const torch::Tensor x = torch::randn({2, 5, 64}, gen);
    torch::Tensor y = x.clone();
    kernels::fwht_(y, path);
    kernels::fwht_(y, path);
    const double err = (y - x).abs().max().item<double>();
    EXPECT_LE(err, 1e-5) << "fwht twice: path=" << name(path) << " max|err|=" << err;
    EXPECT_THROW(kernels::fwht_(torch::ones({2, 12}), path), Error) << name(path);
    EXPECT_THROW(kernels::fwht_(torch::ones({4, 8}).t(), path), Error) << name(path);
  }
}

// ---- top-k -------------------------------------------------------------------------------------

enum class Dist { kContinuous, kTies, kSpecial };
const char* dist_name(Dist d) {
  return d == Dist::kContinuous ? "continuous" : d == Dist::kTies ? "ties" : "nan/inf/-0";
}

torch::Tensor scores(int64_t B, int64_t H, int64_t S, Dist d, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  if (d == Dist::kContinuous) return torch::randn({B, H, S}, gen);
  torch::Tensor t = torch::randint(0, 4, {B, H, S}, gen).to(torch::kFloat32);  // heavy ties
  if (d == Dist::kTies) return t;
  const float inf = std::numeric_limits<float>::infinity();
  const float vals[] = {std::numeric_limits<float>::quiet_NaN(), inf, -inf, -0.0f, 0.0f};
  torch::Tensor pick = torch::randint(0, 8, {B, H, S}, gen);
  for (int i = 0; i < 5; ++i) t.masked_fill_(pick.eq(i), vals[i]);
  return t;
}

std::string topk_case(int64_t B, int64_t H, int64_t S, int64_t k, Dist d, KernelPath p,
                      uint64_t seed) {
  std::ostringstream o;
  o << "topk B=" << B << " H=" << H << " S=" << S << " k=" << k << " dist=" << dist_name(d)
    << " path=" << name(p) << " seed=" << seed;
  return o.str();
}

TEST(KernelsTopk, MatchesTheReferenceAndTorchTopkOverTheGrid) {
  int checked = 0;
  uint64_t seed = 100;
  for (int64_t B : {1, 2})
    for (int64_t H : {1, 3})
      for (int64_t S : {1, 2, 7, 8, 9, 33, 100, 257, 1000, 4096, 4099, 9000})
        for (Dist d : {Dist::kContinuous, Dist::kTies, Dist::kSpecial}) {
          const torch::Tensor s = scores(B, H, S, d, ++seed);
          for (int64_t k : {int64_t{0}, int64_t{1}, int64_t{3}, S / 64, S / 2, S - 1, S, S + 5}) {
            const torch::Tensor want = reference::topk_lower_index(s, std::vector<int64_t>(H, k));
            torch::Tensor like_torch;
            if (k >= 1 && k <= S) {
              like_torch = std::get<0>(std::get<1>(s.topk(k, -1)).sort(-1));
            }
            for (KernelPath path : paths()) {
              const std::string c = topk_case(B, H, S, k, d, path, seed);
              const torch::Tensor got =
                  kernels::topk_indices(s, k, kernels::TopkTies::kLowerIndex, path);
              EXPECT_TRUE(torch::equal(got, want)) << c << " (lower index)\ngot " << got
                                                   << "\nwant " << want;
              if (like_torch.defined()) {
                const torch::Tensor t =
                    kernels::topk_indices(s, k, kernels::TopkTies::kLikeTorch, path);
                EXPECT_TRUE(torch::equal(t, like_torch)) << c << " (like torch)";
              }
              ++checked;
            }
          }
        }
  EXPECT_GT(checked, 900);
}

TEST(KernelsTopk, RaggedBudgetsPerHead) {
  uint64_t seed = 500;
  for (int64_t S : {5, 64, 301})
    for (Dist d : {Dist::kContinuous, Dist::kTies, Dist::kSpecial}) {
      const torch::Tensor s = scores(2, 4, S, d, ++seed);
      const std::vector<int64_t> ks = {0, 3, S / 2, S + 2};
      const torch::Tensor want = reference::topk_lower_index(s, ks);
      for (KernelPath path : paths()) {
        const torch::Tensor got = kernels::topk_indices(s, ks, kernels::TopkTies::kLowerIndex, path);
        EXPECT_TRUE(torch::equal(got, want)) << topk_case(2, 4, S, -1, d, path, seed)
                                             << " ks={0,3,S/2,S+2}\ngot " << got;
      }
    }
  EXPECT_THROW(kernels::topk_indices(torch::zeros({1, 2, 4}), std::vector<int64_t>{1}), Error);
  EXPECT_THROW(kernels::topk_indices(torch::zeros({2, 4}), 1), Error);
}

TEST(KernelsTopk, NonContiguousScores) {
  const torch::Tensor wide = scores(2, 3, 50, Dist::kTies, 9);
  const torch::Tensor s = wide.narrow(2, 0, 37);  // a narrowed held-score buffer
  for (KernelPath path : paths()) {
    EXPECT_TRUE(torch::equal(kernels::topk_indices(s, 10, kernels::TopkTies::kLikeTorch, path),
                             std::get<0>(std::get<1>(s.topk(10, -1)).sort(-1))))
        << name(path);
  }
}

// ---- Quest page bounds -------------------------------------------------------------------------

// quest.cpp's expression (quest_page_scores, then the max over the group).
torch::Tensor torch_bounds(const torch::Tensor& q, const torch::Tensor& lo, const torch::Tensor& hi) {
  const int64_t B = lo.size(0), H = lo.size(1), D = lo.size(3);
  torch::Tensor qg = q.to(torch::kFloat32).reshape({B, H, q.size(1) / H, 1, D});
  torch::Tensor ub = torch::maximum(qg * lo.unsqueeze(2), qg * hi.unsqueeze(2)).sum(-1);
  return std::get<0>(ub.max(2));
}

TEST(KernelsQuest, MatchesReferenceAndTheTorchExpressionOverTheGrid) {
  int checked = 0;
  uint64_t seed = 1000;
  // D: below, at and past the vector widths, ragged tails, and 520 / 1040 (65 vectors of 8 / 16
  // lanes: libtorch's cascade reaches its second level).
  for (int64_t D : {1, 3, 4, 7, 8, 15, 16, 31, 32, 64, 100, 128, 256, 520, 1040})
    for (int64_t B : {1, 2})
      for (int64_t Hkv : {1, 3})
        for (int64_t G : {1, 3})
          for (int64_t P : {1, 5}) {
            if (D >= 520 && (B > 1 || Hkv > 1)) continue;
            auto gen = at::make_generator<at::CPUGeneratorImpl>(++seed);
            const torch::Tensor q = torch::randn({B, Hkv * G, D}, gen);
            const torch::Tensor a = torch::randn({B, Hkv, P, D}, gen),
                                b = torch::randn({B, Hkv, P, D}, gen);
            const torch::Tensor lo = torch::minimum(a, b), hi = torch::maximum(a, b);
            const torch::Tensor want = reference::quest_upper_bounds(q, lo, hi);
            const torch::Tensor exact = torch_bounds(q, lo, hi);
            // Per (b, kvh, p): the largest magnitude sum over the group.
            const torch::Tensor mag =
                std::get<0>((q.abs().reshape({B, Hkv, G, 1, D}) *
                             torch::maximum(lo.abs(), hi.abs()).unsqueeze(2))
                                .sum(-1)
                                .max(2))
                    .to(torch::kFloat64);
            for (KernelPath path : paths()) {
              const torch::Tensor got = kernels::quest_page_upper_bounds(q, lo, hi, path);
              std::ostringstream c;
              c << "quest B=" << B << " H_kv=" << Hkv << " G=" << G << " P=" << P << " D=" << D
                << " path=" << name(path) << " lanes=" << kernels::quest_sum_lanes()
                << " seed=" << seed;
              const torch::Tensor err = (got.to(torch::kFloat64) - want).abs();
              EXPECT_TRUE((err <= mag * 1e-5 + 1e-30).all().item<bool>())
                  << c.str() << " max|err|=" << err.max().item<double>();
              EXPECT_TRUE(torch::equal(got, exact))
                  << c.str() << " differs from the torch expression by "
                  << (got - exact).abs().max().item<double>();
              ++checked;
            }
          }
  EXPECT_GT(checked, 100);
}

TEST(KernelsQuest, AcceptsFourDimQueriesAndRefusesBadShapes) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(4);
  const torch::Tensor q = torch::randn({1, 4, 1, 8}, gen);
  const torch::Tensor lo = torch::randn({1, 2, 3, 8}, gen), hi = lo + 1;
  for (KernelPath path : paths()) {
    EXPECT_TRUE(torch::equal(kernels::quest_page_upper_bounds(q, lo, hi, path),
                             torch_bounds(q, lo, hi)))
        << name(path);
  }
  EXPECT_THROW(kernels::quest_page_upper_bounds(torch::randn({1, 3, 8}), lo, hi), Error);
  EXPECT_THROW(kernels::quest_page_upper_bounds(q, lo, hi.narrow(3, 0, 4)), Error);
}

}  // namespace
}  // namespace kvb
