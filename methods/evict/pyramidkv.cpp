// `pyramidkv(budget=N, beta=20, window=32, pool=7, pooling=max)`: PyramidKV (Cai et al. 2024,
// "Pyramidal Information Funneling"). SnapKV's one-shot compression at end_prefill — the last
// `window` prompt queries vote (methods/evict/window_votes.h: softmax attention summed over the
// window and the KV head's query group, pooled), each KV head keeps its top budget_l - window
// prompt tokens plus the window — with a budget per layer, budget_l, shrinking linearly from the
// bottom layer to the top (pyramid_layer_budgets(), methods/evict/pyramidkv.h: the top layer gets
// about (budget - window) / beta non-window slots, the bottom about twice SnapKV's), summing over
// the layers to exactly n_layers * budget, SnapKV's total at the same budget. A layer whose
// prompt has at most budget_l tokens keeps it whole; decode tokens are never evicted; without
// end_prefill (perplexity decode mode) nothing is compressed.
//
// Deviation from the authors' code: when the bottom layer's share exceeds the prompt
// (hi >= prompt - window) their code re-centres the pyramid on the prompt length; ours stays
// fixed by the shape (budgets are integers known from the spec and the shape, and promised), so
// such a layer keeps the whole prompt. Their lo may be 0 (B < beta); ours is at least 1, so every
// layer keeps at least one prompt token besides the window.
#include "methods/evict/pyramidkv.h"

#include <algorithm>
#include <numeric>

#include "common/check.h"
#include "methods/evict/window_votes.h"
#include "methods/registry.h"

namespace kvb {

std::vector<int64_t> pyramid_layer_budgets(int64_t n_layers, int64_t budget, int64_t window,
                                           int64_t beta) {
  KVB_CHECK(n_layers >= 1 && window >= 1 && budget > window && beta >= 1,
            "pyramidkv: bad budgets (layers ", n_layers, ", budget ", budget, ", window ", window,
            ", beta ", beta, ")");
  if (n_layers == 1) return {budget};
  const int64_t b = budget - window, lo = std::max<int64_t>(1, b / beta), hi = 2 * b - lo;
  const int64_t steps = n_layers - 1;
  std::vector<int64_t> n(static_cast<size_t>(n_layers)), frac(static_cast<size_t>(n_layers));
  int64_t sum = 0;
  for (int64_t l = 0; l < n_layers; ++l) {
    const int64_t num = hi * steps - l * (hi - lo);  // n_l * (L - 1), >= lo * (L - 1)
    n[static_cast<size_t>(l)] = num / steps;
    frac[static_cast<size_t>(l)] = num % steps;
    sum += num / steps;
  }
  std::vector<int64_t> order(static_cast<size_t>(n_layers));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) {
    return frac[static_cast<size_t>(x)] > frac[static_cast<size_t>(y)];
  });
  const int64_t leftover = n_layers * b - sum;  // the fractional parts add up to it exactly
  KVB_CHECK(leftover >= 0 && leftover < n_layers, "pyramidkv: leftover ", leftover);
  for (int64_t i = 0; i < leftover; ++i) ++n[static_cast<size_t>(order[static_cast<size_t>(i)])];
  for (int64_t& x : n) x += window;
  return n;
}

namespace {

class PyramidKVSelector : public ScoreSelector {
 public:
  explicit PyramidKVSelector(const StageSpec& stage)
      : ScoreSelector(stage, {.budget = spec_int(stage, "budget"),
                              .recent = spec_int(stage, "window"),
                              .when = ScoreRule::kEndPrefill,
                              .held_scores = false}),
        beta_(spec_int(stage, "beta")),
        pool_(spec_int(stage, "pool")),
        max_pool_(stage.params.at("pooling") == "max") {}
  std::vector<int64_t> layer_budgets(const ModelShape& shape) const override {
    return pyramid_layer_budgets(shape.n_layers, rule().budget, rule().recent, beta_);
  }
  std::unique_ptr<SelectorState> make_selector(const ModelShape& shape) const override {
    return std::make_unique<WindowVoteState>("pyramidkv", rule_for(shape), shape, pool_,
                                             max_pool_);
  }

 private:
  int64_t beta_, pool_;
  bool max_pool_;
};

}  // namespace

MethodEntry pyramidkv_entry() {
  return {
      .name = "pyramidkv",
      .family = "evict",
      .help =
          "PyramidKV: SnapKV's window vote with per-layer budgets shrinking linearly from the "
          "bottom layer to the top (top: about (budget-window)/beta prompt tokens besides the "
          "window); the layers' budgets add up to n_layers x budget, SnapKV's total. "
          "Compresses once (end of prefill).",
      .params =
          {{"budget",
            "int",
            "",
            {},
            2,
            kMaxSpecTokens,
            "slots kept per KV head after the prompt, on average over the layers"},
           {"beta",
            "int",
            "20",
            {},
            1,
            kMaxSpecGroup,
            "steepness: the top layer keeps (budget-window)/beta non-window slots (1: flat)"},
           {"window",
            "int",
            "32",
            {},
            1,
            kMaxSpecTokens,
            "observation window (last prompt tokens), kept in every layer"},
           {"pool", "int", "7", {}, 1, kMaxSpecGroup, "pooling kernel over the token axis (odd)"},
           {"pooling", "enum", "max", {"max", "avg"}, 0, 0, "pooling type"}},
      .make = SelectorFactory(
          [](const StageSpec& s) { return std::make_unique<PyramidKVSelector>(s); }),
      .finalize =
          [](const std::string& text, StageSpec& s) {
            if (spec_int(s, "window") >= spec_int(s, "budget"))
              stage_fail(text, s, "window must be smaller than budget");
            if (spec_int(s, "pool") % 2 == 0) stage_fail(text, s, "pool must be odd");
          },
      .contract = {.examples = {"pyramidkv(budget=128)",
                                "pyramidkv(beta=5,budget=100,pool=5,pooling=avg,window=8)"},
                   .view_tolerance = exact_view,
                   // 3 layers, prompt 30: budgets 95/64/33 and 40/40/40 (beta=1) keep it whole.
                   .lossless = {"pyramidkv(budget=64)", "pyramidkv(beta=1,budget=40,window=8)"},
                   .compressing = {"pyramidkv(budget=12,window=4)"}},
  };
}

}  // namespace kvb
