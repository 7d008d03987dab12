// The engine attending through the fused attention of the `int` and `kvquant` states
// (KVCacheState::attend; kernels/cpu/quant_attention.h): the same logits as through the
// dequantized view (KVB_FUSED_ATTENTION=0), the path taken (kernel calls counted), kvquant with
// pre-RoPE keys left on the view, and another device refused naming the method.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "common/check.h"
#include "harness/model/model.h"
#include "kernels/cpu/quant_attention.h"
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

int64_t calls() {
  return kernels::int_decode_attention_calls() + kernels::kvquant_decode_attention_calls();
}

Logits run(const Model& m, const std::string& spec, const torch::Tensor& ids, int64_t prompt,
           const char* fused) {
  FusedEnv env(fused);
  auto method = make_method(spec);
  auto state = method->make_state(m.shape());
  const int64_t before = calls();
  Logits l;
  l.x = test::run_logits(m, *state, ids, prompt, 8);
  l.fused_calls = calls() - before;
  return l;
}

// Logits with the fused path on and off agree within 1e-4; the path was taken and the method
// changes the logits by far more than that (so the comparison proves something).
TEST(QuantAttentionEngine, SameLogitsWithTheFusedPathOnAndOff) {
  struct ModelCase {
    int64_t heads, kv_heads, head_dim;
  };
  for (const ModelCase mc : {ModelCase{4, 2, 16}, ModelCase{4, 4, 32}, ModelCase{6, 2, 64}}) {
    ModelConfig cfg = test::tiny_model_config();
    cfg.n_heads = mc.heads;
    cfg.n_kv_heads = mc.kv_heads;
    cfg.head_dim = mc.head_dim;
    const Model m = Model::random(cfg, 21);
    auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
    const torch::Tensor ids = torch::randint(0, cfg.vocab_size, {1, 56}, gen);
    const torch::Tensor full = run(m, "full", ids, 16, nullptr).x;
    for (const std::string spec :
         {"int(bits=2,group=16)", "int(bits=4,group=8)", "int(bits=8)",
          "kvquant(bits=2,calib=prompt,pre_rope=false,outliers=0.05,sink=1)",
          "kvquant(bits=3,calib=prompt,pre_rope=false,sink=0)",
          "kvquant(bits=4,calib=prompt,pre_rope=false,outliers=0.1,sink=2)",
          "streaming(sink=4,window=40)+int(bits=2,group=16)"}) {
      SCOPED_TRACE(spec + " heads " + std::to_string(mc.heads) + "/" +
                   std::to_string(mc.kv_heads) + " head_dim " + std::to_string(mc.head_dim));
      const Logits on = run(m, spec, ids, 16, nullptr);
      const Logits off = run(m, spec, ids, 16, "0");
      EXPECT_GT(on.fused_calls, 0);
      EXPECT_EQ(off.fused_calls, 0);
      EXPECT_LE((on.x - off.x).abs().max().item<double>(), 1e-4) << "fused vs dequantized view";
      if (spec != "int(bits=8)") {
        EXPECT_GT((off.x - full).abs().max().item<double>(), 20 * 1e-4)
            << "the method barely changes the logits: the comparison would prove little";
      }
    }
  }
}

// KVQuant's default keeps keys before RoPE: the fused kernel cannot rotate each slot, so the
// state returns nullopt and the engine reads the view; after a chain dropped slots (sinks no
// longer the first slots by construction) likewise.
TEST(QuantAttentionEngine, KVQuantPreRopeAndDroppedSlotsReadTheView) {
  ModelConfig cfg = test::tiny_model_config();
  cfg.head_dim = 32;
  const Model m = Model::random(cfg, 22);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(8);
  const torch::Tensor ids = torch::randint(0, cfg.vocab_size, {1, 48}, gen);
  for (const std::string spec :
       {"kvquant(bits=3,calib=prompt)", "h2o(budget=24)+kvquant(bits=3,calib=prompt,sink=2,"
                                        "pre_rope=false)"}) {
    SCOPED_TRACE(spec);
    const Logits on = run(m, spec, ids, 16, nullptr);
    const Logits off = run(m, spec, ids, 16, "0");
    if (spec.find("pre_rope=false") == std::string::npos) {
      EXPECT_EQ(on.fused_calls, 0);
    }
    EXPECT_LE((on.x - off.x).abs().max().item<double>(), 1e-4);
  }
}

TEST(QuantAttentionEngine, StoresRefuseAnotherDeviceNamingTheMethod) {
  const ModelShape shape = test::method_shape(1, 4, 2, 32);
  for (const std::string spec : {"int(bits=4)", "kvquant(bits=3,calib=prompt,pre_rope=false)"}) {
    auto state = make_method(spec)->make_state(shape);
    torch::Tensor q = torch::empty({1, 4, 1, 32}, torch::TensorOptions().device(torch::kMeta));
    try {
      state->attend(0, q, 0.125);
      FAIL() << spec << ": a meta-device query was accepted";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(spec.substr(0, spec.find('('))), std::string::npos) << what;
      EXPECT_NE(what.find("meta"), std::string::npos) << what;
      EXPECT_EQ(what.find('\n'), std::string::npos) << what;
    }
  }
}

}  // namespace
}  // namespace kvb
