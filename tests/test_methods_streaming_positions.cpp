// StreamingLLM's position re-assignment, `streaming(..., positions=cache)`: keys held before
// RoPE and rotated by the model at their slot index, queries at the position after the cache.
#include <gtest/gtest.h>

#include <vector>

#include "common/check.h"
#include "harness/model/model.h"
#include "methods/registry.h"
#include "tests/methods_test_util.h"

namespace kvb {
namespace {

TEST(MethodStreamingPositions, CanonicalSpecLeavesTheDefaultOut) {
  // Specs recorded before the parameter existed keep their canonical form.
  EXPECT_EQ(make_method("streaming(window=1020)")->spec(), "streaming(sink=4,window=1020)");
  EXPECT_EQ(make_method("streaming(window=1020,positions=original)")->spec(),
            "streaming(sink=4,window=1020)");
  const std::string cache = make_method("streaming(sink=4,window=1020,positions=cache)")->spec();
  EXPECT_EQ(cache, "streaming(positions=cache,sink=4,window=1020)");
  EXPECT_EQ(make_method(cache)->spec(), cache);
  EXPECT_EQ(make_method("streaming(window=8,positions=cache)+kivi(bits=4)")->spec(),
            "streaming(positions=cache,sink=4,window=8)+kivi(bits=4,group=32,residual=128)");
  EXPECT_THROW(make_method("streaming(window=8,positions=rope)"), InputError);
}

TEST(MethodStreamingPositions, TheStoreHoldsKeysBeforeRope) {
  const ModelShape shape = test::method_shape(1, 2, 1, 4);
  torch::Tensor k = torch::randn({1, 1, 6, 4}), k_pre = torch::randn({1, 1, 6, 4});
  torch::Tensor v = torch::randn({1, 1, 6, 4}), q = torch::randn({1, 2, 6, 4});
  for (const char* spec :
       {"streaming(sink=1,window=3,positions=cache)", "streaming(sink=1,window=3)"}) {
    SCOPED_TRACE(spec);
    const bool in_cache = std::string(spec).find("cache") != std::string::npos;
    auto st = make_method(spec)->make_state(shape);
    st->append(0, KVAppend{k, k_pre, v, torch::arange(6), q});
    KVView view = st->view(0);
    ASSERT_EQ(view.slots(), 4);
    // Slots: the sink (position 0) and the window (3, 4, 5).
    torch::Tensor idx = torch::tensor(std::vector<int64_t>{0, 3, 4, 5});
    torch::Tensor want = (in_cache ? k_pre : k).index_select(2, idx);
    EXPECT_TRUE(torch::equal(view.k, want));
    EXPECT_TRUE(torch::equal(view.pos[0][0], idx));  // source positions still
    if (in_cache) {
      ASSERT_TRUE(st->rope_positions_from_cache(0).has_value());
      EXPECT_EQ(*st->rope_positions_from_cache(0), 4);  // the next token's position
    } else {
      EXPECT_FALSE(st->rope_positions_from_cache(0).has_value());
    }
  }
}

TEST(MethodStreamingPositions, LogitsEqualTheFullCacheWhileNothingIsEvicted) {
  const ModelConfig c = test::tiny_model_config();
  Model model = Model::random(c, 8);
  torch::Tensor ids = torch::randint(0, c.vocab_size, {1, 40}, torch::kLong);
  for (int64_t chunk : {16, 1}) {
    auto full = make_method("full")->make_state(model.shape());
    auto st = make_method("streaming(window=60,positions=cache)")->make_state(model.shape());
    torch::Tensor ref = test::run_logits(model, *full, ids, 24, chunk);
    torch::Tensor got = test::run_logits(model, *st, ids, 24, chunk);
    EXPECT_LT((got - ref).abs().max().item<double>(), 1e-5) << "chunk " << chunk;
  }
}

// After eviction the view's keys sit at positions 0..S-1 and the query at S. In a one-layer model
// a token's key and value depend on the token alone, so the next logits equal those of the full
// cache fed only the kept tokens (then the new one) at positions 0..S.
TEST(MethodStreamingPositions, AfterEvictionTheCacheAttendsAtPositionsZeroToS) {
  ModelConfig c = test::tiny_model_config();
  c.n_layers = 1;
  Model model = Model::random(c, 12);
  c10::InferenceMode guard;
  const int64_t n = 30, sink = 2, window = 7;
  torch::Tensor ids = torch::randint(0, c.vocab_size, {1, n}, torch::kLong);
  auto st = make_method("streaming(sink=2,window=7,positions=cache)")->make_state(model.shape());
  for (int64_t i = 0; i < n; ++i) {
    torch::Tensor got = model.forward(ids.narrow(1, i, 1), torch::arange(i, i + 1), *st)[0];
    // Held before this token: the sinks and the last `window` tokens before it.
    std::vector<int64_t> kept;
    for (int64_t j = 0; j < i; ++j)
      if (j < sink || j >= i - window) kept.push_back(j);
    kept.push_back(i);
    torch::Tensor sub = ids.index_select(1, torch::tensor(kept));
    const int64_t m = static_cast<int64_t>(kept.size());
    auto full = make_method("full")->make_state(model.shape());
    torch::Tensor want = model.forward(sub, torch::arange(m), *full)[0];
    EXPECT_LT((got - want).abs().max().item<double>(), 1e-5) << "token " << i;
    EXPECT_EQ(*st->rope_positions_from_cache(0), std::min<int64_t>(i + 1, sink + window));
  }
  // With original positions the same stream differs once tokens were evicted.
  auto orig = make_method("streaming(sink=2,window=7)")->make_state(model.shape());
  torch::Tensor last;
  for (int64_t i = 0; i < n; ++i)
    last = model.forward(ids.narrow(1, i, 1), torch::arange(i, i + 1), *orig)[0];
  std::vector<int64_t> kept = {0, 1};
  for (int64_t j = n - 1 - window; j < n; ++j) kept.push_back(j);
  auto full = make_method("full")->make_state(model.shape());
  torch::Tensor shifted = model.forward(ids.index_select(1, torch::tensor(kept)),
                                        torch::arange(static_cast<int64_t>(kept.size())), *full)[0];
  EXPECT_GT((last - shifted).abs().max().item<double>(), 1e-4);
}

}  // namespace
}  // namespace kvb
