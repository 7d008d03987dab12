// What each method's paper says it does, checked on constructed inputs: quantization error vs
// bits, KIVI's per-channel keys vs per-token keys on outlier channels, which tokens H2O,
// StreamingLLM and SnapKV keep.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "methods/registry.h"
#include "tests/methods_test_util.h"

namespace kvb {
namespace {

using test::held_positions;
using test::method_shape;

// Appends k/v [1, H, N, D] in one chunk to layer 0 of a fresh state and returns its view.
KVView stored_view(const std::string& spec, const torch::Tensor& k, const torch::Tensor& v) {
  ModelShape shape = method_shape(1, k.size(1), k.size(1), k.size(3));
  auto st = make_method(spec)->make_state(shape);
  const int64_t n = k.size(2);
  st->append(0, KVAppend{k, k, v, torch::arange(n, torch::kLong), torch::zeros({1, k.size(1), n, k.size(3)})});
  return st->view(0);
}

struct ErrStats {
  double rmse, mean, sem;  // root mean square, mean, standard error of the mean
};
ErrStats error_stats(const torch::Tensor& got, const torch::Tensor& want) {
  torch::Tensor e = (got.to(torch::kFloat64) - want.to(torch::kFloat64)).flatten();
  const double n = static_cast<double>(e.numel());
  return {e.pow(2).mean().sqrt().item<double>(), e.mean().item<double>(), e.std().item<double>() / std::sqrt(n)};
}

// Zero-mean within 4 standard errors, allowing 1% of the RMS error for the clamped extremes of
// each group (fp16 rounding of scale and zero point).
bool zero_mean(const ErrStats& s) { return std::abs(s.mean) < 4 * s.sem + 0.01 * s.rmse; }

TEST(MethodQuant, IntErrorShrinksWithBitsAndIsZeroMean) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  torch::Tensor k = torch::randn({1, 2, 2048, 64}, gen) * 1.5 + 0.3, v = torch::randn({1, 2, 2048, 64}, gen);
  double prev = 1e9;
  for (int bits : {2, 4, 8}) {
    KVView view = stored_view("int(bits=" + std::to_string(bits) + ")", k, v);
    ErrStats sk = error_stats(view.k, k), sv = error_stats(view.v, v);
    EXPECT_TRUE(zero_mean(sk)) << bits << " bits: mean key error " << sk.mean << " rmse " << sk.rmse;
    EXPECT_TRUE(zero_mean(sv)) << bits << " bits: mean value error " << sv.mean << " rmse " << sv.rmse;
    EXPECT_LT(sk.rmse, prev / 3) << bits << " bits";  // each doubling of bits: error / ~4 or more
    prev = sk.rmse;
  }
}

TEST(MethodQuant, KiviErrorShrinksWithBitsAndIsZeroMean) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(4);
  const int64_t n = 2048, r = 32;
  torch::Tensor k = torch::randn({1, 2, n, 64}, gen) * 2.0, v = torch::randn({1, 2, n, 64}, gen);
  double prev_k = 1e9, prev_v = 1e9;
  for (int bits : {2, 4}) {
    KVView view = stored_view("kivi(bits=" + std::to_string(bits) + ",group=32,residual=32)", k, v);
    // All n keys are quantized (n % residual == 0); values but the last `residual`.
    ErrStats sk = error_stats(view.k, k);
    ErrStats sv = error_stats(view.v.narrow(2, 0, n - r), v.narrow(2, 0, n - r));
    EXPECT_TRUE(torch::equal(view.v.narrow(2, n - r, r), v.narrow(2, n - r, r)));
    EXPECT_TRUE(zero_mean(sk)) << bits << " bits: mean key error " << sk.mean;
    EXPECT_TRUE(zero_mean(sv)) << bits << " bits: mean value error " << sv.mean;
    EXPECT_GT(sk.rmse, 0);
    EXPECT_LT(sk.rmse, prev_k / 3) << bits << " bits";
    EXPECT_LT(sv.rmse, prev_v / 3) << bits << " bits";
    prev_k = sk.rmse;
    prev_v = sv.rmse;
  }
}

TEST(MethodQuant, KiviResidualHoldsRecentTokensInFullPrecision) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  const ModelShape shape = method_shape(1, 2, 2, 32);
  auto st = make_method("kivi(bits=2,group=16,residual=64)")->make_state(shape);
  test::SyntheticStream in(shape, 9);
  for (int64_t i = 0; i < 200; ++i) {
    in.feed(*st, i < 100 ? 1 : 25);
    if (in.n >= 300) break;
  }
  const int64_t n = in.n, nqk = n / 64 * 64;
  KVView v = st->view(0);
  // Keys after the last full residual block and the last 64 values are exact.
  EXPECT_TRUE(torch::equal(v.k.narrow(2, nqk, n - nqk), in.k[0].narrow(2, nqk, n - nqk)));
  EXPECT_TRUE(torch::equal(v.v.narrow(2, n - 64, 64), in.v[0].narrow(2, n - 64, 64)));
  EXPECT_FALSE(torch::equal(v.k.narrow(2, 0, nqk), in.k[0].narrow(2, 0, nqk)));
}

TEST(MethodQuant, KiviPerChannelKeysBeatPerTokenKeysOnOutlierChannels) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(6);
  const int64_t n = 512, d = 64;
  torch::Tensor k = torch::randn({1, 1, n, d}, gen);
  for (int64_t c : {3, 17, 40, 41}) k.select(3, c).mul_(10).add_(6);  // LLM-like outlier channels
  torch::Tensor v = torch::randn({1, 1, n, d}, gen), q = torch::randn({1, 1, 64, d}, gen);
  auto attend = [&](const torch::Tensor& keys) {
    return torch::matmul(torch::softmax(torch::matmul(q, keys.transpose(-1, -2)) / std::sqrt(double(d)), -1), v);
  };
  torch::Tensor ref = attend(k);
  torch::Tensor per_channel = stored_view("kivi(bits=2,group=32,residual=32)", k, v).k;  // all quantized
  torch::Tensor per_token = stored_view("int(bits=2,group=32)", k, v).k;
  const double e_ch = (attend(per_channel) - ref).norm().item<double>();
  const double e_tok = (attend(per_token) - ref).norm().item<double>();
  EXPECT_LT(e_ch, 0.7 * e_tok) << "per-channel " << e_ch << " vs per-token " << e_tok;
  EXPECT_LT((per_channel - k).norm().item<double>(), (per_token - k).norm().item<double>());
}

TEST(MethodStreaming, KeepsExactlySinksAndWindow) {
  const int64_t sink = 4, window = 20, n = 150;
  const ModelShape shape = method_shape(2, 2, 2, 8);
  for (int64_t chunk : {1, 7, 64, 150}) {
    auto st = make_method("streaming(sink=4,window=20)")->make_state(shape);
    test::SyntheticStream in(shape, 2);
    while (in.n < n) {
      in.feed(*st, std::min(chunk, n - in.n));
      std::set<int64_t> want;
      for (int64_t p = 0; p < in.n; ++p)
        if (p < sink || p >= in.n - window) want.insert(p);
      for (int l = 0; l < 2; ++l)
        for (int64_t h = 0; h < 2; ++h)
          ASSERT_EQ(held_positions(*st, l, h), want) << "chunk " << chunk << " after " << in.n;
    }
    // And the slots hold those tokens' keys and values exactly.
    KVView v = st->view(1);
    torch::Tensor idx = v.pos[0][1];
    EXPECT_TRUE(torch::equal(v.k[0][1], in.k[1][0][1].index_select(0, idx)));
    EXPECT_TRUE(torch::equal(v.v[0][1], in.v[1][0][1].index_select(0, idx)));
  }
}

// H2O against a plain re-implementation on constructed attention: every query head attends to
// positions with fixed per-head weights, so accumulated scores differ between heads.
TEST(MethodH2O, KeepsTheTokensWithTheHighestAccumulatedAttention) {
  const int64_t hq = 4, hkv = 2, g = hq / hkv, d = 8, budget = 16, recent = 4, n = 100;
  const ModelShape shape = method_shape(1, hq, hkv, d);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(8);
  torch::Tensor w = torch::exp(2 * torch::randn({hq, n}, gen)).to(torch::kFloat64);
  auto st = make_method("h2o(budget=16,recent=4)")->make_state(shape);
  std::vector<std::map<int64_t, double>> ref(static_cast<size_t>(hkv));  // position -> score

  auto step = [&](int64_t p0, int64_t t) {
    KVView view = st->view(0);
    const int64_t s = view.slots();
    torch::Tensor k = torch::randn({1, hkv, t, d}, gen);
    st->append(0, KVAppend{k, k, k, torch::arange(p0, p0 + t), torch::randn({1, hq, t, d}, gen)});
    torch::Tensor probs = torch::zeros({1, hq, t, s + t}, torch::kFloat64);
    for (int64_t qh = 0; qh < hq; ++qh) {
      for (int64_t i = 0; i < t; ++i) {
        for (int64_t j = 0; j < s; ++j) probs[0][qh][i][j] = w[qh][view.pos[0][qh / g][j].item<int64_t>()];
        for (int64_t j = 0; j <= i; ++j) probs[0][qh][i][s + j] = w[qh][p0 + j];
      }
    }
    probs /= probs.sum(-1, true);
    for (int64_t h = 0; h < hkv; ++h) {
      for (int64_t j = 0; j < s + t; ++j) {
        const int64_t p = j < s ? view.pos[0][h][j].item<int64_t>() : p0 + (j - s);
        ref[h][p] += probs[0].narrow(0, h * g, g).select(2, j).sum().item<double>();
      }
      // Evict down to budget: the recent tokens stay; the rest by score.
      auto& m = ref[h];
      const int64_t last = p0 + t - 1;
      if (static_cast<int64_t>(m.size()) > budget) {
        std::vector<std::pair<double, int64_t>> cand;
        for (auto& [p, sc] : m)
          if (p <= last - recent) cand.push_back({sc, p});
        std::sort(cand.begin(), cand.end());
        const size_t drop = m.size() - budget;
        for (size_t i = 0; i < drop; ++i) m.erase(cand[i].second);
      }
    }
    st->observe(0, probs.to(torch::kFloat32));
    for (int64_t h = 0; h < hkv; ++h) {
      std::set<int64_t> want;
      for (auto& [p, sc] : ref[h]) want.insert(p);
      ASSERT_EQ(held_positions(*st, 0, h), want) << "head " << h << " after position " << p0 + t - 1;
    }
  };
  step(0, 10);
  for (int64_t p = 10; p < 60; ++p) step(p, 1);
  step(60, 25);  // a long chunk evicts many at once
  for (int64_t p = 85; p < n; ++p) step(p, 1);
  EXPECT_NE(held_positions(*st, 0, 0), held_positions(*st, 0, 1));  // heads decide independently
}

// SnapKV against a plain re-implementation of the vote (softmax of the window's queries over
// the prompt, summed over the window and the group's query heads, pooled, top-k).
void check_snapkv(const std::string& pooling) {
  const int64_t hq = 4, hkv = 2, g = 2, d = 8, n = 80, budget = 24, window = 8, pool = 5;
  const ModelShape shape = method_shape(1, hq, hkv, d);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(10);
  torch::Tensor k = torch::randn({1, hkv, n, d}, gen), q = torch::randn({1, hq, n, d}, gen);
  // Planted: three prompt keys aligned with the window's queries must survive in every head.
  torch::Tensor dir = q.narrow(2, n - window, window).mean({1, 2}).squeeze(0);  // [D]
  for (int64_t p : {5, 33, 50}) k.select(2, p).copy_(dir.view({1, 1, d}) * 6 / dir.norm());
  const std::string spec = "snapkv(budget=24,pool=5,pooling=" + pooling + ",window=8)";
  auto st = make_method(spec)->make_state(shape);
  for (int64_t s = 0; s < n; s += 37) {
    const int64_t t = std::min<int64_t>(37, n - s);
    st->append(0, KVAppend{k.narrow(2, s, t), k.narrow(2, s, t), k.narrow(2, s, t), torch::arange(s, s + t),
                           q.narrow(2, s, t)});
  }
  EXPECT_EQ(held_positions(*st, 0, 0).size(), static_cast<size_t>(n));  // nothing before end_prefill
  st->end_prefill();
  const int64_t prefix = n - window;
  for (int64_t h = 0; h < hkv; ++h) {
    std::vector<double> votes(static_cast<size_t>(prefix), 0.0);
    for (int64_t qh = h * g; qh < (h + 1) * g; ++qh) {
      for (int64_t i = n - window; i < n; ++i) {
        std::vector<double> logit(static_cast<size_t>(i + 1));
        double mx = -1e300, sum = 0;
        for (int64_t j = 0; j <= i; ++j) {
          logit[j] = (q[0][qh][i] * k[0][h][j]).sum().item<double>() / std::sqrt(double(d));
          mx = std::max(mx, logit[j]);
        }
        for (int64_t j = 0; j <= i; ++j) sum += std::exp(logit[j] - mx);
        for (int64_t j = 0; j < prefix; ++j) votes[j] += std::exp(logit[j] - mx) / sum;
      }
    }
    std::vector<double> pooled(static_cast<size_t>(prefix));
    for (int64_t j = 0; j < prefix; ++j) {
      double acc = pooling == "max" ? -1e300 : 0.0;
      for (int64_t o = -pool / 2; o <= pool / 2; ++o) {
        const int64_t x = j + o;
        const double val = x >= 0 && x < prefix ? votes[x] : (pooling == "max" ? -1e300 : 0.0);
        acc = pooling == "max" ? std::max(acc, val) : acc + val;
      }
      pooled[j] = pooling == "max" ? acc : acc / pool;
    }
    std::set<int64_t> held = held_positions(*st, 0, h);
    ASSERT_EQ(held.size(), static_cast<size_t>(budget));
    double min_kept = 1e300, max_dropped = -1e300;
    int64_t kept_prefix = 0;
    for (int64_t j = 0; j < prefix; ++j) {
      if (held.count(j)) {
        min_kept = std::min(min_kept, pooled[j]);
        ++kept_prefix;
      } else {
        max_dropped = std::max(max_dropped, pooled[j]);
      }
    }
    EXPECT_EQ(kept_prefix, budget - window);
    EXPECT_GE(min_kept, max_dropped - 1e-6) << "head " << h << ": a dropped token out-voted a kept one";
    for (int64_t p = n - window; p < n; ++p) EXPECT_TRUE(held.count(p)) << "window position " << p;
    // Max pooling spreads a spike over its neighbours without diluting it, so the planted keys
    // survive; avg pooling divides a lone spike by `pool` and may keep its neighbours instead.
    if (pooling == "max") {
      for (int64_t p : {5, 33, 50}) EXPECT_TRUE(held.count(p)) << "planted position " << p;
    }
  }
  // Decode tokens are never evicted after the one-shot compression.
  st->append(0, KVAppend{k.narrow(2, 0, 1), k.narrow(2, 0, 1), k.narrow(2, 0, 1), torch::tensor({n}),
                         q.narrow(2, 0, 1)});
  EXPECT_EQ(st->view(0).slots(), budget + 1);
}

TEST(MethodSnapKV, KeepsTopPooledVotesPerHeadPlusWindowMaxPool) { check_snapkv("max"); }
TEST(MethodSnapKV, KeepsTopPooledVotesPerHeadPlusWindowAvgPool) { check_snapkv("avg"); }

TEST(MethodChain, SnapKVThenKiviKeepsWhatSnapKVKeepsAndStoresIt) {
  const ModelShape shape = method_shape(1, 4, 2, 32);
  auto alone = make_method("snapkv(budget=64,window=8)")->make_state(shape);
  auto lossless = make_method("snapkv(budget=64,window=8)+kivi(residual=256)")->make_state(shape);
  auto packed = make_method("snapkv(budget=64,window=8)+kivi(bits=2,group=16,residual=32)")->make_state(shape);
  test::SyntheticStream a(shape, 4), b(shape, 4), c(shape, 4);  // same seed: same K/V/Q
  a.feed_chunked(*alone, 200, 64);
  b.feed_chunked(*lossless, 200, 64);
  c.feed_chunked(*packed, 200, 64);
  for (auto* s : {alone.get(), lossless.get(), packed.get()}) s->end_prefill();
  for (int64_t h = 0; h < 2; ++h) {
    EXPECT_EQ(held_positions(*alone, 0, h), held_positions(*lossless, 0, h));
    std::set<int64_t> p = held_positions(*packed, 0, h);
    EXPECT_EQ(p.size(), 64u);
    for (int64_t x = 192; x < 200; ++x) EXPECT_TRUE(p.count(x));
  }
  EXPECT_TRUE(torch::equal(alone->view(0).k, lossless->view(0).k));
  // KIVI's rule in token time, whatever SnapKV dropped: after 200 tokens the keys of the block
  // [192, 200) (all kept: the window) stay full precision, the 56 other kept keys are quantized;
  // the kept values among the 32 latest tokens [168, 200) stay full precision, the others are
  // quantized. 2 bits: 8 codes per 32-wide row.
  int64_t want = 0;
  for (int64_t h = 0; h < 2; ++h) {
    int64_t recent = 0;
    for (int64_t p : held_positions(*packed, 0, h)) recent += p >= 168;
    want += (56 + 64 - recent) * 32 / 4 + (8 + recent) * 32 * 4;
  }
  EXPECT_EQ(packed->memory(0).payload_bytes, want);
}

}  // namespace
}  // namespace kvb
