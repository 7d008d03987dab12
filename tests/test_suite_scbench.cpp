// Shared-context suite: multi-request leaves the shared snapshot untouched; multi-turn keeps gold
// answers in the session; a query-aware method (SnapKV) scores its first query and not later ones.
#include <gtest/gtest.h>

#include "datasets/scbench.h"
#include "harness/model/model.h"
#include "methods/registry.h"
#include "suites/scbench.h"
#include "tests/suite_test_util.h"

namespace kvb {
namespace {

struct Views {
  std::vector<torch::Tensor> k, v, pos;
  MemoryUse mem;
};

Views capture(const KVCacheState& s, int layers) {
  Views x;
  for (int l = 0; l < layers; ++l) {
    KVView v = s.view(l);
    x.k.push_back(v.k.defined() ? v.k.clone() : torch::Tensor());
    x.v.push_back(v.v.defined() ? v.v.clone() : torch::Tensor());
    x.pos.push_back(v.pos.defined() ? v.pos.clone() : torch::Tensor());
  }
  x.mem = s.memory();
  return x;
}

void expect_same(const Views& a, const Views& b, const std::string& what) {
  ASSERT_EQ(a.k.size(), b.k.size());
  for (size_t l = 0; l < a.k.size(); ++l) {
    ASSERT_TRUE(a.k[l].defined() && b.k[l].defined()) << what;
    EXPECT_TRUE(a.k[l].equal(b.k[l])) << what << " layer " << l << " keys";
    EXPECT_TRUE(a.v[l].equal(b.v[l])) << what << " layer " << l << " values";
    EXPECT_TRUE(a.pos[l].equal(b.pos[l])) << what << " layer " << l << " positions";
  }
  EXPECT_EQ(a.mem.payload_bytes, b.mem.payload_bytes) << what;
  EXPECT_EQ(a.mem.slots, b.mem.slots) << what;
}

TEST(SuiteScbench, MultiRequestLeavesTheSharedContextUnchanged) {
  Model m = Model::random(test::tiny_suite_config(258), 4);
  auto tok = make_byte_tokenizer(258);
  ScTask task = generate_kv_retrieval(1, 4, 3, 1);
  ScbenchParams p;
  p.mode = "multi_request";
  p.max_new_tokens = 6;
  p.chunk = 32;
  for (const std::string spec :
       {"full", "kivi(bits=2,group=32,residual=32)", "streaming(sink=4,window=64)",
        "snapkv(budget=128,window=16)", "h2o(budget=96)"}) {
    Views before;
    int queries = 0;
    ScbenchHooks h;
    h.after_context = [&](const KVCacheState& s, int64_t) { before = capture(s, 2); };
    h.after_query = [&](const KVCacheState& s, int64_t, int64_t turn) {
      expect_same(before, capture(s, 2), spec + " after query " + std::to_string(turn));
      ++queries;
    };
    nlohmann::json r = run_scbench(m, *tok, *make_method(spec), task, p, {}, h);
    EXPECT_EQ(queries, 3) << spec;
    EXPECT_EQ(r["turn_scores"].size(), 3u) << spec;
    EXPECT_EQ(r["mode"], "multi_request");
  }
}

TEST(SuiteScbench, MultiTurnAppendsGoldAnswersNotGeneratedOnes) {
  Model m = Model::random(test::tiny_suite_config(258), 5);
  auto tok = make_byte_tokenizer(258);
  ScTask task = generate_math_find(1, 20, 3, 2);
  ScbenchParams p;
  p.max_new_tokens = 5;
  std::vector<int64_t> seen;
  ScbenchHooks h;
  h.after_prompt = [&](const KVCacheState& s, int64_t, int64_t) {
    seen.push_back(s.memory().tokens_seen);
  };
  run_scbench(m, *tok, *make_method("full"), task, p, {}, h);
  const ScSample& x = task.samples[0];
  ASSERT_EQ(seen.size(), 3u);
  int64_t want =
      static_cast<int64_t>(tok->encode(x.context + "\n\n" + x.turns[0].input, true).size());
  EXPECT_EQ(seen[0], want);
  for (size_t t = 1; t < 3; ++t) {
    want += static_cast<int64_t>(
        tok->encode(x.turns[t - 1].answers[0] + "\n\n" + x.turns[t].input, false).size());
    EXPECT_EQ(seen[t], want) << "turn " << t;
  }
}

// Keys and queries scaled up so attention is peaked and SnapKV's votes depend on the query.
Model peaked_model() {
  Model m = Model::random(test::tiny_suite_config(258), 8);
  for (auto& L : m.mutable_weights().layers) {
    L.wq = L.wq * 30;
    L.wk = L.wk * 30;
  }
  return m;
}

// Context positions (< ctx_tokens) the state holds in layer 0, head 0.
std::vector<int64_t> kept_context(const KVCacheState& s, int64_t ctx_tokens) {
  torch::Tensor pos = s.view(0).pos[0][0];
  std::vector<int64_t> r;
  for (int64_t i = 0; i < pos.size(0); ++i)
    if (pos[i].item<int64_t>() < ctx_tokens) r.push_back(pos[i].item<int64_t>());
  return r;
}

TEST(SuiteScbench, SnapKVScoresItsFirstQueryAndNotLaterOnes) {
  ASSERT_NE(find_method("snapkv"), nullptr) << "snapkv is registered (methods/registry.cpp)";
  Model m = peaked_model();
  auto tok = make_byte_tokenizer(258);
  // One context, three different queries; the first query decides what SnapKV keeps.
  const std::string context =
      "alpha=1717, bravo=2828, charlie=3939, delta=4040, echo=5151, foxtrot=6262.";
  const std::vector<std::string> q = {
      "Which value has alpha? ", "What is the value of foxtrot here? ", "Give me charlie please: "};
  const int64_t ctx_tokens = static_cast<int64_t>(tok->encode(context, true).size());
  auto session = [&](std::vector<int> order) {
    ScTask t{"constructed", ScMetric::kSubstring, {{"c", context, {}}}};
    for (int i : order) t.samples[0].turns.push_back({q[static_cast<size_t>(i)], {"x"}});
    std::vector<std::vector<int64_t>> kept;
    ScbenchHooks h;
    h.after_prompt = [&](const KVCacheState& s, int64_t, int64_t) {
      kept.push_back(kept_context(s, ctx_tokens));
    };
    ScbenchParams p;
    p.max_new_tokens = 3;
    run_scbench(m, *tok, *make_method("snapkv(budget=48,window=16,pool=3)"), t, p, {}, h);
    return kept;
  };
  auto a = session({0, 1}), b = session({0, 2}), c = session({1, 0});
  ASSERT_EQ(a.size(), 2u);
  EXPECT_LT(static_cast<int64_t>(a[0].size()), ctx_tokens - 20) << "the context was compressed";
  // Later turns neither recompress nor change what the first query selected.
  EXPECT_EQ(a[1], a[0]);
  EXPECT_EQ(b[0], a[0]);
  EXPECT_EQ(b[1], a[0]);
  // A different first query selects differently: the selection is the first query's.
  EXPECT_NE(c[0], a[0]);
}

}  // namespace
}  // namespace kvb
