// `snapkv(budget=N, window=32, pool=7, pooling=max)`: SnapKV (Li et al. 2024). Once the prompt
// is in (end_prefill), the last `window` prompt queries vote: their softmax attention over the
// prompt's keys (causal, scale 1/sqrt(D)) is summed over the window's queries, pooled over the
// token axis (kernel `pool`, stride 1, same length; max or avg as in FasterDecoding/SnapKV), and
// each KV head keeps its top `budget - window` prefix tokens plus the window itself. Prompts of
// at most `budget` tokens are kept whole; decode tokens are never evicted. Without end_prefill
// (perplexity decode mode) nothing is compressed.
//
// GQA: a KV head's votes are the sum over its G query heads (mean and sum rank alike).
// The votes are computed from the keys the store holds (dequantized when the storage quantizes)
// and the window's post-RoPE queries, which the selector keeps until end_prefill (counted as
// metadata meanwhile: H_q x window x D fp32 and the window's positions per layer) and frees
// then; tokens appended later are neither evicted nor recorded. The promise after a prompt of P
// tokens and D more (promised_memory's prompt_tokens): min(P, budget) + D slots per KV head.
#include <cmath>
#include <limits>

#include "common/check.h"
#include "methods/evict/score_selector.h"
#include "methods/registry.h"

namespace kvb {
namespace {

// Scores computed at end_prefill: the window's pooled votes (the window itself is the rule's
// protected `recent` slots).
class SnapKVState : public ScoreSelectorState {
 public:
  SnapKVState(const ScoreRule& rule, const ModelShape& shape, int64_t pool, bool max_pool)
      : ScoreSelectorState(rule, shape),
        pool_(pool),
        max_pool_(max_pool),
        queries_(static_cast<size_t>(shape.n_layers)) {}

 protected:
  // Keeps the last `window` queries (and their positions) seen so far.
  torch::Tensor appended(int layer, const KVAppend& a, const SelectContext& ctx) override {
    Queries& Q = queries_[static_cast<size_t>(layer)];
    if (decided(layer)) return {};
    KVB_CHECK(a.q.defined(), "snapkv: the engine must hand queries to append()");
    const int64_t window = rule().recent;
    const int64_t t = a.q.size(2), r = std::min(t, window);
    torch::Tensor q = a.q.narrow(2, t - r, r).to(torch::kFloat32);
    torch::Tensor p = a.pos.narrow(0, t - r, r).to(torch::kLong);
    if (Q.q.defined()) {
      q = torch::cat({Q.q, q}, 2);
      p = torch::cat({Q.pos, p}, 0);
    }
    const int64_t n = q.size(2), keep = std::min(n, window);
    Q.q = q.narrow(2, n - keep, keep).clone();
    Q.pos = p.narrow(0, n - keep, keep).clone();
    return {};
  }

  torch::Tensor decision_scores(int layer, const SelectContext& ctx,
                                const torch::Tensor& in_window) override {  // [B, H_kv, S]
    const Queries& Q = queries_[static_cast<size_t>(layer)];
    if (!Q.q.defined()) return {};
    KVView v = ctx.store.view(layer);
    const int64_t s = v.slots();
    const int64_t b = v.k.size(0), h = v.k.size(1), d = v.k.size(3), w = Q.q.size(2);
    const int64_t g = Q.q.size(1) / h;
    torch::Tensor k = v.k.to(torch::kFloat32);
    torch::Tensor qg = Q.q.reshape({b, h, g * w, d});
    torch::Tensor scores =
        torch::matmul(qg, k.transpose(-1, -2)).div_(std::sqrt(static_cast<double>(d)));
    scores = scores.view({b, h, g, w, s});
    if (v.logit_bias.defined()) scores.add_(v.logit_bias.to(torch::kFloat32).view({b, h, 1, 1, s}));
    torch::Tensor future = v.pos.view({b, h, 1, 1, s}) > Q.pos.view({1, 1, 1, w, 1});  // causal
    scores.masked_fill_(future, -std::numeric_limits<float>::infinity());
    torch::Tensor votes = torch::softmax(scores, -1).sum({2, 3});  // [B, H_kv, S]

    if (in_window.defined()) votes.masked_fill_(in_window, 0);
    torch::Tensor flat = votes.view({b * h, 1, s});
    torch::Tensor pooled = max_pool_ ? torch::max_pool1d(flat, {pool_}, {1}, {pool_ / 2})
                                     : torch::avg_pool1d(flat, {pool_}, {1}, {pool_ / 2});
    return pooled.view({b, h, s});
  }

  void prefill_done(int layer) override { queries_[static_cast<size_t>(layer)] = Queries(); }

  int64_t extra_metadata_bytes(int layer) const override {
    const Queries& Q = queries_[static_cast<size_t>(layer)];
    return Q.q.defined() ? Q.q.numel() * 4 + Q.pos.numel() * 8 : 0;
  }

  std::unique_ptr<ScoreSelectorState> copy() const override {
    auto c = std::make_unique<SnapKVState>(*this);
    for (Queries& Q : c->queries_) {
      if (Q.q.defined()) Q.q = Q.q.clone();
      if (Q.pos.defined()) Q.pos = Q.pos.clone();
    }
    return c;
  }

 private:
  struct Queries {
    torch::Tensor q;    // [B, H_q, w, D] fp32: the last w <= window queries
    torch::Tensor pos;  // [w] int64
  };
  int64_t pool_;
  bool max_pool_;
  std::vector<Queries> queries_;  // per layer, until end_prefill
};

class SnapKVSelector : public ScoreSelector {
 public:
  explicit SnapKVSelector(const StageSpec& stage)
      : ScoreSelector(stage, {.budget = spec_int(stage, "budget"),
                              .recent = spec_int(stage, "window"),
                              .when = ScoreRule::kEndPrefill,
                              .held_scores = false}),
        pool_(spec_int(stage, "pool")),
        max_pool_(stage.params.at("pooling") == "max") {}
  std::unique_ptr<SelectorState> make_selector(const ModelShape& shape) const override {
    return std::make_unique<SnapKVState>(rule(), shape, pool_, max_pool_);
  }

 private:
  int64_t pool_;
  bool max_pool_;
};

}  // namespace

MethodEntry snapkv_entry() {
  return {
      .name = "snapkv",
      .family = "evict",
      .help =
          "SnapKV: after the prompt, the last `window` prompt queries vote with their "
          "attention, pooled over `pool` neighbouring tokens; each KV head keeps its top "
          "budget-window prompt tokens plus the window. Compresses once (end of prefill).",
      .params =
          {{"budget", "int", "", {}, 1, kMaxSpecTokens, "slots kept per KV head after the prompt"},
           {"window",
            "int",
            "32",
            {},
            1,
            kMaxSpecTokens,
            "observation window (last prompt tokens)"},
           {"pool", "int", "7", {}, 1, kMaxSpecGroup, "pooling kernel over the token axis (odd)"},
           {"pooling", "enum", "max", {"max", "avg"}, 0, 0, "pooling type"}},
      .make =
          SelectorFactory([](const StageSpec& s) { return std::make_unique<SnapKVSelector>(s); }),
      .finalize =
          [](const std::string& text, StageSpec& s) {
            if (spec_int(s, "window") >= spec_int(s, "budget"))
              stage_fail(text, s, "window must be smaller than budget");
            if (spec_int(s, "pool") % 2 == 0) stage_fail(text, s, "pool must be odd");
          },
      .contract = {.examples = {"snapkv(budget=128)",
                                "snapkv(budget=100,pool=5,pooling=avg,window=8)"},
                   .view_tolerance = exact_view,
                   .lossless = {"snapkv(budget=64)", "snapkv(budget=30,window=8)"},
                   .compressing = {"snapkv(budget=12,window=4)"}},
  };
}

}  // namespace kvb
