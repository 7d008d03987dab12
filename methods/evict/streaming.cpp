// `streaming(sink=4, window=N, positions=original|cache)`: StreamingLLM (Xiao et al. 2023).
// Keeps the first `sink` tokens (attention sinks) and the `window` most recent ones; everything
// in between is evicted as it leaves the window.
//
// positions=original (the default): keys keep the RoPE of their source positions and queries
// take theirs (no position re-assignment). The canonical spec leaves the default out, so every
// spec recorded before the parameter existed keeps its canonical form:
// `streaming(sink=4,window=1020)`; `positions=cache` is printed (keys sorted:
// `streaming(positions=cache,sink=4,window=1020)`).
//
// positions=cache: the paper's position re-assignment. Attention uses positions within the
// cache: the held slots (sinks 0..sink-1, then the window) at 0..S-1 and the new tokens at S,
// S+1, ... The chain's store holds the keys before RoPE (KVAppend::k_pre_rope) and tells the
// model so (KVCacheState::rope_positions_from_cache); the model rotates the view's keys at their
// slot indices and the chunk's queries and keys after the last slot, so RoPE never leaves the
// model. Positions seen stay below sink + window + chunk, whatever the context length. Eviction
// is the same rule in both modes (the store's positions are the source positions). Quest cannot
// share its chain (its bounds are of post-RoPE keys).
#include <algorithm>
#include <limits>

#include "common/check.h"
#include "methods/registry.h"

namespace kvb {
namespace {

class StreamingState : public SelectorState {
 public:
  StreamingState(int64_t sink, int64_t window, int64_t n_layers)
      : sink_(sink), window_(window), first_(static_cast<size_t>(n_layers), -1) {}

  void on_append(int layer, const KVAppend& a, const SelectContext& ctx) override {
    if (first_[layer] < 0 && a.pos.size(0) > 0) first_[layer] = a.pos[0].item<int64_t>();
  }

  // Sinks rank above everything, then recency: the lowest-ranked slots are evicted.
  Eviction select(int layer, const SelectContext& ctx) override {
    const int64_t s = ctx.store.slots(layer), cap = sink_ + window_;
    if (s <= cap) return {};
    torch::Tensor pos = ctx.store.positions(layer);  // [B, H, S]
    torch::Tensor rank =
        pos.to(torch::kDouble)
            .masked_fill(pos < first_[layer] + sink_, std::numeric_limits<double>::infinity());
    Eviction e;
    if (s == cap + 1) {
      e.drop_one = rank.argmin(-1);
    } else {
      e.keep = std::get<0>(std::get<1>(rank.topk(cap, -1)).sort(-1));
    }
    return e;
  }

  std::unique_ptr<SelectorState> clone() const override {
    return std::make_unique<StreamingState>(*this);
  }

 private:
  int64_t sink_, window_;
  std::vector<int64_t> first_;  // per layer: position of the first token appended
};

class StreamingSelector : public SelectorMethod {
 public:
  explicit StreamingSelector(const StageSpec& stage)
      : SelectorMethod(stage), sink_(spec_int(stage, "sink")), window_(spec_int(stage, "window")),
        in_cache_(stage.params.count("positions") && stage.params.at("positions") == "cache") {}
  bool positions_in_cache() const override { return in_cache_; }
  std::unique_ptr<SelectorState> make_selector(const ModelShape& shape) const override {
    return std::make_unique<StreamingState>(sink_, window_, shape.n_layers);
  }
  int64_t promised_slots(int64_t tokens, int64_t /*prompt*/) const override {
    return std::min(tokens, sink_ + window_);
  }
  bool keeps_slots_known_in_advance() const override { return true; }
  // Exactly the first `sink` and the last `window` tokens once more than sink + window were seen.
  int64_t promised_kept_in(int64_t tokens, int64_t /*prompt*/, int64_t from,
                           int64_t to) const override {
    auto overlap = [&](int64_t a, int64_t b) {
      return std::max<int64_t>(0, std::min(b, to) - std::max(a, from));
    };
    if (tokens <= sink_ + window_) return overlap(0, tokens);
    return overlap(0, sink_) + overlap(tokens - window_, tokens);
  }

 private:
  int64_t sink_, window_;
  bool in_cache_;
};

}  // namespace

MethodEntry streaming_entry() {
  return {
      .name = "streaming",
      .family = "evict",
      .help =
          "StreamingLLM: keep the first `sink` tokens (attention sinks) and the `window` most "
          "recent tokens; evict the rest as they leave the window.",
      .params =
          {{"sink", "int", "4", {}, 0, kMaxSpecTokens, "attention-sink tokens kept from the start"},
           {"window",
            "int",
            "",
            {},
            1,
            kMaxSpecTokens,
            "recent tokens kept (slots = sink + window)"},
           {"positions",
            "enum",
            "original",
            {"original", "cache"},
            0,
            0,
            "RoPE positions: original (source positions) or cache (positions within the cache, "
            "StreamingLLM's re-assignment; keys held before RoPE); the default is left out of the "
            "canonical spec"}},
      .make = SelectorFactory(
          [](const StageSpec& s) { return std::make_unique<StreamingSelector>(s); }),
      // The default positions=original is not printed: canonical specs recorded before the
      // parameter existed stay what they were.
      .finalize =
          [](const std::string& /*text*/, StageSpec& st) {
            auto it = st.params.find("positions");
            if (it != st.params.end() && it->second == "original") st.params.erase(it);
          },
      .contract = {.examples = {"streaming(window=100)", "streaming(sink=0,window=64)",
                                "streaming(window=50,positions=cache)"},
                   .view_tolerance = exact_view,
                   // Nothing evicted and the sequence starts at 0: cache positions are the source
                   // positions, so the logits are the full cache's.
                   .lossless = {"streaming(window=64)", "streaming(sink=0,window=37)",
                                "streaming(window=64,positions=cache)"},
                   .compressing = {"streaming(sink=2,window=8)",
                                   "streaming(sink=2,window=8,positions=cache)"}},
  };
}

}  // namespace kvb
