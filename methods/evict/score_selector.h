// The base of score-based eviction (H2O, SnapKV, knorm, random): a subclass only supplies
// per-slot scores per KV head ([B, H_kv, S] float, higher = keep); the base does the rest —
// budgets, protected windows, top-k, ascending kept indices, the drop-one fast path, the
// Eviction, and keeping held scores in step with the chain's keep()/drop_swap().
//
// Scores come either
//   - held per slot between decisions: appended() gives the new slots' scores, observed() adds
//     to them from the attention weights (H2O accumulates; knorm and random score once), or
//   - computed at the decision point: decision_scores() (SnapKV's window vote).
// Decisions happen
//   - ScoreRule::kOverBudget: in select() (after append, or after observe when the chain wants
//     attention) whenever more than `budget` slots are held; one slot over drops just the
//     lowest-ranked slot (drop_one), more keeps the top `budget`;
//   - ScoreRule::kEndPrefill: once per layer in end_prefill(), when more than `budget` slots are
//     held (always as a keep of the top `budget`); later tokens are never evicted.
// Protected slots — the first `sink` tokens appended and the tokens within `recent` of the last
// appended position — rank above every score, so they are kept while they fit in the budget.
#pragma once

#include <algorithm>
#include <memory>
#include <vector>

#include "methods/chain.h"

namespace kvb {

struct ScoreRule {
  enum When { kOverBudget, kEndPrefill };
  int64_t budget = 0;  // slots kept per KV head (every layer, unless layer_budgets says otherwise)
  int64_t sink = 0;    // first tokens appended, always kept
  int64_t recent = 0;  // slots with position > last appended - recent, always kept
  When when = kOverBudget;
  bool held_scores = false;  // scores live per slot between decisions (4 bytes per slot)
  // observed() scores replace the held ones instead of adding to them (TOVA: only the current
  // query's attention counts).
  bool replace_observed = false;
  // Per-layer budgets (PyramidKV), one per layer; empty: `budget` in every layer.
  std::vector<int64_t> layer_budgets = {};
  int64_t budget_of(int layer) const {
    return layer_budgets.empty() ? budget : layer_budgets[static_cast<size_t>(layer)];
  }
};

class ScoreSelectorState : public SelectorState {
 public:
  ScoreSelectorState(const ScoreRule& rule, const ModelShape& shape);

  void on_append(int layer, const KVAppend& a, const SelectContext& ctx) final;
  void observe(int layer, const torch::Tensor& probs, const SelectContext& ctx) final;
  Eviction select(int layer, const SelectContext& ctx) final;
  Eviction end_prefill(int layer, const SelectContext& ctx) final;
  void keep(int layer, const torch::Tensor& idx) final;
  void drop_swap(int layer, const torch::Tensor& slot, int64_t slots_before) final;
  int64_t metadata_bytes(int layer) const final;
  std::unique_ptr<SelectorState> clone() const final;

 protected:
  // Scores of the T slots just appended ([B, H_kv, T] float32) when the rule holds scores;
  // anything else the subclass records from the chunk (SnapKV: its queries). Undefined when the
  // rule computes scores at the decision point.
  virtual torch::Tensor appended(int layer, const KVAppend& a, const SelectContext& ctx) = 0;
  // Added to the held scores after the chunk's attention ([B, H_q, T, S + T] -> [B, H_kv, S]);
  // only called when wants_attention(layer).
  virtual torch::Tensor observed(int layer, const torch::Tensor& probs, const SelectContext& ctx) {
    return {};
  }
  // Scores of the held slots at a decision ([B, H_kv, S] float32); `protect` is the protected
  // slots' mask ([B, H_kv, S] bool, undefined when no window applies). Default: the held scores.
  // Undefined: no eviction this time.
  virtual torch::Tensor decision_scores(int layer, const SelectContext& ctx,
                                        const torch::Tensor& protect);
  // kEndPrefill: the layer's one decision was made (or nothing needed evicting).
  virtual void prefill_done(int layer) {}
  virtual int64_t extra_metadata_bytes(int layer) const { return 0; }  // beyond held scores
  // Per-slot bookkeeping of the subclass's own (Scissorhands' importance records) follows the
  // chain's keep()/drop_swap() through these (called before the base moves its held scores).
  virtual void kept(int layer, const torch::Tensor& idx) {}  // [B, H_kv, S']
  virtual void dropped_swap(int layer, const torch::Tensor& slot, int64_t slots_before) {}
  // A copy of the derived state whose own tensors are deep copies (the base copies its own).
  virtual std::unique_ptr<ScoreSelectorState> copy() const = 0;

  const ScoreRule& rule() const { return rule_; }
  const ModelShape& shape() const { return shape_; }
  bool decided(int layer) const { return layers_[static_cast<size_t>(layer)].decided; }
  // The held scores of the layer's slots ([B, H_kv, S] float32, a view; undefined when none are
  // held): what observed() may update from (A2SF decays them).
  torch::Tensor held_scores(int layer) const;

 private:
  struct Layer {
    torch::Tensor score;  // [B, H_kv, capacity] float32 held scores, first len live
    int64_t len = 0;
    int64_t first = -1;    // position of the first token appended (kept when sink > 0)
    bool decided = false;  // kEndPrefill: the one decision was made
  };

  torch::Tensor protected_mask(int layer, const SelectContext& ctx) const;  // [B, H_kv, S] or {}
  Eviction decide(int layer, const SelectContext& ctx, bool allow_drop_one);

  ScoreRule rule_;
  ModelShape shape_;
  std::vector<Layer> layers_;
};

// The method side: promises from the rule (top `budget` slots; held scores 4 bytes per slot).
class ScoreSelector : public SelectorMethod {
 public:
  ScoreSelector(const StageSpec& stage, const ScoreRule& rule)
      : SelectorMethod(stage), rule_(rule) {}
  // kOverBudget: min(tokens, budget). kEndPrefill: a prompt of at most `budget` tokens is kept
  // whole, a longer one cut to `budget`; tokens after it are never evicted.
  int64_t promised_slots(int64_t tokens, int64_t prompt) const final {
    return slots_for(rule_.budget, tokens, prompt);
  }
  // The protected tokens (the first `sink`, the `recent` latest — of the prompt for kEndPrefill —
  // and, for kEndPrefill, every token after the prompt) are all kept; the others share the rest
  // of the budget.
  int64_t promised_kept_in(int64_t tokens, int64_t prompt, int64_t from,
                           int64_t to) const final {
    return kept_in_for(rule_.budget, tokens, prompt, from, to);
  }
  // The same with the layer's budget (layer_budgets()).
  int64_t promised_layer_slots(const ModelShape& shape, int layer, int64_t tokens,
                               int64_t prompt) const final {
    return slots_for(layer_budget(shape, layer), tokens, prompt);
  }
  int64_t promised_layer_kept_in(const ModelShape& shape, int layer, int64_t tokens,
                                 int64_t prompt, int64_t from, int64_t to) const final {
    return kept_in_for(layer_budget(shape, layer), tokens, prompt, from, to);
  }
  // Per-layer budgets on `shape` (one per layer), or empty for `budget` in every layer. States
  // get them in their rule (rule_for()).
  virtual std::vector<int64_t> layer_budgets(const ModelShape& shape) const { return {}; }
  int64_t layer_budget(const ModelShape& shape, int layer) const {
    const std::vector<int64_t> b = layer_budgets(shape);
    return b.empty() ? rule_.budget : b[static_cast<size_t>(layer)];
  }
  // The rule a state on `shape` follows: rule() with layer_budgets(shape) filled in.
  ScoreRule rule_for(const ModelShape& shape) const {
    ScoreRule r = rule_;
    r.layer_budgets = layer_budgets(shape);
    return r;
  }
  int64_t promised_metadata(const ModelShape& shape, int64_t slots) const final {
    return (rule_.held_scores ? shape.n_head_kv * slots * 4 : 0) +
           extra_promised_metadata(shape, slots);
  }
  // Bookkeeping a state holds beyond the held scores (extra_metadata_bytes()), per layer with
  // `slots` slots per KV head held, batch 1.
  virtual int64_t extra_promised_metadata(const ModelShape& shape, int64_t slots) const {
    return 0;
  }
  bool acts_only_at_end_prefill() const final { return rule_.when == ScoreRule::kEndPrefill; }
  const ScoreRule& rule() const { return rule_; }

 private:
  int64_t slots_for(int64_t budget, int64_t tokens, int64_t prompt) const;
  int64_t kept_in_for(int64_t budget, int64_t tokens, int64_t prompt, int64_t from,
                      int64_t to) const;
  ScoreRule rule_;
};

}  // namespace kvb
