// The methods built on the score-based selector base (methods/evict/score_selector.h) that
// score once per token: knorm keeps the lowest-norm keys outside its protected windows, random
// keeps a uniformly random subset fixed by its seed. Both checked against the rule itself.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <vector>

#include "methods/registry.h"
#include "tests/methods_test_util.h"

namespace kvb {
namespace {

using test::held_positions;
using test::method_shape;

// The brute-force rule: of the n tokens seen, the first `sink` and the last `recent` are kept;
// the rest compete for the remaining budget by key norm (lowest kept), computed in double.
std::set<int64_t> knorm_rule(const torch::Tensor& keys,  // [N, D] one head's appended keys
                             int64_t budget, int64_t recent, int64_t sink) {
  const int64_t n = keys.size(0);
  std::set<int64_t> keep;
  for (int64_t p = 0; p < n; ++p)
    if (n <= budget || p < sink || p > n - 1 - recent) keep.insert(p);
  if (n <= budget) return keep;
  torch::Tensor norm = keys.to(torch::kFloat64).pow(2).sum(-1).sqrt();
  std::vector<std::pair<double, int64_t>> others;
  for (int64_t p = 0; p < n; ++p)
    if (!keep.count(p)) others.push_back({norm[p].item<double>(), p});
  std::sort(others.begin(), others.end());
  const size_t room = static_cast<size_t>(budget) - keep.size();
  for (size_t i = 0; i < room; ++i) keep.insert(others[i].second);
  return keep;
}

TEST(MethodKnorm, KeepsTheLowestNormKeysOutsideTheProtectedWindows) {
  struct Case {
    const char* spec;
    int64_t budget, recent, sink;
  };
  const ModelShape shape = method_shape(2, 4, 2, 8);
  for (const Case& c : {Case{"knorm(budget=16)", 16, 0, 0},
                        Case{"knorm(budget=16,recent=4,sink=2)", 16, 4, 2},
                        Case{"knorm(budget=24,recent=24)", 24, 24, 0}}) {
    for (int64_t chunk : {1, 7, 64, 150}) {
      SCOPED_TRACE(std::string(c.spec) + " chunk " + std::to_string(chunk));
      auto st = make_method(c.spec)->make_state(shape);
      test::SyntheticStream in(shape, 3);
      while (in.n < 150) {
        in.feed(*st, std::min<int64_t>(chunk, 150 - in.n));
        for (int l = 0; l < 2; ++l) {
          for (int64_t h = 0; h < 2; ++h) {
            std::set<int64_t> want = knorm_rule(in.k[l][0][h], c.budget, c.recent, c.sink);
            ASSERT_EQ(held_positions(*st, l, h), want) << "layer " << l << " head " << h
                                                       << " after " << in.n;
          }
        }
      }
      EXPECT_EQ(st->view(1).slots(), c.budget);
      // The slots hold those tokens' keys and values exactly.
      KVView v = st->view(1);
      torch::Tensor idx = v.pos[0][0];
      EXPECT_TRUE(torch::equal(v.k[0][0], in.k[1][0][0].index_select(0, idx)));
      EXPECT_TRUE(torch::equal(v.v[0][0], in.v[1][0][0].index_select(0, idx)));
    }
  }
}

// Scores come from the keys as appended, not as a quantizing storage holds them.
TEST(MethodKnorm, ScoresTheAppendedKeysWhateverTheStorage) {
  const ModelShape shape = method_shape(1, 4, 2, 32);
  auto alone = make_method("knorm(budget=40,recent=8)")->make_state(shape);
  auto packed = make_method("knorm(budget=40,recent=8)+kivi(bits=2,group=16,residual=32)")
                    ->make_state(shape);
  test::SyntheticStream a(shape, 6), b(shape, 6);  // same seed: same keys
  for (int64_t chunk : {30, 1, 1, 17, 1, 50}) {
    a.feed(*alone, chunk);
    b.feed(*packed, chunk);
    for (int64_t h = 0; h < 2; ++h)
      ASSERT_EQ(held_positions(*alone, 0, h), held_positions(*packed, 0, h)) << "after " << a.n;
  }
}

TEST(MethodRandom, KeepsExactlyBudgetAndRepeatsForItsSeed) {
  const ModelShape shape = method_shape(2, 2, 2, 8);
  auto held = [&](const std::string& spec, int64_t chunk) {
    auto st = make_method(spec)->make_state(shape);
    test::SyntheticStream in(shape, 1);
    in.feed_chunked(*st, 120, chunk);
    std::vector<std::set<int64_t>> r;
    for (int l = 0; l < 2; ++l) {
      EXPECT_EQ(st->view(l).slots(), 20) << spec;
      for (int64_t h = 0; h < 2; ++h) r.push_back(held_positions(*st, l, h));
    }
    return r;
  };
  const auto seed1 = held("random(budget=20,seed=1)", 1);
  EXPECT_EQ(held("random(budget=20,seed=1)", 1), seed1);
  EXPECT_EQ(held("random(budget=20,seed=1)", 37), seed1);  // whatever the chunking
  EXPECT_NE(held("random(budget=20,seed=2)", 1), seed1);
  EXPECT_NE(seed1[0], seed1[1]);  // heads draw independently
  EXPECT_NE(seed1[0], seed1[2]);  // and layers
  for (const auto& s : seed1) EXPECT_EQ(s.size(), 20u);
}

// A uniformly random subset of all tokens seen, not a recency-biased one (dropping a random slot
// at each step would keep recent tokens far more often): over many seeds, every position is
// kept about budget/n of the time.
TEST(MethodRandom, KeepsEveryTokenSeenWithEqualChance) {
  const ModelShape shape = method_shape(1, 2, 2, 4);
  const int64_t n = 64, budget = 16, seeds = 150;
  std::vector<int64_t> kept(static_cast<size_t>(n), 0);
  for (int64_t seed = 0; seed < seeds; ++seed) {
    auto st = make_method("random(budget=16,seed=" + std::to_string(seed) + ")")->make_state(shape);
    test::SyntheticStream in(shape, 2);
    in.feed_chunked(*st, n, 1);
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t p : held_positions(*st, 0, h)) ++kept[static_cast<size_t>(p)];
  }
  // Each quarter of the stream: expected seeds * 2 * budget / 4 = 1200, sd about 30.
  const double expect = static_cast<double>(seeds * 2 * budget) / 4;
  for (int64_t q = 0; q < 4; ++q) {
    int64_t sum = 0;
    for (int64_t p = q * n / 4; p < (q + 1) * n / 4; ++p) sum += kept[static_cast<size_t>(p)];
    EXPECT_NEAR(static_cast<double>(sum), expect, 150) << "quarter " << q;
  }
}

}  // namespace
}  // namespace kvb
