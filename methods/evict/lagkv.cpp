// `lagkv(budget=N, lag=128, sink=4)`: LagKV (Liang et al. 2025, "LagKV: Lag-Relative Information
// of the KV Cache Tells Which Tokens Are Important"), as kvpress's LagKVPress computes it, once at
// end_prefill (ScoreRule::kEndPrefill; decode tokens are never evicted, prompts of at most
// `budget` tokens are kept whole, nothing happens without end_prefill).
//
// Per KV head, the n held prompt slots in position order: the first `sink` are sinks; the rest
// is cut into m = floor((n - sink) / lag) full chunks of `lag` tokens plus a partial remainder.
// Chunk c (c < m - 1) is scored against the next chunk c + 1, its lagging reference: per channel
// d, mn_d / mx_d = min / max over the reference chunk's tokens, and for each token x of chunk c
//     s(x) = softmax over the chunk's tokens of std_d((x_d - mn_d) / (mx_d - mn_d))
// (std unbiased, over the D channels), for keys and values apart; score = (s(k) + s(v)) / 2, and
// a token's rank inside its chunk (0 = lowest) is what competes (kvpress's non-cross scoring:
// every chunk gives up the same share). The last full chunk (it has no reference) and the
// partial remainder form the tail, always kept with the sinks; with n < sink + 2 lag nothing is
// chunk-scored and everything after the sinks is tail.
// Selection: top `budget` by: sinks, then the tail (latest first), then chunk tokens by rank,
// ties between chunks to the later chunk. Deviations from kvpress, all tie-breaks or guards: it
// gives sinks and tail the same score (1) and leaves rank ties to topk; a reference channel with
// mx = mn (which kvpress divides by, giving NaN) divides by 1 here.
// Scores come from the keys (post-RoPE) and values the store holds (dequantized when the storage
// quantizes). Memory: none beyond the store.
#include "methods/evict/score_selector.h"
#include "methods/registry.h"

namespace kvb {
namespace {

class LagKVState : public ScoreSelectorState {
 public:
  LagKVState(const ScoreRule& rule, const ModelShape& shape, int64_t lag, int64_t sink)
      : ScoreSelectorState(rule, shape), lag_(lag), sink_(sink) {}

 protected:
  torch::Tensor appended(int layer, const KVAppend& a, const SelectContext& ctx) override {
    return {};
  }

  torch::Tensor decision_scores(int layer, const SelectContext& ctx,
                                const torch::Tensor& protect) override {
    KVView view = ctx.store.view(layer);
    const int64_t b = view.k.size(0), h = view.k.size(1), n = view.k.size(2), d = view.k.size(3);
    torch::Tensor order = view.pos.argsort(int64_t{-1});  // [B, H_kv, S] slots in position order
    torch::Tensor idx = order.unsqueeze(-1).expand({b, h, n, d});
    torch::Tensor k = view.k.to(torch::kFloat32).gather(2, idx);
    torch::Tensor v = view.v.to(torch::kFloat32).gather(2, idx);
    const int64_t sink = std::min(sink_, n);
    const int64_t scored = n < sink + 2 * lag_ ? 0 : (n - sink) / lag_ - 1;  // chunks scored
    const int64_t tail_from = sink + scored * lag_, tail = n - tail_from;
    const double base = static_cast<double>(scored * lag_);  // chunk scores lie below
    auto opts = k.options();
    torch::Tensor sorted = torch::empty({b, h, n}, opts);
    sorted.narrow(2, 0, sink).copy_(torch::arange(sink, opts).add_(base + tail));
    sorted.narrow(2, tail_from, tail).copy_(torch::arange(tail, opts).add_(base));
    if (scored > 0) {
      torch::Tensor s = (chunk_scores(k, sink, scored) + chunk_scores(v, sink, scored)) / 2;
      torch::Tensor rank =
          s.argsort(int64_t{-1}).argsort(int64_t{-1}).to(torch::kFloat32);  // [B, H, C, lag]
      torch::Tensor chunk = torch::arange(scored, opts).view({1, 1, scored, 1});
      sorted.narrow(2, sink, scored * lag_)
          .copy_((rank * static_cast<float>(scored) + chunk).view({b, h, scored * lag_}));
    }
    return torch::empty_like(sorted).scatter_(2, order, sorted);
  }

  std::unique_ptr<ScoreSelectorState> copy() const override {
    return std::make_unique<LagKVState>(*this);
  }

 private:
  // s(x) of the first `scored` chunks after the sinks: [B, H, S, D] -> [B, H, scored, lag].
  torch::Tensor chunk_scores(const torch::Tensor& x, int64_t sink, int64_t scored) const {
    const int64_t b = x.size(0), h = x.size(1), d = x.size(3);
    torch::Tensor c = x.narrow(2, sink, (scored + 1) * lag_).reshape({b, h, scored + 1, lag_, d});
    torch::Tensor cur = c.narrow(2, 0, scored), ref = c.narrow(2, 1, scored);
    torch::Tensor mn = std::get<0>(ref.min(3, true)), mx = std::get<0>(ref.max(3, true));
    torch::Tensor range = mx - mn;
    range = torch::where(range > 0, range, torch::ones_like(range));
    return ((cur - mn) / range).std(-1).softmax(-1);
  }

  int64_t lag_, sink_;
};

class LagKVSelector : public ScoreSelector {
 public:
  explicit LagKVSelector(const StageSpec& stage)
      : ScoreSelector(stage, {.budget = spec_int(stage, "budget"),
                              .when = ScoreRule::kEndPrefill,
                              .held_scores = false}),
        lag_(spec_int(stage, "lag")),
        sink_(spec_int(stage, "sink")) {}
  std::unique_ptr<SelectorState> make_selector(const ModelShape& shape) const override {
    return std::make_unique<LagKVState>(rule(), shape, lag_, sink_);
  }

 private:
  int64_t lag_, sink_;
};

}  // namespace

MethodEntry lagkv_entry() {
  return {
      .name = "lagkv",
      .family = "evict",
      .help =
          "LagKV: after the prompt, each `lag`-token chunk is scored against the next chunk's "
          "per-channel min/max (std over channels of the normalised keys and values, ranked "
          "within the chunk); the `sink` first tokens and the last chunk plus remainder are "
          "kept; each KV head keeps `budget` prompt tokens. Compresses once (end of prefill).",
      .params =
          {{"budget", "int", "", {}, 1, kMaxSpecTokens, "slots kept per KV head after the prompt"},
           {"lag", "int", "128", {}, 1, kMaxSpecTokens, "chunk (partition) size in tokens"},
           {"sink", "int", "4", {}, 0, kMaxSpecTokens, "first tokens always kept"}},
      .make =
          SelectorFactory([](const StageSpec& s) { return std::make_unique<LagKVSelector>(s); }),
      .finalize = nullptr,
      .contract = {.examples = {"lagkv(budget=128)", "lagkv(budget=100,lag=16,sink=2)"},
                   .view_tolerance = exact_view,
                   .lossless = {"lagkv(budget=30)", "lagkv(budget=30,lag=4)"},
                   .compressing = {"lagkv(budget=12,lag=4,sink=2)"}},
  };
}

}  // namespace kvb
