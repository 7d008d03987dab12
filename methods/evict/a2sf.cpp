// `a2sf(budget=N, forget=0.3, recent=N/2)`: Accumulative Attention Score with Forgetting factor
// (Jo & Shin 2024). Like H2O, but older attention fades: after each query (each token, whether
// in a prefill chunk or decoding) every held slot's score becomes
//     score <- forget * score + a,
// a = the attention weight that query gave the slot (0 for slots after it in the chunk). A chunk
// of T queries applies this T times: score <- forget^T * score + sum_t forget^(T-1-t) * a_t
// (exactly the per-query recursion). Over `budget` slots, the lowest-score slot outside the
// `recent` most recent tokens is evicted (after a long chunk: the top `budget - recent` older
// slots by score are kept plus the recent ones). forget = 1 is H2O's accumulation.
//
// GQA: a KV head's attention from a query is the sum over its G query heads (H2O's convention;
// the paper's models are MHA). Factor: a float in (0, 1]; the default 0.3 lies in the range the
// paper reports as best (about 0.1-0.4; the authors tune it per model/task). The recent window
// (default budget/2) follows the H2O-style recent + selected split A2SF's code uses.
// Memory: the held scores (4 bytes per slot).
#include <cmath>

#include "methods/evict/score_selector.h"
#include "methods/registry.h"

namespace kvb {
namespace {

class A2SFState : public ScoreSelectorState {
 public:
  A2SFState(const ScoreRule& rule, const ModelShape& shape, double forget)
      : ScoreSelectorState(rule, shape), forget_(forget) {}
  bool wants_attention(int layer) const override { return true; }

 protected:
  torch::Tensor appended(int layer, const KVAppend& a, const SelectContext& ctx) override {
    return torch::zeros({a.k.size(0), a.k.size(1), a.k.size(2)},
                        a.k.options().dtype(torch::kFloat32));
  }

  // The decayed scores (replacing the held ones): [B, H_q, T, S] -> [B, H_kv, S].
  torch::Tensor observed(int layer, const torch::Tensor& probs, const SelectContext& ctx) override {
    const int64_t b = probs.size(0), h = shape().n_head_kv, t = probs.size(2), s = probs.size(3);
    torch::Tensor a = probs.to(torch::kFloat32).view({b, h, probs.size(1) / h, t, s}).sum(2);
    // forget^(T-1-t) per query t: [T]
    torch::Tensor w = torch::pow(torch::full({t}, forget_, torch::kFloat64),
                                 torch::arange(t - 1, -1, -1, torch::kFloat64))
                          .to(torch::kFloat32)
                          .to(a.device());
    torch::Tensor added = (a * w.view({1, 1, t, 1})).sum(2);  // [B, H_kv, S]
    return held_scores(layer) * static_cast<float>(std::pow(forget_, static_cast<double>(t))) +
           added;
  }

  std::unique_ptr<ScoreSelectorState> copy() const override {
    return std::make_unique<A2SFState>(*this);
  }

 private:
  double forget_;
};

class A2SFSelector : public ScoreSelector {
 public:
  explicit A2SFSelector(const StageSpec& stage)
      : ScoreSelector(stage, {.budget = spec_int(stage, "budget"),
                              .recent = spec_int(stage, "recent"),
                              .when = ScoreRule::kOverBudget,
                              .held_scores = true,
                              .replace_observed = true}),
        forget_(spec_float(stage, "forget")) {}
  std::unique_ptr<SelectorState> make_selector(const ModelShape& shape) const override {
    return std::make_unique<A2SFState>(rule(), shape, forget_);
  }

 private:
  double forget_;
};

}  // namespace

MethodEntry a2sf_entry() {
  return {
      .name = "a2sf",
      .family = "evict",
      .help =
          "A2SF: H2O with a forgetting factor; after every query each slot's score becomes "
          "forget*score + the attention it got (summed over a KV group's query heads); over "
          "`budget` slots, evict the lowest-score token outside the `recent` window.",
      .params = {{"budget", "int", "", {}, 1, kMaxSpecTokens, "slots kept per KV head"},
                 {"forget",
                  "float",
                  "0.3",
                  {},
                  0,
                  1,
                  "forgetting factor in (0, 1] (1 = H2O's accumulation)"},
                 {"recent",
                  "int",
                  "auto",
                  {},
                  0,
                  kMaxSpecTokens,
                  "most recent tokens always kept (auto: budget/2)"}},
      .make = SelectorFactory([](const StageSpec& s) { return std::make_unique<A2SFSelector>(s); }),
      .finalize =
          [](const std::string& text, StageSpec& s) {
            if (s.params.at("recent") == "auto")
              s.params["recent"] = std::to_string(spec_int(s, "budget") / 2);
            if (spec_int(s, "recent") > spec_int(s, "budget"))
              stage_fail(text, s, "recent must not exceed budget");
            if (!(spec_float(s, "forget") > 0)) stage_fail(text, s, "forget must be above 0");
          },
      .contract = {.examples = {"a2sf(budget=128)", "a2sf(budget=100,forget=0.9,recent=10)"},
                   .view_tolerance = exact_view,
                   .lossless = {"a2sf(budget=37,recent=0)"},
                   .compressing = {"a2sf(budget=12)"}},
  };
}

}  // namespace kvb
