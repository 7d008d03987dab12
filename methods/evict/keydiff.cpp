// `keydiff(budget=N)`: KeyDiff (Park et al. 2025, "KeyDiff: Key Similarity-Based KV Cache
// Eviction"). Keys that look like every other key draw little distinctive attention, so each KV
// head keeps the `budget` slots whose keys are least similar to the head's mean key direction:
//     anchor = mean over held slots of k / ||k||,   score(k) = -cos(k, anchor)
// (kvpress's KeyDiffPress: the anchor is the mean of the L2-normalised keys; norms use eps 1e-12
// as F.normalize / F.cosine_similarity do). Scores are computed at each decision from the keys
// the store holds (post-RoPE; dequantized when the storage quantizes), over all held slots
// including the chunk just appended, since the anchor moves as keys come and go.
//
// Timing (our choice; the paper evicts block by block while the prompt streams in, kvpress once
// after prefill): continuous, ScoreRule::kOverBudget — after every append that leaves more than
// `budget` slots (one over: the most anchor-like slot goes), so the cache never holds more than
// `budget` slots and the method also acts in perplexity decode mode. No protected tokens, as in
// kvpress. Memory: none beyond the store (nothing is held between decisions).
#include "methods/evict/score_selector.h"
#include "methods/registry.h"

namespace kvb {
namespace {

class KeyDiffState : public ScoreSelectorState {
 public:
  using ScoreSelectorState::ScoreSelectorState;

 protected:
  torch::Tensor appended(int layer, const KVAppend& a, const SelectContext& ctx) override {
    return {};
  }

  torch::Tensor decision_scores(int layer, const SelectContext& ctx,
                                const torch::Tensor& protect) override {
    torch::Tensor k = ctx.store.view(layer).k.to(torch::kFloat32);  // [B, H_kv, S, D]
    torch::Tensor norm = torch::linalg_vector_norm(k, 2, {-1}, true).clamp_min(1e-12);
    torch::Tensor anchor = (k / norm).mean(2, true);  // [B, H_kv, 1, D]
    torch::Tensor anorm = torch::linalg_vector_norm(anchor, 2, {-1}, true).clamp_min(1e-12);
    return (k / norm * (anchor / anorm)).sum(-1).neg_();  // [B, H_kv, S]
  }

  std::unique_ptr<ScoreSelectorState> copy() const override {
    return std::make_unique<KeyDiffState>(*this);
  }
};

class KeyDiffSelector : public ScoreSelector {
 public:
  explicit KeyDiffSelector(const StageSpec& stage)
      : ScoreSelector(stage, {.budget = spec_int(stage, "budget"),
                              .when = ScoreRule::kOverBudget,
                              .held_scores = false}) {}
  std::unique_ptr<SelectorState> make_selector(const ModelShape& shape) const override {
    return std::make_unique<KeyDiffState>(rule(), shape);
  }
};

}  // namespace

MethodEntry keydiff_entry() {
  return {
      .name = "keydiff",
      .family = "evict",
      .help =
          "KeyDiff: each KV head keeps the `budget` keys least similar (cosine) to the mean of "
          "its held normalised keys, evicting whenever it holds more (continuously).",
      .params = {{"budget", "int", "", {}, 1, kMaxSpecTokens, "slots kept per KV head"}},
      .make =
          SelectorFactory([](const StageSpec& s) { return std::make_unique<KeyDiffSelector>(s); }),
      .finalize = nullptr,
      .contract = {.examples = {"keydiff(budget=128)"},
                   .view_tolerance = exact_view,
                   .lossless = {"keydiff(budget=37)"},
                   .compressing = {"keydiff(budget=12)"}},
  };
}

}  // namespace kvb
