// `snapkv(budget=N, window=32, pool=7, pooling=max)`: SnapKV (Li et al. 2024). Once the prompt
// is in (end_prefill), the last `window` prompt queries vote: their softmax attention over the
// prompt's keys (causal, scale 1/sqrt(D)) is summed over the window's queries, pooled over the
// token axis (kernel `pool`, stride 1, same length; max or avg as in FasterDecoding/SnapKV), and
// each KV head keeps its top `budget - window` prefix tokens plus the window itself. Prompts of
// at most `budget` tokens are kept whole; decode tokens are never evicted. Without end_prefill
// (perplexity decode mode) nothing is compressed.
//
// The vote and the query window live in methods/evict/window_votes.h (shared with pyramidkv and
// adakv). GQA: a KV head's votes are the sum over its G query heads (mean and sum rank alike).
// The votes are computed from the keys the store holds (dequantized when the storage quantizes)
// and the window's post-RoPE queries, which the selector keeps until end_prefill (counted as
// metadata meanwhile: H_q x window x D fp32 and the window's positions per layer) and frees
// then; tokens appended later are neither evicted nor recorded. The promise after a prompt of P
// tokens and D more (promised_memory's prompt_tokens): min(P, budget) + D slots per KV head.
#include "methods/evict/window_votes.h"
#include "methods/registry.h"

namespace kvb {
namespace {

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
    return std::make_unique<WindowVoteState>("snapkv", rule(), shape, pool_, max_pool_);
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
