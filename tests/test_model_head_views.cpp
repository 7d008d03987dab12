// Head-wise caches (AdaKV, DuoAttention, RazorAttention: methods/head_split_store.h) are read
// head by head (KVCacheState::read_view_heads), without padding every head to the longest. That
// path must attend exactly as the padded dense view does: the same state read both ways gives the
// same logits.
#include <gtest/gtest.h>

#include "harness/model/model.h"
#include "methods/registry.h"
#include "tests/methods_test_util.h"

namespace kvb {
namespace {

// Forwards everything to the state it wraps but offers no per-head views, so the model reads
// the padded dense view.
class DenseOnly : public KVCacheState {
 public:
  explicit DenseOnly(std::unique_ptr<KVCacheState> s) : s_(std::move(s)) {}
  void append(int layer, const KVAppend& a) override { s_->append(layer, a); }
  bool wants_attention(int layer) const override { return s_->wants_attention(layer); }
  void observe(int layer, const torch::Tensor& p) override { s_->observe(layer, p); }
  KVView view(int layer) const override { return s_->view(layer); }
  KVView read_view(int layer, const torch::Tensor& q) const override {
    return s_->read_view(layer, q);
  }
  void end_prefill() override { s_->end_prefill(); }
  MemoryUse memory() const override { return s_->memory(); }
  MemoryUse memory(int layer) const override { return s_->memory(layer); }
  std::unique_ptr<KVCacheState> clone() const override {
    return std::make_unique<DenseOnly>(s_->clone());
  }
  const KVCacheState& inner() const { return *s_; }

 private:
  std::unique_ptr<KVCacheState> s_;
};

TEST(ModelHeadViews, PerHeadReadingMatchesThePaddedDenseView) {
  const ModelConfig c = test::tiny_model_config();
  Model model = Model::random(c, 5);
  torch::Tensor ids = torch::randint(0, c.vocab_size, {1, 90}, torch::kLong);
  // AdaKV's split between heads depends on the scores, so whether its heads end up uneven can
  // change with the CPU's float rounding; the DuoAttention and RazorAttention specs are uneven by
  // construction (fixed roles), so the padded path is always compared for them.
  struct Case {
    const char* spec;
    bool surely_uneven;
  };
  for (const Case& tc : {Case{"adakv(budget=24,window=4)", false},
                         Case{"duoattention(sink=2,recent=10,roles=rs)", true},
                         Case{"razorattention(sink=2,recent=10,roles=sr)", true},
                         Case{"adakv(budget=24,window=4)+kivi(bits=4,group=16,residual=16)", false},
                         Case{"duoattention(sink=2,recent=10,roles=sr)+kivi(bits=4,group=16,residual=16)",
                              true}}) {
    SCOPED_TRACE(tc.spec);
    auto m = make_method(tc.spec);
    auto heads = m->make_state(model.shape());
    DenseOnly dense(m->make_state(model.shape()));
    torch::Tensor a = test::run_logits(model, *heads, ids, 60, 16);
    torch::Tensor b = test::run_logits(model, dense, ids, 60, 16);
    EXPECT_LT((a - b).abs().max().item<double>(), 1e-5);
    EXPECT_EQ(heads->memory().payload_bytes, dense.memory().payload_bytes);
    // Per layer: the state offers one view per KV head exactly when the dense view pads (heads
    // of different lengths or a compensation slot), and none when it does not.
    int uneven_layers = 0;
    for (int layer = 0; layer < model.shape().n_layers; ++layer) {
      const bool padded = dense.inner().view(layer).logit_bias.defined();
      const size_t n = heads->read_view_heads(layer, torch::Tensor()).size();
      EXPECT_EQ(n, padded ? static_cast<size_t>(model.shape().n_head_kv) : 0u) << "layer " << layer;
      uneven_layers += padded ? 1 : 0;
    }
    if (tc.surely_uneven) {
      EXPECT_EQ(uneven_layers, model.shape().n_layers) << "fixed roles must leave every layer uneven";
    }
  }
}

}  // namespace
}  // namespace kvb
