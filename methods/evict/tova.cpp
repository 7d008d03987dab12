// `tova(budget=N)`: Token Omission Via Attention (Oren et al. 2024, "Transformers are Multi-State
// RNNs"). Each decode step, once more than `budget` slots are held, the slot with the lowest
// attention weight from the CURRENT query (the last query of the chunk) is evicted; only that
// query counts — earlier queries' attention is forgotten (ScoreRule::replace_observed). After a
// multi-token chunk that leaves more than `budget` slots, the top `budget` slots by the chunk's
// last query are kept. The newest token competes like any other (no protected window, as in the
// paper).
//
// GQA: the score of a slot in a KV head is the mean of the current query's attention over the G
// query heads of the group, and each KV head decides for itself. Deviation: the TOVA paper
// averages over all heads of a layer and drops the same token from every head; we keep
// per-KV-head decisions (what the store holds per head), as the issue asks.
// Memory: the held scores (4 bytes per slot) — the current query's weights.
#include "methods/evict/score_selector.h"
#include "methods/registry.h"

namespace kvb {
namespace {

class TovaState : public ScoreSelectorState {
 public:
  using ScoreSelectorState::ScoreSelectorState;
  bool wants_attention(int layer) const override { return true; }

 protected:
  torch::Tensor appended(int layer, const KVAppend& a, const SelectContext& ctx) override {
    return torch::zeros({a.k.size(0), a.k.size(1), a.k.size(2)},
                        a.k.options().dtype(torch::kFloat32));
  }

  // The last query's weights, averaged over the group: [B, H_q, T, S] -> [B, H_kv, S].
  torch::Tensor observed(int layer, const torch::Tensor& probs, const SelectContext& ctx) override {
    const int64_t b = probs.size(0), h = shape().n_head_kv, t = probs.size(2), s = probs.size(3);
    torch::Tensor last = probs.select(2, t - 1).to(torch::kFloat32);  // [B, H_q, S]
    return last.reshape({b, h, probs.size(1) / h, s}).mean(2);
  }

  std::unique_ptr<ScoreSelectorState> copy() const override {
    return std::make_unique<TovaState>(*this);
  }
};

class TovaSelector : public ScoreSelector {
 public:
  explicit TovaSelector(const StageSpec& stage)
      : ScoreSelector(stage, {.budget = spec_int(stage, "budget"),
                              .when = ScoreRule::kOverBudget,
                              .held_scores = true,
                              .replace_observed = true}) {}
  std::unique_ptr<SelectorState> make_selector(const ModelShape& shape) const override {
    return std::make_unique<TovaState>(rule(), shape);
  }
};

}  // namespace

MethodEntry tova_entry() {
  return {
      .name = "tova",
      .family = "evict",
      .help =
          "TOVA: over `budget` slots, evict the slot with the lowest attention from the current "
          "(last) query, averaged over the query heads of a KV group (per-KV-head decisions; "
          "the paper averages over all heads of a layer).",
      .params = {{"budget", "int", "", {}, 1, kMaxSpecTokens, "slots kept per KV head"}},
      .make = SelectorFactory([](const StageSpec& s) { return std::make_unique<TovaSelector>(s); }),
      .finalize = nullptr,
      .contract = {.examples = {"tova(budget=128)"},
                   .view_tolerance = exact_view,
                   .lossless = {"tova(budget=37)"},
                   .compressing = {"tova(budget=12)"}},
  };
}

}  // namespace kvb
