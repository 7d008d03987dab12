// Eviction with budgets that differ per layer (PyramidKV) and per head (AdaKV), and the store
// that holds every KV head apart (HeadSplitStore): each method keeps exactly the slots its rule
// selects, checked against plain re-implementations of the rule written here.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <tuple>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>

#include "common/check.h"
#include "methods/evict/pyramidkv.h"
#include "methods/head_split_store.h"
#include "methods/registry.h"
#include "tests/methods_test_util.h"

namespace kvb {
namespace {

using test::method_shape;

// The source positions a head holds in a layer (batch row 0), the padding of ragged views
// (position -1) left out.
std::set<int64_t> held_positions(const KVCacheState& st, int layer, int64_t head) {
  std::set<int64_t> s = test::held_positions(st, layer, head);
  s.erase(-1);
  return s;
}

// ---- PyramidKV's budgets ---------------------------------------------------------------------

TEST(MethodPyramidKV, LayerBudgetsSumToSnapKVsTotalAndShrinkBottomToTop) {
  for (int64_t layers : {1, 2, 3, 24, 30, 32, 80}) {
    for (auto [budget, window] : {std::pair<int64_t, int64_t>{2, 1}, {33, 32}, {64, 8},
                                  {128, 32}, {1000, 32}, {4096, 64}}) {
      for (int64_t beta : {1, 2, 5, 20, 1000}) {
        SCOPED_TRACE(std::to_string(layers) + " layers, budget " + std::to_string(budget) +
                     ", window " + std::to_string(window) + ", beta " + std::to_string(beta));
        const std::vector<int64_t> b = pyramid_layer_budgets(layers, budget, window, beta);
        ASSERT_EQ(static_cast<int64_t>(b.size()), layers);
        int64_t sum = 0;
        for (size_t l = 0; l < b.size(); ++l) {
          sum += b[l];
          EXPECT_GT(b[l], window) << "layer " << l;
          if (l > 0) {
            EXPECT_LE(b[l], b[l - 1]) << "layer " << l << " grows";
          }
        }
        EXPECT_EQ(sum, layers * budget);
        const int64_t nonwin = budget - window, lo = std::max<int64_t>(1, nonwin / beta);
        if (beta == 1 || layers == 1) {
          for (int64_t x : b) EXPECT_EQ(x, budget);
        } else {
          // The paper's ends: top about lo, bottom about 2B - lo (leftovers move them by one).
          EXPECT_NEAR(static_cast<double>(b.back() - window), static_cast<double>(lo), 1.0);
          EXPECT_NEAR(static_cast<double>(b.front() - window),
                      static_cast<double>(2 * nonwin - lo), 1.0);
        }
      }
    }
  }
  // A hand-checked case: B = 32, lo = 1, hi = 63; n_l = 63 - 31 l.
  EXPECT_EQ(pyramid_layer_budgets(3, 64, 32, 20), (std::vector<int64_t>{95, 64, 33}));
  // B = 96, lo = 4, hi = 188, step 184/3: 188, 126.67, 65.33, 4 -> leftover 1 to layer 1.
  EXPECT_EQ(pyramid_layer_budgets(4, 128, 32, 20), (std::vector<int64_t>{220, 159, 97, 36}));
}

// Its promise per layer and in total: SnapKV's total slots and bytes at the same budget.
TEST(MethodPyramidKV, PromisesSnapKVsTotalWithItsLayerBudgets) {
  for (int64_t layers : {3, 24, 30}) {
    const ModelShape shape = method_shape(layers, 8, 4, 16);
    auto pyr = make_method("pyramidkv(budget=256)");
    auto snap = make_method("snapkv(budget=256)");
    for (auto [tokens, prompt] : {std::pair<int64_t, int64_t>{4000, 3900}, {2000, 2000}}) {
      const MemoryUse p = *pyr->promised_memory(shape, tokens, torch::kFloat32, prompt);
      const MemoryUse s = *snap->promised_memory(shape, tokens, torch::kFloat32, prompt);
      EXPECT_EQ(p.slots, s.slots) << layers;
      EXPECT_EQ(p.payload_bytes, s.payload_bytes) << layers;
      EXPECT_EQ(p.metadata_bytes, s.metadata_bytes) << layers;
      const std::vector<int64_t> b = pyramid_layer_budgets(layers, 256, 32, 20);
      int64_t want = 0;
      for (int64_t x : b) want += 4 * (x + tokens - prompt);
      EXPECT_EQ(p.slots, want);
    }
  }
}

// Per layer, PyramidKV keeps exactly what SnapKV keeps with that layer's budget: the same votes,
// the top budget_l - window of them, plus the window.
TEST(MethodPyramidKV, KeepsPerLayerTheTopOfSnapKVsVotes) {
  const ModelShape shape = method_shape(3, 4, 2, 16);
  for (const char* opts : {"", ",pooling=avg,pool=5", ",beta=4"}) {
    const std::string spec = std::string("pyramidkv(budget=40,window=8") + opts + ")";
    SCOPED_TRACE(spec);
    const int64_t beta = std::string(opts) == ",beta=4" ? 4 : 20;
    const std::vector<int64_t> budgets = pyramid_layer_budgets(3, 40, 8, beta);
    auto pyr = make_method(spec)->make_state(shape);
    test::SyntheticStream a(shape, 17);
    a.feed_chunked(*pyr, 150, 64);
    pyr->end_prefill();
    for (int l = 0; l < 3; ++l) {
      std::string snap_spec = "snapkv(budget=" + std::to_string(budgets[l]) + ",window=8";
      if (std::string(opts).find("avg") != std::string::npos) snap_spec += ",pooling=avg,pool=5";
      auto snap = make_method(snap_spec + ")")->make_state(shape);
      test::SyntheticStream b(shape, 17);  // the same keys and queries
      b.feed_chunked(*snap, 150, 64);
      snap->end_prefill();
      EXPECT_EQ(pyr->view(l).slots(), budgets[l]) << "layer " << l;
      for (int64_t h = 0; h < 2; ++h)
        EXPECT_EQ(held_positions(*pyr, l, h), held_positions(*snap, l, h))
            << "layer " << l << " head " << h;
      EXPECT_EQ(pyr->memory(l).slots, 2 * budgets[l]);
    }
    // Decode tokens are kept in every layer.
    a.feed(*pyr, 1);
    for (int l = 0; l < 3; ++l) EXPECT_EQ(pyr->view(l).slots(), budgets[l] + 1);
  }
}

TEST(MethodPyramidKV, RefusesBadSpecs) {
  for (auto [spec, want] :
       {std::pair<const char*, const char*>{"pyramidkv(budget=32,window=32)",
                                             "window must be smaller than budget"},
        {"pyramidkv(budget=64,pool=4)", "pool must be odd"},
        {"pyramidkv(budget=64,beta=0)", "must be at least 1"},
        {"pyramidkv(window=8)", "pyramidkv needs parameter 'budget'"}}) {
    try {
      make_method(spec);
      ADD_FAILURE() << spec << " accepted";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  }
}

// ---- AdaKV -----------------------------------------------------------------------------------

// One layer's prompt: keys, values and queries as appended ([1, H, n, D]).
struct Prompt {
  torch::Tensor k, v, q;
};

void feed_prompt(KVCacheState& st, const std::vector<Prompt>& layers, int64_t chunk) {
  const int64_t n = layers.front().k.size(2);
  for (int64_t s = 0; s < n; s += chunk) {
    const int64_t t = std::min(chunk, n - s);
    for (size_t l = 0; l < layers.size(); ++l) {
      const Prompt& p = layers[l];
      torch::Tensor k = p.k.narrow(2, s, t);
      st.append(static_cast<int>(l),
                KVAppend{k, k, p.v.narrow(2, s, t), torch::arange(s, s + t), p.q.narrow(2, s, t)});
    }
  }
}

// AdaKV's per-head scores, in double: each window query's causal softmax attention over the
// prompt, averaged over the window's queries and the KV head's query group, the window's slots
// 0, pooled (avg or max, `pool` wide, same length). [H_kv][n].
std::vector<std::vector<double>> reference_scores(const Prompt& p, int64_t window, int64_t pool,
                                                  bool max_pool) {
  const int64_t hk = p.k.size(1), hq = p.q.size(1), g = hq / hk, n = p.k.size(2),
                d = p.k.size(3);
  torch::Tensor k = p.k[0].to(torch::kFloat64), q = p.q[0].to(torch::kFloat64);
  std::vector<std::vector<double>> out;
  for (int64_t h = 0; h < hk; ++h) {
    std::vector<double> votes(static_cast<size_t>(n), 0.0);
    for (int64_t qh = h * g; qh < (h + 1) * g; ++qh) {
      for (int64_t i = n - window; i < n; ++i) {
        torch::Tensor logit = k[h].narrow(0, 0, i + 1).matmul(q[qh][i]) / std::sqrt(double(d));
        torch::Tensor prob = torch::softmax(logit, 0);
        auto a = prob.accessor<double, 1>();
        for (int64_t j = 0; j < n - window; ++j) votes[j] += a[j] / double(g * window);
      }
    }
    std::vector<double> pooled(static_cast<size_t>(n), 0.0);
    for (int64_t j = 0; j < n; ++j) {
      double acc = max_pool ? -1e300 : 0.0;
      for (int64_t o = -pool / 2; o <= pool / 2; ++o) {
        const int64_t x = j + o;
        const double val = x >= 0 && x < n ? votes[x] : (max_pool ? -1e300 : 0.0);
        acc = max_pool ? std::max(acc, val) : acc + val;
      }
      pooled[j] = max_pool ? acc : acc / pool;
    }
    out.push_back(pooled);
  }
  return out;
}

// AdaKV's allocation written as plain sorting: of each head's prompt positions outside the
// window, ranked by score, the top f = floor(P * floor% / 100) are kept and the lowest never;
// the rest of the layer's H x P slots go to the best remaining (score, head, position) of all
// heads together; the window is kept in every head. P = budget - window.
std::vector<std::set<int64_t>> reference_allocation(const std::vector<std::vector<double>>& score,
                                                    int64_t n, int64_t window, int64_t budget,
                                                    int64_t floor_percent) {
  const int64_t hk = static_cast<int64_t>(score.size()), per = budget - window;
  const int64_t f = per * floor_percent / 100;
  std::vector<std::set<int64_t>> keep(static_cast<size_t>(hk));
  std::vector<std::tuple<double, int64_t, int64_t>> rest;  // (score, head, position)
  for (int64_t h = 0; h < hk; ++h) {
    std::vector<std::pair<double, int64_t>> c;
    for (int64_t j = 0; j < n - window; ++j) c.push_back({score[h][j], j});
    std::sort(c.begin(), c.end(), [](auto x, auto y) { return x.first > y.first; });
    for (int64_t i = 0; i < f; ++i) keep[h].insert(c[i].second);
    for (int64_t i = f; i + 1 < static_cast<int64_t>(c.size()); ++i)
      rest.push_back({c[i].first, h, c[i].second});
    for (int64_t j = n - window; j < n; ++j) keep[h].insert(j);
  }
  std::sort(rest.begin(), rest.end(),
            [](const auto& x, const auto& y) { return std::get<0>(x) > std::get<0>(y); });
  for (int64_t i = 0; i < hk * (per - f); ++i)
    keep[std::get<1>(rest[i])].insert(std::get<2>(rest[i]));
  return keep;
}

// A layer whose KV head 0 concentrates its window's attention on three planted keys and whose
// head 1 attends almost uniformly (tiny random keys). H_q = 4 (GQA groups of 2), D = 16.
Prompt concentrated_and_flat(int64_t n, int64_t window, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const int64_t d = 16;
  Prompt p;
  p.q = torch::randn({1, 4, n, d}, gen);
  p.k = torch::randn({1, 2, n, d}, gen) * 0.1;
  p.v = torch::randn({1, 2, n, d}, gen);
  torch::Tensor u = torch::randn({d}, gen);
  u /= u.norm();
  // Group 0's window queries point along u; the planted keys too, so each window query puts
  // nearly all its attention on them (logit 8 against about 0).
  p.q.narrow(1, 0, 2).narrow(2, n - window, window).copy_(
      (u * 4).view({1, 1, 1, d}) + 0.1 * torch::randn({1, 2, window, d}, gen));
  for (int64_t j : {10, 40, 70}) p.k[0][0][j].copy_(u * 8);
  return p;
}

TEST(MethodAdaKV, GivesTheFlatHeadTheSlotsTheConcentratedHeadDoesNotNeed) {
  const int64_t n = 100, window = 8, budget = 40;
  const ModelShape shape = method_shape(1, 4, 2, 16);
  const Prompt p = concentrated_and_flat(n, window, 3);
  for (auto [pool, pooling] : {std::pair<int64_t, const char*>{1, "max"}, {3, "avg"}}) {
    for (int64_t floor_percent : {0, 20, 50, 100}) {
      const std::string spec = "adakv(budget=40,window=8,floor=" + std::to_string(floor_percent) +
                               ",pool=" + std::to_string(pool) + ",pooling=" + pooling + ")";
      SCOPED_TRACE(spec);
      auto st = make_method(spec)->make_state(shape);
      feed_prompt(*st, {p}, 37);
      st->end_prefill();
      const auto want = reference_allocation(
          reference_scores(p, window, pool, std::string(pooling) == "max"), n, window, budget,
          floor_percent);
      int64_t total = 0;
      for (int64_t h = 0; h < 2; ++h) {
        EXPECT_EQ(held_positions(*st, 0, h), want[h]) << "head " << h;
        total += static_cast<int64_t>(held_positions(*st, 0, h).size());
      }
      EXPECT_EQ(total, 2 * budget);
      EXPECT_EQ(st->memory().slots, 2 * budget);
      const int64_t f = (budget - window) * floor_percent / 100;
      const int64_t h0 = static_cast<int64_t>(held_positions(*st, 0, 0).size());
      if (floor_percent < 100) {
        // The concentrated head keeps its floor, or, when the floor is smaller, what its planted
        // keys out-vote the flat head with (3 keys; with avg pooling over 3 their 6 neighbours
        // too); the flat head keeps everything else.
        const int64_t planted = pool == 1 ? 3 : 9;
        EXPECT_EQ(h0, window + std::max<int64_t>(f, planted));
        EXPECT_GT(static_cast<int64_t>(held_positions(*st, 0, 1).size()), h0);
      } else {
        EXPECT_EQ(h0, budget);  // floor 100%: the even split of SnapKV
      }
      for (int64_t j : {10, 40, 70}) EXPECT_TRUE(held_positions(*st, 0, 0).count(j)) << j;
    }
  }
}

// Random data, several layers, GQA, the default max pooling: the floor holds, per-layer totals
// are exact, and the state's choice agrees with the reference wherever scores are not tied.
TEST(MethodAdaKV, KeepsTheLayersTotalWithTheFloorOnRandomData) {
  const ModelShape shape = method_shape(3, 8, 4, 16);
  const int64_t n = 130, window = 16, budget = 48;
  std::vector<Prompt> layers;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(9);
  for (int l = 0; l < 3; ++l)
    layers.push_back({torch::randn({1, 4, n, 16}, gen) * (0.5 + l),
                      torch::randn({1, 4, n, 16}, gen), torch::randn({1, 8, n, 16}, gen)});
  for (const char* base : {"snapkv", "pyramidkv"}) {
    const std::string spec = std::string("adakv(base=") + base + ",budget=48,window=16,pool=1)";
    SCOPED_TRACE(spec);
    const std::vector<int64_t> budgets = std::string(base) == "snapkv"
                                             ? std::vector<int64_t>(3, budget)
                                             : pyramid_layer_budgets(3, budget, window, 20);
    auto st = make_method(spec)->make_state(shape);
    feed_prompt(*st, layers, 50);
    st->end_prefill();
    for (int l = 0; l < 3; ++l) {
      const auto want = reference_allocation(reference_scores(layers[l], window, 1, true), n,
                                             window, budgets[l], 20);
      const int64_t f = (budgets[l] - window) * 20 / 100;
      int64_t total = 0;
      for (int64_t h = 0; h < 4; ++h) {
        const std::set<int64_t> held = held_positions(*st, l, h);
        EXPECT_EQ(held, want[h]) << "layer " << l << " head " << h;
        EXPECT_GE(static_cast<int64_t>(held.size()), window + f);
        for (int64_t j = n - window; j < n; ++j) EXPECT_TRUE(held.count(j)) << "window " << j;
        total += static_cast<int64_t>(held.size());
      }
      EXPECT_EQ(total, 4 * budgets[l]) << "layer " << l;
      EXPECT_EQ(st->memory(l).slots, 4 * budgets[l]);
    }
  }
}

TEST(MethodAdaKV, FloorOfAHundredPercentIsSnapKV) {
  const ModelShape shape = method_shape(2, 4, 2, 16);
  auto ada = make_method("adakv(budget=40,floor=100,pool=3,pooling=avg,window=8)")
                 ->make_state(shape);
  auto snap = make_method("snapkv(budget=40,pool=3,pooling=avg,window=8)")->make_state(shape);
  test::SyntheticStream a(shape, 4), b(shape, 4);
  a.feed_chunked(*ada, 120, 50);
  b.feed_chunked(*snap, 120, 50);
  ada->end_prefill();
  snap->end_prefill();
  for (int l = 0; l < 2; ++l)
    for (int64_t h = 0; h < 2; ++h)
      EXPECT_EQ(held_positions(*ada, l, h), held_positions(*snap, l, h)) << l << " " << h;
}

// Memory shrinks for real: each head holds its own slots' bytes, the layer's total is SnapKV's
// at the same budget, and decode tokens are kept in every head.
TEST(MethodAdaKV, MemoryIsTheHeadsSlotsAndEqualsSnapKVsAtTheSameBudget) {
  const ModelShape shape = method_shape(2, 4, 2, 16);
  auto ada_m = make_method("adakv(budget=40,window=8)");
  auto snap_m = make_method("snapkv(budget=40,window=8)");
  auto ada = ada_m->make_state(shape), snap = snap_m->make_state(shape);
  const Prompt p = concentrated_and_flat(100, 8, 5);
  feed_prompt(*ada, {p, p}, 100);
  feed_prompt(*snap, {p, p}, 100);
  EXPECT_GT(ada->memory().metadata_bytes, 0);  // the window's queries until end_prefill
  ada->end_prefill();
  snap->end_prefill();
  test::SyntheticStream more(shape, 8);
  more.n = 100;
  for (int i = 0; i < 5; ++i) {
    more.feed(*ada, 1);
    more.feed(*snap, 1);
  }
  int64_t held = 0;
  for (int l = 0; l < 2; ++l) {
    int64_t layer = 0;
    for (int64_t h = 0; h < 2; ++h)
      layer += static_cast<int64_t>(held_positions(*ada, l, h).size());
    EXPECT_EQ(layer, 2 * (40 + 5)) << "layer " << l;
    held += layer;
  }
  EXPECT_NE(held_positions(*ada, 0, 0).size(), held_positions(*ada, 0, 1).size());
  const MemoryUse a = ada->memory(), s = snap->memory();
  EXPECT_EQ(a.slots, held);
  EXPECT_EQ(a.payload_bytes, held * 2 * 16 * 4);  // K and V, fp32
  EXPECT_EQ(a.metadata_bytes, held * 8);          // every head dropped: explicit positions
  EXPECT_EQ(a.payload_bytes, s.payload_bytes);
  EXPECT_EQ(a.metadata_bytes, s.metadata_bytes);
  const MemoryUse want = *ada_m->promised_memory(shape, 105, torch::kFloat32, 100);
  EXPECT_EQ(a.slots, want.slots);
  EXPECT_EQ(a.payload_bytes, want.payload_bytes);
  EXPECT_EQ(a.metadata_bytes, want.metadata_bytes);
  // A second end_prefill (a later turn) evicts nothing.
  ada->end_prefill();
  EXPECT_EQ(ada->memory().slots, held);
}

TEST(MethodAdaKV, ComposesWithStorageAndHoldsItsPromise) {
  const ModelShape shape = method_shape(2, 4, 2, 64);
  for (const char* spec : {"adakv(budget=128)+int(bits=4)", "adakv(budget=128)+kivi(bits=2)",
                           "adakv(base=pyramidkv,budget=100,window=16)+kivi(bits=2)",
                           "adakv(base=pyramidkv,budget=100,window=16)+full(dtype=fp16)"}) {
    SCOPED_TRACE(spec);
    auto m = make_method(spec);
    const bool exact = std::string(spec).find("kivi") == std::string::npos;
    EXPECT_EQ(m->promise_is_exact(), exact);
    for (auto [prompt, decoded] : {std::pair<int64_t, int64_t>{700, 40}, {1000, 0}, {90, 30}}) {
      auto st = m->make_state(shape);
      test::SyntheticStream in(shape, 12);
      in.feed_chunked(*st, prompt, 256);
      st->end_prefill();
      for (int64_t i = 0; i < decoded; ++i) in.feed(*st, 1);
      const MemoryUse want =
          *m->promised_memory(shape, prompt + decoded, torch::kFloat32, prompt);
      const MemoryUse got = st->memory();
      EXPECT_EQ(got.slots, want.slots) << prompt;
      if (exact) {
        EXPECT_EQ(got.payload_bytes, want.payload_bytes) << prompt;
        EXPECT_EQ(got.metadata_bytes, want.metadata_bytes) << prompt;
      } else {
        EXPECT_LE(got.payload_bytes, want.payload_bytes) << prompt;
        EXPECT_LE(got.payload_bytes + got.metadata_bytes,
                  want.payload_bytes + want.metadata_bytes)
            << prompt;
      }
    }
  }
}

TEST(MethodAdaKV, RefusesAnotherSelectorInItsChainAndBadSpecs) {
  for (auto [spec, want] :
       {std::pair<const char*, const char*>{"adakv(budget=64)+h2o(budget=32)",
                                             "'adakv' keeps a different number of slots per head "
                                             "and must be the only selecting stage"},
        {"streaming(window=8)+adakv(budget=64)+kivi", "must be the only selecting stage"},
        {"snapkv(budget=128)+adakv(budget=64)+int(bits=4)", "must be the only selecting stage"},
        {"adakv(budget=32,window=32)", "window must be smaller than budget"},
        {"adakv(budget=64,pool=2)", "pool must be odd"},
        {"adakv(budget=64,floor=101)", "must be at least 0 and at most 100"},
        {"adakv(budget=64,base=h2o)", "expected one of snapkv, pyramidkv"}}) {
    try {
      make_method(spec);
      ADD_FAILURE() << spec << " accepted";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  }
}

// ---- HeadSplitStore --------------------------------------------------------------------------

std::shared_ptr<const StorageMethod> full_storage() {
  std::shared_ptr<KVMethod> m = make_method("full");
  auto s = std::dynamic_pointer_cast<const StorageMethod>(m);
  KVB_CHECK(s, "full is a storage method");
  return s;
}

TEST(MethodEvictionHeadSplitStore, PadsRaggedHeadsAndClonesIndependently) {
  const ModelShape shape = method_shape(1, 2, 2, 4);
  HeadSplitStore store(full_storage(), shape);
  torch::Tensor k = torch::randn({1, 2, 6, 4}), v = torch::randn({1, 2, 6, 4});
  store.append(0, KVAppend{k, k, v, torch::arange(6), torch::randn({1, 2, 6, 4})});
  EXPECT_EQ(store.slots(0), 6);
  EXPECT_FALSE(store.view(0).logit_bias.defined());  // not padded: one concatenation

  // Head 0 keeps slots 1 and 4, head 1 keeps all six (its row is padding past its length).
  torch::Tensor idx =
      torch::tensor({1, 4, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5}, torch::kLong).view({1, 2, 6});
  torch::Tensor len = torch::tensor({2, 6}, torch::kLong).view({1, 2});
  auto before = store.clone_store();
  store.keep_ragged(0, idx, len);
  EXPECT_TRUE(torch::equal(store.head_slots(0), len));
  KVView view = store.view(0);
  ASSERT_EQ(view.slots(), 6);
  ASSERT_TRUE(view.logit_bias.defined());
  EXPECT_TRUE(torch::equal(view.pos[0][0], torch::tensor({1, 4, -1, -1, -1, -1}, torch::kLong)));
  EXPECT_TRUE(torch::equal(view.pos[0][1], torch::arange(6)));
  for (int64_t i = 0; i < 6; ++i) {
    const float b0 = view.logit_bias[0][0][i].item<float>();
    if (i < 2) {
      EXPECT_EQ(b0, 0.0f);
    } else {
      EXPECT_TRUE(std::isinf(b0) && b0 < 0) << "padding slot " << i;
    }
    EXPECT_EQ(view.logit_bias[0][1][i].item<float>(), 0.0f);
  }
  const torch::Tensor kept0 = torch::tensor({1, 4});
  EXPECT_TRUE(torch::equal(view.k[0][0].narrow(0, 0, 2), k[0][0].index_select(0, kept0)));
  EXPECT_TRUE(torch::equal(view.v[0][0].narrow(0, 0, 2), v[0][0].index_select(0, kept0)));
  EXPECT_TRUE(torch::equal(view.k[0][0].narrow(0, 2, 4), torch::zeros({4, 4})));
  EXPECT_TRUE(torch::equal(view.k[0][1], k[0][1]));
  EXPECT_TRUE(torch::equal(store.positions(0)[0][0], view.pos[0][0]));
  // Memory: the slots the heads hold; only the head that dropped holds explicit positions.
  MemoryUse m = store.memory(0);
  EXPECT_EQ(m.slots, 8);
  EXPECT_EQ(m.payload_bytes, 8 * 2 * 4 * 4);
  EXPECT_EQ(m.metadata_bytes, 2 * 8);

  // drop_one: -1 leaves a head alone.
  store.drop_one(0, torch::tensor({-1, 2}, torch::kLong).view({1, 2}));
  EXPECT_TRUE(torch::equal(store.head_slots(0), torch::tensor({2, 5}, torch::kLong).view({1, 2})));
  std::set<int64_t> h1;
  torch::Tensor pos1 = store.view(0).pos[0][1];
  for (int64_t i = 0; i < 5; ++i) h1.insert(pos1[i].item<int64_t>());
  EXPECT_EQ(h1, (std::set<int64_t>{0, 1, 3, 4, 5}));

  // A clone evolves on its own, both ways.
  auto copy = store.clone_store();
  store.append(0, KVAppend{k.narrow(2, 0, 1), k.narrow(2, 0, 1), v.narrow(2, 0, 1),
                           torch::tensor({6}), torch::randn({1, 2, 1, 4})});
  EXPECT_TRUE(torch::equal(copy->view(0).pos[0][0].narrow(0, 0, 2), torch::tensor({1, 4})));
  EXPECT_EQ(copy->memory(0).slots, 7);
  EXPECT_EQ(store.memory(0).slots, 9);
  EXPECT_EQ(before->memory(0).slots, 12);  // the snapshot taken before the keep
  EXPECT_FALSE(before->view(0).logit_bias.defined());
}

}  // namespace
}  // namespace kvb
