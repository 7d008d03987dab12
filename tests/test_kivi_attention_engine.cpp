// The engine attending through a method's fused attention (KVCacheState::attend; KIVI's packed
// cache, kernels/cpu/kivi_attention.h): the same logits as through the dequantized view, and
// another device refused naming the method.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "common/check.h"
#include "harness/model/model.h"
#include "kernels/cpu/kivi_attention.h"
#include "methods/registry.h"
#include "tests/methods_test_util.h"

namespace kvb {
namespace {

// Sets KVB_FUSED_ATTENTION for the scope, restoring what was there.
class FusedEnv {
 public:
  explicit FusedEnv(const char* value) {
    if (const char* old = std::getenv("KVB_FUSED_ATTENTION")) old_ = old, had_ = true;
    if (value)
      setenv("KVB_FUSED_ATTENTION", value, 1);
    else
      unsetenv("KVB_FUSED_ATTENTION");
  }
  ~FusedEnv() {
    if (had_)
      setenv("KVB_FUSED_ATTENTION", old_.c_str(), 1);
    else
      unsetenv("KVB_FUSED_ATTENTION");
  }

 private:
  std::string old_;
  bool had_ = false;
};

struct Logits {
  torch::Tensor x;
  int64_t fused_calls = 0;
};

Logits run(const Model& m, const std::string& spec, const torch::Tensor& ids, int64_t prompt,
           const char* fused) {
  FusedEnv env(fused);
  auto method = make_method(spec);
  auto state = method->make_state(m.shape());
  const int64_t before = kernels::kivi_decode_attention_calls();
  Logits l;
  l.x = test::run_logits(m, *state, ids, prompt, 8);
  l.fused_calls = kernels::kivi_decode_attention_calls() - before;
  return l;
}

// Logits with the fused path on and off agree within 1e-4 (the fused kernel attends as the
// dequantized view does); the path was taken (kernel calls counted) and makes a difference
// worth checking (the method's logits differ from the full cache's by far more than 1e-4).
TEST(KiviAttentionEngine, SameLogitsWithTheFusedPathOnAndOff) {
  struct ModelCase {
    int64_t heads, kv_heads, head_dim;
  };
  for (const ModelCase mc : {ModelCase{4, 2, 16}, ModelCase{4, 2, 32}, ModelCase{6, 2, 64}}) {
    ModelConfig cfg = test::tiny_model_config();
    cfg.n_heads = mc.heads;
    cfg.n_kv_heads = mc.kv_heads;
    cfg.head_dim = mc.head_dim;
    const Model m = Model::random(cfg, 11);
    auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
    const torch::Tensor ids = torch::randint(0, cfg.vocab_size, {1, 72}, gen);
    const torch::Tensor full = run(m, "full", ids, 16, nullptr).x;
    for (const std::string spec :
         {"kivi(bits=2,group=8,residual=16)", "kivi(bits=4,group=8,residual=16)",
          "kivi(bits=2,group=16,residual=32)",
          "streaming(sink=4,window=40)+kivi(bits=2,group=8,residual=16)"}) {
      SCOPED_TRACE(spec + " heads " + std::to_string(mc.heads) + "/" + std::to_string(mc.kv_heads) +
                   " head_dim " + std::to_string(mc.head_dim));
      const Logits on = run(m, spec, ids, 16, nullptr);
      const Logits off = run(m, spec, ids, 16, "0");
      EXPECT_GT(on.fused_calls, 0);
      EXPECT_EQ(off.fused_calls, 0);
      const double diff = (on.x - off.x).abs().max().item<double>();
      EXPECT_LE(diff, 1e-4) << "fused vs dequantized view";
      EXPECT_GT((off.x - full).abs().max().item<double>(), 20 * 1e-4)
          << "the method barely changes the logits: the comparison would prove little";
    }
  }
}

// A selector that masks slots per query (Quest) keeps its chain on the dense view: the fused
// kernel would read every slot.
TEST(KiviAttentionEngine, QueryAwareChainsReadTheView) {
  ModelConfig cfg = test::tiny_model_config();
  cfg.head_dim = 32;
  const Model m = Model::random(cfg, 12);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(6);
  const torch::Tensor ids = torch::randint(0, cfg.vocab_size, {1, 64}, gen);
  const std::string spec = "quest(page=4,budget=16)+kivi(bits=2,group=8,residual=16)";
  const Logits on = run(m, spec, ids, 16, nullptr);
  const Logits off = run(m, spec, ids, 16, "0");
  EXPECT_EQ(on.fused_calls, 0);
  EXPECT_TRUE(torch::equal(on.x, off.x));
}

TEST(KiviAttentionEngine, StoreRefusesAnotherDeviceNamingTheMethod) {
  const ModelShape shape = test::method_shape(1, 4, 2, 32);
  auto method = make_method("kivi(bits=2)");
  auto state = method->make_state(shape);
  torch::Tensor q = torch::empty({1, 4, 1, 32}, torch::TensorOptions().device(torch::kMeta));
  try {
    state->attend(0, q, 0.125);
    FAIL() << "a meta-device query was accepted";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("kivi(bits=2"), std::string::npos) << what;
    EXPECT_NE(what.find("meta"), std::string::npos) << what;
    EXPECT_EQ(what.find('\n'), std::string::npos) << what;
  }
  torch::Tensor k = torch::empty({1, 2, 1, 32}, torch::TensorOptions().device(torch::kMeta));
  torch::Tensor pos = torch::zeros({1}, torch::kLong);
  EXPECT_THROW(state->append(0, KVAppend{k, k, k, pos, q}), Error);
}

}  // namespace
}  // namespace kvb
