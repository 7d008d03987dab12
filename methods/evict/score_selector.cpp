#include "methods/evict/score_selector.h"

#include <algorithm>
#include <limits>

#include "common/check.h"
#include "kernels/cpu/topk.h"

namespace kvb {

ScoreSelectorState::ScoreSelectorState(const ScoreRule& rule, const ModelShape& shape)
    : rule_(rule), shape_(shape), layers_(static_cast<size_t>(shape.n_layers)) {
  KVB_CHECK(rule.budget >= 1 && rule.sink >= 0 && rule.recent >= 0, "score selector: bad rule");
}

void ScoreSelectorState::on_append(int layer, const KVAppend& a, const SelectContext& ctx) {
  Layer& L = layers_[static_cast<size_t>(layer)];
  const int64_t t = a.k.size(2);
  if (rule_.sink > 0 && L.first < 0 && t > 0) L.first = a.pos[0].item<int64_t>();
  torch::Tensor s = appended(layer, a, ctx);  // [B, H_kv, T]
  KVB_CHECK(s.defined() == rule_.held_scores, "score selector: appended() must give scores ",
            "exactly when the rule holds them");
  if (!s.defined()) return;
  KVB_CHECK(s.scalar_type() == torch::kFloat32 && s.dim() == 3 && s.size(2) == t,
            "score selector: appended() gave ", s.sizes(), " ", s.scalar_type(), " for ", t,
            " slots");
  const int64_t b = s.size(0), h = s.size(1);
  if (!L.score.defined() || L.score.size(2) < L.len + t) {
    const int64_t cap = L.score.defined() ? L.score.size(2) : 0;
    torch::Tensor grown = torch::empty(
        {b, h, std::max<int64_t>(L.len + t, std::max<int64_t>(64, 2 * cap))}, s.options());
    if (L.len > 0) grown.narrow(2, 0, L.len).copy_(L.score.narrow(2, 0, L.len));
    L.score = grown;
  }
  L.score.narrow(2, L.len, t).copy_(s);
  L.len += t;
}

void ScoreSelectorState::observe(int layer, const torch::Tensor& probs, const SelectContext& ctx) {
  torch::Tensor add = observed(layer, probs, ctx);  // [B, H_kv, S]
  if (!add.defined()) return;
  Layer& L = layers_[static_cast<size_t>(layer)];
  KVB_CHECK(rule_.held_scores && add.size(2) == L.len, "score selector: attention over ",
            add.size(2), " slots, ", L.len, " held");
  if (rule_.replace_observed) L.score.narrow(2, 0, L.len).copy_(add);
  else L.score.narrow(2, 0, L.len).add_(add);
}

Eviction ScoreSelectorState::select(int layer, const SelectContext& ctx) {
  if (rule_.when != ScoreRule::kOverBudget || ctx.store.slots(layer) <= rule_.budget_of(layer))
    return {};
  return decide(layer, ctx, /*allow_drop_one=*/true);
}

Eviction ScoreSelectorState::end_prefill(int layer, const SelectContext& ctx) {
  Layer& L = layers_[static_cast<size_t>(layer)];
  if (rule_.when != ScoreRule::kEndPrefill || L.decided) return {};
  L.decided = true;
  Eviction e;
  if (ctx.store.slots(layer) > rule_.budget_of(layer))
    e = decide(layer, ctx, /*allow_drop_one=*/false);
  prefill_done(layer);
  return e;
}

torch::Tensor ScoreSelectorState::decision_scores(int layer, const SelectContext& ctx,
                                                  const torch::Tensor& protect) {
  const Layer& L = layers_[static_cast<size_t>(layer)];
  KVB_CHECK(rule_.held_scores, "score selector: no held scores; override decision_scores()");
  return L.score.narrow(2, 0, L.len);
}

torch::Tensor ScoreSelectorState::protected_mask(int layer, const SelectContext& ctx) const {
  if (rule_.sink == 0 && rule_.recent == 0) return {};
  torch::Tensor pos = ctx.store.positions(layer);  // [B, H_kv, S]
  torch::Tensor mask;
  if (rule_.recent > 0) mask = pos > ctx.last_pos - rule_.recent;
  if (rule_.sink > 0) {
    torch::Tensor sinks = pos < layers_[static_cast<size_t>(layer)].first + rule_.sink;
    mask = mask.defined() ? mask.logical_or(sinks) : sinks;
  }
  return mask;
}

Eviction ScoreSelectorState::decide(int layer, const SelectContext& ctx, bool allow_drop_one) {
  const int64_t s = ctx.store.slots(layer);
  const Layer& L = layers_[static_cast<size_t>(layer)];
  KVB_CHECK(!rule_.held_scores || L.len == s, "score selector: ", L.len, " scores for ", s,
            " slots");
  torch::Tensor protect = protected_mask(layer, ctx);
  torch::Tensor rank = decision_scores(layer, ctx, protect);  // [B, H_kv, S]
  if (!rank.defined()) return {};
  KVB_CHECK(rank.size(2) == s, "score selector: ", rank.size(2), " scores for ", s, " slots");
  if (protect.defined()) rank = rank.masked_fill(protect, std::numeric_limits<float>::infinity());
  Eviction e;
  const int64_t budget = rule_.budget_of(layer);
  if (allow_drop_one && s == budget + 1) {
    e.drop_one = rank.argmin(-1);
  } else if (rank.device().is_cpu() && rank.scalar_type() == torch::kFloat32 && rank.dim() == 3) {
    // The slots topk + sort below keeps, ties broken as torch::topk breaks them.
    e.keep = kernels::topk_indices(rank, budget, kernels::TopkTies::kLikeTorch);
  } else {
    e.keep = std::get<0>(std::get<1>(rank.topk(budget, -1)).sort(-1));
  }
  return e;
}

void ScoreSelectorState::keep(int layer, const torch::Tensor& idx) {
  kept(layer, idx);
  Layer& L = layers_[static_cast<size_t>(layer)];
  if (!L.score.defined()) return;
  torch::Tensor g = L.score.narrow(2, 0, L.len).gather(2, idx);
  L.len = idx.size(2);
  L.score.narrow(2, 0, L.len).copy_(g);
}

void ScoreSelectorState::drop_swap(int layer, const torch::Tensor& slot, int64_t slots_before) {
  dropped_swap(layer, slot, slots_before);
  Layer& L = layers_[static_cast<size_t>(layer)];
  if (!L.score.defined()) return;
  torch::Tensor src = L.score.narrow(2, slots_before - 1, 1).clone();  // [B, H_kv, 1]
  L.score.scatter_(2, slot.unsqueeze(-1), src);
  L.len = slots_before - 1;
}

torch::Tensor ScoreSelectorState::held_scores(int layer) const {
  const Layer& L = layers_[static_cast<size_t>(layer)];
  return L.score.defined() ? L.score.narrow(2, 0, L.len) : torch::Tensor();
}

int64_t ScoreSelectorState::metadata_bytes(int layer) const {
  const Layer& L = layers_[static_cast<size_t>(layer)];
  const int64_t held = L.score.defined() ? L.score.size(0) * L.score.size(1) * L.len * 4 : 0;
  return held + extra_metadata_bytes(layer);
}

std::unique_ptr<SelectorState> ScoreSelectorState::clone() const {
  std::unique_ptr<ScoreSelectorState> c = copy();
  for (Layer& L : c->layers_)
    if (L.score.defined()) L.score = L.score.clone();
  return c;
}

int64_t ScoreSelector::slots_for(int64_t budget, int64_t tokens, int64_t prompt) const {
  if (rule_.when == ScoreRule::kOverBudget) return std::min(tokens, budget);
  return prompt <= budget ? tokens : budget + (tokens - prompt);
}

int64_t ScoreSelector::kept_in_for(int64_t budget, int64_t tokens, int64_t prompt, int64_t from,
                                   int64_t to) const {
  auto overlap = [&](int64_t a, int64_t b) {
    return std::max<int64_t>(0, std::min(b, to) - std::max(a, from));
  };
  // The tokens the decision (the last one, for kOverBudget) chose among.
  const int64_t chosen = rule_.when == ScoreRule::kOverBudget ? tokens : prompt;
  if (chosen <= budget) return overlap(0, tokens);
  const int64_t recent_from = chosen - rule_.recent;
  const int64_t sinks = std::min(rule_.sink, recent_from);
  const int64_t kept = overlap(0, sinks) + overlap(recent_from, tokens);
  const int64_t others = budget - sinks - rule_.recent;
  return kept + std::min(std::max<int64_t>(others, 0), overlap(sinks, recent_from));
}

}  // namespace kvb
