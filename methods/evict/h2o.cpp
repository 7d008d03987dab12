// `h2o(budget=N, recent=N/2)`: Heavy-Hitter Oracle (Zhang et al. 2023). Every token's attention
// is accumulated over all queries that saw it; when more than `budget` slots are held, the
// lowest-score slot outside the `recent` most recent tokens is evicted (after a long chunk: the
// `budget - recent` highest-score older slots are kept plus the recent ones).
//
// GQA: scores live per KV head (that is what is stored); a KV head's score for a token is the sum
// of the attention its G query heads gave the token (H2O's own code sums over heads of MHA).
#include "common/check.h"
#include "methods/evict/score_selector.h"
#include "methods/registry.h"

namespace kvb {
namespace {

// Held scores: 0 when appended, plus every attention weight the token receives.
class H2OState : public ScoreSelectorState {
 public:
  using ScoreSelectorState::ScoreSelectorState;
  bool wants_attention(int layer) const override { return true; }

 protected:
  torch::Tensor appended(int layer, const KVAppend& a, const SelectContext& ctx) override {
    return torch::zeros({a.k.size(0), a.k.size(1), a.k.size(2)},
                        a.k.options().dtype(torch::kFloat32));
  }

  torch::Tensor observed(int layer, const torch::Tensor& probs,  // [B, H_q, T, S]
                         const SelectContext& ctx) override {
    const int64_t b = probs.size(0), h = shape().n_head_kv, t = probs.size(2), s = probs.size(3);
    return probs.view({b, h, probs.size(1) / h, t, s}).sum({2, 3});  // [B, H_kv, S]
  }

  std::unique_ptr<ScoreSelectorState> copy() const override {
    return std::make_unique<H2OState>(*this);
  }
};

class H2OSelector : public ScoreSelector {
 public:
  explicit H2OSelector(const StageSpec& stage)
      : ScoreSelector(stage, {.budget = spec_int(stage, "budget"),
                              .recent = spec_int(stage, "recent"),
                              .when = ScoreRule::kOverBudget,
                              .held_scores = true}) {}
  std::unique_ptr<SelectorState> make_selector(const ModelShape& shape) const override {
    return std::make_unique<H2OState>(rule(), shape);
  }
};

}  // namespace

MethodEntry h2o_entry() {
  return {
      .name = "h2o",
      .family = "evict",
      .help =
          "H2O heavy hitters: attention accumulated per token (summed over the query heads of "
          "a KV group); over `budget` slots, evict the lowest-score token outside the "
          "`recent` window.",
      .params = {{"budget", "int", "", {}, 1, kMaxSpecTokens, "slots kept per KV head"},
                 {"recent",
                  "int",
                  "auto",
                  {},
                  0,
                  kMaxSpecTokens,
                  "most recent tokens always kept (auto: budget/2)"}},
      .make = SelectorFactory([](const StageSpec& s) { return std::make_unique<H2OSelector>(s); }),
      .finalize =
          [](const std::string& text, StageSpec& s) {
            if (s.params.at("recent") == "auto")
              s.params["recent"] = std::to_string(spec_int(s, "budget") / 2);
            if (spec_int(s, "recent") > spec_int(s, "budget"))
              stage_fail(text, s, "recent must not exceed budget");
          },
      .contract = {.examples = {"h2o(budget=128)", "h2o(budget=100,recent=10)"},
                   .view_tolerance = exact_view,
                   .lossless = {"h2o(budget=64)", "h2o(budget=37,recent=0)"},
                   .compressing = {"h2o(budget=12)"}},
  };
}

}  // namespace kvb
