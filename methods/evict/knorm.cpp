// `knorm(budget=N, recent=0, sink=0)`: keep the keys of lowest L2 norm (Devoto et al. 2024, "A
// Simple and Effective L2 Norm-Based Strategy for KV Cache Compression"; kvpress's KnormPress
// scores -||k||). Low-norm keys draw high attention, so each KV head keeps its `budget` slots of
// lowest key norm; the score of a token is fixed when it is appended (the post-RoPE key as the
// model produced it, before any quantizing storage; RoPE keeps norms).
//
// Timing: continuous, like the paper's language-modelling runs — after every append, whenever
// more than `budget` slots are held (one over: the highest-norm slot goes), so the cache never
// holds more than `budget` slots and the method applies in perplexity decode mode too. Scores
// never change, so the slots kept are the same whatever the chunking: the `recent` latest tokens,
// the first `sink` tokens, and the lowest-norm `budget - sink - recent` of the others.
// Protected windows: none by default — neither the paper's code nor kvpress protects tokens
// (the paper finds attention sinks among the lowest-norm keys, so the rule keeps them anyway);
// `recent` and `sink` exist to compare with H2O/StreamingLLM-style budgets.
#include "methods/evict/score_selector.h"
#include "methods/registry.h"

namespace kvb {
namespace {

class KnormState : public ScoreSelectorState {
 public:
  using ScoreSelectorState::ScoreSelectorState;

 protected:
  torch::Tensor appended(int layer, const KVAppend& a, const SelectContext& ctx) override {
    return torch::linalg_vector_norm(a.k.to(torch::kFloat32), 2, {-1}).neg_();  // [B, H_kv, T]
  }
  std::unique_ptr<ScoreSelectorState> copy() const override {
    return std::make_unique<KnormState>(*this);
  }
};

class KnormSelector : public ScoreSelector {
 public:
  explicit KnormSelector(const StageSpec& stage)
      : ScoreSelector(stage, {.budget = spec_int(stage, "budget"),
                              .sink = spec_int(stage, "sink"),
                              .recent = spec_int(stage, "recent"),
                              .when = ScoreRule::kOverBudget,
                              .held_scores = true}) {}
  std::unique_ptr<SelectorState> make_selector(const ModelShape& shape) const override {
    return std::make_unique<KnormState>(rule(), shape);
  }
};

}  // namespace

MethodEntry knorm_entry() {
  return {
      .name = "knorm",
      .family = "evict",
      .help =
          "K-norm (Devoto et al. 2024): each KV head keeps the `budget` keys of lowest L2 "
          "norm, evicting the highest-norm key whenever it holds more (continuously, also "
          "while decoding); the `recent` latest and first `sink` tokens are always kept "
          "(none by default, as in the paper).",
      .params = {{"budget", "int", "", {}, 1, kMaxSpecTokens, "slots kept per KV head"},
                 {"recent", "int", "0", {}, 0, kMaxSpecTokens, "most recent tokens always kept"},
                 {"sink", "int", "0", {}, 0, kMaxSpecTokens, "first tokens always kept"}},
      .make =
          SelectorFactory([](const StageSpec& s) { return std::make_unique<KnormSelector>(s); }),
      .finalize =
          [](const std::string& text, StageSpec& s) {
            if (spec_int(s, "recent") + spec_int(s, "sink") > spec_int(s, "budget"))
              stage_fail(text, s, "recent + sink must not exceed budget");
          },
      .contract = {.examples = {"knorm(budget=128)", "knorm(budget=100,recent=10,sink=4)"},
                   .view_tolerance = exact_view,
                   .lossless = {"knorm(budget=37)"},
                   .compressing = {"knorm(budget=12)"}},
  };
}

}  // namespace kvb
