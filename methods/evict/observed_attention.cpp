// `observed_attention(budget=N)`: kvpress's ObservedAttentionPress — a one-shot H2O. While the
// prompt goes in, every slot accumulates the attention weights all prompt queries give it
// (summed over queries and over the G query heads of its KV group). At end_prefill each KV head
// keeps its `budget` slots of highest
//     score = sum / (G * n_seen),  n_seen = last prompt position - position + 1,
// the mean attention per query head over the queries that could see the token (causal). This
// normalisation is kvpress's (it divides the summed attention by the number of queries in the
// sum, arange(n, 0, -1), then averages over the group); without it early tokens win by having
// been seen more often. Decode tokens are never evicted (and not scored: the selector stops
// asking for attention after its decision). Prompts of at most `budget` tokens are kept whole;
// without end_prefill (perplexity decode mode) nothing is compressed.
// Memory: the held scores (4 bytes per slot, also for the slots kept after the decision).
#include "methods/evict/score_selector.h"
#include "methods/registry.h"

namespace kvb {
namespace {

class ObservedAttentionState : public ScoreSelectorState {
 public:
  using ScoreSelectorState::ScoreSelectorState;
  bool wants_attention(int layer) const override { return !decided(layer); }

 protected:
  torch::Tensor appended(int layer, const KVAppend& a, const SelectContext& ctx) override {
    return torch::zeros({a.k.size(0), a.k.size(1), a.k.size(2)},
                        a.k.options().dtype(torch::kFloat32));
  }

  torch::Tensor observed(int layer, const torch::Tensor& probs,  // [B, H_q, T, S]
                         const SelectContext& ctx) override {
    const int64_t b = probs.size(0), h = shape().n_head_kv, t = probs.size(2), s = probs.size(3);
    return probs.to(torch::kFloat32).view({b, h, probs.size(1) / h, t, s}).sum({2, 3});
  }

  torch::Tensor decision_scores(int layer, const SelectContext& ctx,
                                const torch::Tensor& protect) override {
    torch::Tensor sum = held_scores(layer);                           // [B, H_kv, S]
    torch::Tensor pos = ctx.store.positions(layer).to(sum.device());  // [B, H_kv, S]
    torch::Tensor seen = (ctx.last_pos - pos + 1).to(torch::kFloat32);
    const double g = static_cast<double>(shape().n_head_q / shape().n_head_kv);
    return sum / (seen * g);
  }

  std::unique_ptr<ScoreSelectorState> copy() const override {
    return std::make_unique<ObservedAttentionState>(*this);
  }
};

class ObservedAttentionSelector : public ScoreSelector {
 public:
  explicit ObservedAttentionSelector(const StageSpec& stage)
      : ScoreSelector(stage, {.budget = spec_int(stage, "budget"),
                              .when = ScoreRule::kEndPrefill,
                              .held_scores = true}) {}
  std::unique_ptr<SelectorState> make_selector(const ModelShape& shape) const override {
    return std::make_unique<ObservedAttentionState>(rule(), shape);
  }
};

}  // namespace

MethodEntry observed_attention_entry() {
  return {
      .name = "observed_attention",
      .family = "evict",
      .help =
          "Observed attention (kvpress): attention accumulated over all prompt queries, "
          "divided by the number of queries that saw each token and averaged over a KV group; "
          "each KV head keeps its top `budget` prompt tokens once, at the end of prefill.",
      .params =
          {{"budget", "int", "", {}, 1, kMaxSpecTokens, "slots kept per KV head after the prompt"}},
      .make = SelectorFactory(
          [](const StageSpec& s) { return std::make_unique<ObservedAttentionSelector>(s); }),
      .finalize = nullptr,
      .contract = {.examples = {"observed_attention(budget=128)"},
                   .view_tolerance = exact_view,
                   .lossless = {"observed_attention(budget=30)"},
                   .compressing = {"observed_attention(budget=12)"}},
  };
}

}  // namespace kvb
