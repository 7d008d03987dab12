// `adakv(budget=N, base=snapkv|pyramidkv, floor=20, window=32, pool=7, pooling=max, beta=20)`:
// Ada-KV (Feng et al. 2024, "Optimizing KV Cache Eviction by Adaptive Budget Allocation"), the
// head-wise adaptive budget on top of SnapKV's or PyramidKV's one-shot compression.
//
// At end_prefill, per layer l with budget L_l (base=snapkv: `budget`; base=pyramidkv: PyramidKV's
// budget_l for `beta`, methods/evict/pyramidkv.h), when the prompt has S > L_l tokens:
//   - score: every KV head's prompt slots outside the window get the window vote of SnapKV
//     (methods/evict/window_votes.h) divided by G x w — the mean over the head's G query heads
//     and the window's w queries of their softmax attention, max/avg pooled. Each query's
//     attention sums to 1, so the scores of different heads are on one scale (a head that
//     concentrates its attention has a few large scores, a flat head many small ones) — the
//     softmax-attention normalisation AdaKV relies on. GQA: the group's mean, as in AdaKV's GQA
//     support (and kvpress).
//   - allocate: with P = L_l - window non-window slots per head on average, each head first
//     keeps its own top f = floor(P x floor / 100) slots (AdaKV's safeguard, alpha = floor/100,
//     default 0.2 as in the paper); then one top-k over the remaining candidate scores of ALL
//     KV heads of the layer together fills the layer's H_kv x P slots. Each head keeps its chosen
//     slots plus the window (always kept, per head), so the layer holds exactly H_kv x L_l slots
//     and a head holds window + f .. window + min(S - window - 1, H_kv P - (H_kv - 1) f).
//   - decode tokens are never evicted, and only the first end_prefill compresses.
// The state's eviction is ragged (Eviction::keep + keep_len; SelectorMethod::ragged_heads()): the
// chain stores every KV head apart (methods/head_split_store.h), so memory really shrinks with
// the head's count, and adakv must be its chain's only selector (it composes with a storage).
//
// Deviations: AdaKV's code counts a head's top-k share c_h and keeps round((1 - alpha) c_h +
// floor(alpha P)), whose sum may miss H_kv P by rounding; we give each head its top f first and
// fill the rest with one top-k over the others (the safeguard of kvpress's AdaKVPress, reviewed by
// AdaKV's author), which sums exactly. A head never gets every one of its prompt tokens (its
// lowest-scored candidate is left out of the shared top-k; it only matters when a head's share
// would reach S - window): every head of a compressed layer drops, so the bytes of explicit
// positions are known from the prompt length and the promise is exact. The optional `normalize`
// and `skip` of AdaKV's code are not offered.
#include <algorithm>
#include <limits>

#include "common/check.h"
#include "methods/evict/pyramidkv.h"
#include "methods/evict/window_votes.h"
#include "methods/registry.h"

namespace kvb {
namespace {

struct AdaKVConfig {
  int64_t window = 0, pool = 0, floor_percent = 0;
  bool max_pool = true;
};

class AdaKVState : public SelectorState {
 public:
  AdaKVState(const AdaKVConfig& cfg, std::vector<int64_t> budgets, const ModelShape& shape)
      : cfg_(cfg),
        budgets_(std::move(budgets)),
        queries_("adakv", shape.n_layers, cfg.window),
        decided_(static_cast<size_t>(shape.n_layers), false) {}

  void on_append(int layer, const KVAppend& a, const SelectContext& ctx) override {
    if (!decided_[static_cast<size_t>(layer)]) queries_.record(layer, a);
  }

  Eviction end_prefill(int layer, const SelectContext& ctx) override {
    if (decided_[static_cast<size_t>(layer)]) return {};
    decided_[static_cast<size_t>(layer)] = true;
    Eviction e;
    if (queries_.has(layer) && ctx.store.slots(layer) > budgets_[static_cast<size_t>(layer)])
      e = decide(layer, ctx);
    queries_.clear(layer);
    return e;
  }

  int64_t metadata_bytes(int layer) const override { return queries_.bytes(layer); }

  std::unique_ptr<SelectorState> clone() const override {
    auto c = std::make_unique<AdaKVState>(*this);
    c->queries_.deep_copy();
    return c;
  }

 private:
  Eviction decide(int layer, const SelectContext& ctx) {
    const float inf = std::numeric_limits<float>::infinity();
    const KVView v = ctx.store.view(layer);
    const int64_t s = v.slots(), b = v.k.size(0), h = v.k.size(1);
    const torch::Tensor& pos = v.pos;  // [B, H_kv, S], on the keys' device
    KVB_CHECK((pos >= 0).all().item<bool>(),
              "adakv: heads hold different slots before end_prefill");
    torch::Tensor in_window = pos > ctx.last_pos - cfg_.window;  // [B, H_kv, S] bool
    const torch::Tensor& q = queries_.q(layer);                  // [B, H_q, w, D]
    const double voters = static_cast<double>(q.size(1) / h * q.size(2));
    torch::Tensor score =
        window_votes(v, q, queries_.pos(layer), in_window, cfg_.pool, cfg_.max_pool)
            .div_(voters);  // [B, H_kv, S]: the group's mean attention, pooled

    const int64_t per = budgets_[static_cast<size_t>(layer)] - cfg_.window;
    const int64_t safe = per * cfg_.floor_percent / 100;
    torch::Tensor rank = score.masked_fill(in_window, -inf);  // the window is kept apart
    if (safe > 0) rank.scatter_(2, std::get<1>(rank.topk(safe, -1)), inf);  // the safeguard
    // Each head's lowest remaining candidate stays out: no head keeps its whole prompt.
    rank.scatter_(2, rank.masked_fill(in_window, inf).argmin(-1, true), -inf);
    torch::Tensor chosen = std::get<1>(rank.view({b, h * s}).topk(h * per, -1));  // [B, H P]
    torch::Tensor keep = in_window.clone().view({b, h * s});
    keep.scatter_(1, chosen, true);
    keep = keep.view({b, h, s});

    Eviction e;
    e.keep_len = keep.sum(-1).to(torch::kLong);  // [B, H_kv]
    // Kept slots first, ascending, then the dropped ones (padding).
    torch::Tensor order = torch::arange(s, pos.options().dtype(torch::kLong)).view({1, 1, s}) +
                          s * (~keep).to(torch::kLong);
    e.keep = std::get<1>(order.sort(-1)).narrow(2, 0, e.keep_len.max().item<int64_t>());
    return e;
  }

  AdaKVConfig cfg_;
  std::vector<int64_t> budgets_;  // per layer, window included
  WindowQueries queries_;         // per layer, until end_prefill
  std::vector<bool> decided_;
};

class AdaKVSelector : public SelectorMethod {
 public:
  explicit AdaKVSelector(const StageSpec& stage)
      : SelectorMethod(stage),
        budget_(spec_int(stage, "budget")),
        beta_(spec_int(stage, "beta")),
        pyramid_(stage.params.at("base") == "pyramidkv") {
    cfg_.window = spec_int(stage, "window");
    cfg_.pool = spec_int(stage, "pool");
    cfg_.floor_percent = spec_int(stage, "floor");
    cfg_.max_pool = stage.params.at("pooling") == "max";
  }

  // Per layer, window included: `budget`, or PyramidKV's.
  std::vector<int64_t> layer_budgets(const ModelShape& shape) const {
    if (pyramid_) return pyramid_layer_budgets(shape.n_layers, budget_, cfg_.window, beta_);
    return std::vector<int64_t>(static_cast<size_t>(shape.n_layers), budget_);
  }

  std::unique_ptr<SelectorState> make_selector(const ModelShape& shape) const override {
    return std::make_unique<AdaKVState>(cfg_, layer_budgets(shape), shape);
  }

  // The average over a layer's heads with `budget` (heads differ; promised_ragged is exact).
  int64_t promised_slots(int64_t tokens, int64_t prompt) const override {
    return prompt <= budget_ ? tokens : budget_ + (tokens - prompt);
  }

  bool ragged_heads() const override { return true; }

  RaggedPromise promised_ragged(const ModelShape& shape, int64_t tokens,
                                int64_t prompt) const override {
    RaggedPromise r;
    const int64_t hk = shape.n_head_kv, decoded = tokens - prompt;
    for (int64_t budget : layer_budgets(shape)) {
      if (prompt <= budget) {  // kept whole, nothing dropped
        r.slots += hk * tokens;
        r.max_head_slots = std::max(r.max_head_slots, tokens);
        continue;
      }
      const int64_t per = budget - cfg_.window, safe = per * cfg_.floor_percent / 100;
      const int64_t most = std::min(prompt - cfg_.window - 1, hk * per - (hk - 1) * safe);
      r.slots += hk * (budget + decoded);
      r.dropped_slots += hk * (budget + decoded);  // every head of the layer dropped some
      r.max_head_slots = std::max(r.max_head_slots, most + cfg_.window + decoded);
    }
    return r;  // the window's queries are freed at end_prefill: no bookkeeping bytes left
  }

  bool acts_only_at_end_prefill() const override { return true; }

 private:
  int64_t budget_, beta_;
  bool pyramid_;
  AdaKVConfig cfg_;
};

}  // namespace

MethodEntry adakv_entry() {
  return {
      .name = "adakv",
      .family = "evict",
      .help =
          "Ada-KV: SnapKV's (base=snapkv) or PyramidKV's (base=pyramidkv) one-shot compression "
          "with head-wise budgets: per layer, one top-k over the window votes of all KV heads "
          "together (each head keeps at least floor% of its even share, and its window), so "
          "heads with flat attention keep more than heads that concentrate it. The layer holds "
          "n_kv_heads x its budget slots, as its base; each head is stored apart.",
      .params =
          {{"budget",
            "int",
            "",
            {},
            2,
            kMaxSpecTokens,
            "slots kept per KV head after the prompt, on average over the heads (and layers)"},
           {"base",
            "enum",
            "snapkv",
            {"snapkv", "pyramidkv"},
            0,
            0,
            "where the layers' budgets come from (pyramidkv: shrinking bottom to top by beta)"},
           {"beta", "int", "20", {}, 1, kMaxSpecGroup, "pyramidkv base: steepness (1: flat)"},
           {"floor",
            "int",
            "20",
            {},
            0,
            100,
            "safeguard: percent of its even non-window share every head keeps (100: SnapKV)"},
           {"window",
            "int",
            "32",
            {},
            1,
            kMaxSpecTokens,
            "observation window (last prompt tokens), kept in every head"},
           {"pool", "int", "7", {}, 1, kMaxSpecGroup, "pooling kernel over the token axis (odd)"},
           {"pooling", "enum", "max", {"max", "avg"}, 0, 0, "pooling type"}},
      .make =
          SelectorFactory([](const StageSpec& s) { return std::make_unique<AdaKVSelector>(s); }),
      .finalize =
          [](const std::string& text, StageSpec& s) {
            if (spec_int(s, "window") >= spec_int(s, "budget"))
              stage_fail(text, s, "window must be smaller than budget");
            if (spec_int(s, "pool") % 2 == 0) stage_fail(text, s, "pool must be odd");
          },
      .contract = {.examples = {"adakv(budget=128)",
                                "adakv(base=pyramidkv,budget=100,floor=50,pool=5,pooling=avg,"
                                "window=8)"},
                   .view_tolerance = exact_view,
                   // 3 layers, prompt 30: kept whole (pyramid budgets 95/64/33; 30 = budget).
                   .lossless = {"adakv(budget=64)", "adakv(budget=30,window=8)",
                                "adakv(base=pyramidkv,budget=64)"},
                   .compressing = {"adakv(budget=12,window=4)",
                                   "adakv(base=pyramidkv,budget=12,window=4)"}},
  };
}

}  // namespace kvb
